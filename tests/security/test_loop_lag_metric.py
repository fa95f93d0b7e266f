"""`mailers_event_loop_lag_seconds`: a request that holds the event loop shows in /metrics (issue #11)."""

from __future__ import annotations

import asyncio
import time

from ingress.context import SERVICES
from ingress.metrics import Metrics


async def test_a_held_loop_shows_in_the_lag_histogram():
    metrics = Metrics()
    watcher = asyncio.create_task(metrics.watch_loop_lag())
    await asyncio.sleep(0)  # the watcher has set its first timer (25 ms)
    _hold_the_loop(0.1)  # 75 ms past the timer's due time: over the 50 ms bucket
    for _ in range(3):  # the overdue timer fires, then the watcher observes it
        await asyncio.sleep(0)
    watcher.cancel()
    buckets = {
        s.labels["le"]: s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "mailers_event_loop_lag_seconds_bucket"
    }
    assert buckets["+Inf"] >= 1 and buckets["+Inf"] - buckets["0.05"] == 1, buckets


def _hold_the_loop(seconds: float) -> None:
    """What a request holding the loop for `seconds` does to everything else on it."""
    time.sleep(seconds)


async def test_the_ingress_exports_its_loop_lag(client):
    text = await (await client.get("/metrics")).text()
    assert "mailers_event_loop_lag_seconds_bucket" in text
    assert client.app[SERVICES].metrics.loop_lag is not None
