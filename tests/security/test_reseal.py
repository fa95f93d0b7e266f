"""Issue #11: the master secret can be rotated. Seal under the old key, rotate (new key current, old key
in MAILERS_SECRET_KEYS_OLD), everything still opens; `mailers secrets reencrypt` re-seals it all; drop
the old key and everything still opens (docs/operations.md)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from schemas.domains import SendingDomainRecord, domain_record_encoder
from schemas.servers import ServerRecord, server_record_encoder
from schemas.settings import load_settings
from schemas.webhooks import WebhookRecord, webhook_record_decoder, webhook_record_encoder
from security.audit_chain import audit_signer
from security.secretbox import SecretBox, box_for
from store import keyspace
from store.audit_log import verifying_keys
from store.domains import DomainStore
from store.idempotency import IdempotencyStore, StoredResponse
from store.reseal import reseal_all
from store.servers import ServerStore
from store.webhooks import secret_box, signing_secrets

OLD, NEW = "o" * 40, "n" * 40
NOW = datetime(2026, 1, 1, tzinfo=UTC)
MAILERS = str(Path(sys.executable).parent / "mailers")


async def seal_everything_under(redis, master: str) -> str:
    """One record of each sealed kind, sealed under `master`; returns the idempotency key."""
    settings = load_settings({}, secret_key=master)
    servers = ServerStore.for_settings(redis, settings)
    server = ServerRecord(
        id="srv_1", workspace="ws", name="relay", provider="smtp", created_at=NOW, updated_at=NOW
    )
    server.sealed_config = servers._seal({"password": "smtp-pass"}, "srv_1")
    server.sealed_inbound = servers._seal({"signing_key": "inbound"}, "srv_1/inbound")
    await redis.set(keyspace.server("ws", "srv_1"), server_record_encoder.encode(server))
    domain = SendingDomainRecord(
        id="dom_1",
        workspace="ws",
        domain="example.com",
        selector="s1",
        return_path="rp.example.com",
        sealed_private_key=box_for(settings, "dkim-key").seal(b"PEM", b"dom_1"),
        records=[],
        created_at=NOW,
    )
    await redis.set(keyspace.sending_domain("ws", "dom_1"), domain_record_encoder.encode(domain))
    box = secret_box(master)
    hook = WebhookRecord(
        id="whk_1",
        workspace="ws",
        url="https://example.com/hook",
        events=["*"],
        sealed_secret=box.seal(b"whsec_new", b"whk_1"),
        sealed_previous_secret=box.seal(b"whsec_old", b"whk_1"),
        previous_secret_until=datetime(2099, 1, 1, tzinfo=UTC),
        created_at=NOW,
        updated_at=NOW,
    )
    await redis.set(keyspace.webhook("ws", "whk_1"), webhook_record_encoder.encode(hook))
    await redis.sadd(keyspace.server_rules("ws", "srv_1"), "rule_1")  # same prefix, another type
    idem_key = keyspace.idempotency("ws", "key_1", "POST", "/v1/api-keys", "k1")
    idempotency = IdempotencyStore(
        redis, lock_ms=60_000, retention_ms=60_000, box=box_for(settings, "idempotency")
    )
    claim = await idempotency.claim(idem_key, "fp")
    await idempotency.complete(idem_key, claim.token, StoredResponse(201, b'{"secret":"mk_x"}', {}))
    return idem_key


async def assert_everything_opens(redis, idem_key: str, master: str, old: tuple[str, ...] = ()) -> None:
    settings = load_settings({}, secret_key=master, secret_keys_old=old)
    server = await ServerStore.for_settings(redis, settings).get("ws", "srv_1")
    assert server is not None
    assert ServerStore.for_settings(redis, settings)._config_fields(server)["password"] == "smtp-pass"
    domain = await DomainStore.for_settings(redis, settings).get("ws", "dom_1")
    assert box_for(settings, "dkim-key").open(domain.sealed_private_key, b"dom_1") == b"PEM"
    hook = webhook_record_decoder.decode(await redis.get(keyspace.webhook("ws", "whk_1")))
    assert signing_secrets(secret_box(master, old), hook, NOW) == ["whsec_new", "whsec_old"]
    idempotency = IdempotencyStore(
        redis, lock_ms=60_000, retention_ms=60_000, box=box_for(settings, "idempotency")
    )
    replay = await idempotency.claim(idem_key, "fp")
    assert replay.stored is not None and replay.stored.body == b'{"secret":"mk_x"}'


async def test_rotate_reencrypt_and_drop_the_old_key(redis):
    idem_key = await seal_everything_under(redis, OLD)
    await assert_everything_opens(redis, idem_key, NEW, (OLD,))  # rotated: old seals still open

    report = await reseal_all(redis, load_settings({}, secret_key=NEW, secret_keys_old=(OLD,)))
    assert report.resealed == {"srv": 1, "dom": 1, "whk": 1, "idem": 1} and not report.unreadable
    again = await reseal_all(redis, load_settings({}, secret_key=NEW, secret_keys_old=(OLD,)))
    assert again.resealed == {} and again.raced == 0  # idempotent: nothing left under the old key

    await assert_everything_opens(redis, idem_key, NEW)  # the old key dropped


async def test_without_the_old_key_the_values_are_reported_unreadable(redis):
    await seal_everything_under(redis, OLD)
    report = await reseal_all(redis, load_settings({}, secret_key=NEW))
    assert report.resealed == {} and len(report.unreadable) == 4
    assert SecretBox.from_master_key(OLD, "dkim-key") is not None


async def test_the_reencrypt_command_keeps_the_old_audit_key(redis, redis_url, tmp_path):
    idem_key = await seal_everything_under(redis, OLD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env.update(
        MAILERS_REDIS_URL=redis_url,
        MAILERS_DATA_DIR=str(tmp_path),
        MAILERS_SECRET_KEY=NEW,
        MAILERS_SECRET_KEYS_OLD=OLD,
    )
    process = await asyncio.create_subprocess_exec(
        MAILERS, "secrets", "reencrypt", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out
    assert "re-sealed: dom=1 idem=1 srv=1 whk=1" in out.decode()
    kept = await verifying_keys(redis)
    assert {audit_signer(OLD).key_id(), audit_signer(NEW).key_id()} == set(kept)
    await assert_everything_opens(redis, idem_key, NEW)
