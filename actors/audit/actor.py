"""AuditSinkActor ("audit-sink"): the thin Ray shell around `body.AuditSink`.

The actor opens (and migrates) the audit store, derives the signing key from the master secret, opens
the operator's checkpoint sink (`MAILERS_AUDIT_CHECKPOINT_SINK`) and runs the sink from the moment it
starts, so a restart resumes by itself. Exactly one runs: the chain is a sequence. With an embedded
backend it is the one process that owns the audit store, so it also answers the reads
(`client.AuditSinkClient`: msgpack bytes in the one error envelope, exports as a streaming generator);
with a ClickHouse server any process may read `analytics.audit.AuditStore` directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.audit.body import AuditSink
from actors.envelope import Replies
from actors.priority import run_in_background, settle_garbage_collector
from analytics.audit import AuditFilter, AuditStore, audit_store_url
from schemas.settings import Settings
from security.audit_chain import AuditSigner
from security.secretbox import derive_key
from store.audit_checkpoint_sinks import open_checkpoint_sink


def audit_signer(settings: Settings) -> AuditSigner:
    if settings.secret_key is None:
        raise ValueError("the audit log needs MAILERS_SECRET_KEY (its signing key is derived from it)")
    return AuditSigner.from_private_bytes(derive_key(settings.secret_key, "audit-signing"))


@ray.remote(num_cpus=0)
class AuditSinkActor:
    def __init__(self, settings: bytes, redis_url: str, *, consumer: str, **options: Any) -> None:
        run_in_background()  # a consumer that may lag yields the cores to sending (actors/priority.py)
        settle_garbage_collector()
        self.settings = msgspec.msgpack.decode(settings, type=Settings)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.consumer, self.options = consumer, options
        self.replies = Replies()  # built here: Ray may pickle the class by value, encoders do not pickle
        self._filter = msgspec.msgpack.Decoder(AuditFilter).decode
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[AuditSink] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def _main(self) -> None:
        url = audit_store_url(self.settings.analytics_url, self.settings.data_dir)
        store = await AuditStore.open(url)
        signer = audit_signer(self.settings)
        sink = AuditSink(
            self.redis,
            store,
            signer,
            consumer=self.consumer,
            checkpoint_seconds=self.settings.audit_checkpoint_seconds,
            checkpoint_sink=open_checkpoint_sink(self.settings),
            **self.options,
        )
        self._ready.set_result(sink)
        await sink.run(self._stop)

    async def ready(self) -> bool:
        await self._ready
        return True

    async def stats(self) -> dict[str, Any]:
        return dataclasses.asdict((await self._ready).stats)

    async def page(self, flt: bytes, limit: int, before_seq: int | None) -> bytes:
        store = (await self._ready).store
        return await self.replies.answer(store.page(self._filter(flt), limit=limit, before_seq=before_seq))

    async def export(self, flt: bytes):
        """A Ray streaming generator: one enveloped NDJSON chunk per item."""
        store = (await self._ready).store
        async for reply in self.replies.stream(store.export(self._filter(flt))):
            yield reply

    async def shutdown(self) -> None:
        """Finish the pass in hand, then close the store (before the actor is killed on purpose)."""
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await (await self._ready).store.close()
        await self.redis.aclose()
