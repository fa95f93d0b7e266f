"""Address parsing: RFC 5322 forms in, transport-ready `Address` out, or a coded AddressError."""

from __future__ import annotations

import pytest

from schemas.addresses import AddressError, parse_address, parse_address_list
from schemas.messages import Address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ana@example.com", Address("ana@example.com")),
        ("  ana@example.com  ", Address("ana@example.com")),
        ("Ana@EXAMPLE.com", Address("Ana@example.com")),
        ("<ana@example.com>", Address("ana@example.com")),
        ("Ana <ana@example.com>", Address("ana@example.com", "Ana")),
        ("Ana Lima <ana@example.com>", Address("ana@example.com", "Ana Lima")),
        ('"Doe, Jane" <jane@example.com>', Address("jane@example.com", "Doe, Jane")),
        ('"Jane \\"JD\\" Doe" <jane@example.com>', Address("jane@example.com", 'Jane "JD" Doe')),
        ("J. Doe <j@example.com>", Address("j@example.com", "J. Doe")),
        ("Bo <bo@bücher.de>", Address("bo@xn--bcher-kva.de", "Bo")),
        ("bo@BÜCHER.de", Address("bo@xn--bcher-kva.de")),
        ("Jörg Müller <j@example.com>", Address("j@example.com", "Jörg Müller")),
        ("=?utf-8?q?J=C3=B6rg?= <j@example.com>", Address("j@example.com", "Jörg")),
        ("ana@example.com (work)", Address("ana@example.com")),
        ('"john doe"@example.com', Address('"john doe"@example.com')),
        ("first.last+tag@sub.example.co.uk", Address("first.last+tag@sub.example.co.uk")),
        ("o'brien@example.ie", Address("o'brien@example.ie")),
        ("a@b.com.", Address("a@b.com")),
        (f"{'l' * 64}@example.com", Address(f"{'l' * 64}@example.com")),
        (f"a@{'d' * 63}.com", Address(f"a@{'d' * 63}.com")),
    ],
)
def test_valid_addresses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


LONG_DOMAIN = ".".join(["d" * 60] * 4) + ".com"  # 248 octets: fine alone, too long with a 64-octet local


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "invalid_email"),
        ("   ", "invalid_email"),
        ("plain", "invalid_email"),
        ("jane@", "invalid_email"),
        ("@example.com", "invalid_email"),
        ("a@@example.com", "invalid_email"),
        ("a..b@example.com", "invalid_email"),
        (".a@example.com", "invalid_email"),
        ("Doe, Jane <jane@example.com>", "invalid_email"),
        ("Ana <ana@example.com> trailing", "invalid_email"),
        ("Jörg <jörg@example.de>", "invalid_email"),
        ("a@example.com\r\nBcc: victim@example.org", "invalid_email"),
        ("a@example.com, b@example.com", "invalid_email"),
        ("undisclosed-recipients:;", "invalid_email"),
        (f"{'l' * 65}@example.com", "invalid_email"),
        (f"{'l' * 64}@{LONG_DOMAIN}", "invalid_email"),
        ("a@localhost", "invalid_domain"),
        ("a@example..com", "invalid_domain"),
        ("a@-example.com", "invalid_domain"),
        ("a@example-.com", "invalid_domain"),
        ("a@exa_mple.com", "invalid_domain"),
        (f"a@{'d' * 64}.com", "invalid_domain"),
        (f"a@{'d.' * 127}com", "invalid_domain"),
        ("a@[192.0.2.1]", "invalid_domain"),
        ("a@192.0.2.1", "invalid_domain"),
    ],
)
def test_invalid_addresses(text: str, code: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert caught.value.code == code
    assert caught.value.detail


def test_total_length_limit_is_254_octets() -> None:
    local = "l" * 64
    fits = "d" * 59 + "." + "d" * 63 + "." + "d" * 61 + ".com"  # 64 + 1 + 189 = 254
    assert len(parse_address(f"{local}@{fits}").email) == 254
    with pytest.raises(AddressError) as caught:
        parse_address(f"{local}@d{fits}")
    assert caught.value.code == "invalid_email"


def test_comma_separated_string_is_a_list() -> None:
    parsed = parse_address_list('ana@example.com, "Doe, Jane" <jane@example.com>,Bo <bo@bücher.de>')
    assert parsed == [
        Address("ana@example.com"),
        Address("jane@example.com", "Doe, Jane"),
        Address("bo@xn--bcher-kva.de", "Bo"),
    ]
    assert parse_address_list("a@example.com,b@example.org") == [
        Address("a@example.com"),
        Address("b@example.org"),
    ]


def test_list_items_are_one_address_each_and_errors_carry_the_index() -> None:
    assert parse_address_list(["ana@example.com", '"Doe, Jane" <jane@example.com>']) == [
        Address("ana@example.com"),
        Address("jane@example.com", "Doe, Jane"),
    ]
    assert parse_address_list([]) == []
    with pytest.raises(AddressError) as caught:
        parse_address_list(["ana@example.com", "b@example.org, c@example.org"])
    assert (caught.value.code, caught.value.index) == ("invalid_email", 1)
    with pytest.raises(AddressError) as caught:
        parse_address_list(["ana@example.com", "ok@example.org", "x@nodot"])
    assert (caught.value.code, caught.value.index) == ("invalid_domain", 2)


def test_bad_item_in_a_string_list_fails_the_whole_string() -> None:
    with pytest.raises(AddressError):
        parse_address_list("ana@example.com, nobody")


def test_display_names_survive_formatting_for_the_wire() -> None:
    address = parse_address('"Doe, Jane" <jane@example.com>')
    assert address.formatted() == '"Doe, Jane" <jane@example.com>'
    assert parse_address(address.formatted()) == address
    unicode_name = parse_address("Jörg <j@bücher.de>")
    assert parse_address(unicode_name.formatted()) == unicode_name
