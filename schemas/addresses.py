"""Email addresses as users write them (RFC 5322) → `Address` values fit for transport.

Bare `ana@example.com` and `Ana Lima <ana@example.com>` take a fast path (regular expressions that
cannot backtrack); anything else (quoted names, encoded words, quoted local parts, comments) goes
through our own RFC 5322 grammar (`schemas/address_grammar.py`), which runs in time linear in its
input. There is no fallback to the stdlib header parser: that parser spent ~50 ms on one crafted
998-character address, so a bulk of such items held the event loop for a minute.

Cost bounds, checked before any parsing: a text longer than `MAX_TEXT` (998, RFC 5322's line
limit, also the API's limit) is refused at once, comments nest at most `MAX_COMMENT_DEPTH` deep.
Results are cached (the same From on every message of a sender), and failures are cached too, in
the same bounded cache, so repeating a bad address costs a dictionary look-up.

Either way the same checks follow: the local part must be ASCII (SMTPUTF8 is not offered) and
≤ 64 octets, the domain becomes lowercase punycode (`schemas.domain_names`, UTS #46) and must be
a dotted host name of valid labels ≤ 253 octets, the whole address ≤ 254 octets. The display name
is kept as written (Unicode; RFC 2047 encoded words decoded).
"""

from __future__ import annotations

import functools
import re

from schemas.address_grammar import MAX_COMMENT_DEPTH, GrammarError, Mailbox, parse_mailboxes
from schemas.domain_names import normalise_domain
from schemas.messages import Address

INVALID_EMAIL = "invalid_email"
INVALID_DOMAIN = "invalid_domain"
MAX_TEXT = 998
CACHE_SIZE = 4096
__all__ = ["MAX_COMMENT_DEPTH", "AddressError", "parse_address", "parse_address_list", "transport_domain"]

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9.-]+)")
_NAMED_ADDRESS = re.compile(rf"([A-Za-z0-9 ]*[A-Za-z0-9])\s*<({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9.-]+)>")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AddressError(ValueError):
    """An address that cannot be sent to. `code` is the API error code; `index` the list position."""

    def __init__(self, code: str, detail: str, index: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.index = index


def parse_address(text: str) -> Address:
    """Exactly one address, e.g. `ana@example.com`, `Ana <ana@example.com>`, `"Doe, Jane" <j@x.org>`."""
    addresses = _parse(text)
    if len(addresses) != 1:
        raise AddressError(INVALID_EMAIL, f"expected one address, found {len(addresses)}")
    return addresses[0]


def parse_address_list(value: str | list[str]) -> list[Address]:
    """A comma-separated string of addresses, or a list whose items are one address each."""
    if isinstance(value, str):
        return _parse(value)
    parsed = []
    for index, item in enumerate(value):
        try:
            parsed.append(parse_address(item))
        except AddressError as exc:
            raise AddressError(exc.code, exc.detail, index) from None
    return parsed


def _parse(text: str) -> list[Address]:
    if not isinstance(text, str) or not text.strip():
        raise AddressError(INVALID_EMAIL, "empty address")
    if len(text) > MAX_TEXT:  # before the cache too: a key this long is not worth keeping
        raise AddressError(INVALID_EMAIL, f"address text longer than {MAX_TEXT} characters")
    outcome = _parse_cached(text)
    if isinstance(outcome, AddressError):
        raise AddressError(outcome.code, outcome.detail)  # a fresh one: callers set `index`
    return list(outcome)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_cached(text: str) -> tuple[Address, ...] | AddressError:
    """Pure and hot, so cached; an error is cached as a value, so a repeated bad input is cheap too."""
    try:
        return _parse_uncached(text)
    except AddressError as exc:
        return AddressError(exc.code, exc.detail)  # without the traceback, which pins frames


def _parse_uncached(text: str) -> tuple[Address, ...]:
    if _CONTROL.search(text):
        raise AddressError(INVALID_EMAIL, "control characters in address")
    bare = []
    for part in text.split(","):  # stops at the first part that is not bare: `',' * 998` costs one
        match = _BARE_ADDRESS.fullmatch(part.strip())
        if match is None:
            break
        bare.append(match)
    else:
        return tuple(_checked(m[1], m[2], None) for m in bare)
    named = _NAMED_ADDRESS.fullmatch(text.strip())
    if named:  # `Ana Lima <ana@example.com>`: a plain phrase needs no full RFC 5322 parse
        return (_checked(named[2], named[3], named[1].strip()),)
    try:
        mailboxes = parse_mailboxes(text)
    except GrammarError as exc:
        raise AddressError(INVALID_EMAIL, str(exc)) from None
    return tuple(_from_mailbox(mailbox) for mailbox in mailboxes)


def _from_mailbox(mailbox: Mailbox) -> Address:
    if mailbox.literal_domain:
        raise AddressError(INVALID_DOMAIN, "address literals are not accepted")
    if not mailbox.local.isascii():
        raise AddressError(INVALID_EMAIL, "non-ASCII local part (SMTPUTF8) is not supported")
    return _checked(mailbox.local, mailbox.domain, mailbox.name)


def _checked(local: str, domain: str, name: str | None) -> Address:
    if len(local.encode()) > 64:
        raise AddressError(INVALID_EMAIL, "local part longer than 64 octets")
    email = f"{local}@{transport_domain(domain)}"
    if len(email) > 254:
        raise AddressError(INVALID_EMAIL, "address longer than 254 octets")
    return Address(email, name)


@functools.lru_cache(maxsize=16384)
def transport_domain(domain: str) -> str:
    """The domain as it travels: lowercase punycode host name, or AddressError(invalid_domain)."""
    if domain.startswith("["):
        raise AddressError(INVALID_DOMAIN, "address literals are not accepted")
    try:
        ascii_domain = normalise_domain(domain)
    except ValueError as exc:
        raise AddressError(INVALID_DOMAIN, str(exc)) from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253:
        raise AddressError(INVALID_DOMAIN, "domain longer than 253 octets")
    if len(labels) < 2:
        raise AddressError(INVALID_DOMAIN, f"domain {ascii_domain!r} has no dot")
    bad = next((label for label in labels if not _LABEL.fullmatch(label)), None)
    if bad is not None:
        raise AddressError(INVALID_DOMAIN, f"bad label {bad!r} in domain {ascii_domain!r}")
    if labels[-1].isdigit():
        raise AddressError(INVALID_DOMAIN, "top-level label is numeric")
    return ascii_domain
