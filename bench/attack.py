"""Issue #11's target, measured: a normal client's `/v1/send` latency with and without an attacker.

The attacker (its own key, its own process, as it would be) sends the worst bodies we can construct
(tests/security/attack.py) at full speed over several connections; refused bodies (429, 413) are sent
again after 10 ms. The normal client sends one small message at a time at 20 requests a second, each
under a deadline. Used by `python -m bench --phases attack` (which adds the server's
loop lag, `mailers_event_loop_lag_seconds`) and by the proof test (tests/security/test_attack_latency.py),
which asserts p95 <= 50 ms and bounds the longest loop stall (bench/loop_stalls.py).

`python -m bench.attack BASE_URL AUTHORIZATION SECONDS CONNECTIONS` runs the attacker alone and prints
what it was answered (status -> count) as JSON.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import aiohttp
import msgspec

from tests.security.attack import worst_bodies

NORMAL_MESSAGE = {
    "from": "Acme <hello@acme.com>",
    "to": "ana@example.com",
    "subject": "Hi",
    "html": "<p>Hi</p>",
}
NORMAL_REQUESTS = 100
NORMAL_RATE = 20.0
DEADLINE_SECONDS = 2.0  # a normal request slower than this fails the run outright
ATTACK_CONNECTIONS = 4


async def normal_client(
    base: str, headers: dict[str, str], *, requests: int = NORMAL_REQUESTS
) -> list[float]:
    """Latencies (s) of `requests` sends paced at NORMAL_RATE; raises if one misses its deadline or fails."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            started = time.perf_counter()
            async with asyncio.timeout(DEADLINE_SECONDS):
                async with session.post(base + "/v1/send", json=NORMAL_MESSAGE, headers=headers) as response:
                    body = await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 202:
                raise AssertionError(f"normal client answered {response.status}: {body[:300]!r}")
            await asyncio.sleep(max(0.0, 1 / NORMAL_RATE - latencies[-1]))
    return latencies


def start_attacker(base: str, authorization: str, seconds: float) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "bench.attack",
        base,
        authorization,
        str(seconds),
        str(ATTACK_CONNECTIONS),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE)


def attacker_answers(process: subprocess.Popen) -> dict[str, int]:
    out, _ = process.communicate(timeout=60)
    return msgspec.json.decode(out.strip().splitlines()[-1]) if out.strip() else {}


async def attacked(
    base: str, headers: dict[str, str], attacker_authorization: str
) -> tuple[list[float], dict]:
    """The normal client's latencies while the attacker runs, and what the attacker was answered."""
    seconds = NORMAL_REQUESTS / NORMAL_RATE + 3
    process = start_attacker(base, attacker_authorization, seconds)
    try:
        await asyncio.sleep(1.0)  # the attacker's first bodies are in flight
        latencies = await normal_client(base, headers)
    except BaseException:
        process.kill()
        raise
    return latencies, await asyncio.to_thread(attacker_answers, process)


def percentile(latencies: list[float], p: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _attack(base: str, authorization: str, seconds: float, connections: int) -> dict[str, int]:
    bodies = worst_bodies()
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    answers: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def connection() -> None:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                for path, body in bodies:
                    keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
                    # A request still running at the deadline is given up (a server without CPU budgets,
                    # as the bench's, queues the bulks' tracking behind each other for tens of seconds).
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        async with asyncio.timeout(left):
                            async with session.post(base + path, data=body, headers=keyed) as response:
                                await response.read()
                                status = str(response.status)
                    except aiohttp.ClientError:
                        status = "closed"
                    except TimeoutError:
                        status = "unanswered at the end"
                    answers[status] = answers.get(status, 0) + 1
                    if status != "202":
                        await asyncio.sleep(0.01)

    await asyncio.gather(*(connection() for _ in range(connections)))
    return answers


if __name__ == "__main__":
    base_url, auth, secs, conns = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    print(msgspec.json.encode(asyncio.run(_attack(base_url, auth, secs, conns))).decode(), flush=True)
