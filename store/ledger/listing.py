"""`GET /v1/messages` filtered inside Redis, so a page costs the ingress a page of summaries, not messages.

A message hash holds the whole message, attachments included (up to the body limit, 10 MiB). Loading
every scanned hash to test a filter made one request that matched nothing hold up to 5,000 of them at
once. Here one script per chunk of ids reads only the status, the meta and (for the survivors) the
payload, tests the filters in Lua, and returns a summary of each match: what crosses to Python is
bounded by the page size, whatever the messages weigh. A chunk stops at the match that fills the page,
so the cursor resumes exactly after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from schemas.message_status import MessageStatus
from store import keyspace
from store.ledger import index_ranges
from store.ledger.archive_store import ArchiveStore
from store.ledger.records import decode_message, decode_meta

# Redis's cmsgpack cannot read msgpack `bin` (attachments are bytes), so payloads are read by this
# small decoder: every type msgspec writes; `bin` and `ext` values are skipped, never copied.
_MSGPACK = """
local byte, sub, unpack_int = string.byte, string.sub, struct.unpack
local decode
local function list(s, pos, n)
  local out = {}
  for i = 1, n do out[i], pos = decode(s, pos) end
  return out, pos
end
local function map(s, pos, n)
  local out, k, v = {}
  for _ = 1, n do
    k, pos = decode(s, pos)
    v, pos = decode(s, pos)
    if k ~= nil then out[k] = v end
  end
  return out, pos
end
local WIDTH = {[0xc4] = 1, [0xc5] = 2, [0xc6] = 4, [0xd9] = 1, [0xda] = 2, [0xdb] = 4,
               [0xc7] = 1, [0xc8] = 2, [0xc9] = 4}
local NUMBER = {[0xcc] = '>I1', [0xcd] = '>I2', [0xce] = '>I4', [0xcf] = '>I8', [0xd0] = '>i1',
                [0xd1] = '>i2', [0xd2] = '>i4', [0xd3] = '>i8', [0xca] = '>f', [0xcb] = '>d'}
local FIXEXT = {[0xd4] = 1, [0xd5] = 2, [0xd6] = 4, [0xd7] = 8, [0xd8] = 16}
decode = function(s, pos)
  local b = byte(s, pos)
  if b < 0x80 then return b, pos + 1 end
  if b >= 0xe0 then return b - 256, pos + 1 end
  if b >= 0xa0 and b < 0xc0 then return sub(s, pos + 1, pos + b - 0xa0), pos + 1 + b - 0xa0 end
  if b < 0x90 then return map(s, pos + 1, b - 0x80) end
  if b < 0xa0 then return list(s, pos + 1, b - 0x90) end
  if b == 0xc0 then return nil, pos + 1 end
  if b == 0xc2 or b == 0xc3 then return b == 0xc3, pos + 1 end
  if NUMBER[b] then
    local value, after = unpack_int(NUMBER[b], s, pos + 1)
    return value, after
  end
  if FIXEXT[b] then return nil, pos + 2 + FIXEXT[b] end
  local width = WIDTH[b]
  if width then
    local n = unpack_int('>I' .. width, s, pos + 1)
    local start = pos + 1 + width
    if b >= 0xd9 then return sub(s, start, start + n - 1), start + n end
    if b >= 0xc7 then return nil, start + 1 + n end
    return nil, start + n
  end
  local n = unpack_int(b % 2 == 0 and '>I2' or '>I4', s, pos + 1)
  local start = pos + 1 + (b % 2 == 0 and 2 or 4)
  if b <= 0xdd then return list(s, start, n) end
  return map(s, start, n)
end
"""

# KEYS: message hashes, newest first. ARGV: want, status, tag, campaign_id, recipient (lowercase ASCII),
# from_ms, until_ms, and a second status the first stands for (the API's `queued` is also the ledger's
# `sending`); '' means "no such filter". Returns {ids consumed, msgpack array of summaries, the index in
# KEYS of each, the indexes of the hashes that do not exist}: an archived message has none, and
# `MessageLister` filters it in Python (`listed`), from its bucket.
_FILTER = (
    _MSGPACK
    + """
local want, status, tag, campaign, to = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], string.lower(ARGV[5])
local from_ms, until_ms, also = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local function has_tag(tags)
  for _, t in ipairs(tags or {}) do if t == tag then return true end end
  return false
end
local function has_recipient(p)
  for _, field in ipairs({'to', 'cc', 'bcc'}) do
    for _, a in ipairs(p[field] or {}) do
      if string.lower(a.email) == to then return true end
    end
  end
  return false
