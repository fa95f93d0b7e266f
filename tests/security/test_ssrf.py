from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from security.ssrf import ForbiddenUrl, GuardedResolver, check_webhook_url, is_forbidden_ip, resolve_and_check

FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("169.254.10.1", "link_local"),
    ("fe80::1", "link_local"),
    ("fe80::1%eth0", "link_local"),
    ("fc00::1", "unique_local"),
    ("fd12:3456::1", "unique_local"),
    ("fec0::1", "site_local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("0.1.2.3", "this_network"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.192", "reserved"),
    ("192.0.2.10", "documentation"),
    ("2001:db8::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("2001::1", "teredo"),
    ("::ffff:127.0.0.1", "ipv4_mapped:loopback"),
    ("::ffff:10.0.0.1", "ipv4_mapped:private"),
    ("::ffff:169.254.169.254", "ipv4_mapped:metadata"),
    ("::ffff:0:7f00:1", "ipv4_translated:loopback"),
    ("::127.0.0.1", "ipv4_compatible:loopback"),
    ("64:ff9b::a00:1", "nat64:private"),
    ("64:ff9b:1::1", "reserved"),
    ("2002:7f00:1::1", "6to4:loopback"),
    ("2002:a9fe:a9fe::", "6to4:metadata"),
    ("not-an-ip", "invalid"),
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize(("ip", "reason"), FORBIDDEN)
def test_forbidden_addresses_name_their_reason(ip: str, reason: str) -> None:
    assert is_forbidden_ip(ip) == reason


@pytest.mark.parametrize("ip", ALLOWED)
def test_public_addresses_are_allowed(ip: str) -> None:
    assert is_forbidden_ip(ip) is None


def test_a_public_https_url_is_parsed_with_its_default_port() -> None:
    parsed = check_webhook_url("https://Hooks.Example.com/in?x=1", allow_http=False, allow_private=False)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.ip) == ("https", "hooks.example.com", 443, None)
    literal = check_webhook_url("https://[2606:4700:4700::1111]:8443/", allow_http=False, allow_private=False)
    assert (literal.host, literal.port, literal.ip) == ("2606:4700:4700::1111", 8443, "2606:4700:4700::1111")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/", "webhook_url_scheme"),
        ("ftp://hooks.example.com/", "webhook_url_scheme"),
        ("javascript:alert(1)", "webhook_url_scheme"),
        ("https://user:pw@hooks.example.com/", "webhook_url_invalid"),
        ("https://hooks.example.com@127.0.0.1/", "webhook_url_invalid"),
        ("https:///path", "webhook_url_invalid"),
        ("https://hooks.example.com:0/", "webhook_url_invalid"),
        ("https://hooks.example.com:70000/", "webhook_url_invalid"),
        ("https://hooks.example.com:port/", "webhook_url_invalid"),
        ("https://hooks.example.com/a b", "webhook_url_invalid"),
        ("https://hooks.example.com\\@127.0.0.1/", "webhook_url_invalid"),
        ("https://hooks.exa\tmple.com/", "webhook_url_invalid"),
        ("https://bad_label..example.com/", "webhook_url_invalid"),
        ("https://127.1/", "webhook_url_invalid"),
        ("https://" + "a" * 2100 + ".com/", "webhook_url_invalid"),
        ("https://127.0.0.1/", "webhook_url_private_address"),
        ("https://[::1]/", "webhook_url_private_address"),
        ("https://[::ffff:127.0.0.1]/", "webhook_url_private_address"),
        ("https://169.254.169.254/latest/meta-data/", "webhook_url_private_address"),
        ("https://10.0.0.5:8443/", "webhook_url_private_address"),
        ("https://localhost/", "webhook_url_private_address"),
        ("https://api.localhost/", "webhook_url_private_address"),
        ("https://metadata.google.internal/", "webhook_url_private_address"),
        ("https://intranet/", "webhook_url_private_address"),
    ],
)
def test_refused_urls_carry_a_stable_code(url: str, code: str) -> None:
    with pytest.raises(ForbiddenUrl) as refused:
        check_webhook_url(url, allow_http=False, allow_private=False)
    assert refused.value.code == code


def test_http_is_allowed_only_when_the_operator_allows_it() -> None:
    assert check_webhook_url("http://hooks.example.com/", allow_http=True, allow_private=False).port == 80


def test_private_targets_are_allowed_when_the_operator_allows_them() -> None:
    for url in ("https://127.0.0.1:9000/", "https://10.0.0.5/", "https://localhost/", "https://[::1]/"):
        assert check_webhook_url(url, allow_http=False, allow_private=True).port in (443, 9000)


@pytest.mark.parametrize("url", ["https://169.254.169.254/", "https://0.0.0.0/", "https://[ff02::1]/"])
def test_metadata_unspecified_and_multicast_stay_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(ForbiddenUrl) as refused:
        check_webhook_url(url, allow_http=False, allow_private=True)
    assert refused.value.code == "webhook_url_private_address"


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(ForbiddenUrl) as refused:
        await resolve_and_check("localhost", 443, allow_private=False)
    assert refused.value.code == "webhook_url_private_address"
    assert "loopback" in refused.value.detail
    assert "127.0.0.1" in await resolve_and_check("localhost", 443, allow_private=True)


async def test_public_addresses_resolve_and_pass() -> None:
    assert await resolve_and_check("93.184.216.34", 443, allow_private=False) == ["93.184.216.34"]


async def test_unresolvable_hosts_are_refused() -> None:
    for host in ("nothing-here.invalid", "bad..label"):
        with pytest.raises(ForbiddenUrl) as refused:
            await resolve_and_check(host, 443, allow_private=False)
        assert refused.value.code == "webhook_url_unresolvable"


class _ScriptedDns(AbstractResolver):
    """The outermost seam: a DNS server that answers what the attacker wants."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=ip, port=port, family=family, proto=0, flags=0)
            for ip in self.answers
        ]

    async def close(self) -> None:
        self.closed = True


async def test_guarded_resolver_refuses_if_any_answer_is_forbidden() -> None:
    dns = _ScriptedDns(["93.184.216.34", "10.0.0.7"])
    resolver = GuardedResolver(allow_private=False, resolver=dns)
    with pytest.raises(ForbiddenUrl, match="10.0.0.7"):
        await resolver.resolve("rebind.example.com", 443)
    dns.answers = ["93.184.216.34"]
    assert [r["host"] for r in await resolver.resolve("rebind.example.com", 443)] == ["93.184.216.34"]
    await resolver.close()
    assert dns.closed


@pytest.fixture
async def local_receiver(aiohttp_server):  # type: ignore[no-untyped-def]
    app = web.Application()
    hits: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app, host="127.0.0.1")
    return server.port, hits


async def test_a_connection_to_a_name_that_rebinds_to_loopback_is_refused_before_connecting(
    local_receiver: tuple[int, list[str]],
) -> None:
    port, hits = local_receiver
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=False))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(ForbiddenUrl):
            await session.post(f"http://localhost:{port}/hook", data=b"{}")
    assert hits == []


async def test_the_guarded_resolver_lets_private_targets_through_when_allowed(
    local_receiver: tuple[int, list[str]],
) -> None:
    port, hits = local_receiver
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=True))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"http://localhost:{port}/hook", data=b"{}") as response:
            assert response.status == 200
    assert hits == ["/hook"]
