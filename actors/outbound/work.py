"""How the send path runs its CPU-heavy steps: the ingress hands them to its worker thread
(ingress/off_loop.py) so its event loop keeps answering; an actor, which serves no requests, runs them
inline. Both pass the same signature."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

RunHeavy = Callable[..., Awaitable[Any]]  # (heavy: bool, work, *args, **kwargs) -> work's result


async def run_inline(heavy: bool, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return work(*args, **kwargs)
