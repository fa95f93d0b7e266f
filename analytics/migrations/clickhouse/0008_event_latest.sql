-- Segment event conditions with `count_gte` 1 (issue #12, fourth pass): "had at least one event of this
-- type since T" needs, per recipient, only the time of the newest such event. `event_days` (0006) keeps
-- one row per (type, recipient, day, campaign), so a 365-day bounce window read 1.5M day rows (780k
-- recipients) plus the window's first, partial day from `events`; this table keeps one row per
-- (workspace, type, recipient, campaign) with the newest event's time, so the condition is one range
-- filter, `last >= T`, over at most one row per recipient and campaign, with no first-day read: exact to
-- the millisecond, because the newest event is at or after T exactly when some event is.
--
-- AggregatingMergeTree with `max`: merges keep the newest time per key. Unmerged rows need no FINAL:
-- every row is the newest time of some of the recipient's events, so `last >= T` on any row means an
-- event at or after T, and a recipient with such an event has it in some row. An event stored twice
-- (a replayed batch) changes no maximum. Erasure deletes the person's rows
-- (analytics/clickhouse_backend.py); the store gives it the events' retention (a row whose newest event
-- has passed it holds only purged events).
CREATE TABLE IF NOT EXISTS event_latest (
    workspace LowCardinality(String),
    type LowCardinality(String),
    recipient_key UInt64,
    campaign_id LowCardinality(String),
    last SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (workspace, type, recipient_key, campaign_id);

-- One row per inserted event, as event_days_feed (no aggregation at insert); merges keep the maximum.
CREATE MATERIALIZED VIEW IF NOT EXISTS event_latest_feed TO event_latest AS
SELECT workspace, type, cityHash64(recipient) AS recipient_key, campaign_id, created_at AS last
FROM events;

-- Events stored before the view existed. An event inserted meanwhile lands twice: the maximum is the
-- same (and running this statement again changes nothing either).
INSERT INTO event_latest
SELECT workspace, type, cityHash64(recipient) AS recipient_key, campaign_id, max(created_at) AS last
FROM events
GROUP BY workspace, type, recipient_key, campaign_id
