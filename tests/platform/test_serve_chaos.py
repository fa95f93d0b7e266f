"""Chaos (issues #13 and #14): SIGKILL the whole `mailers serve` (ingress, its local Ray with the campaign
runner, the automation runner and the dispatchers, the embedded Redis with its AOF) while a campaign is
mid-send, 1,000 automation runs are waiting and 100 are mid-send; start it again on the same data dir.

- The campaign resumes by itself and every subscriber gets their message; duplicates only inside the
  campaign's in-flight window (`MAILERS_CAMPAIGN_IN_FLIGHT`, docs/campaigns.md).
- Every run finishes and every send step has sent its message once; duplicates only inside the runner's
  in-flight window (docs/automations.md), bounded by the runs that were mid-send.

One serve for both (each start of a serve costs a start of Ray, ~10-20 s). Shape: campaign "Chaos" to
3,000 `s…` subscribers; automation "later" (custom event `chaos.wait`: wait 30 s, send "Later") has 1,000
waiting runs, and automation "now" (`chaos.send`: send "Now") 100 runs whose messages go to recipients the
sink answers slowly (100 ms, like a slow provider), so the kill lands while they are in flight. The waits'
wake-ups are in Redis only and pass while the server is down: the restarted runner finds them due.
Duplicates are counted and printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.pipeline.conftest import dispatch_idle
from tests.platform.test_serve_safety import (
    MAILERS,
    _env,
    _family,
    _free_port,
    _tail,
    _until_ready,
    stop_serves,
)
from tests.smtp.sink import SinkHandler, SmtpSink

BOOTSTRAP = "mk_" + "d" * 40
AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}
SUBSCRIBERS = 3000  # the campaign's
CAMPAIGN_IN_FLIGHT = 200
WAITING = 1000
MID_SEND = 100
WAIT_SECONDS = 30
AOF_WINDOW = 1.5  # appendfsync everysec: what was written in the last second may not survive a SIGKILL


class SlowForSome(SinkHandler):
    """Answers DATA for `slow…` recipients after 100 ms: a slow provider, so their sends are in flight."""

    async def handle_DATA(self, server, session, envelope) -> str:
        if any(r.startswith("slow") for r in envelope.rcpt_tos):
            await asyncio.sleep(0.1)
        return await super().handle_DATA(server, session, envelope)


def _start(data: Path, port: int, log: Path) -> subprocess.Popen:
    env = _env(
        MAILERS_DATA_DIR=str(data),
        MAILERS_PORT=str(port),
        MAILERS_BOOTSTRAP_KEY=BOOTSTRAP,
        MAILERS_PUBLIC_URL="https://mailers.test",
        MAILERS_ALLOW_PRIVATE_TARGETS="true",  # the SMTP sink listens on 127.0.0.1
        MAILERS_CAMPAIGN_IN_FLIGHT=str(CAMPAIGN_IN_FLIGHT),
        MAILERS_RATE_LIMIT_PER_SECOND="100000",
        MAILERS_RATE_LIMIT_BURST="100000",
    )
    with log.open("w") as out:
        return subprocess.Popen([MAILERS, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _json(http, method: str, url: str, body=None, status: int = 200, params=None):
    async with http.request(method, url, json=body, headers=AUTH, params=params) as response:
        assert response.status == status, await response.text()
        return await response.json()


async def _runs(http, base: str, automation_id: str, status: str | None = None) -> list[dict]:
    found, cursor = [], None
    while True:
        params = {
            "limit": "100",
            **({"status": status} if status else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        page = await _json(http, "GET", f"{base}/v1/automations/{automation_id}/runs", params=params)
        found += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


async def _until(condition, within: float, what: str, log: Path, every: float = 0.2) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what}\n{_tail(log)}"
        await asyncio.sleep(every)


def _kind(recipient: str) -> str:
    return "slow" if recipient.startswith("slow") else recipient[0]  # "s" campaign, "w" waiting runs


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigkill_of_serve_mid_campaign_with_runs_waiting_and_mid_send_loses_nothing(tmp_path):
    import aiohttp

    data, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    started: dict = {}
    began = time.monotonic()
    first = _start(data, port, logs[0])
    second = None
    sink = SmtpSink()
    sink.handler = SlowForSome()
    sink.controller.handler = sink.handler
    with sink:
        try:
            async with aiohttp.ClientSession() as http:
                await _until_ready(http, base, first, logs[0], within=240)
                booted = time.monotonic() - began
                server = {
                    "name": "sink",
                    "provider": "smtp",
                    "config": {"host": "127.0.0.1", "port": sink.port, "security": "none", "pool_size": 4},
                }
                await _json(http, "POST", base + "/v1/sending-servers", server, 201)

                # --- the audience: the campaign's list and the automations' list
                news = await _json(http, "POST", base + "/v1/lists", {"name": "News"}, 201)
                emails = [f"s{i}@example.com" for i in range(SUBSCRIBERS)]
                people = [{"email": e, "attributes": {"first_name": f"S{i}"}} for i, e in enumerate(emails)]
                await _json(
                    http, "POST", f"{base}/v1/lists/{news['id']}/subscribers", {"subscribers": people}
                )
                chaos = await _json(http, "POST", base + "/v1/lists", {"name": "Chaos"}, 201)
                waiters = [f"w{i}@example.com" for i in range(WAITING)]
                senders = [f"slow{i}@example.com" for i in range(MID_SEND)]
                people = [{"email": e} for e in waiters + senders]
                await _json(
                    http, "POST", f"{base}/v1/lists/{chaos['id']}/subscribers", {"subscribers": people}
                )

                # --- the templates, the campaign (a draft until the runs wait) and the automations
                templates = {}
                for subject in ("Later", "Now"):
                    body = {"name": subject, "subject": subject, "html": f"<p>{subject}</p>"}
                    templates[subject] = (await _json(http, "POST", base + "/v1/templates", body, 201))["id"]
                body = {"name": "T", "subject": "Hi {{ first_name }}", "html": "<p>{{ first_name }}</p>"}
                templates["Hi"] = (await _json(http, "POST", base + "/v1/templates", body, 201))["id"]
                body = {
                    "name": "Chaos",
                    "from": "Acme <news@acme.test>",
                    "template": {"id": templates["Hi"]},
                    "audience": {"lists": [news["id"]]},
                    "tracking": {"opens": False, "clicks": False},
                }
                cmp = await _json(http, "POST", base + "/v1/campaigns", body, 201)

                def send(subject: str) -> dict:
                    return {
                        "id": subject.lower(),
                        "type": "send",
                        "template": {"id": templates[subject]},
                        "from": "Acme <hi@acme.test>",
                    }

                now_auto = await _json(
                    http,
                    "POST",
                    base + "/v1/automations",
                    {
                        "name": "now",
                        "status": "active",
                        "trigger": {"type": "event", "event": "chaos.send"},
                        "steps": [send("Now")],
                    },
                    201,
                )
                later = await _json(
                    http,
                    "POST",
                    base + "/v1/automations",
                    {
                        "name": "later",
                        "status": "active",
                        "trigger": {"type": "event", "event": "chaos.wait"},
                        "steps": [{"id": "pause", "type": "wait", "seconds": WAIT_SECONDS}, send("Later")],
                    },
                    201,
                )

                async def post_events(name: str, recipients: list[str]) -> None:
                    events = [{"name": name, "email": e} for e in recipients]
                    await _json(http, "POST", base + "/v1/events", {"events": events}, 202)

                # The runner re-reads live automations once a second: a probe (reentry `never`, so
                # repeating it starts nothing twice) shows when both new automations are seen.
                async def probe_started() -> bool:
                    await post_events("chaos.wait", waiters[:1])
                    await asyncio.sleep(0.3)
                    return len(await _runs(http, base, later["id"])) == 1

                await _until(probe_started, 30, "the runner never saw the new automation", logs[0], every=0)
                await post_events("chaos.wait", waiters[1:])

                async def all_waiting() -> bool:
                    return len(await _runs(http, base, later["id"], "waiting")) == WAITING

                await _until(all_waiting, 60, "the 1,000 runs never all reached their wait", logs[0])
                earliest_wake = min(r["wake_at"] for r in await _runs(http, base, later["id"]))

                # --- the campaign mid-send, then the 100 sends in flight, then the kill
                await _json(http, "POST", f"{base}/v1/campaigns/{cmp['id']}/launch")

                async def campaign_under_way() -> bool:
                    return sum(1 for d in sink.deliveries if d.rcpt_tos[0][0] == "s") >= SUBSCRIBERS // 5

                await _until(campaign_under_way, 180, "the campaign never got under way", logs[0], every=0.02)
                await post_events("chaos.send", senders)
                posted = time.monotonic()

                async def mid_send() -> bool:
                    arrived = sum(1 for d in sink.deliveries if d.rcpt_tos[0].startswith("slow"))
                    return arrived > 0 and time.monotonic() - posted >= AOF_WINDOW

                await _until(mid_send, 60, "no send of the 100 ever arrived", logs[0], every=0.02)
                started |= _family(first.pid)
                for pid in started:  # the whole family at once: ingress, Ray, actors, Redis
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed_at = time.time()
                first.wait()
                at_kill = Counter(_kind(d.rcpt_tos[0]) for d in sink.deliveries)
                assert at_kill["s"] < SUBSCRIBERS, "the campaign had ended before the kill: not mid-send"
                assert at_kill["slow"] < MID_SEND, "every send had arrived before the kill: not mid-send"
                assert at_kill["w"] == 0, "a wait ended before the kill"
                wake = datetime.fromisoformat(earliest_wake).timestamp()
                assert killed_at < wake, "the 1,000 runs were all waiting when the server died"

                # --- the restart: everything resumes by itself
                restarted = time.monotonic()
                second = _start(data, port, logs[1])
                await _until_ready(http, base, second, logs[1], within=240)
                rebooted = time.monotonic() - restarted
                started |= _family(second.pid)

                async def all_ended() -> bool:
                    state = await _json(http, "GET", f"{base}/v1/campaigns/{cmp['id']}")
                    if state["status"] != "sent":
                        return False
                    runs = await _runs(http, base, later["id"]) + await _runs(http, base, now_auto["id"])
                    return len(runs) == WAITING + MID_SEND and all(r["status"] == "completed" for r in runs)

                await _until(all_ended, 240, "the campaign or some runs never finished", logs[1], every=0.3)
                redis_url = json.loads((data / "runtime.json").read_text())["redis_url"]
                redis = aioredis.Redis.from_url(redis_url)
                try:

                    async def idle() -> bool:
                        return await dispatch_idle(redis)

                    await _until(idle, 120, "the dispatchers never went idle", logs[1])
                finally:
                    await redis.aclose()
                state = await _json(http, "GET", f"{base}/v1/campaigns/{cmp['id']}")
                runs = await _runs(http, base, later["id"]) + await _runs(http, base, now_auto["id"])
            campaign = Counter(d.rcpt_tos[0] for d in sink.deliveries if _kind(d.rcpt_tos[0]) == "s")
            automated = Counter(
                (d.rcpt_tos[0], d.parsed()["Subject"]) for d in sink.deliveries if _kind(d.rcpt_tos[0]) != "s"
            )
            campaign_duplicates = sum(c - 1 for c in campaign.values())
            automated_duplicates = sum(c - 1 for c in automated.values())
            print(
                f"\n[serve chaos] SIGKILLed after {at_kill['s']} of {SUBSCRIBERS} campaign deliveries, with "
                f"{WAITING} runs waiting and {MID_SEND} mid-send ({at_kill['slow']} had arrived): campaign "
                f"{campaign_duplicates} duplicates (window {CAMPAIGN_IN_FLIGHT}), automations "
                f"{automated_duplicates}; wall {time.monotonic() - began:.1f} s (first start {booted:.1f} s, "
                f"restart {rebooted:.1f} s), load {os.getloadavg()[0]:.1f}"
            )
            assert set(campaign) == set(emails)
            assert campaign_duplicates <= CAMPAIGN_IN_FLIGHT
            assert state["counters"]["remaining"] == 0
            assert set(automated) == {(e, "Later") for e in waiters} | {(e, "Now") for e in senders}
            assert automated_duplicates <= MID_SEND, "duplicates only inside the in-flight window"
            for run in runs:
                outcomes = [h["outcome"] for h in run["history"]]
                assert outcomes in (["waiting", "sent"], ["sent"]), run
        finally:
            stop_serves((first, second), started)
