"""A redis-server child process: the embedded default's operational store, and the tests' real Redis.

With a password, the server's only user is `mailers` (the `default` user is off, so a client that does
not authenticate is refused); the ACL file holds the password's SHA-256 only, and the command line holds
neither, so `ps` shows nothing secret. The child dies with its parent where the OS allows
(store/fate_sharing.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from store.fate_sharing import die_with_parent

USERNAME = "mailers"


# A hash whose values are all under 4 KB is stored as one listpack (a flat byte array) instead of a hash table
# (~50 B of structure a field plus the table): a message's hash keeps its payload `p` (0.4-1.5 KB for most
# messages) and its timeline `ev` (~400 B an event, ~110-170 B a campaign message's) beside a dozen short
# fields, both over Redis's default limit of 64 B, so every message record was a hash table
# (docs/campaigns.md, "Memory"). Reads and writes of a listpack hash scan its ~15 fields; a message whose
# body or timeline is larger (a dozen whole events) is a hash table as before.
# docs/operations.md asks an operator's own Redis for the same line.
LISTPACK_SETTINGS = ("--hash-max-listpack-value", "4096")


class RedisServerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RedisServer:
    """Starts `redis-server` bound to 127.0.0.1 with its data (and AOF) under `data_dir`."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        password: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f"{USERNAME}:{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def acl_file(self) -> Path:
        return self.data_dir / "users.acl"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not on PATH (install the Debian package redis-server)")
        return [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            *LISTPACK_SETTINGS,
            "--loglevel",
            "warning",
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
            *(["--aclfile", str(self.acl_file.resolve())] if self.password else []),
        ]

    def _write_acl_file(self) -> None:
        """`default` off, `mailers` with every command: the embedded Redis serves Mailers and nothing else.

        `default` keeps every permission though no one can log in as it: Redis (7.0 to 7.4) replays the
        AOF as `default` and re-checks its permissions at each EXEC, so a `default` without them silently
        drops every MULTI/EXEC and every script's writes on restart (redis/redis#14541).
        """
        digest = hashlib.sha256(self.password.encode()).hexdigest()  # type: ignore[union-attr]
        fd = os.open(self.acl_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"user default off ~* &* +@all\nuser {USERNAME} on #{digest} ~* &* +@all\n")

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.password:
            self._write_acl_file()
        # Its own session: a terminal's Ctrl-C reaches only the parent, which stops Redis after draining.
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self.process.returncode}; see {self.data_dir}/redis.log"
                )
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _answers_ping(self) -> bool:
        hello = [b"AUTH", USERNAME.encode(), self.password.encode()] if self.password else []
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                if hello:
                    sock.sendall(_resp(hello))
                    if not sock.recv(16).startswith(b"+OK"):
                        return False
                sock.sendall(_resp([b"PING"]))
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # redis fsyncs the AOF on SIGTERM
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """Crash it: SIGKILL, no shutdown save (what a power cut looks like, minus the AOF's last second)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def _resp(parts: list[bytes]) -> bytes:
    """One command in RESP: a password may hold any byte, which the inline protocol would split on."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
