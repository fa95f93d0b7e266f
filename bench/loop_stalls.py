"""The longest gaps between ticks of the running event loop, and where the loop was when they happened.

A ticker task sleeps 1 ms at a time and records how much later than asked it woke: a callback that
held the loop for 40 ms shows as a 40 ms gap, whatever the request latencies around it.

Each gap is told two ways. `longest_ms` is wall time: what a request waiting behind it waited. On a
shared machine that includes the time the process was not running at all (other processes had both
cores), so `longest_busy_ms` also gives, per gap, the part of it during which this process ran (its
CPU time over the gap, at most the gap): a gap spent running our own code, on the loop or on a thread
holding the GIL, counts whole; a gap spent preempted counts nothing (but a thread running without the
GIL on the other core while the loop was preempted does). `longest_own_ms` counts only the loop
thread's own CPU: the longest callback, whatever the load, blind to another thread holding the GIL.

A sampler thread records the loop thread's stack while a gap is open: a C call that holds the GIL (an
encoder, a copy) is seen when it returns, from its caller's frame, which names it well enough.

    async with LoopStalls() as stalls:
        ...
    stalls.longest_ms, stalls.longest_busy_ms, stalls.over(10), stalls.report()
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

TICK_SECONDS = 0.001
SAMPLE_AFTER_SECONDS = 0.004  # a gap open this long gets its stack sampled
_KEEP = 8  # the longest gaps kept with their stacks


class LoopStalls:
    def __init__(self, *, tick: float = TICK_SECONDS, sample_after: float = SAMPLE_AFTER_SECONDS) -> None:
        self.tick = tick
        self.sample_after = sample_after
        self.gaps: list[float] = []  # seconds late, per tick
        self.busy: list[float] = []  # of each gap, the seconds this process ran (its CPU time, capped)
        self.own: list[float] = []  # of each gap, the seconds the loop's own thread ran (callbacks)
        self.stacks: list[tuple[float, str]] = []  # (running part, where) of the longest-running gaps
        self._last = 0.0
        self._open_stack = ""
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop_thread = 0

    async def __aenter__(self) -> LoopStalls:
        self._loop_thread = threading.get_ident()
        self._last = time.perf_counter()
        self._task = asyncio.create_task(self._ticks())
        self._thread = threading.Thread(target=self._sample, name="loop-stalls", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._thread is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._stop.set()
        self._thread.join()

    async def _ticks(self) -> None:
        while True:
            started, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
            await asyncio.sleep(self.tick)
            now = time.perf_counter()
            gap = max(0.0, now - started - self.tick)
            self.gaps.append(gap)
            self.busy.append(min(gap, max(0.0, time.process_time() - cpu - self.tick)))
            self.own.append(min(gap, time.thread_time() - own))
            if self._open_stack and gap >= self.sample_after:
                self.stacks.append((self.busy[-1], f"({gap * 1000:.1f} ms in all)\n{self._open_stack}"))
                self.stacks.sort(key=lambda s: -s[0])  # the longest running first
                del self.stacks[_KEEP:]
            self._open_stack = ""
            self._last = now

    def _sample(self) -> None:
        """While a gap is open, the stacks every `sample_after` seconds (each sample takes the GIL from
        whoever holds it, so few and cheap: no source lines)."""
        sampled = 0.0
        while not self._stop.wait(self.tick):
            now = time.perf_counter()
            if now - self._last < self.sample_after or now - sampled < self.sample_after:
                continue
            sampled = now
            frames = sys._current_frames()
            frame = frames.get(self._loop_thread)
            if frame is None:
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            others = [
                f"  [{names.get(ident, ident)}] {_where(f, 1).strip()}"
                for ident, f in frames.items()
                if ident not in (self._loop_thread, threading.get_ident())
            ]
            self._open_stack = "\n".join([_where(frame, 4), *others])

    @property
    def longest_ms(self) -> float:
        return max(self.gaps, default=0.0) * 1000

    @property
    def longest_busy_ms(self) -> float:
        return max(self.busy, default=0.0) * 1000

    @property
    def longest_own_ms(self) -> float:
        """The longest run of the loop's own thread within one gap: a callback (or C call) on the loop,
        whatever the machine's load; a thread holding the GIL meanwhile is not counted."""
        return max(self.own, default=0.0) * 1000

    def over(self, ms: float) -> int:
        """How many gaps were longer than `ms`."""
        return sum(1 for g in self.gaps if g * 1000 > ms)

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.gaps)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else 0.0

    def summary(self) -> str:
        return (
            f"longest loop stall {self.longest_ms:.1f} ms ({self.longest_busy_ms:.1f} ms of it running; "
            f"longest run of the loop's own thread {self.longest_own_ms:.1f} ms), "
            f"p99.9 {self.percentile_ms(99.9):.1f} ms, "
            f"{self.over(10)} over 10 ms, {self.over(20)} over 20 ms ({len(self.gaps)} ticks)"
        )

    def report(self) -> str:
        """The summary and the stacks of the gaps that ran longest."""
        lines = [self.summary()]
        for busy, where in self.stacks:
            lines.append(f"--- {busy * 1000:.1f} ms running at:\n{where}")
        return "\n".join(lines)


def _where(frame, depth: int) -> str:
    """The innermost `depth` frames of a stack (file, function, line), the event loop's own left out."""
    kept: list[str] = []
    while frame is not None and len(kept) < depth:
        code = frame.f_code
        if "asyncio" not in code.co_filename or not kept:
            kept.append(f"  {'/'.join(code.co_filename.rsplit('/', 2)[-2:])} {code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return "\n".join(reversed(kept))
