-- The subscriber mirror (docs/audience.md "Segments"), fed by the event sink from subscriber.* and
-- list.* events. ReplacingMergeTree(version): of the rows with one key the highest version survives
-- merges, and reads use FINAL, so a replayed or late event never wins over a newer state. `deleted`
-- marks an erased subscriber (ids only, at the highest version). `attributes` is a JSON object text.
CREATE TABLE IF NOT EXISTS subscribers (
    workspace String,
    id String,
    email String,
    name String,
    attributes String CODEC(ZSTD(3)),
    status LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    version UInt64,
    deleted UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, id);

CREATE TABLE IF NOT EXISTS memberships (
    workspace String,
    subscriber_id String,
    list_id String,
    status LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace, list_id, subscriber_id);
