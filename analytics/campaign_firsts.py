"""Unique opens and clicks decided when an event is stored, so the campaign report reads integers only.

A non-machine open (resp. click) of a campaign message is its message's *first* when no earlier one is
stored: the earliest by (created_at, event id) among that message's non-machine opens (resp. clicks);
a click is also the first of (message, url). The store flags those events in `events.firsts`
(FIRST_OPEN | FIRST_CLICK | FIRST_LINK) before inserting them; the aggregates (ClickHouse migration
0009, DuckDB 0006) sum the flags, so every unique count of the report is a sum. A message has one
recipient domain, provider, server and variant, so its first is also the first in each of those groups;
the timeline counts a first in the bucket of its time.

Where it is decided: `campaign_firsts`, one row per event that was ever its key's first (kind 1 open and
2 click of the (message, recipient) pair `key`, 3 click of the pair on `url`). Per batch:
1. the store keeps only the events not stored yet (`new`; replays are dropped before this);
2. `lookup_query` reads the stored rows of the batch's keys (one query, the keys as integer literals);
3. `decide` flags, per key, the batch's earliest candidate if it is earlier than the stored first not
   written by this batch's own events, and names the displaced first's time and server (`demoted_*`)
   so the timeline and the providers move its unique count to the new first's (a late arrival);
4. the store inserts the new `campaign_firsts` rows, then the events (DuckDB: all in one transaction).

Replays: an event already stored is not in `new`, so a replayed batch decides nothing. ClickHouse has
no transaction: a crash after step 4's first insert leaves rows of events not stored yet; the stored
rows of the batch's own events are left out of step 3's "stored first", so the replayed batch makes the
same decision. Gap (docs/analytics.md): two sinks inserting opens of one message at the same moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analytics.sql import Bound, Dialect

FIRST_OPEN, FIRST_CLICK, FIRST_LINK = 1, 2, 4
KIND_OPEN, KIND_CLICK, KIND_LINK = 1, 2, 3
_BIT = {KIND_OPEN: FIRST_OPEN, KIND_CLICK: FIRST_CLICK, KIND_LINK: FIRST_LINK}
_DEMOTED = {KIND_OPEN: "demoted_open", KIND_CLICK: "demoted_click"}
_OPENED, _CLICKED = "message.opened", "message.clicked"
FIRSTS_COLUMNS = (
    "workspace",
    "campaign_id",
    "kind",
    "key",
    "url",
    "provider",
    "server",
    "created_at",
    "event_id",
)

Key = tuple[str, str, int, int, str]  # workspace, campaign_id, kind, pair_hash, url


def candidates(columns: dict[str, list[Any]], rows: Sequence[int]) -> dict[Key, list[int]]:
    """Key -> the rows (indexes into `columns`) of non-machine campaign opens and clicks among `rows`."""
    found: dict[Key, list[int]] = {}
    campaign, types, machine = columns["campaign_id"], columns["type"], columns["machine_open"]
    pairs, urls, workspaces = columns["pair_hash"], columns["url"], columns["workspace"]
    for i in rows:
        type_ = types[i]
        if not campaign[i] or machine[i] or not pairs[i] or type_ not in (_OPENED, _CLICKED):
            continue
        base = (workspaces[i], campaign[i])
        found.setdefault((*base, KIND_OPEN if type_ == _OPENED else KIND_CLICK, pairs[i], ""), []).append(i)
        if type_ == _CLICKED:
            found.setdefault((*base, KIND_LINK, pairs[i], urls[i]), []).append(i)
    return found


def lookup_query(keys: Sequence[Key], dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The stored `campaign_firsts` rows of the keys' pairs: (workspace, campaign_id, kind, key, url,
    created_ms, event_id), and maybe a few more (`decide` keeps only the batch's keys). The pair hashes
    go in as integer literals (they are ours, never input): bound as an array they cost several times the
    lookup. One IN set over the batch's workspaces and campaigns rather than one condition per campaign:
    the OR of a few hundred of those cost more to analyse than the read itself."""
    bind = Bound(dialect)
    workspaces = dialect.one_of("workspace", tuple(sorted({k[0] for k in keys})), bind)
    campaigns = dialect.one_of("campaign_id", tuple(sorted({k[1] for k in keys})), bind)
    pairs = ", ".join(str(p) for p in sorted({int(k[3]) for k in keys}))
    sql = (
        f"SELECT workspace, campaign_id, kind, key, url, provider, server, {dialect.created_ms}, event_id "
        "FROM campaign_firsts "
        f"WHERE {workspaces} AND {campaigns} AND key IN ({pairs})"
    )
    return sql, bind.values


def decide(
    columns: dict[str, list[Any]], found: dict[Key, list[int]], stored: Sequence[Sequence[Any]]
) -> dict[str, list[Any]]:
    """Set `firsts` and `demoted_*` of the candidate rows in `columns` (in place); returns the new
    `campaign_firsts` rows (FIRSTS_COLUMNS, created_at in epoch ms)."""
    own = {columns["id"][i] for rows in found.values() for i in rows}
    prior: dict[Key, tuple[int, str, str, str]] = {}
    for workspace, campaign_id, kind, pair, url, provider, server, created_ms, event_id in stored:
        if event_id in own:  # written by a crashed attempt at this very batch: not a stored first
            continue
        key = (workspace, campaign_id, int(kind), int(pair), url)
        if key in found:
            moment = (int(created_ms), event_id, provider, server)
            if key not in prior or moment < prior[key]:
                prior[key] = moment
    new: dict[str, list[Any]] = {c: [] for c in FIRSTS_COLUMNS}
    ids, times, firsts = columns["id"], columns["created_at"], columns["firsts"]
    providers, servers = columns["provider"], columns["server"]
    for key, rows in found.items():
        best = min(rows, key=lambda i: (times[i], ids[i]))
        before = prior.get(key)
        if before is not None and before[:2] <= (times[best], ids[best]):
            continue
        kind = key[2]
        if kind in _DEMOTED:
            firsts[best] |= _BIT[kind]
            if before is not None:  # a late arrival: the displaced first's count moves here
                demoted = _DEMOTED[kind]
                columns[f"{demoted}_ms"][best] = before[0]
                columns[f"{demoted}_provider"][best] = before[2]
                columns[f"{demoted}_server"][best] = before[3]
        elif before is None:
            # A displaced (pair, url) first needs nothing: links have no timeline, the pair is counted.
            firsts[best] |= _BIT[kind]
        row = (*key, providers[best], servers[best], times[best], ids[best])
        for name, value in zip(FIRSTS_COLUMNS, row, strict=True):
            new[name].append(value)
    return new


def flag_batch(
    columns: dict[str, list[Any]], new_rows: Sequence[int], lookup: Any
) -> dict[str, list[Any]] | None:
    """Steps 2-3 for a batch: `lookup(sql, params)` runs `lookup_query`. Returns the `campaign_firsts`
    rows to insert (None when the batch has no candidate)."""
    found = candidates(columns, new_rows)
    if not found:
        return None
    stored = lookup(list(found))
    return decide(columns, found, stored)