end
local out, at, absent, consumed = {}, {}, {}, 0
for i, key in ipairs(KEYS) do
  consumed = i
  local row = redis.call('HMGET', key, 's', 'm', 'srv')
  if not row[1] then
    absent[#absent + 1] = i  -- gone, or in the archive (store/ledger/archive.py): Python reads and filters it
  elseif (status == '' or row[1] == status or row[1] == also) then
    local created = decode(row[2], 1).created_ms
    if (not from_ms or created >= from_ms) and (not until_ms or created < until_ms) then
      local p = decode(redis.call('HGET', key, 'p'), 1)
      if (tag == '' or has_tag(p.tags)) and (campaign == '' or p.campaign_id == campaign)
          and (to == '' or has_recipient(p)) then
        local emails = {}
        for j, a in ipairs(p.to or {}) do emails[j] = a.email end
        -- the id from the key: a sent campaign message's envelope leaves it out (records.lean_message)
        out[#out + 1] = {string.match(key, ':msg:([^:]+)$'), row[1], created, row[3] or '', p.subject or '',
                         p.tags or {}, emails}
        at[#out] = i
        if #out >= want then break end
      end
    end
  end
end
return {consumed, cmsgpack.pack(out), cmsgpack.pack(at), cmsgpack.pack(absent)}
"""
)


# The API shows the ledger's `sending` as `queued` (schemas/message_status.py), so a filter on `queued`
# matches both.
_ALSO = {MessageStatus.QUEUED.value: MessageStatus.SENDING.value}


class MessageFilter(msgspec.Struct, frozen=True, kw_only=True):
    status: str | None = None
    tag: str | None = None
    campaign_id: str | None = None
    to: str | None = None
    from_ms: int | None = None
    until_ms: int | None = None


class ListedMessage(msgspec.Struct, array_like=True, frozen=True):
    id: str
    status: str
    created_ms: int
    server: str
    subject: str
    tags: list[str]
    to: list[str]


class ListPage(msgspec.Struct, frozen=True):
    messages: list[ListedMessage]
    has_more: bool
    last_id: str | None  # where the next page starts (after this id)


_decode = msgspec.msgpack.Decoder(list[ListedMessage]).decode
_indexes = msgspec.msgpack.Decoder(list[int]).decode


class MessageLister:
    """Newest first; scans at most `scan_limit` ids per page, `chunk` per script call."""

    def __init__(self, redis: aioredis.Redis, *, chunk: int = 200, scan_limit: int = 5000) -> None:
        self.redis = redis
        self.chunk = chunk
        self.scan_limit = scan_limit
        self._filter = redis.register_script(_FILTER)

    async def page(self, workspace: str, where: MessageFilter, *, limit: int, after: str | None) -> ListPage:
        found: list[ListedMessage] = []
        scanned, more, last = 0, True, after
        while len(found) <= limit and more and scanned < self.scan_limit:
            ids, more = await index_ranges.newest_first(self.redis, workspace, limit=self.chunk, after=last)
            consumed, matches = await self._matching(workspace, ids, where, limit + 1 - len(found))
            found += matches
            scanned += consumed
            if consumed:
                last = ids[consumed - 1]
            more = more or consumed < len(ids)
        has_more = len(found) > limit or (more and scanned >= self.scan_limit)
        page = found[:limit]
        return ListPage(page, has_more, page[-1].id if len(found) > limit else last)

    async def _matching(
        self, workspace: str, ids: Sequence[str], where: MessageFilter, want: int
    ) -> tuple[int, list[ListedMessage]]:
        if not ids:
            return 0, []
        args: list[str | int] = [
            want,
            where.status or "",
            where.tag or "",
            where.campaign_id or "",
            where.to or "",
        ]
        args += [
            "" if where.from_ms is None else where.from_ms,
            "" if where.until_ms is None else where.until_ms,
            _ALSO.get(where.status or "", ""),
        ]
        keys = [keyspace.message(workspace, message_id) for message_id in ids]
        consumed, packed, at, absent = await self._filter(keys=keys, args=args)
        matches = list(zip(_indexes(at), _decode(packed), strict=True))
        if absent_ids := [ids[i - 1] for i in _indexes(absent)]:
            archived = await ArchiveStore(self.redis).read(workspace, absent_ids)
            where_at = {message_id: i for i, message_id in enumerate(ids, 1)}
            for message_id, fields in archived.items():
                if (match := listed(workspace, message_id, fields, where)) is not None:
                    matches.append((where_at[message_id], match))
            matches.sort(key=lambda pair: pair[0])
            if len(matches) >= want:  # the Lua stopped at its own `want`th: the page may end earlier
                matches = matches[:want]
                consumed = matches[-1][0]
        return int(consumed), [match for _, match in matches]


def _ascii_lower(text: str) -> str:
    return text.encode().lower().decode()  # as Lua's string.lower: ASCII letters only


def listed(
    workspace: str, message_id: str, fields: dict[bytes, bytes], where: MessageFilter
) -> ListedMessage | None:
    """The summary of a message read from its fields (an archived one), if it passes `where`: the list
    script's filter, for what the script cannot read (a compressed bucket)."""
    status = fields[b"s"].decode()
    if where.status and status not in (where.status, _ALSO.get(where.status)):
        return None
    created = decode_meta(fields[b"m"]).created_ms
    if (where.from_ms is not None and created < where.from_ms) or (
        where.until_ms is not None and created >= where.until_ms
    ):
        return None
    message = decode_message(fields[b"p"], workspace, message_id)
    if where.tag and where.tag not in message.tags:
        return None
    if where.campaign_id and message.campaign_id != where.campaign_id:
        return None
    if where.to and not any(
        _ascii_lower(a.email) == _ascii_lower(where.to) for a in (*message.to, *message.cc, *message.bcc)
    ):
        return None
    server = fields.get(b"srv", b"").decode()
    to = [a.email for a in message.to]
    return ListedMessage(message_id, status, created, server, message.subject or "", message.tags, to)
