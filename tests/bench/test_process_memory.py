"""bench/process_memory.py's `RssSampler`: the sum of a set of processes' RSS, and each process's own
growth, read from /proc of real processes (a child that allocates when told to, and one that does not)."""

from __future__ import annotations

import subprocess
import sys

from bench.process_memory import RssSampler

# Says it is ready (started, before the sampler reads its RSS), waits for a line, then touches `MB`
# megabytes and says so; holds them until stdin closes.
GROWER = """
import sys
print("ready", flush=True)
sys.stdin.readline()
held = bytearray(int(sys.argv[1]) * 2**20)
for i in range(0, len(held), 4096):
    held[i] = 1
print("grown", flush=True)
sys.stdin.read()
"""


def _child(grow_mb: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", GROWER, str(grow_mb)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


async def test_growth_is_told_apart_per_process():
    grower, idle = _child(64), _child(0)
    try:
        names = {grower.pid: "grower", idle.pid: "idle"}
        async with RssSampler([grower.pid, idle.pid]) as rss:
            for child in (grower, idle):
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "grown"
        grown = rss.growth_by(names.get)
        assert 60 <= grown["grower"] < 80  # its 64 MB, touched page by page
        assert grown["idle"] < 4
        assert 60 <= rss.peak_growth_mb < 84  # the sum: both, at the same moment
    finally:
        for child in (grower, idle):
            child.kill()
            child.wait()
