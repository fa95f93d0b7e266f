"""The one module through which the ingress reaches Ray ("all Ray API calls should be made here").

`Gateway.start` joins (or starts) Ray and finds each named, detached actor in the namespace, creating it
if this is the first process to ask; a second ingress process finds the same actors. Every call to an
actor goes through a `Coalescer`, so no request path makes one Ray call per message.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import ray

from actors.dispatcher import Dispatcher
from actors.key_usage import KeyUsage
from schemas.settings import Settings
from store.coalescer import Coalescer

log = logging.getLogger("mailers.gateway")
_encode = msgspec.msgpack.Encoder().encode

KEY_USAGE = "key-usage"
USAGE_FLUSH_SECONDS = 0.25  # key usage statistics reach Redis at most this often per ingress process


def init_ray(settings: Settings) -> None:
    """Join RAY_ADDRESS, or start a local Ray sized for the embedded default."""
    if ray.is_initialized():
        return
    options: dict[str, object] = {
        "namespace": settings.ray_namespace,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    if settings.ray_address:
        ray.init(address=settings.ray_address, **options)
    else:
        # Ray starts its workers at nice 15 by default; here the workers are the dispatchers, on the send
        # path like the ingress. The consumers that may lag lower their own priority (actors/priority.py).
        ray.init(
            num_cpus=max(2, settings.ray_local_cpus),
            _node_ip_address="127.0.0.1",
            _system_config={"worker_niceness": 0},
            **options,
        )


def named_actor(actor_class, name: str, namespace: str, *args: object):
    """Find the detached actor `name`, creating it if no process has yet."""
    return actor_class.options(
        name=name, namespace=namespace, lifetime="detached", get_if_exists=True
    ).remote(*args)


class Gateway:
    def __init__(self, settings: Settings, *, redis_url: str) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.key_usage_actor = named_actor(KeyUsage, KEY_USAGE, settings.ray_namespace, redis_url)
        self._usage = Coalescer(self._send_usage, max_in_flight=1, max_batch=5000, max_pending=100_000)
        encoded = msgspec.msgpack.encode(settings)
        count = max(1, settings.dispatcher_actors)
        self.dispatchers = [
            named_actor(Dispatcher, f"dispatcher-{i}", settings.ray_namespace, encoded, redis_url, i, count)
            for i in range(count)
        ]
        ray.get([d.start.remote() for d in self.dispatchers])
        from actors.suppression_client import SuppressionClient

        self.suppressions = SuppressionClient(
            settings.ray_namespace, max(1, settings.suppression_shards), redis_url=redis_url
        )

    @classmethod
    def start(cls, settings: Settings, *, redis_url: str) -> Gateway:
        init_ray(settings)
        return cls(settings, redis_url=redis_url)

    async def _send_usage(self, items: list[tuple[str, int]]) -> list[None]:
        try:
            await self.key_usage_actor.record.remote(_encode(items))
        except Exception as exc:  # statistics only: never fail a request over them
            log.warning("key usage batch lost: %s", exc)
        # One call in flight, then a pause: what arrives meanwhile leaves as the next batch. Without it,
        # under load a Ray call (~1 ms of CPU on each side) left every millisecond or two for statistics.
        await asyncio.sleep(USAGE_FLUSH_SECONDS)
        return [None] * len(items)

    def record_key_usage(self, key_id: str) -> None:
        try:
            self._usage.submit_nowait((key_id, int(time.time() * 1000)))
        except Exception as exc:
            log.warning("key usage dropped: %s", exc)

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
                return bool(await self.key_usage_actor.ping.remote())
        except Exception:
            return False

    async def start_consumers(self) -> None:
        """The event stream's long-running consumers. `mailers serve` starts them; tests start their own."""
        from actors.audit.client import start_audit_sink
        from actors.event_sink.client import start_event_sink
        from actors.webhooks.client import ensure_webhook_deliverer

        self.webhook_deliverer = await ensure_webhook_deliverer(self.settings, self.redis_url)
        self.event_sink = start_event_sink(self.settings, redis_url=self.redis_url)
        self.audit_sink = start_audit_sink(self.settings, self.redis_url)
        await self.audit_sink.ready.remote()

    def analytics_reader(self):
        """The analytics store's reader in DuckDB mode (the event-sink actor owns the file), or None."""
        from actors.event_sink.client import find_event_sink

        return find_event_sink(self.settings)

    def audit_reader(self):
        """The audit log's reader in embedded mode (the audit-sink actor owns its file), or None."""
        from actors.audit.client import find_audit_sink

        return find_audit_sink(self.settings)

    async def supervise(self, every: float = 1.0) -> None:
        """Run until cancelled: (re)start every dispatcher; a restarted actor resumes within `every`."""
        while True:
            try:
                async with asyncio.timeout(5):
                    await asyncio.gather(*(d.start.remote() for d in self.dispatchers))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatcher start failed: %s", exc)
            await asyncio.sleep(every)

    async def drain(self) -> None:
        await self._usage.drain()
        await self.suppressions.drain()
