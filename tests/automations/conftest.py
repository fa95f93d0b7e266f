"""Helpers of the automation tests: templates, lists and automations made through the API, a runner body
on an injected clock, and the SMTP sink fixtures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from actors.automations.body import AutomationRunner
from analytics.store import open_store
from tests.conftest import make_settings
from tests.pipeline.conftest import sink, smtp_server  # noqa: F401  (fixtures)

T0 = 1_790_000_000.0  # 2026-09-21: a fixed start for the runner's clock


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path):
    opened = open_store(f"duckdb://{tmp_path / 'a.duckdb'}")
    await opened.migrate()
    yield opened
    await opened.close()


@pytest.fixture
def runner_for(redis, redis_url, tmp_path, store) -> Callable[..., AutomationRunner]:
    def build(clock: Callable[[], float], **overrides) -> AutomationRunner:
        settings = make_settings(tmp_path, redis_url, **overrides.pop("settings", {}))
        return AutomationRunner(
            redis, settings, clock=clock, reader=lambda: store, segment_period=0, **overrides
        )

    return build


async def new_template(
    client, headers, *, html: str = "<p>Hi {{ name }}</p>", variables=None, subject="Hi"
) -> dict:
    body = {"name": "T", "subject": subject, "html": html, "variables": variables or {}}
    response = await client.post("/v1/templates", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def new_automation(client, headers, **body) -> dict:
    response = await client.post(
        "/v1/automations", json={"name": "A", "status": "active", **body}, headers=headers
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def trigger(client, headers, automation_id: str, email: str, data=None, key: str | None = None):
    extra = {"Idempotency-Key": key} if key else {}
    return await client.post(
        f"/v1/automations/{automation_id}/trigger",
        json={"email": email, "data": data or {}},
        headers={**headers, **extra},
    )


async def runs_of(client, headers, automation_id: str, status: str | None = None) -> list[dict]:
    found, cursor = [], None
    while True:
        query = {
            "limit": "100",
            **({"status": status} if status else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        response = await client.get(f"/v1/automations/{automation_id}/runs", params=query, headers=headers)
        assert response.status == 200, await response.text()
        page = await response.json()
        found += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return found
