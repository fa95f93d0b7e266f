"""`mailers audit verify` as a real process against a real DuckDB audit store, before and after tampering."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import duckdb
import msgspec
import pytest

from actors.audit.body import AuditSink
from analytics.audit import AuditStore, audit_store_url
from security.audit_chain import audit_signer
from security.audit_checkpoint import encode_checkpoint
from store import keyspace
from store.audit_checkpoint_sinks import FileCheckpoints
from store.audit_checkpoints import CheckpointLog
from store.audit_log import record_verifying_keys
from tests.audit.conftest import SECRET, drain
from tests.audit.test_sink import append, entry

MAILERS = str(Path(sys.executable).parent / "mailers")


async def verify(
    redis_url: str, analytics_url: str, workspace: str, *args: str, secret: str = SECRET, **extra_env: str
) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env.update(MAILERS_REDIS_URL=redis_url, MAILERS_ANALYTICS_URL=analytics_url, MAILERS_SECRET_KEY=secret)
    env.update(extra_env)
    process = await asyncio.create_subprocess_exec(
        MAILERS,
        "audit",
        "verify",
        "--workspace",
        workspace,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


@pytest.fixture
async def sealed_log(redis, redis_url, tmp_path, make_sink) -> tuple[str, Path]:
    """Six chained entries of `ws-a` (and two of `ws-b`) in the audit file beside analytics.duckdb."""
    analytics_url = f"duckdb://{tmp_path / 'analytics.duckdb'}"
    store = await AuditStore.open(audit_store_url(analytics_url, tmp_path))
    await append(redis, [entry(i) for i in range(6)] + [entry(i, "ws-b") for i in range(2)])
    await drain(make_sink(store))
    await store.close()
    return analytics_url, Path(audit_store_url(analytics_url, tmp_path).removeprefix("duckdb://"))


async def test_an_intact_log_verifies(redis_url, sealed_log):
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 0 and output.startswith("ok: 6 entries, up to the checkpoint of seq 6 (")
    code, output = await verify(redis_url, sealed_log[0], "ws-b")
    assert code == 0 and output.startswith("ok: 2 entries, up to the checkpoint of seq 2 (")


async def test_an_edited_field_is_named_by_seq(redis_url, sealed_log):
    with duckdb.connect(str(sealed_log[1])) as db:
        db.execute("UPDATE audit_log SET status = 500 WHERE workspace = 'ws-a' AND seq = 4")
        edited_id = db.execute("SELECT id FROM audit_log WHERE workspace = 'ws-a' AND seq = 4").fetchone()[0]
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and output.startswith(f"broken at seq 4 (id {edited_id}): hash does not match")


async def test_an_edited_optional_field_is_detected(redis_url, sealed_log):
    with duckdb.connect(str(sealed_log[1])) as db:
        db.execute("UPDATE audit_log SET ip = NULL WHERE workspace = 'ws-a' AND seq = 2")
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and output.startswith("broken at seq 2 ")


async def test_a_deleted_entry_is_named_by_seq(redis_url, sealed_log):
    with duckdb.connect(str(sealed_log[1])) as db:
        db.execute("DELETE FROM audit_log WHERE workspace = 'ws-a' AND seq = 3")
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and "broken at seq 4 " in output and "expected 3, found 4" in output
    code, output = await verify(redis_url, sealed_log[0], "ws-b")
    assert code == 0 and output.startswith("ok: 2 entries")


def delete_newest(audit_file: Path, workspace: str, from_seq: int) -> None:
    with duckdb.connect(str(audit_file)) as db:
        db.execute("DELETE FROM audit_log WHERE workspace = ? AND seq >= ?", [workspace, from_seq])


async def test_deleting_the_newest_entries_is_detected(redis_url, sealed_log):
    """Issue #11: cutting off the end of the log left a valid, shorter chain that `verify` passed."""
    delete_newest(sealed_log[1], "ws-a", 5)
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1
    assert output.startswith("broken at seq 6: truncated: the log ends at seq 4, but the checkpoint of ")
    assert "covers seq 6 (the newest entries were deleted)" in output


async def test_a_chain_longer_than_its_checkpoint_passes(redis, redis_url, sealed_log, make_sink):
    store = await AuditStore.open(audit_store_url(sealed_log[0], sealed_log[1].parent))
    sink = make_sink(store)
    await append(redis, [entry(i) for i in range(6, 9)])
    await sink.chain_batch(await sink.read_batch())  # chained and stored, not yet checkpointed
    await sink.store_chained()
    await store.close()
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 0 and output.startswith("ok: 9 entries, up to the checkpoint of seq 6 (")


