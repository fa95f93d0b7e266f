"""Which IP addresses a webhook may never reach, and why.

`is_forbidden_ip` answers with a short stable reason (`"loopback"`, `"private"`, …) or None. IPv6
forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002:AABB:CCDD::/48`) are judged by the
IPv4 address inside: the kernel or a gateway delivers them there. Their reason is prefixed, e.g.
`"ipv4_mapped:loopback"`. Anything else Python does not call globally reachable is `"reserved"`.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

# Refused even when the operator allows private webhook targets.
ALWAYS_FORBIDDEN = frozenset({"metadata", "unspecified", "this_network", "multicast", "broadcast"})

# First match wins, so specific entries come before the ranges that contain them.
_IPV4_RULES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "this_network"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("169.254.169.254/32", "metadata"),  # AWS, GCP, Azure, OpenStack instance metadata
        ("169.254.0.0/16", "link_local"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments (incl. 192.0.0.192 Oracle metadata)
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
        ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast, deprecated
    )
)

_IPV6_RULES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fd00:ec2::254/128", "metadata"),  # AWS instance metadata over IPv6
        ("fc00::/7", "unique_local"),
        ("fe80::/10", "link_local"),
        ("fec0::/10", "site_local"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "reserved"),  # local-use NAT64: translated by the operator's own gateway
        ("2001::/32", "teredo"),  # a tunnel endpoint can relay anywhere
        ("2001:db8::/32", "documentation"),
        ("100::/64", "reserved"),  # discard-only
    )
)

_MAPPED = IPv6Network("::ffff:0:0/96")
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")


def parse_ip(text: str) -> IPAddress | None:
    """The address in `text` (an IPv6 zone id like `%eth0` is ignored), or None if it is not one."""
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def is_forbidden_ip(ip: str | IPAddress) -> str | None:
    """Why a webhook may not connect to `ip`, or None when it may. Unparseable text is forbidden."""
    address = parse_ip(ip) if isinstance(ip, str) else ip
    if address is None:
        return "invalid"
    if isinstance(address, IPv4Address):
        return _ipv4_reason(address)
    return _ipv6_reason(address)


def _ipv4_reason(address: IPv4Address) -> str | None:
    for network, reason in _IPV4_RULES:
        if address in network:
            return reason
    return None if address.is_global else "reserved"


def _ipv6_reason(address: IPv6Address) -> str | None:
    for network, reason in _IPV6_RULES:
        if address in network:
            return reason
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, inner = embedded
        inner_reason = _ipv4_reason(inner)
        return None if inner_reason is None else f"{kind}:{inner_reason}"
    return None if address.is_global else "reserved"


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    low32 = IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _MAPPED:
        return "ipv4_mapped", low32
    if address in _TRANSLATED:
        return "ipv4_translated", low32
    if address in _COMPATIBLE:
        return "ipv4_compatible", low32
    if address in _NAT64:
        return "nat64", low32
    if address in _SIX_TO_FOUR:
        return "6to4", IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None
