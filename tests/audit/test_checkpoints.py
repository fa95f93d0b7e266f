"""Signed checkpoints: published by the AuditSink on its injected clock, kept in Redis, exported to the
operator's sink (a file, S3 on moto's server, a signed webhook through the SSRF guard) with retries that
never hold the chain up, and checked by `AuditStore.verify`."""

from __future__ import annotations

import json
import socket

import aioboto3
import msgspec
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from actors.audit.checkpoints import retry_delay
from schemas.settings import SettingsError, load_settings
from security.audit_chain import AuditSigner
from security.audit_checkpoint import (
    checkpoint_problem,
    decode_checkpoint,
    sign_checkpoint,
    signature_problem,
)
from security.webhook_signing import verify_standard
from store import keyspace
from store.audit_checkpoint_sinks import (
    FileCheckpoints,
    S3Checkpoints,
    WebhookCheckpoints,
    open_checkpoint_sink,
    open_checkpoint_source,
)
from store.audit_checkpoints import CheckpointLog
from tests.audit.conftest import MOTO_CREDENTIALS, drain
from tests.audit.test_sink import append, entry, stored

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" + "AAAAAAAAAAA="


class FixedDns(AbstractResolver):
    """The DNS seam: every name resolves to one address (a rebinding attacker's answer)."""

    def __init__(self, address: str) -> None:
        self.address, self.asked = address, []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self, now: float = 1_776_593_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys_of(*signers: AuditSigner) -> dict[str, bytes]:
    return {s.key_id(): s.public_key_pem() for s in signers}


# --- the checkpoint itself ------------------------------------------------------------------------------
def test_a_checkpoint_verifies_and_any_edit_breaks_it(signer):
    checkpoint = sign_checkpoint("ws-a", 7, "ab" * 32, 1_776_593_000.5, signer)
    assert checkpoint.time == "2026-04-19T10:03:20.500Z" and checkpoint.key_id == signer.key_id()
    assert signature_problem(checkpoint, keys_of(signer)) is None
    for edit in (
        {"seq": 6},
        {"hash": "cd" * 32},
        {"workspace": "ws-b"},
        {"time": "2026-04-19T10:03:21.500Z"},
    ):
        forged = msgspec.structs.replace(checkpoint, **edit)
        assert "forged or altered" in signature_problem(forged, keys_of(signer))
    assert "unknown key" in signature_problem(checkpoint, keys_of(AuditSigner.generate()))


def test_an_entry_signature_is_never_a_checkpoint_signature(signer):
    """The context prefix: a checkpoint cannot be made from a signature the key gave for something else."""
    checkpoint = sign_checkpoint("ws-a", 1, "ab" * 32, 0.0, signer)
    reused = msgspec.structs.replace(checkpoint, signature=signer.sign(checkpoint.hash))
    assert signature_problem(reused, keys_of(signer)) is not None


def test_the_comparison_with_a_checkpoint(signer):
    checkpoint = sign_checkpoint("ws-a", 5, "ab" * 32, 0.0, signer)
    assert "truncated: the log ends at seq 3" in checkpoint_problem(checkpoint, 3, None)
    assert checkpoint_problem(checkpoint, 5, "ab" * 32) is None
    assert checkpoint_problem(checkpoint, 9, "ab" * 32) is None  # entries after the checkpoint
    assert "differs from the checkpoint" in checkpoint_problem(checkpoint, 9, "cd" * 32)


