"""CPU tiers are per thread on Linux: an actor's tier must reach every thread of its process — Ray's main
thread (which takes the actor's calls), its io and gRPC threads, the event loop's — not only the thread
its constructor ran on. Read back from /proc/<pid>/task/*/stat."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.priority import BACKGROUND_NICENESS, SENDING_NICENESS, lower_threads

ROOT = Path(__file__).resolve().parents[2]


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


TIER_CHILD = (
    "import os, sys, threading, time\n"
    "from actors.priority import run_as_sender, run_in_background\n"
    "ready = threading.Barrier(4)\n"
    "def wait():\n"
    "    ready.wait()\n"
    "    time.sleep(60)\n"
    "for _ in range(3):  # started before the tier, as Ray starts its io and gRPC threads\n"
    "    threading.Thread(target=wait, daemon=True).start()\n"
    "ready.wait()\n"
    "run_as_sender() if sys.argv[1] == 'sender' else run_in_background()\n"
    "threading.Thread(target=wait, daemon=True).start()  # started after: inherits the tier\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize(
    ("tier", "niceness"), [("sender", SENDING_NICENESS), ("background", BACKGROUND_NICENESS)]
)
async def test_an_actors_tier_reaches_every_thread_of_its_process(tier: str, niceness: int) -> None:
    """What an actor's constructor calls (`run_as_sender` / `run_in_background`), in a process whose
    other threads were started before it at nice 0, as Ray's main, io and gRPC threads are: every thread
    ends at the tier, and a thread started afterwards inherits it. (The test session's Ray starts its
    workers at Ray's default nice 15, above both tiers, so the actors' own processes cannot show it.)"""
    child = subprocess.Popen(
        [sys.executable, "-c", TIER_CHILD, tier],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"ready\n"
        threads = thread_niceness(child.pid)
        assert len(threads) == 5, threads
        assert threads == {thread: niceness for thread in threads}
    finally:
        child.kill()
        child.wait()


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
