"""The ingress's Redis pool is bounded and blocking: a burst of requests larger than the pool waits for
connections instead of failing (redis-py's default pool raises "Too many connections" at once, which
answered 500 under load), and a request that cannot get one in time answers 503 `unavailable`."""

from __future__ import annotations

import asyncio

from ingress.context import SERVICES


async def test_a_burst_wider_than_the_pool_waits_for_connections_instead_of_failing(app_client, make_key):
    client = await app_client(redis_pool_size=2, redis_pool_timeout_seconds=30.0)
    headers = await make_key(["admin"])
    answers = await asyncio.gather(*(client.get("/v1/api-keys", headers=headers) for _ in range(60)))
    assert [a.status for a in answers] == [200] * 60


async def test_no_connection_in_time_answers_503_unavailable_with_retry_after(app_client, make_key):
    client = await app_client(redis_pool_size=1, redis_pool_timeout_seconds=0.2)
    headers = await make_key(["admin"])

    pool = client.app[SERVICES].redis.connection_pool
    held = await pool.get_connection()  # the only connection, taken
    try:
        answer = await client.get("/v1/api-keys", headers=headers)
        assert answer.status == 503
        problem = await answer.json()
        assert problem["code"] == "unavailable" and answer.headers["Retry-After"] == "1"
    finally:
        await pool.release(held)
    assert (await client.get("/v1/api-keys", headers=headers)).status == 200
