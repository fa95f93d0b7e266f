from __future__ import annotations

import base64
import hashlib
import json

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from security.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    AuditSigner,
    canonical_bytes,
    chain,
    verify_chain,
)

SIGNER = AuditSigner.generate()
PUBLIC_PEM = SIGNER.public_key_pem()


def _entry(number: int) -> AuditEntry:
    return AuditEntry(
        id=f"aud_{number:026d}",
        workspace="acme",
        time=f"2026-04-19T10:24:{number:02d}Z",
        key_id="key_01",
        key_prefix="mk_live_ab12",
        action="POST /v1/send",
        resource_id=f"msg_{number}",
        status=202,
        request_id=f"req_{number}",
        ip="203.0.113.7",
        user_agent="curl/8 – ünïcode",
    )


def _sealed(count: int = 6) -> list[AuditEntry]:
    return chain([_entry(n) for n in range(1, count + 1)], GENESIS_HASH, 0, SIGNER)


def test_a_fresh_chain_verifies_and_links_from_genesis() -> None:
    entries = _sealed()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == GENESIS_HASH == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    result = verify_chain(entries, PUBLIC_PEM)
    assert result.ok and result.first_broken_seq is None and result.first_broken_id is None


def test_the_hash_and_signature_follow_the_documented_recipe() -> None:
    entry = _sealed(1)[0]
    fields = {k: v for k, v in msgspec.structs.asdict(entry).items() if k not in ("hash", "signature")}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_bytes(entry) == canonical
    assert entry.hash == hashlib.sha256(GENESIS_HASH.encode() + canonical).hexdigest()
    public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(SIGNER.public_key_b64()))
    public_key.verify(base64.b64decode(entry.signature), entry.hash.encode())


def test_a_chain_continues_from_its_previous_head() -> None:
    first = _sealed(3)
    more = chain([_entry(4), _entry(5)], first[-1].hash, first[-1].seq, SIGNER)
    assert [e.seq for e in more] == [4, 5]
    assert verify_chain(first + more, PUBLIC_PEM).ok
    assert verify_chain(more, PUBLIC_PEM, prev_hash=first[-1].hash, prev_seq=3).ok


@pytest.mark.parametrize("field", ["status", "action", "ip", "time", "key_id", "user_agent"])
def test_editing_one_field_names_the_edited_entry(field: str) -> None:
    entries = _sealed()
    original = getattr(entries[3], field)
    edited = 500 if isinstance(original, int) else f"{original}x"
    entries[3] = msgspec.structs.replace(entries[3], **{field: edited})
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq, result.first_broken_id) == (False, 4, entries[3].id)
    assert "edited" in result.reason


def test_an_edit_with_a_recomputed_hash_fails_on_the_signature() -> None:
    entries = _sealed()
    edited = msgspec.structs.replace(entries[2], status=200)
    digest = hashlib.sha256(edited.prev_hash.encode() + canonical_bytes(edited)).hexdigest()
    entries[2] = msgspec.structs.replace(edited, hash=digest)
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq, result.reason) == (False, 3, "bad signature")


def test_an_entry_resigned_with_another_key_fails_on_the_signature() -> None:
    entries = _sealed()
    forged = chain(
        [msgspec.structs.replace(entries[1], status=200)], entries[0].hash, 1, AuditSigner.generate()
    )
    entries[1] = forged[0]
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq, result.reason) == (False, 2, "bad signature")


def test_a_garbled_signature_is_reported() -> None:
    entries = _sealed()
    entries[4] = msgspec.structs.replace(entries[4], signature="not base64!")
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.first_broken_seq, result.reason) == (5, "bad signature")


def test_deleting_an_entry_names_the_entry_after_the_gap() -> None:
    entries = _sealed()
    del entries[2]
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq, result.first_broken_id) == (False, 4, entries[2].id)
    assert "gap" in result.reason


def test_deleting_the_first_entry_is_detected() -> None:
    result = verify_chain(_sealed()[1:], PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_deleting_and_renumbering_fails_on_the_prev_hash() -> None:
    entries = _sealed()
    del entries[2]
    entries[2:] = [msgspec.structs.replace(e, seq=e.seq - 1) for e in entries[2:]]
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "prev_hash" in result.reason


def test_swapping_two_entries_names_the_first_misplaced_seq() -> None:
    entries = _sealed()
    entries[1], entries[2] = entries[2], entries[1]
    result = verify_chain(entries, PUBLIC_PEM)
    assert (result.ok, result.first_broken_seq, result.first_broken_id) == (False, 3, entries[1].id)


def test_a_chain_checked_against_another_key_fails_on_the_first_entry() -> None:
    result = verify_chain(_sealed(), AuditSigner.generate().public_key_pem())
    assert (result.ok, result.first_broken_seq, result.reason) == (False, 1, "bad signature")


def test_the_signer_round_trips_through_its_private_bytes() -> None:
    restored = AuditSigner.from_private_bytes(SIGNER.private_bytes())
    assert len(SIGNER.private_bytes()) == 32
    assert restored.public_key_pem() == PUBLIC_PEM
    assert verify_chain(chain([_entry(1)], GENESIS_HASH, 0, restored), PUBLIC_PEM).ok


def test_a_chain_signed_across_a_master_key_rotation_verifies_with_both_keys():
    from security.audit_chain import audit_signer, key_id

    old, new = audit_signer("o" * 40), audit_signer("n" * 40)
    first = chain([_rotation_entry(i) for i in range(3)], GENESIS_HASH, 0, old)
    second = chain([_rotation_entry(i) for i in range(3, 5)], first[-1].hash, 3, new)
    keys = [new.public_key_pem(), old.public_key_pem()]
    assert verify_chain(first + second, keys).ok
    assert verify_chain(first + second, [new.public_key_pem()]).first_broken_seq == 1
    assert key_id(old.public_key_pem()) == old.key_id() != new.key_id() and len(new.key_id()) == 16


def _rotation_entry(index: int) -> AuditEntry:
    return AuditEntry(
        id=f"aud_{index}",
        workspace="ws",
        time="2026-01-01T00:00:00.000Z",
        action="GET /",
        status=200,
        request_id="r",
    )
