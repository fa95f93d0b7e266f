"""Load generation: open-loop at a fixed offered rate (latency measured from the scheduled start, so a
slow server cannot hide its queueing) and closed-loop at fixed concurrency (throughput)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import msgspec


class Result(msgspec.Struct):
    latencies: list[float]
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


async def open_loop(
    session: aiohttp.ClientSession,
    url: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    *,
    rate: float,
    seconds: float,
) -> Result:
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    started = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with session.post(url, data=body(i), headers=headers) as response:
                await response.read()
                if response.status != 202:
                    errors += 1
                    return
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    await asyncio.gather(*(one(i) for i in range(total)))
    return Result(latencies, errors, time.perf_counter() - started)


async def closed_loop(
    session: aiohttp.ClientSession,
    url: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
) -> Result:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            try:
                async with session.post(url, data=body(next(counter)), headers=headers) as response:
                    await response.read()
                    ok = response.status == 202
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - begin)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(latencies, errors, time.perf_counter() - started)
