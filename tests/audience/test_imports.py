"""CSV imports: streamed upload, the runner's exact counts with bad rows, duplicates and mixed case,
idempotent re-application, line numbers of rejected rows."""

from __future__ import annotations

import pytest

from actors.imports.body import ImportRunner
from ingress.csv_upload import CsvChunker, parse_records
from store import keyspace
from store.compare_apply import EntryGone
from tests.audience.test_subscribers_api import new_list

CSV = (
    "Email,Name,plan\r\n"
    "ana@example.com,Ana,pro\r\n"
    "not-an-address,Nobody,free\r\n"
    'BO@Example.org,"Bo, the ""second""\nline",free\r\n'
    "\r\n"
    "ANA@EXAMPLE.COM,,team\r\n"
    "cy@example.net,Cy\r\n"
    "dee@example.net,Dee,free\r\n"
)


async def import_csv(client, headers, list_id: str, body: str) -> dict:
    response = await client.post(
        f"/v1/lists/{list_id}/imports", data=body.encode(), headers={**headers, "Content-Type": "text/csv"}
    )
    assert response.status == 202, await response.text()
    return await response.json()


async def test_import_counts_are_exact_and_rerun_changes_nothing(client, admin, redis) -> None:
    lst = await new_list(client, admin)
    started = await import_csv(client, admin, lst["id"], CSV)
    assert started["status"] == "running" and started["id"].startswith("imp_")
    await ImportRunner(redis).run_until_idle()
    done = await (await client.get(f"/v1/lists/{lst['id']}/imports/{started['id']}", headers=admin)).json()
    assert done["status"] == "completed"
    assert {k: done[k] for k in ("rows", "created", "updated", "unchanged", "rejected")} == {
        "rows": 6,
        "created": 3,
        "updated": 1,
        "unchanged": 0,
        "rejected": 2,
    }
    errors = await (await client.get(done["errors_url"], headers=admin)).json()
    assert [(e["line"], e["code"]) for e in errors["data"]] == [
        (3, "invalid_email"),
        (8, "wrong_column_count"),
    ]
    assert await redis.scard(keyspace.IMPORTS_ACTIVE) == 0

    again = await import_csv(client, admin, lst["id"], CSV)
    await ImportRunner(redis).run_until_idle()
    rerun = await (await client.get(f"/v1/lists/{lst['id']}/imports/{again['id']}", headers=admin)).json()
    # Only ana changes on the re-run: her two rows disagree (pro, then team), so each applies in turn;
    # the end state is the first run's.
    assert (rerun["created"], rerun["updated"], rerun["unchanged"], rerun["rejected"]) == (0, 2, 2, 2)
    count = await (await client.get(f"/v1/lists/{lst['id']}", headers=admin)).json()
    assert count["subscriber_count"]["total"] == 3
    [bo] = (
        await (
            await client.get(f"/v1/lists/{lst['id']}/subscribers?email=bo@example.org", headers=admin)
        ).json()
    )["data"]
    assert bo["name"] == 'Bo, the "second"\nline' and bo["attributes"] == {"plan": "free"}
    [ana] = (
        await (
            await client.get(f"/v1/lists/{lst['id']}/subscribers?email=ana@example.com", headers=admin)
        ).json()
    )["data"]
    assert ana["attributes"] == {"plan": "team"} and ana["name"] == "Ana"


async def test_a_bad_header_fails_the_import(client, admin) -> None:
    lst = await new_list(client, admin)
    response = await client.post(
        f"/v1/lists/{lst['id']}/imports",
        data=b"name,Bad Column\nx,y\n",
        headers={**admin, "Content-Type": "text/csv"},
    )
    assert response.status == 422
    wrong_type = await client.post(f"/v1/lists/{lst['id']}/imports", json={"a": 1}, headers=admin)
    assert wrong_type.status == 415


