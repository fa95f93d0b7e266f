"""The import runner's batching: several entries per script, the next batch staged while the previous
script runs. Counts and line numbers stay exact, a batch staged on reads its predecessor then changed
re-plans, and a batch with an entry another runner applied applies nothing. `row_items` (the fast
row path) agrees with `row_item` row by row."""

from __future__ import annotations

import gc

import msgspec
import pytest

from actors.imports.body import BATCHES_PER_STEP, ENTRIES_PER_BATCH, ImportRunner, paused_collector
from schemas.audience import RowError, SubscriberInput, SubscriberRecord
from schemas.domain_names import normalise_email
from schemas.subscriber_items import _NOT_IN_LOCAL, normal_address, row_item, row_items
from store import keyspace
from store.compare_apply import Batch, EntryGone
from store.script_call import PendingReply
from tests.audience.test_imports import import_csv
from tests.audience.test_subscribers_api import events, new_list

ENTRY_COUNT = ENTRIES_PER_BATCH * BATCHES_PER_STEP  # one step: two batches, the second staged early


async def started_import(client, admin, redis) -> tuple[ImportRunner, str, str, str]:
    """An import whose upload is done (one header-only body); entries are then appended by the test."""
    lst = await new_list(client, admin)
    started = await import_csv(client, admin, lst["id"], "email,name,plan\n")
    runner = ImportRunner(redis)
    [(workspace, import_id)] = await runner.imports.active()
    assert import_id == started["id"]
    return runner, workspace, import_id, lst["id"]


def entry(first_line: int, emails: list[str], plan: str) -> list[tuple[int, list[str]]]:
    return [(first_line + i, [email, "", plan]) for i, email in enumerate(emails)]


async def test_one_step_applies_two_batches_of_entries_with_exact_counts_and_lines(
    client, admin, redis
) -> None:
    runner, workspace, import_id, list_id = await started_import(client, admin, redis)
    line = 2
    for n in range(ENTRY_COUNT):
        rows = entry(line, [f"p{n}-{i}@example.com" for i in range(3)], "pro")
        rows.append((line + 3, ["bad address", "", "x"]))
        await runner.imports.append_rows(workspace, import_id, rows, [], 0)
        line += 4
    applied = count_applies(runner)
    assert await runner.step() == ENTRY_COUNT  # every entry in one step, one script per batch
    assert applied == [ENTRIES_PER_BATCH] * BATCHES_PER_STEP
    assert await redis.xlen(keyspace.import_rows(workspace, import_id)) == 0
    await runner.run_until_idle()
    progress = await runner.imports.progress(workspace, import_id)
    assert progress == {
        "status": "completed",
        "rows": 4 * ENTRY_COUNT,
        "created": 3 * ENTRY_COUNT,
        "updated": 0,
        "unchanged": 0,
        "rejected": ENTRY_COUNT,
    }
    errors = await runner.imports.errors(workspace, import_id, start=0, count=100)
    assert [e.line for e in errors] == [5 + 4 * n for n in range(ENTRY_COUNT)]
    count = await (await client.get(f"/v1/lists/{list_id}", headers=admin)).json()
    assert count["subscriber_count"]["subscribed"] == 3 * ENTRY_COUNT


async def test_a_batch_staged_before_the_previous_one_landed_re_plans(client, admin, redis) -> None:
    """The same address in the first and the second batch of a step: the second was read before the
    first's script created it, so its checks fail and it re-plans onto the created record (an update,
    not a second subscriber)."""
    runner, workspace, import_id, list_id = await started_import(client, admin, redis)
    for n in range(ENTRY_COUNT):
        plan = "team" if n == ENTRIES_PER_BATCH else "pro"
        emails = ["same@example.com"] if n in (0, ENTRIES_PER_BATCH) else [f"other{n}@example.com"]
        await runner.imports.append_rows(workspace, import_id, entry(2 + n, emails, plan), [], 0)
    applied = count_applies(runner)
    await runner.step()
    # one script per batch, and one more: the second batch's first script found a change
    assert applied == [ENTRIES_PER_BATCH] * (BATCHES_PER_STEP + 1)
    await runner.run_until_idle()
    progress = await runner.imports.progress(workspace, import_id)
    assert (progress["created"], progress["updated"], progress["rows"]) == (ENTRY_COUNT - 1, 1, ENTRY_COUNT)
    same_id = await redis.hget(keyspace.subscriber_emails(workspace), "same@example.com")
    record = msgspec.msgpack.decode(
        await redis.hget(keyspace.subscribers(workspace), same_id), type=SubscriberRecord
    )
    assert record.attributes == {"plan": "team"} and record.version == 3
    kinds = [e.type for e in await events(redis) if e.type.startswith("subscriber.")]
    assert kinds.count("subscriber.created") == ENTRY_COUNT - 1 and kinds.count("subscriber.updated") == 1


