"""How the ingress reports API key use: pings coalesced into one KeyUsage call at a time.

One call in flight, then a pause: what arrives meanwhile leaves as the next batch. Without the pause,
under load a Ray call (~1 ms of CPU on each side) left every millisecond or two for statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec

from actors.key_usage.actor import KeyUsage
from actors.key_usage.body import Use
from actors.runtime import ActorHandle, start_actor
from schemas.settings import Settings
from store.coalescer import Coalescer

log = logging.getLogger("mailers.key_usage")
KEY_USAGE = "key-usage"
USAGE_FLUSH_SECONDS = 0.25  # key usage statistics reach Redis at most this often per ingress process


class KeyUsageClient:
    def __init__(
        self,
        handle: ActorHandle,
        *,
        clock: Callable[[], float] = time.time,
        flush_seconds: float = USAGE_FLUSH_SECONDS,
    ) -> None:
        self.handle = handle
        self.clock, self.flush_seconds = clock, flush_seconds
        self._encode = msgspec.msgpack.Encoder().encode
        self._usage: Coalescer[Use, None] = Coalescer(
            self._send, max_in_flight=1, max_batch=5000, max_pending=100_000
        )
        self._draining = False  # while `drain` runs the pause is skipped
        self._pause: asyncio.Future[None] | None = None

    @classmethod
    def start(cls, settings: Settings, redis_url: str) -> KeyUsageClient:
        return cls(start_actor(KeyUsage, KEY_USAGE, settings, redis_url))

    def record(self, key_id: str) -> None:
        """Never raises and never waits: a full queue drops the ping (statistics only)."""
        try:
            self._usage.submit_nowait((key_id, int(self.clock() * 1000)))
        except Exception as exc:
            log.warning("key usage dropped: %s", exc)

    async def _send(self, uses: list[Use]) -> list[None]:
        try:
            await self.handle.record.remote(self._encode(uses))
        except Exception as exc:  # statistics only: never fail a request over them
            log.warning("key usage batch lost: %s", exc)
        if not self._draining:
            # A future of this loop, not an asyncio.Event: the client outlives loops (tests run one each).
            self._pause = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pause, self.flush_seconds)
        return [None] * len(uses)

    async def ping(self) -> bool:
        return bool(await self.handle.ping.remote())

    async def drain(self) -> None:
        """Flush what is queued without the pause between calls (an app closing waited 0.25-0.5 s)."""
        self._draining = True
        if self._pause is not None and not self._pause.done():
            self._pause.set_result(None)
        try:
            await self._usage.drain()
        finally:
            self._draining = False
