"""Shared fixtures: a real redis-server per test session, a real local Ray on demand.

`make test` runs the suite in parallel workers (pytest-xdist): each worker is a test session of its own,
with its own redis-server, its own local Ray and its own temporary directories, so no two tests running at
once share a server (a test's `flushdb` empties only its worker's Redis). xdist hands each worker its tests
in collection order, so a worker runs a subsequence of the serial order; a test that leaves a named actor
running in its worker's Ray errors at teardown (below), so no test meets another's actors."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from actors.gateway import Gateway
from actors.runtime import CALM_RAY, QUIET_RAY
from ingress.app import create_app
from schemas.settings import Settings, load_settings
from store.api_keys import ApiKeyStore, generate_secret, new_record
from store.redis_server import RedisServer
from store.workspaces import WorkspaceStore


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches the session's Ray, directly or through other fixtures (the gateway, the
    app), is marked `ray`: `-m "not ray"` then runs exactly the tests that need no Ray, and no file has
    to remember a hand-written marker."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


# --- actors a test leaves behind --------------------------------------------------------------------
# Every actor is a named, detached one (actors/runtime.py): it outlives the test that started it, keeps
# reading the session's Redis, and a later test of the same worker meets it in its consumer groups or
# queues. So a test stops what it starts; this is the check that it did.

_SESSION_ACTORS: set[tuple[str, str]] = set()  # (namespace, name) of the session gateway's actors
LEFT_ACTORS_GRACE_SECONDS = 10.0  # a kill a test sent in its teardown is asynchronous; give it time


def named_actors() -> set[tuple[str, str]]:
    """The live named actors of this session's Ray, in every namespace (none before Ray is started)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return set()
    return {(a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True)}


def _left_behind(before: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return named_actors() - before - _SESSION_ACTORS


_BEFORE = pytest.StashKey[set[tuple[str, str]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    item.stash[_BEFORE] = named_actors()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Once a test's fixtures are torn down, the named actors it started and did not stop are stopped,
    and its teardown fails naming them: they would otherwise read the streams and queues of the tests
    that come after it in this worker."""
    result = yield
    before = item.stash.get(_BEFORE, set())
    left = _left_behind(before)
    deadline = time.monotonic() + LEFT_ACTORS_GRACE_SECONDS
    while left and time.monotonic() < deadline:  # kills the test sent itself, still under way
        time.sleep(0.1)
        left = _left_behind(before)
    if left:
        import ray

        for namespace, name in sorted(left):
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            except ValueError:  # gone meanwhile
                pass
        names = ", ".join(f"{namespace}/{name}" for namespace, name in sorted(left))
        pytest.fail(f"the test left these named actors running (now killed): {names}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray for the whole session; yields the address other processes join with."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # One machine, loopback only: no token needed for the test processes that join this cluster.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = Path("/tmp") / f"rayt{os.getpid()}"
    context = ray.init(
        num_cpus=4,
        namespace="mailers-test",
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(temp),
        configure_logging=False,
        _node_ip_address="127.0.0.1",
        # The serve's settings for what a local Ray does at idle (actors/runtime.py): with a Ray per
        # worker, their housekeeping would otherwise take a share of the cores the tests need.
        _system_config={**QUIET_RAY, **CALM_RAY},
    )
    yield context.address_info["gcs_address"]
    ray.shutdown()


# --- the app on real Redis and real Ray, and keys to call it with -------------------------------


def make_settings(tmp_path, redis_url: str, **overrides) -> Settings:
    values = dict(
        data_dir=str(tmp_path),
        redis_url=redis_url,
        secret_key="s" * 40,
        ray_namespace="mailers-test",
        rate_limit_per_second=10_000.0,
        rate_limit_burst=10_000,
        # The simulators, aiosmtpd and moto listen on 127.0.0.1: the operator's opt-in, made explicit.
        allow_private_targets=True,
    )
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture(scope="session")
def gateway(ray_session, redis_server) -> Gateway:
    settings = load_settings(
        {},
        redis_url=redis_server.url,
        ray_namespace="mailers-test",
        secret_key="s" * 40,
        allow_private_targets=True,  # the dispatchers send to simulators on 127.0.0.1
    )
    gateway = Gateway.start(settings, redis_url=redis_server.url)
    _SESSION_ACTORS.update(named_actors())  # the gateway's: they live as long as the session
    return gateway


@pytest.fixture
def settings(tmp_path, redis_url) -> Settings:
    return make_settings(tmp_path, redis_url)


AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def app_client(aiohttp_client, tmp_path, redis_url, redis, gateway) -> AppFactory:
    """Build an app (optionally with other settings) and a test client for it."""

    async def build(*, app_hook=None, **overrides) -> TestClient:
        app = create_app(
            make_settings(tmp_path, redis_url, **overrides), redis_url=redis_url, gateway=gateway
        )
        if app_hook is not None:
            app_hook(app)
        return await aiohttp_client(app)

    return build


@pytest.fixture
async def client(app_client) -> TestClient:
    return await app_client()


KeyMaker = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def workspace() -> str:
    """Each test its own workspace: session-long actors (suppression shards) keep per-workspace memory,
    and Redis is flushed between tests, so a shared name would carry one test's state into the next."""
    import uuid

    return f"acme-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_key(redis, workspace) -> KeyMaker:
    """Create a key straight in the store (default: this test's workspace); returns its Authorization."""
    default_workspace = workspace

    async def make(
        scopes: list[str], *, workspace: str = default_workspace, domains: list[str] | None = None
    ) -> dict[str, str]:
        await WorkspaceStore(redis).create(workspace)
        secret = generate_secret()
        await ApiKeyStore(redis).create(new_record(workspace, "test", scopes, secret=secret, domains=domains))
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
async def admin(make_key) -> dict[str, str]:
    return await make_key(["admin"])
