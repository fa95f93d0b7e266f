"""One owner per data dir: `flock` on `<data_dir>/serve.lock` while the embedded Redis and Ray run.

The embedded Redis appends to one AOF under the data dir; two servers on it would interleave writes and
corrupt it. The kernel drops an flock when its holder dies however it dies (SIGKILL included), so a stale
lock never needs clearing by hand. The file holds the holder's pid, for the message a second start prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from ingress.startup import StartupError


class DataDirInUse(StartupError):
    """Another process holds the data dir; the message names the dir and, when known, the holder's pid."""


class DataDirLock:
    FILE = "serve.lock"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / self.FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock without waiting; raise DataDirInUse where another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            by = f" by pid {holder}" if holder.isdigit() else ""
            raise DataDirInUse(
                f"data dir {self.path.parent.resolve()} is in use{by}: "
                "stop that `mailers serve`, or set MAILERS_DATA_DIR to another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
