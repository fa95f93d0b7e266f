"""CPU-heavy request work runs on one worker thread, so the event loop keeps answering meanwhile.

Validating and tracking a bulk of 1,000 messages, or rewriting the links of a large HTML body, is
pure-Python work of tens to hundreds of milliseconds; on the loop it would delay every other request
(`/healthz` included) by as much. On a thread, the interpreter hands the GIL back to the loop every
switch interval (5 ms), so other requests wait at most that long per step. One worker, not a pool:
heavy requests queue behind each other instead of competing with the loop for the GIL.
Light work (a single small send) stays on the loop: a thread hop costs more than it does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
HEAVY_ITEMS = 20  # more messages than this in one request
HEAVY_HTML_CHARS = 32 * 1024  # more tracked HTML than this in one request

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailers-cpu")


async def run_heavy(heavy: bool, work: Callable[..., T], *args, **kwargs) -> T:
    if not heavy:
        return work(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_worker, functools.partial(work, *args, **kwargs))
