"""Scratch directories of the benchmarks: made under the system temp dir and removed when the bench
process exits (normally or by an exception, Ctrl-C included), so that runs do not pile up data dirs of
hundreds of MB each. `MAILERS_BENCH_KEEP=1` keeps them (to look at a run's Redis or analytics files)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("MAILERS_BENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, path, True)
    return path
