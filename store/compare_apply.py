"""Optimistic batch writes: check that hash fields still hold what was read, then apply, in one script.

The audience writes are read-merge-write over many records at once (10,000 subscribers of a bulk
request, a batch of import rows). WATCH over ten thousand fields of one hash would fail on any write to
the hash, so instead the whole batch crosses as one msgpack argument: a list of checks (hash, field,
expected value or false for "absent") and a list of commands. The script compares every check first and
runs the commands only if all hold, so a batch is all-or-nothing; on a conflict the caller re-reads and
re-plans. Commands are grouped by the caller (one HSET of a thousand fields, not a thousand HSETs).

A batch may also require stream entries to still exist (`require_entry`): the import runner's batch
applies one entry of rows and deletes it, so a second runner that read the same entry (two runners, or a
restarted one beside its old self) finds it gone and gets `EntryGone` instead of re-planning and counting
the rows twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from store.lua import lua_string
from store.script_call import PendingReply, send_script

_SCRIPT = """
local batch = cmsgpack.unpack(ARGV[1])
local entries = batch[3]
for i = 1, #entries do
  if #redis.call('XRANGE', entries[i][1], entries[i][2], entries[i][2]) == 0 then return -1 end
end
local checks = batch[1]
for i = 1, #checks do
  local check = checks[i]
  local fields = check[2]
  local current = redis.call('HMGET', check[1], unpack(fields))
  local expected = check[3]
  for j = 1, #fields do
    if current[j] ~= expected[j] then return i end
  end
end
local commands = batch[2]
for i = 1, #commands do
  redis.call(unpack(commands[i]))
end
return 0
"""

CHUNK = 1000  # fields per HMGET/HSET: Lua's unpack() takes at most ~8000 values


class EntryGone(Exception):
    """A stream entry the batch requires was deleted meanwhile: someone else applied it."""


class Batch:
    """Checks and commands of one atomic write, built up by the stores."""

    def __init__(self) -> None:
        self.checks: list[list[Any]] = []
        self.commands: list[list[Any]] = []
        self.entries: list[list[Any]] = []

    def expect(self, key: str, expected: dict[str, bytes | None]) -> None:
        """Each field of hash `key` must still hold its value (None: must not exist)."""
        items = list(expected.items())
        for start in range(0, len(items), CHUNK):
            part = items[start : start + CHUNK]
            values = [False if v is None else lua_string(v) for _, v in part]
            self.checks.append([key, [f for f, _ in part], values])

    def require_entry(self, stream: str, entry_id: bytes) -> None:
        """Apply nothing (`EntryGone`) unless stream entry `entry_id` still exists."""
        self.entries.append([stream, lua_string(entry_id)])

    def command(self, *args: Any) -> None:
        self.commands.append([lua_string(a) if isinstance(a, bytes) else a for a in args])

    def hset(self, key: str, mapping: Mapping[str, bytes | str | msgspec.Raw]) -> None:
        """HSET in chunks; values may be `lua_string`s already (a caller framing them as it encodes)."""
        items = list(mapping.items())
        for start in range(0, len(items), CHUNK):
            command: list[Any] = ["HSET", key]
            for name, value in items[start : start + CHUNK]:
                command += (name, lua_string(value) if isinstance(value, bytes) else value)
            self.commands.append(command)

    def spread(self, verb: str, key: str, members: Sequence[Any], *, prefix: Sequence[Any] = ()) -> None:
        """`verb key *prefix m1 m2 …` in chunks (ZADD with pairs, ZREM, HDEL, SREM)."""
        for start in range(0, len(members), CHUNK):
            self.command(verb, key, *prefix, *members[start : start + CHUNK])

    def __bool__(self) -> bool:
        return bool(self.commands)


class CompareAndApply:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_SCRIPT)
        self._encode = msgspec.msgpack.Encoder().encode

    async def __call__(self, batch: Batch) -> bool:
        """True if every check held and the commands ran; False if something changed meanwhile;
        `EntryGone` if a required stream entry no longer exists."""
        return await self.outcome(await self.send(batch))

    async def send(self, batch: Batch) -> PendingReply | None:
        """The batch's script sent, not yet answered (`outcome`); None for a batch with no commands."""
        if not batch.commands:
            return None
        payload = self._encode([batch.checks, batch.commands, batch.entries])
        return await send_script(self.redis, self._script, [], [payload])

    async def outcome(self, pending: PendingReply | None) -> bool:
        if pending is None:
            return True
        outcome = int(await pending.reply())
        if outcome < 0:
            raise EntryGone()
        return outcome == 0
