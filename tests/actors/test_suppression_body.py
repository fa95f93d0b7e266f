"""The SuppressionShard's body without Ray: real Redis, the calls the shell delegates, the channel."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.suppression.body import SuppressionShardBody
from schemas.suppressions import Suppressed, SuppressionEntry
from store.suppressions import SuppressionStore, add_suppressions

# A global entry is published on the suppression channel, which the session's Ray shards follow too: it
# would stay in their memory after Redis is flushed and suppress the address in every later test. So the
# address is one no other test sends to, and it is removed (also published) when the test ends.
GLOBAL_ADDRESS = "gl@body-test.example"


@pytest.fixture
async def body(redis):
    shard = SuppressionShardBody(redis, 0, clock=lambda: 0.0)
    yield shard
    await shard.remove([("ws", GLOBAL_ADDRESS, "global", None)])
    await shard.close()


async def test_checks_report_the_broadest_scope_and_writes_reach_redis_and_memory(body, redis):
    entries = [
        SuppressionEntry(email="Gl@Body-Test.example", reason="bounce"),
        SuppressionEntry(email="bo@example.com", scope="domain", scope_value="acme.test", reason="complaint"),
        SuppressionEntry(email="gl@body-test.example", scope="global"),
    ]
    assert await body.add([("ws", e) for e in entries]) == [True, True, True]
    assert await body.add([("ws", entries[0])]) == [False]
    everyone = ["GL@body-test.example", "bo@example.com", "ok@example.com"]
    assert await body.check([("ws", "mail.acme.test", [], everyone), ("other", "x.test", [], everyone)]) == [
        [
            Suppressed("GL@body-test.example", "global", "manual"),
            Suppressed("bo@example.com", "domain", "complaint"),
        ],
        [Suppressed("GL@body-test.example", "global", "manual")],
    ]
    assert await SuppressionStore(redis).is_suppressed("ws", "bo@example.com", "domain", "acme.test")
    assert await body.remove(
        [("ws", "bo@example.com", "domain", "acme.test"), ("ws", "no@x.test", "workspace", None)]
    ) == [
        True,
        False,
    ]
    assert await body.check([("ws", "acme.test", [], ["bo@example.com"])]) == [[]]
    # an address or domain that does not parse fails only itself
    assert await body.check([("ws", "bad domain", [], ["x@", "gl@body-test.example"])]) == [
        [Suppressed("gl@body-test.example", "global", "manual")]
    ]
    assert body.stats()["calls"] == {"add": 2, "check": 3, "remove": 1}


async def test_a_new_body_rebuilds_its_sets_from_redis(body, redis):
    await body.add([("ws", SuppressionEntry(email=f"u{i}@example.com")) for i in range(20)])
    fresh = SuppressionShardBody(redis, 0)
    try:
        hits = await fresh.check([("ws", "acme.test", [], ["u3@example.com", "ok@example.com"])])
        assert hits == [[Suppressed("u3@example.com", "workspace", "manual")]]
    finally:
        await fresh.close()


async def test_writes_by_others_reach_a_running_body_over_the_channel(body, redis):
    stop = asyncio.Event()
    running = asyncio.create_task(body.run(stop))
    assert await body.check([("ws", "acme.test", [], ["late@example.com"])]) == [[]]  # loads the set
    await add_suppressions(redis, "ws", [SuppressionEntry(email="late@example.com", reason="complaint")])
    deadline = time.monotonic() + 5
    while not body.sets["ws"].filter(["late@example.com"], sending_domain="acme.test")[1]:
        assert time.monotonic() < deadline, "the published change never reached the body"
        await asyncio.sleep(0.01)  # waiting on Redis pub/sub delivery, not on a timer of ours
    assert await body.run_until_idle() == 0  # nothing runs between calls but the follower
    stop.set()
    await running
    assert body._listener is None
