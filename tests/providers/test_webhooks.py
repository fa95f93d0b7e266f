"""Simulator event webhooks arrive at a local receiver, signed exactly as each provider documents.

Each signature is checked here with a few independent lines (or the standardwebhooks library for
Svix), and the same requests are then fed to `providers.inbound` to prove the two sides agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from standardwebhooks import Webhook

from providers.base import Sent
from providers.inbound import InboundConfig, parse_inbound
from providers.simulators import sendgrid
from providers.simulators.base import SIMULATOR, SimulatorOptions
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage

from .provider_harness import start_simulated

RECIPIENTS = [Address("ok@example.com"), Address("bounce-1@example.com"), Address("complain-1@example.com")]
EXPECTED = {
    ("ok@example.com", "message.delivered"),
    ("ok@example.com", "message.opened"),
    ("ok@example.com", "message.clicked"),
    ("bounce-1@example.com", "message.bounced"),
    ("complain-1@example.com", "message.delivered"),
    ("complain-1@example.com", "message.complained"),
}


class MemoryReplayGuard:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def claim(self, provider: str, server_id: str, token: str, ttl_seconds: int) -> bool:
        first = token not in self.seen
        self.seen.add(token)
        return first


def message() -> OutboundMessage:
    return OutboundMessage(
        id=new_id("msg"),
        workspace="ws_test",
        from_=Address("hello@acme.test"),
        to=RECIPIENTS,
        subject="Hello",
        html="<p>Hello</p>",
        tags=["welcome"],
        metadata={"user_id": "7"},
    )


def check_mailgun(secret: str, headers: dict[str, str], body: bytes) -> None:
    signature = json.loads(body)["signature"]
    signed = (signature["timestamp"] + signature["token"]).encode()
    assert hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() == signature["signature"]


def check_sendgrid(public_key: str, headers: dict[str, str], body: bytes) -> None:
    key = load_der_public_key(base64.b64decode(public_key))
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    signature = base64.b64decode(headers["X-Twilio-Email-Event-Webhook-Signature"])
    key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))  # raises if invalid


def check_resend(secret: str, headers: dict[str, str], body: bytes) -> None:
    standard = {
        "webhook-id": headers["svix-id"],
        "webhook-timestamp": headers["svix-timestamp"],
        "webhook-signature": headers["svix-signature"],
    }
    Webhook(secret).verify(body, standard)  # raises if invalid


def check_postmark(expected_auth: str, headers: dict[str, str], body: bytes) -> None:
    assert headers["Authorization"] == expected_auth


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid", "resend", "postmark"])
async def test_signed_webhooks_arrive_and_parse(provider: str, serve: Any, http: Any, receiver: Any) -> None:
    url = receiver.url.replace("http://", "http://hooks:s3cret@") if provider == "postmark" else receiver.url
    harness = await start_simulated(provider, serve, http, SimulatorOptions(webhook_url=url))
    state, sent = harness.state, message()
    [outcome] = await harness.adapter.send_batch([sent])
    assert isinstance(outcome, Sent)
    received = await receiver.wait_for(1 if provider == "sendgrid" else len(EXPECTED))
    secret, check = _verifier(provider, harness.app)
    for request in received:
        check(secret, request.headers, request.body)
    events = [e for r in received for e in await _inbound(provider, secret, r)]
    assert {(e.recipient, e.type) for e in events} == EXPECTED
    assert {e.our_message_id for e in events} == {sent.id}
    assert state.webhooks.dropped == 0 and state.webhooks.failed == 0


def _verifier(provider: str, app: Any) -> tuple[str, Any]:
    state = app[SIMULATOR]
    match provider:
        case "mailgun":
            return state.webhook_secret, check_mailgun
        case "sendgrid":
            return sendgrid.public_key(app), check_sendgrid
        case "resend":
            return state.webhook_secret, check_resend
    return "Basic " + base64.b64encode(b"hooks:s3cret").decode(), check_postmark


async def _inbound(provider: str, secret: str, request: Any) -> list[Any]:
    config = {
        "mailgun": InboundConfig(mailgun_signing_key=secret),
        "sendgrid": InboundConfig(sendgrid_public_key=secret),
        "resend": InboundConfig(resend_secret=secret),
        "postmark": InboundConfig(postmark_user="hooks", postmark_password="s3cret"),
    }[provider]
    result = await parse_inbound(
        provider,
        headers=request.headers,
        body=request.body,
        config=config,
        server_id="srv_test",
        now=time.time(),
        replay_guard=MemoryReplayGuard(),
        cert_fetcher=None,
    )
    return list(result.events)


async def test_tampered_webhook_fails_the_independent_check(serve: Any, http: Any, receiver: Any) -> None:
    harness = await start_simulated(
        "mailgun", serve, http, SimulatorOptions(webhook_url=receiver.url, webhook_events=("delivered",))
    )
    await harness.adapter.send_batch([message()])
    [first, *_] = await receiver.wait_for(1)
    body = json.loads(first.body)
    body["signature"]["timestamp"] = str(int(body["signature"]["timestamp"]) + 1)
    with pytest.raises(AssertionError):
        check_mailgun(harness.state.webhook_secret, first.headers, json.dumps(body).encode())


async def test_full_webhook_queue_drops_and_counts(serve: Any, http: Any, receiver: Any) -> None:
    options = SimulatorOptions(webhook_url=receiver.url, webhook_queue_size=2)
    harness = await start_simulated("postmark", serve, http, options)
    await harness.adapter.send_batch([message()])  # six events into a queue of two
    assert harness.state.webhooks.dropped >= 3
    await receiver.wait_for(2)
