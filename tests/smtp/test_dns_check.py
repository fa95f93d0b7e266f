"""Sending-domain verification against a real (tiny) authoritative DNS server over UDP on loopback."""

from __future__ import annotations

import pytest

from providers.dkim import DnsRecord, dns_records, generate_domain_key
from providers.dns_check import RecordCheck, all_found, verify_domain_records

from .dns_server import DnsServer, DnsZone

PUBLIC_B64 = generate_domain_key()[1]
OTHER_B64 = generate_domain_key()[1]
# Longer than one 255-byte character-string, split inside our include: only a join without
# separators (RFC 7208 3.3) finds it.
LONG_SPF = "v=spf1 ip4:192.0.2.10 ip4:198.51.100.0/24".ljust(250) + "include:spf.mailers.example ~all"
RECORDS = dns_records(
    "acme.com",
    "mlr1",
    PUBLIC_B64,
    return_path_host="bounces.mailers.example",
    spf_include="spf.mailers.example",
)


def published(**changes: list[str] | None) -> dict[tuple[str, str], list[str]]:
    zone = {
        # as DNS consoles often show a long key: with spaces inside p=
        ("mlr1._domainkey.acme.com", "TXT"): [f"v=DKIM1; k=rsa; p={PUBLIC_B64[:200]} {PUBLIC_B64[200:]}"],
        ("acme.com", "TXT"): ["google-site-verification=abc", LONG_SPF],
        ("_dmarc.acme.com", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:d@acme.com"],
        ("bounces.acme.com", "CNAME"): ["Bounces.Mailers.Example."],
    }
    keys = {
        "dkim": ("mlr1._domainkey.acme.com", "TXT"),
        "spf": ("acme.com", "TXT"),
        "dmarc": ("_dmarc.acme.com", "TXT"),
        "return_path": ("bounces.acme.com", "CNAME"),
    }
    for purpose, values in changes.items():
        if values is None:
            del zone[keys[purpose]]
        else:
            zone[keys[purpose]] = values
    return zone


async def check(
    zone: DnsZone, records: list[DnsRecord] = RECORDS, lookup_timeout: float = 2.0
) -> dict[str, RecordCheck]:
    async with DnsServer(zone) as server:
        checks = await verify_domain_records(
            records, nameserver=server.host, port=server.port, timeout=lookup_timeout
        )
    assert [c.record for c in checks] == records
    return {c.record.purpose: c for c in checks}


async def test_all_present_is_verified() -> None:
    zone = DnsZone(published())
    checks = await check(zone)
    assert {purpose: c.status for purpose, c in checks.items()} == dict.fromkeys(checks, "found")
    assert all_found(list(checks.values()))
    assert len(LONG_SPF) > 255 and LONG_SPF in checks["spf"].seen
    # the 2048-bit key travelled as several character-strings and was joined back
    assert any(PUBLIC_B64[-20:] in seen for seen in checks["dkim"].seen)
    assert sorted(zone.queries) == sorted(
        [
            ("mlr1._domainkey.acme.com", "TXT"),
            ("acme.com", "TXT"),
            ("_dmarc.acme.com", "TXT"),
            ("bounces.acme.com", "CNAME"),
        ]
    )


async def test_one_missing_is_named() -> None:
    checks = await check(DnsZone(published(dmarc=None)))
    missing = [c for c in checks.values() if c.status != "found"]
    assert [(c.record.purpose, c.record.name, c.status) for c in missing] == [
        ("dmarc", "_dmarc.acme.com", "missing")
    ]
    assert not all_found(list(checks.values()))
    assert all_found(list(checks.values()), purposes=frozenset({"dkim", "spf"}))


async def test_wrong_dkim_key_is_a_mismatch() -> None:
    checks = await check(DnsZone(published(dkim=[f"v=DKIM1; k=rsa; p={OTHER_B64}"])))
    assert checks["dkim"].status == "mismatch"
    assert checks["dkim"].seen == [f"v=DKIM1; k=rsa; p={OTHER_B64}"]
    assert [c.status for p, c in checks.items() if p != "dkim"] == ["found"] * 3


@pytest.mark.parametrize(
    ("spf", "status"),
    [
        (["v=spf1 include:_spf.google.com ~all"], "mismatch"),
        (["v=spf1 include:spf.mailers.example ~all", "v=spf1 mx -all"], "mismatch"),
        (["google-site-verification=abc"], "missing"),
    ],
)
async def test_spf_rules(spf: list[str], status: str) -> None:
    checks = await check(DnsZone(published(spf=spf)))
    assert checks["spf"].status == status
    assert checks["spf"].detail


async def test_return_path_pointing_elsewhere_is_a_mismatch() -> None:
    checks = await check(DnsZone(published(return_path=["elsewhere.example."])))
    assert checks["return_path"].status == "mismatch"
    assert checks["return_path"].seen == ["elsewhere.example."]


async def test_unanswered_lookup_is_missing_with_the_reason() -> None:
    checks = await check(DnsZone(published(), silent=["_dmarc.acme.com"]), lookup_timeout=0.3)
    assert checks["dmarc"].status == "missing"
    assert "lookup failed" in checks["dmarc"].detail
    assert checks["dkim"].status == "found"
