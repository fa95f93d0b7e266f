"""The ledger's Lua scripts: the only code that writes a message's status in Redis.

Every script starts with `LUA_STATUSES` (store/ledger/statuses.py), so statuses are the enum's locals
(`QUEUED`, `SENDING`, ...), never literals. Batches cross as one msgpack argument (store/lua.py).
"""

from __future__ import annotations

from store.ledger.archive import BUCKET
from store.ledger.statuses import LUA_STATUSES
from store.lua import LUA_ARRAY

# A message's timeline is its hash's field `ev`, a msgpack array of its events in order (`msgpack_array`,
# `msgpack_append` in store/lua.py): no key of its own. Before round 9 the events after the acceptance went to
# a list (`keyspace.message_events`); a message written then still has it, read beside `ev` and expired
# with the message, so the scripts that finish a message expire that key too.
#
# The atomic enqueue of a batch. A message's first events (those of its acceptance) start its `ev`: the
# row's `kept` events where it has them (a campaign message's without their envelope), else the events whole
# as they go to the stream. Key names are built here from the workspace and ids exactly as
# store/keyspace.py builds them (message, message_index, message_ranges, message_archive, dispatch_stream).
# A message may carry its request's audit entry, appended to KEYS[3] here: the send path's audit entry costs
# no round trip of its own. An empty payload: a large one was staged in the hash before
# (MessageLedger._stage). The new ids go into their workspace's index by one ZADD per workspace at the end,
# not one per message; a packed campaign's (a row with its `range`) as its range's mark and count
# (store/ledger/index_ranges.py).
ENQUEUE = (
    LUA_STATUSES
    + LUA_ARRAY
    + f"local archive_bucket = {BUCKET}\n"
    + """
local retention = ARGV[1]
local batch = cmsgpack.unpack(ARGV[2])
local results, events = {}, {}
local crockford = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function position_of(id)  -- the last 8 Crockford digits of an id (index_ranges.position_of)
  local value = 0
  for i = #id - 7, #id do value = value * 32 + (string.find(crockford, string.sub(id, i, i), 1, true) - 1) end
  return value
end
local bases, listed, ranged = {}, {}, {}  -- per workspace: its key prefix, the new ids for its index (one
-- ZADD), and its ranges' counts (prefix -> highest position + 1)
for m, row in ipairs(batch) do
  local id, ws, item, status, payload, meta, server, score, evs, audit, kept, range, position = unpack(row)
  if #kept == 0 then kept = evs end
  local base = bases[ws]
  if not base then
    base = 'm:{' .. ws .. '}:'
    bases[ws], listed[ws], ranged[ws] = base, {}, {}
  end
  local hkey = base .. 'msg:' .. id
  local prior = false
  if item == '=' then
    -- A derived id (actors/outbound): its message hash is the record of a prior send, kept for the
    -- message retention; no idempotency key of its own (one GET, one SET and a key per message saved).
    if redis.call('EXISTS', hkey) == 1 then prior = id end
    -- or, for a campaign's position, its bucket of the archive (store/ledger/archive.py): a bucket is
    -- only written behind the campaign's committed positions, so this is the guard of a bug, never hit
    if not prior and range ~= '' then
      local bucket = base .. 'arc:' .. range .. ':' .. math.floor(position / archive_bucket)
      if redis.call('EXISTS', bucket) == 1 then prior = id end
    end
  elseif item ~= '' then
    prior = redis.call('GET', item)
    -- An id derived from its inputs (actors/outbound) may name a message accepted longer ago than the
    -- key's retention: its hash is the record. Staged payloads ('' here) only ever have fresh ids.
    if not prior and payload ~= '' and redis.call('EXISTS', hkey) == 1 then prior = id end
    if not prior then redis.call('SET', item, id, 'EX', retention) end
  end
  if prior then
    results[m] = prior
  else
    if payload == '' then
      redis.call('PERSIST', hkey)  -- staged by MessageLedger._stage
      redis.call('HSET', hkey, 's', status, 'm', meta, 'srv', server, 'ev', msgpack_array(kept))
    else
      redis.call('HSET', hkey, 's', status, 'p', payload, 'm', meta, 'srv', server, 'ev', msgpack_array(kept))
    end
    if range ~= '' then
      local counts = ranged[ws]
      if (counts[range] or 0) <= position then counts[range] = position + 1 end
    else
      local ids = listed[ws]
      ids[#ids + 1] = 0
      ids[#ids + 1] = id
    end
    for _, blob in ipairs(evs) do events[#events+1] = blob end
    if score ~= '' then
      redis.call('ZADD', KEYS[2], score, hkey)
    elseif status == QUEUED then
      redis.call('XADD', base .. 'dispatch:' .. server, '*', 'id', id)
    end
    results[m] = ''
  end
  if audit ~= '' then
    redis.call('XADD', KEYS[3], '*', 'e', audit)
  end
end
for ws, ids in pairs(listed) do
  for i = 1, #ids, 2000 do
    redis.call('ZADD', bases[ws] .. 'messages', unpack(ids, i, math.min(i + 1999, #ids)))
  end
end
for ws, counts in pairs(ranged) do
  local index = bases[ws] .. 'messages'
  for range, count in pairs(counts) do
    if redis.call('ZADD', index, 0, range .. '~') == 1 then
      -- A new mark. A campaign sending when the ranges came has its first ids in the index one by one:
      -- the count covers the highest of them too, so the list expands each once (index_ranges.py).
      local top = redis.call('ZREVRANGEBYLEX', index, '(' .. range .. '~', '[' .. range, 'LIMIT', 0, 1)[1]
      if top and #top == #range + 8 then
        count = math.max(count, position_of(top) + 1)
      end
    end
    local known = tonumber(redis.call('HGET', bases[ws] .. 'message-ranges', range) or '0')
    if known < count then redis.call('HSET', bases[ws] .. 'message-ranges', range, count) end
  end
end
if #events > 0 then
  redis.call('XADD', KEYS[1], '*', 'b', msgpack_array(events))
end
return results
"""
)

