"""The deliverer's pure parts: retry schedule, endpoint health, attempt outcomes, event filters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from actors.webhooks.health import EndpointHealth
from actors.webhooks.outcomes import settle_attempt
from actors.webhooks.schedule import DEFAULT_DELAYS, RetrySchedule
from actors.webhooks.sender import AttemptOutcome
from schemas.events import EVENT_TYPES
from schemas.webhooks import DeliveryAttempt, WebhookRecord, filter_matches, invalid_filter
from security.secretbox import SecretBoxError
from security.webhook_signing import new_webhook_secret
from store.webhooks import seal_secret, secret_box, signing_secrets


def test_the_schedule_is_5s_5min_30min_2h_5h_10h_10h_with_jitter_then_dead():
    schedule = RetrySchedule()
    rng = random.Random(7)
    assert DEFAULT_DELAYS == (5, 300, 1800, 7200, 18000, 36000, 36000) and schedule.attempts == 8
    for failures, delay in enumerate(DEFAULT_DELAYS, start=1):
        waits = [schedule.next_attempt_at(failures, 1000.0, rng) - 1000.0 for _ in range(200)]
        assert 0.8 * delay <= min(waits) < max(waits) <= 1.2 * delay
        assert max(waits) - min(waits) > 0.2 * delay  # jitter actually spreads them
    assert schedule.next_attempt_at(8, 1000.0, rng) is None


def test_the_schedule_scales():
    scaled = RetrySchedule(scale=0.001, jitter=0.0)
    assert scaled.next_attempt_at(1, 10.0, random.Random()) == 10.0 + 0.005
    assert scaled.next_attempt_at(7, 0.0, random.Random()) == 36.0


def test_health_disables_on_gone_or_after_failing_long_enough():
    health = EndpointHealth(disable_after_seconds=100.0)
    assert health.assess(410, None, 0.0).disable
    assert not health.assess(500, 0.0, 99.0).disable
    assert health.assess(500, 0.0, 100.0).disable
    assert health.assess(None, 50.0, 150.0).disable
    assert not health.assess(200, None, 1e9).disable


def test_settle_attempt():
    rng = random.Random(1)
    schedule = RetrySchedule(jitter=0.0)
    ok = settle_attempt(
        AttemptOutcome(status_code=204, latency_ms=3.0), 2, started=10.0, now=11.0, schedule=schedule, rng=rng
    )
    assert (ok.action, ok.health, ok.failures) == ("delivered", "ok", 2)
    attempt = msgspec.msgpack.decode(ok.attempt, type=DeliveryAttempt)
    assert attempt.status_code == 204 and attempt.at.timestamp() == 10.0
    retry = settle_attempt(
        AttemptOutcome(status_code=302, latency_ms=1.0, error="HTTP 302"),
        0,
        started=10.0,
        now=11.0,
        schedule=schedule,
        rng=rng,
    )
    assert (retry.action, retry.next_ms, retry.failures, retry.health) == ("retry", 16_000, 1, "fail")
    last = settle_attempt(
        AttemptOutcome(status_code=None, latency_ms=1.0, error="timeout"),
        7,
        started=0.0,
        now=1.0,
        schedule=schedule,
        rng=rng,
    )
    assert (last.action, last.failures) == ("dead", 8)
    gone = settle_attempt(
        AttemptOutcome(status_code=410, latency_ms=1.0), 0, started=0.0, now=1.0, schedule=schedule, rng=rng
    )
    assert gone.action == "dead"


def test_filters():
    assert filter_matches(["message.*"], "message.bounced")
    assert not filter_matches(["message.*"], "campaign.launched")
    assert filter_matches(["campaign.launched", "message.bounced"], "message.bounced")
    assert not filter_matches(["message.bounced"], "message.delivered")
    assert all(filter_matches(["*"], t) for t in EVENT_TYPES)
    assert not filter_matches(["message.*"], "messages.x")
    assert invalid_filter("webhook.*") is None and invalid_filter("message.delivered") is None
    assert invalid_filter("message.deliver*") and invalid_filter("*.*") and invalid_filter("message.")


def test_the_previous_secret_signs_only_until_its_deadline():
    box = secret_box("k" * 40)
    now = datetime.now(UTC)
    old, new = new_webhook_secret(), new_webhook_secret()
    record = WebhookRecord(
        id="whk_1",
        workspace="acme",
        url="https://x.example",
        events=["*"],
        created_at=now,
        updated_at=now,
        sealed_secret=seal_secret(box, "whk_1", new),
        sealed_previous_secret=seal_secret(box, "whk_1", old),
        previous_secret_until=now + timedelta(hours=24),
    )
    assert signing_secrets(box, record, now + timedelta(hours=23, minutes=59)) == [new, old]
    assert signing_secrets(box, record, now + timedelta(hours=24)) == [new]
    moved = msgspec.structs.replace(record, id="whk_2")  # a sealed secret opens only for its own endpoint
    with pytest.raises(SecretBoxError):
        signing_secrets(box, moved, now)
