"""The policy package stays pure: importing it pulls in no Ray, no Redis, no network client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = [
    "actors.policies.circuit",
    "actors.policies.quota",
    "actors.policies.recipient_throttle",
    "actors.policies.retry",
    "actors.policies.routing",
    "actors.policies.suppression",
    # moved down to schemas/ (every layer uses them); still pure policy
    "schemas.addresses",
    "schemas.address_grammar",
    "schemas.domain_names",
]


def test_policies_import_no_ray_redis_or_io_clients() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "clients = ('ray', 'redis', 'aiohttp', 'duckdb', 'clickhouse_connect')\n"
        + "print(sorted(m for m in clients if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_no_policy_module_reads_a_clock() -> None:
    paths = [*(REPO / "actors" / "policies").glob("*.py")]
    paths += [REPO / "schemas" / f"{name}.py" for name in ("addresses", "address_grammar", "domain_names")]
    for path in paths:
        source = path.read_text()
        for clock in ("time.time(", "time.monotonic(", "datetime.now(", "datetime.utcnow(", "loop.time("):
            assert clock not in source, f"{path.name} reads the clock via {clock}"
