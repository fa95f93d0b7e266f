"""The archive of a packed campaign's settled messages (store/ledger/archive.py, packed by
actors/campaigns/archiver.py): a bucket of 128 positions in one compressed string instead of a hash each.
Everything that read the hashes reads the same from the archive (the message view, the list and its
filters, tracking, provider events), a late event restores the message's hash first, and a position in an
archived bucket is never enqueued again."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
from datetime import UTC, datetime

import pytest

from actors.campaigns import archiver as archiver_module
from actors.campaigns.archiver import committed, whole_buckets
from actors.campaigns.body import message_id_at
from schemas.messages import Address, OutboundMessage
from schemas.provider_events import ProviderEvent
from store import keyspace
from store.campaigns import CampaignStore
from store.inbound_events import InboundRecorder
from store.ledger import MessageLedger, MessageMeta, NewMessage
from store.ledger import archive as archive_module
from store.ledger.index_ranges import id_in_range, position_of, range_prefix
from store.ledger.records import DERIVED_ITEM
from tests.campaigns.conftest import (
    SCOPES,
    Clock,
    drive,
    make_audience,
    make_campaign,
    make_template,
    recipients,
    runner,
    settle,
    smtp,
)

AUDIENCE = 300  # three buckets: two full, one of 44


async def listing(client, headers, params: dict) -> list[dict]:
    """Every row of `GET /v1/messages` with `params`, 7 a page."""
    rows, cursor = [], None
    while True:
        query = {"limit": "7", **params, **({"cursor": cursor} if cursor else {})}
        got = await client.get("/v1/messages", params=query, headers=headers)
        assert got.status == 200, await got.text()
        page = await got.json()
        rows += page["data"]
        if not page["has_more"]:
            return rows
        cursor = page["next_cursor"]


async def view(client, headers, message_id: str) -> dict:
    got = await client.get(f"/v1/messages/{message_id}", headers=headers)
    assert got.status == 200, await got.text()
    return await got.json()


async def archive_everything(body, clock: Clock) -> int:
    """Passes of the archiver, the clock past the quiet time, until one archives nothing."""
    clock.now += 3600
    archived = 0
    while moved := await body.archiver.step():
        archived += moved
        clock.now += archiver_module.PASS_SECONDS
    return archived


async def test_a_sent_campaign_is_archived_and_reads_as_before(client, make_key, sink, redis, workspace):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, AUDIENCE)
    html = '<p>Hello {{ first_name }}</p><a href="https://acme.test/offer?x=1">Offer</a>'
    template_id = await make_template(client, headers, html=html)
    campaign_id = await make_campaign(
        client, headers, list_id, template_id, tracking={"opens": True, "clicks": True}
    )
    clock = Clock()  # stands still while it sends: every event is newer, nothing is archived yet
    body = runner(client, clock=clock, in_flight=1000, chunk=100)
    await drive(body, client, headers, campaign_id)
    await settle(redis, body)
    assert sorted(recipients(sink)) == sorted(emails)
    # An API send after it: the list interleaves a hash and the archive
    admin = await make_key(["admin"])
    server = (await view(client, headers, (await listing(client, headers, {}))[0]["id"]))["server"]
    sent = {"from": "hello@acme.test", "to": ["ana@example.com"], "subject": "Welcome", "html": "<p>Hi</p>"}
    response = await client.post("/v1/send", json=sent | {"routing": {"server": server}}, headers=admin)
    assert response.status == 202, await response.text()
    api_id = (await response.json())["id"]
    await settle(redis, body)

    everything = await listing(client, headers, {})
    ids = [r["id"] for r in everything if r["id"] != api_id]
    assert len(ids) == AUDIENCE and everything[0]["id"] == api_id
    one = everything[40]
    some = [*ids[:3], *ids[125:131], *ids[-3:], one["id"]]
    views = {i: await view(client, headers, i) for i in some}
    middle = views[one["id"]]["created_at"]
    filters = [
        {"campaign_id": campaign_id},
        {"to": one["to"][0].upper()},
        {"status": "sent"},
        {"from": middle},
        {"until": middle, "campaign_id": campaign_id},
        {"tag": "none-has-it"},
    ]
    filtered = [await listing(client, headers, f) for f in filters]
    assert [len(f) for f in filtered[:3]] == [AUDIENCE, 1, AUDIENCE + 1]
    assert len(filtered[3]) + len(filtered[4]) == AUDIENCE + 1  # every message once: from, or until

    assert await archive_everything(body, clock) == 3
    prefix = range_prefix(ids[0])
    assert {position_of(i) for i in ids} == set(range(AUDIENCE))
    assert await redis.exists(*[keyspace.message(workspace, i) for i in ids]) == 0
    buckets = [keyspace.message_archive(workspace, prefix, b) for b in range(3)]
    assert await redis.exists(*buckets) == 3
    # ~80 B a message (its hash took ~820)
    packed = sum([await redis.strlen(b) for b in buckets])
    assert packed / AUDIENCE < 200, packed
    assert 0 < await redis.pttl(buckets[0]) <= 30 * 24 * 3600 * 1000
    # the campaign is finished and every bucket archived: out of the archiver's set
    assert await CampaignStore(redis).archiving() == []
    assert await redis.exists(keyspace.message(workspace, api_id))  # not a campaign's: untouched

    # The same list, pages and filters; the same views.
    assert await listing(client, headers, {}) == everything
    assert [await listing(client, headers, f) for f in filters] == filtered
    assert await listing(client, headers, {"status": "failed"}) == []
    assert {i: await view(client, headers, i) for i in some} == views

    # A click on an archived message: it redirects, and the message's hash is back with the event in
    # its timeline, expiring with its bucket.
    delivery = next(d for d in sink.deliveries if d.rcpt_tos == one["to"])
    mail = email.message_from_bytes(delivery.content, policy=email.policy.default)
    (click,) = re.findall(
        r"/t/c/[A-Za-z0-9_-]+/[0-9]+", mail.get_body(preferencelist=("html",)).get_content()
    )
    followed = await client.get(click, allow_redirects=False, headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert followed.status == 302 and followed.headers["Location"] == "https://acme.test/offer?x=1"
    key = keyspace.message(workspace, one["id"])
    assert await redis.exists(key)
    bucket = keyspace.message_archive(workspace, prefix, position_of(one["id"]) // archive_module.BUCKET)
    assert abs(await redis.pttl(key) - await redis.pttl(bucket)) < 1000
    clicked = await view(client, headers, one["id"])
    assert [e["type"] for e in clicked["events"]][-1] == "message.clicked"
    assert clicked["events"][:-1] == views[one["id"]]["events"]
    assert {k: v for k, v in clicked.items() if k != "events"} == {
        k: v for k, v in views[one["id"]].items() if k != "events"
    }
    assert await listing(client, headers, {}) == everything  # the hash, not its bucket's copy

    # A one-click unsubscribe (RFC 8058) from a third: in its timeline too.
    third = everything[60]
    unsubscribing = next(d for d in sink.deliveries if d.rcpt_tos == third["to"])
    mail = email.message_from_bytes(unsubscribing.content, policy=email.policy.default)
    url = mail["List-Unsubscribe"].split("<https://mailers.test", 1)[1].split(">", 1)[0]
    assert not await redis.exists(keyspace.message(workspace, third["id"]))
    posted = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert posted.status == 200, await posted.text()
    unsubscribed = await view(client, headers, third["id"])
    assert [e["type"] for e in unsubscribed["events"]][-1] == "subscriber.unsubscribed"

    # A provider's event for another archived message restores it and moves its status.
    other = ids[200]
    event = ProviderEvent(
        provider="smtp",
        provider_event_id="ev-1",
        provider_message_id=None,
        type="message.delivered",
        recipient=None,
        occurred_at=datetime.now(UTC),
        our_message_id=other,
    )
    outcome = await InboundRecorder(redis).record(
        workspace=workspace, server_id=server, provider="smtp", events=[event]
    )
    assert (outcome.recorded, outcome.unmatched) == (1, 0)
    delivered = await view(client, headers, other)
    assert delivered["status"] == "delivered"
    assert [e["type"] for e in delivered["events"]][-1] == "message.delivered"
    assert await redis.exists(keyspace.message(workspace, other))

    # Once quiet, the restored messages go back into their buckets, with what happened to them since.
    restored = [one["id"], third["id"], other]
    assert await redis.zcard(keyspace.ARCHIVE_RESTORED) == len({position_of(i) // 128 for i in restored})
    seen = {i: await view(client, headers, i) for i in restored}
    listed_now = await listing(client, headers, {})
    assert await archive_everything(body, clock) == len({position_of(i) // 128 for i in restored})
    assert await redis.exists(*[keyspace.message(workspace, i) for i in restored]) == 0
    assert await redis.zcard(keyspace.ARCHIVE_RESTORED) == 0
    assert {i: await view(client, headers, i) for i in restored} == seen
    assert await listing(client, headers, {}) == listed_now
    assert [r["status"] for r in listed_now if r["id"] == other] == ["delivered"]

    # A replayed chunk cannot enqueue an archived position again (the enqueue's guard).
    replay = ids[250]
    message = OutboundMessage(
        id=replay,
        workspace=workspace,
        from_=Address(email="news@acme.test"),
        to=[Address(email="x@example.com")],
        subject="again",
        campaign_id=campaign_id,
    )
    new = NewMessage(
        message=message,
        meta=MessageMeta(created_ms=0),
        status="queued",
        server=server,
        events=[],
        item_key=DERIVED_ITEM,
        fresh_id=False,
        ranged=True,
    )
    assert await MessageLedger(redis).enqueue([new]) == [replay]
    assert not await redis.exists(keyspace.message(workspace, replay))


def state(status: str, **fields: str) -> tuple[str, dict[str, str]]:
    return status, fields


def test_only_positions_the_campaign_will_never_enqueue_again_are_archived() -> None:
    # before the send phase (resolve, pack, the A/B test): nothing
    assert committed(*state("sending", phase="test", slices="2", **{"sp:0": "0,500"}), 1000) == []
    # sending: each slice from its first position to the end of its last committed chunk, merged
    spans = state(
        "sending", phase="send", slices="3", **{"sp:0": "0,300", "sp:1": "300,420", "sp:2": "700,800"}
    )
    assert committed(*spans, 1000) == [(0, 420), (700, 800)]
    assert whole_buckets(committed(*spans, 1000)) == [(0, 3)]  # 384..511 and 640..767 are not whole
    assert whole_buckets([(0, 420), (640, 1000)]) == [(0, 3), (5, 7)]
    assert committed(*state("paused", phase="send", slices="1"), 1000) == []
    # after (retry, settle, finished, cancelled): every position enqueued
    for done in (state("sending", phase="retry"), state("sending", phase="settle"), state("cancelled")):
        assert committed(*done, 1000) == [(0, 1024)]  # the last bucket whole: nothing follows
    assert committed(*state("sent"), 0) == []


@pytest.fixture
def ledger(redis) -> MessageLedger:
    return MessageLedger(redis)


async def settled_hash(
    redis, message_id: str, *, status: bytes = b"sent", at_ms: int, body: bool = False
) -> None:
    """A campaign message's hash as the dispatcher leaves it: its envelope (`lean_message`), or with
    `body` the whole message (a send that failed keeps it)."""
    from schemas.events import Event
    from store.ledger.records import compact_event, encode, lean_message

    event = Event(
        id="evt_01M98H21HGFJK0XP9J00000000",
        type="message.sent",
        created_at=datetime.fromtimestamp(at_ms / 1000, UTC),
        workspace="acme",
        data={"provider_message_id": "p-" + message_id},
    )
    message = OutboundMessage(
        id=message_id,
        workspace="acme",
        from_=Address(email="a@acme.test"),
        to=[Address(email="b@x.test")],
        html="<p>the body</p>" if body else None,
    )
    envelope = encode(message if body else lean_message(message))
    await redis.hset(
        keyspace.message("acme", message_id),
        mapping={
            "s": status,
            "p": envelope,
            "m": encode(MessageMeta(created_ms=at_ms)),
            "srv": "srv_1",
            "ev": b"\x91" + encode(compact_event(event)),
        },
    )


async def test_a_bucket_waits_for_every_message_to_settle_and_to_be_quiet(redis, ledger) -> None:
    from actors.campaigns.body import message_id_at

    prefix = range_prefix(message_id_at(1_796_600_000_000, "cmp_a", 0))
    ids = [id_in_range(prefix, p) for p in (0, 5, 127)]
    now = 1_796_700_000_000
    for i in ids:
        await settled_hash(redis, i, at_ms=now - 20_000)
    await settled_hash(redis, ids[1], status=b"queued", at_ms=now - 20_000)
    kwargs = {"now_ms": now, "quiet_ms": 10_000, "retention_ms": 60_000}
    assert await ledger.archive.pack("acme", prefix, 0, **kwargs) == "busy"
    await settled_hash(redis, ids[1], at_ms=now - 5_000)
    assert await ledger.archive.pack("acme", prefix, 0, **kwargs) == "recent"
    # a message that failed at its send keeps its body, and its hash: never in a bucket
    failed = id_in_range(prefix, 9)
    await settled_hash(redis, failed, status=b"failed", at_ms=now - 20_000, body=True)
    assert await ledger.archive.pack("acme", prefix, 0, **kwargs | {"quiet_ms": 5_000}) == 3
    assert await ledger.archive.pack("acme", prefix, 0, **kwargs) == -1  # once
    assert await redis.exists(keyspace.message("acme", failed))
    assert (await ledger.get("acme", failed)).message.html == "<p>the body</p>"
    # no hash had a time to live: the bucket gets the retention
    assert 0 < await redis.pttl(keyspace.message_archive("acme", prefix, 0)) <= 60_000
    # the next bucket's positions: none has a message (all skipped), archived as such
    assert await ledger.archive.pack("acme", prefix, 1, **kwargs) == 0
    found = await ledger.archive.read("acme", [*ids, failed, id_in_range(prefix, 6), "msg_bad", "nonsense"])
    assert set(found) == set(ids) and found[ids[0]][b"srv"] == b"srv_1"
    stored = await ledger.get("acme", ids[2])
    assert stored is not None and stored.message.id == ids[2] and stored.status == "sent"
    assert stored.provider_message_id is None  # no `prv`: never tried
    # restore: the hash back; an existing hash is never overwritten
    await redis.hset(keyspace.message("acme", ids[0]), mapping={"s": "delivered"})
    restored = await ledger.archive.restore("acme", ids)
    assert set(restored) == set(ids[1:])
    assert await redis.hget(keyspace.message("acme", ids[0]), "s") == b"delivered"
    assert await redis.hgetall(keyspace.message("acme", ids[1])) == found[ids[1]]


async def test_a_late_outcome_of_an_archived_message_makes_no_partial_hash(redis, ledger) -> None:
    """A dispatcher that stalled past its entry's reclaim records an outcome after the message was
    archived: its event is streamed, and no hash of a few fields (no status) appears beside the bucket."""
    from actors.campaigns.body import message_id_at
    from schemas.events import Event

    prefix = range_prefix(message_id_at(1_796_600_000_000, "cmp_c", 0))
    message_id = id_in_range(prefix, 1)
    await settled_hash(redis, message_id, at_ms=1_796_600_000_000)
    kwargs = {"now_ms": 1_796_700_000_000, "quiet_ms": 0, "retention_ms": 60_000}
    assert await ledger.archive.pack("acme", prefix, 0, **kwargs) == 1
    message = OutboundMessage(
        id=message_id, workspace="acme", from_=Address(email="a@acme.test"), to=[Address(email="b@x.test")]
    )
    event = Event(
        id="evt_01M98H21HGFJK0XP9J00000001",
        type="message.sent",
        created_at=datetime.now(UTC),
        workspace="acme",
        data={},
    )
    before = await redis.xlen(keyspace.EVENT_STREAM)
    outcome = ledger.outcome(message, "sent", [event], fields=["prv", "smtp"], attempted=1)
    await ledger.record("m:test:dispatch", [outcome], [], [], [], retention_seconds=60, mapping_ttl=60)
    assert not await redis.exists(keyspace.message("acme", message_id))
    assert await redis.xlen(keyspace.EVENT_STREAM) == before + 1
    assert (await ledger.get("acme", message_id)).status == "sent"


async def test_a_hash_written_while_its_bucket_is_packed_keeps_the_bucket_out(redis, ledger) -> None:
    """The archive script compares each hash's status and timeline length with what was packed."""
    from actors.campaigns.body import message_id_at
    from store.ledger.scripts import APPEND_EVENTS

    prefix = range_prefix(message_id_at(1_796_600_000_000, "cmp_b", 0))
    message_id = id_in_range(prefix, 3)
    await settled_hash(redis, message_id, at_ms=1_796_600_000_000)
    key = keyspace.message("acme", message_id)
    fields = await redis.hgetall(key)
    await redis.eval(APPEND_EVENTS, 1, key, b"\x90")  # an event lands between the read and the script
    bucket = keyspace.message_archive("acme", prefix, 0)
    blob = archive_module.pack({3: fields})
    args = [blob, 60_000, archive_module.fingerprint(fields)]
    assert await ledger.archive._archive(keys=[bucket, key], args=args) == 0
    assert not await redis.exists(bucket) and await redis.exists(key)


