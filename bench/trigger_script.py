"""An api trigger batch's Redis step in isolation (issue #14): the previous path (the lookup script, the
checks in Python, the start script) against the one script (`ApiTriggerStore`), batches of 1 and of 20,
on a private Redis: Redis' own µs per trigger (`INFO commandstats`) and this process's CPU per trigger
(what the ingress pays). `python -m bench.trigger_script`. No Idempotency-Key (with one, the previous
path also paid the middleware's claim and completion: two more round trips)."""

import asyncio
import os
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis

from bench.automations import _automation
from bench.scratch import scratch_dir
from schemas.audience import ListRecord, SubscriberInput, subscriber_decoder
from schemas.automations import RunRecord
from schemas.events import Event
from schemas.ids import new_id
from store import keyspace
from store.automation_runs import (
    EMAIL_SLOT,
    SUBSCRIBER_SLOT,
    ApiGroup,
    ApiStart,
    ApiTriggerStore,
    NewRun,
    RunStore,
)
from store.automations import AutomationStore
from store.redis_server import RedisServer
from store.subscribers import SubscriberStore

N = 3000


def event(run_id, sub, email):
    return Event(
        id=new_id("evt"),
        type="automation.triggered",
        created_at=datetime.now(UTC),
        workspace="w",
        data={
            "automation_id": "a",
            "run_id": run_id,
            "version": 1,
            "subscriber": sub,
            "email": email,
            "trigger": "api",
        },
    )


async def usec(r):
    s = await r.info("commandstats")
    return sum(v["usec"] for v in s.values()), sum(v["calls"] for v in s.values())


async def main():
    data = scratch_dir("trig5-micro-")
    server = RedisServer(data / "redis", appendonly=False).start()
    r = aioredis.Redis.from_url(server.url)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    lst = ListRecord(id="lst_x", workspace="w", name="x", created_ms=0, updated_ms=0)
    await SubscriberStore(r).upsert(
        lst,
        [SubscriberInput(email=f"s{i}@example.com", attributes={"plan": "pro", "n": i}) for i in range(2000)],
        mode="upsert",
        now_ms=now_ms,
    )
    head = await _automation(r, "w", now)
    raw_head = await r.get(keyspace.automation("w", head.id))
    store, runs, api = AutomationStore(r), RunStore(r), ApiTriggerStore(r)
    print(f"load {os.getloadavg()[0]:.1f}")
    for batch in (1, 20):
        for name in ("old: lookup + start", "one script"):
            await r.config_resetstat()
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            for b in range(N // batch):
                emails = [f"s{(b * batch + j) % 2000}@example.com" for j in range(batch)]
                if name.startswith("old"):
                    _, found = await store.trigger_lookup("w", [head.id], sorted(set(emails)))
                    subs = {
                        e: subscriber_decoder.decode(f[1])
                        for e, f in zip(sorted(set(emails)), found, strict=True)
                    }
                    items = []
                    for e in emails:
                        s = subs[e]
                        rid = new_id("run")
                        rec = RunRecord(
                            subscriber=s.id, version=1, status="r", at=0, created_ms=now_ms, data={"n": 1}
                        )
                        items.append(
                            NewRun(
                                run_id=rid,
                                record=rec,
                                due_ms=now_ms,
                                event=event(rid, s.id, s.email),
                                audit=b"x" * 200,
                            )
                        )
                    await runs.start("w", head.id, items, after_exit=False)
                else:
                    items = []
                    for e in emails:
                        rid = new_id("run")
                        rec = RunRecord(
                            subscriber=SUBSCRIBER_SLOT,
                            version=1,
                            status="r",
                            at=0,
                            created_ms=now_ms,
                            data={"n": 1},
                        )
                        items.append(
                            ApiStart(
                                email=e,
                                run_id=rid,
                                record=rec,
                                due_ms=now_ms,
                                event=event(rid, SUBSCRIBER_SLOT, EMAIL_SLOT),
                                audit=b"x" * 200,
                            )
                        )
                    [(kind, _)] = await api.start(
                        "w", [ApiGroup(automation_id=head.id, head=raw_head, after_exit=False, items=items)]
                    )
                    assert kind == "ok"
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            us, calls = await usec(r)
            print(
                f"| batch {batch:>2} | {name} | Redis {us / N:.1f} µs/trigger, {calls / N:.2f} calls "
                f"| this process {cpu / N * 1e6:.0f} µs CPU/trigger | wall {wall / N * 1e6:.0f} µs "
                f"| load {os.getloadavg()[0]:.1f} |"
            )
            await r.delete(keyspace.EVENT_STREAM, keyspace.AUDIT_STREAM)
    await r.aclose()
    server.stop()


asyncio.run(main())
