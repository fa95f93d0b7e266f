"""Redis connections that bound each command's write with `asyncio.timeout`, not `asyncio.wait_for`.

redis-py (8.x) gives every connection a 5 s `socket_timeout` and writes each command under
`asyncio.wait_for`, which on Python 3.11 wraps the write in a Task of its own: a Task created, scheduled,
stepped and its timer cancelled for every Redis call, the write itself one loop iteration later (issue #14:
py-spy of the ingress at 500 triggers/s put ~10% of its busy samples in those write Tasks; 5,000
sequential GETs cost ~18 µs of CPU less each without them, ~20%). The same bound from a timeout context in
the calling task costs one timer and no Task.

What stays as redis-py does it: the health check, the connect, the error mapping (an OS error → its
`ConnectionError`, the connection dropped on any failure). What differs: the 5 s covers the connect,
health check and write of one command together (redis-py bounds each part by itself), and a write that
times out raises redis-py's `TimeoutError("Timeout writing to socket")` as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError


class _TimedWrites:
    """Mixed in before a redis-py connection class (`timed_writes`)."""

    socket_timeout: float | None

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        parent: Any = super()
        if not timeout:
            await parent.send_packed_command(command, check_health)
            return
        try:
            async with asyncio.timeout(timeout):
                # Without a socket timeout redis-py writes in this task (no wait_for); the timeout
                # context bounds the write instead. The connection is this command's alone meanwhile (the
                # pool hands it to one caller), so nothing else reads the field while it is cleared.
                self.socket_timeout = None
                try:
                    await parent.send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = timeout
        except TimeoutError:
            # redis-py dropped the connection already (its BaseException branch saw the cancellation).
            raise RedisTimeoutError("Timeout writing to socket") from None


_classes: dict[type, type] = {}


def timed_writes(connection_class: type) -> type:
    """`connection_class` (TCP, TLS or Unix socket: whichever the URL chose) with `_TimedWrites`."""
    if issubclass(connection_class, _TimedWrites):
        return connection_class
    found = _classes.get(connection_class)
    if found is None:
        name = f"TimedWrite{connection_class.__name__}"
        found = _classes[connection_class] = type(name, (_TimedWrites, connection_class), {})
    return found


def with_timed_writes(pool: aioredis.ConnectionPool) -> aioredis.ConnectionPool:
    """The pool, making its connections with timed writes (call before its first connection)."""
    pool.connection_class = timed_writes(pool.connection_class)
    return pool
