-- Every normalised event, once: the primary key on the event id makes a replayed batch a no-op
-- (INSERT OR IGNORE). DuckDB keeps min/max zone maps per row group; events arrive roughly in time
-- order, so time-window filters skip most of the table without a secondary index.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    id VARCHAR PRIMARY KEY,
    workspace VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    type VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    recipient VARCHAR NOT NULL,
    recipient_domain VARCHAR NOT NULL,
    sender VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    server VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    tags VARCHAR[] NOT NULL,
    metadata VARCHAR NOT NULL,
    bounce_type VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    data VARCHAR NOT NULL,
    pair_hash UBIGINT NOT NULL
);
