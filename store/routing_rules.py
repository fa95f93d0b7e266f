"""Routing rule records in Redis, each target checked against the workspace's servers.

A rule's targets are mirrored in a per-server set (`keyspace.server_rules`) written in the same
transaction as the rule, and every write WATCHes what it relies on: a rule can never come to target
a server deleted at the same moment, and a targeted server can never be deleted (see
`ServerStore.delete`). Every change publishes the workspace on `keyspace.ROUTING_INVALIDATIONS`.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

import msgspec
import redis.asyncio as aioredis

from schemas.domain_names import normalise_pattern
from schemas.ids import new_id
from schemas.routing import (
    CreateRoutingRule,
    RoutingMatch,
    RoutingRuleRecord,
    RoutingTarget,
    UpdateRoutingRule,
    rule_record_decoder,
    rule_record_encoder,
)
from schemas.routing_view import RoutingRule, RuleMatch, Target
from store import keyspace, pages
from store.replies import as_bytes, as_text


class InvalidRule(ValueError):
    """A field breaks a rule; `pointer` is a JSON pointer into the request body."""

    def __init__(self, pointer: str, detail: str, code: str = "invalid") -> None:
        super().__init__(detail)
        self.pointer, self.detail, self.code = pointer, detail, code


def build_rule(workspace: str, body: CreateRoutingRule) -> RoutingRuleRecord:
    now = datetime.now(UTC)
    return RoutingRuleRecord(
        id=new_id("rul"),
        workspace=workspace,
        name=body.name,
        priority=body.priority,
        match=normalise_match(body.match),
        strategy=body.strategy,
        targets=checked_targets(body.targets, body.strategy),
        fallback=body.fallback,
        created_at=now,
        updated_at=now,
    )


def updated_rule(record: RoutingRuleRecord, body: UpdateRoutingRule) -> RoutingRuleRecord:
    changes = {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not None}
    if body.match is not None:
        changes["match"] = normalise_match(body.match)
    new = msgspec.structs.replace(record, **changes, updated_at=datetime.now(UTC))
    new.targets = checked_targets(new.targets, new.strategy)
    return new


def normalise_match(match: RoutingMatch) -> RoutingMatch:
    fields = {}
    for name in ("from_domains", "to_domains"):
        patterns = []
        for index, pattern in enumerate(getattr(match, name)):
            try:
                patterns.append(normalise_pattern(pattern))
            except ValueError as exc:
                raise InvalidRule(f"#/match/{name}/{index}", str(exc), "invalid_domain") from None
        fields[name] = sorted(set(patterns))
    return msgspec.structs.replace(match, **fields)


def checked_targets(targets: list[RoutingTarget], strategy: str) -> list[RoutingTarget]:
    seen: set[str] = set()
    for index, target in enumerate(targets):
        if target.server in seen:
            raise InvalidRule(
                f"#/targets/{index}/server", "this server is already a target", "duplicate_target"
            )
        seen.add(target.server)
    if strategy == "weighted" and not any(t.weight > 0 for t in targets):
        raise InvalidRule(
            "#/targets", "a weighted rule needs at least one target with weight > 0", "no_weight"
        )
    return list(targets)


def policy_rule(record: RoutingRuleRecord) -> RoutingRule:
    """The pure routing policy's view of a stored rule."""
    match = record.match
    return RoutingRule(
        id=record.id,
        name=record.name,
        priority=record.priority,
        match=RuleMatch(
            purpose=match.purpose,
            from_domains=match.from_domains,
            to_domains=match.to_domains,
            tags=match.tags,
        ),
        strategy=record.strategy,
        targets=[Target(server=t.server, weight=t.weight) for t in record.targets],
        fallback=record.fallback,
    )


class RoutingRuleStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, record: RoutingRuleRecord) -> None:
        """InvalidRule (pointer `#/targets/<i>/server`) if a target is not a server of the workspace."""
        await self._write(record, new=True)

    async def save(self, record: RoutingRuleRecord) -> bool:
        """Overwrite an existing rule; False if it was deleted meanwhile. Raises InvalidRule like create."""
        return await self._write(record, new=False)

    async def _write(self, record: RoutingRuleRecord, *, new: bool) -> bool:
        ws, key = record.workspace, keyspace.routing_rule(record.workspace, record.id)
        targets = [t.server for t in record.targets]

        async def write(pipe: aioredis.client.Pipeline) -> bool:
            old = await pipe.get(key)
            if not new and old is None:
                return False
            await self._require_servers(pipe, ws, targets)
            before = {t.server for t in rule_record_decoder.decode(as_bytes(old)).targets} if old else set()
            pipe.multi()
            pipe.set(key, rule_record_encoder.encode(record))
            for server_id in before - set(targets):
                pipe.srem(keyspace.server_rules(ws, server_id), record.id)
            for server_id in targets:
                pipe.sadd(keyspace.server_rules(ws, server_id), record.id)
            pages.index_add(pipe, keyspace.workspace_rules(ws), record.id)
            pipe.publish(keyspace.ROUTING_INVALIDATIONS, ws)
            return True

        watched = (key, *(keyspace.server(ws, s) for s in targets))
        return bool(await self.redis.transaction(write, *watched, value_from_callable=True))

    @staticmethod
    async def _require_servers(pipe: aioredis.client.Pipeline, workspace: str, server_ids: list[str]) -> None:
        for index, server_id in enumerate(server_ids):
            if not await pipe.exists(keyspace.server(workspace, server_id)):
                await pipe.reset()
                raise InvalidRule(
                    f"#/targets/{index}/server",
                    f"no sending server {server_id!r} in this workspace",
                    "unknown_server",
                )

    async def get(self, workspace: str, rule_id: str) -> RoutingRuleRecord | None:
        raw = await self.redis.get(keyspace.routing_rule(workspace, rule_id))
        return None if raw is None else rule_record_decoder.decode(as_bytes(raw))

    async def list(self, workspace: str) -> builtins.list[RoutingRuleRecord]:
        ids = await self.redis.zrevrangebylex(keyspace.workspace_rules(workspace), "+", "-")
        return await self._load(workspace, [as_text(i) for i in ids])

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[builtins.list[RoutingRuleRecord], bool]:
        index = keyspace.workspace_rules(workspace)
        ids, has_more = await pages.newest_first(self.redis, index, limit=limit, after=after)
        return await self._load(workspace, ids), has_more

    async def _load(self, workspace: str, ids: builtins.list[str]) -> builtins.list[RoutingRuleRecord]:
        raws = await self.redis.mget([keyspace.routing_rule(workspace, i) for i in ids]) if ids else []
        return [rule_record_decoder.decode(as_bytes(raw)) for raw in raws if raw is not None]

    async def delete(self, workspace: str, rule_id: str) -> bool:
        key = keyspace.routing_rule(workspace, rule_id)

        async def remove(pipe: aioredis.client.Pipeline) -> bool:
            raw = await pipe.get(key)
            if raw is None:
                return False
            pipe.multi()
            pipe.delete(key)
            for target in rule_record_decoder.decode(as_bytes(raw)).targets:
                pipe.srem(keyspace.server_rules(workspace, target.server), rule_id)
            pipe.zrem(keyspace.workspace_rules(workspace), rule_id)
            pipe.publish(keyspace.ROUTING_INVALIDATIONS, workspace)
            return True

        return bool(await self.redis.transaction(remove, key, value_from_callable=True))
