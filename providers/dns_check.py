"""Check that a sending domain published the records `providers.dkim.dns_records` asked for.

Each record gets a status: `found` (published as asked), `missing` (no such record, or the lookup
failed: `detail` says which), `mismatch` (a record of that kind exists but says something else; `seen`
holds what was published). The rules per purpose:
- dkim: a TXT at the selector name whose `p=` equals ours, whitespace ignored (DNS consoles split and
  space long keys);
- spf: exactly one `v=spf1` TXT at the domain, containing our `include:` (other mechanisms are the
  owner's business; two SPF records are a permanent error per RFC 7208 3.2, so a mismatch);
- dmarc: any `v=DMARC1` TXT (we only suggest `p=none`; a stricter policy is fine);
- return_path and any other CNAME: the target, case and trailing dot ignored.
TXT records made of several character-strings are joined without separators (RFC 7208 3.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver

from schemas.dns_records import CheckStatus as Status
from schemas.dns_records import DnsRecord, RecordCheck


async def verify_domain_records(
    records: Sequence[DnsRecord],
    *,
    nameserver: str | None = None,
    port: int = 53,
    timeout: float = 3.0,  # noqa: ASYNC109 - the resolver's own per-lookup limit, not a wrapper deadline
) -> list[RecordCheck]:
    """One check per record, in order; all lookups run concurrently. Never raises for DNS answers."""
    resolver = _resolver(nameserver, port, timeout)
    return list(await asyncio.gather(*(_check(resolver, record) for record in records)))


def all_found(checks: Sequence[RecordCheck], *, purposes: frozenset[str] | None = None) -> bool:
    """True when every check (of the given purposes, default all) found its record."""
    return all(c.status == "found" for c in checks if purposes is None or c.record.purpose in purposes)


def _resolver(nameserver: str | None, port: int, timeout: float) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.nameservers = [nameserver]
    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


async def _check(resolver: dns.asyncresolver.Resolver, record: DnsRecord) -> RecordCheck:
    try:
        seen = await _lookup(resolver, record.name, record.type)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return RecordCheck(record, "missing", detail=f"no {record.type} record at {record.name}")
    except dns.exception.DNSException as exc:
        return RecordCheck(record, "missing", detail=f"lookup failed: {type(exc).__name__}: {exc}")
    status, detail = _judge(record, seen)
    return RecordCheck(record, status, seen, detail)


async def _lookup(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str]:
    answer = await resolver.resolve(name, rdtype, search=False)
    if rdtype == "TXT":
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]
    return [rdata.to_text() for rdata in answer]


def _judge(record: DnsRecord, seen: list[str]) -> tuple[Status, str]:
    if record.purpose == "dkim":
        return _judge_dkim(record.value, seen)
    if record.purpose == "spf":
        return _judge_spf(record.value, seen)
    if record.purpose == "dmarc":
        return _judge_prefix("v=DMARC1", seen)
    if record.type == "CNAME":
        expected = _host(record.value)
        ok = any(_host(value) == expected for value in seen)
        return ("found", "") if ok else ("mismatch", f"points to {', '.join(seen)}, expected {expected}")
    return ("found", "") if record.value in seen else ("mismatch", "different value published")


def _judge_dkim(expected: str, seen: list[str]) -> tuple[Status, str]:
    want = _compact(_tags(expected).get("p", ""))
    keys = [_tags(value) for value in seen]
    keys = [tags for tags in keys if tags.get("v", "DKIM1") == "DKIM1" and "p" in tags]
    if not keys:
        return "missing", "no DKIM key record at this name"
    if any(_compact(tags["p"]) == want for tags in keys):
        return "found", ""
    return "mismatch", "a different DKIM public key is published"


def _judge_spf(expected: str, seen: list[str]) -> tuple[Status, str]:
    includes = {term.lower() for term in expected.split() if term.lower().startswith("include:")}
    spf = [value for value in seen if _starts_with_tag(value, "v=spf1")]
    if not spf:
        return "missing", "no SPF (v=spf1) record"
    if len(spf) > 1:
        return "mismatch", "more than one SPF record (RFC 7208 permerror): merge them into one"
    terms = {term.lower() for term in spf[0].split()}
    missing = sorted(includes - terms)
    return ("found", "") if not missing else ("mismatch", f"SPF record lacks {' '.join(missing)}")


def _judge_prefix(prefix: str, seen: list[str]) -> tuple[Status, str]:
    if any(_starts_with_tag(value, prefix) for value in seen):
        return "found", ""
    return "missing", f"no {prefix} record"


def _starts_with_tag(value: str, tag: str) -> bool:
    """`v=spf1 …` (space separated terms) or `v = DMARC1; …` (tag list) starts with `tag`."""
    first_term = value.split(maxsplit=1)[0] if value.strip() else ""
    first_tag = _compact(value.split(";", 1)[0])
    return tag.lower() in (first_term.lower(), first_tag.lower())


def _tags(value: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip()] = tag_value.strip()
    return tags


def _compact(value: str) -> str:
    return "".join(value.split())


def _host(value: str) -> str:
    return value.strip().rstrip(".").lower()
