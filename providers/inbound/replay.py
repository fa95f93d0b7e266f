"""Replay protection for providers whose signatures carry a one-time token (Mailgun).

The guard is a seam: `store.inbound_replay.RedisReplayGuard` is the production implementation
(SET NX EX), and any object with this `claim` method will do.
"""

from __future__ import annotations

import math
from typing import Protocol

from providers.inbound.errors import InvalidSignature


class ReplayGuard(Protocol):
    async def claim(self, provider: str, server_id: str, token: str, ttl_seconds: int) -> bool:
        """Record `token` as used; True only for the first claim within `ttl_seconds`."""
        ...


def token_ttl(tolerance: float) -> int:
    # A token signed at t is accepted while now is within t ± tolerance, and it is first seen no
    # earlier than t - tolerance, so remembering it 2 × tolerance outlives every accepting window.
    return max(1, math.ceil(2 * tolerance))


async def claim_once(
    guard: ReplayGuard | None, provider: str, server_id: str, token: str, tolerance: float
) -> None:
    """Consume a verified token; call it only after the signature over the token has been checked."""
    if guard is None:
        raise ValueError(f"{provider} inbound verification needs a ReplayGuard")
    if not await guard.claim(provider, server_id, token, token_ttl(tolerance)):
        raise InvalidSignature("signature token already used")
