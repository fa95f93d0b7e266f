"""SES specifics against moto: simple vs raw content, tags, error classification, client lifetime."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from providers import ses
from providers.base import Permanent, Sent, Throttled, Transient
from providers.http_errors import MESSAGE_ID_FIELD
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage
from store.redis_server import free_port
from tests.local_egress import LOCAL

from .provider_harness import SENDING_DOMAIN, moto_messages, start_ses, verify_moto_domain


def plain(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "id": new_id("msg"),
        "workspace": "ws_test",
        "from_": Address(f"news@{SENDING_DOMAIN}", "Acme News"),
        "to": [Address("ana@example.com")],
        "subject": f"Digest {new_id('req')}",
        "html": "<p>Digest</p>",
        "text": "Digest",
        "tags": ["digest", "not ok!"],
        "metadata": {"user_id": "42", "note": "has spaces"},
    }
    fields.update(overrides)
    return OutboundMessage(**fields)


def client_error(code: str, message: str, status: int) -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "SendEmail")  # type: ignore[arg-type]


async def test_simple_content_without_headers_or_attachments(moto_url: str) -> None:
    await verify_moto_domain(moto_url)
    harness = start_ses(moto_url)
    message = plain()
    try:
        [outcome] = await harness.adapter.send_batch([message])
    finally:
        await harness.adapter.close()
    assert isinstance(outcome, Sent)
    [got] = [m for m in await moto_messages(moto_url) if m.subject == message.subject]
    assert got.request_path == "SendEmail/Simple"
    assert got.provider_message_id == outcome.provider_message_id
    assert got.sender == "Acme News <news@acme.test>" and got.to == ["ana@example.com"]
    assert got.html == "<p>Digest</p>"


def test_request_carries_tags_metadata_and_configuration_set() -> None:
    message = plain(reply_to=[Address("help@acme.test")])
    request = ses.send_email_request(message, ses.Config(configuration_set="events"))
    assert request["ConfigurationSetName"] == "events"
    assert request["ReplyToAddresses"] == ["help@acme.test"]
    assert request["Content"]["Simple"]["Body"]["Text"] == {"Data": "Digest", "Charset": "UTF-8"}
    # SES accepts only [A-Za-z0-9_-] in tag names and values: the others are left out
    assert request["EmailTags"] == [
        {"Name": "digest", "Value": "true"},
        {"Name": "user_id", "Value": "42"},
        {"Name": MESSAGE_ID_FIELD, "Value": message.id},
    ]


def test_custom_headers_switch_to_raw_mime() -> None:
    message = plain(headers={"List-Unsubscribe": "<https://acme.test/u/1>"}, bcc=[Address("audit@acme.test")])
    request = ses.send_email_request(message, ses.Config())
    raw = request["Content"]["Raw"]["Data"]
    assert b"List-Unsubscribe: <https://acme.test/u/1>" in raw and b"audit@acme.test" not in raw
    assert request["Destination"]["BccAddresses"] == ["audit@acme.test"]


async def test_unverified_sender_marks_the_server_down(moto_url: str) -> None:
    harness = start_ses(moto_url)
    try:
        [outcome] = await harness.adapter.send_batch([plain(from_=Address("x@unverified.test"))])
    finally:
        await harness.adapter.close()
    assert isinstance(outcome, Transient) and outcome.server_down
    assert "MessageRejected" in outcome.reason


async def test_rejected_message_is_permanent(moto_url: str) -> None:
    await verify_moto_domain(moto_url)
    harness = start_ses(moto_url)
    too_many = [Address(f"r{i}@example.com") for i in range(51)]
    try:
        [outcome] = await harness.adapter.send_batch([plain(to=too_many)])
    finally:
        await harness.adapter.close()
    assert isinstance(outcome, Permanent) and outcome.code == "MessageRejected"


async def test_unreachable_endpoint_is_transient() -> None:
    adapter = ses.Adapter(
        ses.Config(
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            access_key_id="testing",
            secret_access_key="testing",
            timeout_seconds=2,
        ),
        egress=LOCAL,
    )
    try:
        [outcome] = await adapter.send_batch([plain()])
    finally:
        await adapter.close()
    assert isinstance(outcome, Transient) and not outcome.server_down


async def test_client_is_opened_once_and_closed(moto_url: str) -> None:
    await verify_moto_domain(moto_url)
    harness = start_ses(moto_url)
    outcomes = await harness.adapter.send_batch([plain(), plain()])
    client = harness.adapter._client
    outcomes += await harness.adapter.send_batch([plain()])
    assert all(isinstance(o, Sent) for o in outcomes)
    assert client is not None and harness.adapter._client is client
    await harness.adapter.close()
    assert harness.adapter._client is None


def test_error_classification() -> None:
    config = ses.Config(throttle_retry_seconds=2.0, daily_quota_retry_seconds=900.0)
    classify = ses.classify_ses_error
    rate = classify(client_error("TooManyRequestsException", "Maximum sending rate exceeded.", 429), config)
    daily = classify(client_error("LimitExceededException", "Daily message quota exceeded.", 400), config)
    assert rate == Throttled(
        retry_after=2.0, reason="SES TooManyRequestsException: Maximum sending rate exceeded."
    )
    assert isinstance(daily, Throttled) and daily.retry_after == 900.0
    for code in ("AccountSuspendedException", "SendingPausedException", "MailFromDomainNotVerifiedException"):
        outcome = classify(client_error(code, "nope", 400), config)
        assert isinstance(outcome, Transient) and outcome.server_down, code
    bad = classify(client_error("BadRequestException", "Invalid address", 400), config)
    assert bad == Permanent("SES BadRequestException: Invalid address", code="BadRequestException")
    outage = classify(client_error("InternalFailure", "oops", 500), config)
    assert isinstance(outage, Transient) and not outage.server_down
