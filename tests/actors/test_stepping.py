"""actors/stepping.py: the idle block the campaign and automation runners share (`IdleBlock`) and `poll`'s
idle wait. No Redis: the step records what its stream read would have been told."""

from __future__ import annotations

import asyncio
import logging

from actors.stepping import IdleBlock, poll

log = logging.getLogger("tests.stepping")


def _never_asked() -> float:
    raise AssertionError("the deadline is asked only when the read may block")


async def test_a_read_blocks_only_after_an_idle_step_under_run_until_its_deadline_or_the_cap() -> None:
    idle = IdleBlock()
    idle.idle = True
    assert idle.block_ms(_never_asked) is None  # not under `run` (`run_until_idle`, tests): never blocks
    seen: list[tuple[int | None, ...]] = []
    stop = asyncio.Event()

    async def step() -> int:
        if not idle.idle:
            seen.append((idle.block_ms(_never_asked),))
        else:  # no deadline: the cap; one sooner: that; one passed: 1 ms, never 0 (BLOCK 0 is forever)
            seen.append((idle.block_ms(), idle.block_ms(lambda: 300.0), idle.block_ms(lambda: -5.0)))
        idle.idle = len(seen) in (1, 3)  # passes 1 and 3 find nothing to do
        if len(seen) == 4:
            stop.set()
        return 0

    idle.idle = False
    await idle.run(step, stop, block=0.5, idle_wait=0.0, log=log)
    assert seen == [(None,), (500, 300, 1), (None,), (500, 300, 1)]
    idle.idle = True
    assert idle.block_ms(_never_asked) is None  # `run` is over


async def test_poll_asks_a_callable_idle_wait_after_each_idle_step() -> None:
    stop = asyncio.Event()
    steps: list[int] = []
    asked: list[int] = []

    async def step() -> int:
        steps.append(len(steps) + 1)
        if len(steps) == 3:
            stop.set()
        return 3 if len(steps) == 2 else 0  # the second step is busy: the next follows at once

    def wait() -> float:
        asked.append(len(steps))
        return 0.0

    await poll(step, stop, idle_wait=wait, log=log)
    assert steps == [1, 2, 3] and asked == [1, 3]
