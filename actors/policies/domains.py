"""Normal forms of domain names and email addresses, and how domain patterns match them.

One normal form for the whole pipeline: lowercase, no trailing dot, IDN labels as punycode (the
stdlib `encodings.idna` codec, IDNA 2003). Routing, throttles and suppression compare only
normalised names, so `Bücher.DE` and `xn--bcher-kva.de` are the same domain everywhere.
"""

from __future__ import annotations

import functools

WILDCARD_PREFIX = "*."


@functools.lru_cache(maxsize=16384)
def normalise_domain(domain: str) -> str:
    """`domain` lowercased, trailing dot removed, non-ASCII labels in punycode.

    Raises ValueError for an empty name, an empty label or a label longer than 63 octets.
    """
    name = domain.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty domain")
    if name.isascii():
        labels = name.split(".")
        if any(not 0 < len(label) <= 63 for label in labels):
            raise ValueError(f"bad label in domain {domain!r}")
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"bad domain {domain!r}: {exc}") from None


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
