"""Trimming consumed entries from the streams every consumer has read: `m:events` and the dispatch streams.

Nothing else removes their entries, so before this `m:events` kept every event ever emitted (~1.5 KB a
campaign message: its `message.accepted`, `message.sent`/`delivered`, …) and a dispatch stream every id
ever queued. An entry goes once every consumer group that must see it has read and acknowledged it: the
trim point is the lowest, over the groups, of the oldest entry still pending in the group or, with none
pending, the last entry handed to it. Entries at or after it stay (a pending entry is re-read after a
crash; `store/group_reader.py`).

Safe only when every group exists: a group created later from "0" (the event sink's replays history to a
new group) would not see what was trimmed before it. So the script trims nothing unless each of the
`required` groups is present; the serve creates them all at start (the event sink, webhooks, the campaign
and automation runners), and a deployment missing one keeps the whole stream as before.

One Lua script per stream (XINFO GROUPS, XPENDING per group with pending entries, XTRIM MINID): atomic
with respect to the consumers' XREADGROUP/XACK. `XTRIM … MINID ~` removes whole stream nodes only (cheap;
up to a node's worth of consumed entries may stay until the next trim), and `LIMIT 0`: without it `~`
removes at most 100 nodes' worth a call (10,000 entries), so a trim every 5 s fell behind any stream
written faster than 2,000 entries a second (a 1M campaign's dispatch stream kept ~600,000, 27 MB).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from store import keyspace
from store.replies import as_text

# The consumer groups of `m:events`: the event sink, webhooks, campaigns, automations.
EVENT_GROUPS = (
    keyspace.ANALYTICS_GROUP,
    keyspace.WEBHOOK_GROUP,
    keyspace.CAMPAIGN_EVENTS_GROUP,
    keyspace.AUTOMATION_GROUP,
)

TRIM_CONSUMED = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function lower(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local present, floor = {}, nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
  present[fields['name']] = true
  local point = fields['last-delivered-id']
  if tonumber(fields['pending']) > 0 then
    point = redis.call('XPENDING', KEYS[1], fields['name'])[2]
  end
  if floor == nil or lower(point, floor) then floor = point end
end
for _, name in ipairs(ARGV) do
  if not present[name] then return 0 end
end
if floor == nil or floor == '0-0' then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', floor, 'LIMIT', 0)
"""


class StreamTrimmer:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._trim = redis.register_script(TRIM_CONSUMED)

    async def trim(self, stream: str, groups: tuple[str, ...]) -> int:
        """Entries of `stream` that every group has consumed are removed (none unless each of `groups`
        exists); returns how many."""
        return int(await self._trim(keys=[stream], args=list(groups)))

    async def trim_all(self) -> int:
        """`m:events` and every sending server's dispatch stream (from the server index, no SCAN)."""
        removed = await self.trim(keyspace.EVENT_STREAM, EVENT_GROUPS)
        for server_id, workspace in (await self.redis.hgetall(keyspace.SERVER_WORKSPACES)).items():
            stream = keyspace.dispatch_stream(as_text(workspace), as_text(server_id))
            removed += await self.trim(stream, (keyspace.DISPATCH_GROUP,))
        return removed
