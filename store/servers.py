"""Sending server records in Redis: provider config checked, secrets sealed, health kept beside them.

A server's config is only meaningful as its provider's `Config` Struct: those Structs live in
`schemas/provider_configs.py` (and the inbound settings in `schemas/inbound_config.py`), so the store
validates and seals against them without importing `providers/`; `open_config` hands the Dispatcher
that Struct, decrypted.

Every change to a server (and every change of its health) publishes the workspace on
`keyspace.ROUTING_INVALIDATIONS`, so cached routing snapshots are dropped everywhere at once.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec
import redis.asyncio as aioredis

from schemas.domain_names import normalise_domain
from schemas.ids import new_id
from schemas.inbound_config import InboundConfig
from schemas.provider_configs import CONFIG_TYPES, ProviderConfig
from schemas.servers import (
    CreateSendingServer,
    DomainLimit,
    ServerRecord,
    Status,
    UpdateSendingServer,
    server_record_decoder,
    server_record_encoder,
)
from schemas.settings import Settings
from security.secretbox import SecretBox, box_for
from store import keyspace, pages
from store.replies import as_bytes, as_text

SECRETBOX_PURPOSE = "server-config"
# Each health status by its text, so what Redis holds reads back as a `Status`.
STATUSES: dict[str, Status] = {status: status for status in get_args(Status)}
ANY_DOMAIN = "*"
_encode = msgspec.msgpack.Encoder().encode
_decode_fields = msgspec.msgpack.Decoder(dict[str, Any]).decode


class ProviderUnavailable(LookupError):
    """No provider of that name (`schemas.provider_configs.CONFIG_TYPES`)."""


class InvalidServerField(ValueError):
    """A field breaks a rule; `pointer` is a JSON pointer into the request body."""

    def __init__(self, pointer: str, detail: str, code: str = "invalid") -> None:
        super().__init__(detail)
        self.pointer, self.detail, self.code = pointer, detail, code


class InvalidServerConfig(ValueError):
    """`config` or `inbound` does not fit its Struct; `message` is msgspec's, `root` the pointer base."""

    def __init__(self, root: str, message: str) -> None:
        super().__init__(message)
        self.root, self.message = root, message


class ServerInUse(Exception):
    def __init__(self, rule_ids: list[str]) -> None:
        super().__init__(f"targeted by routing rules {', '.join(rule_ids)}")
        self.rule_ids = rule_ids


def config_type(provider: str) -> type[ProviderConfig]:
    try:
        return CONFIG_TYPES[provider]
    except KeyError:
        raise ProviderUnavailable(provider) from None


def _convert(values: dict[str, Any], struct_type: type, root: str) -> Any:
    try:
        return msgspec.convert(values, struct_type)
    except msgspec.ValidationError as exc:
        raise InvalidServerConfig(root, str(exc)) from None


