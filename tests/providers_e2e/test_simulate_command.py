"""`mailers simulate resend --port N --webhook-url URL` as a real subprocess: the Resend adapter sends
to it, it records the message and posts a webhook signed with the secret it was given."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from providers import resend
from providers.base import Sent
from providers.egress import provider_session
from providers.inbound import InboundConfig, parse_inbound
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage
from store.redis_server import free_port
from tests.local_egress import LOCAL
from tests.pipeline.conftest import wait_for

SECRET = "whsec_" + base64.b64encode(b"c" * 24).decode()
MAILERS = Path(sys.executable).parent / "mailers"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with provider_session(LOCAL) as session:
        yield session


async def start_command(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        str(MAILERS), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        banner = (await process.stdout.readline()).decode()
    return process, banner


async def answering(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_the_simulate_command_serves_a_provider_api_and_its_webhooks(aiohttp_server, http) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hooks", hook)
    webhook_url = str((await aiohttp_server(receiver)).make_url("/hooks"))
    port = free_port()
    process, banner = await start_command(
        "simulate", "resend", "--port", str(port), "--webhook-url", webhook_url, "--webhook-secret", SECRET
    )
    try:
        assert banner.startswith(f"resend simulator on http://127.0.0.1:{port}"), banner
        base_url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: answering(http, f"{base_url}/_sim/messages"), within=10, every=0.1)
        adapter = resend.Adapter(resend.Config(api_key="sim-key", base_url=base_url), http=http, egress=LOCAL)
        sent = OutboundMessage(
            id=new_id("msg"),
            workspace="cli",
            from_=Address("hello@acme.test"),
            to=[Address("ana@example.com")],
            subject="From the CLI",
            text="Hi",
        )
        [outcome] = await adapter.send_batch([sent])
        assert isinstance(outcome, Sent)
        async with http.get(f"{base_url}/_sim/messages") as response:
            recorded = (await response.json())["messages"]
        assert [(m["provider_message_id"], m["subject"]) for m in recorded] == [
            (outcome.provider_message_id, "From the CLI")
        ]
        await wait_for(lambda: len(received) == 3, within=10)  # delivered, opened, clicked
    finally:
        process.terminate()
        await process.wait()
    events = []
    for headers, body in received:  # signed with the secret the command was given
        result = await parse_inbound(
            "resend",
            headers=headers,
            body=body,
            config=InboundConfig(resend_secret=SECRET),
            server_id="srv_cli",
            now=time.time(),
            replay_guard=None,
            cert_fetcher=None,
        )
        events += [(e.type, e.provider_message_id, e.recipient) for e in result.events]
    assert sorted(events) == [
        (kind, outcome.provider_message_id, "ana@example.com")
        for kind in ("message.clicked", "message.delivered", "message.opened")
    ]
