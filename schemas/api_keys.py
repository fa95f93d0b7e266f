"""API keys: scopes, the stored record (hash only), and the request/response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

READ_WRITE_FAMILIES = (
    "lists",
    "templates",
    "campaigns",
    "automations",
    "suppressions",
    "webhooks",
    "settings",
)
SCOPES: tuple[str, ...] = (
    "send",
    "read:messages",
    "read:events",
    "write:events",
    "read:analytics",
    *(f"{mode}:{family}" for family in READ_WRITE_FAMILIES for mode in ("read", "write")),
    "read:audit",
    "admin",
)

KeyState = Literal["active", "rotating", "revoked"]
Scope = Annotated[str, msgspec.Meta(pattern=r"^(send|admin|read:[a-z]+|write:[a-z]+)$")]
DomainName = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")]


def grants(granted: frozenset[str] | set[str] | list[str], required: str) -> bool:
    """`admin` grants everything; `write:x` implies `read:x`."""
    if "admin" in granted or required in granted:
        return True
    family = required.partition(":")[2]
    return required.startswith("read:") and f"write:{family}" in granted


class ApiKeyRecord(msgspec.Struct, kw_only=True):
    id: str
    workspace: str
    name: str
    prefix: str
    hash: str
    scopes: list[str]
    domains: list[str] = []
    state: KeyState = "active"
    created_at: datetime
    expires_at: datetime | None = None
    rotating_until: datetime | None = None
    replaced_by: str | None = None


class CreateApiKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=len(SCOPES))]
    domains: Annotated[list[DomainName], msgspec.Meta(max_length=100)] = []
    expires_at: datetime | None = None


class RotateApiKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    grace_period_seconds: Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 3600)] | None = None


class ApiKey(msgspec.Struct, kw_only=True):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    domains: list[str]
    state: KeyState
    created_at: datetime
    expires_at: datetime | None
    rotating_until: datetime | None
    replaced_by: str | None
    last_used_at: datetime | None = None
    use_count: int = 0
    object: str = "api_key"


class ApiKeyWithSecret(ApiKey, kw_only=True):
    secret: str


class ApiKeyList(msgspec.Struct, kw_only=True):
    data: list[ApiKey]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


api_key_record_encoder = msgspec.msgpack.Encoder()
api_key_record_decoder = msgspec.msgpack.Decoder(ApiKeyRecord)
