"""Resident memory of a set of processes, sampled while a phase runs (Linux /proc, no extra package).

`RssSampler(pids)` samples the summed RSS every 50 ms in a thread while its `async with` block runs;
`peak_growth_mb` is the highest sum minus the sum at the start: what the phase cost in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pids_named(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment` (Ray names an actor's worker `ray::Class`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class RssSampler:
    def __init__(self, pids: list[int], every: float = 0.05) -> None:
        self.pids, self.every = pids, every
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def total(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.total())

    async def __aenter__(self) -> RssSampler:
        self.start = self.peak = self.total()
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())

    @property
    def peak_growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20
