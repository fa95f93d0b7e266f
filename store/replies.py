"""Redis replies narrowed to the types they have here.

Every client in this project keeps redis-py's default `decode_responses=False`, so every value Redis
answers is bytes. redis-py types replies `bytes | str` because it cannot know how the client was made,
and gives some commands one return type for all their forms. These functions narrow a reply once, where
it is read, instead of a `cast` or an ignore at every call. A scalar `str` (a client made with
`decode_responses=True`) is converted rather than refused, so nothing breaks if one ever is.
"""

from __future__ import annotations

from typing import cast

from redis.typing import HScanPayload, StreamRangeResponse, XReadGroupResponse, ZSetRangeResponse


def as_bytes(reply: bytes | str) -> bytes:
    return reply if isinstance(reply, bytes) else reply.encode()


def as_text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def as_bytes_or_none(reply: bytes | str | None) -> bytes | None:
    return None if reply is None else as_bytes(reply)


def members(reply: ZSetRangeResponse) -> list[bytes]:
    """A ZRANGE or ZRANGEBYSCORE asked without WITHSCORES answers members only; redis-py types the
    reply as either form (the casts here are no-ops: they only restate what the command answers)."""
    return cast(list[bytes], reply)


def hash_fields(reply: HScanPayload | None) -> dict[bytes, bytes]:
    """HGETALL's fields, or a chunk of HSCAN's (asked without NOVALUES, so a dict, never a list of
    names), as the bytes-to-bytes dict they are; None as empty."""
    return cast(dict[bytes, bytes], reply or {})


def stream_entries(reply: StreamRangeResponse | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XRANGE's (id, fields) pairs: redis-py allows a None id or fields for every stream reply, which only
    XREADGROUP's deleted pending entries have; XRANGE never answers them."""
    return cast(list[tuple[bytes, dict[bytes, bytes]]], reply or [])


# One stream of an XREADGROUP reply: its name and its entries; a pending entry deleted from the stream
# comes back with None for its fields.
StreamRead = tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]


def group_reads(reply: XReadGroupResponse | None) -> list[StreamRead]:
    """XREADGROUP's reply in RESP2, the protocol of every client here (redis-py's type also covers RESP3's
    dict form); None (nothing to read before the block ran out) as empty."""
    return cast(list[StreamRead], reply or [])
