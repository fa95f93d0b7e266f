"""Unpadded base64url (RFC 4648 §5), decoded strictly.

Python's decoder ignores stray characters and the unused low bits of the last character, so several
strings can decode to the same bytes. Tokens in URLs must have exactly one spelling (any altered
character must be rejected), so decoding re-encodes and compares.
"""

from __future__ import annotations

import base64
import binascii


def pattern(max_chars: int) -> str:
    """A regular expression of the unpadded base64url text of at most `max_chars` characters: what a
    route states for a token in its path (ingress/routing.RouteSpec.patterns)."""
    return f"[A-Za-z0-9_-]{{1,{max_chars}}}"


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of `text`; ValueError unless `text` is their canonical unpadded encoding."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw
