"""The loop every actor body runs: `step()` until idle (tests, drains) or until stopped (production).

A body's `step()` does one pass of its duties and answers how much it did. The contract of that number is
"call me again at once": a duty that drained its input (a short stream batch, no due runs) answers 0 for
that duty even when it handled a few items, so an idle or lightly loaded body waits `idle_wait` between
passes instead of spinning on round trips to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

Step = Callable[[], Awaitable[int]]


async def until_idle(step: Step) -> int:
    """Steps until one does nothing; the total they did."""
    total = 0
    while done := await step():
        total += done
    return total


async def poll(
    step: Step,
    stop: asyncio.Event,
    *,
    idle_wait: float,
    log: logging.Logger,
    on_error: Callable[[], None] | None = None,
    busy: Callable[[int], bool] = bool,
) -> None:
    """`step()` until `stop` is set: again at once while `busy(done)`, otherwise after `idle_wait` (or as
    soon as `stop` is set). A failing step is logged, `on_error` resets what the body must re-read, and
    the loop goes on after the idle wait."""
    while not stop.is_set():
        try:
            done = await step()
        except Exception:
            log.exception("step failed; retrying")
            if on_error is not None:
                on_error()
            done = 0
        if not busy(done):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), idle_wait)