def test_a_bucket_packs_its_hashes_as_they_were() -> None:
    records = {
        130: {b"s": b"sent", b"p": b"\x81\xa2to\x90", b"ev": b"\x90", b"att": b"1"},
        255: {b"s": b"failed", b"p": bytes(range(256)), b"m": b"\x80"},
    }
    blob = archive_module.pack(records)
    assert blob[:1] == archive_module.VERSION and archive_module.unpack(blob) == records
    with pytest.raises(ValueError):
        archive_module.unpack(b"\x07" + blob[1:])
    assert archive_module.locate(id_in_range(range_prefix("msg_01M98H21HGFJK0XP9J00000000"), 300)) == (
        "msg_01M98H21HGFJK0XP9J",
        2,
    )


async def test_buckets_are_archived_behind_the_slices_while_the_campaign_sends(
    app_client, make_key, sink, redis, workspace
):
    """Two runners (two slices), chunks of 50 against buckets of 128, no quiet time: buckets go to the
    archive during the `send` phase, only where both slices have passed, and every subscriber still gets
    exactly one message (a bucket archived too early would drop the positions still to come: the enqueue's
    guard treats an archived position as sent)."""
    client = await app_client(public_url="https://mailers.test", campaign_archive_after_seconds=0)
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 700)
    campaign_id = await make_campaign(client, headers, list_id, await make_template(client, headers))
    clock = Clock()
    bodies = [runner(client, clock=clock, in_flight=120, chunk=50, runners=2, index=i) for i in (0, 1)]
    store = CampaignStore(redis)
    during_send = set()
    # Until `sent`, with a deadline on the wall clock: the dispatchers (Ray actors) deliver in real time
    # meanwhile, so a count of passes would depend on how long each pass happens to take.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for body in bodies:
            await body.step()
        clock.now += archiver_module.PASS_SECONDS
        current = await store.get(workspace, campaign_id)
        if current.status == "sent":
            break
        if current.text("phase") == "send" and current.number("launch_ms"):
            first = message_id_at(current.number("launch_ms"), campaign_id, 0)
            prefix = range_prefix(first)
            archived = await MessageLedger(redis).archive.archived(workspace, prefix, range(6))
            during_send.add(tuple(archived))
        await asyncio.sleep(0.005)  # the dispatchers deliver meanwhile (what the window waits for)
    assert current.status == "sent"
    assert any(any(seen) for seen in during_send), "nothing was archived while the campaign was sending"
    await settle(redis, bodies[0])
    assert sorted(recipients(sink)) == sorted(emails)  # each once
    clock.now += archiver_module.BUSY_SECONDS  # a bucket last seen busy is looked at again within this
    while await bodies[0].archiver.step():
        clock.now += archiver_module.PASS_SECONDS
    clock.now += archiver_module.PASS_SECONDS
    await bodies[0].archiver.step()
    rows = await listing(client, headers, {"campaign_id": campaign_id})
    assert sorted(r["to"][0] for r in rows) == sorted(emails)
    assert await store.archiving() == []
    prefix = range_prefix(rows[0]["id"])
    assert await redis.exists(*[keyspace.message_archive(workspace, prefix, b) for b in range(6)]) == 6
    assert await redis.exists(*[keyspace.message(workspace, r["id"]) for r in rows]) == 0
    counters = (await (await client.get(f"/v1/campaigns/{campaign_id}", headers=headers)).json())["counters"]
    assert counters["sent"] == 700


