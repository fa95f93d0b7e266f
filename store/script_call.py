"""A Lua script call split in two: send it now, read its reply later.

The import runner pipelines its batches (`actors/imports/body.py`): the next batch's read must reach
Redis *before* the current batch's write so that it is not queued behind a long script, and the runner
plans that next batch while the write runs. redis-py's commands send and wait as one; `send_script`
writes the EVALSHA (packed by hiredis in C; callers pass few, large arguments) on a connection of the
client's pool and returns a `PendingReply`, whose `reply()` reads the answer as redis-py would and gives
the connection back. A script Redis does not know yet (NOSCRIPT) is loaded and run again once, at
`reply()`. A connection whose exchange was interrupted (a failed send, a read cancelled or broken) is
disconnected before it goes back to the pool, never returned with a reply still pending on it; a caller
that sent a script reads its reply even when it fails meanwhile (`ImportRunner._apply_pipelined`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

Argument = bytes | str | int


class PendingReply:
    def __init__(self, redis: aioredis.Redis, script: Any, packed: bytes, connection: Any) -> None:
        self.redis = redis
        self.script = script
        self.packed = packed
        self.connection: Any = connection

    async def reply(self) -> Any:
        try:
            return await self._read()
        except NoScriptError:
            await self.redis.script_load(self.script.script)
            self.connection = await _send(self.redis, self.packed)
            return await self._read()

    async def _read(self) -> Any:
        connection, self.connection = self.connection, None
        if connection is None:
            raise RuntimeError("the reply was already read or discarded")
        try:
            return await connection.read_response()
        except ResponseError:
            raise  # a complete error reply: the connection is in step
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await self.redis.connection_pool.release(connection)


async def send_script(
    redis: aioredis.Redis, script: Any, keys: Sequence[str], args: Sequence[Argument]
) -> PendingReply:
    """EVALSHA `script` (a `redis.register_script` object) sent; read its answer with `.reply()`."""
    packed = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
    return PendingReply(redis, script, packed, await _send(redis, packed))


async def call_script(
    redis: aioredis.Redis, script: Any, keys: Sequence[str], args: Sequence[Argument]
) -> Any:
    return await (await send_script(redis, script, keys, args)).reply()


async def _send(redis: aioredis.Redis, packed: bytes) -> Any:
    pool = redis.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(packed)
    except BaseException:
        await connection.disconnect()
        await pool.release(connection)
        raise
    return connection
