"""Where the CPU went during a benchmark phase: per-process CPU seconds read from /proc, grouped by
what the process is (Ray sets its workers' titles to `ray::ActorName`), so a delivery or bulk figure
comes with the cost of each part of the pipeline beside it."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def label(pid: str | int) -> str | None:
    """What process `pid` is (its group in the tables), or None when it is not one of a run's."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    if not parts:
        return None
    command = " ".join(parts)
    if command.startswith("ray::"):
        return parts[0].split(".")[0]
    for marker, name in (
        ("redis-server", "redis-server"),
        ("aiosmtpd", "smtp sink"),
        ("mailers serve", "ingress"),
        ("bench.baseline_server", "bare aiohttp"),
        ("-m bench", "load generator"),
        ("raylet", "ray: raylet"),
        ("gcs_server", "ray: gcs"),
        ("dashboard", "ray: dashboard"),
        ("log_monitor", "ray: other"),
        ("monitor.py", "ray: other"),
        ("runtime_env", "ray: other"),
    ):
        if marker in command:
            return name
    if "default_worker.py" in command or "ray" in command:
        return "ray: other"
    return None


def snapshot() -> dict[tuple[str, str], float]:
    """(pid, label) → CPU seconds so far, for the processes that belong to a benchmark run."""
    seen: dict[tuple[str, str], float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        name = label(pid)
        if name is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen[(pid, name)] = (int(fields[11]) + int(fields[12])) / TICK
    return seen


def spent(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> Counter[str]:
    """CPU seconds per label between two snapshots (a process born in between counts from zero)."""
    totals: Counter[str] = Counter()
    for key, seconds in after.items():
        totals[key[1]] += seconds - before.get(key, 0.0)
    return totals


def table(totals: Counter[str], messages: int, elapsed: float) -> list[str]:
    rows = [
        f"| {label} | {seconds:.2f} | {seconds / elapsed:.0%} | {seconds / messages * 1e6:,.0f} |"
        for label, seconds in totals.most_common()
        if seconds >= 0.01
    ]
    total = sum(totals.values())
    return (
        ["| process | CPU s | of one core | CPU µs per message |", "|---|---:|---:|---:|"]
        + rows
        + [f"| all | {total:.2f} | {total / elapsed:.0%} | {total / messages * 1e6:,.0f} |"]
    )
