"""`mailers import LIST_ID FILE.csv`: stream a CSV to `/v1/lists/{id}/imports`, then follow the import.

Two progress bars (rich): the upload in bytes while the file streams (read in chunks, never whole), then
the runner's processing in rows, by polling `GET /v1/lists/{id}/imports/{imp}` until it is completed or
failed. The number of lines counted during the upload stands in for the total rows (a quoted field that
spans lines makes it a little high; the bar ends at the real count).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

CHUNK_BYTES = 256 * 1024


class ImportFailed(Exception):
    pass


async def run_import(
    base_url: str, key: str, list_id: str, path: Path, *, console: Console, poll_seconds: float = 0.5
) -> dict:
    size = await asyncio.to_thread(os.path.getsize, path)
    headers = {"Authorization": f"Bearer {key}"}
    lines = 0
    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        with Progress(
            TextColumn("upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
        ) as progress:
            task = progress.add_task("upload", total=size)

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal lines
                source = await asyncio.to_thread(path.open, "rb")
                try:
                    while chunk := await asyncio.to_thread(source.read, CHUNK_BYTES):
                        lines += chunk.count(b"\n")
                        progress.update(task, advance=len(chunk))
                        yield chunk
                finally:
                    source.close()

            async with session.post(
                f"/v1/lists/{list_id}/imports", data=chunks(), headers={"Content-Type": "text/csv"}
            ) as response:
                body = await response.json()
                if response.status != 202:
                    raise ImportFailed(f"{response.status} {body.get('code')}: {body.get('detail')}")
        return await follow(session, list_id, body["id"], max(lines - 1, 1), console, poll_seconds)


async def follow(
    session: aiohttp.ClientSession, list_id: str, import_id: str, total: int, console: Console, poll: float
) -> dict:
    with Progress(TextColumn("rows"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("rows", total=total)
        while True:
            async with session.get(f"/v1/lists/{list_id}/imports/{import_id}") as response:
                state = await response.json()
            progress.update(task, completed=state.get("rows", 0))
            if state.get("status") != "running":
                progress.update(task, total=state.get("rows", 0) or total)
                return state
            await asyncio.sleep(poll)


def summary(state: dict) -> str:
    counts = ", ".join(
        f"{name} {state.get(name, 0)}" for name in ("rows", "created", "updated", "unchanged", "rejected")
    )
    line = f"import {state['id']} {state['status']}: {counts}"
    if state.get("errors_url"):
        line += f"\nrejected rows: {state['errors_url']}"
    return line
