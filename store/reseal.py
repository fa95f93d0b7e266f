"""Re-seal every sealed value in Redis under the current master key (`mailers secrets reencrypt`).

What is sealed (SecretBox, one purpose each): sending-server credentials and inbound secrets, DKIM
private keys, webhook signing secrets (current and previous), and stored idempotent answers. Each
record is re-read, its tokens re-sealed with `SecretBox.reseal` (None for a token already under the
current key), and written back only if it did not change meanwhile (a compare-and-set script): a
record changed by a request in between is left for the next run. So a run is idempotent and can be
interrupted and started again; when it reports nothing left, the old master keys may be dropped.

Tracking tokens are not stored (they live in mail already sent) and audit signatures are never
re-made: old keys keep verifying those (docs/operations.md, docs/audit.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas.domains import SendingDomainRecord, domain_record_encoder
from schemas.servers import ServerRecord, server_record_encoder
from schemas.settings import Settings
from schemas.webhooks import WebhookRecord, webhook_record_encoder
from security.secretbox import SecretBox, SecretBoxError, box_for
from store import domains, keyspace, servers, webhooks
from store.replies import as_bytes_or_none

# (attribute, associated data from the record) of each sealed field
Fields = list[tuple[str, Callable[[Any], bytes]]]

_SWAP_STRING = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
_SWAP_BODY = """
if redis.call('HGET', KEYS[1], 'body') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[2])
return 1
"""


@dataclass
class ResealReport:
    """Per kind of record: how many values were re-sealed, and how many changed under the run."""

    resealed: dict[str, int] = field(default_factory=dict)
    raced: int = 0
    unreadable: list[str] = field(default_factory=list)  # keys no configured master key opens

    @property
    def total(self) -> int:
        return sum(self.resealed.values())


@dataclass(frozen=True)
class _RecordKind:
    name: str  # what `keyspace.records_of_kind` scans for
    record_type: type
    encoder: msgspec.msgpack.Encoder
    purpose: str
    fields: Fields


_KINDS = (
    _RecordKind(
        "srv",
        ServerRecord,
        server_record_encoder,
        servers.SECRETBOX_PURPOSE,
        [
            ("sealed_config", lambda r: r.id.encode()),
            ("sealed_inbound", lambda r: f"{r.id}/inbound".encode()),
        ],
    ),
    _RecordKind(
        "dom",
        SendingDomainRecord,
        domain_record_encoder,
        domains.SECRETBOX_PURPOSE,
        [("sealed_private_key", lambda r: r.id.encode())],
    ),
    _RecordKind(
        "whk",
        WebhookRecord,
        webhook_record_encoder,
        webhooks.SECRET_PURPOSE,
        [("sealed_secret", lambda r: r.id.encode()), ("sealed_previous_secret", lambda r: r.id.encode())],
    ),
)
IDEMPOTENCY_PURPOSE = "idempotency"  # the box ingress/services.py gives the IdempotencyStore


async def reseal_all(redis: aioredis.Redis, settings: Settings) -> ResealReport:
    """One pass over every sealed value; run again until it reports 0 to be sure nothing raced."""
    report = ResealReport()
    swap_string = redis.register_script(_SWAP_STRING)
    for kind in _KINDS:
        box = box_for(settings, kind.purpose)
        decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(kind.record_type)
        async for key in _scan(redis, keyspace.records_of_kind(kind.name), "string"):
            raw = as_bytes_or_none(await redis.get(key))
            if raw is None:
                continue
            try:
                record = decoder.decode(raw)
            except msgspec.DecodeError:
                continue  # a key of another shape under the same prefix (e.g. the sandbox marker)
            try:
                if not _reseal_fields(box, record, kind.fields):
                    continue
            except SecretBoxError:
                report.unreadable.append(key.decode())
                continue
            if await swap_string(keys=[key], args=[raw, kind.encoder.encode(record)]):
                report.resealed[kind.name] = report.resealed.get(kind.name, 0) + 1
            else:
                report.raced += 1
    await _reseal_idempotency(redis, box_for(settings, IDEMPOTENCY_PURPOSE), report)
    return report


def _reseal_fields(box: SecretBox, record: Any, fields: Fields) -> bool:
    changed = False
    for name, associated in fields:
        token = getattr(record, name)
        fresh = box.reseal(token, associated(record)) if token else None
        if fresh is not None:
            setattr(record, name, fresh)
            changed = True
    return changed


async def _reseal_idempotency(redis: aioredis.Redis, box: SecretBox, report: ResealReport) -> None:
    """A stored answer is sealed with its own Redis key as associated data (store/idempotency.py)."""
    swap_body = redis.register_script(_SWAP_BODY)
    async for key in _scan(redis, keyspace.records_of_kind("idem"), "hash"):
        body = as_bytes_or_none(await redis.hget(key, "body"))
        if body is None or not body.startswith(b"v1."):
            continue  # still running, or stored by a server without a secret key
        try:
            fresh = box.reseal(body.decode(), key)
        except SecretBoxError:
            report.unreadable.append(key.decode())
            continue
        if fresh is None:
            continue
        if await swap_body(keys=[key], args=[body, fresh]):
            report.resealed["idem"] = report.resealed.get("idem", 0) + 1
        else:
            report.raced += 1


async def _scan(redis: aioredis.Redis, pattern: str, type_: str) -> AsyncIterator[bytes]:
    async for key in redis.scan_iter(match=pattern, count=1000, _type=type_):
        yield key
