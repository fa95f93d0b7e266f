-- Segment counts (issue #12: p95 <= 500 ms on 1M subscribers x 10M events, chDB): the subscriber mirror
-- and the memberships again, laid out for segment queries. `subscribers` and `memberships` (0003) are
-- ordered by string ids, so every FINAL read merged on 30-character ids (memberships: 103 ms for one
-- list of a million, 19 ms keyed by UInt64; the segment's `IN` over them 650 -> 251 ms, measured on the
-- bench data, docs/audience.md), and the attribute maps compared string keys row by row.
--
-- segment_subscribers: one row per (workspace, cityHash64(id)), the highest version (FINAL), with the
-- attribute maps keyed by LowCardinality(String) (a key comparison is a dictionary index). The same
-- 64-bit keys as migration 0006; a false match needs two ids with one hash (about 3e-8 at a million).
CREATE TABLE IF NOT EXISTS segment_subscribers (
    workspace LowCardinality(String),
    key UInt64,
    id String,
    email String,
    email_key UInt64,
    name String,
    attributes String CODEC(ZSTD(3)),
    attr_strings Map(LowCardinality(String), String),
    attr_numbers Map(LowCardinality(String), Float64),
    status LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    version UInt64,
    deleted UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, key);

-- segment_memberships: one row per (workspace, list, cityHash64(subscriber id)), the highest version.
CREATE TABLE IF NOT EXISTS segment_memberships (
    workspace LowCardinality(String),
    list_id LowCardinality(String),
    subscriber_key UInt64,
    status LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, list_id, subscriber_key);

-- Fed as the mirror is written (every insert into the 0003 tables, the erasure tombstone included);
-- erasure deletes from both copies (analytics/clickhouse_backend.py).
CREATE MATERIALIZED VIEW IF NOT EXISTS segment_subscribers_feed TO segment_subscribers AS
SELECT workspace, cityHash64(id) AS key, id, email, cityHash64(email) AS email_key, name, attributes,
       attr_strings, attr_numbers, status, created_at, version, deleted
FROM subscribers;

CREATE MATERIALIZED VIEW IF NOT EXISTS segment_memberships_feed TO segment_memberships AS
SELECT workspace, list_id, cityHash64(subscriber_id) AS subscriber_key, status, version
FROM memberships;

-- The rows stored before the views existed. A row inserted meanwhile lands twice with one version:
-- ReplacingMergeTree keeps one (and running these again changes nothing).
INSERT INTO segment_subscribers
SELECT workspace, cityHash64(id) AS key, id, email, cityHash64(email) AS email_key, name, attributes,
       attr_strings, attr_numbers, status, created_at, version, deleted
FROM subscribers;

INSERT INTO segment_memberships
SELECT workspace, list_id, cityHash64(subscriber_id) AS subscriber_key, status, version
FROM memberships
