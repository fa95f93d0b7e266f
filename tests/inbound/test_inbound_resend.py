"""Resend via Svix: signed here with the Standard Webhooks reference library (same scheme as Svix)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from providers.inbound import InboundConfig, InboundResult, InvalidSignature, MalformedPayload, parse_inbound

from .payloads import OUR_ID, RESEND_EMAIL_ID, RESEND_EVENTS, resend_event
from .signing import NOW

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONFIG = InboundConfig(resend_secret=SECRET)
SVIX_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def signed(
    payload: dict[str, Any], *, secret: str = SECRET, svix_id: str = SVIX_ID, at: float = NOW
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload)
    signature = Webhook(secret).sign(svix_id, datetime.fromtimestamp(at, UTC), body)
    return {"svix-id": svix_id, "svix-timestamp": str(int(at)), "svix-signature": signature}, body.encode()


async def deliver(headers: dict[str, str], body: bytes, now: float = NOW) -> InboundResult:
    return await parse_inbound(
        "resend",
        headers=headers,
        body=body,
        config=CONFIG,
        server_id="srv_rs",
        now=now,
        replay_guard=None,
        cert_fetcher=None,
    )


EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "email.sent": ("message.sent", {}),
    "email.delivered": ("message.delivered", {}),
    "email.delivery_delayed": ("message.deferred", {"reason": None, "code": None}),
    "email.bounced": (
        "message.bounced",
        {
            "bounce": {
                "type": "hard",
                "code": "Suppressed",
                "diagnostic": RESEND_EVENTS["email.bounced"]["data"]["bounce"]["message"],
            }
        },
    ),
    "email.complained": ("message.complained", {}),
    "email.opened": ("message.opened", {"user_agent": None, "ip": None}),
    "email.clicked": (
        "message.clicked",
        {
            "ip": "122.115.53.11",
            "url": "https://resend.com",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15",
        },
    ),
    "email.failed": ("message.failed", {"reason": "reached_daily_quota", "code": None}),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
async def test_event_types_map_to_ours(kind: str) -> None:
    [event] = (await deliver(*signed(RESEND_EVENTS[kind]))).events
    assert (event.type, event.data) == EXPECTED[kind]
    assert event.provider == "resend"
    assert event.provider_event_id == SVIX_ID
    assert event.provider_message_id == RESEND_EMAIL_ID
    assert event.our_message_id == OUR_ID
    assert event.recipient == "delivered@resend.dev"
    assert event.occurred_at == datetime(2024, 5, 20, 10, 15, 32, 126000, tzinfo=UTC)


async def test_multi_recipient_delivery_fans_out_with_distinct_ids() -> None:
    payload = resend_event(
        "email.delivered",
        to=["a@example.com", "b@example.com"],
        tags=[{"name": "mailers_message_id", "value": OUR_ID}],
    )
    events = (await deliver(*signed(payload))).events
    assert [e.recipient for e in events] == ["a@example.com", "b@example.com"]
    assert len({e.provider_event_id for e in events}) == 2
    assert {e.our_message_id for e in events} == {OUR_ID}


async def test_one_valid_signature_among_several_is_enough() -> None:
    headers, body = signed(RESEND_EVENTS["email.delivered"])
    headers["svix-signature"] = (
        "v1,Zm9yZ2VkIHNpZ25hdHVyZQ== v1a,ignoredAsymmetric " + headers["svix-signature"]
    )
    assert len((await deliver(headers, body)).events) == 1


async def test_tampered_body_is_rejected() -> None:
    headers, body = signed(RESEND_EVENTS["email.delivered"])
    with pytest.raises(InvalidSignature):
        await deliver(headers, body.replace(b"email.delivered", b"email.bounced"))


async def test_other_secret_is_rejected() -> None:
    with pytest.raises(InvalidSignature):
        await deliver(*signed(RESEND_EVENTS["email.delivered"], secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ=="))


async def test_svix_id_is_signed() -> None:
    headers, body = signed(RESEND_EVENTS["email.delivered"])
    headers["svix-id"] = "msg_someone_else"
    with pytest.raises(InvalidSignature):
        await deliver(headers, body)


@pytest.mark.parametrize("offset", [-301, 301])
async def test_timestamp_outside_five_minutes_is_rejected(offset: int) -> None:
    with pytest.raises(InvalidSignature, match="tolerance"):
        await deliver(*signed(RESEND_EVENTS["email.delivered"], at=NOW + offset))


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_missing_svix_header_is_rejected(missing: str) -> None:
    headers, body = signed(RESEND_EVENTS["email.delivered"])
    del headers[missing]
    with pytest.raises(InvalidSignature):
        await deliver(headers, body)


async def test_headers_are_matched_case_insensitively() -> None:
    headers, body = signed(RESEND_EVENTS["email.delivered"])
    shouted = {name.title(): value for name, value in headers.items()}
    assert len((await deliver(shouted, body)).events) == 1


@pytest.mark.parametrize(
    "payload",
    [{"type": "email.sent"}, {"type": "email.sent", "created_at": "yesterday", "data": {"email_id": "x"}}],
)
async def test_signed_but_malformed_body(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedPayload):
        await deliver(*signed(payload))


async def test_unknown_event_types_are_ignored() -> None:
    payload = {
        "type": "contact.created",
        "created_at": "2024-05-20T10:15:32.126Z",
        "data": {"email_id": "n/a", "id": "e169aa45"},
    }
    assert (await deliver(*signed(payload))).events == []
