"""Tracking and unsubscribe tokens: what `/t/o/…`, `/t/c/…` and `/t/u/…` carry.

One recipient token (`OpenToken`: workspace, message, recipient) per tracked message: the open pixel is
`/t/o/{token}` and each tracked link `/t/c/{token}/{index}`. The index is not sealed: it only picks among
the message's own stored links (the redirect goes nowhere else), which its recipient can click anyway, so
a message with ten links costs one AES-SIV, not eleven (issue #13). `ClickToken` (`/t/c/{token}`, the
index sealed in) is what links issued before carry: still read, no longer issued.

A token is `base64url(version ‖ AES-SIV(key, payload, associated=[version, kind]))`, no padding:
- the payload (workspace, message id, recipient, …) is encrypted, so ids and addresses are not
  readable from a link and nothing in it can be guessed or enumerated;
- AES-SIV authenticates the payload and binds the kind ("o", "c", "u") and format version as
  associated data: a click token presented as an unsubscribe token, or any altered character, reads
  as None (the endpoints answer 404);
- AES-SIV needs no nonce, which keeps click links short (~110 characters for a typical message).
  It is deterministic: one payload always gives the same token, which reveals only that two links
  of the same message, recipient and link index are the same link.
Payloads are msgpack arrays (array_like Structs) to stay small; ids of the form `msg_<ULID>` travel
as 16 bytes plus their prefix (a msgpack ext) instead of 30 characters. New fields must get defaults.
"""

from __future__ import annotations

import re
from binascii import b2a_base64
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from ulid import ULID

from schemas.ids import ulid_bytes
from security import base64url

FORMAT_VERSION = 1
TrackingKind = Literal["o", "c", "u"]
MAX_TOKEN_CHARS = 1024  # longer reads as no token (a 404) before any decoding
TOKEN_PATTERN = base64url.pattern(MAX_TOKEN_CHARS)  # what the `/t/` routes state and enforce


class OpenToken(msgspec.Struct, frozen=True, array_like=True):
    """The recipient token: the open pixel's, and every tracked link's with the link's index beside it."""

    workspace: str
    message_id: str
    recipient: str


class ClickToken(msgspec.Struct, frozen=True, array_like=True):
    """A click: `link_index` points into the message's stored link list, so the redirect goes nowhere
    else. Sealed as a token of its own only in links issued before the recipient token served clicks
    (read, never issued now); otherwise built from a recipient token and the path's index."""

    workspace: str
    message_id: str
    recipient: str
    link_index: int


class UnsubscribeToken(msgspec.Struct, frozen=True, array_like=True):
    """`scope` "list" unsubscribes from `list_id`; "workspace" from all marketing mail of the workspace."""

    workspace: str
    message_id: str
    recipient: str
    list_id: str | None
    scope: Literal["list", "workspace"]


TrackingPayload = OpenToken | ClickToken | UnsubscribeToken

KINDS: dict[type, TrackingKind] = {OpenToken: "o", ClickToken: "c", UnsubscribeToken: "u"}
_TYPES: dict[str, type] = {kind: payload_type for payload_type, kind in KINDS.items()}
_PREFIXED_ULID = re.compile(r"([a-z]{1,8})_([0-7][0-9A-HJKMNP-TV-Z]{25})")
_ULID_EXT = 1
_ENCODER = msgspec.msgpack.Encoder()


class TrackingTokens:
    """Issues and reads tokens under one key (e.g. `derive_key(secret_key, "tracking")`)."""

    def __init__(self, key: bytes, old_keys: Sequence[bytes] = ()) -> None:
        """`old_keys`: earlier keys (a master-key rotation) that still read, never issue, so links in
        mail already sent keep working."""
        if any(len(k) < 32 for k in (key, *old_keys)):
            raise ValueError("a tracking key holds at least 32 bytes")
        self._siv = _siv(key)
        self._old = [_siv(k) for k in old_keys]

    def issue(self, payload: TrackingPayload) -> str:
        # Two or three per campaign message: the associated data is built once per kind, the cipher
        # object once per key (`__init__`), and the encoding done in C (issue #13).
        fields = list(msgspec.structs.astuple(payload))
        for at in _ID_FIELDS[type(payload)]:
            fields[at] = _packed_id(fields[at])
        sealed = self._siv.encrypt(_ENCODER.encode(fields), _ASSOCIATED_OF[type(payload)])
        return b2a_base64(_VERSION_BYTE + sealed, newline=False).translate(_URLSAFE).rstrip(b"=").decode()

    def read(self, kind: str, token: str) -> TrackingPayload | None:
        """The payload, or None for a forged, altered or truncated token or one of another kind."""
        payload_type = _TYPES.get(kind)
        if payload_type is None or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            raw = base64url.decode(token)
        except ValueError:
            return None
        if len(raw) < 17 or raw[0] != FORMAT_VERSION:
            return None
        for siv in (self._siv, *self._old):
            try:
                plaintext = siv.decrypt(raw[1:], _associated(kind))
                return msgspec.convert(_FIELDS_DECODER.decode(plaintext), payload_type)
            except InvalidTag:
                continue
            except (ValueError, msgspec.DecodeError):
                return None
        return None


def _siv(key: bytes) -> AESSIV:
    return AESSIV(HKDF(hashes.SHA256(), length=64, salt=None, info=b"mailers/tracking/aes-siv").derive(key))


def _associated(kind: str) -> list[bytes]:
    return [b"mailers-tracking", bytes([FORMAT_VERSION]), kind.encode("ascii")]


_VERSION_BYTE = bytes([FORMAT_VERSION])
# The fields that may hold a `<prefix>_<ULID>` id (workspace, message, list): the recipient is an address
# (it has an `@`, which no id has) and the rest are numbers and words, so packing them never applied.
_ID_FIELDS: dict[type, tuple[int, ...]] = {OpenToken: (0, 1), ClickToken: (0, 1), UnsubscribeToken: (0, 1, 3)}
_ASSOCIATED_OF: dict[type, list[bytes]] = {kind_of: _associated(kind) for kind_of, kind in KINDS.items()}
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64 → base64url (security/base64url.encode, in one pass)


def _packed_id(value: Any) -> Any:
    # Only `<prefix>_<ULID>` (28 to 35 characters) is packed: other strings (addresses) skip the regex.
    if not isinstance(value, str) or not 28 <= len(value) <= 35:
        return value
    packed = _packed_ids.get(value)
    if packed is None:
        match = _PREFIXED_ULID.fullmatch(value)
        if match is None:
            return value
        packed = msgspec.msgpack.Ext(_ULID_EXT, ulid_bytes(match[2]) + match[1].encode("ascii"))
        if len(_packed_ids) >= _PACKED_IDS_KEPT:
            _packed_ids.clear()
        _packed_ids[value] = packed
    return packed


# The ids of the last messages and lists packed: a campaign message issues two or three tokens of the
# same message id and list id. Bounded (cleared when full), as ids are never reused for other bytes.
_PACKED_IDS_KEPT = 256
_packed_ids: dict[str, msgspec.msgpack.Ext] = {}


def _unpacked_id(code: int, data: memoryview) -> str:
    if code != _ULID_EXT or len(data) < 17:
        raise ValueError("unknown msgpack extension in a tracking token")
    return f"{bytes(data[16:]).decode('ascii')}_{ULID.from_bytes(bytes(data[:16]))}"


_FIELDS_DECODER = msgspec.msgpack.Decoder(list, ext_hook=_unpacked_id)
