"""A streamed request body, counted as the handler reads it and cut off at its route's cap.

Routes that declare `streamed=True` (a CSV import of any size) read `request.content` chunk by chunk
instead of `request.read()`, which is the only reader aiohttp's own size limit guards; a chunked upload
would have no cap at all. ingress/body_admission.py puts this wrapper in place of the request's stream:
every read counts its bytes, and the one that passes the cap raises 413 `payload_too_large` to the
handler (which then fails its job) before more is buffered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import StreamReader

from ingress.problems import ApiError


class BodyTooLarge(ApiError):
    def __init__(self, cap: int) -> None:
        super().__init__("payload_too_large", f"The body passed {cap} bytes; this route takes at most {cap}")


class CountedStream:
    """Delegates to the request's StreamReader; the reading methods count what they return."""

    def __init__(self, inner: StreamReader, cap: int) -> None:
        self._inner = inner
        self.cap = cap
        self.received = 0

    def _count(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.received > self.cap:
            raise BodyTooLarge(self.cap)
        return data

    async def read(self, n: int = -1) -> bytes:
        return self._count(await self._inner.read(n))

    async def readany(self) -> bytes:
        return self._count(await self._inner.readany())

    async def readline(self) -> bytes:
        return self._count(await self._inner.readline())

    async def readexactly(self, n: int) -> bytes:
        return self._count(await self._inner.readexactly(n))

    async def readchunk(self) -> tuple[bytes, bool]:
        data, end_of_chunk = await self._inner.readchunk()
        return self._count(data), end_of_chunk

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        return _until_empty(lambda: self.read(n))

    def iter_any(self) -> AsyncIterator[bytes]:
        return _until_empty(self.readany)

    async def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        while (chunk := await self.readchunk()) != (b"", False):
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _until_empty(self.readline)

    def __getattr__(self, name: str) -> Any:  # at_eof, exception, … : not reads, nothing to count
        return getattr(self._inner, name)


async def _until_empty(read: Callable[[], Awaitable[bytes]]) -> AsyncIterator[bytes]:
    while data := await read():
        yield data