async def test_applying_an_entry_twice_counts_it_once(client, admin, redis) -> None:
    """A crash after the rows were written but before the entry was deleted cannot happen (one script);
    re-applying the same rows as a new entry finds them unchanged."""
    lst = await new_list(client, admin)
    started = await import_csv(client, admin, lst["id"], "email\na@example.com\nb@example.com\n")
    runner = ImportRunner(redis)
    [(workspace, import_id)] = await runner.imports.active()
    entry = await runner.imports.next_entry(workspace, import_id)
    record = await runner.imports.get(workspace, import_id)
    target = await runner.lists.get(workspace, lst["id"])
    await runner.apply(record, target, *entry)
    await runner.imports.append_rows(workspace, import_id, entry[1], [], 0)  # the same rows once more
    await runner.run_until_idle()
    done = await (await client.get(f"/v1/lists/{lst['id']}/imports/{started['id']}", headers=admin)).json()
    assert (done["rows"], done["created"], done["unchanged"]) == (4, 2, 2)


def test_chunker_keeps_quoted_newlines_and_line_numbers_across_chunks() -> None:
    chunker = CsvChunker(max_line=40)
    text = 'email,name\na@x.io,"two\nlines"\n' + "b@x.io," + "y" * 60 + "\nc@x.io,C\n"
    for i in range(0, len(text), 3):
        chunker.feed(text[i : i + 3])
    chunker.finish()
    records, too_long = chunker.take()
    assert [(n, cells) for n, cells in parse_records(records)] == [
        (1, ["email", "name"]),
        (2, ["a@x.io", "two\nlines"]),
        (5, ["c@x.io", "C"]),
    ]
    assert too_long == [4]


async def test_two_runners_reading_the_same_entry_count_it_once(client, admin, redis) -> None:
    """Two runners (a restarted one beside its old self, or a test's beside the session's actor) that
    read the same entry: the second finds it applied and deleted, and neither re-plans nor re-counts."""
    lst = await new_list(client, admin)
    started = await import_csv(client, admin, lst["id"], "email\na@example.com\nb@example.com\n")
    first, second = ImportRunner(redis), ImportRunner(redis)
    [(workspace, import_id)] = await first.imports.active()
    entry = await first.imports.next_entry(workspace, import_id)
    record = await first.imports.get(workspace, import_id)
    target = await first.lists.get(workspace, lst["id"])
    await second.apply(record, target, *entry)
    with pytest.raises(EntryGone):
        await first.apply(record, target, *entry)
    await first.run_until_idle()
    done = await (await client.get(f"/v1/lists/{lst['id']}/imports/{started['id']}", headers=admin)).json()
    assert (done["status"], done["rows"], done["created"], done["unchanged"]) == ("completed", 2, 2, 0)


def _line_by_line(text: str, max_line: int) -> tuple[list, list]:
    """The chunker's general path alone: each line taken on its own."""
    chunker = CsvChunker(max_line=max_line)
    *lines, chunker._partial = text.split("\n")
    for line in lines:
        chunker._take(line + "\n")
    chunker.finish()
    return chunker.take()


def test_the_quote_free_fast_path_gives_what_the_line_by_line_path_gives() -> None:
    """Chunks without a quote are taken in one pass; with quotes, over-long lines, an unfinished record or
    a chunk boundary anywhere, the records, line numbers and over-long lines are the same."""
    import random

    rng = random.Random(12)
    parts = [
        "email,name\n",
        *(f"p{i}@example.com,Person {i}\n" for i in range(300)),
        'q@example.com,"Quoted, with\na newline"\n',
        "long@example.com," + "x" * 80 + "\n",
        *(f"r{i}@example.com,R {i}\n" for i in range(200)),
        '"unfinished@example.com,"a\n',
        "\n",
        *(f"s{i}@example.com,S {i}\n" for i in range(100)),
        '"\n',
        "tail@example.com,no newline at the end",
    ]
    text = "".join(parts)
    expected = _line_by_line(text, max_line=64)
    for _ in range(30):
        chunker, at = CsvChunker(max_line=64), 0
        while at < len(text):
            step = rng.choice([1, 7, 50, 400, 5000])
            chunker.feed(text[at : at + step])
            at += step
        chunker.finish()
        assert chunker.take() == expected
