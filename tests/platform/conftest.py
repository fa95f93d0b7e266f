"""An app on real Redis and real Ray, and keys to call it with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from actors.gateway import Gateway
from ingress.app import create_app
from schemas.settings import Settings, load_settings
from store.api_keys import ApiKeyStore, generate_secret, new_record
from store.workspaces import WorkspaceStore


def make_settings(tmp_path, redis_url: str, **overrides) -> Settings:
    values = dict(
        data_dir=str(tmp_path), redis_url=redis_url, secret_key="s" * 40, ray_namespace="mailers-test",
        rate_limit_per_second=10_000.0, rate_limit_burst=10_000,
    )
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture(scope="session")
def gateway(ray_session, redis_server) -> Gateway:
    settings = load_settings({}, redis_url=redis_server.url, ray_namespace="mailers-test", secret_key="s" * 40)
    return Gateway.start(settings, redis_url=redis_server.url)


@pytest.fixture
def settings(tmp_path, redis_url) -> Settings:
    return make_settings(tmp_path, redis_url)


AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def app_client(aiohttp_client, tmp_path, redis_url, redis, gateway) -> AppFactory:
    """Build an app (optionally with other settings) and a test client for it."""

    async def build(*, app_hook=None, **overrides) -> TestClient:
        app = create_app(make_settings(tmp_path, redis_url, **overrides), redis_url=redis_url, gateway=gateway)
        if app_hook is not None:
            app_hook(app)
        return await aiohttp_client(app)

    return build


@pytest.fixture
async def client(app_client) -> TestClient:
    return await app_client()


KeyMaker = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def make_key(redis) -> KeyMaker:
    """Create a key straight in the store; returns the Authorization header for it."""

    async def make(scopes: list[str], *, workspace: str = "acme", domains: list[str] | None = None) -> dict[str, str]:
        await WorkspaceStore(redis).create(workspace)
        secret = generate_secret()
        await ApiKeyStore(redis).create(new_record(workspace, "test", scopes, secret=secret, domains=domains))
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
async def admin(make_key) -> dict[str, str]:
    return await make_key(["admin"])
