"""CPU use of long-lived processes: the background consumers' priority, and garbage collection.

The event sink, the webhook deliverer and the audit sink can fall a second behind without anyone
noticing; the ingress and the dispatchers cannot. On a small machine they compete for the same cores,
so the consumers lower their own scheduling priority when they start (the OS still gives them every
idle cycle).
"""

from __future__ import annotations

import gc
import os

BACKGROUND_NICENESS = 10


def run_in_background() -> None:
    try:
        os.nice(BACKGROUND_NICENESS)
    except OSError:  # not permitted here: keep the default priority
        pass


def settle_garbage_collector() -> None:
    """Everything loaded at start-up (Ray, the drivers: ~10^6 objects) lives as long as the process; freezing
    it spares every later full collection that scan, and a larger young generation makes collections
    rarer on the hot paths (a request, a dispatch chunk), each of which allocates a few hundred
    short-lived objects. Called once a process has imported what it needs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