def _given_fields(instance: msgspec.Struct, given: dict[str, Any]) -> dict[str, Any]:
    """The validated values of the fields the client set (defaults stay defaults, not frozen copies)."""
    builtins = msgspec.to_builtins(instance)
    return {name: builtins[name] for name in given if builtins.get(name) is not None}


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch, one level deep: `null` removes a field."""
    merged = dict(current)
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def normalise_domains(domains: list[str]) -> list[str]:
    result = []
    for index, domain in enumerate(domains):
        try:
            result.append(normalise_domain(domain))
        except ValueError as exc:
            raise InvalidServerField(f"#/domains/{index}", str(exc), "invalid_domain") from None
    return sorted(set(result))


def normalise_limits(limits: dict[str, DomainLimit]) -> dict[str, DomainLimit]:
    result = {}
    for domain, limit in limits.items():
        try:
            key = ANY_DOMAIN if domain == ANY_DOMAIN else normalise_domain(domain)
        except ValueError as exc:
            pointer = "#/recipient_domain_limits/" + domain.replace("~", "~0").replace("/", "~1")
            raise InvalidServerField(pointer, str(exc), "invalid_domain") from None
        result[key] = limit
    return result


class ServerStore:
    def __init__(self, redis: aioredis.Redis, box: SecretBox | None = None) -> None:
        self.redis = redis
        self.box = box

    @classmethod
    def for_settings(cls, redis: aioredis.Redis, settings: Settings) -> ServerStore:
        if settings.secret_key is None:
            raise RuntimeError("MAILERS_SECRET_KEY is not set; sending server secrets cannot be sealed")
        return cls(redis, box_for(settings, SECRETBOX_PURPOSE))

    # --- building and changing records (pure apart from the clock) ------------------------------
    def build(
        self, workspace: str, body: CreateSendingServer, *, server_id: str | None = None
    ) -> ServerRecord:
        """A new record from a create body; raises ProviderUnavailable / InvalidServer* on bad input."""
        now = datetime.now(UTC)
        record = ServerRecord(
            id=server_id or new_id("srv"),
            workspace=workspace,
            name=body.name,
            provider=body.provider,
            priority=body.priority,
            quotas=body.quotas,
            recipient_domain_limits=normalise_limits(body.recipient_domain_limits),
            domains=normalise_domains(body.domains),
            created_at=now,
            updated_at=now,
        )
        self._seal_config(record, body.config)
        self._seal_inbound(record, body.inbound)
        return record

    def updated(self, record: ServerRecord, body: UpdateSendingServer) -> ServerRecord:
        """A copy of `record` with the update applied (config and inbound merged field by field)."""
        new = msgspec.structs.replace(record, updated_at=datetime.now(UTC))
        for name in ("name", "priority", "quotas"):
            if getattr(body, name) is not None:
                setattr(new, name, getattr(body, name))
        if body.domains is not None:
            new.domains = normalise_domains(body.domains)
        if body.recipient_domain_limits is not None:
            new.recipient_domain_limits = normalise_limits(body.recipient_domain_limits)
        if body.config is not None:
            self._seal_config(new, _merge(self._config_fields(record), body.config))
        if body.inbound is not None:
            self._seal_inbound(new, _merge(self._inbound_fields(record), body.inbound))
        return new

    def _seal_config(self, record: ServerRecord, given: dict[str, Any]) -> None:
        config_class = config_type(record.provider)
        values = _given_fields(_convert(given, config_class, "#/config"), given)
        secret_names = set(config_class.__secret_fields__)
        secrets = {k: v for k, v in values.items() if k in secret_names}
        record.config = {k: v for k, v in values.items() if k not in secret_names}
        record.secret_fields_set = sorted(secrets)
        record.sealed_config = self._seal(secrets, record.id) if secrets else None

    def _seal_inbound(self, record: ServerRecord, given: dict[str, Any]) -> None:
        values = _given_fields(_convert(given, InboundConfig, "#/inbound"), given)
        record.inbound_fields_set = sorted(values)
        record.sealed_inbound = self._seal(values, record.id + "/inbound") if values else None

    def _seal(self, values: dict[str, Any], associated: str) -> str:
        return self._box().seal(_encode(values), associated.encode())

    def _open(self, token: str | None, associated: str) -> dict[str, Any]:
        return {} if token is None else _decode_fields(self._box().open(token, associated.encode()))

    def _box(self) -> SecretBox:
        if self.box is None:
            raise RuntimeError("this ServerStore was built without a SecretBox")
        return self.box

    def _config_fields(self, record: ServerRecord) -> dict[str, Any]:
        return {**record.config, **self._open(record.sealed_config, record.id)}

    def _inbound_fields(self, record: ServerRecord) -> dict[str, Any]:
        return self._open(record.sealed_inbound, record.id + "/inbound")

    def open_config(self, record: ServerRecord) -> ProviderConfig:
        """The provider adapter's Config, secrets decrypted: for the Dispatcher only."""
        return msgspec.convert(self._config_fields(record), config_type(record.provider))

    def open_inbound(self, record: ServerRecord) -> InboundConfig:
        return msgspec.convert(self._inbound_fields(record), InboundConfig)

    # --- Redis ------------------------------------------------------------------------------------
    async def create(self, record: ServerRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            write_new(pipe, record)
            await pipe.execute()

    async def save(self, record: ServerRecord) -> bool:
        """Overwrite an existing record; False (and nothing written) if it was deleted meanwhile."""
        encoded = server_record_encoder.encode(record)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.server(record.workspace, record.id), encoded, xx=True)
            pipe.publish(keyspace.ROUTING_INVALIDATIONS, record.workspace)
            written, _ = await pipe.execute()
        return bool(written)

    async def get(self, workspace: str, server_id: str) -> ServerRecord | None:
        raw = await self.redis.get(keyspace.server(workspace, server_id))
        return None if raw is None else server_record_decoder.decode(as_bytes(raw))

    async def get_by_id(self, server_id: str) -> ServerRecord | None:
        """For callers that know only the id (inbound webhooks, the Dispatcher)."""
        workspace = await self.redis.hget(keyspace.SERVER_WORKSPACES, server_id)
        return None if workspace is None else await self.get(as_text(workspace), server_id)

    async def list(self, workspace: str) -> builtins.list[ServerRecord]:
        """Every server of the workspace, newest first (the routing snapshot reads this)."""
        ids = await self.redis.zrevrangebylex(keyspace.workspace_servers(workspace), "+", "-")
        return await self._load(workspace, [as_text(i) for i in ids])

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[builtins.list[ServerRecord], bool]:
        index = keyspace.workspace_servers(workspace)
        ids, has_more = await pages.newest_first(self.redis, index, limit=limit, after=after)
        return await self._load(workspace, ids), has_more

    async def _load(self, workspace: str, ids: builtins.list[str]) -> builtins.list[ServerRecord]:
        raws = await self.redis.mget([keyspace.server(workspace, i) for i in ids]) if ids else []
        return [server_record_decoder.decode(as_bytes(raw)) for raw in raws if raw is not None]

    async def delete(self, workspace: str, server_id: str) -> bool:
        """Remove the server; raises ServerInUse while a routing rule targets it. False if absent."""
        key, rules_key = keyspace.server(workspace, server_id), keyspace.server_rules(workspace, server_id)

        async def remove(pipe: aioredis.client.Pipeline) -> bool:
            if not await pipe.exists(key):
                return False
            rule_ids = sorted(as_text(r) for r in await pipe.smembers(rules_key))
            if rule_ids:
                raise ServerInUse(rule_ids)
            pipe.multi()
            pipe.delete(key, rules_key)
            pipe.zrem(keyspace.workspace_servers(workspace), server_id)
            pipe.hdel(keyspace.SERVER_WORKSPACES, server_id)
            pipe.hdel(keyspace.SERVER_STATUS, server_id)
            pipe.publish(keyspace.ROUTING_INVALIDATIONS, workspace)
            return True

        return bool(await self.redis.transaction(remove, key, rules_key, value_from_callable=True))

    # --- health (written by the Dispatcher's circuit breaker) -------------------------------------
    async def set_status(self, server_id: str, status: Status) -> bool:
        """Record a server's health; publishes only on a change. True if the status changed."""
        if status not in STATUSES:
            raise ValueError(f"unknown server status {status!r}")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keyspace.SERVER_STATUS, server_id)
            pipe.hget(keyspace.SERVER_WORKSPACES, server_id)
            old, workspace = await pipe.execute()
        if (old or b"healthy").decode() == status:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keyspace.SERVER_STATUS, server_id, status)
            if workspace is not None:
                pipe.publish(keyspace.ROUTING_INVALIDATIONS, workspace)
            await pipe.execute()
        return True

    async def statuses(self, server_ids: builtins.list[str]) -> dict[str, Status]:
        """Each server's health; a server never reported on is healthy."""
        raws = await self.redis.hmget(keyspace.SERVER_STATUS, server_ids) if server_ids else []
        return {
            sid: STATUSES[as_text(raw)] if raw else "healthy"
            for sid, raw in zip(server_ids, raws, strict=True)
        }


