"""Slow and numerous clients (slowloris): a header-read timeout, a body-read timeout, a connection cap.

- Headers: aiohttp closes a connection whose handler is still waiting for a request's complete headers
  `keepalive_timeout` after the connection opened or after its previous answer, however many bytes
  trickle in meanwhile; `http_runner` sets it to `header_read_timeout_seconds`.
- Body: `body_deadline` gives each request's body `body_read_timeout_seconds` from the moment its
  headers were parsed. When the deadline passes with the body incomplete, the body stream fails, so
  whatever is reading it (JSON, a form, a multipart reader) stops at once; the answer is 408
  `request_timeout` and the connection is closed.
- Connections: `CappedTCPSite` refuses a connection beyond `max_connections` with a bare 503 and
  closes it before reading anything, so idle sockets cannot pile up to the process's file limit.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from ingress.context import REQUEST_ID, SERVICES
from ingress.problems import ApiError, error_response
from schemas.settings import Settings

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class BodyTimeout(Exception):
    """Raised into a request's body stream when its read deadline passes."""


@web.middleware
async def body_deadline(request: web.Request, handler) -> web.StreamResponse:
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    seconds = request.app[SERVICES].settings.body_read_timeout_seconds
    timer = asyncio.get_running_loop().call_later(seconds, _expire, request.content)
    try:
        return await handler(request)
    except BodyTimeout:
        timeout = ApiError("request_timeout", f"The request body did not arrive within {seconds:g} s")
        response = error_response(timeout, request[REQUEST_ID])
        response.force_close()
        return response
    finally:
        timer.cancel()


def _expire(body) -> None:
    if not body.is_eof():
        body.set_exception(BodyTimeout())


def http_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    return web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_grace_seconds,
        keepalive_timeout=settings.header_read_timeout_seconds,
        access_log=None,
    )


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_REFUSED)  # type: ignore[attr-defined]
        transport.close()


class CappedTCPSite(web.TCPSite):
    """A TCPSite whose protocol factory refuses connections beyond `max_connections` (0: no cap)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, host, port)
        self.max_connections = max_connections
        self.sock = sock  # already bound (`ingress.startup.reserve_listen_address`): listen on it

    async def start(self) -> None:
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            if self.max_connections and len(server.connections) >= self.max_connections:
                return _Refuse()
            return server()

        # TCPSite.start with the factory wrapped; BaseSite.start registers the site with its runner.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(protocol, sock=self.sock)
        else:
            self._server = await loop.create_server(
                protocol,
                self._host,
                self._port,
                reuse_address=self._reuse_address,
                reuse_port=self._reuse_port,
            )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
