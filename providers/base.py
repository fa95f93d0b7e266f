"""The one interface the Dispatcher calls every provider through, and the outcomes it returns.

Every adapter module (`providers/<name>.py`) exposes:
- `Config`: a msgspec Struct (forbid_unknown_fields) of the server's `config` object as documented in
  docs/providers.md; fields listed in `Config.__secret_fields__` are encrypted at rest, never returned;
- `Adapter(config, *, http=None)`: implements `ProviderAdapter` below. HTTP adapters share the one
  aiohttp ClientSession they are given (created by the caller, closed by the caller).

Outcomes, one per message, in input order:
- `Sent`: the provider took it (optionally with recipients it refused outright: hard bounces).
- `Throttled`: the provider asked us to slow down; retry after `retry_after` seconds.
- `Transient`: try again later (network, 5xx, 4xx SMTP replies). `server_down=True` means the fault is
  the server's own (bad credentials, unverified account, config): the server is marked down and the
  message fails over at once instead of waiting.
- `Permanent`: this message will never be accepted as it is (validation, 5xx SMTP reply for every
  recipient). `bounced` lists recipients refused as hard bounces; they are suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import msgspec

from schemas.messages import OutboundMessage


class RecipientRefusal(msgspec.Struct, frozen=True):
    email: str
    code: str
    diagnostic: str
    hard: bool = True


class Sent(msgspec.Struct, frozen=True, tag=True):
    provider_message_id: str
    refused: list[RecipientRefusal] = []


class Throttled(msgspec.Struct, frozen=True, tag=True):
    retry_after: float
    reason: str = "rate limited"


class Transient(msgspec.Struct, frozen=True, tag=True):
    reason: str
    retry_after: float | None = None
    server_down: bool = False


class Permanent(msgspec.Struct, frozen=True, tag=True):
    reason: str
    code: str | None = None
    bounced: list[RecipientRefusal] = []


Outcome = Sent | Throttled | Transient | Permanent


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every adapter's Config; subclasses list their secret field names and, where the tenant
    chooses where the adapter connects, override `outbound_targets` (checked by `providers.egress`)."""

    __secret_fields__: ClassVar[tuple[str, ...]] = ()

    def outbound_targets(self) -> dict[str, str]:
        """Config field -> the URL (or bare host) it makes the adapter connect to."""
        return {}

    def uses_ambient_credentials(self) -> bool:
        """True when the adapter would fall back to the host's own credentials (SES without keys)."""
        return False


class ProviderAdapter(Protocol):
    name: ClassVar[str]
    max_batch: ClassVar[int]

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        """One outcome per message, in order. Never raises for a provider's answer."""
        ...

    async def close(self) -> None: ...
