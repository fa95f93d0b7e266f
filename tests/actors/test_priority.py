"""CPU tiers are per thread on Linux: an actor's tier must reach every thread of its process — Ray's main
thread (which takes the actor's calls), its io and gRPC threads, the event loop's — not only the thread
its constructor ran on. Read back from /proc/<pid>/task/*/stat of the real actors' processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.priority import BACKGROUND_NICENESS, SENDING_NICENESS, lower_threads
from tests.conftest import make_settings

pytestmark = pytest.mark.ray


def thread_niceness(pid: int) -> dict[str, int]:
    """'tid name' -> niceness of every thread of process `pid` (field 19 of stat)."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        found[f"{tid} {name}"] = int(raw.rsplit(")", 1)[1].split()[16])
    return found


async def actor_pid(handle) -> int:
    return await handle.__ray_call__.remote(lambda actor: os.getpid())


async def test_a_background_actor_runs_every_thread_of_its_process_at_its_tier(
    ray_session, redis, redis_url, tmp_path
) -> None:
    import ray

    from actors.audit.client import start_audit_sink

    settings = make_settings(tmp_path, redis_url)
    handle = start_audit_sink(settings, redis_url, name="audit-sink-priority-test", block_ms=20, linger=0.0)
    try:
        assert await handle.ready.remote()
        pid = await actor_pid(handle)
        for _ in range(20):  # calls, so threads Ray starts on demand (gRPC, timers) exist too
            await handle.stats.remote()
        threads = thread_niceness(pid)
        assert len(threads) > 5, threads  # Ray's own threads are there, not only the constructor's
        assert threads == {thread: BACKGROUND_NICENESS for thread in threads}
    finally:
        await handle.shutdown.remote()
        ray.kill(handle, no_restart=True)


async def test_the_send_path_actors_run_every_thread_at_the_sender_tier(gateway) -> None:
    import ray

    for name in ("dispatcher-0", "suppression-shard-0"):
        handle = ray.get_actor(name, namespace="mailers-test")
        pid = await actor_pid(handle)
        threads = thread_niceness(pid)
        assert len(threads) > 5, threads
        assert threads == {thread: SENDING_NICENESS for thread in threads}, name


async def test_lower_threads_reaches_every_thread_of_another_process_and_never_raises_one() -> None:
    """What `actors.runtime` does to Ray's own processes (raylet, GCS, log monitor): a child with
    threads, one of them already nicer than the tier, which keeps its niceness."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, threading, time\n"
            "ready = threading.Barrier(4)\n"
            "def wait(extra):\n"
            "    os.nice(extra)\n"
            "    ready.wait()\n"
            "    time.sleep(60)\n"
            "for extra in (0, 0, 12):\n"
            "    threading.Thread(target=wait, args=(extra,), daemon=True).start()\n"
            "ready.wait()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"ready\n"
        before = thread_niceness(child.pid)
        assert sorted(before.values()) == [0, 0, 0, 12]
        lower_threads(child.pid, 7)
        assert sorted(thread_niceness(child.pid).values()) == [7, 7, 7, 12]
    finally:
        child.kill()
        child.wait()
