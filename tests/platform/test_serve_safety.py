"""Crash safety of the embedded default: one owner per data dir, no orphaned Redis, a password on it,
and start-up failures as one line (issue #11)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest
import redis
import redis.exceptions

from ingress.children import ChildRecord, ChildRecords, identify
from ingress.data_dir_lock import DataDirInUse, DataDirLock
from ingress.runtime import redis_for
from schemas.settings import load_settings
from store.redis_server import RedisServer
from tests.platform.test_processes import (
    _alive,
    _assert_commands_reuse_the_password_protected_redis,
    _descendants,
)

MAILERS = str(Path(sys.executable).parent / "mailers")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env.update(values)
    return env


def redis_servers_in(directory: Path) -> list[int]:
    """Pids of live redis-server processes whose working directory is `directory` (scan of /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if identify(int(entry.name)) is None or os.readlink(entry / "cwd") != str(directory.resolve()):
                continue
            if b"redis-server" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until(condition, within: float) -> bool:
    """Real processes exit in their own time: poll, bounded."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- the data dir lock -------------------------------------------------------------------------------


def test_a_second_owner_of_the_data_dir_is_refused_naming_the_holder(tmp_path):
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(tmp_path).acquire()
    assert f"data dir {tmp_path.resolve()} is in use by pid {os.getpid()}" in str(refused.value)
    DataDirLock(tmp_path).acquire().release()  # released with its holder


def test_serve_on_a_held_data_dir_exits_with_one_line_and_starts_nothing(tmp_path):
    data = tmp_path / "data"
    with DataDirLock(data):
        result = subprocess.run(
            [MAILERS, "serve"],
            env=_env(MAILERS_DATA_DIR=str(data), MAILERS_PORT=str(_free_port())),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mailers: data dir {data.resolve()} is in use by pid ")
    assert str(os.getpid()) in lines[0] and "MAILERS_DATA_DIR" in lines[0]
    assert not (data / "redis").exists()


# --- start-up failures -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_on_a_taken_port_names_the_variable_and_starts_nothing(tmp_path):
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [MAILERS, "serve"],
            env=_env(MAILERS_DATA_DIR=str(data), MAILERS_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"mailers: MAILERS_PORT={port} is already in use"]
    assert not (data / "redis").exists(), "Redis was started before the port was checked"
    DataDirLock(data).acquire().release()  # and the lock went with the process


def test_an_unreachable_redis_url_is_one_line_without_its_password(tmp_path):
    url = f"redis://mailers:hunter2-secret@127.0.0.1:{_free_port()}/0"
    result = subprocess.run(
        [MAILERS, "serve"],
        env=_env(MAILERS_DATA_DIR=str(tmp_path), MAILERS_PORT=str(_free_port()), MAILERS_REDIS_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "mailers: MAILERS_REDIS_URL=redis://mailers:***@127.0.0.1:"
    )
    assert "hunter2" not in result.stderr


# --- children: recorded, verified, stopped; dying with their parent ----------------------------------


def test_a_recorded_survivor_is_stopped_and_an_impostor_is_left_alone(tmp_path):
    survivor = RedisServer(tmp_path / "redis", appendonly=True).start()
    impostor = subprocess.Popen(["sleep", "60"])
    try:
        records = ChildRecords(tmp_path / "children.json", stop_timeout=5)
        records.add([survivor.process.pid])
        forged = identify(impostor.pid)
        # Same pid, another start time: what a reused pid looks like.
        tampered = msgspec.structs.replace(forged, start_ticks=forged.start_ticks + 1)
        records.path.write_bytes(msgspec.json.encode([*records.read(), tampered]))
        assert len(records.read()) == 2
        assert records.stop_all(announce=lambda line: None) == 1
        assert survivor.process.wait(5) == 0, "redis-server should have shut down cleanly on SIGTERM"
        assert impostor.poll() is None and not records.path.exists()
    finally:
        impostor.kill()
        impostor.wait()
        survivor.stop()


def test_the_embedded_redis_dies_with_its_parent(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from store.redis_server import RedisServer
        server = RedisServer({str(tmp_path / "redis")!r}, appendonly=True).start()
        print(server.process.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    redis_pid = int(parent.stdout.readline())
    try:
        assert identify(redis_pid) is not None
        parent.kill()
        parent.wait()
        assert wait_until(lambda: identify(redis_pid) is None, within=15), "redis-server outlived its parent"
    finally:
        if identify(redis_pid) is not None:
            os.kill(redis_pid, signal.SIGKILL)
        parent.stdout.close()


# --- the embedded Redis's password ---------------------------------------------------------------------


def test_the_embedded_redis_refuses_clients_without_the_password(tmp_path):
    settings = load_settings({}, data_dir=str(tmp_path / "data"))
    with redis_for(settings) as url:
        assert url.startswith("redis://mailers:") and redis.Redis.from_url(url).ping()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, username="mailers", password="guess").ping()
        with pytest.raises(DataDirInUse):  # a second command finds no running server: it may not start one
            with redis_for(settings):
                pass
    password_file = tmp_path / "data" / "redis_password"
    assert oct(password_file.stat().st_mode)[-3:] == "600"
    acl = (tmp_path / "data" / "redis" / "users.acl").read_text()
    assert password_file.read_text().strip() not in acl and "user default off" in acl
    assert not redis_servers_in(tmp_path / "data" / "redis")


def test_the_password_protected_redis_replays_transactions_and_scripts_from_its_aof(tmp_path):
    """Redis replays the AOF as `default`; with that user stripped of permissions it dropped them all."""
    server = RedisServer(tmp_path / "redis", appendonly=True, password="pw-" + "x" * 30).start()
    try:
        with redis.Redis.from_url(server.url) as client:
            with client.pipeline(transaction=True) as pipe:
                pipe.set("in-multi", 1).rpush("list", "a")
                pipe.execute()
            client.eval("redis.call('SET', 'from-script', 1)", 0)
        server.stop()
        server.start()
        with redis.Redis.from_url(server.url) as client:
            assert client.mget("in-multi", "from-script") == [b"1", b"1"] and client.llen("list") == 1
    finally:
        server.stop()


# --- end to end: SIGKILL `mailers serve`, start it again on the same data dir ---------------------------

BOOTSTRAP = "mk_" + "k" * 40
AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}
MESSAGE = {"from": "Acme <hello@acme.com>", "subject": "Hi", "text": "Hi"}


def _assert_port_taken(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as refused:
            probe.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE


def _start_serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    """Output to a file: a pipe nobody reads would block the server once full."""
    env = _env(MAILERS_DATA_DIR=str(data), MAILERS_PORT=str(port), MAILERS_BOOTSTRAP_KEY=BOOTSTRAP)
    with log.open("w") as out:
        return subprocess.Popen([MAILERS, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _until_ready(http, base: str, process: subprocess.Popen, log: Path, within: float = 90) -> None:
    import asyncio

    import aiohttp

    deadline = time.monotonic() + within
    while True:
        assert process.poll() is None, _tail(log)
        try:
            async with http.get(base + "/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "mailers serve never became ready"
        await asyncio.sleep(0.3)


def _family(pid: int) -> dict[int, ChildRecord]:
    """The process and its descendants as they are now, so the cleanup never kills a reused pid."""
    records = {p: identify(p) for p in {pid} | _descendants(pid)}
    return {p: record for p, record in records.items() if record is not None}


def stop_serves(processes, started: dict[int, ChildRecord]) -> None:
    """A test's cleanup: each `mailers serve` still running gets SIGTERM (SIGKILL after 40 s), then every
    recorded process that is still the one recorded (never a reused pid) gets SIGKILL."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for pid, record in started.items():
        if identify(pid) == record:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(300)  # two starts of Ray: ~10 s each on an idle 2-core machine, minutes under load
async def test_serve_sigkilled_restarts_on_its_data_dir_with_one_redis_and_every_message_then_stops_cleanly(
    tmp_path,
):
    import aiohttp

    data, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    started: dict[int, ChildRecord] = {}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = _start_serve(data, port, logs[0])
    second = None
    try:
        async with aiohttp.ClientSession() as http:
            await _until_ready(http, base, first, logs[0])
            started |= _family(first.pid)
            accepted = []
            for i in range(5):
                body = {**MESSAGE, "to": f"r{i}@example.com"}
                async with http.post(base + "/v1/send", json=body, headers=AUTH) as response:
                    assert response.status == 202, await response.text()
                    accepted.append((await response.json())["id"])
            first.kill()  # only the main process: its children are on their own now
            first.wait()
            second = _start_serve(data, port, logs[1])

            # From before its Redis starts until it listens, serve holds the port bound: nothing it starts
            # meanwhile (Ray takes free ports for its processes) and no one else can take it.
            def second_redis() -> bool:
                return any(pid not in started for pid in redis_servers_in(data / "redis"))

            assert wait_until(lambda: second.poll() is not None or second_redis(), within=60), _tail(logs[1])
            _assert_port_taken(port)
            await _until_ready(http, base, second, logs[1])
            started |= _family(second.pid)
            assert len(redis_servers_in(data / "redis")) == 1
            for message_id in accepted:
                async with http.get(f"{base}/v1/messages/{message_id}", headers=AUTH) as response:
                    assert response.status == 200, _tail(logs[1])
            # The restarted serve is a whole one (this test also stands for "serve starts and stops
            # cleanly": one start of Ray fewer in the suite).
            async with http.get(base + "/readyz") as ready:
                assert (await ready.json())["checks"] == {"redis": True, "actors": True, "analytics": True}
            async with http.get(base + "/v1/api-keys", headers=AUTH) as keys:
                assert keys.status == 200
                assert (await keys.json())["data"][0]["scopes"] == ["admin"]
        assert oct((data / "runtime.json").stat().st_mode)[-3:] == "600"
        assert oct((data / "secret_key").stat().st_mode)[-3:] == "600"
        env = _env(MAILERS_DATA_DIR=str(data), MAILERS_PORT=str(port), MAILERS_BOOTSTRAP_KEY=BOOTSTRAP)
        _assert_commands_reuse_the_password_protected_redis(data, env)
        assert (data / "redis" / "appendonlydir").is_dir()
        children = _descendants(second.pid)
        assert children, "serve should have started redis-server and Ray"
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=40) == 0
        assert wait_until(lambda: not redis_servers_in(data / "redis"), within=15)
        assert wait_until(lambda: not any(_alive(pid) for pid in children), within=15), "children left behind"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        for pid, record in started.items():
            if identify(pid) == record:
                os.kill(pid, signal.SIGKILL)
