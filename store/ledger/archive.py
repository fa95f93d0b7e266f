"""The archive: a packed campaign's settled messages, `BUCKET` positions to one compressed Redis string.

A settled campaign message's hash costs ~820 B of Redis (`MEMORY USAGE` 744 B: a listpack in jemalloc's
640 B class, its key, its expiry). Its content is ~590 B, and most of it repeats from one recipient to the
next (the sender, the subject's words, the campaign and template ids, the event types, the field names).
128 of them packed together and compressed take ~80 B each (docs/campaigns.md, "The archive"). Index
ranges (store/ledger/index_ranges.py) already address a campaign's messages by (prefix, position); the
archive stores them by (prefix, position // BUCKET) too.

What a bucket holds: `VERSION` then zlib of a msgpack array of `[position, {field: value}]`, each the
message's hash as it was (the same fields `StoredMessage.from_redis` reads). Positions of the bucket
without a message (a subscriber skipped at the send) are absent, and so are messages that keep their body
(`whole`: failed or suppressed at the send), which keep their hash.

The rules (pure here; the scripts are in store/ledger/scripts.py, the reads in ledger.py):
- only a message no longer in our hands is archived (`SETTLED`), and only once its last event is
  `quiet_ms` old: a provider's event or a tracked open that comes later *restores* the message's hash
  from its bucket (`ArchiveStore.restore`) before it is written;
- a message's own hash, when it exists, is the truth; its bucket's copy is then stale, and the two
  expire together (the restore gives the hash its bucket's time to live);
- the archive script moves a bucket in one step, and only if none of its hashes changed since they were
  read (their status and their timeline's length).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import msgspec

from schemas.message_status import MessageStatus
from store.ledger.index_ranges import id_in_range, position_of, range_prefix
from store.ledger.records import latest_event, starts_with_id

BUCKET = 128  # positions a bucket: ~10 KB compressed, ~80 µs to decompress (docs/campaigns.md)
VERSION = b"\x01"
LEVEL = 6

# Statuses a message leaves our hands in: nothing of ours will write it again. A provider's or a
# tracking event may still come (`ArchiveStore.restore`).
SETTLED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DEFERRED,
        MessageStatus.DELIVERED,
        MessageStatus.BOUNCED,
        MessageStatus.COMPLAINED,
        MessageStatus.FAILED,
        MessageStatus.SUPPRESSED,
        MessageStatus.CANCELED,
    }
)

Fields = Mapping[bytes, bytes]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[int, dict[str, bytes]]]).decode


def locate(message_id: str) -> tuple[str, int]:
    """The (prefix, bucket) a message id would be archived under. Any `msg_` id has one; only a packed
    campaign's ids are ever archived, so for another id the bucket simply does not exist."""
    return range_prefix(message_id), position_of(message_id) // BUCKET


def member(workspace: str, prefix: str, bucket: int) -> str:
    """A bucket's name in `keyspace.ARCHIVE_RESTORED`."""
    return f"{workspace}|{prefix}|{bucket}"


def parse_member(member: str) -> tuple[str, str, int]:
    workspace, prefix, bucket = member.rsplit("|", 2)
    return workspace, prefix, int(bucket)


def bucket_ids(prefix: str, bucket: int) -> list[str]:
    """Every id the bucket covers, in position order."""
    return [id_in_range(prefix, p) for p in range(bucket * BUCKET, (bucket + 1) * BUCKET)]


def pack(records: Mapping[int, Fields]) -> bytes:
    """A bucket's blob: each position's hash fields."""
    rows = [(p, {k.decode(): v for k, v in fields.items()}) for p, fields in sorted(records.items())]
    return VERSION + zlib.compress(_encode(rows), LEVEL)


def unpack(blob: bytes) -> dict[int, dict[bytes, bytes]]:
    """A bucket's records by position, each as its hash's fields (what HGETALL returns)."""
    if blob[:1] != VERSION:
        raise ValueError(f"unknown archive bucket version {blob[:1]!r}")
    return {
        position: {k.encode(): v for k, v in fields.items()}
        for position, fields in _decode(zlib.decompress(blob[1:]))
    }


def last_event_ms(ev: bytes) -> int:
    """When the message's latest event happened (ms), from its hash's `ev`; 0 if it has none."""
    latest = latest_event(ev)
    return 0 if latest is None else int(latest.created_at.timestamp() * 1000)


def unready(fields: Fields, *, now_ms: int, quiet_ms: int) -> str | None:
    """Why a message hash may not go to the archive yet: "busy" (not settled) or "recent" (its last event
    less than `quiet_ms` old); None when it may."""
    status = fields.get(b"s")
    if status is None or status.decode() not in SETTLED:
        return "busy"
    if last_event_ms(fields.get(b"ev", b"\x90")) > now_ms - quiet_ms:
        return "recent"
    return None


def whole(fields: Fields) -> bool:
    """Whether the hash holds a whole message (its body), not a sent campaign message's envelope
    (`records.lean_message`): a message that failed or was suppressed at its send. It keeps its hash: a
    bucket holds envelopes only, so reading one back (in the event loop) stays bounded (~100 µs)."""
    return starts_with_id(fields.get(b"p", b""))


def fingerprint(fields: Fields) -> bytes:
    """What the archive script compares to be sure a hash is as it was read: its status and the length of
    its timeline (appended to, never rewritten)."""
    return fields.get(b"s", b"") + b"|" + str(len(fields.get(b"ev", b""))).encode()