async def test_a_batch_with_an_entry_another_runner_applied_applies_nothing(client, admin, redis) -> None:
    runner, workspace, import_id, list_id = await started_import(client, admin, redis)
    for n in range(ENTRIES_PER_BATCH):
        await runner.imports.append_rows(
            workspace, import_id, entry(2 + n, [f"e{n}@example.com"], "pro"), [], 0
        )
    entries = await runner.imports.next_entries(workspace, import_id, ENTRIES_PER_BATCH)
    record = await runner.imports.get(workspace, import_id)
    target = await runner.lists.get(workspace, list_id)
    other = ImportRunner(redis)
    await other.apply(record, target, *entries[2])  # a second runner applies one entry of the batch
    staged = await runner.stage(record, target, entries)
    with pytest.raises(EntryGone):
        await runner.subscribers.commit(staged)
    progress = await runner.imports.progress(workspace, import_id)
    assert (progress["rows"], progress["created"]) == (1, 1)  # only the other runner's entry
    await runner.run_until_idle()  # the rest is applied once, by a fresh read
    progress = await runner.imports.progress(workspace, import_id)
    assert (progress["status"], progress["rows"], progress["created"]) == ("completed", 4, 4)


def count_applies(runner: ImportRunner) -> list[int]:
    """The entries each compare-and-apply script of `runner` carried (observed, not replaced): every
    script is sent through `CompareAndApply.send`, pipelined or not."""
    applied: list[int] = []
    apply = runner.subscribers.apply
    original = apply.send

    async def observed(batch: Batch) -> PendingReply | None:
        applied.append(len(batch.entries))
        return await original(batch)

    apply.send = observed  # type: ignore[method-assign]
    return applied


ROWS = [
    (2, ["Ana@Example.com", " Ana ", "pro"]),
    (3, ["  ", "", ""]),
    (4, ["bo@example.com", "", ""]),
    (5, ["no-at-sign", "x", "y"]),
    (6, ["a b@example.com", "x", "y"]),
    (7, ["cy@example.com", "n" * 201, "y"]),
    (8, ["cy@example.com", "n" * 200, "y" * 1000]),
    (9, ["cy@example.com", "", "y" * 1001]),
    (10, ["c@", "", ""]),
    (11, ["x" * 321 + "@example.com", "", ""]),
    (12, ["dee@example.com", "Dee"]),
    (13, ["dee@example.com", "Dee", "a", "b"]),
    (14, ["", "Nobody", "free"]),
    (15, ["Ed@Example.COM", "", " spaced "]),
]


@pytest.mark.parametrize(
    "columns",
    [["email", "name", "plan"], ["name", "email", "plan"], ["plan", "email", "name"], ["email", "plan", "x"]],
)
def test_the_fast_row_path_agrees_with_row_item_row_by_row(columns: list[str]) -> None:
    order = {"email": 0, "name": 1, "plan": 2, "x": 1}
    rows = [(line, [cells[order[c]] for c in columns] if len(cells) == 3 else cells) for line, cells in ROWS]
    items, errors, counted = row_items(columns, rows)
    expected = [row_item(columns, line, cells) for line, cells in rows]
    assert counted == sum(1 for e in expected if e is not None)
    assert items == [e for e in expected if isinstance(e, SubscriberInput)]
    assert errors == [e for e in expected if isinstance(e, RowError)]
    assert len(items) >= 4 and len(errors) >= 6


