"""An import's life outside the happy path: an upload that died mid-body is failed after the stale
timeout (on the runner's injected clock), and its late end cannot revive it; the runner through its Ray
shell applies an import by itself."""

from __future__ import annotations

import asyncio

import msgspec

from actors.imports.body import ImportRunner
from schemas.audience import ImportRecord
from schemas.ids import new_id
from store import keyspace
from store.imports import ImportStore
from tests.audience.test_imports import import_csv
from tests.audience.test_subscribers_api import new_list

T0 = 1_750_000_000.0


async def started_upload(redis, workspace: str, list_id: str) -> ImportRecord:
    """What an ingress leaves behind when it dies after one batch: rows, no `uploaded`."""
    store = ImportStore(redis)
    record = ImportRecord(
        id=new_id("imp"), workspace=workspace, list_id=list_id, columns=["email"], created_ms=int(T0 * 1000)
    )
    await store.create(record)
    await store.append_rows(workspace, record.id, [(2, ["ana@example.com"])], [], int(T0 * 1000))
    return record


async def test_an_upload_that_dies_mid_body_is_failed_after_the_stale_timeout(
    client, admin, redis, workspace
) -> None:
    lst = await new_list(client, admin)
    record = await started_upload(redis, workspace, lst["id"])
    now = [T0 + 1]
    runner = ImportRunner(redis, clock=lambda: now[0], stale_upload_after=600)
    await runner.run_until_idle()
    store = ImportStore(redis)
    assert (await store.progress(workspace, record.id))["status"] == "uploading"  # rows applied, waiting
    now[0] = T0 + 599
    assert await runner.run_until_idle() == 0
    now[0] = T0 + 601
    assert await runner.run_until_idle() == 1
    view = await (await client.get(f"/v1/lists/{lst['id']}/imports/{record.id}", headers=admin)).json()
    assert (view["status"], view["rows"], view["created"]) == ("failed", 1, 1)
    assert await redis.scard(keyspace.IMPORTS_ACTIVE) == 0
    assert not await store.uploaded(workspace, record.id), "a late end does not revive a failed import"
    assert (await store.progress(workspace, record.id))["status"] == "failed"


async def test_the_runner_applies_an_import_through_its_ray_shell(
    ray_session, client, admin, redis, redis_url
) -> None:
    import ray

    from actors.imports.client import start_import_runner
    from schemas.settings import load_settings

    settings = load_settings({}, redis_url=redis_url, ray_namespace="mailers-test")
    handle = start_import_runner(settings, redis_url, name="import-runner-shell-test")
    try:
        assert await handle.ready.remote()
        lst = await new_list(client, admin)
        started = await import_csv(client, admin, lst["id"], "email\nana@example.com\nbo@example.org\nbad\n")
        url = f"/v1/lists/{lst['id']}/imports/{started['id']}"
        async with asyncio.timeout(30):  # the shell's own loop applies it: nothing here steps it
            while (view := await (await client.get(url, headers=admin)).json())["status"] != "completed":
                await asyncio.sleep(0.05)
        assert (view["rows"], view["created"], view["rejected"]) == (3, 2, 1)
    finally:
        await handle.shutdown.remote()
        ray.kill(handle)


async def test_rows_that_arrive_after_the_runner_read_the_import_use_its_columns(
    client, admin, redis, workspace
) -> None:
    """The upload names the columns, then appends rows; a runner step that read the import before the
    columns and its rows after them must not reject every row for want of an email column (seen once in
    CI: 4,000 of 5,002 rows rejected by one step)."""
    lst = await new_list(client, admin)
    store = ImportStore(redis)
    record = ImportRecord(
        id=new_id("imp"), workspace=workspace, list_id=lst["id"], columns=[], created_ms=int(T0 * 1000)
    )
    await store.create(record)
    runner = ImportRunner(redis, clock=lambda: T0 + 1)
    read_import = runner.imports.get

    async def upload_lands_after_the_read(workspace: str, import_id: str):
        seen = await read_import(workspace, import_id)  # before the columns: none
        uploaded = ImportRecord(**{**msgspec.structs.asdict(record), "columns": ["email"]})
        await store.set_columns(uploaded)
        await store.append_rows(workspace, import_id, [(2, ["ana@example.com"])], [], int(T0 * 1000))
        runner.imports.get = read_import  # only the first read races
        return seen

    runner.imports.get = upload_lands_after_the_read
    assert await runner.advance(workspace, record.id) == 1
    progress = await store.progress(workspace, record.id)
    assert (int(progress["created"]), int(progress["rejected"])) == (1, 0), progress
