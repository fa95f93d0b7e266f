-- The subscriber mirror (docs/audience.md "Segments"): what segments are evaluated over, fed by the
-- event sink from subscriber.* and list.* events. `version` is the subscriber's change counter: an
-- upsert only replaces a row holding a lower version, so a replayed or late event changes nothing.
-- `deleted` marks an erased subscriber (the row keeps only its ids, at the highest version).
-- `attributes` is the JSON object of the subscriber's attributes; queries extract typed values.
CREATE TABLE IF NOT EXISTS subscribers (
    workspace VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    email VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    attributes VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (workspace, id)
);

-- One row per (subscriber, list), versioned by the same per-subscriber counter.
CREATE TABLE IF NOT EXISTS memberships (
    workspace VARCHAR NOT NULL,
    subscriber_id VARCHAR NOT NULL,
    list_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (workspace, subscriber_id, list_id)
);
