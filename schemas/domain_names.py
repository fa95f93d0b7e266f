"""Normal forms of domain names and email addresses, and how domain patterns match them.

One normal form for the whole pipeline: lowercase, no trailing dot, IDN labels as punycode.
Routing, throttles and suppression compare only normalised names, so `Bücher.DE` and
`xn--bcher-kva.de` are the same domain everywhere.

IDNA, once for the whole code base: `to_ascii_domain` is the one place a Unicode name becomes its
A-label form, by UTS #46 (non-transitional) processing and IDNA 2008 through the `idna` package: what
browsers and current mail software do. The stdlib `"idna"` codec is IDNA 2003, which maps `ß` to
`ss` (`faß.de` → `fass.de`, another registrable domain) and accepts symbols IDNA 2008 forbids; no
module calls it. Addresses, sending domains, MIME headers, tracking and the SSRF guard all go
through `to_ascii_domain`, so they agree on every name.
"""

from __future__ import annotations

import functools

import idna

WILDCARD_PREFIX = "*."


@functools.lru_cache(maxsize=16384)
def to_ascii_domain(name: str) -> str:
    """The lowercase A-label form of `name` (`Faß.de` → `xn--fa-hia.de`); ValueError if not IDNA-valid.

    An all-ASCII name is only lowercased (its labels are checked by each caller's own rules: host
    names, sending domains and SSRF targets differ on underscores), so ASCII behaviour is unchanged.
    A trailing dot is kept when given.
    """
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"bad domain {name!r}: {exc}") from None


@functools.lru_cache(maxsize=16384)
def normalise_domain(domain: str) -> str:
    """`domain` lowercased, trailing dot removed, non-ASCII labels in punycode.

    Raises ValueError for an empty name, an empty label or a label longer than 63 octets.
    """
    name = domain.strip().rstrip(".")
    if not name:
        raise ValueError("empty domain")
    if name.isascii():
        name = name.lower()
        labels = name.split(".")
        if any(not 0 < len(label) <= 63 for label in labels):
            raise ValueError(f"bad label in domain {domain!r}")
        return name
    # UTS #46 does its own case mapping (str.lower() differs from it on e.g. `İ`)
    return to_ascii_domain(name).rstrip(".")


def normalise_email(email: str) -> str:
    """The one key an address is compared by: whole address lowercased, domain in punycode.

    Lowercasing the local part is deliberate: no mailbox provider we route to treats case as
    significant, and a suppression must not be dodged by `Ana@` vs `ana@`.
    """
    local, at, domain = email.strip().rpartition("@")
    if not at or not local:
        raise ValueError(f"not an email address: {email!r}")
    return f"{local.lower()}@{normalise_domain(domain)}"


def is_within(domain: str, parent: str) -> bool:
    """True when normalised `domain` is `parent` itself or one of its subdomains."""
    return domain == parent or domain.endswith("." + parent)


def matches_pattern(domain: str, pattern: str) -> bool:
    """`acme.com` matches only itself; `*.acme.com` matches every subdomain, not the apex.

    Both arguments are normalised names (see `normalise_pattern`).
    """
    if pattern.startswith(WILDCARD_PREFIX):
        return domain.endswith(pattern[1:])
    return domain == pattern


def normalise_pattern(pattern: str) -> str:
    """A domain pattern in normal form; the `*.` prefix is kept."""
    if pattern.startswith(WILDCARD_PREFIX):
        return WILDCARD_PREFIX + normalise_domain(pattern[2:])
    return normalise_domain(pattern)
