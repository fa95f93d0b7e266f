"""Every Redis key name the service uses, in one place (the arq habit).

All keys share the `m:` prefix. Keys that belong to one workspace carry it in braces (`{ws}`) so a
Redis Cluster keeps one workspace's keys in one slot and MULTI/EXEC across them stays legal.
"""

from __future__ import annotations

PREFIX = "m:"

# --- workspaces and API keys -------------------------------------------------------------------
WORKSPACES = PREFIX + "workspaces"                       # hash: name -> msgpack record
KEY_BY_HASH = PREFIX + "apikey:hash:"                     # + sha256 hex -> key id
KEY_INVALIDATIONS = PREFIX + "apikey:invalidations"       # pub/sub channel: key hash hex


def api_key(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}"                     # msgpack ApiKeyRecord


def workspace_keys(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:apikeys"             # zset: key id scored by creation ms


def key_usage(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}:usage"               # hash: count, last_used_at


# --- rate limits and idempotency ------------------------------------------------------------------
def rate_limit(key_id: str) -> str:
    return f"{PREFIX}ratelimit:{key_id}"                  # GCRA theoretical arrival time (ms)


def idempotency(workspace: str, method: str, path: str, key: str) -> str:
    return f"{PREFIX}{{{workspace}}}:idem:{method}:{path}:{key}"


# --- the event stream -----------------------------------------------------------------------------
# One entry holds a batch of events, msgpack-encoded list[Event] under field b"b"; consumers dedupe
# by event id, so an entry delivered twice changes nothing.
EVENT_STREAM = PREFIX + "events"
EVENT_FIELD = b"b"


# --- inbound provider webhooks --------------------------------------------------------------------
def inbound_replay(provider: str, server_id: str, token: str) -> str:
    return f"{PREFIX}inbound:replay:{provider}:{server_id}:{token}"   # SET NX EX: a seen token


def inbound_event_seen(provider: str, provider_event_id: str) -> str:
    return f"{PREFIX}inbound:seen:{provider}:{provider_event_id}"     # SET NX EX: dedupe


def provider_message(provider: str, provider_message_id: str) -> str:
    return f"{PREFIX}pmid:{provider}:{provider_message_id}"           # -> our msg id