CANCEL = (
    LUA_STATUSES
    + LUA_ARRAY
    + """
if redis.call('HGET', KEYS[1], 's') ~= SCHEDULED then
  return redis.call('HGET', KEYS[1], 's') or ''
end
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('HSET', KEYS[1], 's', CANCELED, 'ev', msgpack_append(redis.call('HGET', KEYS[1], 'ev'), {ARGV[1]}))
redis.call('XADD', KEYS[4], '*', 'b', string.char(0x91) .. ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])  -- a timeline list of before round 9, if any
return 'ok'
"""
)

# A compare-and-set on each message's status: a message delivered twice to the stream (a reclaimed
# entry, a failover race) is sent once. Only messages still queued for this server, or left sending by
# a consumer that died, are handed out.
CLAIM = (
    LUA_STATUSES
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 's', 'srv', 'p', 'm', 'att')
  local status, server = f[1], f[2]
  if server == ARGV[1] and (status == QUEUED or status == SENDING) then
    redis.call('HSET', key, 's', SENDING)
    out[i] = {f[3], f[4], f[5]}
  else
    out[i] = {}
  end
end
return out
"""
)

DUE = (
    LUA_STATUSES
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local moved = 0
for _, key in ipairs(due) do
  redis.call('ZREM', KEYS[1], key)
  local f = redis.call('HMGET', key, 's', 'srv')
  if (f[1] == SCHEDULED or f[1] == QUEUED) and f[2] then
    local ws, id = string.match(key, '^m:{(.-)}:msg:(.+)$')
    redis.call('HSET', key, 's', QUEUED)
    redis.call('XADD', 'm:{' .. ws .. '}:dispatch:' .. f[2], '*', 'id', id)
    moved = moved + 1
  end
end
return moved
"""
)

# One round trip records a whole set of dispatch outcomes (see `MessageLedger.record`); ARGV[1] is one
# msgpack batch. A message's hash is written only while it exists (a message that expired or was archived
# meanwhile gets no partial hash); its events go to the stream either way.
RECORD = (
    LUA_STATUSES
    + LUA_ARRAY
    + """
local batch = cmsgpack.unpack(ARGV[1])
local retention, mapping_ttl, group = ARGV[2], ARGV[3], ARGV[4]
local outcomes, waiting, windows, acks = batch[1], batch[2], batch[3], batch[4]
local streamed = {}
for _, o in ipairs(outcomes) do
  local key, id, status, events, fields = o[1], o[2], o[3], o[4], o[5]
  local mapping, mapped_to, failover, attempted, finished, retry_ms = o[6], o[7], o[8], o[9], o[10], o[11]
  local payload, listed, meta = o[12], o[13], o[14]
  -- Every hash has a status from its enqueue; none: the message expired, or was archived, meanwhile.
  local current = redis.call('HGET', key, 's')
  local held = current ~= false
  if #events > 0 then
    local ev = held and redis.call('HGET', key, 'ev')
    if ev then
      -- compact copies (a campaign message's), else the events whole
      redis.call('HSET', key, 'ev', msgpack_append(ev, #listed > 0 and listed or events))
    end
    for _, e in ipairs(events) do streamed[#streamed + 1] = e end
  end
  -- A late outcome of a message gone meanwhile (a consumer that stalled past its entry's reclaim): its
  -- events are streamed, and no partial hash is made.
  if held then
    if status ~= '' then
      if current == SENDING or current == QUEUED then
        redis.call('HSET', key, 's', status)  -- unless a provider webhook has moved it further already
      end
    end
    if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
    if payload ~= '' then redis.call('HSET', key, 'p', payload) end
    if meta ~= '' then redis.call('HSET', key, 'm', meta) end
    if mapping ~= '' then redis.call('SET', mapping, mapped_to, 'EX', mapping_ttl) end
    if failover ~= '' then redis.call('XADD', failover, '*', 'id', id) end
    if attempted == 1 then redis.call('HINCRBY', key, 'att', 1) end
    if finished == 1 then
      redis.call('EXPIRE', key, retention)
      redis.call('EXPIRE', key .. ':ev', retention)  -- a timeline list of before round 9, if any
    end
    if retry_ms ~= '' then redis.call('ZADD', KEYS[2], retry_ms, key) end
  end
end
for _, w in ipairs(waiting) do
  redis.call('HSET', w[1], 's', QUEUED)
  redis.call('ZADD', KEYS[2], w[2], w[1])
end
for _, w in ipairs(windows) do
  redis.call('INCRBY', w[1], w[2])
  redis.call('EXPIRE', w[1], w[3])
end
if #streamed > 0 then redis.call('XADD', KEYS[1], '*', 'b', msgpack_array(streamed)) end
for i = 1, #acks, 1000 do
  redis.call('XACK', KEYS[3], group, unpack(acks, i, math.min(i + 999, #acks)))
end
return #outcomes
"""
)

