"""Tamper-evident audit log: entries hash-chained per workspace and signed with Ed25519.

Each entry's `hash` is sha256_hex(prev_hash ‖ canonical(entry)), where `canonical` is the entry without
`hash` and `signature` as UTF-8 JSON with sorted keys and no whitespace (the same bytes as Python's
`json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`), and `prev_hash` is the
previous entry's hash (64 zeros before the first entry of a workspace). `signature` is
base64(Ed25519(hash as ASCII)). The public key is published (`GET /v1/audit-logs/public-key`), so
anyone can verify an export.

What verification catches: an edited field (hash mismatch), a deleted or inserted entry (seq gap,
prev_hash mismatch), reordering (seq out of order), and an entry re-hashed by someone without the
private key (bad signature). Deleting the newest entries leaves a valid shorter chain: compare the last
seq and hash against the head the store keeps.

The signing key is derived from the master secret (`audit_signer`). Rotating the master secret changes
it, and entries keep the signature they were sealed with, so verification takes every verifying key
the log was ever signed with (the current one and those of `MAILERS_SECRET_KEYS_OLD`, and the ones
recorded in Redis by key id, `store/audit_log.py`): an entry verifies if one of them accepts it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from security.secretbox import derive_key

GENESIS_HASH = "0" * 64
SIGNING_PURPOSE = "audit-signing"  # the HKDF purpose of the signing key under the master secret
_UNSIGNED_FIELDS = ("hash", "signature")


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    workspace: str
    time: str  # RFC 3339 UTC with Z
    action: str  # e.g. "POST /v1/send"
    status: int
    request_id: str
    key_id: str | None = None
    key_prefix: str | None = None
    resource_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""
    signature: str = ""


class VerifyResult(msgspec.Struct, frozen=True):
    ok: bool
    first_broken_seq: int | None
    first_broken_id: str | None
    reason: str


class AuditSigner:
    """The workspace-independent Ed25519 key that signs entry hashes."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> AuditSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> AuditSigner:
        """From 32 raw bytes, e.g. `derive_key(secret_key, "audit-signing")`."""
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_key_b64(self) -> str:
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    def key_id(self) -> str:
        return key_id(self.public_key_pem())

    def sign(self, entry_hash: str) -> str:
        return self.sign_bytes(entry_hash.encode("ascii"))

    def sign_bytes(self, data: bytes) -> str:
        """base64 of the Ed25519 signature of `data` (checkpoints sign their own encoding)."""
        return base64.b64encode(self._key.sign(data)).decode("ascii")


def audit_signer(master_key: str) -> AuditSigner:
    """The signing key derived from one master secret (the current one signs; old ones only verify)."""
    return AuditSigner.from_private_bytes(derive_key(master_key, SIGNING_PURPOSE))


def key_id(public_key_pem: bytes) -> str:
    """A short, stable name of a verifying key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = _load_public_key(public_key_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical_bytes(entry: AuditEntry) -> bytes:
    fields = {
        name: value for name, value in msgspec.structs.asdict(entry).items() if name not in _UNSIGNED_FIELDS
    }
    return msgspec.json.encode(fields, order="sorted")


def entry_hash(entry: AuditEntry) -> str:
    """The hash `entry` must carry, computed from its own `prev_hash` and content."""
    return hashlib.sha256(entry.prev_hash.encode("ascii") + canonical_bytes(entry)).hexdigest()


def chain(entries: list[AuditEntry], prev_hash: str, prev_seq: int, signer: AuditSigner) -> list[AuditEntry]:
    """Append `entries` (in order) after the entry with `prev_seq`/`prev_hash`; returns them sealed."""
    sealed: list[AuditEntry] = []
    for entry in entries:
        prev_seq += 1
        linked = msgspec.structs.replace(entry, seq=prev_seq, prev_hash=prev_hash, hash="", signature="")
        digest = entry_hash(linked)
        sealed.append(msgspec.structs.replace(linked, hash=digest, signature=signer.sign(digest)))
        prev_hash = digest
    return sealed


def verify_chain(
    entries: list[AuditEntry],
    public_keys: bytes | Sequence[bytes],
    *,
    prev_hash: str = GENESIS_HASH,
    prev_seq: int = 0,
) -> VerifyResult:
    """Check a run of consecutive entries; by default the run starts at the workspace's first entry.
    `public_keys`: one PEM, or every PEM the log may have been signed with (a rotated master secret)."""
    pems = [public_keys] if isinstance(public_keys, bytes) else list(public_keys)
    keys = [_load_public_key(pem) for pem in pems]
    for entry in entries:
        problem = _entry_problem(entry, prev_hash, prev_seq, keys)
        if problem is not None:
            return VerifyResult(False, entry.seq, entry.id, problem)
        prev_hash, prev_seq = entry.hash, entry.seq
    return VerifyResult(True, None, None, f"{len(entries)} entries verified")


def _load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the audit public key must be an Ed25519 key")
    return key


def _entry_problem(
    entry: AuditEntry, prev_hash: str, prev_seq: int, keys: list[Ed25519PublicKey]
) -> str | None:
    if entry.seq != prev_seq + 1:
        if entry.seq <= prev_seq:
            return f"out of order: seq {entry.seq} follows seq {prev_seq}"
        return f"seq gap: expected {prev_seq + 1}, found {entry.seq} (entries deleted or reordered)"
    if entry.prev_hash != prev_hash:
        return "prev_hash does not match the previous entry's hash"
    if entry.hash != entry_hash(entry):
        return "hash does not match the entry's content (entry edited)"
    try:
        signature = base64.b64decode(entry.signature, validate=True)
    except ValueError:
        return "bad signature"
    for index, key in enumerate(keys):
        try:
            key.verify(signature, entry.hash.encode("ascii"))
        except (InvalidSignature, ValueError):
            continue
        if index:  # runs of entries share a key: try the one that just matched first
            keys.insert(0, keys.pop(index))
        return None
    return "bad signature"
