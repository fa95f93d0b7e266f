"""Issue #14: the authenticated request path made cheap — the leased rate limit, the one middleware's
per-route chain, ids cut from a buffer, remembered key digests. Behaviour only (speed is in bench/)."""

from __future__ import annotations

import asyncio
import math
import multiprocessing

import pytest
from aiohttp import web

from ingress import audit, auth, body_admission, idempotency, rate_limit
from ingress.connection_limits import body_deadline
from ingress.middleware import chain_for, steps
from ingress.routing import RouteSpec
from schemas.ids import is_id, new_id
from store.api_keys import hash_secret
from store.rate_limits import LEASE_SECONDS, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_small_limit_leases_one_token_so_every_check_is_the_script(redis):
    limiter = RateLimiter(redis, per_second=1.0, burst=3, clock=Clock())
    assert limiter.lease_size == 1
    answers = [await limiter.check("rl:small") for _ in range(4)]
    assert [(a.allowed, a.remaining) for a in answers] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert answers[3].retry_after_ms >= 1
    assert limiter._batches.calls == 4


async def test_leased_tokens_answer_without_redis_and_never_exceed_the_shared_limit(redis):
    # Two limiters are two ingress processes: one GCRA state in Redis. At most the burst plus what refilled
    # meanwhile (Redis's clock) may pass between them, however they are leased.
    clock = Clock()
    one = RateLimiter(redis, per_second=40.0, burst=400, clock=clock)
    two = RateLimiter(redis, per_second=40.0, burst=400, clock=clock)
    assert one.lease_size == 2  # min(400 // 20, 40 // 20)
    started = await redis.time()
    allowed = 0
    for i in range(600):
        decision = await (one if i % 3 else two).check("rl:shared")
        allowed += decision.allowed
    ended = await redis.time()
    elapsed = (ended[0] - started[0]) + (ended[1] - started[1]) / 1e6
    calls = one._batches.calls + two._batches.calls
    assert allowed <= 400 + math.ceil(elapsed * 40) + 1
    assert allowed >= 400 - 2 * (one.lease_size - 1)  # only tokens still leased when the key ran dry
    assert calls < 600  # leased tokens were spent in process


async def test_big_limits_take_one_script_call_per_lease(redis):
    limiter = RateLimiter(redis, per_second=1000.0, burst=2000, clock=Clock())
    assert limiter.lease_size == 50
    answers = [await limiter.check("rl:big") for _ in range(500)]
    assert all(a.allowed for a in answers)
    assert limiter._batches.calls == 10
    assert answers[0].remaining > answers[-1].remaining >= 2000 - 500 - 50


async def test_concurrent_checks_of_one_key_share_one_lease(redis):
    limiter = RateLimiter(redis, per_second=1000.0, burst=2000, clock=Clock())
    answers = await asyncio.gather(*(limiter.check("rl:burst") for _ in range(300)))
    assert all(a.allowed for a in answers)
    assert limiter._batches.calls <= 3
    # What the batches took beyond their checks is one lease each, not one per check: the shared GCRA
    # state (1 ms a token at 1,000/s) is ahead of Redis's clock by the tokens taken, less any refill.
    tat_ms = float(await redis.get("rl:burst"))
    seconds, micros = await redis.time()
    taken = tat_ms - (seconds * 1000 + micros / 1000)
    assert taken <= 300 + limiter._batches.calls * (limiter.lease_size - 1)


async def test_a_lapsed_lease_is_not_spent(redis):
    clock = Clock()
    limiter = RateLimiter(redis, per_second=1000.0, burst=2000, clock=clock)
    await limiter.check("rl:lapse")
    assert limiter._batches.calls == 1
    await limiter.check("rl:lapse")
    assert limiter._batches.calls == 1  # the lease
    clock.now += LEASE_SECONDS
    await limiter.check("rl:lapse")
    assert limiter._batches.calls == 2  # lapsed: asked Redis again