async def test_truncation_is_caught_by_the_external_checkpoint_when_redis_lost_it(
    redis, redis_url, sealed_log, tmp_path
):
    checkpoints = tmp_path / "checkpoints.jsonl"
    await FileCheckpoints(f"file://{checkpoints}").write([await CheckpointLog(redis).latest("ws-a")], 0.0)
    delete_newest(sealed_log[1], "ws-a", 4)
    await redis.hdel(keyspace.AUDIT_CHECKPOINT_LATEST, "ws-a")  # whoever cut the log also cleaned Redis
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert (code, output) == (
        0,
        "ok: 3 entries (no checkpoint to compare with: a cut-off end would go unnoticed)\n",
    )
    code, output = await verify(redis_url, sealed_log[0], "ws-a", "--checkpoint", f"file://{checkpoints}")
    assert code == 1 and "truncated: the log ends at seq 3" in output
    code, output = await verify(redis_url, sealed_log[0], "ws-a", "--checkpoint", f"file://{tmp_path}/none")
    assert code == 2 and "cannot read the checkpoint" in output


async def test_a_forged_checkpoint_is_reported(redis, redis_url, sealed_log):
    genuine = await CheckpointLog(redis).latest("ws-a")
    delete_newest(sealed_log[1], "ws-a", 5)  # cut the log, then make the checkpoint agree with it
    forged = msgspec.structs.replace(genuine, seq=4)
    await redis.hset(keyspace.AUDIT_CHECKPOINT_LATEST, "ws-a", encode_checkpoint(forged))
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and output.startswith("checkpoint of seq 4 (")
    assert "rejected: signature does not verify with key " in output and "forged or altered" in output
    other = await CheckpointLog(redis).latest("ws-b")  # a genuine checkpoint of another workspace
    await redis.hset(keyspace.AUDIT_CHECKPOINT_LATEST, "ws-a", encode_checkpoint(other))
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and "rejected: it is a checkpoint of workspace 'ws-b'" in output


async def test_a_checkpoint_signed_before_a_rotation_verifies_with_the_kept_key(redis, redis_url, tmp_path):
    old_secret, new_secret = SECRET, "n" * 40
    analytics_url = f"duckdb://{tmp_path / 'analytics.duckdb'}"
    store = await AuditStore.open(audit_store_url(analytics_url, tmp_path))
    await append(redis, [entry(i) for i in range(4)])
    await drain(AuditSink(redis, store, audit_signer(old_secret), block_ms=10))
    await store.close()
    checkpoint = await CheckpointLog(redis).latest("ws-a")
    assert checkpoint is not None and checkpoint.key_id == audit_signer(old_secret).key_id()
    code, output = await verify(redis_url, analytics_url, "ws-a", secret=new_secret)
    assert code == 1 and "rejected: signed by unknown key" in output  # the old key was not kept
    await record_verifying_keys(redis, [audit_signer(old_secret).public_key_pem()])  # secrets reencrypt
    code, output = await verify(redis_url, analytics_url, "ws-a", secret=new_secret)
    assert code == 0 and output.startswith("ok: 4 entries, up to the checkpoint of seq 4 (")


async def test_the_checkpoint_can_come_from_s3(redis, redis_url, sealed_log, moto_url):
    import aioboto3

    from store.audit_checkpoint_sinks import S3Checkpoints
    from tests.audit.conftest import MOTO_CREDENTIALS

    session = aioboto3.Session(**MOTO_CREDENTIALS)
    async with session.client("s3", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket="audit-cli")
    s3_sink = S3Checkpoints("s3://audit-cli/prod", session=session, endpoint_url=moto_url)
    await s3_sink.write([await CheckpointLog(redis).latest("ws-a")], 0.0)
    delete_newest(sealed_log[1], "ws-a", 6)
    await redis.hdel(keyspace.AUDIT_CHECKPOINT_LATEST, "ws-a")
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_url,  # the AWS SDK's own variable, as for any S3-compatible store
    }
    code, output = await verify(
        redis_url, sealed_log[0], "ws-a", "--checkpoint", "s3://audit-cli/prod", **aws
    )
    assert code == 1 and "truncated: the log ends at seq 5" in output
