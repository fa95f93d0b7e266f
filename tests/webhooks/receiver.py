"""A real HTTP receiver on 127.0.0.1 that records every delivery and answers as a test tells it to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
from aiohttp import web


class Received(msgspec.Struct):
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict:
        return msgspec.json.decode(self.body)


class Receiver:
    """`answer(webhook_id, attempt_number)` decides each status (default: 200)."""

    def __init__(
        self, answer: Callable[[str, int], int] | None = None, gate: asyncio.Event | None = None
    ) -> None:
        self.answer = answer or (lambda _id, _n: 200)
        self.gate = gate  # when set, every request waits for it before answering
        self.concurrent = self.max_concurrent = 0
        self.received: list[Received] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.gate is not None:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            try:
                await self.gate.wait()
            finally:
                self.concurrent -= 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        attempt = 1 + sum(1 for r in self.received if r.webhook_id == headers.get("webhook-id"))
        status = self.answer(headers.get("webhook-id", ""), attempt)
        self.received.append(Received(headers, body, status, time.time()))
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status, text="ok")

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def delivered_ids(self) -> set[str]:
        return {r.webhook_id for r in self.delivered()}

    async def wait_for(self, condition: Callable[[Receiver], bool], within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(lambda: condition(self))
