"""With one attacker sending the worst bodies at full speed, a normal client's `/v1/send` stays answered.

Issue #11's target: the normal client's p95 <= 50 ms, each of its requests under a deadline
(bench/attack.py, DEADLINE_SECONDS). Beside it, the loop itself: of every gap between two ticks of the
ingress's event loop while the attacker runs, the CPU time of the loop's own thread, i.e. the longest
callback (bench/loop_stalls.py, `longest_own_ms`). That is what a request holding the loop costs
everyone else (a 9 MB body packed for Redis on the loop: 53-70 ms measured here without
store/ledger/blocking.py, at loads 13-19; 6-11 ms with it, at loads 16-23), and unlike a latency or a
wall-clock gap it hardly moves with the shared machine's load, so the bound holds where the p95 may not.

The attacker sends every worst body but those whose cost is msgspec's JSON decode itself (9 MB of
escapes or of tokens: tens of ms holding the GIL, bounded only by the byte budget; docs/security.md,
"Bounded parsing", not yet done); `python -m bench --phases attack` sends those too.

The process runs as `mailers serve` runs it: the garbage collector settled after start-up
(actors/priority.settle_garbage_collector), otherwise a full collection over the test session's
objects alone stalls the loop 100+ ms. The app runs without Ray (no gateway): nothing here needs an
actor, and dispatchers working on the normal client's messages would only add noise. The attacker is
its own process with its own key in another workspace, as a tenant would be.
"""

from __future__ import annotations

import gc
import uuid

from actors.priority import settle_garbage_collector
from bench.attack import NORMAL_REQUESTS, attacked, percentile
from bench.loop_stalls import LoopStalls
from ingress.app import create_app
from tests.conftest import make_settings

# Issue #11's target is 50 ms; in the full suite on a 2-core CI machine the normal client's p95 was 63.9 ms
# (docs/security.md, "Bounded parsing"), so this bound guards against regressions while the target is open.
# The stall bound below is the one that separates the fix from the code before it whatever the load.
P95_BOUND_MS = 150.0
STALL_BOUND_MS = 25.0  # the longest run of the loop's own thread between two ticks


async def _sandbox(client, headers) -> None:
    body = {"name": "sandbox", "provider": "sandbox"}
    response = await client.post("/v1/sending-servers", json=body, headers=headers)
    assert response.status == 201, await response.text()


async def test_a_normal_client_stays_answered_while_an_attacker_sends_the_worst_inputs(
    aiohttp_client, tmp_path, redis_url, redis, make_key
):
    app = create_app(make_settings(tmp_path, redis_url), redis_url=redis_url, gateway=None)
    client = await aiohttp_client(app)
    normal = await make_key(["send", "write:settings"])
    attacker = await make_key(["send", "write:settings"], workspace=f"evil-{uuid.uuid4().hex[:8]}")
    for headers in (normal, attacker):
        await _sandbox(client, headers)
    base = str(client.make_url("")).rstrip("/")

    threshold = gc.get_threshold()
    settle_garbage_collector()
    try:
        async with LoopStalls() as stalls:
            latencies, answers = await attacked(base, normal, attacker["Authorization"], decode_floor=False)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    report = (
        f"normal client p50 {p50:.1f} ms, p95 {p95:.1f} ms; attacker answered {answers}\n" + stalls.report()
    )
    print(report)
    assert len(latencies) == NORMAL_REQUESTS
    assert answers.get("202", 0) >= 4, f"the attacker never got going: {answers}"
    assert stalls.longest_own_ms <= STALL_BOUND_MS, report
    assert p95 <= P95_BOUND_MS, report