async def test_a_busy_bucket_is_looked_at_again_only_after_a_while(redis) -> None:
    """A message held in the queue (a paused server, a quota) keeps its bucket out of the archive; the
    archiver reads that bucket again after half as long as it has been busy, at most `BUSY_SECONDS`, not
    on every pass."""
    from actors.campaigns.archiver import BUSY_SECONDS, CampaignArchiver, _Span
    from schemas.settings import Settings

    prefix = range_prefix(message_id_at(1_796_600_000_000, "cmp_d", 0))
    now = 1_796_700_000.0
    await settled_hash(redis, id_in_range(prefix, 2), status=b"queued", at_ms=int(now * 1000) - 60_000)
    clock = Clock(now)
    archiver = CampaignArchiver(redis, Settings(), clock=clock, range_of=lambda launch, cid: prefix + "0" * 8)
    span = _Span("acme", prefix, ("acme", "cmp_d", 0), 0, 1)

    async def reads() -> int:
        return int((await redis.info("commandstats")).get("cmdstat_hgetall", {}).get("calls", 0))

    async def read_at(offset: float) -> bool:
        """A pass at `now + offset`: whether it read the bucket (nothing is archived while it is busy)."""
        before = await reads()
        clock.now = now + offset
        assert await archiver._span(span, 8) == 0
        read = await reads() - before
        assert read in (0, archive_module.BUCKET)
        return read > 0

    assert await read_at(0)  # first seen busy
    assert await read_at(0.25)  # busy 0 s at the last read: the next pass reads it again
    assert not await read_at(0.3)  # busy 0.25 s: again 0.125 s later, not before
    assert await read_at(0.375)
    assert await read_at(10)  # busy 10 s: again 5 s later
    assert not await read_at(14.9)
    assert await read_at(15)
    assert await read_at(100)  # busy 100 s: again after BUSY_SECONDS, not 50 s
    assert not await read_at(100 + BUSY_SECONDS - 0.1)
    await settled_hash(redis, id_in_range(prefix, 2), at_ms=int(now * 1000) - 60_000)  # sent, meanwhile
    clock.now = now + 100 + BUSY_SECONDS
    assert await archiver._span(span, 8) == 1
    assert await redis.exists(keyspace.message_archive("acme", prefix, 0))
