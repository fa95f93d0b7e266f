"""The SNS simulator: SES events in SNS envelopes signed with SignatureVersion 2 by its own certificate."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from providers.inbound import HttpCertFetcher, InboundConfig, SnsTrust, parse_inbound
from providers.simulators.sns import SNS, SnsOptions, create_app, ses_event

SIGNED_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
EVENTS = ("Send", "Delivery", "Bounce", "Complaint", "Open", "Click", "DeliveryDelay")


async def check_signature(http: Any, envelope: dict[str, str]) -> None:
    async with http.get(envelope["SigningCertURL"]) as response:
        certificate = x509.load_pem_x509_certificate(await response.read())
    signed = "".join(f"{k}\n{envelope[k]}\n" for k in SIGNED_KEYS if k in envelope).encode()
    assert envelope["SignatureVersion"] == "2"
    certificate.public_key().verify(  # type: ignore[union-attr, call-arg]
        base64.b64decode(envelope["Signature"]), signed, padding.PKCS1v15(), hashes.SHA256()
    )


async def test_ses_events_arrive_signed_and_parse(serve: Any, http: Any, receiver: Any) -> None:
    app = create_app(SnsOptions(webhook_url=receiver.url))
    base = await serve(app)
    our_id = "msg_01JTESTTESTTESTTESTTESTTEST"
    for kind in EVENTS:
        event = ses_event(
            kind,
            message_id="ses-1",
            source="hello@acme.test",
            destination=["ana@example.com"],
            tags={"mailers_message_id": our_id},
        )
        async with http.post(f"{base}/_sim/publish", json=event) as response:
            assert response.status == 200
    received = await receiver.wait_for(len(EVENTS))
    assert app[SNS].sent[0]["SigningCertURL"].startswith(f"{base}/SimpleNotificationService-")
    config = InboundConfig(
        sns_topic_arn=SnsOptions().topic_arn,
        sns_trust=SnsTrust(allow_aws_hosts=False, url_prefixes=(base + "/",)),
    )
    types = []
    for request in received:
        envelope = json.loads(request.body)
        assert request.headers["x-amz-sns-message-type"] == "Notification"
        await check_signature(http, envelope)
        result = await parse_inbound(
            "amazon-ses",
            headers=request.headers,
            body=request.body,
            config=config,
            server_id="srv_test",
            now=time.time(),
            replay_guard=None,
            cert_fetcher=HttpCertFetcher(http),
            sns_trust=config.sns_trust,  # the operator trusts the simulator too
        )
        [event] = result.events
        assert (event.our_message_id, event.provider_message_id, event.recipient) == (
            our_id,
            "ses-1",
            "ana@example.com",
        )
        types.append(event.type)
    assert types == [
        "message.sent",
        "message.delivered",
        "message.bounced",
        "message.complained",
        "message.opened",
        "message.clicked",
        "message.deferred",
    ]


async def test_tampered_notification_fails_verification(serve: Any, http: Any) -> None:
    app = create_app()
    base = await serve(app)
    event = ses_event("Bounce", message_id="ses-2", source="a@acme.test", destination=["b@example.com"])
    envelope = app[SNS].publish(event, base)
    await check_signature(http, envelope)
    forged = {**envelope, "Message": envelope["Message"].replace("Permanent", "Transient")}
    with pytest.raises(InvalidSignature):
        await check_signature(http, forged)


async def test_subscription_confirmation_round_trip(serve: Any, http: Any, receiver: Any) -> None:
    app = create_app(SnsOptions(webhook_url=receiver.url))
    base = await serve(app)
    async with http.post(f"{base}/_sim/subscribe") as response:
        assert response.status == 200
    [request] = await receiver.wait_for(1)
    config = InboundConfig(
        sns_topic_arn=SnsOptions().topic_arn,
        sns_trust=SnsTrust(allow_aws_hosts=False, url_prefixes=(base + "/",)),
    )
    result = await parse_inbound(
        "amazon-ses",
        headers=request.headers,
        body=request.body,
        config=config,
        server_id="srv_test",
        now=time.time(),
        replay_guard=None,
        cert_fetcher=HttpCertFetcher(http),
        sns_trust=config.sns_trust,  # the operator trusts the simulator too
    )
    assert result.confirm_url is not None
    async with http.get(result.confirm_url) as response:
        assert response.status == 200 and "SubscriptionArn" in await response.text()
    assert list(app[SNS].tokens.values()) == [True]
