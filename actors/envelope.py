"""The one error envelope across Ray: what an actor answers instead of raising; how a client raises it.

An actor method that answers a query returns msgpack bytes of `(error, value)`: `error` is None and
`value` the answer, or `error` is a `RemoteError` and `value` None. The client decodes the pair with a
decoder built once per value type (`reply_decoder`) and `unwrap` raises the error as the exception type
it was on the actor's side, so code above the client sees the same errors it would see calling the store
in-process (the ingress maps them to 422 / 400 / 503). Errors are values, not raised exceptions, because a
raised exception crosses Ray as a pickled `RayTaskError` that callers would have to unpick.

Only the errors listed in `_KINDS` cross; anything else is a bug and is raised in the actor as usual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import msgspec

from analytics.errors import AnalyticsError, InvalidCursor, InvalidQuery, StoreUnavailable


class RemoteError(msgspec.Struct, array_like=True, frozen=True):
    kind: str  # invalid_query | invalid_cursor | unavailable
    detail: str
    pointer: str = ""
    code: str = ""


def remote_error(exc: AnalyticsError) -> RemoteError:
    """The envelope for `exc` (InvalidCursor before InvalidQuery: it is one)."""
    if isinstance(exc, InvalidCursor):
        return RemoteError("invalid_cursor", exc.detail, exc.pointer, exc.code)
    if isinstance(exc, InvalidQuery):
        return RemoteError("invalid_query", exc.detail, exc.pointer, exc.code)
    return RemoteError("unavailable", str(exc), "", "unavailable")


def raise_remote(error: RemoteError) -> NoReturn:
    """Raise `error` as the exception it was on the actor's side."""
    if error.kind == "invalid_cursor":
        raise InvalidCursor(error.detail)
    if error.kind == "invalid_query":
        raise InvalidQuery(error.pointer, error.detail, error.code or None)
    raise StoreUnavailable(error.detail)


_KINDS = (AnalyticsError,)  # the exceptions that cross as values


class Replies:
    """The actor side: encodes answers and errors. Built in the actor (encoders do not pickle)."""

    def __init__(self) -> None:
        self._encode = msgspec.msgpack.Encoder().encode

    async def answer(self, work: Awaitable[Any]) -> bytes:
        try:
            return self._encode((None, await work))
        except _KINDS as exc:
            return self._encode((remote_error(exc), None))

    async def stream(self, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        """One reply per chunk; an error ends the stream as its last reply."""
        try:
            async for chunk in chunks:
                yield self._encode((None, chunk))
        except _KINDS as exc:
            yield self._encode((remote_error(exc), None))


def reply_decoder(value_type: Any) -> Callable[[bytes], Any]:
    """Decode a reply carrying a `value_type` and return the value, or raise the error it carries."""
    decode = msgspec.msgpack.Decoder(tuple[RemoteError | None, value_type | None]).decode

    def unwrap(payload: bytes) -> Any:
        error, value = decode(payload)
        if error is not None:
            raise_remote(error)
        return value

    return unwrap
