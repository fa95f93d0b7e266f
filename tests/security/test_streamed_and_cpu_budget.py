"""Issue #11/#12: streamed imports take any size up to their own cap; heavy work is charged its CPU."""

from __future__ import annotations

import pytest

from actors.imports.body import ImportRunner
from ingress.app import create_app
from ingress.cpu_budget import CpuBudget
from store.keyspace import import_progress
from tests.conftest import make_settings

SMALL_BODY_CAP = 64 * 1024
IMPORT_CAP = 512 * 1024
BULK = {
    "messages": [
        {"from": "Acme <hello@acme.com>", "to": f"u{i}@example.com", "subject": "Hi", "text": "x"}
        for i in range(25)  # more than off_loop.HEAVY_ITEMS: validated on the worker thread, metered
    ]
}


def csv_of(rows: int) -> bytes:
    return b"email,name\n" + b"".join(b"user%07d@example.com,Name %d\n" % (i, i) for i in range(rows))


@pytest.fixture
async def small_client(aiohttp_client, tmp_path, redis_url):
    settings = make_settings(
        tmp_path,
        redis_url,
        max_body_bytes=SMALL_BODY_CAP,
        max_import_bytes=IMPORT_CAP,
        body_bytes_per_second=1024.0,  # an import charged to it would be refused the second time
        worker_cpu_per_key=1e-6,  # any heavy request leaves the key in debt for long
        worker_cpu_burst_seconds=1e-6,
    )
    return await aiohttp_client(create_app(settings, redis_url=redis_url, gateway=None))


async def _list(client, headers) -> str:
    response = await client.post("/v1/lists", json={"name": "News"}, headers=headers)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def _import(client, headers, list_id: str, body) -> tuple[int, dict]:
    response = await client.post(
        f"/v1/lists/{list_id}/imports", data=body, headers={**headers, "Content-Type": "text/csv"}
    )
    return response.status, await response.json()


async def test_an_import_larger_than_max_body_bytes_is_streamed_and_not_charged_bytes(
    small_client, admin, redis
) -> None:
    list_id = await _list(small_client, admin)
    body = csv_of(8_000)  # ~270 KiB: four times MAILERS_MAX_BODY_BYTES
    assert SMALL_BODY_CAP < len(body) < IMPORT_CAP
    for _ in range(2):  # the byte budget (1 KiB/s) would refuse the second one if imports were charged
        status, started = await _import(small_client, admin, list_id, body)
        assert status == 202, started
    await ImportRunner(redis).run_until_idle()
    url = f"/v1/lists/{list_id}/imports/{started['id']}"
    done = await (await small_client.get(url, headers=admin)).json()
    assert (done["status"], done["rows"]) == ("completed", 8_000)


async def test_an_import_above_its_cap_is_refused_413_by_length_and_while_streamed(
    small_client, admin, redis, workspace
) -> None:
    list_id = await _list(small_client, admin)
    body = csv_of(20_000)  # ~680 KiB
    assert len(body) > IMPORT_CAP
    status, problem = await _import(small_client, admin, list_id, body)
    assert (status, problem["code"]) == (413, "payload_too_large")

    async def chunked():  # no Content-Length: only counting while reading can stop it
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    status, problem = await _import(small_client, admin, list_id, chunked())
    assert (status, problem.get("code")) == (413, "payload_too_large"), (status, problem)
    progress = [await redis.hgetall(key) async for key in redis.scan_iter(import_progress(workspace, "*"))]
    reasons = sorted(item.get(b"reason", b"") for item in progress)
    assert reasons == [b"upload failed: BodyTooLarge"], progress  # the chunked one, which had started


async def test_a_key_whose_heavy_work_used_its_worker_cpu_is_refused_429_until_repaid(
    small_client, admin
) -> None:
    server = {"name": "sandbox", "provider": "sandbox"}
    assert (await small_client.post("/v1/sending-servers", json=server, headers=admin)).status == 201
    first = await small_client.post("/v1/send/bulk", json=BULK, headers=admin)
    assert first.status == 202, await first.text()
    refused = await small_client.post("/v1/send/bulk", json=BULK, headers=admin)
    assert refused.status == 429, await refused.text()
    assert (await refused.json())["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


def test_cpu_budget_goes_into_debt_and_says_when_it_is_repaid() -> None:
    budget = CpuBudget(seconds_per_second=0.5, burst_seconds=1.0)
    assert budget.wait("k", now=0.0) == 0.0
    budget.charge("k", 3.0, now=0.0)  # one request cost more than the burst: charged in full
    assert budget.wait("k", now=0.0) == pytest.approx(4.0)
    assert budget.wait("other", now=0.0) == 0.0  # per key
    assert budget.wait("k", now=3.0) == pytest.approx(1.0)
    assert budget.wait("k", now=4.1) == 0.0
    budget.charge("k", 0.01, now=100.0)
    assert budget.wait("k", now=100.0) == 0.0  # refilled only up to the burst, then spent a little


def test_cpu_budget_memory_is_bounded_by_active_keys() -> None:
    budget = CpuBudget(seconds_per_second=1.0, burst_seconds=1.0, max_keys=3)
    for i in range(100):
        budget.charge(f"k{i}", 0.5, now=float(i))
    assert len(budget._accounts) <= 3
