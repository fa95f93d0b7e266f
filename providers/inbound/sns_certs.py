"""Fetching SNS signing certificates: the one I/O seam of SNS verification.

`CertFetcher` is any async callable `url -> PEM bytes`; `HttpCertFetcher` is the aiohttp one, with a
small LRU cache by URL whose entries expire after `ttl` seconds (SNS signs with a handful of long-lived
certificates, and a rotated one gets a new URL). The caller checks the URL against the operator's
`SnsTrust` before fetching; the fetcher never follows redirects, so it cannot be led away from a
trusted host. `CertUnavailable` texts are for the log: the route answers 503 with a fixed detail.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import aiohttp

from providers.inbound.errors import CertUnavailable


class CertFetcher(Protocol):
    async def __call__(self, url: str) -> bytes: ...


class HttpCertFetcher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_entries: int = 16,
        max_bytes: int = 65_536,
        timeout: float = 5.0,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ttl, self._clock = ttl, clock
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.downloads = 0

    async def __call__(self, url: str) -> bytes:
        cached = self._cache.get(url)
        if cached is not None and cached[0] > self._clock():
            self._cache.move_to_end(url)
            return cached[1]
        pem = await self._download(url)
        self._cache[url] = (self._clock() + self._ttl, pem)
        self._cache.move_to_end(url)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return pem

    async def _download(self, url: str) -> bytes:
        self.downloads += 1
        try:
            async with self._session.get(url, allow_redirects=False, timeout=self._timeout) as response:
                if response.status != 200:
                    raise CertUnavailable(f"certificate fetch answered {response.status}")
                pem = bytearray()
                async for chunk in response.content.iter_chunked(8192):
                    pem += chunk
                    if len(pem) > self._max_bytes:
                        raise CertUnavailable("certificate response too large")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CertUnavailable(f"certificate fetch failed: {exc!r}") from exc
        return bytes(pem)
