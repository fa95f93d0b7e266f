"""`mailers campaigns watch ID`: a live progress bar of a campaign, from `GET /v1/campaigns/{id}`.

The bar counts recipients handed over (audience − remaining) out of the audience; beside it the live
counters (sent, delivered, failed, suppressed, queued) and why the campaign waits, if it does. It
polls until the campaign is finished (sent, cancelled, failed) or, with `--until-paused`, paused too.
"""

from __future__ import annotations

import asyncio

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

FINISHED = ("sent", "cancelled", "failed")


class WatchFailed(Exception):
    pass


def describe(state: dict) -> str:
    """One line of the campaign's state, as the bar's caption."""
    counters = state.get("counters", {})
    parts = [state.get("status", "?")]
    parts += [
        f"{name} {counters.get(name, 0)}" for name in ("sent", "delivered", "failed", "suppressed", "queued")
    ]
    waiting = (state.get("progress") or {}).get("waiting")
    if waiting:
        parts.append(f"waiting: {waiting}")
    return " · ".join(parts)


async def watch(
    base_url: str,
    key: str,
    campaign_id: str,
    *,
    console: Console,
    poll_seconds: float = 1.0,
    stop_on=FINISHED,
) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        with Progress(
            MofNCompleteColumn(),
            BarColumn(bar_width=30),
            TextColumn("[bold]{task.fields[name]}[/] {task.fields[caption]}"),
            console=console,
        ) as progress:
            task = progress.add_task("campaign", total=None, name=campaign_id, caption="")
            while True:
                async with session.get(f"/v1/campaigns/{campaign_id}") as response:
                    state = await response.json()
                    if response.status != 200:
                        raise WatchFailed(f"{response.status} {state.get('code')}: {state.get('detail')}")
                counters = state["counters"]
                audience = counters["audience"]
                progress.update(
                    task,
                    total=audience or None,
                    completed=audience - counters["remaining"],
                    name=state["name"],
                    caption=describe(state),
                )
                if state["status"] in stop_on:
                    return state
                await asyncio.sleep(poll_seconds)
