"""What `mailers serve` runs: the embedded Redis (if no URL is set), Ray, and the HTTP server.

Start-up order is what keeps a crash or a failed start from leaving a mess: check what can be checked
(data dir, port, redis-server), take the data dir lock, stop what a crashed earlier run left behind, then
start Redis and Ray and record their pids, and only then the HTTP server. Whatever fails stops what was
started and becomes one line (ingress/startup.py).

A running server writes `runtime.json` (mode 0600: its Redis URL carries the embedded Redis's password)
in the data dir, so other `mailers` commands on the machine use its Redis instead of starting a second
redis-server on the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from actors.priority import settle_garbage_collector
from ingress.children import ChildRecords, with_descendants
from ingress.connection_limits import CappedTCPSite, http_runner
from ingress.data_dir_lock import DataDirInUse, DataDirLock
from ingress.startup import (
    StartupError,
    blame,
    check_can_listen,
    check_data_dir,
    check_redis_server_installed,
    listen_error,
    redacted,
)
from schemas.settings import Settings
from store.redis_server import RedisServer

log = logging.getLogger("mailers")


def _generated_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret kept in `path`, generated on first use; the file is created 0600 and never rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate())
    return path.read_text().strip()


def with_secret_key(settings: Settings) -> Settings:
    """Unset in embedded mode: generated once and kept in the data dir with mode 0600."""
    if settings.secret_key is not None:
        return settings
    from security.secretbox import generate_master_key

    key = _generated_secret(settings.data_path / "secret_key", generate_master_key)
    return msgspec.structs.replace(settings, secret_key=key)


def redis_password(settings: Settings) -> str:
    """The embedded Redis's password: generated once, `<data_dir>/redis_password`, mode 0600."""
    return _generated_secret(settings.data_path / "redis_password", lambda: secrets.token_urlsafe(32))


def _runtime_file(settings: Settings) -> Path:
    return settings.data_path / "runtime.json"


def _write_runtime_file(settings: Settings, redis_url: str) -> None:
    path = _runtime_file(settings)
    path.unlink(missing_ok=True)  # a crashed run's file may exist with other permissions
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "redis_url": redis_url}))


def running_redis_url(settings: Settings) -> str | None:
    """The Redis URL in `runtime.json`; trust it only while its writer holds the data dir lock."""
    try:
        return json.loads(_runtime_file(settings).read_text())["redis_url"]
    except (OSError, ValueError, KeyError):
        return None


def _owns_local_services(settings: Settings) -> bool:
    """An embedded Redis or a local Ray lives in (or writes to) the data dir: one owner at a time."""
    return settings.embedded_redis or not settings.ray_address


@contextlib.contextmanager
def owned_data_dir(settings: Settings, announce: Callable[[str], None] = print) -> Iterator[ChildRecords]:
    """Hold the data dir lock; stop what a crashed earlier owner left running, at entry and at exit."""
    with DataDirLock(settings.data_path):
        children = ChildRecords(settings.data_path / "children.json")
        children.stop_all(announce)
        try:
            yield children
        finally:
            children.stop_all(log.warning)


@contextlib.contextmanager
def embedded_redis(settings: Settings, children: ChildRecords) -> Iterator[str]:
    """A redis-server on `<data_dir>/redis` with AOF and the generated password; stopped at exit."""
    server = RedisServer(settings.data_path / "redis", appendonly=True, password=redis_password(settings))
    with blame(f"MAILERS_DATA_DIR={settings.data_dir}", "starting the embedded redis-server"):
        server.start()
    try:
        children.add([server.process.pid])  # type: ignore[union-attr]
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """For the other commands: the configured Redis, the running server's, or a temporary embedded one."""
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    with contextlib.ExitStack() as stack:
        try:
            children = stack.enter_context(owned_data_dir(settings))
        except DataDirInUse:
            url = running_redis_url(settings)
            if url is None:  # the holder is still starting, or is another command's temporary Redis
                raise
        else:
            url = stack.enter_context(embedded_redis(settings, children))
        yield url


