"""Idempotency records: claim a key before executing, store the answer after, replay it on retries.

A record is a hash {state: running|done, fp, token, status, body, headers}. Claiming is one Lua script
(atomic check-and-set); completing and releasing check the claim's token so a claim whose lock expired
and was taken over by a retry is never overwritten by the late original.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT

from security.secretbox import SecretBox

_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'claimed'}
end
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then return {'mismatch'} end
if state == 'running' then return {'running'} end
return {'done', redis.call('HGET', KEYS[1], 'status'), redis.call('HGET', KEYS[1], 'body'),
        redis.call('HGET', KEYS[1], 'headers')}
"""

_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'headers', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
return redis.call('DEL', KEYS[1])
"""

_headers_codec = msgspec.json.Encoder(), msgspec.json.Decoder(dict[str, str])


class StoredResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    headers: dict[str, str]


class ClaimResult(msgspec.Struct, frozen=True):
    outcome: Literal["claimed", "mismatch", "running", "done"]
    token: str = ""
    stored: StoredResponse | None = None


class IdempotencyStore:
    """`box` seals stored answers: some carry a secret shown once (a new API key, a webhook secret)."""

    def __init__(
        self, redis: aioredis.Redis, *, lock_ms: int, retention_ms: int, box: SecretBox | None = None
    ) -> None:
        self.redis = redis
        self.box = box
        self.lock_ms = lock_ms
        self.retention_ms = retention_ms
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, key: str, fingerprint: str) -> ClaimResult:
        token = secrets.token_hex(8)
        reply = await self._claim(keys=[key], args=[fingerprint, token, self.lock_ms])
        outcome = reply[0].decode()
        if outcome == "claimed":
            return ClaimResult("claimed", token)
        if outcome != "done":
            return ClaimResult(outcome)
        body = reply[2] if self.box is None else self.box.open(reply[2].decode(), key.encode())
        stored = StoredResponse(int(reply[1]), body, _headers_codec[1].decode(reply[3]))
        return ClaimResult("done", stored=stored)

    async def complete(self, key: str, token: str, response: StoredResponse) -> bool:
        body = response.body if self.box is None else self.box.seal(response.body, key.encode())
        headers = _headers_codec[0].encode(response.headers)
        args: list[EncodableT] = [token, response.status, body, headers, self.retention_ms]
        return bool(await self._complete(keys=[key], args=args))

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[key], args=[token])


# The same record's claim, replay and completion as Lua functions, for a script that claims, writes and
# stores its answer in one call (store/automation_runs.py, an api trigger's batch): this module stays the
# one that knows the record's fields. `idempotent_answer`: nil when the key is free, else what `claim`
# answers (mismatch / running / the stored answer); `idempotent_claim`: as `_CLAIM` does when free;
# `idempotent_done`: the claim and its completion at once (state done, with the answer).
LUA_FUNCTIONS = """
local function idempotent_answer(key, fingerprint)
  local found = redis.call('HMGET', key, 'state', 'fp', 'status', 'body', 'headers')
  if not found[1] then return nil end
  if found[2] ~= fingerprint then return {'mismatch'} end
  if found[1] == 'running' then return {'running'} end
  return {'replay', found[3], found[4], found[5]}
end
local function idempotent_claim(key, fingerprint, token, lock_ms)
  redis.call('HSET', key, 'state', 'running', 'fp', fingerprint, 'token', token)
  redis.call('PEXPIRE', key, lock_ms)
end
local function idempotent_done(key, fingerprint, token, status, body, headers, retention_ms)
  redis.call('HSET', key, 'state', 'done', 'fp', fingerprint, 'token', token, 'status', status,
             'body', body, 'headers', headers)
  redis.call('PEXPIRE', key, retention_ms)
end
"""


def new_token() -> str:
    """A claim's token, as `IdempotencyStore.claim` makes it (for a script that claims by itself)."""
    return secrets.token_hex(8)


def encode_headers(headers: dict[str, str]) -> bytes:
    """A stored answer's headers, as `IdempotencyStore.complete` stores them."""
    return _headers_codec[0].encode(headers)


def decode_headers(raw: bytes) -> dict[str, str]:
    return _headers_codec[1].decode(raw)
