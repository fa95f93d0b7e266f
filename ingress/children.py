"""The processes `mailers serve` started (its Redis, its local Ray's head), recorded in the data dir.

Children die with serve where the OS allows (store/fate_sharing.py; Ray does the same for its own), but
where it does not, or while a dying child still shuts down, the next start must not run a second Redis on
the same append-only file. So each child is recorded with what identifies it beyond its pid (start time
since boot, boot id, command line), and the next start, holding the data dir lock, stops every recorded
process that is still alive and verifiably the one recorded: SIGTERM (Redis fsyncs its AOF and exits
cleanly), SIGKILL after a bound. A pid reused by an unrelated process never matches and is left alone.

Stopping was chosen over adopting a survivor: adopting would keep a Redis that no longer dies with its
parent, and a clean SIGTERM shutdown loses nothing acknowledged (the AOF is fsynced first).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

Announce = Callable[[str], None]


class ChildRecord(msgspec.Struct, frozen=True):
    pid: int
    start_ticks: int
    boot_id: str
    cmdline: list[str]
    cwd: str


def identify(pid: int) -> ChildRecord | None:
    """What identifies the process `pid` now, or None where it is gone (or a zombie)."""
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        raw = (proc / "cmdline").read_bytes()
        cwd = os.readlink(proc / "cwd")
    except (OSError, IndexError):
        return None
    if stat[0] == "Z":
        return None
    # Field 22 of stat, the start time in clock ticks since boot; fields from index 2 follow the ")".
    cmdline = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    return ChildRecord(pid, int(stat[19]), _boot_id(), cmdline, cwd)


def with_descendants(pids: Iterable[int]) -> list[int]:
    """`pids` and every live process below them: Ray's raylet starts agents that outlive it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], list(pids)
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


class ChildRecords:
    """`<data_dir>/children.json`; read and written only by the holder of the data dir lock."""

    def __init__(self, path: Path, *, stop_timeout: float = 10.0) -> None:
        self.path = path
        self.stop_timeout = stop_timeout

    def read(self) -> list[ChildRecord]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=list[ChildRecord])
        except (OSError, msgspec.DecodeError):
            return []

    def add(self, pids: Iterable[int]) -> None:
        found = [record for record in map(identify, pids) if record is not None]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self.read() + found))
        os.replace(tmp, self.path)

    def stop_all(self, announce: Announce = print) -> int:
        """Stop every recorded process still alive and still the one recorded; forget them all."""
        survivors = [record for record in self.read() if identify(record.pid) == record]
        for record in survivors:
            name = " ".join(record.cmdline[:1])
            announce(f"Stopping pid {record.pid} ({name}): started for this data dir and still running")
            _signal(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for record in survivors:
            if not _wait_gone(record, deadline):
                _signal(record.pid, signal.SIGKILL)
                _wait_gone(record, time.monotonic() + 5.0)
        self.path.unlink(missing_ok=True)
        return len(survivors)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(record: ChildRecord, deadline: float) -> bool:
    """Poll /proc until the process is gone: it is not our child (its parent died), so no waitpid."""
    while identify(record.pid) == record:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
