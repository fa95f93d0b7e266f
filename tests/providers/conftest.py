"""Fixtures for the provider suite: a client session, in-process servers on free ports, a webhook
receiver, and one moto server (SES) for the module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from providers.egress import provider_session
from store.redis_server import free_port
from tests.local_egress import LOCAL

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with provider_session(LOCAL) as session:
        yield session


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Runs aiohttp apps on 127.0.0.1 free ports; returns the base URL; cleans up after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        async with asyncio.timeout(within), self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests


@pytest.fixture
async def receiver(serve: Serve) -> WebhookReceiver:
    """A local endpoint that records every webhook POSTed to /hooks and answers 200."""
    state = WebhookReceiver()

    async def hook(request: web.Request) -> web.Response:
        state.requests.append(Received(dict(request.headers), await request.read()))
        async with state.arrived:
            state.arrived.notify_all()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks", hook)
    state.url = await serve(app) + "/hooks"
    return state


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
