"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LOOP_LAG_TICK_SECONDS = 0.025
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mailers_http_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mailers_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "mailers_event_loop_lag_seconds",
            "How late the event loop ran a 5 ms timer: what every request waiting on the loop waited too",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.rate_limited = Counter(
            "mailers_rate_limited_total", "Requests refused by per-key rate limits", registry=self.registry
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children, found once per (method, route, status): `labels()` validates and looks
        # them up under a lock on every call (~3% of the ingress's CPU at 500 req/s, issue #14).
        children = self._children.get((method, route, status))
        if children is None:
            children = self._children[(method, route, status)] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    async def watch_loop_lag(self) -> None:
        """Observe the loop's lag every 25 ms until cancelled (a 5 ms tick cost an idle ingress ~16 ms
        of CPU a second: `bench/idle.py --threads`). A request that holds the loop (a parser, an encoder,
        a copy of a large body) shows here whatever the latency of the request itself; issue #11's bench
        reads it (bench/send.py, attack phase)."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LOOP_LAG_TICK_SECONDS)
            self.loop_lag.observe(max(0.0, time.perf_counter() - started - LOOP_LAG_TICK_SECONDS))

    def render(self) -> bytes:
        return generate_latest(self.registry)
