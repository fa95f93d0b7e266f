"""AuditSinkActor ("audit-sink"): the Ray shell around `actors.audit.sink.AuditSink`, and its client.

The actor opens (and migrates) the audit store, derives the signing key from the master secret and
runs the sink from the moment it starts, so a restart resumes by itself. Exactly one runs: the chain
is a sequence. With an embedded backend it is the one process that owns the audit store, so it also
answers the reads (`AuditSinkClient`, msgpack bytes across Ray, exports as a streaming generator); with
a ClickHouse server any process may read `analytics.audit.AuditStore` directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.audit.sink import AuditSink
from actors.priority import run_in_background, settle_garbage_collector
from analytics.audit import AuditFilter, AuditStore, audit_store_url
from analytics.errors import StoreUnavailable
from schemas.settings import Settings
from security.audit_chain import AuditEntry, AuditSigner
from security.secretbox import derive_key

AUDIT_SINK = "audit-sink"


def audit_signer(settings: Settings) -> AuditSigner:
    if settings.secret_key is None:
        raise ValueError("the audit log needs MAILERS_SECRET_KEY (its signing key is derived from it)")
    return AuditSigner.from_private_bytes(derive_key(settings.secret_key, "audit-signing"))


@ray.remote(num_cpus=0)
class AuditSinkActor:
    def __init__(self, settings: bytes, redis_url: str, **options: Any) -> None:
        run_in_background()  # a consumer that may lag yields the cores to sending (actors/priority.py)
        settle_garbage_collector()
        self.settings = msgspec.msgpack.decode(settings, type=Settings)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.options = options
        self._encode = msgspec.msgpack.Encoder().encode  # built here: Ray may pickle the class by value
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[AuditSink] = asyncio.get_event_loop().create_future()
        self._task = asyncio.get_event_loop().create_task(self._main())

    async def _main(self) -> None:
        url = audit_store_url(self.settings.analytics_url, self.settings.data_dir)
        store = await AuditStore.open(url)
        sink = AuditSink(self.redis, store, audit_signer(self.settings), consumer=AUDIT_SINK, **self.options)
        self._ready.set_result(sink)
        await sink.run(self._stop)

    async def ready(self) -> bool:
        await self._ready
        return True

    async def stats(self) -> dict[str, Any]:
        return dataclasses.asdict((await self._ready).stats)

    async def page(self, flt: bytes, limit: int, before_seq: int | None) -> bytes:
        sink = await self._ready
        try:
            entries, has_more = await sink.store.page(_filter(flt), limit=limit, before_seq=before_seq)
        except StoreUnavailable as exc:
            return self._encode((str(exc), None, False))
        return self._encode((None, entries, has_more))

    async def export(self, flt: bytes):
        """A Ray streaming generator: one (error, NDJSON chunk) pair per item."""
        sink = await self._ready
        try:
            async for chunk in sink.store.export(_filter(flt)):
                yield self._encode((None, chunk))
        except StoreUnavailable as exc:
            yield self._encode((str(exc), None))

    async def shutdown(self) -> None:
        """Finish the pass in hand, then close the store (before the actor is killed on purpose)."""
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await (await self._ready).store.close()
        await self.redis.aclose()


def _filter(payload: bytes) -> AuditFilter:
    return msgspec.msgpack.decode(payload, type=AuditFilter)


def start_audit_sink(settings: Settings, redis_url: str, **options: Any) -> ray.actor.ActorHandle:
    """Find the detached audit sink in the settings' namespace, creating it if none runs yet."""
    return AuditSinkActor.options(
        name=AUDIT_SINK,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        max_concurrency=64,
    ).remote(msgspec.msgpack.encode(settings), redis_url, **options)


class AuditSinkClient:
    """The audit reads (`page`, `export`) over the actor: the embedded backends' query path."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle
        self._encode = msgspec.msgpack.Encoder().encode
        self._page = msgspec.msgpack.Decoder(tuple[str | None, list[AuditEntry] | None, bool]).decode
        self._chunk = msgspec.msgpack.Decoder(tuple[str | None, bytes | None]).decode

    @classmethod
    def find(cls, settings: Settings) -> AuditSinkClient:
        """The running audit sink; ValueError when none runs in the namespace."""
        return cls(ray.get_actor(AUDIT_SINK, namespace=settings.ray_namespace))

    async def page(
        self, flt: AuditFilter, *, limit: int, before_seq: int | None
    ) -> tuple[list[AuditEntry], bool]:
        error, entries, has_more = self._page(
            await self.handle.page.remote(self._encode(flt), limit, before_seq)
        )
        if error is not None:
            raise StoreUnavailable(error)
        return entries or [], has_more

    async def export(self, flt: AuditFilter) -> AsyncIterator[bytes]:
        async for ref in self.handle.export.remote(self._encode(flt)):
            error, chunk = self._chunk(await ref)
            if error is not None:
                raise StoreUnavailable(error)
            yield chunk or b""
