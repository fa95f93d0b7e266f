"""SSRF guard for webhook endpoints: refuse URLs that reach the operator's own network.

Three checks, because each alone can be bypassed:
1. `check_webhook_url` when an endpoint is created or updated: syntax (https only unless allowed, no
   credentials, a host, a port in range) and, for a literal IP host, the address itself. aiohttp never
   asks a resolver about a literal IP, so this is the only place such hosts are checked.
2. `resolve_and_check` at the same moment: every A/AAAA record of the host; one forbidden address
   refuses the URL (an attacker's DNS can answer with a public and a private address).
3. `GuardedResolver` at every connection: the name is resolved again and checked again, because DNS
   may answer differently later (DNS rebinding). The deliverer passes it to its `TCPConnector`; a
   forbidden answer raises `ForbiddenUrl` out of the request instead of connecting. The deliverer
   must not follow redirects (a 3xx is a failed delivery), or a redirect would skip checks 1 and 2.

`allow_private` (MAILERS_ALLOW_PRIVATE_WEBHOOKS) lets an operator deliver inside their network, but
some addresses are refused even then: they are never a webhook receiver and are favourite targets
(cloud metadata endpoints, unspecified, multicast, broadcast).

The same three checks guard every other outbound connection a tenant configures (a sending server's
`base_url`, `endpoint_url` or SMTP host, see `providers.egress`), with MAILERS_ALLOW_PRIVATE_TARGETS as
their `allow_private`; `as_server_target` gives a refusal the sending-server problem codes, and
`pinned_address` is check 2 for clients that connect to the checked address themselves (SMTP).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from schemas.domain_names import to_ascii_domain
from security.forbidden_addresses import ALWAYS_FORBIDDEN, is_forbidden_ip, parse_ip

MAX_URL_CHARS = 2048
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".lan", ".intranet")


class ForbiddenUrl(Exception):
    """A webhook URL is refused; `code` is the stable problem code the API answers with."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ParsedUrl(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    scheme: str
    host: str  # ASCII (IDNA) host name, or the IP literal without brackets
    port: int
    ip: str | None  # set when the host is a literal IP address


def check_webhook_url(url: str, *, allow_http: bool, allow_private: bool) -> ParsedUrl:
    if len(url) > MAX_URL_CHARS or any(ch.isspace() or ch == "\\" or not ch.isprintable() for ch in url):
        raise ForbiddenUrl("webhook_url_invalid", "the URL holds spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ForbiddenUrl(
            "webhook_url_invalid", "the URL cannot be parsed or its port is out of range"
        ) from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and allow_http):
        raise ForbiddenUrl("webhook_url_scheme", "webhook URLs must use https")
    if "@" in parts.netloc:
        raise ForbiddenUrl("webhook_url_invalid", "credentials in the URL are not allowed")
    if not parts.hostname:
        raise ForbiddenUrl("webhook_url_invalid", "the URL has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ForbiddenUrl("webhook_url_invalid", "the port must be between 1 and 65535")
    host, ip = _checked_host(parts.hostname, allow_private)
    default_port = 443 if scheme == "https" else 80
    return ParsedUrl(url=url, scheme=scheme, host=host, port=port or default_port, ip=ip)


def _checked_host(hostname: str, allow_private: bool) -> tuple[str, str | None]:
    literal = parse_ip(hostname)
    if literal is not None:
        refuse_addresses([str(literal)], allow_private=allow_private)
        return str(literal), str(literal)
    try:
        host = to_ascii_domain(hostname.rstrip("."))
    except ValueError:
        raise ForbiddenUrl("webhook_url_invalid", "the host is not a valid domain name") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_valid_label(label) for label in labels) or labels[-1].isdigit():
        raise ForbiddenUrl("webhook_url_invalid", "the host is not a valid domain name")
    internal = len(labels) == 1 or host.endswith(_INTERNAL_SUFFIXES)
    if internal and not allow_private:
        raise ForbiddenUrl("webhook_url_private_address", f"{host} is an internal host name")
    return host, None


def _valid_label(label: str) -> bool:
    return 0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum() and label.isascii()


def refuse_addresses(addresses: Iterable[str], *, allow_private: bool) -> None:
    """Raise `ForbiddenUrl` if any of the addresses is forbidden under the operator's setting."""
    for address in addresses:
        reason = is_forbidden_ip(address)
        if reason is None:
            continue
        if allow_private and reason.rpartition(":")[2] not in ALWAYS_FORBIDDEN:
            continue
        raise ForbiddenUrl("webhook_url_private_address", f"{address} is refused ({reason})")


async def resolve_and_check(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Every address `host` resolves to; refuses the host if any one of them is forbidden."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ForbiddenUrl("webhook_url_unresolvable", f"{host} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ForbiddenUrl("webhook_url_unresolvable", f"{host} has no address")
    refuse_addresses(addresses, allow_private=allow_private)
    return addresses


def as_server_target(exc: ForbiddenUrl) -> ForbiddenUrl:
    """The same refusal under the sending-server codes (`server_target_*`, docs/errors.md)."""
    code = exc.code.replace("webhook_url", "server_target", 1)
    detail = "only http and https are allowed" if code == "server_target_scheme" else exc.detail
    return ForbiddenUrl(code, detail)


def check_host(hostname: str, *, allow_private: bool) -> str:
    """A bare host name (an SMTP relay's): checks 1 of a URL's host; the ASCII name or IP text."""
    return _checked_host(hostname, allow_private)[0]


async def pinned_address(host: str, port: int, *, allow_private: bool) -> str:
    """Check 2 at connection time for clients without a resolver seam: the address to connect to.

    Every answer is checked (as in `resolve_and_check`) and the first is returned, so the connection
    goes to exactly the address that was checked and a second lookup cannot rebind it.
    """
    literal = parse_ip(host)
    if literal is not None:
        refuse_addresses([str(literal)], allow_private=allow_private)
        return str(literal)
    return (await resolve_and_check(host, port, allow_private=allow_private))[0]


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses forbidden answers at connection time (DNS rebinding).

    Use: `aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=settings.allow_private_webhooks))`.
    """

    def __init__(self, *, allow_private: bool, resolver: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._resolver is None:
            self._resolver = ThreadedResolver()
        results = await self._resolver.resolve(host, port, family)
        refuse_addresses((result["host"] for result in results), allow_private=self._allow_private)
        return results

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
