"""Prefixed, time-sortable identifiers (`msg_01J…`), as API.md prescribes."""

from __future__ import annotations

import hashlib
import secrets

from ulid import ULID

PREFIXES = frozenset(
    {"msg", "evt", "cmp", "aut", "run", "tpl", "lst", "sub", "whk", "dlv", "srv", "dom", "rul", "key", "aud", "req", "ws"}
)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{ULID()}"


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27


def derived_id(prefix: str, millis: int, *parts: str) -> str:
    """A ULID whose time part is `millis` and whose random part is a hash of `parts`.

    Deterministic: the same inputs always give the same id, so a retried request that raced a crash
    produces the id it produced the first time.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:10]
    return f"{prefix}_{ULID.from_bytes(millis.to_bytes(6, 'big') + digest)}"


def new_secret(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)
