"""How the gateway reaches the Dispatchers: start them all, and keep them started.

A Dispatcher's loops run from its `start()`, which is idempotent; calling it again after a restart
(Ray restarts the process, not the task it was running) is what resumes a restarted dispatcher.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import ray

from actors.dispatch.actor import Dispatcher
from actors.runtime import ActorHandle, start_actor
from schemas.settings import Settings

log = logging.getLogger("mailers.dispatch")


def dispatcher_name(index: int) -> str:
    return f"dispatcher-{index}"


class DispatchClient:
    def __init__(self, handles: list[ActorHandle]) -> None:
        self.handles = handles

    @classmethod
    def start(cls, settings: Settings, redis_url: str, *, wait: bool = True) -> DispatchClient:
        """Find or create every Dispatcher (`MAILERS_DISPATCHER_ACTORS`) and start it; with `wait`, return
        once each runs (without, `start_all` is what waits)."""
        encoded = msgspec.msgpack.encode(settings)
        count = max(1, settings.dispatcher_actors)
        handles = [
            start_actor(Dispatcher, dispatcher_name(i), settings, encoded, redis_url, i, count)
            for i in range(count)
        ]
        starting = [handle.start.remote() for handle in handles]
        if wait:
            ray.get(starting)
        return cls(handles)

    async def start_all(self) -> None:
        await asyncio.gather(*(handle.start.remote() for handle in self.handles))

    async def supervise(self, every: float = 1.0) -> None:
        """Run until cancelled: (re)start every dispatcher; a restarted actor resumes within `every`."""
        while True:
            try:
                async with asyncio.timeout(5):
                    await self.start_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatcher start failed: %s", exc)
            await asyncio.sleep(every)
