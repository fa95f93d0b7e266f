"""IDNA once, one standard: every caller converts names by UTS #46 / IDNA 2008 (`schemas.domain_names`).

`faß.de` is where the standards differ: IDNA 2003 (the stdlib codec, used by three of the four callers
before) maps `ß` to `ss` and yields `fass.de`, another registrable domain; UTS #46 non-transitional
keeps it: `xn--fa-hia.de`. So an address, a sending domain, a DKIM/Message-ID domain, the tracking
mailto and a webhook host built from the same name all name the same domain.
"""

from __future__ import annotations

import pytest

from actors.outbound.tracking import _ascii_domain as tracking_domain
from providers.mime import ascii_domain as mime_domain
from schemas.addresses import parse_address
from schemas.dns_records import dns_records
from schemas.domain_names import normalise_domain, to_ascii_domain
from security.ssrf import check_webhook_url
from store.domains import normalise_sending_domain

UTS46 = "xn--fa-hia.de"


def test_uts46_not_idna2003() -> None:
    assert "faß.de".encode("idna") == b"fass.de"  # the standard we no longer use, for the record
    assert to_ascii_domain("faß.de") == UTS46


def test_every_caller_agrees_on_a_name_where_the_standards_differ() -> None:
    assert normalise_domain("Faß.DE.") == UTS46
    assert parse_address("Ana <ana@faß.de>").email == f"ana@{UTS46}"
    assert mime_domain("faß.de") == UTS46
    assert tracking_domain("faß.de") == UTS46
    assert normalise_sending_domain("faß.de") == UTS46
    assert dns_records("faß.de", "s1", "KEY", return_path_host="b.example", spf_include="x")[1].name == UTS46
    url = check_webhook_url("https://faß.de/hook", allow_http=False, allow_private=False)
    assert url.host == UTS46


@pytest.mark.parametrize("bad", ["☃.net", "a\u200db.de"])  # IDNA 2008 refuses symbols, a bare ZWJ
def test_names_idna2008_refuses_are_refused_everywhere(bad: str) -> None:
    with pytest.raises(ValueError):
        to_ascii_domain(bad)
    assert tracking_domain(bad) is None
    with pytest.raises(ValueError):  # MimeError and AddressError are ValueErrors
        mime_domain(bad)
