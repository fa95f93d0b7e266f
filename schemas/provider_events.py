"""The normalised shape every provider's inbound events are turned into.

A `ProviderEvent` is still keyed by the provider's ids: the caller resolves `provider_message_id`
(or the `our_message_id` hint) to our message and dedupes on `(provider, provider_event_id)`.

`data` keys, by type:
- message.bounced: `bounce` = {"type": "hard" | "soft", "code": str | None, "diagnostic": str | None}
- message.deferred, message.failed: `reason` (str | None), `code` (str | None)
- message.opened: `user_agent`, `ip`; message.clicked: `url`, `user_agent`, `ip`
- message.complained: `feedback_type` when the provider reports one
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

import msgspec

InboundType = Literal[
    "message.sent",
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.complained",
    "message.opened",
    "message.clicked",
    "message.failed",
    "subscriber.unsubscribed",
]

# The custom argument / tag / metadata key our send adapters attach, echoed back by providers.
OUR_MESSAGE_ID_KEY = "mailers_message_id"


class ProviderEvent(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    provider_event_id: str
    provider_message_id: str | None
    type: InboundType
    recipient: str | None
    occurred_at: datetime
    our_message_id: str | None = None
    data: dict[str, Any] = {}


class InboundResult(msgspec.Struct, frozen=True, kw_only=True):
    events: list[ProviderEvent] = []
    # SNS SubscriptionConfirmation: a trusted URL the caller should GET (in the background) to confirm.
    confirm_url: str | None = None


BounceKind = Literal["hard", "soft"]


def bounce_data(kind: BounceKind, code: object, diagnostic: str | None) -> dict[str, Any]:
    return {"bounce": {"type": kind, "code": _text(code), "diagnostic": diagnostic or None}}


def reason_data(reason: str | None, code: object = None) -> dict[str, Any]:
    return {"reason": reason or None, "code": _text(code)}


def engagement_data(user_agent: str | None, ip: str | None, url: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"user_agent": user_agent or None, "ip": ip or None}
    if url is not None:
        data["url"] = url
    return data


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def stable_event_id(*parts: str | None) -> str:
    """A deterministic id for providers that send none: the same record always yields the same id."""
    joined = "\x1f".join(part or "" for part in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


def fan_out_ids(base_id: str, count: int) -> list[str]:
    """One id per event made from one provider notification; the plain id when there is just one."""
    if count == 1:
        return [base_id]
    return [f"{base_id}:{index}" for index in range(count)]
