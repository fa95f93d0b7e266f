-- The audit log (docs/audit.md): one row per chained entry. `id` is the primary key, so an entry the
-- AuditSink stores twice (after a crash) is ignored the second time (INSERT OR IGNORE). Every column
-- is exactly what was hashed and signed; the optional ones stay NULL (not '') because the hash tells
-- null from an empty string. `time` is the RFC 3339 text that was hashed (fixed width, so it sorts).
CREATE TABLE IF NOT EXISTS audit_log (
    id VARCHAR PRIMARY KEY,
    workspace VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    time VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    status INTEGER NOT NULL,
    request_id VARCHAR NOT NULL,
    key_id VARCHAR,
    key_prefix VARCHAR,
    resource_id VARCHAR,
    ip VARCHAR,
    user_agent VARCHAR,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL,
    signature VARCHAR NOT NULL
);
