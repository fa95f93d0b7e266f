-- Segment counts over a million subscribers (issue #12: p95 <= 500 ms on chDB). Measured on the bench's
-- 1M subscribers x 10M events, the time went to hashing strings and parsing JSON: the list's membership
-- set of a million subscriber ids, the address sets of event conditions (a 365-day bounce window: 1.5M
-- rows, 780k distinct addresses), count(DISTINCT id) per recipient, and two JSON parses per subscriber
-- for each typed attribute test. This migration gives every one of them an integer or typed form.
--
-- 1. Integer keys: 64-bit cityHash64 of the subscriber id and of the email (subscribers), of the
--    subscriber id (memberships), of the recipient (event_days below). Semi-joins compare UInt64 sets.
--    A false match needs two different strings with the same 64-bit hash: about 3e-8 for a million
--    subscribers against a million addresses (the same bound as pair_hash, docs/audience.md).
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS key UInt64 MATERIALIZED cityHash64(id);

ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS email_key UInt64 MATERIALIZED cityHash64(email);

ALTER TABLE memberships ADD COLUMN IF NOT EXISTS subscriber_key UInt64 MATERIALIZED cityHash64(subscriber_id);

-- 2. Typed attributes, parsed once at insert: the string-valued and number-valued attributes as maps
--    (`attr_strings['plan']` is a lookup among a few keys, not a JSON parse). Numbers are Float64, as
--    JSONExtractFloat read them. Booleans, arrays and `exists` still read the JSON text.
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS attr_strings Map(String, String) MATERIALIZED mapFromArrays(
    arrayMap(kv -> kv.1, arrayFilter(kv -> JSONType(kv.2) = 'String', JSONExtractKeysAndValuesRaw(attributes))),
    arrayMap(kv -> JSONExtractString(kv.2),
             arrayFilter(kv -> JSONType(kv.2) = 'String', JSONExtractKeysAndValuesRaw(attributes))));

ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS attr_numbers Map(String, Float64) MATERIALIZED mapFromArrays(
    arrayMap(kv -> kv.1, arrayFilter(kv -> JSONType(kv.2) IN ('Int64', 'UInt64', 'Double'),
                                     JSONExtractKeysAndValuesRaw(attributes))),
    arrayMap(kv -> JSONExtractFloat(kv.2), arrayFilter(kv -> JSONType(kv.2) IN ('Int64', 'UInt64', 'Double'),
                                                       JSONExtractKeysAndValuesRaw(attributes))));

-- Parts written before this migration compute the columns on read until these mutations rewrite them.
ALTER TABLE subscribers MATERIALIZE COLUMN key;

ALTER TABLE subscribers MATERIALIZE COLUMN email_key;

ALTER TABLE subscribers MATERIALIZE COLUMN attr_strings;

ALTER TABLE subscribers MATERIALIZE COLUMN attr_numbers;

ALTER TABLE memberships MATERIALIZE COLUMN subscriber_key;

-- 3. Events per (workspace, type, recipient, day, campaign): what event conditions read instead of the
--    events. Ordered by recipient within a type, so `GROUP BY recipient_key` of a window is read in
--    order. `ids` holds the 64-bit hashes of the event ids: merges take the union, so an event stored
--    twice (a replayed batch, not yet merged away in `events`) is counted once, as count(DISTINCT id)
--    did. Filled by the materialized view below as events are inserted; erasure deletes the person's
--    rows (analytics/clickhouse_backend.py); the store sets the same retention as `events` at migrate.
CREATE TABLE IF NOT EXISTS event_days (
    workspace LowCardinality(String),
    type LowCardinality(String),
    recipient_key UInt64,
    day Date,
    campaign_id LowCardinality(String),
    ids SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (workspace, type, recipient_key, day, campaign_id)
SETTINGS ttl_only_drop_parts = 1;

-- One row per inserted event, no aggregation at insert (a hash table per block would cost the sink's
-- inserts several times more); background merges sum them into one row per key.
CREATE MATERIALIZED VIEW IF NOT EXISTS event_days_feed TO event_days AS
SELECT workspace, type, cityHash64(recipient) AS recipient_key, toDate(created_at) AS day, campaign_id,
       [cityHash64(id)] AS ids
FROM events;

-- Events stored before the view existed. Events inserted meanwhile land twice; the id sets make that
-- harmless (and running this statement again too).
INSERT INTO event_days
SELECT workspace, type, cityHash64(recipient) AS recipient_key, toDate(created_at) AS day, campaign_id,
       groupUniqArray(cityHash64(id)) AS ids
FROM events
GROUP BY workspace, type, recipient_key, day, campaign_id
