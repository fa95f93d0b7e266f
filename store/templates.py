"""Templates in Redis: a chain of immutable versions per template.

Per template two keys: the newest version (a msgpack `TemplateVersion`, so sending with the latest
version is one GET) and a hash of every version by number, written with HSETNX so a version, once
written, never changes. A new version is written with the newest-version key WATCHed: two concurrent
PATCHes cannot both become version n+1.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.templates import TemplateVersion, version_decoder, version_encoder
from store import keyspace, pages
from store.replies import as_bytes


class VersionConflict(Exception):
    """The version being written exists already (a concurrent change won); read again and retry."""


class TemplateStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, first: TemplateVersion) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            _write_version(pipe, first)
            pages.index_add(pipe, keyspace.template_index(first.workspace), first.id)
            await pipe.execute()

    async def add_version(self, new: TemplateVersion) -> None:
        """Write `new` as the newest version; it must be exactly one past the newest stored."""
        head = keyspace.template(new.workspace, new.id)

        async def write(pipe: aioredis.client.Pipeline) -> None:
            raw = await pipe.get(head)
            if raw is None or version_decoder.decode(as_bytes(raw)).version != new.version - 1:
                raise VersionConflict(new.id)
            pipe.multi()
            _write_version(pipe, new)

        await self.redis.transaction(write, head)

    async def get_version(
        self, workspace: str, template_id: str, version: int | None = None
    ) -> TemplateVersion | None:
        """The newest version, or the one numbered `version`; None if there is no such template/version."""
        if version is None:
            raw = await self.redis.get(keyspace.template(workspace, template_id))
        else:
            raw = await self.redis.hget(keyspace.template_versions(workspace, template_id), str(version))
        return None if raw is None else version_decoder.decode(as_bytes(raw))

    async def versions(
        self, workspace: str, template_id: str, *, limit: int, below: int | None
    ) -> tuple[list[TemplateVersion], bool]:
        """Versions newest first, starting below version `below` (a page cursor)."""
        newest = await self.get_version(workspace, template_id)
        if newest is None:
            return [], False
        top = newest.version if below is None else min(below - 1, newest.version)
        numbers = [str(n) for n in range(top, max(top - limit, 0), -1)]
        raws = await self.redis.hmget(keyspace.template_versions(workspace, template_id), numbers)
        found = [version_decoder.decode(as_bytes(r)) for r in raws if r is not None]
        return found, top - limit > 0

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[TemplateVersion], bool]:
        index = keyspace.template_index(workspace)
        ids, has_more = await pages.newest_first(self.redis, index, limit=limit, after=after)
        raws = await self.redis.mget([keyspace.template(workspace, i) for i in ids]) if ids else []
        return [version_decoder.decode(as_bytes(r)) for r in raws if r is not None], has_more

    async def delete(self, workspace: str, template_id: str) -> bool:
        """Forget the template and every version. Messages already accepted keep their rendered content."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.template(workspace, template_id))
            pipe.delete(keyspace.template_versions(workspace, template_id))
            pipe.zrem(keyspace.template_index(workspace), template_id)
            deleted, _, _ = await pipe.execute()
        return bool(deleted)


def _write_version(pipe: aioredis.client.Pipeline, version: TemplateVersion) -> None:
    raw = version_encoder.encode(version)
    pipe.hsetnx(keyspace.template_versions(version.workspace, version.id), str(version.version), raw)
    pipe.set(keyspace.template(version.workspace, version.id), raw)