def test_retry_delays_double_up_to_the_cap():
    assert [retry_delay(n, base=1.0, cap=10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# --- publishing ------------------------------------------------------------------------------------------
async def test_checkpoints_follow_moved_heads_once_per_interval(redis, duck_store, make_sink, signer):
    clock = Clock()
    sink = make_sink(duck_store, clock=clock, checkpoint_seconds=60, batch_size=4)
    log = CheckpointLog(redis)
    await append(redis, [entry(i) for i in range(6)] + [entry(i, "ws-b") for i in range(2)])
    await drain(sink)
    first = await log.latest("ws-a")
    assert first is not None and first.seq == 4  # the first pass published; the rest waits for the interval
    assert (await log.latest("ws-b")) is None
    clock.now += 59
    await sink.step()
    assert (await log.latest("ws-a")).seq == 4
    clock.now += 1
    await sink.step()
    chain = await stored(duck_store, "ws-a")
    latest = await log.latest("ws-a")
    assert (latest.seq, latest.hash) == (6, chain[-1].hash) and (await log.latest("ws-b")).seq == 2
    assert signature_problem(latest, keys_of(signer)) is None
    clock.now += 600
    await sink.step()  # nothing moved: no new checkpoint
    history, has_more = await log.page("ws-a", limit=10, before_seq=None)
    assert [c.seq for c in history] == [6, 4] and not has_more
    assert await redis.xlen(keyspace.AUDIT_CHECKPOINT_OUTBOX) == 0  # no external sink configured


async def test_a_restarted_sink_checkpoints_heads_moved_before_the_crash(redis, duck_store, make_sink):
    clock = Clock()
    first = make_sink(duck_store, clock=clock)
    await first.step()  # recovers (nothing yet) and sets nothing
    await append(redis, [entry(i) for i in range(3)])
    await first.chain_batch(await first.read_batch())
    await first.store_chained()  # ...and dies before publishing
    assert await CheckpointLog(redis).latest("ws-a") is None
    await make_sink(duck_store, clock=clock).step()
    assert (await CheckpointLog(redis).latest("ws-a")).seq == 3


async def test_no_checkpoint_covers_entries_not_yet_stored(redis, duck_store, make_sink):
    sink = make_sink(duck_store, clock=Clock())
    await append(redis, [entry(i) for i in range(3)])

    async def store_down(entries):
        raise ConnectionError("store down")

    duck_store.insert, original = store_down, duck_store.insert
    with pytest.raises(ConnectionError):
        await sink.step()
    assert await CheckpointLog(redis).latest("ws-a") is None
    duck_store.insert = original
    await sink.step()
    assert (await CheckpointLog(redis).latest("ws-a")).seq == 3


async def test_history_pages_newest_first(redis, signer):
    log = CheckpointLog(redis)
    await log.publish(
        [sign_checkpoint("ws-a", seq, "ab" * 32, seq, signer) for seq in range(1, 8)], outbox=False
    )
    page, has_more = await log.page("ws-a", limit=3, before_seq=None)
    assert [c.seq for c in page] == [7, 6, 5] and has_more
    page, has_more = await log.page("ws-a", limit=3, before_seq=2)
    assert [c.seq for c in page] == [1] and not has_more


# --- verify against a checkpoint -------------------------------------------------------------------------
async def test_verify_compares_the_chain_with_the_checkpoint(redis, audit_store, make_sink, signer):
    sink = make_sink(audit_store, clock=Clock())
    await append(redis, [entry(i) for i in range(5)])
    await drain(sink)
    checkpoint = await CheckpointLog(redis).latest("ws-a")
    keys = [signer.public_key_pem()]
    assert (await audit_store.verify("ws-a", keys, checkpoint=checkpoint, chunk_rows=2))[0].ok
    await append(redis, [entry(i) for i in range(5, 8)])
    await drain(sink)  # three more entries, no new checkpoint yet: a longer chain passes
    assert await CheckpointLog(redis).latest("ws-a") == checkpoint
    assert (await audit_store.verify("ws-a", keys, checkpoint=checkpoint, chunk_rows=3))[0].ok
    ahead = msgspec.structs.replace(checkpoint, seq=9)
    result, count = await audit_store.verify("ws-a", keys, checkpoint=ahead)
    assert not result.ok and result.reason.startswith("truncated: the log ends at seq 8") and count == 8


# --- exporting -------------------------------------------------------------------------------------------
async def test_the_file_sink_gets_every_checkpoint_and_reads_back_the_latest(
    redis, duck_store, make_sink, tmp_path
):
    clock = Clock()
    path = tmp_path / "checkpoints.jsonl"
    sink = make_sink(duck_store, clock=clock, checkpoint_sink=FileCheckpoints(f"file://{path}"))
    await append(redis, [entry(i) for i in range(3)] + [entry(0, "ws-b")])
    await drain(sink)
    await append(redis, [entry(i) for i in range(3, 5)])
    clock.now += 60
    await drain(sink)
    assert await sink.exporter.run_until_idle() == 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((c["workspace"], c["seq"]) for c in lines) == [("ws-a", 3), ("ws-a", 5), ("ws-b", 1)]
    assert (await open_checkpoint_source(f"file://{path}").latest("ws-a")) == await CheckpointLog(
        redis
    ).latest("ws-a")
    assert await redis.xlen(keyspace.AUDIT_CHECKPOINT_OUTBOX) == 0


async def test_a_failing_sink_is_retried_with_backoff_and_never_blocks_the_chain(
    redis, duck_store, make_sink, tmp_path
):
    clock = Clock()
    path = tmp_path / "missing-dir" / "checkpoints.jsonl"
    sink = make_sink(duck_store, clock=clock, checkpoint_sink=FileCheckpoints(f"file://{path}"))
    await append(redis, [entry(i) for i in range(3)])
    await drain(sink)
    exporter = sink.exporter
    assert await exporter.step() == 0 and exporter.failures == 1 and "No such file" in exporter.last_error
    clock.now += 0.5
    assert await exporter.step() == 0 and exporter.failures == 1  # the retry waits 1 s: no attempt
    clock.now += 0.5
    assert await exporter.step() == 0 and exporter.failures == 2  # tried again, failed: next wait 2 s
    await append(redis, [entry(i) for i in range(3, 6)])
    clock.now += 60
    assert await drain(sink) == 3  # the chain goes on while the sink is down
    assert (await CheckpointLog(redis).latest("ws-a")).seq == 6
    path.parent.mkdir()
    assert await exporter.run_until_idle() == 2 and exporter.failures == 0
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [3, 6]


async def test_the_s3_sink_writes_one_object_per_checkpoint(redis, duck_store, make_sink, moto_url):
    session = aioboto3.Session(**MOTO_CREDENTIALS)
    async with session.client("s3", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket="audit")
    s3_sink = S3Checkpoints("s3://audit/mailers/prod", session=session, endpoint_url=moto_url)
    clock = Clock()
    sink = make_sink(duck_store, clock=clock, checkpoint_sink=s3_sink)
    for seqs in (range(3), range(3, 12)):
        await append(redis, [entry(i) for i in seqs])
        await drain(sink)
        clock.now += 60
    assert await sink.exporter.run_until_idle() == 2
    async with session.client("s3", endpoint_url=moto_url) as s3:
        listed = await s3.list_objects_v2(Bucket="audit", Prefix="mailers/prod/")
    assert [o["Key"] for o in listed["Contents"]] == [
        f"mailers/prod/ws-a/{seq:020d}.json" for seq in (3, 12)
    ]  # the zero-padded seq sorts: 12 after 3
    latest = await s3_sink.latest("ws-a")
    assert latest == await CheckpointLog(redis).latest("ws-a") and latest.seq == 12
    assert await s3_sink.latest("ws-none") is None


async def test_the_webhook_sink_signs_like_outbound_webhooks(redis, duck_store, make_sink, aiohttp_server):
    received: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=503 if len(received) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/hook"
    hook = WebhookCheckpoints(url, WEBHOOK_SECRET, allow_http=True, allow_private=True)
    clock = Clock()
    sink = make_sink(duck_store, clock=clock, checkpoint_sink=hook)
    await append(redis, [entry(i) for i in range(2)])
    await drain(sink)
    assert await sink.exporter.step() == 0 and "HTTP 503" in sink.exporter.last_error
    clock.now += 1
    assert await sink.exporter.step() == 1
    headers, body = received[-1]
    assert headers["webhook-id"] == "ckp_ws-a_2" and decode_checkpoint(body).seq == 2
    verify_standard(body, {k.lower(): v for k, v in headers.items()}, WEBHOOK_SECRET, now=int(clock.now))
    await hook.close()


async def test_the_webhook_sink_goes_through_the_ssrf_guard(redis, duck_store, make_sink):
    with pytest.raises(Exception, match="webhook_url_private_address"):
        WebhookCheckpoints("https://127.0.0.1/hook", WEBHOOK_SECRET, allow_http=False, allow_private=False)
    with pytest.raises(Exception, match="webhook_url_scheme"):
        WebhookCheckpoints("http://example.com/hook", WEBHOOK_SECRET, allow_http=False, allow_private=False)
    # A name that resolves to loopback is refused at connection time (DNS rebinding); it stays queued.
    dns = FixedDns("127.0.0.1")
    hook = WebhookCheckpoints(
        "https://hooks.example.com/h", WEBHOOK_SECRET, allow_http=False, allow_private=False, resolver=dns
    )
    sink = make_sink(duck_store, clock=Clock(), checkpoint_sink=hook)
    await append(redis, [entry(0)])
    await drain(sink)
    assert await sink.exporter.step() == 0 and dns.asked == ["hooks.example.com"]
    assert "webhook_url_private_address" in sink.exporter.last_error
    assert await redis.xlen(keyspace.AUDIT_CHECKPOINT_OUTBOX) == 1
    await hook.close()


def test_the_operator_chooses_the_sink_in_the_environment(tmp_path):
    def sink_of(**env: str):
        return open_checkpoint_sink(load_settings({"MAILERS_SECRET_KEY": "s" * 40, **env}))

    assert sink_of() is None
    assert isinstance(sink_of(MAILERS_AUDIT_CHECKPOINT_SINK=f"file://{tmp_path}/c.jsonl"), FileCheckpoints)
    s3 = sink_of(MAILERS_AUDIT_CHECKPOINT_SINK="s3://bucket/a/b/")
    assert isinstance(s3, S3Checkpoints) and s3.key("ws-a", 7) == "a/b/ws-a/00000000000000000007.json"
    with pytest.raises(ValueError, match="MAILERS_AUDIT_CHECKPOINT_WEBHOOK_SECRET"):
        sink_of(MAILERS_AUDIT_CHECKPOINT_SINK="https://hooks.example.com/c")
    hook = sink_of(
        MAILERS_AUDIT_CHECKPOINT_SINK="https://hooks.example.com/c",
        MAILERS_AUDIT_CHECKPOINT_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    assert isinstance(hook, WebhookCheckpoints) and not hook.allow_private
    with pytest.raises(SettingsError, match="MAILERS_AUDIT_CHECKPOINT_SINK must be a URL"):
        sink_of(MAILERS_AUDIT_CHECKPOINT_SINK="ftp://example.com/c")
    with pytest.raises(ValueError, match="file:///path or s3://bucket/prefix"):
        open_checkpoint_source("https://hooks.example.com/c")
