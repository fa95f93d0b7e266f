"""Sending servers: the API bodies, the stored record (secrets sealed) and the view clients see.

A server's `config` is checked against its provider adapter's `Config` Struct; the fields that Struct
lists in `__secret_fields__` are sealed at rest and never returned, only named in `secret_fields_set`.
`inbound` holds the provider's webhook verification secrets (`providers.inbound.InboundConfig`
fields) and is sealed whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import msgspec

Provider = Literal["smtp", "sandbox", "amazon-ses", "mailgun", "sendgrid", "resend", "postmark"]
Status = Literal["healthy", "degraded", "down"]
PROVIDERS: tuple[str, ...] = get_args(Provider)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
PerSecond = Annotated[float, msgspec.Meta(gt=0)]
PerWindow = Annotated[int, msgspec.Meta(gt=0)]
DomainText = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
DEFAULT_PRIORITY = 100


class Quotas(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A server's own sending limits; an absent limit is unlimited."""

    per_second: PerSecond | None = None
    per_minute: PerWindow | None = None
    per_hour: PerWindow | None = None
    per_day: PerWindow | None = None


class DomainLimit(Quotas, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Limits for mail to one recipient domain (or to every other domain, under the key `*`)."""


class CreateSendingServer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    provider: Provider
    config: dict[str, Any] = {}
    priority: Priority = DEFAULT_PRIORITY
    quotas: Quotas = Quotas()
    recipient_domain_limits: Annotated[dict[DomainText, DomainLimit], msgspec.Meta(max_length=1000)] = {}
    domains: Annotated[list[DomainText], msgspec.Meta(max_length=100)] = []
    inbound: dict[str, Any] = {}


class UpdateSendingServer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every field optional. `config` and `inbound` merge field by field (a `null` removes a field);
    the other fields replace what was there."""

    name: Name | None = None
    config: dict[str, Any] | None = None
    priority: Priority | None = None
    quotas: Quotas | None = None
    recipient_domain_limits: (
        Annotated[dict[DomainText, DomainLimit], msgspec.Meta(max_length=1000)] | None
    ) = None
    domains: Annotated[list[DomainText], msgspec.Meta(max_length=100)] | None = None
    inbound: dict[str, Any] | None = None


class ServerRecord(msgspec.Struct, kw_only=True):
    """What Redis holds. `sealed_config` / `sealed_inbound` are SecretBox tokens bound to `id`."""

    id: str
    workspace: str
    name: str
    provider: str
    config: dict[str, Any] = {}
    secret_fields_set: list[str] = []
    sealed_config: str | None = None
    inbound_fields_set: list[str] = []
    sealed_inbound: str | None = None
    priority: int = DEFAULT_PRIORITY
    quotas: Quotas = Quotas()
    recipient_domain_limits: dict[str, DomainLimit] = {}
    domains: list[str] = []
    created_at: datetime
    updated_at: datetime


class SendingServer(msgspec.Struct, kw_only=True):
    id: str
    name: str
    provider: str
    config: dict[str, Any]
    secret_fields_set: list[str]
    inbound_fields_set: list[str]
    priority: int
    quotas: Quotas
    recipient_domain_limits: dict[str, DomainLimit]
    domains: list[str]
    status: Status
    created_at: datetime
    updated_at: datetime
    object: str = "sending_server"


class SendingServerList(msgspec.Struct, kw_only=True):
    data: list[SendingServer]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedSendingServer(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "sending_server"


server_record_encoder = msgspec.msgpack.Encoder()
server_record_decoder = msgspec.msgpack.Decoder(ServerRecord)
