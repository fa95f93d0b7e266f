"""Fetching SNS signing certificates: the one I/O seam of SNS verification.

`CertFetcher` is any async callable `url -> PEM bytes`; `HttpCertFetcher` is the aiohttp one, with a
small LRU cache (SNS signs with a handful of long-lived certificates). The caller checks the URL
against `SnsTrust` before fetching; the fetcher never follows redirects, so it cannot be led away
from a trusted host.
"""

from __future__ import annotations

from collections import OrderedDict
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
    ) -> None:
        self._session = session
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    async def __call__(self, url: str) -> bytes:
        pem = self._cache.get(url)
        if pem is not None:
            self._cache.move_to_end(url)
            return pem
        pem = await self._download(url)
        self._cache[url] = pem
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return pem

    async def _download(self, url: str) -> bytes:
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
