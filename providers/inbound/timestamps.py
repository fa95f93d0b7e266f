"""Provider timestamps: freshness of signed ones (what bounds a replay) and event times in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from providers.inbound.errors import InvalidSignature, MalformedPayload


def signed_seconds(raw: str | None) -> int:
    if raw is None:
        raise InvalidSignature("missing signature timestamp")
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidSignature("signature timestamp is not an integer") from None


def require_fresh(signed_at: float, *, now: float, tolerance: float) -> None:
    if abs(now - signed_at) > tolerance:
        raise InvalidSignature("signature timestamp outside the tolerance window")


def from_epoch(seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedPayload(f"timestamp out of range: {seconds!r}") from None


def from_iso(text: str) -> datetime:
    """An ISO 8601 instant in UTC; a zone-less value is taken as UTC (Postmark, SES send UTC)."""
    try:
        moment = msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise MalformedPayload(f"not an ISO 8601 timestamp: {text!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
