"""The Dispatcher's body without Ray: real Redis, an injected clock, `step` / `run_until_idle`."""

from __future__ import annotations

import time

import msgspec

from actors.dispatch.body import DispatchFleet
from store import keyspace
from store.servers import ServerStore, ensure_sandbox_server
from tests.pipeline.helpers import enqueue, message, new_message


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_step_moves_a_scheduled_message_once_the_injected_clock_reaches_it(redis, settings):
    clock = Clock(time.time())
    msg = message("later@example.com")
    queued = new_message(msg, ["srv_later"])
    meta = msgspec.structs.replace(queued.meta, send_at_ms=int((clock.now + 60) * 1000))
    await enqueue(redis, [msgspec.structs.replace(queued, meta=meta, status="scheduled")])
    stream = keyspace.dispatch_stream("acme", "srv_later")
    fleet = DispatchFleet(redis, settings, clock=clock)
    other = DispatchFleet(redis, settings, index=1, count=2, clock=Clock(clock.now + 3600))

    assert await fleet.step() == 0  # not due yet by the body's clock
    assert await other.step() == 0  # only dispatcher 0 runs the scheduler
    assert await redis.xlen(stream) == 0
    clock.now += 61
    assert await fleet.step() == 1
    assert await redis.xlen(stream) == 1
    assert await fleet.run_until_idle() == 0


async def test_steps_start_a_loop_per_owned_server_and_stop_it_when_the_server_goes(redis, settings):
    store = ServerStore.for_settings(redis, settings)
    server = await ensure_sandbox_server(store, "acme")
    assert server is not None
    fleet = DispatchFleet(redis, settings, clock=Clock(time.time()))
    try:
        assert await fleet.run_until_idle() == 1  # started once; the next step finds nothing to change
        assert set(fleet.running) == {server.id}
        assert not fleet.running[server.id].task.done()
        assert await store.delete("acme", server.id)
        assert await fleet.step() == 1
        assert fleet.running == {}
    finally:
        await fleet.stop_all()
