"""When an endpoint is disabled: at once on `410 Gone`, or after failing without a break for a period.

Pure: the caller passes the time of the first failure since the last success (kept in Redis, so it
survives restarts and is shared by every deliverer) and `now`.
"""

from __future__ import annotations

import msgspec

DEFAULT_DISABLE_AFTER_SECONDS = 5 * 24 * 3600.0
GONE = 410


class HealthVerdict(msgspec.Struct, frozen=True):
    disable: bool
    reason: str | None = None


class EndpointHealth(msgspec.Struct, frozen=True, kw_only=True):
    disable_after_seconds: float = DEFAULT_DISABLE_AFTER_SECONDS

    def assess(self, status_code: int | None, failing_since: float | None, now: float) -> HealthVerdict:
        if status_code == GONE:
            return HealthVerdict(True, "the endpoint answered 410 Gone")
        if failing_since is not None and now - failing_since >= self.disable_after_seconds:
            days = self.disable_after_seconds / 86400
            return HealthVerdict(True, f"every delivery failed for {days:g} days")
        return HealthVerdict(False)
