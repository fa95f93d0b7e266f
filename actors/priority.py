"""CPU priority of the background consumers.

The event sink, the webhook deliverer and the audit sink can fall a second behind without anyone
noticing; the ingress and the dispatchers cannot. On a small machine they compete for the same cores,
so the consumers lower their own scheduling priority when they start (the OS still gives them every
idle cycle).
"""

from __future__ import annotations

import os

BACKGROUND_NICENESS = 10


def run_in_background() -> None:
    try:
        os.nice(BACKGROUND_NICENESS)
    except OSError:  # not permitted here: keep the default priority
        pass
