"""The DNS records a sending domain publishes, and what a lookup found for each.

Data only, shared by the store (a domain's record set, its verification state), the ingress (the
API view) and `providers/dns_check.py` (the lookups) without any of them importing the others.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.domain_names import to_ascii_domain

DEFAULT_RETURN_PATH_LABEL = "bounces"
CheckStatus = Literal["found", "missing", "mismatch"]


class DnsRecord(msgspec.Struct, frozen=True):
    """One record the domain owner publishes. `purpose`: dkim | spf | dmarc | return_path."""

    type: str
    name: str
    value: str
    purpose: str


class RecordCheck(msgspec.Struct, frozen=True):
    record: DnsRecord
    status: CheckStatus
    seen: list[str] = []
    detail: str = ""


def dkim_record_value(public_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_b64}"


def dns_records(
    domain: str,
    selector: str,
    public_b64: str,
    *,
    return_path_host: str,
    spf_include: str,
    return_path_label: str = DEFAULT_RETURN_PATH_LABEL,
) -> list[DnsRecord]:
    """The records to publish for `domain`. The return path (`{label}.{domain}`, the envelope sender's
    domain) is a CNAME to `return_path_host`, where bounces are received; DMARC `p=none` is the
    least a bulk sender needs (Gmail/Yahoo 2024) and a suggestion the owner may tighten."""
    domain = to_ascii_domain(domain.rstrip("."))
    return [
        DnsRecord("TXT", f"{selector}._domainkey.{domain}", dkim_record_value(public_b64), "dkim"),
        DnsRecord("TXT", domain, f"v=spf1 include:{spf_include} ~all", "spf"),
        DnsRecord("TXT", f"_dmarc.{domain}", "v=DMARC1; p=none;", "dmarc"),
        DnsRecord("CNAME", f"{return_path_label}.{domain}", return_path_host.rstrip("."), "return_path"),
    ]