async def test_a_refused_batch_says_when_to_come_back(redis):
    limiter = RateLimiter(redis, per_second=1.0, burst=2, clock=Clock())
    answers = await asyncio.gather(*(limiter.check("rl:refused") for _ in range(3)))
    # Two batches may be in flight at once (on two connections), so which check is refused may vary.
    assert sorted(a.allowed for a in answers) == [False, True, True]
    refused = next(a for a in answers if not a.allowed)
    assert refused.retry_after_ms >= 1 and refused.remaining == 0


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


def _spec(**options) -> RouteSpec:
    return RouteSpec(method="POST", path="/x", handler=_handler, scope=None, summary="", tag="t", **options)


def test_each_route_takes_only_the_steps_that_can_act_on_it():
    assert steps(_spec()) == [
        body_deadline,
        audit.audit,
        auth.authenticate,
        rate_limit.rate_limit,
        body_admission.admit_body,
        idempotency.idempotency,
    ]
    assert steps(_spec(auth=False)) == [
        body_deadline,
        rate_limit.rate_limit,
        body_admission.admit_body,
        idempotency.idempotency,
    ]
    assert idempotency.idempotency not in steps(_spec(idempotent=False))
    assert steps(None) == [body_deadline, body_admission.admit_body]


def test_a_routes_chain_is_composed_once():
    async def endpoint(request: web.Request) -> web.Response:
        return web.Response()

    endpoint.route_spec = _spec()  # type: ignore[attr-defined]
    assert chain_for(endpoint) is chain_for(endpoint)

    async def system_route(request: web.Request) -> web.Response:
        return web.Response()

    assert chain_for(system_route) is not chain_for(system_route)  # no spec: aiohttp's per-request 404


async def test_a_revoked_key_is_refused_although_its_digest_is_remembered(client, admin, make_key):
    victim = await make_key(["admin"])
    assert (await client.get("/v1/api-keys", headers=victim)).status == 200
    secret = victim["Authorization"].removeprefix("Bearer ")
    assert auth.key_digest(secret) == hash_secret(secret)
    listed = (await (await client.get("/v1/api-keys", headers=admin)).json())["data"]
    key_id = next(k["id"] for k in listed if secret.startswith(k["prefix"]))
    assert (await client.delete(f"/v1/api-keys/{key_id}", headers=admin)).status == 200
    assert (await client.get("/v1/api-keys", headers=victim)).status == 401


def test_remembered_digests_are_bounded(monkeypatch):
    monkeypatch.setattr(auth, "_MAX_DIGESTS", 10)
    auth._digests.clear()
    for i in range(25):
        auth.remember_digest(f"mk_{i}", hash_secret(f"mk_{i}"))
        assert auth.key_digest(f"mk_{i}") == hash_secret(f"mk_{i}")
        assert len(auth._digests) <= 10


async def test_only_secrets_that_authenticated_are_remembered(client, make_key):
    auth._digests.clear()
    wrong = "mk_" + "x" * 40
    assert (await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {wrong}"})).status == 401
    assert wrong not in auth._digests
    valid = await make_key(["admin"])
    assert (await client.get("/v1/api-keys", headers=valid)).status == 200
    assert valid["Authorization"].removeprefix("Bearer ") in auth._digests


def _child_ids(queue) -> None:
    queue.put([new_id("evt") for _ in range(100)])


def test_a_forked_child_mints_none_of_its_parents_buffered_ids():
    new_id("evt")  # the buffer is filled
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_ids, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(30)
    ours = [new_id("evt") for _ in range(100)]
    assert all(is_id(i, "evt") for i in theirs + ours)
    assert not {i[-16:] for i in theirs} & {i[-16:] for i in ours}


def test_ids_cut_from_the_buffer_are_unique_across_refills():
    ids = [new_id("req") for _ in range(3 * 4096 + 7)]
    assert len(set(ids)) == len(ids)
    assert all(is_id(i, "req") for i in ids)


@pytest.mark.parametrize("prefix", ["nope", ""])
def test_unknown_prefixes_are_still_refused(prefix):
    with pytest.raises(ValueError):
        new_id(prefix)
