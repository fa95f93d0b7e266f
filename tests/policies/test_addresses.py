"""Address parsing: RFC 5322 forms in, transport-ready `Address` out, or a coded AddressError."""

from __future__ import annotations

import time

import pytest

from schemas import addresses
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


# --- bounded cost (issue #11: a crafted 998-character address cost ~50 ms in the stdlib parser) -------
WORST_INPUTS = [
    '("' * 496,  # the finding: nested comments and quotes
    "(" * 9 + "a@example.com" + ")" * 9,  # one level past MAX_COMMENT_DEPTH
    "(a)" * 332,  # many comments
    '"a" ' * 249,  # many quoted strings
    "a " * 499,  # many atoms
    "," * 998,  # many empty list members
    "<" * 998,  # many specials
    "=?utf-8?q?a?= " * 70 + "<a@example.com",  # many encoded words, refused at the very end
    '"' + '\\"' * 330,  # an unterminated quoted string full of quoted pairs
    "a" * 990 + "<",  # the named fast path's longest failing match
]


def _distinct(text: str, index: int) -> str:
    """A variant the cache has not seen, as costly as `text` (the head of it changes, not its shape)."""
    return f"{index}{text}"[:998]


def test_worst_inputs_are_refused_at_a_bounded_cost() -> None:
    """1,000 distinct worst-case addresses cost well under 0.5 s of CPU in all (a cost bound: CPU time,
    not wall time, so a loaded machine does not fail it); the stdlib parser spent ~50 s on them."""
    inputs = [_distinct(WORST_INPUTS[i % len(WORST_INPUTS)], i) for i in range(1000)]
    started = time.process_time()
    for text in inputs:
        with pytest.raises(AddressError):
            parse_address(text)
    assert time.process_time() - started < 0.5


def test_limits_are_checked_before_parsing() -> None:
    with pytest.raises(AddressError, match="longer than 998"):
        parse_address("a" * 990 + "@example.com")
    with pytest.raises(AddressError, match="nested deeper"):
        parse_address("(" * 9 + "x" + ")" * 9 + "a@example.com")
    with pytest.raises(AddressError, match="tokens"):
        parse_address('"a" ' * 200 + "<a@example.com>")
    assert parse_address("(" * 8 + "x" + ")" * 8 + "a@example.com") == Address("a@example.com")


def test_failures_are_cached_and_the_cache_is_bounded() -> None:
    bad = '("' * 400 + " cached"
    with pytest.raises(AddressError):
        parse_address(bad)
    misses = addresses._parse_cached.cache_info().misses
    for _ in range(3):
        with pytest.raises(AddressError) as caught:
            parse_address_list(["ana@example.com", bad])
        assert caught.value.index == 1  # each raise is a fresh error carrying its own position
    assert addresses._parse_cached.cache_info().misses == misses
    assert addresses._parse_cached.cache_info().maxsize == addresses.CACHE_SIZE


def test_grammar_forms_without_the_stdlib_parser() -> None:
    assert parse_address("Ana (work) <ana@example.com>") == Address("ana@example.com", "Ana")
    assert parse_address("ana @ example.com") == Address("ana@example.com")
    assert parse_address('"john"@example.com') == Address("john@example.com")
    assert parse_address('"a\\\\b"@example.com') == Address('"a\\\\b"@example.com')
    assert parse_address("=?utf-8?b?SsO2cmc=?= =?utf-8?q?_M?= <j@example.com>") == Address(
        "j@example.com", "Jörg M"
    )
    assert parse_address_list("a@example.com, , Bo <b@example.org>,") == [
        Address("a@example.com"),
        Address("b@example.org", "Bo"),
    ]
    for bad in ['""@example.com', '"a".b@example.com', "a@b.com (c) d", "=?utf-8?q?a=0Ab?= <a@b.com>"]:
        with pytest.raises(AddressError):
            parse_address(bad)
