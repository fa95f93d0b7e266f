"""What an attempt's outcome means for its delivery: delivered, retry at t, or dead-lettered.

Pure: takes the attempt's start and end times and a random source (jitter), returns a `Settlement`.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from actors.webhooks.health import GONE
from actors.webhooks.schedule import RetrySchedule
from actors.webhooks.sender import AttemptOutcome
from schemas.webhooks import DeliveryAttempt, attempt_encoder
from store.webhook_queue import Settlement


def settle_attempt(
    outcome: AttemptOutcome,
    failures: int,
    *,
    started: float,
    now: float,
    schedule: RetrySchedule,
    rng: random.Random,
) -> Settlement:
    """`failures`: failed attempts so far in this round (a replay starts a new round)."""
    attempt = attempt_encoder.encode(
        DeliveryAttempt(
            at=datetime.fromtimestamp(started, UTC),
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )
    )
    if outcome.delivered:
        return Settlement(action="delivered", attempt=attempt, failures=failures, health="ok")
    failures += 1
    next_at = None if outcome.status_code == GONE else schedule.next_attempt_at(failures, now, rng)
    if next_at is None:
        return Settlement(action="dead", attempt=attempt, failures=failures, health="fail")
    return Settlement(
        action="retry", next_ms=int(next_at * 1000), attempt=attempt, failures=failures, health="fail"
    )
