-- The audit log (docs/audit.md): one row per chained entry. An entry stored twice (after a crash)
-- carries the same (workspace, seq, id), so the ReplacingMergeTree merges it away and reads use FINAL.
-- Every column is exactly what was hashed and signed; the optional ones are Nullable because the hash
-- tells null from an empty string. `time` is the RFC 3339 text that was hashed (fixed width, so it sorts).
CREATE TABLE IF NOT EXISTS audit_log (
    id String,
    workspace String,
    seq UInt64,
    time String,
    action LowCardinality(String),
    status UInt16,
    request_id String,
    key_id Nullable(String),
    key_prefix Nullable(String),
    resource_id Nullable(String),
    ip Nullable(String),
    user_agent Nullable(String) CODEC(ZSTD(3)),
    prev_hash String,
    hash String,
    signature String
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, seq, id);
