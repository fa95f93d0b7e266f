"""Real processes: the CLI, `mailers serve` end to end, and a second process finding the actors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MAILERS = str(Path(sys.executable).parent / "mailers")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env.update(values)
    return env


async def test_cli_creates_a_key_that_works(client, redis_url, tmp_path):
    env = _env(MAILERS_REDIS_URL=redis_url, MAILERS_DATA_DIR=str(tmp_path))
    made = subprocess.run(
        [MAILERS, "workspaces", "create", "cli-ws"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    created = subprocess.run(
        [
            MAILERS,
            "keys",
            "create",
            "--workspace",
            "cli-ws",
            "--name",
            "ops",
            "--scopes",
            "admin,send",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["scopes"] == ["admin", "send"] and key["secret"].startswith("mk_")
    response = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key['secret']}"})
    assert response.status == 200
    assert [k["id"] for k in (await response.json())["data"]] == [key["id"]]


def test_cli_refuses_unknown_scopes_and_bad_settings(redis_url, tmp_path):
    env = _env(MAILERS_REDIS_URL=redis_url, MAILERS_DATA_DIR=str(tmp_path))
    bad = subprocess.run(
        [MAILERS, "keys", "create", "--workspace", "x", "--name", "n", "--scopes", "fly"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown scopes" in bad.stderr
    env["MAILERS_PORT"] = "not-a-port"
    invalid = subprocess.run([MAILERS, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert invalid.returncode == 2
    assert invalid.stderr.strip().splitlines() == [
        "mailers: MAILERS_PORT must be an integer, got 'not-a-port'"
    ]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_commands_reuse_the_password_protected_redis(data: Path, env: dict[str, str]) -> None:
    """runtime.json (0600) carries the URL with the password; clients without it are refused."""
    import redis

    runtime = data / "runtime.json"
    assert oct(runtime.stat().st_mode)[-3:] == "600"
    url = json.loads(runtime.read_text())["redis_url"]
    with redis.Redis(port=int(url.rsplit(":", 1)[1].split("/")[0])) as anonymous:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
    made = subprocess.run(
        [MAILERS, "workspaces", "create", "beside-serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0 and made.stdout.strip() == "created: beside-serve", made.stderr


def test_a_second_process_finds_the_same_named_actors(gateway, ray_session, redis_url):
    script = textwrap.dedent(f"""
        import ray
        from actors.gateway import Gateway
        from schemas.settings import load_settings
        settings = load_settings({{}}, ray_address={ray_session!r}, ray_namespace="mailers-test")
        gateway = Gateway.start(settings, redis_url={redis_url!r})
        print(gateway.key_usage.handle._actor_id.hex())
        print(ray.get(gateway.key_usage.handle.ping.remote()))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actor_id, pong = result.stdout.split()[-2:]
    assert actor_id == gateway.key_usage.handle._actor_id.hex() and pong == "True"