def with_redis(settings: Settings, run: Callable[[aioredis.Redis], Awaitable[int]]) -> int:
    """Run `run(redis)` for a CLI command: the configured Redis, the running server's (its URL carries the
    password), or a temporary embedded one under the data dir lock; a start-up failure is one line."""

    async def go(url: str) -> int:
        redis = aioredis.Redis.from_url(url)
        try:
            return await run(redis)
        finally:
            await redis.aclose()

    try:
        with redis_for(settings) as url:
            return asyncio.run(go(url))
    except StartupError as exc:
        print(f"mailers: {exc}", file=sys.stderr)
        return 1


async def serve(settings: Settings, *, announce: Callable[[str], None] = print) -> None:
    """Run until SIGTERM/SIGINT. A failure to start raises StartupError after stopping what was started."""
    check_data_dir(settings)
    settings = with_secret_key(settings)
    check_redis_server_installed(settings)
    with contextlib.ExitStack() as stack:
        children = None
        if _owns_local_services(settings):
            children = stack.enter_context(owned_data_dir(settings, announce))
        check_can_listen(settings)
        if settings.redis_url is not None:
            redis_url = settings.redis_url
            await _check_redis(redis_url)
        else:
            assert children is not None
            redis_url = stack.enter_context(embedded_redis(settings, children))
        stack.callback(_stop_ray)
        with blame("serve", "start-up"):  # the last resort: what no step below names
            runner = await _start_http(settings, redis_url, children, announce)
        try:
            _write_runtime_file(settings, redis_url)
            announce(f"Mailers listening on http://{settings.host}:{settings.port}")
            await _until_signalled()
            announce("Stopping: draining in-flight requests")
        finally:
            _runtime_file(settings).unlink(missing_ok=True)
            await runner.cleanup()


async def _check_redis(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        with blame(f"MAILERS_REDIS_URL={redacted(url)}", "connecting to Redis"):
            await client.ping()
    finally:
        await client.aclose()


async def _start_http(
    settings: Settings, redis_url: str, children: ChildRecords | None, announce: Callable[[str], None]
) -> web.AppRunner:
    """Ray and the actors, the app, the default workspace, then the listening socket."""
    from ingress.app import create_app
    from ingress.bootstrap import bootstrap
    from ingress.context import SERVICES

    gateway = await _start_actors(settings, redis_url)
    if children is not None:  # after the consumers: their actor processes are below the raylet by now
        children.add(with_descendants(_local_ray_pids()))
    app = create_app(settings, redis_url=redis_url, gateway=gateway)
    runner = http_runner(app, settings)
    await runner.setup()
    try:
        with blame(_redis_subject(settings), "creating the default workspace"):
            secret = await bootstrap(settings, app[SERVICES].workspaces, app[SERVICES].keys)
        if secret:
            announce(f"Created workspace `default` and its admin key (shown once): {secret}")
        settle_garbage_collector()
        try:
            site = CappedTCPSite(
                runner, settings.host, settings.port, max_connections=settings.max_connections
            )
            await site.start()
        except OSError as exc:
            raise listen_error(settings, exc) from exc
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _start_actors(settings: Settings, redis_url: str):
    """Ray, the actors and the consumers; a failure names RAY_ADDRESS or the analytics store."""
    from actors.gateway import Gateway

    ray_subject = f"RAY_ADDRESS={settings.ray_address}" if settings.ray_address else "RAY_ADDRESS unset"
    with blame(ray_subject, "starting Ray and the actors"):
        gateway = Gateway.start(settings, redis_url=redis_url, wait=False)
    analytics_subject = (
        f"MAILERS_ANALYTICS_URL={redacted(settings.analytics_url)}"
        if settings.analytics_url
        else f"MAILERS_DATA_DIR={settings.data_dir} (embedded DuckDB)"
    )
    with blame(analytics_subject, "starting the event and audit sinks"):
        await gateway.start_consumers()
    return gateway


def _redis_subject(settings: Settings) -> str:
    if settings.redis_url is None:
        return f"MAILERS_DATA_DIR={settings.data_dir} (embedded Redis)"
    return f"MAILERS_REDIS_URL={redacted(settings.redis_url)}"


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _stop_ray() -> None:
    from actors.gateway import Gateway

    Gateway.leave_ray()


def _local_ray_pids() -> list[int]:
    from actors.gateway import Gateway

    return Gateway.local_ray_pids()