# Events from outside the dispatcher (provider webhooks, tracking), inside their caller's MULTI: the hash
# KEYS[i]'s `ev` gets the event ARGV[i] (msgpack), in order, while that hash exists.
APPEND_EVENTS = (
    LUA_STATUSES
    + LUA_ARRAY
    + """
local missing = {}
for i, key in ipairs(KEYS) do
  local ev = redis.call('HGET', key, 'ev')
  if ev then
    redis.call('HSET', key, 'ev', msgpack_append(ev, {ARGV[i]}))
  else
    missing[#missing + 1] = i
  end
end
return missing
"""
)

# A bucket of a packed campaign's settled messages into the archive (store/ledger/archive.py). KEYS[1]: the
# bucket, then the message hashes it packs; ARGV[1]: the blob, ARGV[2]: the time to live (ms) when none of
# the hashes has one, then each hash's fingerprint as it was read (`archive.fingerprint`). All or nothing:
# 0 (and nothing written) if any hash changed since, -1 if the bucket exists; else the hashes are deleted
# and the bucket lives as long as the longest-lived of them.
ARCHIVE = (
    LUA_STATUSES
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local ttl = -1
for i = 2, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'ev')
  if not f[1] or (f[1] .. '|' .. #(f[2] or '')) ~= ARGV[i + 1] then return 0 end
  local left = redis.call('PTTL', KEYS[i])
  if left > ttl then ttl = left end
end
if ttl <= 0 then ttl = tonumber(ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
if #KEYS > 1 then redis.call('DEL', unpack(KEYS, 2)) end
return #KEYS - 1
"""
)

# Archived messages back into hashes of their own, before an event is written to them
# (ArchiveStore.restore). KEYS[1]: the zset of restored buckets (`keyspace.ARCHIVE_RESTORED`), then pairs of
# (message hash, its bucket); ARGV[1]: now (ms), then per pair its bucket's member in that zset, the number
# of values, and the hash's fields and values, flat. A hash that exists is left as it is (it is the truth);
# a restored one expires with its bucket, and its bucket is marked to be packed again (REARCHIVE) once
# quiet. Returns how many were restored.
RESTORE = (
    LUA_STATUSES
    + """
local at, restored = 2, 0
for i = 2, #KEYS, 2 do
  local member, n = ARGV[at], tonumber(ARGV[at + 1])
  if redis.call('EXISTS', KEYS[i]) == 0 and n > 0 then
    redis.call('HSET', KEYS[i], unpack(ARGV, at + 2, at + 1 + n))
    local ttl = redis.call('PTTL', KEYS[i + 1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
    redis.call('ZADD', KEYS[1], ARGV[1], member)
    restored = restored + 1
  end
  at = at + n + 2
end
return restored
"""
)

# A bucket packed again with the messages restored from it (ArchiveStore.repack): KEYS[1] the bucket,
# KEYS[2] the zset of restored buckets, then the restored hashes; ARGV[1] the new blob, ARGV[2] the SHA1
# of the blob it was made from, ARGV[3] the bucket's member in the zset and ARGV[4] its score as read,
# then each hash's fingerprint as read. All or nothing, and only if nothing moved since the read: the
# bucket, its score (a restore since would have a hash this pack lacks) and every hash. 0 if something did.
REARCHIVE = (
    LUA_STATUSES
    + """
local old = redis.call('GET', KEYS[1])
if not old or redis.sha1hex(old) ~= ARGV[2] then return 0 end
if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[3]) or -1) ~= tonumber(ARGV[4]) then return 0 end
for i = 3, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 's', 'ev')
  if not f[1] or (f[1] .. '|' .. #(f[2] or '')) ~= ARGV[i + 2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
if #KEYS > 2 then redis.call('DEL', unpack(KEYS, 3)) end
redis.call('ZREM', KEYS[2], ARGV[3])
return #KEYS - 2
"""
)

# The hashes KEYS, each as HGETALL gives it (a flat list; empty for a key that does not exist): one call
# for a bucket's 128 hashes instead of 128 in a pipeline, ~40% of the archiver's CPU a message
# (ArchiveStore._hashes).
READ_HASHES = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""

ALL = (ENQUEUE, CANCEL, CLAIM, DUE, RECORD, APPEND_EVENTS, ARCHIVE, RESTORE, REARCHIVE)
