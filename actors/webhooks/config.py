"""The deliverer's knobs: one frozen value built from Settings, overridable per deployment or test."""

from __future__ import annotations

from typing import Any

import msgspec

from actors.webhooks.health import DEFAULT_DISABLE_AFTER_SECONDS, EndpointHealth
from actors.webhooks.schedule import RetrySchedule
from schemas.settings import Settings

DELIVERER_NAME = "webhook-deliverer"


class DelivererConfig(msgspec.Struct, frozen=True, kw_only=True):
    secret_key: str
    secret_keys_old: tuple[str, ...] = ()  # open endpoint secrets sealed before a master-key rotation
    timeout_seconds: float = 15.0
    retry_scale: float = 1.0
    # Unscaled; the effective period is this times `retry_scale`, like the retry schedule.
    disable_after_seconds: float = DEFAULT_DISABLE_AFTER_SECONDS
    allow_private: bool = False
    allow_http: bool = False
    consumer: str = DELIVERER_NAME
    max_in_flight_per_endpoint: int = 8
    max_active_endpoints: int = 256
    stream_batch: int = 100
    block_ms: int = 200
    # After a batch that did not fill `stream_batch`, wait this long before reading again: while sending,
    # each dispatch chunk adds one stream entry, and a read, lookup and record per entry costs the
    # sending processes their cores. At most this much latency is added to a webhook.
    fanout_linger_seconds: float = 0.05
    poll_seconds: float = 0.1
    reclaim_idle_ms: int = 60_000
    cached_workspaces: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> DelivererConfig:
        if not settings.secret_key:
            raise ValueError("the webhook deliverer needs MAILERS_SECRET_KEY to open endpoint secrets")
        values: dict[str, Any] = {  # field name -> value, of each field's own type
            "secret_key": settings.secret_key,
            "secret_keys_old": settings.secret_keys_old,
            "retry_scale": settings.webhook_retry_scale,
            "allow_private": settings.allow_private_webhooks,
            "allow_http": settings.allow_http_webhooks,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def lease_ms(self) -> int:
        """How long a claimed delivery stays invisible; well past the HTTP timeout."""
        return int((2 * self.timeout_seconds + 30) * 1000)

    @property
    def schedule(self) -> RetrySchedule:
        return RetrySchedule(scale=self.retry_scale)

    @property
    def health(self) -> EndpointHealth:
        return EndpointHealth(disable_after_seconds=self.disable_after_seconds * self.retry_scale)