async def ensure_sandbox_server(store: ServerStore, workspace: str) -> ServerRecord | None:
    """The embedded default's sandbox server for `workspace`, created once (idempotent, race-free).

    The record and a marker naming it are written in one WATCHed transaction, so concurrent first
    starts agree on one server and a crash leaves either both or neither. If an
    operator later deletes it, it stays deleted (None is returned): a sandbox silently taking real
    mail after a restart would be worse than no sandbox.
    """
    marker = keyspace.sandbox_server(workspace)

    async def create_once(pipe: aioredis.client.Pipeline) -> ServerRecord | str:
        existing = await pipe.get(marker)
        if existing is not None:
            return as_text(existing)  # the id; its record is read after the transaction
        record = store.build(
            workspace, CreateSendingServer(name="Sandbox", provider="sandbox", priority=1000)
        )
        pipe.multi()
        pipe.set(marker, record.id)
        write_new(pipe, record)
        return record

    outcome = await store.redis.transaction(create_once, marker, value_from_callable=True)
    return await store.get(workspace, outcome) if isinstance(outcome, str) else outcome


def write_new(pipe: aioredis.client.Pipeline, record: ServerRecord) -> None:
    pipe.set(keyspace.server(record.workspace, record.id), server_record_encoder.encode(record))
    pipe.hset(keyspace.SERVER_WORKSPACES, record.id, record.workspace)
    pages.index_add(pipe, keyspace.workspace_servers(record.workspace), record.id)
    pipe.publish(keyspace.ROUTING_INVALIDATIONS, record.workspace)
