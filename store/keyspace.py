"""Every Redis key name the service uses, in one place (the arq habit).

All keys share the `m:` prefix. Keys that belong to one workspace carry it in braces (`{ws}`) so a
Redis Cluster keeps one workspace's keys in one slot and MULTI/EXEC across them stays legal.
"""

from __future__ import annotations

PREFIX = "m:"

# --- workspaces and API keys -------------------------------------------------------------------
WORKSPACES = PREFIX + "workspaces"  # hash: name -> msgpack record
KEY_BY_HASH = PREFIX + "apikey:hash:"  # + sha256 hex -> key id
KEY_INVALIDATIONS = PREFIX + "apikey:invalidations"  # pub/sub channel: key hash hex


def api_key(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}"  # msgpack ApiKeyRecord


def workspace_keys(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:apikeys"  # zset: key id scored by creation ms


def key_usage(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}:usage"  # hash: count, last_used_at


# --- rate limits and idempotency ------------------------------------------------------------------
def rate_limit(key_id: str) -> str:
    return f"{PREFIX}ratelimit:{key_id}"  # GCRA theoretical arrival time (ms)


def idempotency(workspace: str, key_id: str, method: str, path: str, key: str) -> str:
    # Per API key, not per workspace: a stored answer may carry a secret shown once (a new key, a
    # webhook secret), and another key of the workspace that guessed the Idempotency-Key would get it.
    return f"{PREFIX}{{{workspace}}}:idem:{key_id}:{method}:{path}:{key}"


# --- the event stream -----------------------------------------------------------------------------
# One entry holds a batch of events, msgpack-encoded list[Event] under field b"b"; consumers dedupe
# by event id, so an entry delivered twice changes nothing.
EVENT_STREAM = PREFIX + "events"
EVENT_FIELD = b"b"
# Or, instead, the subscribers one write created, as one columnar `schemas.subscriber_chunks.NewMembers`
# (msgpack) under field b"c": two events per subscriber that readers expand where they need them
# (`store/event_entries.py`).
EVENT_CHUNK_FIELD = b"c"


# --- inbound provider webhooks --------------------------------------------------------------------
def inbound_replay(provider: str, server_id: str, token: str) -> str:
    return f"{PREFIX}inbound:replay:{provider}:{server_id}:{token}"  # SET NX EX: a seen token


def inbound_event_seen(provider: str, server_id: str, provider_event_id: str) -> str:
    # Per server: two tenants' servers may see the same provider event id (or be made to).
    return f"{PREFIX}inbound:seen:{provider}:{server_id}:{provider_event_id}"  # SET NX EX: dedupe


def provider_message(provider: str, provider_message_id: str) -> str:
    return f"{PREFIX}pmid:{provider}:{provider_message_id}"  # -> our msg id


# --- messages and dispatch (send pipeline) ------------------------------------------------------
SCHEDULE = PREFIX + "schedule"  # zset: message hash keys scored by due time (ms)


def message(workspace: str, message_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:msg:{message_id}"  # hash: s, p, m, srv, prv, pmid, att, ev (timeline)


def message_events(workspace: str, message_id: str) -> str:
    # Before round 9, a message's events after its acceptance (a list of msgpack Event, in order); now its
    # hash's `ev` holds them all. Still read and expired for messages written then (store/ledger/scripts.py).
    return f"{PREFIX}{{{workspace}}}:msg:{message_id}:ev"


def message_index(workspace: str) -> str:
    # lex zset of message ids, and of one mark per packed campaign's range (store/ledger/index_ranges.py)
    return f"{PREFIX}{{{workspace}}}:messages"


def message_ranges(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:message-ranges"  # hash: a range's id prefix -> positions enqueued


# zset: "ws|prefix|bucket" -> when one of the bucket's messages was last restored from it (ms): the
# archiver packs the bucket again once those are quiet (store/ledger/archive.py)
ARCHIVE_RESTORED = PREFIX + "archive:restored"


def message_archive(workspace: str, prefix: str, bucket: int) -> str:
    # string: the settled messages of a range's positions [bucket * BUCKET, ...), packed and compressed
    # (store/ledger/archive.py); a message's own hash, when it has one again, comes first
    return f"{PREFIX}{{{workspace}}}:arc:{prefix}:{bucket}"


def send_item(workspace: str, scope: str, key: str, *, api_key: str | None = None) -> str:
    """-> message id (per-message idempotency). A body's own `idempotency_key` is per workspace (API.md);
    the keys derived from an `Idempotency-Key` header (`api_key` given) are per API key, like the header's
    record (`idempotency`): another key of the workspace that guessed the header would otherwise learn
    the message ids. `@key_id` follows the scope, which no explicit key can write (it comes after a colon)."""
    owner = f"@{api_key}" if api_key else ""
    return f"{PREFIX}{{{workspace}}}:item:{scope}{owner}:{key}"


def dispatch_stream(workspace: str, server_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:dispatch:{server_id}"  # stream: field id = message id


DISPATCH_GROUP = "dispatch"


def quota_window(server_id: str, window: str) -> str:
    return f"{PREFIX}quota:{server_id}:{window}"  # count sent in a calendar window


# --- settings of the send pipeline: sending servers, routing rules, suppressions ------------------
# Changes to a workspace's servers, their health or its rules are published (the workspace name) on
# ROUTING_INVALIDATIONS so every process drops its cached routing snapshot of that workspace.
ROUTING_INVALIDATIONS = PREFIX + "routing:invalidations"  # pub/sub channel: workspace
SERVER_WORKSPACES = PREFIX + "servers:workspace"  # hash: server id -> workspace
SERVER_STATUS = PREFIX + "servers:status"  # hash: server id -> healthy|degraded|down
# Suppression changes, msgpack (workspace, op, entries), applied by every SuppressionShard holding
# the workspace in memory; a shard that loses the channel forgets everything and reloads lazily.
SUPPRESSION_CHANGES = PREFIX + "suppressions:changes"  # pub/sub channel
SUPPRESSION_GLOBAL = "_global"  # pseudo-workspace holding global entries


def server(workspace: str, server_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:srv:{server_id}"  # msgpack ServerRecord


def workspace_servers(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:srvs"  # lex zset of server ids


def sandbox_server(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:srv:sandbox"  # the embedded sandbox server's id, set once


def server_rules(workspace: str, server_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:srv:{server_id}:rules"  # set: ids of rules targeting the server


def routing_rule(workspace: str, rule_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:rul:{rule_id}"  # msgpack RoutingRuleRecord


def workspace_rules(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:rules"  # lex zset of rule ids


def suppression_members(workspace: str, scope: str, scope_value: str) -> str:
    return f"{PREFIX}{{{workspace}}}:sup:set:{scope}:{scope_value}"  # set of normalised emails


def suppression_meta(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:sup:meta"  # hash: scope\x1fvalue\x1femail -> msgpack record


def suppression_index(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:sup:index"  # lex zset: ulid\x1fscope\x1fvalue\x1femail


def suppression_by_email(workspace: str, email: str) -> str:
    return f"{PREFIX}{{{workspace}}}:sup:email:{email}"  # set of meta fields of one address


# --- outbound webhooks (endpoints, deliveries, per-endpoint delivery queues) -----------------------
# A delivery waits in its endpoint's `due` zset only when it is the head of its message's lane, so
# the events of one message reach an endpoint in order; `ready` tells deliverers which endpoints have
# something due, so a busy endpoint never hides the others.
ANALYTICS_GROUP = "analytics"  # consumer group of the event sink on EVENT_STREAM
WEBHOOK_GROUP = "webhooks"  # consumer group on EVENT_STREAM
WEBHOOK_READY = PREFIX + "webhooks:ready"  # zset: "ws|whk" scored by earliest due (ms)


def webhook(workspace: str, endpoint_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:whk:{endpoint_id}"  # msgpack WebhookRecord


def webhook_index(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:webhooks"  # lex zset of endpoint ids


def webhook_version(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:webhooks:ver"  # counter: bumped on any change


def webhook_due(workspace: str, endpoint_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:whk:{endpoint_id}:due"  # zset: dlv id -> due (ms)


def webhook_lane(workspace: str, endpoint_id: str, message_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:whk:{endpoint_id}:lane:{message_id}"  # list: dlv ids, in order


def webhook_deliveries(workspace: str, endpoint_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:whk:{endpoint_id}:dlvs"  # lex zset of dlv ids


def webhook_dead(workspace: str, endpoint_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:whk:{endpoint_id}:dead"  # zset: dlv id -> event time (ms)


def webhook_failing(workspace: str, endpoint_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:whk:{endpoint_id}:failing"  # ms of first failure since success


def webhook_delivery(workspace: str, delivery_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:dlv:{delivery_id}"  # hash: e evt typ msg b c s n nd


def webhook_attempts(workspace: str, delivery_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:dlv:{delivery_id}:att"  # list of msgpack DeliveryAttempt


def webhook_in_flight(consumer: str) -> str:
    return f"{PREFIX}webhooks:inflight:{consumer}"  # set: "ws|whk|dlv" leased by one deliverer


# --- segments and analytics erasure (docs/audience.md "Segments", "Erasure") -----------------------
def segment(workspace: str, segment_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:seg:{segment_id}"  # msgpack SegmentRecord


def segment_index(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:segments"  # lex zset of segment ids


def erased_emails(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:erased"  # hash: sha256(email) hex -> erased at (ms); the sink drops


# --- tracking and unsubscribe ----------------------------------------------------------------------
def tracking_hit(workspace: str, message_id: str, recipient: str, link: int | None) -> str:
    where = "o" if link is None else f"c{link}"  # SET NX EX: a hit seen within the dedupe window
    return f"{PREFIX}{{{workspace}}}:hit:{message_id}:{where}:{recipient}"


def tracking_hits(workspace: str, message_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:hits:{message_id}"  # counter: open/click events recorded, EX


def address_rate_limit(address: str) -> str:
    return f"{PREFIX}ratelimit:addr:{address}"  # GCRA for the routes without an API key


def unsubscribe_recorded(workspace: str, message_id: str, scope: str, list_id: str | None, email: str) -> str:
    return f"{PREFIX}{{{workspace}}}:unsub:{message_id}:{scope}:{list_id or '-'}:{email}"  # event id, EX


# --- sending domains ------------------------------------------------------------------------------
def sending_domain(workspace: str, domain_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:dom:{domain_id}"  # msgpack SendingDomainRecord


def sending_domains(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:doms"  # lex zset of domain ids


def sending_domain_names(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:doms:names"  # hash: A-label domain -> id


# --- templates: a chain of immutable versions per template ------------------------------------------
def template(workspace: str, template_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:tpl:{template_id}"  # msgpack TemplateVersion: the newest version


def template_versions(workspace: str, template_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:tpl:{template_id}:v"  # hash: version number -> msgpack TemplateVersion


def template_index(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:templates"  # lex zset of template ids


# --- inbound provider events: what could not be tied to a message --------------------------------
INBOUND_UNMATCHED = PREFIX + "inbound:unmatched"  # hash: provider -> events for no message of ours


# --- the audit log ----------------------------------------------------------------------------------
# The ingress appends one unchained entry per request to AUDIT_STREAM; the single AuditSink chains it
# (seq, prev_hash, hash, signature) and, in ONE MULTI, moves it to AUDIT_CHAINED, advances the
# workspace's head in AUDIT_HEADS and acks + deletes the source entry. AUDIT_CHAINED is emptied once its
# entries are in the analytics store. These keys span workspaces inside one transaction, so a Redis
# Cluster deployment must keep them in one slot (rename them with a common `{audit}` hash tag).
AUDIT_STREAM = PREFIX + "audit"  # stream: field AUDIT_FIELD = msgpack AuditEntry (seq 0)
AUDIT_FIELD = b"e"
AUDIT_GROUP = "audit"  # consumer group of the AuditSink on AUDIT_STREAM
AUDIT_HEADS = PREFIX + "audit:heads"  # hash: workspace -> "seq:hash" of its last chained entry
AUDIT_CHAINED = PREFIX + "audit:chained"  # stream: chained entries not yet in the analytics store
AUDIT_KEYS = PREFIX + "audit:keys"  # hash: key id -> PEM of every key the log was signed with
# Signed checkpoints (store/audit_checkpoints.py): the latest per workspace, a bounded history, and the
# outbox the checkpoint exporter drains to the operator's external sink.
AUDIT_CHECKPOINT_LATEST = PREFIX + "audit:checkpoint"  # hash: workspace -> JSON AuditCheckpoint
AUDIT_CHECKPOINT_OUTBOX = PREFIX + "audit:checkpoint:outbox"  # stream: field AUDIT_FIELD = JSON checkpoint


def audit_checkpoints(workspace: str) -> str:
    return f"{PREFIX}audit:checkpoints:{workspace}"  # zset: JSON AuditCheckpoint scored by seq


# --- audience: lists, subscribers, imports -----------------------------------------------------------
# A subscriber is one msgpack SubscriberRecord in the workspace's `subs` hash (field: its id), found by
# address through `subs:email`; a list's members are lex zsets of subscriber ids, one per status, so a
# count is a ZCARD and a page a ZREVRANGEBYLEX. An import's rows wait in a stream of their own until the
# import runner applies them; IMPORTS_ACTIVE tells it which imports have rows.
IMPORTS_ACTIVE = PREFIX + "imports:active"  # set: "ws|imp" with rows to apply
# Confirmation mails the import runner could not send itself (the send path is the ingress's): one entry
# per applied batch, written in the batch's own script; consumed by every ingress through one group.
CONFIRMATION_OUTBOX = PREFIX + "confirm:outbox"  # stream: field c = msgpack PendingConfirmations
CONFIRMATION_GROUP = "confirm"


def subscribers(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:subs"  # hash: sub id -> msgpack SubscriberRecord


def subscriber_emails(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:subs:email"  # hash: normalised email -> sub id


def mailing_list(workspace: str, list_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:lst:{list_id}"  # msgpack ListRecord


def mailing_lists(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:lists"  # lex zset of list ids


def list_members(workspace: str, list_id: str, status: str) -> str:
    return f"{PREFIX}{{{workspace}}}:lst:{list_id}:m:{status}"  # lex zset of sub ids with that status


def subscriber_import(workspace: str, import_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:imp:{import_id}"  # msgpack ImportRecord


def import_progress(workspace: str, import_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:imp:{import_id}:n"  # hash: status rows created updated ...


def import_rows(workspace: str, import_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:imp:{import_id}:rows"  # stream: field r = msgpack [[line, cells]]


def import_errors(workspace: str, import_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:imp:{import_id}:err"  # list of msgpack RowError, in line order


def list_imports(workspace: str, list_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:lst:{list_id}:imps"  # lex zset of import ids


# --- full scans ------------------------------------------------------------------------------------
def records_of_kind(kind: str) -> str:
    """A SCAN pattern for every workspace's keys of one kind ("srv", "dom", "whk", "idem"): a key of the
    same prefix with another type (a set of rules, a due zset) is filtered out by the scan's TYPE."""
    return f"{PREFIX}{{*}}:{kind}:*"


# --- campaigns (docs/campaigns.md) ------------------------------------------------------------------
# One hash per campaign holds its configuration (field `r`, msgpack CampaignRecord), its status, the
# runner's checkpoint (phase, source, cursor) and its counters, so a status change, a checkpoint and
# the counts it implies commit together. The audience is snapshotted at launch into a lex zset of
# subscriber ids (a set: each subscriber, and so each address, once), read in chunks by cursor.
CAMPAIGNS_ACTIVE = PREFIX + "campaigns:active"  # set: "ws|cmp" the campaign runner works on
# set: "ws|cmp" whose settled messages the runner is packing into the archive (actors/campaigns/archiver.py)
CAMPAIGNS_ARCHIVING = PREFIX + "campaigns:archiving"
CAMPAIGN_EVENTS_GROUP = "campaigns"  # consumer group on EVENT_STREAM: live counters from message events


def campaign(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}"  # hash: r status phase src cur n:* ...


def campaign_index(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:campaigns"  # lex zset of campaign ids


def campaign_audience(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:aud"  # lex zset of sub ids, snapshot at launch


def campaign_audience_pages(workspace: str, campaign_id: str) -> str:
    # hash: page number -> msgpack list of sub ids (the snapshot packed once final; store/campaigns.py)
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:aud:pages"


def campaign_audience_firsts(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:aud:firsts"  # list: each page's first sub id, in order


def campaign_failed(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:failed"  # lex zset of sub ids that failed


def campaign_failures(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:why"  # hash: sub id -> msgpack FailureRecord


def campaign_retry(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:retry"  # lex zset of sub ids to send again


def campaign_variant_counts(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:ab"  # hash: "variant:metric" -> count (A/B tests)


def campaign_variant_unique(workspace: str, campaign_id: str, variant: str, metric: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:ab:{variant}:{metric}"  # HyperLogLog of message ids


def campaign_retry_why(workspace: str, campaign_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:cmp:{campaign_id}:retry:why"  # hash: sub id -> the FailureRecord retried


# --- automations and their runs (docs/automations.md) ---------------------------------------------------
# The head record and the immutable versions of each automation; its runs in one hash (a run is one small
# msgpack record), the runs to drive in one zset scored by when (a waiting run's wake-up, a running run's
# lease), the order runs started in (a list: newest first for the API), and AUTOMATIONS_ACTIVE naming the
# automations whose due zset is not empty. A waiting run is one hash field, one zset member and one list
# entry: nothing else per run (after_exit automations add one field while a run of that subscriber is
# live).
AUTOMATIONS_ACTIVE = PREFIX + "automations:active"  # set: "ws|aut" with runs in their due zset
AUTOMATIONS_LIVE = PREFIX + "automations:live"  # set: "ws|aut" of active (not paused) automations
AUTOMATION_SCHEDULES = PREFIX + "automations:schedules"  # zset: "ws|aut" -> next fire (ms)
AUTOMATION_GROUP = "automations"  # consumer group on EVENT_STREAM (event triggers)


def automation(workspace: str, automation_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}"  # msgpack AutomationRecord (the head)


def automation_versions(workspace: str, automation_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}:v"  # hash: version -> msgpack Definition


def automation_index(workspace: str) -> str:
    return f"{PREFIX}{{{workspace}}}:automations"  # lex zset of automation ids


def automation_runs(workspace: str, automation_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}:runs"  # hash: run id -> msgpack RunRecord


def automation_due(workspace: str, automation_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}:due"  # zset: run id -> due or lease end (ms)


def automation_run_order(workspace: str, automation_id: str) -> str:
    # list: run ids (bare ULIDs) in the order the runs started (appended; never removed but with the
    # automation): what lists runs newest first. A list entry costs ~30 B where a zset member costs ~140.
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}:order"


def automation_live_runs(workspace: str, automation_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}:in"  # hash: sub id -> live run id (after_exit)


def automation_segment_seen(workspace: str, automation_id: str) -> str:
    return f"{PREFIX}{{{workspace}}}:aut:{automation_id}:seg"  # set: sub ids already in the segment
