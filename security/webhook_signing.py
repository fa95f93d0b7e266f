"""Signatures on outbound webhook deliveries: Standard Webhooks v1 and a Stripe-style header.

Every delivery carries both, so a consumer can verify with the `standardwebhooks` libraries, with
Stripe's `WebhookSignature`, or with a few lines of HMAC code (docs/webhooks.md):

- `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> [v1,<b64>…]`
  where each signature is base64(HMAC-SHA256(base64decode(secret minus "whsec_"), "{id}.{ts}.{body}"));
- `Mailers-Signature: t=<ts>,v1=<hex>[,v1=<hex>…]`
  where each signature is hex(HMAC-SHA256(secret as UTF-8, "{ts}.{body}")).

During a secret rotation the caller passes both secrets and every scheme carries one signature per
secret; a consumer accepts the delivery when any of them matches its secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
from collections.abc import Mapping, Sequence

from security.secretbox import derive_key

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
DEFAULT_TOLERANCE_SECONDS = 300
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAILERS_HEADER = "Mailers-Signature"


class WebhookSignatureError(Exception):
    """A delivery's signature headers are missing, malformed, stale, or match none of the secrets."""


def new_webhook_secret() -> str:
    """`whsec_` + standard base64 of 32 random bytes; shown to the user once."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks scheme: the base64-decoded part after `whsec_`."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret holds at least {MIN_SECRET_BYTES} bytes")
    return key


def standard_signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def mailers_signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign_delivery(event_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The signature headers of one delivery attempt; `timestamp` is the attempt's Unix time."""
    if not secrets:
        raise ValueError("at least one webhook secret is required")
    if not event_id or any(ch in event_id for ch in ".\r\n"):
        raise ValueError("the event id must be non-empty and hold no '.' or line breaks")
    standard = " ".join(standard_signature(s, event_id, timestamp, body) for s in secrets)
    stripe_style = ",".join(
        [f"t={timestamp}", *(f"v1={mailers_signature(s, timestamp, body)}" for s in secrets)]
    )
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
        MAILERS_HEADER: stripe_style,
    }


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Check the Standard Webhooks headers against `secret`; returns the webhook id (the event id)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    event_id, stamp, signatures = (lowered.get(name) for name in STANDARD_HEADERS)
    if not (event_id and stamp and signatures):
        raise WebhookSignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = _fresh_timestamp(stamp, now, tolerance)
    expected = standard_signature(secret, event_id, timestamp, body).encode()
    offered = [candidate.encode() for candidate in signatures.split(" ") if candidate.startswith("v1,")]
    if not _any_matches(expected, offered):
        raise WebhookSignatureError("no signature matches the secret")
    return event_id


def verify_mailers(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check a `Mailers-Signature` header against `secret`; returns its timestamp."""
    if not header:
        raise WebhookSignatureError("missing Mailers-Signature")
    pairs = [part.partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in pairs if name.strip() == "t"]
    offered = [value.strip().encode() for name, _, value in pairs if name.strip() == "v1"]
    if len(stamps) != 1 or not offered:
        raise WebhookSignatureError("Mailers-Signature needs one t= and at least one v1=")
    timestamp = _fresh_timestamp(stamps[0], now, tolerance)
    expected = mailers_signature(secret, timestamp, body).encode()
    if not _any_matches(expected, offered):
        raise WebhookSignatureError("no signature matches the secret")
    return timestamp


def _fresh_timestamp(stamp: str, now: int, tolerance: int) -> int:
    stamp = stamp.strip()
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookSignatureError("the timestamp is not a Unix time in seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise WebhookSignatureError("the timestamp is outside the tolerance")
    return timestamp


def _any_matches(expected: bytes, offered: list[bytes]) -> bool:
    # Compare against every candidate (no early exit) so timing says nothing about which one matched.
    matched = False
    for candidate in offered:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def derived_webhook_secret(master: str, subject: str) -> str:
    """A `whsec_` secret for `subject` (an automation's webhook steps: "ws|aut") derived from the master
    key, so nothing is stored: HMAC-SHA256 under the HKDF key of the purpose "automation-webhooks". A
    rotation of MAILERS_SECRET_KEY changes it (receivers take the new one from the automation's view)."""
    key = derive_key(master, "automation-webhooks")
    digest = hmac.new(key, subject.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode("ascii")
