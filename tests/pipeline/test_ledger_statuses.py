"""The message ledger's statuses: one enum, the same values in Python, in its Lua scripts and in the API."""

from __future__ import annotations

import re
from typing import get_args

from ingress.routes.messages import view
from schemas import send
from schemas.message_status import MessageStatus, api_status
from store.ledger import MessageLedger, MessageMeta, StoredMessage, scripts
from store.ledger.listing import MessageFilter, MessageLister
from store.ledger.statuses import FINISHED, LUA_STATUSES, STATUS_OF_EVENT, STATUS_RANK, forward_status
from tests.pipeline.helpers import enqueue, message, new_message

ALL_CAPS = re.compile(r"\b[A-Z][A-Z_]+\b")
LUA_GLOBALS = {"KEYS", "ARGV"}


async def test_the_lua_prelude_holds_every_status_as_redis_runs_it(redis) -> None:
    names = [status.name for status in MessageStatus]
    values = await redis.eval(LUA_STATUSES + "return {" + ", ".join(names) + "}", 0)
    assert [v.decode() for v in values] == [status.value for status in MessageStatus]


def test_no_script_spells_a_status_and_every_name_it_uses_is_one() -> None:
    literal = re.compile("'(" + "|".join(s.value for s in MessageStatus) + ")'")
    for source in scripts.ALL:
        assert source.startswith(LUA_STATUSES)
        body = source[len(LUA_STATUSES) :]
        assert not literal.search(body), literal.search(body)
        # A misspelt status would be a nil global in Lua and compare unequal to everything, silently.
        code = re.sub(r"'[^']*'|--[^\n]*", "", body)  # Redis command names are quoted
        assert set(ALL_CAPS.findall(code)) - LUA_GLOBALS <= set(MessageStatus.__members__)


def test_the_api_lists_every_status_but_the_internal_sending() -> None:
    assert set(get_args(send.MessageStatus)) == {s.value for s in MessageStatus} - {"sending"}


def test_the_api_tells_each_ledger_status_as_itself_but_sending_as_queued() -> None:
    told = {status.value: api_status(status) for status in MessageStatus}
    assert told == {status.value: status.value for status in MessageStatus} | {"sending": "queued"}


def test_a_message_being_sent_is_queued_to_the_api_in_its_view() -> None:
    """The API's schema lists no `sending`; a client polling during the send once got it."""
    stored = StoredMessage(
        message=message(),
        meta=MessageMeta(created_ms=0, candidates=["srv_1"]),
        status=MessageStatus.SENDING,
        server="srv_1",
        provider=None,
        provider_message_id=None,
        attempts=0,
        events=[],
    )
    assert view(stored).status == "queued"


async def test_the_list_filter_on_queued_finds_a_message_being_sent(redis) -> None:
    msg = message()
    assert await enqueue(redis, [new_message(msg, ["srv_a"])]) == [None]
    await MessageLedger(redis).claim(msg.workspace, "srv_a", [msg.id])  # now `sending` in the ledger
    lister = MessageLister(redis, chunk=200, scan_limit=5000)
    queued = await lister.page(msg.workspace, MessageFilter(status="queued"), limit=10, after=None)
    sent = await lister.page(msg.workspace, MessageFilter(status="sent"), limit=10, after=None)
    assert [m.id for m in queued.messages] == [msg.id] and queued.messages[0].status == "sending"
    assert sent.messages == []


def test_transition_rules_name_only_statuses() -> None:
    assert set(STATUS_RANK) | set(STATUS_OF_EVENT.values()) | FINISHED <= set(MessageStatus)
    assert forward_status("sent", "message.delivered") == "delivered"
    assert forward_status("complained", "message.delivered") is None
    assert forward_status("canceled", "message.bounced") is None


async def test_a_claimed_message_is_sending_in_redis(redis) -> None:
    msg = message()
    assert await enqueue(redis, [new_message(msg, ["srv_a"])]) == [None]
    ledger = MessageLedger(redis)
    assert (await ledger.get(msg.workspace, msg.id)).status == MessageStatus.QUEUED
    assert await ledger.claim(msg.workspace, "srv_b", [msg.id]) == [None]  # not this server's
    [claimed] = await ledger.claim(msg.workspace, "srv_a", [msg.id])
    assert claimed is not None and claimed.message.id == msg.id
    assert (await ledger.get(msg.workspace, msg.id)).status == MessageStatus.SENDING
