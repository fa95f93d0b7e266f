"""The heaviest request work runs in a separate process, so it holds neither the ingress's GIL nor a core
the event loop needs (issue #11).

Profiled during the attack test (py-spy on the ingress, only the thread holding the GIL sampled), the
CPU worker thread of ingress/off_loop.py held the GIL in 85% of the samples, 94% of that in the link
tracking of a bulk (`Tracking.prepare`: ~1 s of pure Python for 1,000 messages full of links), while the
loop waited for the GIL after every `epoll` and every socket write (up to the switch interval each time,
a dozen times per request). A thread cannot fix that: whatever runs Python in the ingress process takes
the GIL from the loop. Nor can it fix the C calls that hold the GIL whole: msgspec decoding a 9 MB body
(10-130 ms, by what the bytes are) and the idempotency fingerprint of one (a generic decode and a sorted
re-encode, as long again).

So the heavy work runs here, in `PROCESSES` worker processes started with `spawn` (nothing of the
ingress's threads, Ray or sockets is inherited) at a lower CPU priority (`NICENESS`: the kernel gives
the loop the core first when both are runnable), with their garbage collector settled like the
ingress's (`_settle`):
- a heavy send, whole (ingress/send_work.py): the body's bytes go in, the finished answer comes out;
  the process decodes, validates, renders, routes, tracks and enqueues through
  `store/ledger/blocking.py`'s client. 202 still means durable: the request is answered once this
  process's enqueue script has returned;
- `decode`: the JSON decode of another route's body over `HEAVY_BODY_BYTES` (ingress/routing.py) into
  its type; the struct comes back pickled (its strings copied, its structure bounded by the schema);
- `fingerprint`: the idempotency fingerprint of a body over `HEAVY_BODY_BYTES` (ingress/idempotency.py).
Two processes: concurrent heavy requests run side by side; more queue, and the per-key heavy slots
(ingress/body_budget.py) bound how many one key can queue. Each call's CPU time in the process is
charged to the request's key (ingress/cpu_budget.py) as the worker thread's was.
`spawn` re-imports the parent's `__main__` module in the child: every entry point that builds the app
(`mailers` console script, pytest) guards its start with `if __name__ == "__main__"`; a script that
did not would start itself again. If the process dies (the OOM killer), the pool is started again on
the next call; the request that was in it is answered 503 `unavailable` (its messages may or may not be
enqueued, and a retry with the same Idempotency-Key sends nothing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import msgspec

from actors.priority import settle_garbage_collector
from ingress.cpu_budget import CURRENT_METER
from ingress.problems import ApiError

T = TypeVar("T")
# Two: concurrent bulks run side by side. With one, bulk throughput fell 15-30% against the thread design
# (4 clients 8,804-9,924 -> 6,768-7,248 msgs/s); with two, 10,036-10,681, and the attack test's p95
# 35.1-38.0 ms instead of 48.3 (idle machine).
PROCESSES = 2
NICENESS = 10  # the worker process's `nice` increment: the loop's process gets the core first
PARENT_CHECK_SECONDS = 1.0  # how soon the worker process notices the ingress is gone
# What the worker process imports before its first task, by name: ingress/send_work.py imports this module
# (through ingress/routing.py), so this module cannot import it.
PRELOAD = ("ingress.send_work", "ingress.idempotency")

_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            max_workers=PROCESSES,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(os.getpid(),),
        )
    return _pool


def start() -> None:
    """Start the processes now (the ingress's start-up), so the first heavy requests do not wait for them.
    Call it from the event loop's thread: a process dies with the thread that started it. One task each,
    submitted together: the pool starts a process only when no started one is idle."""
    pool = _executor()
    for _ in range(PROCESSES):
        pool.submit(_ready)


async def run(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)` in the worker process; its CPU time is charged to the request's meter."""
    loop = asyncio.get_running_loop()
    pool = _executor()
    try:
        result, seconds = await loop.run_in_executor(
            pool, _measured, functools.partial(work, *args, **kwargs)
        )
    except BrokenProcessPool:
        _forget(pool)
        raise ApiError(
            "unavailable",
            "The worker process stopped during this request; retry it",
            headers={"Retry-After": "1"},
        ) from None
    meter = CURRENT_METER.get()
    if meter is not None:
        meter.seconds += seconds
    return result


def _forget(pool: ProcessPoolExecutor) -> None:
    global _pool
    if _pool is pool:
        _pool = None
        pool.shutdown(wait=False, cancel_futures=True)


# What the ingress asks of the worker process (each is run there: arguments and results are pickled).


class Decoded(msgspec.Struct):
    """A body decoded in the worker process: the value, or why it is not one (ingress/routing.py)."""

    value: Any = None
    invalid: str | None = None  # msgspec's ValidationError text
    not_json: str | None = None  # msgspec's DecodeError text


_decoders: dict[Any, msgspec.json.Decoder] = {}


def decode(body_type: Any, raw: bytes) -> Decoded:
    decoder = _decoders.get(body_type)
    if decoder is None:
        decoder = _decoders[body_type] = msgspec.json.Decoder(body_type)
    try:
        return Decoded(value=decoder.decode(raw))
    except msgspec.ValidationError as exc:
        return Decoded(invalid=str(exc))
    except msgspec.DecodeError as exc:
        return Decoded(not_json=str(exc))


# In the worker process.


def _start(parent: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    _settle()
    # Die with the ingress even when it is killed outright: PR_SET_PDEATHSIG (Linux), and, since the kernel
    # sends that signal when the *thread* that started us ends, a watch on our parent too (a SIGKILLed
    # `mailers serve` left this process behind without it).
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    # The parent is named by the ingress: it may have died while this process was starting.
    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _settle() -> None:
    """Import what the tasks need, then set it aside from the garbage collector (actors/priority.py): a
    bulk allocates ~10^5 objects, and with Python's default thresholds the collections it set off (full
    ones over every module's objects among them) took ~20% of its time here (py-spy)."""
    for name in PRELOAD:
        importlib.import_module(name)
    settle_garbage_collector()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _ready() -> None:
    return None


def _measured(work: Callable[[], T]) -> tuple[T, float]:
    started = time.process_time()
    result = work()
    return result, time.process_time() - started
