"""Chaos: kill the dispatcher, the ingress and Redis mid-flight, then count what arrived.

Every accepted message must arrive. Duplicates can only come from the window between a provider
accepting a message and our recording it; the dispatcher records after every chunk (the SMTP pool
size), so a crash repeats at most one chunk. The tests measure the duplicates and bound them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import ray

from store.redis_server import RedisServer, free_port
from tests.conftest import named_actors
from tests.smtp.sink import SmtpSink

from .conftest import create_smtp_server, wait_for
from .helpers import enqueue, loop_for, message, new_message, run_until, smtp_runtime

MESSAGE = {"from": "Acme <hello@acme.com>", "subject": "Chaos", "text": "Hi"}
POOL = 4
pytestmark = pytest.mark.slow


def arrivals(sink: SmtpSink) -> Counter[str]:
    return Counter(to for d in sink.deliveries for to in d.rcpt_tos)


async def test_killing_the_dispatcher_mid_run_loses_nothing(client, admin, sink, gateway):
    server = await create_smtp_server(client, admin, sink.port, name="chaos")
    patch = await client.patch(
        f"/v1/sending-servers/{server['id']}", json={"config": {"pool_size": POOL}}, headers=admin
    )
    assert patch.status == 200, await patch.text()
    await asyncio.sleep(1.5)
    messages = [{**MESSAGE, "to": f"k{i}@example.com"} for i in range(600)]
    assert (await client.post("/v1/send/bulk", json={"messages": messages}, headers=admin)).status == 202
    await wait_for(lambda: len(sink.deliveries) >= 100)
    ray.kill(gateway.dispatch.handles[0], no_restart=False)
    await wait_for(lambda: len(arrivals(sink)) == 600, within=90)
    await asyncio.sleep(2.0)
    counts = arrivals(sink)
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\n[chaos] dispatcher kill: 600 accepted, {len(counts)} arrived, {duplicates} duplicates")
    assert set(counts) == {m["to"] for m in messages}
    assert duplicates <= POOL, f"{duplicates} duplicates: more than one in-flight chunk"


def _serve(port: int, redis_url: str, ray_address: str, data_dir: Path, key: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILERS_")}
    env.update(
        MAILERS_PORT=str(port),
        MAILERS_REDIS_URL=redis_url,
        RAY_ADDRESS=ray_address,
        MAILERS_RAY_NAMESPACE="mailers-test",
        MAILERS_SECRET_KEY="s" * 40,
        MAILERS_DATA_DIR=str(data_dir),
        MAILERS_BOOTSTRAP_KEY=key,
        MAILERS_RATE_LIMIT_PER_SECOND="100000",
        MAILERS_RATE_LIMIT_BURST="100000",
        MAILERS_ALLOW_PRIVATE_TARGETS="true",  # the SMTP sink listens on 127.0.0.1
    )
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "mailers"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killing_the_ingress_mid_bulk_while_the_client_retries(
    client, admin, sink, gateway, ray_session, redis_url, tmp_path
):
    await create_smtp_server(client, admin, sink.port, name="chaos-ingress")
    key = "mk_" + "c" * 40
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    actors_before = named_actors()
    process = _serve(port, redis_url, ray_session, tmp_path, key)
    headers = {"Authorization": f"Bearer {key}"}
    batches = [
        [{**MESSAGE, "to": f"b{n}-{i}@example.com", "idempotency_key": f"b{n}-{i}"} for i in range(50)]
        for n in range(20)
    ]

    async def ready(session) -> bool:
        try:
            async with session.get(base + "/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async with aiohttp.ClientSession() as session:
        await wait_for(lambda: ready(session), within=60, every=0.3)
        # The bootstrap key belongs to workspace `default`; give it the sink server too.
        await create_smtp_server_in(session, base, headers, sink.port)
        accepted = 0
        for n, batch in enumerate(batches):
            if n == 8:
                process.send_signal(signal.SIGKILL)
                process.wait()
                process = _serve(port, redis_url, ray_session, tmp_path, key)
            while True:  # a client retrying with the same keys until it gets its 202
                try:
                    async with session.post(
                        base + "/v1/send/bulk",
                        json={"messages": batch},
                        headers={**headers, "Idempotency-Key": f"batch-{n}"},
                    ) as response:
                        if response.status == 202:
                            accepted += (await response.json())["accepted"]
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)
    try:
        await wait_for(lambda: len(arrivals(sink)) == 1000, within=90)
        await asyncio.sleep(2.0)
        counts = arrivals(sink)
        duplicates = sum(c - 1 for c in counts.values())
        print(
            f"\n[chaos] ingress kill: 1000 sent by the client, {len(counts)} arrived, {duplicates} duplicates"
        )
        assert accepted == 1000 and len(counts) == 1000 and duplicates == 0
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The server joined this session's namespace and started the detached stream consumers (every
        # campaign runner, …); they would outlive it and read the streams of later tests.
        for namespace, name in named_actors() - actors_before:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)


async def create_smtp_server_in(session, base: str, headers: dict, port: int) -> None:
    body = {
        "name": "sink",
        "provider": "smtp",
        "priority": 1,
        "config": {"host": "127.0.0.1", "port": port, "security": "none", "pool_size": POOL},
    }
    async with session.post(base + "/v1/sending-servers", json=body, headers=headers) as response:
        assert response.status == 201, await response.text()
    await asyncio.sleep(1.5)


async def test_restarting_redis_with_messages_queued(tmp_path):
    import redis.asyncio as aioredis

    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    redis = aioredis.Redis.from_url(server.url)
    try:
        with SmtpSink() as sink:
            msgs = [message(f"r{i}@example.com") for i in range(300)]
            await enqueue(redis, [new_message(m, ["srv_r"]) for m in msgs])
            await asyncio.sleep(1.2)  # AOF everysec: let a fsync pass, as a real crash would find it
            server.kill()
            server = RedisServer(tmp_path / "redis", port=server.port, appendonly=True).start()
            loop = loop_for(redis, smtp_runtime("srv_r", sink.port))
            loop.server.chunk_size = POOL

            async def crash_midway():
                await wait_for(lambda: len(sink.deliveries) >= 100)
                nonlocal server
                server.kill()
                await asyncio.sleep(0.5)
                server = RedisServer(tmp_path / "redis", port=server.port, appendonly=True).start()

            crash = asyncio.create_task(crash_midway())
            await run_until(lambda: len(arrivals(sink)) == 300, [loop], within=60)
            await crash
            counts = arrivals(sink)
            duplicates = sum(c - 1 for c in counts.values())
            print(f"\n[chaos] redis restarts: 300 queued, {len(counts)} arrived, {duplicates} duplicates")
            assert set(counts) == {m.to[0].email for m in msgs}
            assert duplicates <= POOL
    finally:
        await redis.aclose()
        server.stop()
