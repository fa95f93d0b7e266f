"""End-to-end fixtures: the full app, a sending server pointed at a real aiosmtpd sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from store import keyspace
from tests.smtp.sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


async def wait_for(predicate, within: float = 30.0, every: float = 0.05):
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)


async def dispatch_idle(redis) -> bool:
    """The dispatchers have nothing left to do: nothing in the schedule is due, and every dispatch
    stream's group has been handed every entry and acked it (an entry is acked only after its outcome is
    recorded). Past this point nothing more can reach a sink, so "and nothing else arrived" is asserted
    here instead of after a sleep."""
    if await redis.zcount(keyspace.SCHEDULE, "-inf", time.time() * 1000):
        return False
    async for stream in redis.scan_iter(match=keyspace.dispatch_stream("*", "*"), _type="stream"):
        last = (await redis.xinfo_stream(stream))["last-generated-id"]
        groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
        group = groups.get(keyspace.DISPATCH_GROUP.encode())
        if group is None or group["pending"] or group["last-delivered-id"] != last:
            return False
    return True


async def create_smtp_server(client, headers, port: int, **fields) -> dict:
    body = {
        "name": fields.pop("name", f"sink-{port}"),
        "provider": "smtp",
        "config": {"host": "127.0.0.1", "port": port, "security": "none", "pool_size": 8},
        **fields,
    }
    response = await client.post("/v1/sending-servers", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


@pytest.fixture
async def smtp_server(client, admin, sink) -> dict:
    return await create_smtp_server(client, admin, sink.port)


async def settled_status(client, headers, message_id: str, within: float = 15.0) -> str:
    """The message's status once the dispatcher has dealt with it (no longer queued or being sent)."""

    async def settled():
        view = await (await client.get(f"/v1/messages/{message_id}", headers=headers)).json()
        return view["status"] if view["status"] not in ("queued", "sending", "scheduled") else None

    return await wait_for(settled, within=within)


async def send_and_settle(client, headers, body: dict) -> str:
    response = await client.post("/v1/send", json=body, headers=headers)
    assert response.status == 202, await response.text()
    return await settled_status(client, headers, (await response.json())["id"])
