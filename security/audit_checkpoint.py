"""Signed checkpoints of the audit chain: what a workspace's head was at a moment, signed.

A chain alone proves nothing was changed *up to its last entry*: cut off the newest entries and what
remains is a valid, shorter chain. A checkpoint `{workspace, seq, hash, time, key_id, signature}` says
"entry `seq` of `workspace` had hash `hash` at `time`"; kept outside the analytics store (Redis, and a
sink the operator chooses), it makes a truncated log fail verification (`checkpoint_problem`).

`signature = base64(Ed25519(CHECKPOINT_CONTEXT ‖ canonical))`, where `canonical` is the checkpoint
without `signature` as UTF-8 JSON with sorted keys and no whitespace (the bytes of Python's
`json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`). The context prefix keeps
a checkpoint signature from ever being mistaken for an entry signature (which signs a bare hash) made by
the same key. `key_id` names the signing key, so a checkpoint signed before a rotation verifies with
the kept key of that id (`store/audit_log.py`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from security.audit_chain import AuditSigner

CHECKPOINT_CONTEXT = b"mailers-audit-checkpoint/v1\n"


class AuditCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    seq: int  # the last entry covered
    hash: str  # that entry's hash
    time: str  # when it was signed, RFC 3339 UTC with milliseconds and Z
    key_id: str  # the signing key (security.audit_chain.key_id)
    signature: str = ""


encode_checkpoint = msgspec.json.Encoder().encode
decode_checkpoint = msgspec.json.Decoder(AuditCheckpoint).decode


def checkpoint_time(now: float) -> str:
    """Unix seconds as the fixed-width RFC 3339 text entries carry."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def signed_bytes(checkpoint: AuditCheckpoint) -> bytes:
    fields = msgspec.structs.asdict(checkpoint)
    del fields["signature"]
    return CHECKPOINT_CONTEXT + msgspec.json.encode(fields, order="sorted")


def sign_checkpoint(
    workspace: str, seq: int, head_hash: str, now: float, signer: AuditSigner
) -> AuditCheckpoint:
    unsigned = AuditCheckpoint(
        workspace=workspace, seq=seq, hash=head_hash, time=checkpoint_time(now), key_id=signer.key_id()
    )
    return msgspec.structs.replace(unsigned, signature=signer.sign_bytes(signed_bytes(unsigned)))


def signature_problem(checkpoint: AuditCheckpoint, keys_by_id: Mapping[str, bytes]) -> str | None:
    """Why the checkpoint's signature does not hold, or None. `keys_by_id`: key id -> PEM."""
    pem = keys_by_id.get(checkpoint.key_id)
    if pem is None:
        return f"signed by unknown key {checkpoint.key_id!r}"
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        return f"key {checkpoint.key_id!r} is not an Ed25519 key"
    try:
        key.verify(base64.b64decode(checkpoint.signature, validate=True), signed_bytes(checkpoint))
    except (InvalidSignature, ValueError):
        return f"signature does not verify with key {checkpoint.key_id} (forged or altered checkpoint)"
    return None


def checkpoint_problem(checkpoint: AuditCheckpoint, last_seq: int, hash_at_seq: str | None) -> str | None:
    """Compare a verified chain (its last seq, and the hash of its entry `checkpoint.seq` if it has one)
    with a checkpoint whose signature holds. Entries after the checkpoint are fine: it is older."""
    if last_seq < checkpoint.seq:
        return (
            f"truncated: the log ends at seq {last_seq}, but the checkpoint of {checkpoint.time} "
            f"covers seq {checkpoint.seq} (the newest entries were deleted)"
        )
    if hash_at_seq != checkpoint.hash:
        return (
            f"entry {checkpoint.seq} differs from the checkpoint of {checkpoint.time} (the log was replaced)"
        )
    return None
