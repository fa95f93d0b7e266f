"""Finding: "`GET /v1/messages` with a filter that matches nothing loads up to 5,000 full message hashes
(attachments included) per request: bound the memory of every list endpoint ... and prove it with a
test that measures RSS."

The app runs in this process (aiohttp's test server), so this process's resident set is the ingress's.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.messages import Address, Attachment, OutboundMessage
from store.messages import MessageMeta, MessageStore, NewMessage

MESSAGES = 40
ATTACHMENT = 2 * 1024 * 1024  # 80 MiB of attachments in all
PAGE = os.sysconf("SC_PAGE_SIZE")


def heavy(workspace: str, index: int) -> NewMessage:
    message = OutboundMessage(
        id=new_id("msg"),
        workspace=workspace,
        from_=Address("hello@acme.com"),
        to=[Address(f"r{index}@example.com")],
        subject=f"report {index}",
        tags=["report"],
        attachments=[Attachment(filename="r.bin", content=os.urandom(ATTACHMENT))],
    )
    now = datetime.now(UTC)
    accepted = Event(
        id=new_id("evt"),
        type="message.accepted",
        created_at=now,
        workspace=workspace,
        message=EventMessage(id=message.id, to=message.to[0].email, from_=message.from_.email),
    )
    meta = MessageMeta(created_ms=int(now.timestamp() * 1000), candidates=["srv_x"])
    return NewMessage(message=message, meta=meta, status="sent", server="srv_x", events=[accepted])


class PeakRss:
    """Samples this process's resident set on a thread while a request runs."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


async def test_get_messages_with_a_filter_that_matches_nothing_loads_every_full_hash(
    client, make_key, redis, workspace
):
    reader = await make_key(["read:messages"])
    store = MessageStore(redis)
    for index in range(MESSAGES):  # one at a time: no large batch left in the allocator to reuse
        await store.enqueue([heavy(workspace, index)])
    before = rss()
    with PeakRss() as sampled:
        response = await client.get("/v1/messages?tag=nothing&limit=100", headers=reader)
        assert response.status == 200
        assert (await response.json())["data"] == []
    grown = max(sampled.peak, rss()) - before
    print(f"RSS growth while listing {MESSAGES} messages of {ATTACHMENT >> 20} MiB: {grown / 2**20:.1f} MiB")
    assert grown < 16 * 1024 * 1024, f"the list grew RSS by {grown / 2**20:.0f} MiB"

    # what matches still lists, with its summary read inside Redis
    found = await (await client.get("/v1/messages?tag=report&to=R3@example.com", headers=reader)).json()
    assert [(m["subject"], m["to"], m["tags"]) for m in found["data"]] == [
        ("report 3", ["r3@example.com"], ["report"])
    ]
