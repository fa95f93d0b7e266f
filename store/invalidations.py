"""Following a Redis pub/sub channel of invalidations, for the in-process caches that depend on it.

Runs until cancelled. Every message drops one entry (`invalidate(data)`); a lost subscription clears
the whole cache (`clear()`), since messages sent while it was down are gone, and subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("mailers.invalidations")


async def follow_invalidations(
    redis: aioredis.Redis,
    channel: str,
    *,
    invalidate: Callable[[Any], None],
    clear: Callable[[], None],
    ready: asyncio.Event | None = None,
    decode: Callable[[bytes], Any] = bytes.decode,
) -> None:
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                clear()
                if ready is not None:
                    ready.set()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        invalidate(decode(message["data"]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection lost: forget everything, then subscribe again
            log.warning("invalidation channel %s lost: %s", channel, exc)
            clear()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.5)
