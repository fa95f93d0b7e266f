"""SIGKILL the whole `mailers serve` (ingress, its local Ray with the campaign runner and dispatchers,
the embedded Redis with its AOF) mid-campaign, start it again on the same data dir: the campaign resumes
by itself and every subscriber gets their message; duplicates only inside the in-flight window (counted
and printed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.platform.test_serve_safety import (
    MAILERS,
    _env,
    _family,
    _free_port,
    _tail,
    _until_ready,
    stop_serves,
)
from tests.smtp.sink import SmtpSink

BOOTSTRAP = "mk_" + "c" * 40
AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}
SUBSCRIBERS = 3000
IN_FLIGHT = 200


def _start(data: Path, port: int, log: Path) -> subprocess.Popen:
    env = _env(
        MAILERS_DATA_DIR=str(data),
        MAILERS_PORT=str(port),
        MAILERS_BOOTSTRAP_KEY=BOOTSTRAP,
        MAILERS_PUBLIC_URL="https://mailers.test",
        MAILERS_ALLOW_PRIVATE_TARGETS="true",  # the SMTP sink listens on 127.0.0.1
        MAILERS_CAMPAIGN_IN_FLIGHT=str(IN_FLIGHT),
        MAILERS_RATE_LIMIT_PER_SECOND="100000",
        MAILERS_RATE_LIMIT_BURST="100000",
    )
    with log.open("w") as out:
        return subprocess.Popen([MAILERS, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _json(http, method: str, url: str, body=None, status: int = 200):
    async with http.request(method, url, json=body, headers=AUTH) as response:
        assert response.status == status, await response.text()
        return await response.json()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigkill_of_the_whole_serve_mid_campaign_resumes_and_sends_everyone(tmp_path):
    import aiohttp

    data, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    started: dict = {}
    first = _start(data, port, logs[0])
    second = None
    with SmtpSink() as sink:
        try:
            async with aiohttp.ClientSession() as http:
                await _until_ready(http, base, first, logs[0], within=240)
                server = {
                    "name": "sink",
                    "provider": "smtp",
                    "config": {"host": "127.0.0.1", "port": sink.port, "security": "none", "pool_size": 8},
                }
                await _json(http, "POST", base + "/v1/sending-servers", server, 201)
                made = await _json(http, "POST", base + "/v1/lists", {"name": "News"}, 201)
                emails = [f"s{i}@example.com" for i in range(SUBSCRIBERS)]
                people = [{"email": e, "attributes": {"first_name": f"S{i}"}} for i, e in enumerate(emails)]
                await _json(
                    http, "POST", f"{base}/v1/lists/{made['id']}/subscribers", {"subscribers": people}
                )
                template = {"name": "T", "subject": "Hi {{ first_name }}", "html": "<p>{{ first_name }}</p>"}
                tpl = await _json(http, "POST", base + "/v1/templates", template, 201)
                body = {
                    "name": "Chaos",
                    "from": "Acme <news@acme.test>",
                    "template": {"id": tpl["id"]},
                    "audience": {"lists": [made["id"]]},
                    "tracking": {"opens": False, "clicks": False},
                }
                cmp = await _json(http, "POST", base + "/v1/campaigns", body, 201)
                await _json(http, "POST", f"{base}/v1/campaigns/{cmp['id']}/launch")
                deadline = time.monotonic() + 180
                while len(sink.deliveries) < SUBSCRIBERS // 5:
                    assert time.monotonic() < deadline, _tail(logs[0])
                    await asyncio.sleep(0.05)
                started |= _family(first.pid)
                at_kill = len(sink.deliveries)
                for pid in started:  # the whole family at once: ingress, Ray, actors, Redis
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                first.wait()
                second = _start(data, port, logs[1])
                await _until_ready(http, base, second, logs[1], within=240)
                started |= _family(second.pid)
                deadline = time.monotonic() + 240
                while True:
                    state = await _json(http, "GET", f"{base}/v1/campaigns/{cmp['id']}")
                    if state["status"] == "sent":
                        break
                    assert time.monotonic() < deadline, (state, _tail(logs[1]))
                    await asyncio.sleep(0.3)
            counts = Counter(to for d in sink.deliveries for to in d.rcpt_tos)
            duplicates = sum(c - 1 for c in counts.values())
            print(
                f"\n[campaign chaos] serve SIGKILLed after {at_kill} of {SUBSCRIBERS} deliveries: "
                f"{len(counts)} subscribers got mail, {duplicates} duplicates (in-flight window {IN_FLIGHT})"
            )
            assert at_kill < SUBSCRIBERS
            assert set(counts) == set(emails)
            assert duplicates <= IN_FLIGHT
            assert state["counters"]["remaining"] == 0
        finally:
            stop_serves((first, second), started)
