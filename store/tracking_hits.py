"""Which tracking hits are recorded: one per recipient and link per window, and a cap per message.

An open pixel or click link fetched 100,000 times would otherwise add 100,000 events to the message's
timeline, the event stream, the analytics store and every webhook endpoint's queue. The pixel and the
redirect are still answered every time; only the recording is bounded. One script decides both limits
atomically, so concurrent hits from several ingress processes cannot overshoot the cap.
"""

from __future__ import annotations

from enum import Enum

import redis.asyncio as aioredis

from schemas.settings import Settings
from security.tracking import ClickToken, OpenToken
from store import keyspace

_ADMIT = """
if tonumber(ARGV[1]) > 0 and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local recorded = redis.call('INCR', KEYS[2])
if recorded == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if recorded > tonumber(ARGV[2]) then return 2 end
return 1
"""


class HitVerdict(Enum):
    DUPLICATE = 0  # the same hit within the dedupe window
    RECORD = 1
    CAPPED = 2  # the message already has its maximum of tracking events


async def admit_hit(redis: aioredis.Redis, settings: Settings, token: OpenToken | ClickToken) -> HitVerdict:
    """Whether to record this open, or this click of one link, by the token's recipient."""
    link = token.link_index if isinstance(token, ClickToken) else None
    keys = [
        keyspace.tracking_hit(token.workspace, token.message_id, token.recipient, link),
        keyspace.tracking_hits(token.workspace, token.message_id),
    ]
    args = [
        settings.tracking_dedup_seconds,
        settings.tracking_max_events_per_message,
        settings.message_retention_seconds,
    ]
    return HitVerdict(int(await redis.eval(_ADMIT, len(keys), *keys, *args)))


RECORD = HitVerdict.RECORD
