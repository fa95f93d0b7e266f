"""The loop every actor body runs: `step()` until idle (tests, drains) or until stopped (production).

A body's `step()` does one pass of its duties and answers how much it did. The contract of that number is
"call me again at once": a duty that drained its input (a short stream batch, no due runs) answers 0 for
that duty even when it handled a few items, so an idle or lightly loaded body waits `idle_wait` between
passes instead of spinning on round trips to Redis (or, with `IdleBlock`, blocked on its stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
    idle_wait: float | Callable[[], float],
    log: logging.Logger,
    on_error: Callable[[], None] | None = None,
    busy: Callable[[int], bool] = bool,
) -> None:
    """`step()` until `stop` is set: again at once while `busy(done)`, otherwise after `idle_wait` (a
    callable: asked each time; or as soon as `stop` is set). A failing step is logged, `on_error` resets
    what the body must re-read, and the loop goes on after the idle wait."""
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
                await asyncio.wait_for(stop.wait(), idle_wait() if callable(idle_wait) else idle_wait)


class IdleBlock:
    """How a body with a stream and other duties waits when idle: under `run`, the stream read of the step
    after one that did nothing (`idle`, set by the body's step) blocks (XREADGROUP BLOCK) until an entry
    arrives, which wakes it at once, or until the body's own next deadline, at most `block` seconds; else
    (a busy body, `run_until_idle`) the read answers at once and the body polls."""

    idle = False  # the body's last step did nothing (set by its `step`)
    cap_ms: int | None = None  # the longest block, set while `run` runs

    def block_ms(self, remaining_ms: Callable[[], float] | None = None) -> int | None:
        """None (no block) unless idle under `run`; else the cap, or `remaining_ms()` if sooner (>= 1)."""
        if self.cap_ms is None or not self.idle:
            return None
        return int(max(1, min(self.cap_ms, remaining_ms() if remaining_ms else self.cap_ms)))

    async def run(self, step: Step, stop: asyncio.Event, *, block: float, **poll_args: Any) -> None:
        """`poll(step, stop, **poll_args)`, the reads of idle steps blocking up to `block` seconds."""
        self.cap_ms = max(1, int(block * 1000))
        try:
            await poll(step, stop, **poll_args)
        finally:
            self.cap_ms = None
