"""Campaign fixtures: an audience, a template and an SMTP sink set up over the API, and a runner body
with an injected clock driven step by step (the session's real dispatchers deliver to the sink)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from email import policy
from email.parser import BytesHeaderParser, BytesParser

import pytest

from actors.campaigns.body import CampaignRunner
from ingress.context import SERVICES
from store import keyspace
from store.campaigns import CampaignStore
from tests.pipeline.conftest import create_smtp_server, dispatch_idle
from tests.smtp.sink import SmtpSink

SCOPES = ["write:campaigns", "write:lists", "write:templates", "write:suppressions", "admin"]
TEMPLATE = {
    "name": "News",
    "subject": "Hi {{ first_name }}",
    "html": "<p>Hello {{ first_name }} &lt;{{ email }}&gt;</p>",
    "variables": {"first_name": {"type": "string", "required": True}},
}


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(app_client):
    """The app with an https public URL: RFC 8058 one-click needs an HTTPS link (List-Unsubscribe-Post)."""
    return await app_client(public_url="https://mailers.test")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


async def make_audience(
    client, headers, count: int, *, first_name=lambda i: f"P{i}"
) -> tuple[str, list[str]]:
    made = await client.post("/v1/lists", json={"name": "News"}, headers=headers)
    assert made.status == 201, await made.text()
    list_id = (await made.json())["id"]
    emails = [f"p{i}@example.com" for i in range(count)]
    for start in range(0, count, 10_000):
        people = []
        for i in range(start, min(count, start + 10_000)):
            name = first_name(i)
            people.append({"email": emails[i], "attributes": {} if name is None else {"first_name": name}})
        added = await client.post(
            f"/v1/lists/{list_id}/subscribers", json={"subscribers": people}, headers=headers
        )
        assert added.status == 200, await added.text()
        assert (await added.json())["created"] == len(people)
    return list_id, emails


async def make_template(client, headers, **overrides) -> str:
    made = await client.post("/v1/templates", json={**TEMPLATE, **overrides}, headers=headers)
    assert made.status == 201, await made.text()
    return (await made.json())["id"]


async def make_campaign(
    client, headers, list_id: str, template_id: str, *, launch: bool = True, **extra
) -> str:
    body = {
        "name": "December news",
        "from": "Acme <news@acme.test>",
        "template": {"id": template_id},
        "audience": {"lists": [list_id]},
        "tracking": {"opens": False, "clicks": False},
        **extra,
    }
    made = await client.post("/v1/campaigns", json=body, headers=headers)
    assert made.status == 201, await made.text()
    campaign_id = (await made.json())["id"]
    if launch:
        launched = await client.post(f"/v1/campaigns/{campaign_id}/launch", headers=headers)
        assert launched.status == 200, await launched.text()
    return campaign_id


async def smtp(client, headers, sink: SmtpSink) -> dict:
    return await create_smtp_server(client, headers, sink.port)


async def smtp_campaign(
    client, make_key, sink: SmtpSink, count: int
) -> tuple[dict, str, list[str], str, str]:
    """The usual draft: a key, the sink as the SMTP server, `count` subscribers on one list, the standard
    template. Returns (headers, list_id, emails, template_id, campaign_id)."""
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, count)
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(client, headers, list_id, template_id)
    return headers, list_id, emails, template_id, campaign_id


def runner(client, *, clock=None, **options) -> CampaignRunner:
    services = client.app[SERVICES]
    return CampaignRunner(services.redis, services.settings, clock=clock or time.time, **options)


async def campaign(client, headers, campaign_id: str) -> dict:
    got = await client.get(f"/v1/campaigns/{campaign_id}", headers=headers)
    assert got.status == 200, await got.text()
    return await got.json()


async def drive(
    body: CampaignRunner,
    client,
    headers,
    campaign_id: str,
    *,
    until=("sent",),
    within: float = 120.0,
    clock: Clock | None = None,
):
    """Step the runner until the campaign's status is one of `until`; between idle passes the real
    dispatchers deliver (what the in-flight window waits for), so this polls with a deadline."""
    deadline = time.monotonic() + within
    while True:
        await body.run_until_idle()
        state = await campaign(client, headers, campaign_id)
        if state["status"] in until:
            return state
        assert time.monotonic() < deadline, (
            f"campaign stuck: {state['status']} {state['progress']} {state['counters']}"
        )
        if clock is not None:
            clock.now += 1.0  # the runner's time moves a second per pass
        await asyncio.sleep(0.02)


async def settle(redis, body: CampaignRunner, within: float = 60.0) -> None:
    """Wait until the dispatchers are idle (nothing more can reach the sink), then count their events."""
    deadline = time.monotonic() + within
    while not await dispatch_idle(redis):
        assert time.monotonic() < deadline, "dispatch did not become idle"
        await asyncio.sleep(0.02)
    await body.count_events()
    while await body.count_events():
        pass


async def until_sending(body: CampaignRunner, redis, workspace: str, campaign_id: str) -> None:
    """Step the runner through the audience snapshot (resolve, exclude, pack) to its first chunk to send."""
    while (await store_state(redis, workspace, campaign_id)).text("phase") in ("resolve", "exclude", "pack"):
        assert await body.step()


def parsed(delivery):
    return BytesParser(policy=policy.default).parsebytes(delivery.content)


def header_fields(delivery) -> dict[str, str]:
    """The top-level headers only, unfolded: 50x cheaper than `parsed` (the default policy's full parse
    cost ~4 ms a message, most of the 10,000-subscriber test's wall time)."""
    fields = BytesHeaderParser(policy=policy.compat32).parsebytes(delivery.content)
    return {name: value.replace("\r\n", "").replace("\n", "") for name, value in fields.items()}


def recipients(sink: SmtpSink) -> list[str]:
    return [r for d in sink.deliveries for r in d.rcpt_tos]


async def store_state(redis, workspace: str, campaign_id: str):
    return await CampaignStore(redis).get(workspace, campaign_id)


async def packed_snapshot(redis, workspace: str, campaign_id: str) -> list[str]:
    """A sending campaign's whole audience snapshot in order, read from its pages (the zset is gone)."""
    state = await store_state(redis, workspace, campaign_id)
    assert state.number("packed") == 1
    assert not await redis.exists(keyspace.campaign_audience(workspace, campaign_id))
    found = await CampaignStore(redis).packed_chunk(workspace, campaign_id, after="", count=10**6, upto=None)
    assert [at for _, at in found] == list(range(len(found)))  # every page full but the last
    return [sub_id for sub_id, _ in found]