def _reference_address(email: str) -> str | None:
    """What `normalised` accepted before the domain cache: `normalise_email`, then the two checks."""
    try:
        normal = normalise_email(email)
    except ValueError:
        return None
    local, _, domain = normal.rpartition("@")
    return None if "." not in domain or not _NOT_IN_LOCAL.isdisjoint(local) else normal


@pytest.mark.parametrize(
    "email",
    [
        "Ana@Example.COM",
        " ana@example.com ",
        "ana@EXAMPLE.com.",
        "a@b@example.com",
        "ana@localhost",
        "@example.com",
        "ana@",
        "ana",
        "a b@example.com",
        'a"b@example.com',
        "ana@münchen.DE",
        "ana@xn--mnchen-3ya.de",
        "ana@exa..mple.com",
        "ana@" + "x" * 64 + ".com",
        "ÀNA@Example.com",
        "ana@İstanbul.com",
    ],
)
def test_the_cached_address_normalisation_agrees_with_normalise_email(email: str) -> None:
    for _ in range(2):  # the second time from the domain cache
        assert normal_address(email) == _reference_address(email)


def record_sends(runner: ImportRunner) -> list[str]:
    """What the runner sends to Redis, in order: `read <first address's prefix>` or `write`."""
    sent: list[str] = []
    store = runner.subscribers
    send_read, send_write = store._send_read, store.apply.send

    async def read(workspace: str, emails: list[str]):
        sent.append(f"read {emails[0].split('-')[0]}")
        return await send_read(workspace, emails)

    async def write(batch: Batch) -> PendingReply | None:
        sent.append("write")
        return await send_write(batch)

    store._send_read = read  # type: ignore[method-assign]
    store.apply.send = write  # type: ignore[method-assign]
    return sent


async def test_batches_are_pipelined_with_reads_ahead_of_writes_or_no_reads_at_all(
    client, admin, redis
) -> None:
    """A first import creates everyone: its batches are planned without a read (each script checks that
    none of its addresses exists). The same file again finds them all: the first batch's unread plan
    fails its checks and re-plans on a read, and from then on batch k+1's read goes out before batch k's
    write (so it is not queued behind that script) and is planned while the write runs. Counts exact."""
    runner, workspace, import_id, list_id = await started_import(client, admin, redis)

    async def append_all() -> None:
        for n in range(ENTRY_COUNT):
            rows = entry(2 + 2 * n, [f"q{n}-a@example.com", f"q{n}-b@example.com"], "pro")
            await runner.imports.append_rows(workspace, import_id, rows, [], 0)

    await append_all()
    sent = record_sends(runner)
    await runner.step()
    assert sent == ["write"] * BATCHES_PER_STEP
    sent.clear()
    await append_all()
    await runner.step()
    first = [f"read q{ENTRIES_PER_BATCH * k}" for k in range(BATCHES_PER_STEP)]
    assert sent == [
        "write",  # batch 0 planned as new: its checks fail
        first[0],  # … so it reads and re-plans
        "write",
        first[2],  # batch 2's read, ahead of batch 1's write (batch 1 was planned as new: re-plans)
        "write",
        first[1],
        "write",
        first[3],  # batch 3's read ahead of batch 2's write
        "write",
        "write",
    ]
    await runner.run_until_idle()
    progress = await runner.imports.progress(workspace, import_id)
    assert progress["status"] == "completed"
    assert (progress["rows"], progress["created"], progress["unchanged"]) == (
        4 * ENTRY_COUNT,
        2 * ENTRY_COUNT,
        2 * ENTRY_COUNT,
    )


def test_the_collector_pause_of_a_step_ends_with_it_even_when_it_fails() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_collector():
        assert not gc.isenabled()
        with paused_collector():  # nested (a second step meanwhile) leaves it to the outer one
            pass
        assert not gc.isenabled()
        raise RuntimeError("the step failed")
    assert gc.isenabled()
