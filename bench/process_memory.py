"""Resident memory of a set of processes, sampled while a phase runs (Linux /proc, no extra package).

`RssSampler(pids)` samples the summed RSS every 50 ms in a thread while its `async with` block runs;
`peak_growth_mb` is the highest sum minus the sum at the start: what the phase cost in memory.
`growth_by(label)` is each process's own peak less its start, summed per label: which process grew.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
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
        self.starts: dict[int, int] = {}
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def total(self) -> int:
        each = {pid: rss_bytes(pid) for pid in self.pids}
        for pid, size in each.items():
            self.peaks[pid] = max(self.peaks.get(pid, 0), size)
        return sum(each.values())

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.total())

    async def __aenter__(self) -> RssSampler:
        self.start = self.peak = self.total()
        self.starts = dict(self.peaks)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())

    def growth_by(self, label: Callable[[int], str | None]) -> Counter[str]:
        """MB each labelled group of processes grew by: each process's own peak less its start. The
        groups' peaks need not be simultaneous, so they may add up to more than `peak_growth_mb`."""
        grown: Counter[str] = Counter()
        for pid, start in self.starts.items():
            grown[label(pid) or "other"] += (self.peaks.get(pid, start) - start) / 2**20
        return grown

    @property
    def peak_growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def descendants_named(root: int, fragment: str) -> list[int]:
    """`pids_named(fragment)` that descend from `root`: this run's actors, not another engineer's
    `mailers serve` on the same machine."""
    found = []
    for pid in pids_named(fragment):
        ancestor: int | None = pid
        while ancestor not in (None, 0, 1):
            if ancestor == root:
                found.append(pid)
                break
            ancestor = parent_pid(ancestor)  # type: ignore[arg-type]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named group of processes used while its `with` block ran: a figure that the
    machine's load does not inflate, unlike wall time on shared cores."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.used = {name: end[name] - self._start[name] for name in self.groups}

    def describe(self, per: int, unit: str, *, scale: float = 1e6, suffix: str = "µs") -> str:
        parts = [f"{name} {seconds * scale / per:,.1f} {suffix}" for name, seconds in self.used.items()]
        return ", ".join(parts) + f" of CPU per {unit}"
