"""CPU use of long-lived processes: scheduling priority, and garbage collection.

Three tiers on a small machine where everything shares the cores:
- the ingress and Redis at the default priority (nice 0): a request is answered while a client waits;
- the send path's actors (dispatchers, suppression shards) at nice 5: behind the request path, ahead
  of everything that may lag;
- the event sink, the webhook deliverer and the audit sink at nice 15: they can fall a second behind
  without anyone noticing (the OS still gives them every idle cycle).
Ray starts workers at nice 15 unless told otherwise; the embedded default starts them at 0
(`actors/runtime.py`) and each actor takes its tier when it starts. Niceness is per thread on Linux:
an actor sets it from its constructor, which runs on the thread that then runs its event loop.
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
    """Only ever lower the priority (raising it needs privileges); a worker Ray already started nicer
    than `niceness` stays as it is."""
    try:
        current = os.nice(0)
        if niceness > current:
            os.nice(niceness - current)
    except OSError:  # not permitted here: keep the priority
        pass


def settle_garbage_collector() -> None:
    """Everything loaded at start-up (Ray, the drivers: ~10^6 objects) lives as long as the process; freezing
    it spares every later full collection that scan, and a larger young generation makes collections
    rarer on the hot paths (a request, a dispatch chunk), each of which allocates a few hundred
    short-lived objects. Called once a process has imported what it needs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
