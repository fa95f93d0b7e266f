"""What `mailers serve` runs: the embedded Redis (if no URL is set), Ray, and the HTTP server.

A running server writes `runtime.json` in the data dir so other `mailers` commands on the machine use
its Redis instead of starting a second redis-server on the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from actors.priority import settle_garbage_collector
from schemas.settings import Settings
from store.redis_server import RedisServer

log = logging.getLogger("mailers")


def with_secret_key(settings: Settings) -> Settings:
    """Unset in embedded mode: generated once and kept in the data dir with mode 0600."""
    if settings.secret_key is not None:
        return settings
    from security.secretbox import generate_master_key

    path = settings.data_path / "secret_key"
    settings.data_path.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_master_key())
    return msgspec.structs.replace(settings, secret_key=path.read_text().strip())


def _runtime_file(settings: Settings) -> Path:
    return settings.data_path / "runtime.json"


def running_redis_url(settings: Settings) -> str | None:
    """The Redis URL of a `mailers serve` still running on this data dir, if any."""
    try:
        info = json.loads(_runtime_file(settings).read_text())
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return info["redis_url"]


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """The Redis to use: the configured URL, a running server's, or a temporary embedded one."""
    url = settings.redis_url or running_redis_url(settings)
    if url is not None:
        yield url
        return
    server = RedisServer(settings.data_path / "redis", appendonly=True).start()
    try:
        yield server.url
    finally:
        server.stop()


def with_redis(settings: Settings, run) -> int:
    """Run `run(redis)` against the configured Redis, a running server's, or a temporary embedded one."""

    async def go(url: str) -> int:
        redis = aioredis.Redis.from_url(url)
        try:
            return await run(redis)
        finally:
            await redis.aclose()

    with redis_for(settings) as url:
        return asyncio.run(go(url))


async def serve(settings: Settings, *, announce=print) -> None:
    from actors.gateway import Gateway
    from ingress.app import create_app
    from ingress.bootstrap import bootstrap
    from ingress.connection_limits import CappedTCPSite, http_runner
    from ingress.context import SERVICES

    settings = with_secret_key(settings)
    with redis_for(settings) as redis_url:
        gateway = Gateway.start(settings, redis_url=redis_url)
        await gateway.start_consumers()
        try:
            app = create_app(settings, redis_url=redis_url, gateway=gateway)
            runner = http_runner(app, settings)
            await runner.setup()
            services = app[SERVICES]
            secret = await bootstrap(settings, services.workspaces, services.keys)
            if secret:
                announce(f"Created workspace `default` and its admin key (shown once): {secret}")
            settle_garbage_collector()
            site = CappedTCPSite(
                runner, settings.host, settings.port, max_connections=settings.max_connections
            )
            await site.start()
            _runtime_file(settings).write_text(json.dumps({"pid": os.getpid(), "redis_url": redis_url}))
            announce(f"Mailers listening on http://{settings.host}:{settings.port}")
            await _until_signalled()
            announce("Stopping: draining in-flight requests")
            await runner.cleanup()
        finally:
            _runtime_file(settings).unlink(missing_ok=True)
            gateway.close()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
