"""The policy package stays pure: importing it pulls in no Ray, no Redis, no network client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = [
    "addresses",
    "circuit",
    "domains",
    "quota",
    "recipient_throttle",
    "retry",
    "routing",
    "suppression",
]


def test_policies_import_no_ray_redis_or_io_clients() -> None:
    code = (
        "import sys\n"
        + "".join(f"import actors.policies.{m}\n" for m in MODULES)
        + "clients = ('ray', 'redis', 'aiohttp', 'duckdb', 'clickhouse_connect')\n"
        + "print(sorted(m for m in clients if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_no_policy_module_reads_a_clock() -> None:
    for path in (REPO / "actors" / "policies").glob("*.py"):
        source = path.read_text()
        for clock in ("time.time(", "time.monotonic(", "datetime.now(", "datetime.utcnow(", "loop.time("):
            assert clock not in source, f"{path.name} reads the clock via {clock}"
