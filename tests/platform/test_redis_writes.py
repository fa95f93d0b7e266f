"""The ingress's Redis connections write each command in the caller's task (store/redis_writes.py):
redis-py's `asyncio.wait_for` made a Task per command on Python 3.11. The write stays bounded by the
connection's socket timeout, and a write that times out is redis-py's TimeoutError, the connection dropped."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingress.context import SERVICES
from store.redis_server import free_port
from store.redis_writes import with_timed_writes


async def _tasks_made_by(redis: aioredis.Redis, commands: int) -> int:
    loop = asyncio.get_running_loop()
    made = 0
    connection_class = redis.connection_pool.connection_class
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs):
        nonlocal made
        # A write of this client's connections (the app's other clients write in this loop too).
        frame = getattr(coro, "cr_frame", None)
        writer = frame.f_locals.get("self") if frame is not None else None
        made += coro.__qualname__.endswith("_send_packed_command") and type(writer) is connection_class
        return asyncio.Task(coro, loop=loop, **kwargs)

    await redis.ping()  # connected, so the connect's own work is not counted
    loop.set_task_factory(factory)
    try:
        for i in range(commands):
            await redis.set("trig6:w", i)
            assert int(await redis.get("trig6:w")) == i
    finally:
        loop.set_task_factory(previous)
    return made


async def test_commands_on_the_ingress_pool_make_no_task_per_write(redis_server, app_client, make_key):
    client = await app_client()
    ingress = client.app[SERVICES].redis
    assert ingress.connection_pool.connection_class.__name__.startswith("TimedWrite")
    assert await _tasks_made_by(ingress, 50) == 0
    # redis-py's own connections (the same socket timeout) make one a write: what the test would see if
    # the ingress's pool lost its timed writes.
    plain = aioredis.Redis.from_url(redis_server.url, health_check_interval=10)
    try:
        assert plain.connection_pool.connection_kwargs.get("socket_timeout", 5) and (
            await _tasks_made_by(plain, 50) >= 100
        )
    finally:
        await plain.aclose()
    headers = await make_key(["admin"])
    assert (await client.get("/v1/api-keys", headers=headers)).status == 200


async def test_a_write_that_cannot_finish_in_time_is_a_redis_timeout_and_drops_the_connection():
    """A server that accepts and never reads: a 64 MB command fills the socket's buffers and the write
    waits until the 0.3 s socket timeout ends it."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    port = free_port()
    server = await asyncio.start_server(never_read, "127.0.0.1", port)
    pool = with_timed_writes(
        aioredis.ConnectionPool.from_url(
            f"redis://127.0.0.1:{port}", socket_timeout=0.3, protocol=2, driver_info=None
        )
    )
    connection = pool.make_connection()
    try:
        await connection.connect()
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
            await connection.send_packed_command(
                [b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$67108864\r\n", b"x" * 2**26]
            )
        assert asyncio.get_running_loop().time() - started < 5
        assert not connection.is_connected
        assert connection.socket_timeout == 0.3  # restored for the next command
    finally:
        await connection.disconnect()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
