"""bench/loadgen.py, the api benches' open-loop load generator, against real servers on 127.0.0.1.

Every test runs the generator as the bench does (`generate`: `python -m bench.loadgen`, a process of its
own) against an aiohttp server written here (a raw asyncio server for the answer cut off mid-way). No
timing is asserted beyond "at least the delay the handler injected"."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from bench.loadgen import Outcome, Plan, build_request, generate

AUTH = {"Authorization": "Bearer mk_test_" + "k" * 32, "Content-Type": "application/json"}
DELAY_MS = 200


def _n(body: bytes) -> int:
    return json.loads(body)["n"]


def _requests(port: int, count: int, *, keyed: bool = False, path: str = "/v1/x") -> list[bytes]:
    return [
        build_request(
            "POST",
            path,
            host=f"127.0.0.1:{port}",
            headers=AUTH | ({"Idempotency-Key": f"key-{i}"} if keyed else {}),
            body=json.dumps({"n": i, "pad": "é" * (i % 7)}).encode(),
        )
        for i in range(count)
    ]


async def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/v1/x", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def server() -> AsyncIterator[Callable]:
    runners: list[web.AppRunner] = []

    async def start(handler) -> int:
        runner, port = await _serve(handler)
        runners.append(runner)
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


async def _run(plan: Plan) -> Outcome:
    return await asyncio.wait_for(generate(plan), 120)  # a hang fails the test instead of stalling it


async def test_every_request_arrives_once_with_its_exact_bytes(server) -> None:
    seen: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((_n(body), list(request.raw_headers), body))
        return web.json_response({"ok": True}, status=202)

    port = await server(handler)
    requests = _requests(port, 60, keyed=True)
    outcome = await _run(Plan(host="127.0.0.1", port=port, rate=300, requests=requests, connections=2))

    assert Counter(n for n, _, _ in seen) == Counter(range(60))  # each once
    for n, headers, body in seen:
        expected_body = json.dumps({"n": n, "pad": "é" * (n % 7)}).encode()
        assert body == expected_body
        assert headers == [
            (b"Host", f"127.0.0.1:{port}".encode()),
            (b"Authorization", AUTH["Authorization"].encode()),
            (b"Content-Type", b"application/json"),
            (b"Idempotency-Key", f"key-{n}".encode()),
            (b"Content-Length", str(len(expected_body)).encode()),
        ]
        assert requests[n].endswith(b"\r\n\r\n" + expected_body)
    assert outcome.codes == {"202": 60}
    assert outcome.status == [202] * 60
    assert len(outcome.latencies()) == 60 and all(ms > 0 for ms in outcome.latencies())


async def test_statuses_and_problem_codes_are_counted(server) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        n = _n(await request.read())
        if n % 4 == 0:
            return web.json_response(
                {"type": "about:blank", "status": 429, "code": "rate_limited"},
                status=429,
                content_type="application/problem+json",
            )
        if n % 4 == 1:
            return web.Response(status=500, text="boom")
        if n % 4 == 2:  # a chunked problem answer: the code is read from the de-chunked body
            response = web.StreamResponse(status=422, headers={"Content-Type": "application/problem+json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b'{"status": 422, ')
            await response.write(b'"code": "invalid_request"}')
            await response.write_eof()
            return response
        return web.json_response({"ok": True}, status=202)

    port = await server(handler)
    outcome = await _run(Plan(host="127.0.0.1", port=port, rate=400, requests=_requests(port, 40)))

    assert outcome.codes == {"429 rate_limited": 10, "500": 10, "422 invalid_request": 10, "202": 10}
    assert outcome.status == [(429, 500, 422, 202)[n % 4] for n in range(40)]
    assert outcome.chunked == 10
    assert len(outcome.latencies()) == 10  # only the 2xx


async def test_a_slow_answer_holds_only_its_own_connection(server) -> None:
    """Request 3 is held until requests 4-6 have arrived and then DELAY_MS more: they cannot have been
    queued behind it, and its latency shows the delay."""
    peer: dict[int, int] = {}
    later_arrived = asyncio.Event()
    answered_slow = False
    arrived_while_held: set[int] = set()

    async def handler(request: web.Request) -> web.Response:
        nonlocal answered_slow
        n = _n(await request.read())
        peer[n] = request.transport.get_extra_info("peername")[1]  # type: ignore[union-attr]
        if not answered_slow and n != 3 and 3 in peer:
            arrived_while_held.add(n)
        if {4, 5, 6} <= arrived_while_held:
            later_arrived.set()
        if n == 3:
            try:
                await asyncio.wait_for(later_arrived.wait(), 30)
            except TimeoutError:
                pass  # the asserts below say what went wrong
            await asyncio.sleep(DELAY_MS / 1000)  # the injected delay, not a wait for something
            answered_slow = True
        return web.json_response({"ok": True}, status=202)

    port = await server(handler)
    plan = Plan(host="127.0.0.1", port=port, rate=200, requests=_requests(port, 12), connections=1)
    outcome = await _run(plan)

    assert later_arrived.is_set(), arrived_while_held
    assert all(peer[n] != peer[3] for n in (4, 5, 6))  # on other connections, opened for them
    assert outcome.opened >= 2
    assert outcome.codes == {"202": 12}
    assert outcome.latency_ms[3] >= DELAY_MS


async def test_latency_counts_from_the_scheduled_start_when_no_connection_is_free(server) -> None:
    """One connection at most: request 4 waits for request 3's slow answer, and its latency carries
    that wait (from its scheduled start, 5 ms after 3's), as wrk2 counts it."""
    order: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        n = _n(await request.read())
        order.append(n)
        if n == 3:
            await asyncio.sleep(DELAY_MS / 1000)  # the injected delay
        return web.json_response({"ok": True}, status=202)

    port = await server(handler)
    plan = Plan(
        host="127.0.0.1", port=port, rate=200, requests=_requests(port, 8), connections=1, max_connections=1
    )
    outcome = await _run(plan)

    assert order == list(range(8))
    assert outcome.opened == 1 and outcome.waited >= 1
    assert outcome.latency_ms[3] >= DELAY_MS
    assert outcome.latency_ms[4] >= DELAY_MS - 5  # scheduled 5 ms after 3, sent after 3's answer
    assert outcome.send_lag_ms[4] >= DELAY_MS - 5
    assert outcome.codes == {"202": 8}


async def test_connection_close_answers_are_followed_by_a_new_connection(server) -> None:
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(_n(await request.read()))
        response = web.json_response({"ok": True}, status=202)
        response.force_close()
        return response

    port = await server(handler)
    outcome = await _run(Plan(host="127.0.0.1", port=port, rate=200, requests=_requests(port, 20)))

    assert sorted(seen) == list(range(20))
    assert outcome.codes == {"202": 20}
    assert outcome.closed_by_server == 20
    assert outcome.opened >= 20  # each connection carried one request


async def test_a_server_that_closes_mid_response_is_an_error_not_a_hang() -> None:
    """A raw server: n % 3 == 0 answered whole, 1 cut off inside the body, 2 closed before a byte."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                n = _n(await reader.readexactly(length))
                if n % 3 == 0:
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                    await writer.drain()
                    continue
                if n % 3 == 1:
                    writer.write(b'HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{"partial')
                    await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    listener = await asyncio.start_server(connection, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        plan = Plan(host="127.0.0.1", port=port, rate=200, requests=_requests(port, 30), timeout=60)
        outcome = await _run(plan)
    finally:
        listener.close()
        await listener.wait_closed()

    assert outcome.codes == {"202": 10, "closed mid-response": 10, "closed before answer": 10}
    assert [s for s in outcome.status] == [202 if n % 3 == 0 else 0 for n in range(30)]


async def test_a_cancelled_run_ends_its_generator_process(server) -> None:
    """A caller's timeout cancels `generate`; the generator's process goes with it, not left running."""
    held, release = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        held.set()
        await release.wait()  # no answer until the run is cancelled
        return web.Response()

    port = await server(handler)
    before = _generators()
    run = asyncio.ensure_future(
        generate(Plan(host="127.0.0.1", port=port, rate=100, requests=_requests(port, 3)))
    )
    await asyncio.wait_for(held.wait(), 60)
    assert _generators() - before  # the run's process is there
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    release.set()
    assert not _generators() - before


def _generators() -> set[int]:
    """This process's `python -m bench.loadgen` children (alive, not yet reaped)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z" and b"bench.loadgen" in cmdline:
            found.add(int(entry))
    return found
