"""Tracked messages stored the way the send path stores them, and reading back what was recorded."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime

from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage
from store import keyspace
from store.event_entries import entry_events
from store.messages import MessageMeta, MessageStore, NewMessage

NEWSLETTER = """<html><body>
<p>Hi Reader, <a href="https://shop.example.com/p?id=1&amp;utm=mail">our shop</a>,
<a href='http://blog.example.org/post'>the blog</a>, <a href="mailto:help@acme.com">mail us</a>,
and the shop again: <a href="https://shop.example.com/p?id=1&utm=mail">here</a>.</p>
</BODY></html>"""
SHOP = "https://shop.example.com/p?id=1&utm=mail"
BLOG = "http://blog.example.org/post"
HUMAN = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"
)


def outbound(
    *,
    to: str = "reader@tracking.example",
    html: str | None = NEWSLETTER,
    workspace: str = "acme",
    headers: dict[str, str] | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        id=new_id("msg"),
        workspace=workspace,
        from_=Address("hello@acme.com", "Acme"),
        to=[Address(to)],
        subject="News",
        html=html,
        text="Hi Reader, https://shop.example.com",
        headers=headers or {},
        tags=["news"],
        metadata={"user_id": "42"},
    )


async def store_sent(redis, message: OutboundMessage, links: list[str]) -> None:
    """A message as a dispatcher leaves it after the provider took it (status `sent`, no queue entry)."""
    now = datetime.now(UTC)
    accepted = Event(
        id=new_id("evt"),
        type="message.accepted",
        created_at=now,
        workspace=message.workspace,
        message=EventMessage(id=message.id, to=message.to[0].email, from_=message.from_.email),
    )
    meta = MessageMeta(
        created_ms=int(now.timestamp() * 1000),
        candidates=["srv_test"],
        track_opens=True,
        track_clicks=True,
        unsubscribe=True,
        links=links,
    )
    await MessageStore(redis).enqueue(
        [NewMessage(message=message, meta=meta, status="sent", server="srv_test", events=[accepted])]
    )


def tokens_in(html: str, kind: str) -> list[str]:
    """The tokens of the `/t/{kind}/` URLs in `html`, in order (for "c", each link's recipient token)."""
    return re.findall(rf"/t/{kind}/([A-Za-z0-9_-]+)", html)


def clicks_in(html: str) -> list[str]:
    """What follows `/t/c/` in each tracked link of `html`, in order: `{recipient token}/{index}`."""
    return re.findall(r"/t/c/([A-Za-z0-9_-]+/[0-9]+)", html)


def unsubscribe_token(message: OutboundMessage) -> str:
    return re.findall(r"/t/u/([A-Za-z0-9_-]+)>", message.headers["List-Unsubscribe"])[0]


def altered(token: str) -> str:
    """The token with one character changed (a middle one, so every bit of it is significant)."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


async def timeline(redis, message: OutboundMessage) -> list[Event]:
    store = MessageStore(redis)
    stored = await store.get(message.workspace, message.id)
    assert stored is not None
    return stored.events


async def streamed(redis) -> list[Event]:
    entries = await redis.xrange(keyspace.EVENT_STREAM)
    return [event for _, fields in entries for event in entry_events(fields)]


async def wait_for(predicate, within: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + within
    while not (result := await predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)
    return result
