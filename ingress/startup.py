"""Start-up failures as one line naming the cause and the variable, like invalid settings.

`mailers serve` checks what it can before starting anything (the data dir is writable, the port is free,
redis-server exists); what fails later, while Redis, Ray or the consumers start, is translated here in one
place (`blame`) after the caller has stopped what it started. The CLI prints `mailers: <message>` and exits
with status 1.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from schemas.settings import Settings


class StartupError(RuntimeError):
    """`mailers serve` could not start; the message is the one line to print."""


def redacted(url: str) -> str:
    """The URL without its password: start-up messages end up in logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def blame(subject: str, what: str) -> Iterator[None]:
    """Turn any failure inside into StartupError("<subject>: <what> failed: <cause>").

    `subject` names the variable that decides the thing that failed, with its value (`RAY_ADDRESS=…`).
    """
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        cause = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise StartupError(f"{subject}: {what} failed: {cause}") from exc


def check_data_dir(settings: Settings) -> None:
    try:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        probe = settings.data_path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"MAILERS_DATA_DIR={settings.data_dir} is not a writable directory: {exc.strerror}"
        ) from exc


LISTEN_BACKLOG = 128  # asyncio's default for create_server


def reserve_listen_address(settings: Settings) -> socket.socket:
    """Bind and listen on the HTTP address before Redis and Ray start; the HTTP server serves this very
    socket. A taken port is found first, and none of the processes started meanwhile can take it (Ray
    picks free ports for its own; a bound socket that is not listening does not stop another
    SO_REUSEADDR bind on Linux, a listening one does). Connections made during start-up wait in the
    backlog until the server accepts them."""
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StartupError(f"MAILERS_HOST={settings.host} cannot be resolved: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
    try:
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise listen_error(settings, exc) from exc
    return sock


def listen_error(settings: Settings, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"MAILERS_PORT={settings.port} is already in use")
    if exc.errno == errno.EACCES:
        return StartupError(f"MAILERS_PORT={settings.port} needs privileges to bind")
    return StartupError(f"MAILERS_HOST={settings.host} cannot be bound: {exc.strerror}")


def check_redis_server_installed(settings: Settings) -> None:
    if settings.embedded_redis and shutil.which("redis-server") is None:
        raise StartupError(
            "MAILERS_REDIS_URL is unset and redis-server is not on PATH: "
            "install the Debian package redis-server, or point MAILERS_REDIS_URL at a Redis"
        )
