"""What other code calls to reach the audit sink: start it, find it, and read the log through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from actors.audit.actor import AuditSinkActor
from actors.envelope import reply_decoder
from actors.runtime import ActorHandle, find_actor, start_actor
from analytics.audit import AuditFilter
from schemas.settings import Settings
from security.audit_chain import AuditEntry

AUDIT_SINK = "audit-sink"


def start_audit_sink(
    settings: Settings, redis_url: str, *, name: str = AUDIT_SINK, **options: Any
) -> ActorHandle:
    """Find the audit sink, creating it if none runs yet. `options` are `body.AuditSink` settings."""
    return start_actor(
        AuditSinkActor,
        name,
        settings,
        msgspec.msgpack.encode(settings),
        redis_url,
        consumer=name,
        concurrency=64,
        **options,
    )


def find_audit_sink(settings: Settings, name: str = AUDIT_SINK) -> AuditSinkClient | None:
    """The client of the running audit sink, or None where no process started it."""
    handle = find_actor(name, settings)
    return None if handle is None else AuditSinkClient(handle)


class AuditSinkClient:
    """The audit reads (`page`, `export`) over the actor: the embedded backends' query path."""

    def __init__(self, handle: ActorHandle) -> None:
        self.handle = handle
        self._encode = msgspec.msgpack.Encoder().encode
        self._page = reply_decoder(tuple[list[AuditEntry], bool])
        self._chunk = reply_decoder(bytes)

    async def page(
        self, flt: AuditFilter, *, limit: int, before_seq: int | None
    ) -> tuple[list[AuditEntry], bool]:
        entries, has_more = self._page(await self.handle.page.remote(self._encode(flt), limit, before_seq))
        return entries, has_more

    async def export(self, flt: AuditFilter) -> AsyncIterator[bytes]:
        async for ref in self.handle.export.remote(self._encode(flt)):
            yield self._chunk(await ref)
