"""The SMTP sink fixtures, and the event sink under its real name: erasure goes through it (it owns the
analytics store in DuckDB mode and keeps the stream from bringing an erased person back)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas.settings import load_settings
from tests.pipeline.conftest import sink, smtp_server  # noqa: F401  (fixtures)


@pytest.fixture
async def event_sink(ray_session, redis, redis_url, tmp_path) -> AsyncIterator[object]:
    import ray

    from actors.event_sink.client import EVENT_SINK, start_event_sink

    settings = load_settings(
        {}, data_dir=str(tmp_path / "analytics"), redis_url=redis_url, ray_namespace="mailers-test"
    )
    handle = start_event_sink(settings, redis_url=redis_url, name=EVENT_SINK, max_latency=0.05)
    assert await handle.ready.remote()
    yield handle
    await handle.shutdown.remote()
    ray.kill(handle)
