"""What a tenant's sending server may connect to, and with whose credentials.

A workspace key with `write:settings` chooses a server's `base_url` (HTTP providers), `endpoint_url`
(SES) or SMTP `host`: without a guard that is SSRF into the operator's network, with the provider's
error text echoed back in the message's events. `Egress` carries the operator's two answers
(MAILERS_ALLOW_PRIVATE_TARGETS, MAILERS_ALLOW_AMBIENT_AWS_CREDENTIALS) to every adapter; the checks
themselves are `security.ssrf`'s, the same three as for webhooks:
- at save (`check_server_config`, called by the sending-servers route): syntax and literal IPs, and
  every address a host name resolves to now (a name that does not resolve is accepted: it is checked
  again at every connection);
- at every connection: HTTP adapters send through a session whose resolver is `GuardedResolver`
  (`provider_session`; `ProviderHttp` refuses any other) and never follow redirects; SES sends through
  aiobotocore with the same resolver; SMTP connects to the address `pinned_address` checked.
A refusal at send is `Transient(server_down=True)`: the server's configuration is at fault, so the
message fails over to another server instead of waiting.
"""

from __future__ import annotations

import weakref
from typing import Any

import aiohttp
import msgspec

from providers.base import ProviderConfig, Transient
from schemas.settings import Settings
from security.forbidden_addresses import parse_ip
from security.ssrf import (
    ForbiddenUrl,
    GuardedResolver,
    ParsedUrl,
    as_server_target,
    check_host,
    check_webhook_url,
    resolve_and_check,
)


class Egress(msgspec.Struct, frozen=True, kw_only=True):
    """The operator's outbound rules for tenant-configured servers; the default is the strict one."""

    allow_private_targets: bool = False
    allow_ambient_aws_credentials: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Egress:
        return cls(
            allow_private_targets=settings.allow_private_targets,
            allow_ambient_aws_credentials=settings.allow_ambient_aws_credentials,
        )


STRICT = Egress()


class TargetRefused(ValueError):
    """A server's config breaks the operator's outbound rules; `field` names the config field."""

    def __init__(self, field: str, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.field, self.code, self.detail = field, code, detail


def check_target_url(url: str, egress: Egress) -> ParsedUrl:
    """Syntax and, for a literal IP, the address; raises ForbiddenUrl with `server_target_*` codes."""
    try:
        return check_webhook_url(url, allow_http=True, allow_private=egress.allow_private_targets)
    except ForbiddenUrl as exc:
        raise as_server_target(exc) from None


def refused_at_send(exc: ForbiddenUrl) -> Transient:
    """The outcome of a connection the guard refused; the reason names the rule, not upstream text."""
    refusal = as_server_target(exc)
    if refusal.code == "server_target_unresolvable":
        return Transient(f"{refusal.code}: {refusal.detail}")
    return Transient(f"{refusal.code}: {refusal.detail}", server_down=True)


async def check_server_config(config: ProviderConfig, egress: Egress) -> None:
    """Save-time checks of one server's config; raises TargetRefused naming the field."""
    if config.uses_ambient_credentials() and not egress.allow_ambient_aws_credentials:
        raise TargetRefused(
            "access_key_id",
            "server_credentials_required",
            "this server needs its own credentials: the operator does not lend the host's",
        )
    for field, target in config.outbound_targets().items():
        try:
            await _check_target(target, egress)
        except ForbiddenUrl as exc:
            refusal = as_server_target(exc)
            raise TargetRefused(field, refusal.code, refusal.detail) from None


async def _check_target(target: str, egress: Egress) -> None:
    if "://" in target:
        parsed = check_target_url(target, egress)
        host, port, literal = parsed.host, parsed.port, parsed.ip is not None
    else:  # a bare host name: the SMTP relay
        host, port = check_host(target, allow_private=egress.allow_private_targets), 25
        literal = parse_ip(host) is not None
    if literal:
        return
    try:
        await resolve_and_check(host, port, allow_private=egress.allow_private_targets)
    except ForbiddenUrl as exc:
        if exc.code != "webhook_url_unresolvable":  # may resolve later; every connection checks again
            raise


def guarded_connector(egress: Egress, **limits: Any) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private=egress.allow_private_targets), **limits
    )


# Sessions made by `provider_session`: an adapter given any other session refuses it (fail closed).
_GUARDED: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()


def provider_session(egress: Egress) -> aiohttp.ClientSession:
    """The one session the HTTP adapters share: every new connection's answers are checked."""
    session = aiohttp.ClientSession(connector=guarded_connector(egress, limit=256, limit_per_host=64))
    _GUARDED.add(session)
    return session


def is_guarded(session: aiohttp.ClientSession) -> bool:
    return session in _GUARDED
