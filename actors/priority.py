"""CPU use of long-lived processes: scheduling priority, and garbage collection.

Three tiers on a small machine where everything shares the cores:
- the ingress and Redis at the default priority (nice 0): a request is answered while a client waits;
- the send path's actors (dispatchers, suppression shards) at nice 5: behind the request path, ahead
  of everything that may lag;
- the event sink, the webhook deliverer and the audit sink at nice 15: they can fall a second behind
  without anyone noticing (the OS still gives them every idle cycle).
Ray starts workers at nice 15 unless told otherwise; the embedded default starts them at 0
(`actors/runtime.py`) and each actor takes its tier when it starts, from its constructor.

Niceness is per thread on Linux, and `os.nice` changes only the calling thread's. The constructor of an
async actor runs on the thread that then runs its event loop (Ray names it `ray::IDLE` between calls), but
by then Ray has started the process's other threads at the worker's niceness: the main thread, which
receives the actor's calls and hands them to the loop, the core worker's io thread (`worker.io`), gRPC's
pollers and timers (`client.poll0`, `server.poll0`, `nexting_thread`), … So a tier is given to every
thread of the process (`/proc/self/task`), and threads started later inherit it from the thread that
starts them (tests/actors/test_priority.py reads every thread's niceness back).
"""

from __future__ import annotations

import gc
import os

SENDING_NICENESS = 5
BACKGROUND_NICENESS = 15


def run_as_sender() -> None:
    _lower_to(SENDING_NICENESS)


def run_in_background() -> None:
    _lower_to(BACKGROUND_NICENESS)


def _lower_to(niceness: int) -> None:
    """Every thread of this process to `niceness`. Only ever lowers the priority (raising it needs
    privileges): a thread Ray already started nicer than `niceness` stays as it is."""
    lower_threads(os.getpid(), niceness)


def lower_threads(pid: int, niceness: int) -> None:
    """Every thread of process `pid` (this one, or a child of ours) to at least `niceness`.

    A thread started while the threads are listed might have been started by one not yet reniced, so the
    list is read again until it brings no thread not seen: from then on every new thread inherits the
    tier from its creator."""
    seen: set[int] = set()
    while True:
        try:
            threads = {int(tid) for tid in os.listdir(f"/proc/{pid}/task")} - seen
        except OSError:  # no /proc (not Linux), or the process is gone
            return
        if not threads:
            return
        for tid in threads:
            try:
                # PRIO_PROCESS with a thread id is that one thread on Linux (setpriority(2), NOTES).
                if niceness > os.getpriority(os.PRIO_PROCESS, tid):
                    os.setpriority(os.PRIO_PROCESS, tid, niceness)
            except OSError:  # the thread ended, or this is not permitted here: keep its priority
                pass
        seen |= threads


def settle_garbage_collector() -> None:
    """Everything loaded at start-up (Ray, the drivers: ~10^6 objects) lives as long as the process; freezing
    it spares every later full collection that scan, and a larger young generation makes collections
    rarer on the hot paths (a request, a dispatch chunk), each of which allocates a few hundred
    short-lived objects. Called once a process has imported what it needs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
