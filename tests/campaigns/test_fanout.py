"""The fan-out's shortcuts keep the contract: the runner's message ids are `derived_id`'s; a batch that
validates its shared fields once (`SharedSend`) answers exactly what `prepare_send` answers per request,
errors included; a derived id writes no per-message idempotency key, and an item enqueued again is still
`replayed` (its message hash is the record) — real Redis, no Ray."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

import msgspec
import pytest
from ulid import ULID

from actors.campaigns.body import message_id_at
from actors.outbound.service import Accepted, Outbound, OutboundItem
from actors.outbound.validation import SharedSend, prepare_send
from schemas.ids import derived_id, is_id
from schemas.problems import ApiError
from schemas.send import RoutingIn, SendRequest, TrackingIn
from store import keyspace
from store.servers import ServerStore, ensure_sandbox_server
from tests.conftest import make_settings


def test_position_ids_rise_with_the_position_and_differ_between_campaigns():
    """The ids of a packed campaign (`message_id_at`): a ULID of the launch time, unique per (campaign,
    position), in position order; two campaigns launched in the same millisecond do not share one."""
    millis = 1_765_000_000_000
    first = [message_id_at(millis, "cmp_a", p) for p in (0, 1, 2, 499, 500, 10**6, 2**40 - 1)]
    assert first == sorted(first) and len(set(first)) == len(first)
    assert all(
        is_id(i, "msg") and ULID.from_str(i.removeprefix("msg_")).milliseconds == millis for i in first
    )
    second = [message_id_at(millis, "cmp_b", p) for p in (0, 1, 2, 499, 500, 10**6, 2**40 - 1)]
    assert not set(first) & set(second)
    assert message_id_at(millis + 1, "cmp_a", 0) > first[-1]  # the time leads, as in every ULID


def _outcome(call):
    try:
        return msgspec.to_builtins(call())
    except ApiError as exc:
        return ("error", exc.code, [(e.pointer, e.code, e.detail) for e in exc.errors])


def _requests() -> list[SendRequest]:
    shared = dict(
        from_="Acme News <news@acme.test>",
        reply_to="help@acme.test",
        tags=["news", "news", "dec"],
        routing=RoutingIn(purpose="marketing"),
        tracking=TrackingIn(opens=True, clicks=True),
        unsubscribe=True,
    )
    html = "<p>Hello {}</p><a href='https://acme.test/a'>a</a>"
    return [
        SendRequest(to="p0@example.com", subject="Hi P0", html=html.format(0), metadata={"s": "0"}, **shared),
        SendRequest(to="p1@example.com", subject="Hi P1", html=html.format(1), metadata={"s": "1"}, **shared),
        SendRequest(to="not an address", subject="Hi", html="x", **shared),  # its own field: refused alone
        SendRequest(to="p3@example.com", subject="Hi\r\nBcc: x@evil.test", text="t", **shared),
        SendRequest(to=["p4@example.com", "q4@example.com"], subject="Two", text="t", **shared),
        SendRequest(to="p5@example.com", subject="", **shared),  # no content
        SendRequest(to="p6@example.com", subject="Big", html="x" * 300_000, **shared),  # too large to track
        SendRequest(to="p7@example.com", subject="Ok", text="plain", idempotency_key="k7", **shared),
        # A different sender: the shared part is parsed again (and here refused).
        SendRequest(to="p8@example.com", subject="Hi", text="t", **{**shared, "from_": "bad sender"}),
        SendRequest(to="p9@example.com", subject="Hi", text="t", headers={"X-A": "1"}, **shared),
        SendRequest(to="p10@example.com", subject="Hi P10", html=html.format(10), **shared),
    ]


def test_shared_send_answers_exactly_what_prepare_send_answers():
    now = datetime.now(UTC)
    shared = SharedSend(workspace="acme", now=now)
    for index, request in enumerate(_requests()):
        msg_id = f"msg_01J0000000000000000000000{index % 10}"
        prefix = f"#/items/{index}"
        alone = _outcome(
            functools.partial(
                prepare_send, request, workspace="acme", message_id=msg_id, now=now, prefix=prefix
            )
        )
        batched = _outcome(functools.partial(shared.prepare, request, message_id=msg_id, prefix=prefix))
        assert batched == alone, index
    # The shortcut was taken: the first request's preparation stayed the base of every later one.
    assert shared._base is not None and shared._base.message.to[0].email == "p0@example.com"


@pytest.mark.parametrize("count", [50])
async def test_derived_ids_write_no_item_key_and_a_replay_enqueues_nothing(
    redis, tmp_path, redis_url, workspace, count
):
    sandbox = await ensure_sandbox_server(ServerStore(redis), workspace)
    assert sandbox is not None
    outbound = Outbound(redis, make_settings(tmp_path, redis_url, public_url="https://mail.acme.test"))
    millis = int(time.time() * 1000)
    items = [
        OutboundItem(
            request=SendRequest(
                from_="News <news@acme.test>",
                to=f"r{i}@example.com",
                subject=f"Hi {i}",
                html=f"<p>{i}</p>",
                routing=RoutingIn(server=sandbox.id),
                tracking=TrackingIn(opens=True, clicks=True),
                unsubscribe=True,
            ),
            message_id=derived_id("msg", millis, "cmp_x", f"sub_{i}"),
            campaign_id="cmp_x",
        )
        for i in range(count)
    ]
    now = datetime.now(UTC)
    first = await outbound.send(workspace, items, now=now)
    assert [(type(o), o.replayed) for o in first] == [(Accepted, False)] * count  # type: ignore[union-attr]
    assert not await redis.exists(*[keyspace.send_item(workspace, "outbound", i.message_id) for i in items])
    assert await redis.zcard(f"m:{{{workspace}}}:messages") == count
    again = await outbound.send(workspace, items, now=now)
    assert [(o.id, o.replayed) for o in again] == [(i.message_id, True) for i in items]  # type: ignore[union-attr]
    assert await redis.zcard(f"m:{{{workspace}}}:messages") == count
    assert await redis.xlen(f"m:{{{workspace}}}:dispatch:{sandbox.id}") == count
