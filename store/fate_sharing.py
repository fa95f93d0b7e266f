"""Children that die with their parent: PR_SET_PDEATHSIG on Linux, nothing elsewhere.

A child started in its own session (so a terminal's Ctrl-C reaches only its parent, which stops it in
order) would otherwise outlive a parent killed with SIGKILL or by the OOM killer, and keep its files open
for the next start to trip over. The kernel sends the signal when the *thread* that forked the child
exits, so start such children from a thread that lives as long as they should (the main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that has the child receive `sig` when this process dies.

    None where the OS has no such thing; the data dir lock and the child records still keep a later start
    from running beside a survivor (ingress/children.py).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(127)
        # The parent may have died between fork and prctl: then no signal will ever come.
        if os.getppid() != parent:
            os._exit(127)

    return preexec
