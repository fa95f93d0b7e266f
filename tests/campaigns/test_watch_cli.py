"""`mailers campaigns watch ID` in a real process against a running app while the runner sends: it
follows the campaign to the end and prints its final counters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from tests.campaigns.conftest import SCOPES, runner, smtp_campaign

MAILERS = str(Path(sys.executable).parent / "mailers")


async def test_watch_follows_a_campaign_to_the_end(client, make_key, sink):
    headers, list_id, _, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 200)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env["MAILERS_API_KEY"] = headers["Authorization"].removeprefix("Bearer ")
    env["COLUMNS"] = "200"  # rich's width off a terminal: room for the bar beside the caption
    base = str(client.make_url("/")).rstrip("/")
    stop = asyncio.Event()
    task = asyncio.create_task(runner(client, in_flight=50, chunk=25).run(stop))
    try:
        process = await asyncio.create_subprocess_exec(
            MAILERS, "campaigns", "watch", campaign_id, "--url", base, "--every", "0.2",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 180)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert process.returncode == 0, err.decode()
    assert f"campaign {campaign_id}: sent · sent 200" in out.decode()
    assert "200/200" in err.decode()  # the bar reached the audience


async def test_watch_of_an_unknown_campaign_fails_with_the_problem(client, make_key):
    headers = await make_key(SCOPES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env["MAILERS_API_KEY"] = headers["Authorization"].removeprefix("Bearer ")
    process = await asyncio.create_subprocess_exec(
        MAILERS, "campaigns", "watch", "cmp_" + "0" * 26, "--url", str(client.make_url("/")).rstrip("/"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and "404 not_found" in err.decode()
