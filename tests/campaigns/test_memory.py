"""What a campaign message keeps in Redis once sent: its envelope, not its body, and compact events (its
timeline, in the hash's `ev`; docs/campaigns.md, "Memory"), in a listpack hash; an API send keeps both
whole. And the trim of consumed stream entries (store/stream_trim.py)."""

from __future__ import annotations

import email
import email.policy
import re

import msgspec

from schemas.events import Event
from schemas.messages import outbound_decoder
from store import keyspace
from store.ledger.index_ranges import range_prefix
from store.ledger.records import TIMELINE_TYPES, TimelineEvent, decode_message, timeline_of
from store.stream_trim import StreamTrimmer
from tests.campaigns.conftest import (
    SCOPES,
    drive,
    make_audience,
    make_campaign,
    make_template,
    recipients,
    runner,
    settle,
    smtp,
    smtp_campaign,
)


async def test_a_sent_campaign_message_keeps_its_envelope_and_an_api_send_its_body(
    client, make_key, sink, redis, workspace
):
    headers, _, emails, _, campaign_id = await smtp_campaign(client, make_key, sink, 30)
    body = runner(client, in_flight=100, chunk=10)
    await drive(body, client, headers, campaign_id)
    await settle(redis, body)
    assert sorted(recipients(sink)) == sorted(emails)
    # The body went out whole (rendered, with the RFC 8058 headers) before it was dropped.
    assert all(b"List-Unsubscribe:" in d.content and b"Hello P" in d.content for d in sink.deliveries)

    listed = await client.get(
        "/v1/messages", params={"campaign_id": campaign_id, "limit": "100"}, headers=headers
    )
    assert listed.status == 200
    rows = (await listed.json())["data"]
    assert len(rows) == 30 and all(r["status"] == "sent" for r in rows)
    # The index holds the campaign's range, one mark, not 30 ids (store/ledger/index_ranges.py): the list
    # above expanded it.
    (mark,) = await redis.zrange(keyspace.message_index(workspace), 0, -1)
    assert mark.decode() == range_prefix(rows[0]["id"]) + "~"
    assert await redis.hgetall(keyspace.message_ranges(workspace)) == {mark[:-1]: b"30"}
    for row in rows:
        raw = await redis.hget(keyspace.message(workspace, row["id"]), "p")
        # encoded without its empty fields (`OutboundMessage` omits defaults): no cc, headers, attachments
        empty = {"cc", "bcc", "reply_to", "html", "text", "headers", "attachments"}
        # nor its id and workspace (round 12): the hash's key names both, and the reader fills them in
        assert not (empty | {"id", "workspace"}) & set(msgspec.msgpack.decode(raw))
        assert {"to", "subject"} <= set(msgspec.msgpack.decode(raw))
        stored = decode_message(raw, workspace, row["id"])
        assert stored.id == row["id"] and stored.workspace == workspace
        assert stored.html is None and stored.text is None and stored.headers == {}
        assert stored.attachments == []
        # The envelope stays: who, from whom, the subject, what it was for.
        assert stored.campaign_id == campaign_id and stored.metadata["subscriber_id"].startswith("sub_")
        assert [a.email for a in stored.to] == row["to"] and stored.subject == row["subject"]
        assert stored.from_.email == "news@acme.test"
        # One listpack, not a hash table (store/redis_server.LISTPACK_SETTINGS): ~230 B less a message.
        assert await redis.object("encoding", keyspace.message(workspace, row["id"])) == b"listpack"
    # Its timeline is the hash's `ev`, no key of its own (docs/campaigns.md, "Memory"), and keeps the
    # events without the envelope (the hash has it); `m:events` had them whole (below: the API send's
    # are whole).
    assert not await redis.exists(keyspace.message_events(workspace, rows[0]["id"]))
    timeline = await redis.hget(keyspace.message(workspace, rows[0]["id"]), "ev")
    # compact: msgpack arrays of id, type, time and data (`TimelineEvent`), no field names, no envelope
    kept = msgspec.msgpack.decode(timeline, type=list[TimelineEvent])
    # an `evt_` id as its ULID's 16 bytes, a type by its index in TIMELINE_TYPES (round 12)
    assert [e.type for e in kept] == [TIMELINE_TYPES.index(t) for t in ("message.accepted", "message.sent")]
    assert all(isinstance(e.id, bytes) and len(e.id) == 16 for e in kept)
    assert [e.type for e in timeline_of(timeline)] == ["message.accepted", "message.sent"]
    assert all(e.message is None and e.workspace == "" for e in timeline_of(timeline))
    # ~40 B for the accepted, ~110 B for the sent (id, type, time, provider id); whole ~420 and ~450 B
    assert len(timeline) < 170
    view = await client.get(f"/v1/messages/{rows[0]['id']}", headers=headers)
    assert view.status == 200
    got = await view.json()
    assert got["campaign_id"] == campaign_id and got["subject"].startswith("Hi P")
    assert [e["type"] for e in got["events"]] == ["message.accepted", "message.sent"]
    # No `pmid` field and no failover candidates in its meta (~130 B: a smaller jemalloc class); the view
    # takes the provider's id from the `message.sent` event, where it is kept anyway.
    campaign_hash = await redis.hgetall(keyspace.message(workspace, rows[0]["id"]))
    assert b"pmid" not in campaign_hash and campaign_hash[b"prv"] == b"smtp"
    # what is read after the send: the view's creation time (and `send_at_ms`, `links`, empty here)
    assert list(msgspec.msgpack.decode(campaign_hash[b"m"])) == ["created_ms"]
    assert (
        got["provider_message_id"]
        and got["provider_message_id"] == got["events"][1]["data"]["provider_message_id"]
    )

    admin = await make_key(["admin"])
    sent = {
        "from": "Acme <hello@acme.test>",
        "to": ["ana@example.com"],
        "subject": "Welcome",
        "html": "<p>Hi Ana</p>",
        "routing": {"server": got["server"]},
    }
    response = await client.post("/v1/send", json=sent, headers=admin)
    assert response.status == 202, await response.text()
    message_id = (await response.json())["id"]
    await settle(redis, body)
    kept = outbound_decoder.decode(await redis.hget(keyspace.message(workspace, message_id), "p"))
    assert kept.html == "<p>Hi Ana</p>" and kept.campaign_id is None
    api_hash = await redis.hgetall(keyspace.message(workspace, message_id))
    assert api_hash[b"pmid"] and msgspec.msgpack.decode(api_hash[b"m"])["candidates"] == [got["server"]]
    assert await redis.object("encoding", keyspace.message(workspace, message_id)) == b"listpack"
    assert not await redis.exists(keyspace.message_events(workspace, message_id))
    whole = await redis.hget(keyspace.message(workspace, message_id), "ev")
    accepted, sent_event = msgspec.msgpack.decode(whole, type=list[Event])
    assert accepted.type == "message.accepted" and sent_event.type == "message.sent"
    assert accepted.message.id == message_id and accepted.workspace == workspace
    assert sent_event.message.id == message_id and sent_event.workspace == workspace

    # The list pages through the campaign's range and the API send's own entry: each once, newest first.
    seen, cursor = [], None
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/messages", params=params, headers=headers)).json()
        seen += [r["id"] for r in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == sorted({*(r["id"] for r in rows), message_id}, reverse=True)


async def test_a_sent_campaign_message_still_redirects_its_tracked_links_and_counts_its_opens(
    client, make_key, sink, redis, workspace
):
    """Its meta once sent keeps the links a click reads (and nothing its send alone needed): the link in
    the mail redirects, and the open and click are its events, with the campaign's envelope."""
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 3)
    html = '<p>Hello {{ first_name }}</p><a href="https://acme.test/offer?x=1">Offer</a>'
    template_id = await make_template(client, headers, html=html)
    campaign_id = await make_campaign(
        client, headers, list_id, template_id, tracking={"opens": True, "clicks": True}
    )
    body = runner(client, in_flight=100, chunk=10)
    await drive(body, client, headers, campaign_id)
    await settle(redis, body)
    assert sorted(recipients(sink)) == sorted(emails)

    mail = email.message_from_bytes(sink.deliveries[0].content, policy=email.policy.default)
    sent_html = mail.get_body(preferencelist=("html",)).get_content()
    (click,) = re.findall(r"/t/c/[A-Za-z0-9_-]+/[0-9]+", sent_html)
    (pixel,) = re.findall(r"/t/o/[A-Za-z0-9_-]+", sent_html)
    listed = await client.get("/v1/messages", params={"campaign_id": campaign_id}, headers=headers)
    message_id = next(
        r["id"] for r in (await listed.json())["data"] if r["to"] == [mail["To"].addresses[0].addr_spec]
    )
    meta = msgspec.msgpack.decode(await redis.hget(keyspace.message(workspace, message_id), "m"))
    assert set(meta) == {"created_ms", "links"}  # no candidates, purpose or tracking flags

    followed = await client.get(click, allow_redirects=False, headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert followed.status == 302 and followed.headers["Location"] == "https://acme.test/offer?x=1"
    opened = await client.get(pixel, headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert opened.status == 200
    view = await (await client.get(f"/v1/messages/{message_id}", headers=headers)).json()
    assert [e["type"] for e in view["events"]][-2:] == ["message.clicked", "message.opened"]
    assert view["provider_message_id"] and view["status"] == "sent"
    # recorded whole in its timeline (the hash's `ev`), with the campaign's envelope
    timeline = timeline_of(await redis.hget(keyspace.message(workspace, message_id), "ev"))
    tracked = [e for e in timeline if e.type in ("message.clicked", "message.opened")]
    assert [e.type for e in tracked] == ["message.clicked", "message.opened"]
    assert all(e.message.campaign_id == campaign_id and e.message.id == message_id for e in tracked)
    assert tracked[0].data["url"] == "https://acme.test/offer?x=1"


async def test_stream_entries_go_once_every_group_consumed_them(redis):
    """`StreamTrimmer.trim`: nothing while a required group is missing; then only what every group has
    acknowledged (a pending entry and everything after it stays, to be re-read after a crash)."""
    stream = "m:test:trim"
    ids = [await redis.xadd(stream, {"b": str(i)}) for i in range(1000)]
    trimmer = StreamTrimmer(redis)
    await redis.xgroup_create(stream, "a", id="0")
    await redis.xgroup_create(stream, "b", id="0")
    read_a = await redis.xreadgroup("a", "c", {stream: ">"}, count=1000)
    await redis.xack(stream, "a", *[i for i, _ in read_a[0][1]])
    read_b = await redis.xreadgroup("b", "c", {stream: ">"}, count=600)
    await redis.xack(stream, "b", *[i for i, _ in read_b[0][1][:500]])

    assert await trimmer.trim(stream, ("a", "b", "c")) == 0  # group c does not exist yet
    assert await redis.xlen(stream) == 1000
    removed = await trimmer.trim(stream, ("a", "b"))
    assert removed > 0
    left = await redis.xrange(stream)
    assert [i for i, _ in left][-500:] == ids[500:]  # the oldest pending entry of b and everything after
    assert len(left) == 1000 - removed and len(left) < 600  # whole nodes of 100 go (`MINID ~`)

    pending = await redis.xreadgroup("b", "c", {stream: "0"}, count=1000)
    assert [i for i, _ in pending[0][1]] == ids[500:600]  # still readable after the trim
    await redis.xack(stream, "b", *ids[500:600])
    rest = await redis.xreadgroup("b", "c", {stream: ">"}, count=1000)
    await redis.xack(stream, "b", *[i for i, _ in rest[0][1]])
    await trimmer.trim(stream, ("a", "b"))
    assert await redis.xlen(stream) <= 100  # at most the last node, holding the last entry read
    assert (await redis.xrange(stream))[-1][0] == ids[-1]


async def test_a_trim_removes_every_consumed_entry_however_many(redis):
    """`XTRIM … ~` alone removes at most 10,000 entries a call: a trim every 5 s fell behind a stream
    written faster than 2,000 entries a second (a campaign's dispatch stream)."""
    stream = "m:test:trim-many"
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(30_000):
            pipe.xadd(stream, {"id": str(i)})
        await pipe.execute()
    await redis.xgroup_create(stream, "a", id="0")
    read = await redis.xreadgroup("a", "c", {stream: ">"}, count=30_000)
    await redis.xack(stream, "a", *[i for i, _ in read[0][1]])
    assert await StreamTrimmer(redis).trim(stream, ("a",)) > 29_000
    assert await redis.xlen(stream) <= 100  # a node's worth may stay
