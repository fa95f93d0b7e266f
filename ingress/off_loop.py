"""CPU-heavy request work runs on one worker thread, so the event loop keeps answering meanwhile.

Validating and tracking a bulk of 1,000 messages, or rewriting the links of a large HTML body, is
pure-Python work of tens to hundreds of milliseconds; on the loop it would delay every other request
(`/healthz` included) by as much. On a thread, the interpreter hands the GIL back to the loop every
switch interval, so other requests wait at most that long per step. The interval is 1 ms in the ingress
(`share_the_gil`) instead of Python's 5 ms: a request waits for the GIL at every return from the
selector (reading the request, each Redis reply), so with a bulk running the 5 ms default added up to
20 ms to a small send; measured (bench --phases attack) it halved the normal client's p95.
One worker, not a pool: heavy requests queue behind each other instead of competing with the loop for the GIL.
Light work (a single small send) stays on the loop: a thread hop costs more than it does.

What holds the GIL longest, a heavy send whole (decode, validation, routing, link tracking, enqueue) and
the JSON decode of another route's large body, runs in the worker process instead
(ingress/worker_process.py, ingress/send_work.py): a thread still takes the GIL from the loop for up to
the switch interval at every step. What stays here: template compiles, and the item encoding of a light
send that a template rendered heavy.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ingress.cpu_budget import CURRENT_METER, CpuMeter
from schemas.messages import OutboundMessage

T = TypeVar("T")
HEAVY_ITEMS = 20  # more messages than this in one request
HEAVY_HTML_CHARS = 32 * 1024  # more tracked HTML than this in one request
# More content (html, text, attachments) than this in one request: its messages are encoded and written
# to Redis from the worker process (store/ledger/blocking.py), whatever else it holds. The ledger stages
# payloads over 64 KiB; the fields this does not count (addresses, headers, metadata) are bounded well
# below that.
HEAVY_CONTENT_CHARS = 64 * 1024
HEAVY_BODY_BYTES = 256 * 1024  # a body larger than this makes its request heavy (ingress/body_admission.py)

SWITCH_INTERVAL_SECONDS = 0.001

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailers-cpu")


def content_chars(message: OutboundMessage) -> int:
    """A lower bound of the message's encoded size: its html and text characters, its attachments' bytes."""
    size = len(message.html or "") + len(message.text or "")
    return size + sum(len(a.content) for a in message.attachments)


def share_the_gil() -> None:
    """Make the worker thread hand the GIL back to the event loop within 1 ms (process-wide)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


async def run_heavy(heavy: bool, work: Callable[..., T], *args, **kwargs) -> T:
    if not heavy:
        return work(*args, **kwargs)
    loop = asyncio.get_running_loop()
    timed = functools.partial(_timed, CURRENT_METER.get(), functools.partial(work, *args, **kwargs))
    return await loop.run_in_executor(_worker, timed)


def _timed(meter: CpuMeter | None, work: Callable[[], T]) -> T:
    """Run `work`, adding the CPU this thread spent on it (what the GIL was taken for) to the request's
    meter, failed work included; ingress/body_admission.py charges it to the key (ingress/cpu_budget.py).
    """
    started = time.thread_time()
    try:
        return work()
    finally:
        if meter is not None:
            meter.seconds += time.thread_time() - started
