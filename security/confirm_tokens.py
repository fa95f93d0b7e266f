"""Double opt-in confirmation links: `/c/{token}` carries (workspace, list, subscriber), sealed.

Built like the tracking tokens (`security/tracking.py`): AES-SIV under a key derived for this purpose
alone, the payload encrypted (no readable ids or addresses in the link) and authenticated, the format
version bound as associated data; a forged or altered token reads as None and the route answers 404.
`issued_ms` ties a link to one confirmation request: a link of an older request still confirms (people
click old mail), but only while the member is still unconfirmed.
"""

from __future__ import annotations

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from security import base64url

FORMAT_VERSION = 1
_ASSOCIATED = [b"mailers-confirm", bytes([FORMAT_VERSION])]
MAX_TOKEN_CHARS = 512  # longer reads as no token (a 404) before any decoding
TOKEN_PATTERN = base64url.pattern(MAX_TOKEN_CHARS)  # what the `/c/` routes state and enforce


class ConfirmToken(msgspec.Struct, frozen=True, array_like=True):
    workspace: str
    list_id: str
    subscriber_id: str
    issued_ms: int


class ConfirmTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a confirmation key holds at least 32 bytes")
        derived = HKDF(hashes.SHA256(), length=64, salt=None, info=b"mailers/confirm/aes-siv").derive(key)
        self._siv = AESSIV(derived)
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(ConfirmToken).decode

    def issue(self, payload: ConfirmToken) -> str:
        sealed = self._siv.encrypt(self._encode(payload), _ASSOCIATED)
        return base64url.encode(bytes([FORMAT_VERSION]) + sealed)

    def read(self, token: str) -> ConfirmToken | None:
        if len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            raw = base64url.decode(token)
            if len(raw) < 17 or raw[0] != FORMAT_VERSION:
                return None
            return self._decode(self._siv.decrypt(raw[1:], _ASSOCIATED))
        except (ValueError, InvalidTag, msgspec.DecodeError):
            return None
