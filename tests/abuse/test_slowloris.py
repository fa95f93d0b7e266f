"""Finding: "No header-read or body-read timeout and no connection cap: add them (slowloris)".

A real server (the runner and site `mailers serve` uses) on a free port, spoken to over raw sockets.
Nothing sleeps: each test waits (bounded) for the server to answer or close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ingress.app import create_app
from ingress.connection_limits import CappedTCPSite, http_runner
from tests.conftest import make_settings

WAIT = 10  # seconds: far above the limits set below, far below aiohttp's own 75 s keep-alive


@pytest.fixture
async def server(tmp_path, redis_url, redis) -> AsyncIterator[int]:
    settings = make_settings(
        tmp_path,
        redis_url,
        header_read_timeout_seconds=0.5,
        body_read_timeout_seconds=0.5,
        max_connections=2,
    )
    runner = http_runner(create_app(settings, redis_url=redis_url, gateway=None), settings)
    await runner.setup()
    site = CappedTCPSite(runner, "127.0.0.1", 0, max_connections=settings.max_connections)
    await site.start()
    yield site.port
    await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_no_header_read_timeout_slow_headers_are_cut_off(server):
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the end of the headers
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, nothing answered
    writer.close()


async def test_no_body_read_timeout_a_slow_body_is_answered_408_and_closed(server, admin):
    reader, writer = await connect(server)
    head = (
        "POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {admin['Authorization']}\r\nContent-Length: 100\r\n\r\n"
    )
    writer.write(head.encode() + b'{"name": ')  # 9 of the 100 bytes promised
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), WAIT)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"request_timeout"' in answer and b"Connection: close" in answer
    writer.close()


async def test_no_connection_cap_connections_beyond_the_cap_are_refused(server):
    idle = [await connect(server) for _ in range(2)]
    for held_reader, held in idle:  # one answered request each: the server holds both connections now
        held.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(held_reader.readuntil(b"\r\n\r\n"), WAIT)).startswith(b"HTTP/1.1 200")
    reader, writer = await connect(server)
    answer = await asyncio.wait_for(reader.read(), WAIT)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
    writer.close()
    for _, held in idle:
        held.close()
    # once they are gone, a new connection is served again
    for _ in range(500):
        reader, writer = await connect(server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        if answer.startswith(b"HTTP/1.1 200 "):
            break
    assert answer.startswith(b"HTTP/1.1 200 ")
