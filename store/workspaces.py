"""Workspaces: the isolation boundary. A workspace's id is its slug (`default`, `acme`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
import redis.asyncio as aioredis

from store import keyspace
from store.replies import as_bytes

WORKSPACE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class Workspace(msgspec.Struct, kw_only=True):
    id: str
    created_at: datetime


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Workspace)


class InvalidWorkspaceId(ValueError):
    pass


class WorkspaceStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, workspace_id: str) -> tuple[Workspace, bool]:
        """Create it if missing; returns (workspace, created)."""
        if not WORKSPACE_ID.match(workspace_id):
            raise InvalidWorkspaceId(
                "a workspace id is 1-63 lowercase letters, digits and dashes, starting with a letter or digit"
            )
        record = Workspace(id=workspace_id, created_at=datetime.now(UTC))
        created = await self.redis.hsetnx(keyspace.WORKSPACES, workspace_id, _encoder.encode(record))
        if created:
            return record, True
        existing = await self.get(workspace_id)
        assert existing is not None, "HSETNX refused, so the field exists; workspaces are never deleted"
        return existing, False

    async def get(self, workspace_id: str) -> Workspace | None:
        raw = await self.redis.hget(keyspace.WORKSPACES, workspace_id)
        return None if raw is None else _decoder.decode(as_bytes(raw))
