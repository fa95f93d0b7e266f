"""The client's address: what tracking events record and what public routes are rate-limited by."""

from __future__ import annotations

import ipaddress

from aiohttp import web


def client_ip(request: web.Request, trust_forwarded_for: bool) -> str | None:
    """The peer, or with a trusted proxy in front the last X-Forwarded-For hop (the one it appended)."""
    if trust_forwarded_for:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if hops and _is_ip(hops[-1]):
            return hops[-1]
    return request.remote


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
