-- schema_migrations: one row per applied file (ReplacingMergeTree: recording a version twice is harmless).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY version;

-- Every normalised event. ReplacingMergeTree collapses rows with the same sorting key, i.e. the same
-- event (an event id always carries the same workspace and created_at), so a replayed batch is
-- merged away; queries read with FINAL so answers are exact before merges happen too.
-- ORDER BY leads with the workspace and time: every API query is one workspace over a window.
-- Monthly partitions let retention drop whole parts: the store sets `TTL` from its retention setting
-- at migrate (ttl_only_drop_parts), see docs/analytics.md.
CREATE TABLE IF NOT EXISTS events (
    id String,
    workspace String,
    created_at DateTime64(3, 'UTC'),
    type LowCardinality(String),
    message_id String,
    recipient String,
    recipient_domain LowCardinality(String),
    sender String,
    provider LowCardinality(String),
    server LowCardinality(String),
    campaign_id String,
    tags Array(LowCardinality(String)),
    metadata String CODEC(ZSTD(3)),
    bounce_type LowCardinality(String),
    url String CODEC(ZSTD(3)),
    data String CODEC(ZSTD(3)),
    pair_hash UInt64,
    INDEX message_id_bloom message_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX campaign_id_bloom campaign_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX recipient_bloom recipient TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (workspace, created_at, id)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
