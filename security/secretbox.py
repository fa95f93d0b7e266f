"""Secrets at rest: per-purpose keys derived from MAILERS_SECRET_KEY, sealed with AES-256-GCM.

One master key (the operator's `MAILERS_SECRET_KEY`) never touches data directly. Each use gets its own
32-byte key, derived with HKDF-SHA256 and the purpose as `info`, so provider credentials, tracking
tokens and HMAC keys can never be confused with one another, and a key leaked for one purpose
reveals nothing about the others.

Sealed text form: `v1.<base64url(nonce ‖ ciphertext ‖ tag)>` without padding. The version prefix lets a
later format (another cipher) sit next to old rows.

Rotation (docs/operations.md): a box seals with the current master key's derived key and opens with it
or, failing that, with each earlier master key's (`MAILERS_SECRET_KEYS_OLD`). A token carries no key
id: AES-GCM rejects a wrong key by its tag, so trying a few keys costs microseconds, old tokens keep
their form, and `reseal` can tell a token already under the current key (what makes
`mailers secrets reencrypt` idempotent and resumable).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.settings import Settings
from security import base64url

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
MIN_MASTER_KEY_CHARS = 32
# A fixed, public salt: HKDF's extract step then only domain-separates us from other HKDF users.
_HKDF_SALT = b"mailers/hkdf/v1"


class SecretBoxError(Exception):
    """A sealed value could not be opened: altered, truncated, wrong key/purpose or unknown format."""


def generate_master_key() -> str:
    """A new url-safe master key (43 characters, 256 bits) for MAILERS_SECRET_KEY."""
    return secrets.token_urlsafe(KEY_BYTES)


def derive_key(master: str, purpose: str, length: int = KEY_BYTES) -> bytes:
    """The key for one `purpose` (e.g. "credentials", "tracking", "audit-signing")."""
    if len(master) < MIN_MASTER_KEY_CHARS:
        raise ValueError(f"the master key must be at least {MIN_MASTER_KEY_CHARS} characters")
    if not purpose:
        raise ValueError("a key purpose is required")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=purpose.encode())
    return hkdf.derive(master.encode())


class SecretBox:
    """Authenticated encryption for small values at rest (provider credentials, webhook secrets)."""

    def __init__(self, key: bytes, old_keys: Sequence[bytes] = ()) -> None:
        if any(len(k) != KEY_BYTES for k in (key, *old_keys)):
            raise ValueError(f"a SecretBox key is {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self._old = [AESGCM(k) for k in old_keys]

    @classmethod
    def from_master_key(cls, master: str, purpose: str, old_masters: Sequence[str] = ()) -> SecretBox:
        """Seals under `master`; opens under it or any of `old_masters` (a rotation in progress)."""
        return cls(derive_key(master, purpose), [derive_key(old, purpose) for old in old_masters])

    def seal(self, plaintext: bytes, associated: bytes = b"") -> str:
        """Encrypt; `associated` (e.g. the record id) must be given again to open."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, associated)
        return f"{VERSION}.{base64url.encode(nonce + sealed)}"

    def open(self, token: str, associated: bytes = b"") -> bytes:
        nonce, sealed = _parts(token)
        for aead in (self._aead, *self._old):
            try:
                return aead.decrypt(nonce, sealed, associated)
            except InvalidTag:
                continue
        raise SecretBoxError("sealed value was altered or sealed under another key")

    def reseal(self, token: str, associated: bytes = b"") -> str | None:
        """`token` sealed again under the current key, or None when it already is (nothing to do)."""
        nonce, sealed = _parts(token)
        try:
            self._aead.decrypt(nonce, sealed, associated)
            return None
        except InvalidTag:
            return self.seal(self.open(token, associated), associated)


def box_for(settings: Settings, purpose: str) -> SecretBox:
    """The box of one purpose under the configured master keys (current, then the old ones)."""
    if settings.secret_key is None:
        raise ValueError(f"MAILERS_SECRET_KEY is not set; nothing can be sealed for {purpose!r}")
    return SecretBox.from_master_key(settings.secret_key, purpose, settings.secret_keys_old)


def _parts(token: str) -> tuple[bytes, bytes]:
    """(nonce, ciphertext ‖ tag) of a sealed token, or SecretBoxError for a malformed one."""
    version, dot, body = token.partition(".")
    if version != VERSION or not dot:
        raise SecretBoxError("unknown sealed-value format")
    try:
        raw = base64url.decode(body)
    except ValueError:
        raise SecretBoxError("sealed value is not valid base64url") from None
    if len(raw) < NONCE_BYTES + 16:
        raise SecretBoxError("sealed value is truncated")
    return raw[:NONCE_BYTES], raw[NONCE_BYTES:]
