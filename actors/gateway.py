"""The one module through which the ingress reaches the actors; nothing under actors/ imports it.

`Gateway.start` joins (or starts) Ray and starts, through each actor's client, every named, detached
actor the request path needs, creating it if this is the first process to ask; a second ingress process
finds the same actors. The clients batch: no request path makes one Ray call per message.
"""

from __future__ import annotations

import asyncio

from actors.audit.client import AuditSinkClient, find_audit_sink, start_audit_sink
from actors.automations.client import start_automation_runner
from actors.campaigns.client import start_campaign_runner
from actors.dispatch.client import DispatchClient
from actors.event_sink.client import EventSinkClient, find_event_sink, start_event_sink
from actors.imports.client import start_import_runner
from actors.key_usage.client import KeyUsageClient
from actors.runtime import init_ray, local_ray_pids, shutdown_ray
from actors.suppression.client import SuppressionClient
from actors.webhooks.client import start_webhook_deliverer
from analytics.errors import StoreUnavailable
from schemas.settings import Settings


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        redis_url: str,
        key_usage: KeyUsageClient,
        dispatch: DispatchClient,
        suppressions: SuppressionClient,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.key_usage = key_usage
        self.dispatch = dispatch
        self.suppressions = suppressions

    @classmethod
    def start(cls, settings: Settings, *, redis_url: str, wait: bool = True) -> Gateway:
        """With `wait`, return once the dispatchers run; without, `start_consumers` waits for them along
        with the consumers, so every actor process starts at once (`mailers serve`)."""
        init_ray(settings)
        return cls(
            settings,
            redis_url=redis_url,
            key_usage=KeyUsageClient.start(settings, redis_url),
            dispatch=DispatchClient.start(settings, redis_url, wait=wait),
            suppressions=SuppressionClient.start(settings, redis_url),
        )

    def record_key_usage(self, key_id: str) -> None:
        self.key_usage.record(key_id)

    async def analytics_ready(self) -> bool | None:
        """Whether the event sink (and with it the analytics store) answers; None where none was started."""
        sink = getattr(self, "event_sink", None)
        if sink is None:
            return None
        try:
            async with asyncio.timeout(2.0):
                return bool(await sink.ready.remote())
        except Exception:
            return False

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                return await self.key_usage.ping()
        except Exception:
            return False

    async def start_consumers(self) -> None:
        """The event stream's long-running consumers. `mailers serve` starts them; tests start their own.

        Every actor is created before any is waited for: Ray starts their processes side by side."""
        self.webhook_deliverer = start_webhook_deliverer(self.settings, self.redis_url)
        self.event_sink = start_event_sink(self.settings, redis_url=self.redis_url)
        self.audit_sink = start_audit_sink(self.settings, self.redis_url)
        self.import_runner = start_import_runner(self.settings, self.redis_url)
        self.campaign_runner = start_campaign_runner(self.settings, self.redis_url)
        self.automation_runner = start_automation_runner(self.settings, self.redis_url)
        await asyncio.gather(
            self.webhook_deliverer.ready.remote(), self.audit_sink.ready.remote(), self.dispatch.start_all()
        )

    def analytics_reader(self) -> EventSinkClient | None:
        """The analytics store's reader in DuckDB mode (the event-sink actor owns the file), or None."""
        return find_event_sink(self.settings)

    async def erase_subscriber(self, workspace: str, email: str, subscriber_id: str) -> None:
        """GDPR erasure on the analytics side (the person's rows anonymised), done when this returns.

        The event sink does it in both modes (it also keeps the stream from bringing the person back), so
        with no sink running the erasure cannot be completed: `StoreUnavailable`, never a silent skip."""
        sink = self.analytics_reader()
        if sink is None:
            raise StoreUnavailable("no event sink is running: the analytics store cannot erase")
        await sink.erase_subscriber(workspace, email, subscriber_id)

    def audit_reader(self) -> AuditSinkClient | None:
        """The audit log's reader in embedded mode (the audit-sink actor owns its file), or None."""
        return find_audit_sink(self.settings)

    async def supervise(self, every: float = 1.0) -> None:
        """Run until cancelled: keep every dispatcher started (a restarted one resumes within `every`)."""
        await self.dispatch.supervise(every)

    async def drain(self) -> None:
        await self.key_usage.drain()
        await self.suppressions.drain()

    @staticmethod
    def leave_ray() -> None:
        """Leave Ray at shutdown, whether or not a gateway was built (the ingress never imports ray)."""
        shutdown_ray()

    @staticmethod
    def local_ray_pids() -> list[int]:
        """The local Ray's processes this process started, for `mailers serve` to record (crash safety)."""
        return local_ray_pids()
