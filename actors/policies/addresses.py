"""Email addresses as users write them (RFC 5322) → `Address` values fit for transport.

Bare `ana@example.com` takes a fast path (a regular expression for the dot-atom form); anything
else (display names, quoted names, angle addresses, comments) goes through the stdlib's RFC 5322
parser, `email.headerregistry`. Either way the same checks follow: the local part must be ASCII
(SMTPUTF8 is not offered) and ≤ 64 octets, the domain becomes lowercase punycode and must be a
dotted host name of valid labels ≤ 253 octets, the whole address ≤ 254 octets. The display name
is kept as written (Unicode).
"""

from __future__ import annotations

import functools
import re
from email import errors as email_errors
from email.headerregistry import Address as HeaderAddress
from email.policy import default as default_policy

from actors.policies.domains import normalise_domain
from schemas.messages import Address

INVALID_EMAIL = "invalid_email"
INVALID_DOMAIN = "invalid_domain"

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
    return list(_parse_cached(text))


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> tuple[Address, ...]:
    """Pure and hot (the same From on every message of a sender): cached. Errors are not cached."""
    if _CONTROL.search(text):
        raise AddressError(INVALID_EMAIL, "control characters in address")
    bare = [_BARE_ADDRESS.fullmatch(part.strip()) for part in text.split(",")]
    if all(bare):
        return tuple(_checked(m[1], m[2], None) for m in bare if m)
    named = _NAMED_ADDRESS.fullmatch(text.strip())
    if named:  # `Ana Lima <ana@example.com>`: a plain phrase needs no full RFC 5322 parse
        return (_checked(named[2], named[3], named[1].strip()),)
    return tuple(_from_header(address) for address in _parse_rfc5322(text))


def _parse_rfc5322(text: str) -> tuple[HeaderAddress, ...]:
    try:
        header = default_policy.header_factory("To", text)
    except Exception as exc:  # the stdlib parser raises IndexError & co. on some malformed input
        raise AddressError(INVALID_EMAIL, f"cannot parse address: {exc!r}") from None
    for defect in header.defects:
        if isinstance(defect, email_errors.NonASCIILocalPartDefect):
            raise AddressError(INVALID_EMAIL, "non-ASCII local part (SMTPUTF8) is not supported")
        if not isinstance(defect, email_errors.ObsoleteHeaderDefect):  # e.g. "J. Doe" unquoted
            raise AddressError(INVALID_EMAIL, str(defect))
    if not header.addresses:
        raise AddressError(INVALID_EMAIL, "no address found")
    return header.addresses


def _from_header(address: HeaderAddress) -> Address:
    if not address.username or not address.domain:
        raise AddressError(INVALID_EMAIL, f"not a complete address: {address.addr_spec!r}")
    local = address.addr_spec.rpartition("@")[0]  # keeps the quotes of a quoted local part
    return _checked(local, address.domain, address.display_name.strip() or None)


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
