"""One HTTP POST per attempt, through the SSRF guard, with every failure turned into an `AttemptOutcome`.

The URL is checked again before each attempt (literal IP hosts never reach a resolver) and names are
resolved through `GuardedResolver` at every connection (DNS rebinding). Redirects are not followed:
a 3xx is a failed attempt. The one shared session keeps connections to busy endpoints alive.
"""

from __future__ import annotations

import time

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver

from security.ssrf import ForbiddenUrl, GuardedResolver, check_webhook_url

USER_AGENT = "Mailers-Webhooks/1"
MAX_ERROR_CHARS = 300


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    status_code: int | None
    latency_ms: float
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(
        self,
        *,
        timeout: float,
        allow_private: bool,
        allow_http: bool,
        connections: int = 256,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.resolver = resolver  # the name lookup under the guard (tests pass a fixed table)
        self.allow_private = allow_private
        self.allow_http = allow_http
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(allow_private=self.allow_private, resolver=self.resolver),
                limit=self.connections,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptOutcome:
        await self.start()
        assert self._session is not None
        started = time.perf_counter()
        try:
            check_webhook_url(url, allow_http=self.allow_http, allow_private=self.allow_private)
            async with self._session.post(
                url,
                data=body,
                allow_redirects=False,
                headers={**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT},
            ) as response:
                status = response.status
            error = None if 200 <= status < 300 else f"HTTP {status}"
            return AttemptOutcome(status_code=status, latency_ms=_since(started), error=error)
        except ForbiddenUrl as exc:
            return AttemptOutcome(
                status_code=None, latency_ms=_since(started), error=f"{exc.code}: {exc.detail}"
            )
        except TimeoutError:
            return AttemptOutcome(
                status_code=None, latency_ms=_since(started), error=f"timeout after {self.timeout:g} s"
            )
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return AttemptOutcome(
                status_code=None, latency_ms=_since(started), error=f"connection failed: {detail}"
            )
        except (
            Exception
        ) as exc:  # an attempt must end as an outcome, or its delivery would wait for its lease
            detail = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return AttemptOutcome(
                status_code=None, latency_ms=_since(started), error=f"request failed: {detail}"
            )


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
