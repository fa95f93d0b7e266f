"""Session ownership, timeouts, the sandbox, retry-time parsing, and the simulator command line."""

from __future__ import annotations

import asyncio
import email.utils
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from providers import postmark, resend, sandbox
from providers.base import Permanent, Sent, Throttled, Transient
from providers.http_errors import HttpAnswer, classify_failure, retry_after_seconds
from providers.simulators.__main__ import build_simulator
from providers.simulators.base import SIMULATOR
from store.redis_server import free_port
from tests.local_egress import LOCAL

from .test_conformance import outbound


async def test_adapter_without_a_session_creates_and_closes_its_own(serve: Any) -> None:
    app = build_simulator("postmark")
    adapter = postmark.Adapter(
        postmark.Config(server_token="sim-key", base_url=await serve(app)), egress=LOCAL
    )
    [outcome] = await adapter.send_batch([outbound()])
    owned = adapter._http._owned
    assert isinstance(outcome, Sent) and owned is not None and not owned.closed
    await adapter.close()
    assert owned.closed


async def test_adapter_never_closes_the_shared_session(serve: Any, http: aiohttp.ClientSession) -> None:
    adapter = postmark.Adapter(
        postmark.Config(server_token="sim-key", base_url=await serve(build_simulator("postmark"))),
        http=http,
        egress=LOCAL,
    )
    await adapter.send_batch([outbound()])
    await adapter.close()
    assert not http.closed and adapter._http._owned is None


async def test_a_slow_provider_times_out_as_transient(serve: Any, http: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"id": "late"})

    app = web.Application()
    app.router.add_post("/emails", stall)
    adapter = resend.Adapter(
        resend.Config(api_key="k", base_url=await serve(app), timeout_seconds=0.2), http=http, egress=LOCAL
    )
    # The server answers only after `release`: an outcome at all proves the timeout fired (how soon
    # after 0.2 s is a row of `python -m bench --phases micro`).
    [outcome] = await adapter.send_batch([outbound()])
    release.set()
    assert isinstance(outcome, Transient) and "timed out" in outcome.reason


async def test_refused_connection_is_transient(http: aiohttp.ClientSession) -> None:
    adapter = resend.Adapter(
        resend.Config(api_key="k", base_url=f"http://127.0.0.1:{free_port()}"), http=http, egress=LOCAL
    )
    [outcome] = await adapter.send_batch([outbound()])
    assert isinstance(outcome, Transient) and not outcome.server_down


async def test_sandbox_accepts_everything_and_sends_nothing() -> None:
    adapter = sandbox.Adapter(sandbox.Config())
    messages = [outbound(), outbound()]
    assert await adapter.send_batch(messages) == [
        Sent(provider_message_id=f"sandbox-{m.id}") for m in messages
    ]


def answer(status: int, **headers: str) -> HttpAnswer:
    return HttpAnswer(status, CIMultiDict(headers), b"")


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds(CIMultiDict({"Retry-After": "7"}), now) == 7.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(CIMultiDict({"Retry-After": http_date}), now) == 30.0
    assert retry_after_seconds(CIMultiDict({"X-RateLimit-Reset": str(int(now) + 12)}), now) == 12.0
    assert retry_after_seconds(CIMultiDict({"X-RateLimit-Reset": str(int(now * 1000) + 1500)}), now) == 1.5
    assert retry_after_seconds(CIMultiDict({"ratelimit-reset": "3"}), now) == 3.0
    assert retry_after_seconds(CIMultiDict(), now) is None


def test_status_classification() -> None:
    now = time.time()
    assert classify_failure(answer(429, **{"Retry-After": "4"}), "slow down", now=now) == Throttled(
        4.0, "HTTP 429: slow down"
    )
    assert classify_failure(answer(401), "bad key", now=now) == Transient(
        "HTTP 401: bad key", server_down=True
    )
    assert classify_failure(answer(404), "no domain", now=now).server_down  # type: ignore[union-attr]
    assert classify_failure(answer(502), "", now=now) == Transient("HTTP 502")
    assert classify_failure(answer(422), "bad to", now=now, code="validation_error") == Permanent(
        "HTTP 422: bad to", code="validation_error"
    )


def test_unknown_simulator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown simulator"):
        build_simulator("sparkpost")
    assert build_simulator("mailgun", rate_limit=5.0)[SIMULATOR].options.rate_limit == 5.0


async def test_simulator_runs_from_the_command_line(http: aiohttp.ClientSession) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "providers.simulators", "resend", "--port", str(port), "--api-key", "re_cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        banner = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
        assert b"resend simulator on" in banner
        adapter = resend.Adapter(
            resend.Config(api_key="re_cli", base_url=f"http://127.0.0.1:{port}"), http=http, egress=LOCAL
        )
        outcome = Transient("not tried")
        for _ in range(50):
            [outcome] = await adapter.send_batch([outbound()])
            if isinstance(outcome, Sent):
                break
            await asyncio.sleep(0.1)
        assert isinstance(outcome, Sent)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)
        process.stdout.close()  # type: ignore[union-attr]
