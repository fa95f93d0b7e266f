"""Postmark: HTTP Basic credentials, record types, derived stable event ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from providers.inbound import InboundConfig, InboundResult, InvalidSignature, MalformedPayload, parse_inbound

from .payloads import OUR_ID, POSTMARK_MESSAGE_ID, POSTMARK_RECORDS, copy_of
from .signing import NOW, basic_auth

CONFIG = InboundConfig(postmark_user="postmark", postmark_password="s3cret-webhook-pass")
AUTH = basic_auth("postmark", "s3cret-webhook-pass")


async def deliver(
    record: dict[str, Any], headers: dict[str, str] = AUTH, config: InboundConfig = CONFIG
) -> InboundResult:
    return await parse_inbound(
        "postmark",
        headers=headers,
        body=json.dumps(record).encode(),
        config=config,
        server_id="srv_pm",
        now=NOW,
        replay_guard=None,
        cert_fetcher=None,
    )


EXPECTED: dict[str, tuple[str, dict[str, Any], datetime]] = {
    "Delivery": ("message.delivered", {}, datetime(2024, 5, 20, 10, 15, 31, 907026, tzinfo=UTC)),
    "HardBounce": (
        "message.bounced",
        {"bounce": {"type": "hard", "code": "HardBounce", "diagnostic": "smtp;550 5.1.1 user unknown"}},
        datetime(2024, 5, 20, 10, 15, 33, 907026, tzinfo=UTC),
    ),
    "SoftBounce": (
        "message.bounced",
        {"bounce": {"type": "soft", "code": "SoftBounce", "diagnostic": "smtp;452 4.2.2 mailbox full"}},
        datetime(2024, 5, 20, 10, 16, tzinfo=UTC),
    ),
    "SpamComplaint": ("message.complained", {}, datetime(2024, 5, 20, 11, 0, tzinfo=UTC)),
    "Open": (
        "message.opened",
        {"user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", "ip": "188.2.95.4"},
        datetime(2024, 5, 20, 12, 0, 54, 907026, tzinfo=UTC),
    ),
    "Click": (
        "message.clicked",
        {
            "user_agent": "Mozilla/5.0 (Windows NT 10.0)",
            "ip": "188.2.95.4",
            "url": "https://acme.example/may",
        },
        datetime(2024, 5, 20, 12, 1, 54, 907026, tzinfo=UTC),
    ),
    "SubscriptionChange": (
        "subscriber.unsubscribed",
        {},
        datetime(2024, 5, 20, 13, 0, 0, 416071, tzinfo=UTC),
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_record_types_map_to_ours(name: str) -> None:
    [event] = (await deliver(POSTMARK_RECORDS[name])).events
    assert (event.type, event.data, event.occurred_at) == EXPECTED[name]
    assert event.provider == "postmark"
    assert event.provider_message_id == POSTMARK_MESSAGE_ID
    assert event.our_message_id == OUR_ID
    assert event.recipient == "john@example.com"


async def test_event_ids_are_stable_and_distinct() -> None:
    first = (await deliver(POSTMARK_RECORDS["Open"])).events[0]
    again = (await deliver(POSTMARK_RECORDS["Open"])).events[0]
    assert first.provider_event_id == again.provider_event_id
    later = copy_of(POSTMARK_RECORDS["Open"])
    later["ReceivedAt"] = "2024-05-21T08:00:00.0000000Z"
    ids = {first.provider_event_id, (await deliver(later)).events[0].provider_event_id}
    for name in ("Click", "Delivery", "HardBounce"):
        ids.add((await deliver(POSTMARK_RECORDS[name])).events[0].provider_event_id)
    assert len(ids) == 5


@pytest.mark.parametrize(
    "bounce_type, expected",
    [
        ("BadEmailAddress", ("message.bounced", "hard")),
        ("DnsError", ("message.bounced", "soft")),
        ("Blocked", ("message.bounced", "soft")),
        ("Transient", ("message.deferred", None)),
        ("SMTPApiError", ("message.failed", None)),
        ("SpamComplaint", ("message.complained", None)),
        ("Unsubscribe", ("subscriber.unsubscribed", None)),
        ("AutoResponder", None),
    ],
)
async def test_bounce_subtypes(bounce_type: str, expected: tuple[str, str | None] | None) -> None:
    record = copy_of(POSTMARK_RECORDS["HardBounce"])
    record["Type"] = bounce_type
    events = (await deliver(record)).events
    got = [(e.type, (e.data.get("bounce") or {}).get("type")) for e in events]
    assert got == ([expected] if expected else [])


async def test_reactivation_and_bounce_driven_suppression_changes_are_not_unsubscribes() -> None:
    for change in ({"SuppressSending": False}, {"SuppressionReason": "HardBounce"}):
        assert (await deliver({**POSTMARK_RECORDS["SubscriptionChange"], **change})).events == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic_auth("postmark", "wrong"),
        basic_auth("someone", "s3cret-webhook-pass"),
        {"Authorization": "Bearer s3cret-webhook-pass"},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic cG9zdG1hcms="},  # "postmark" without a colon
    ],
)
async def test_bad_credentials_are_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        await deliver(POSTMARK_RECORDS["Delivery"], headers)


async def test_lower_case_authorization_header_works() -> None:
    headers = {"authorization": AUTH["Authorization"]}
    assert len((await deliver(POSTMARK_RECORDS["Delivery"], headers)).events) == 1


async def test_server_without_credentials_rejects_everything() -> None:
    with pytest.raises(InvalidSignature):
        await deliver(POSTMARK_RECORDS["Delivery"], basic_auth("", ""), InboundConfig())


@pytest.mark.parametrize(
    "record",
    [
        {"MessageID": POSTMARK_MESSAGE_ID},  # no RecordType
        {"RecordType": "Delivery", "MessageID": POSTMARK_MESSAGE_ID},  # no DeliveredAt
        {"RecordType": "Delivery", "DeliveredAt": "not a time"},
    ],
)
async def test_malformed_records(record: dict[str, Any]) -> None:
    with pytest.raises(MalformedPayload):
        await deliver(record)


async def test_bad_credentials_win_over_a_malformed_body() -> None:
    with pytest.raises(InvalidSignature):
        await parse_inbound(
            "postmark",
            headers=basic_auth("postmark", "wrong"),
            body=b"{",
            config=CONFIG,
            server_id="srv_pm",
            now=NOW,
            replay_guard=None,
            cert_fetcher=None,
        )
