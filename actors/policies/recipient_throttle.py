"""Per-recipient-domain send limits (`{"gmail.com": {"per_second": 5, "per_minute": 200}}`).

Each limited domain gets its own `ServerQuota`. The key `"*"` gives every domain not listed its own
quota with those limits. State is created on first use and kept in least-recently-used order;
beyond `max_domains` one is forgotten (an idle one among the least recently used if there is one),
so memory stays bounded whatever mix of domains passes through.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice

import msgspec

from actors.policies.quota import ServerQuota
from schemas.domain_names import normalise_domain

ANY_DOMAIN = "*"
EVICTION_SCAN = 64
"""How many of the least recently used domains are examined for an idle one before evicting."""


class DomainLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    per_second: float | None = None
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None

    def quota(self) -> ServerQuota:
        return ServerQuota(self.per_second, self.per_minute, self.per_hour, self.per_day)


class RecipientThrottle:
    def __init__(self, limits: dict[str, dict[str, float]], *, max_domains: int = 10_000) -> None:
        if max_domains < 1:
            raise ValueError("max_domains must be at least 1")
        self._limits = {
            (ANY_DOMAIN if domain == ANY_DOMAIN else normalise_domain(domain)): msgspec.convert(
                spec, DomainLimits
            )
            for domain, spec in limits.items()
        }
        self.max_domains = max_domains
        self._quotas: OrderedDict[str, ServerQuota] = OrderedDict()

    def admit(self, domains: list[str], now: float) -> list[bool]:
        """One verdict per domain, in order; each admitted one consumes one send from its domain.

        A domain repeated in the list is counted once per occurrence. Unlimited domains are
        always admitted.
        """
        verdicts = []
        for domain in domains:
            quota = self._quota_for(normalise_domain(domain), now)
            verdicts.append(quota is None or quota.grant(1, now) == 1)
        return verdicts

    def hold(self, domains: list[str], finished: float) -> None:
        """Sends to `domains` (admitted earlier) completed at `finished`: their tokens come back one
        period after that, as the receiving domain sees them (see `TokenBucket.hold`)."""
        counts: dict[str, int] = {}
        for domain in domains:
            name = normalise_domain(domain)
            counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            quota = self._quotas.get(name)
            if quota is not None:
                quota.hold(count, finished)

    def wait_time(self, domain: str, now: float) -> float:
        """Seconds until `domain` admits one more send (0.0 if it would now)."""
        quota = self._quota_for(normalise_domain(domain), now)
        return quota.next_refill(now) if quota else 0.0

    def __len__(self) -> int:
        """How many domains currently hold state."""
        return len(self._quotas)

    def _quota_for(self, domain: str, now: float) -> ServerQuota | None:
        quota = self._quotas.get(domain)
        if quota is not None:
            self._quotas.move_to_end(domain)
            return quota
        spec = self._limits.get(domain) or self._limits.get(ANY_DOMAIN)
        if spec is None:
            return None
        if len(self._quotas) >= self.max_domains:
            self._evict_one(now)
        quota = self._quotas[domain] = spec.quota()
        return quota

    def _evict_one(self, now: float) -> None:
        """Forget the least recently used idle domain among the oldest `EVICTION_SCAN`; failing that,
        the least recently used one (bounded memory wins over a busy domain's counts)."""
        for domain, quota in islice(self._quotas.items(), EVICTION_SCAN):
            if quota.is_idle(now):
                del self._quotas[domain]
                return
        self._quotas.popitem(last=False)
