"""`mailers import LIST_ID FILE.csv` in a real process against a running app: it streams the file,
follows the import until the runner completes it, and prints the exact counts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from actors.imports.body import ImportRunner
from tests.audience.test_subscribers_api import new_list

MAILERS = str(Path(sys.executable).parent / "mailers")


async def test_the_import_command_streams_a_file_and_reports_exact_counts(
    client, admin, redis, tmp_path
) -> None:
    lst = await new_list(client, admin)
    rows = [f"user{i}@example.com,User {i}" for i in range(5000)] + ["not-an-address,x", "USER7@example.com,"]
    path = tmp_path / "people.csv"
    path.write_text("email,name\n" + "\n".join(rows) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env["MAILERS_API_KEY"] = admin["Authorization"].removeprefix("Bearer ")
    base = str(client.make_url("/")).rstrip("/")
    stop = asyncio.Event()
    runner = asyncio.create_task(ImportRunner(redis).run(stop, idle_wait=0.05))
    try:
        process = await asyncio.create_subprocess_exec(
            MAILERS,
            "import",
            lst["id"],
            str(path),
            "--url",
            base,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert process.returncode == 0, err.decode()
    assert "completed: rows 5002, created 5000, updated 0, unchanged 1, rejected 1" in out.decode()
    assert "rejected rows: /v1/lists/" in out.decode()
    view = await (await client.get(f"/v1/lists/{lst['id']}", headers=admin)).json()
    assert view["subscriber_count"]["total"] == 5000
