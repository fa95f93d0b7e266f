-- The campaign report over a campaign's whole history reads these small tables instead of scanning the
-- campaign's events: every value it shows is a sum of integers. The same tables as ClickHouse's
-- migration 0009, and the same decision: the store (analytics/campaign_firsts.py) flags, in
-- `events.firsts`, each non-machine open or click that is its message's first open (1), first click (2),
-- first click of that url (4), from a lookup of `campaign_firsts`; `demoted_open_ms` / `demoted_click_ms`
-- name the time of a first this (earlier) event displaced. DuckDB has no materialized views: the store
-- adds the counters of the events a batch really inserts, in the insert's transaction
-- (analytics/duckdb_backend.py, docs/analytics.md "Campaign aggregates"). This file runs in one
-- transaction, backfill included.
ALTER TABLE events ADD COLUMN IF NOT EXISTS firsts UTINYINT DEFAULT 0;

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_open_ms BIGINT DEFAULT 0;

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_click_ms BIGINT DEFAULT 0;

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_open_provider VARCHAR DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_open_server VARCHAR DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_click_provider VARCHAR DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_click_server VARCHAR DEFAULT '';

-- One row per event that was ever its key's first (kind 1 open, 2 click of the pair `key`, url ''; 3
-- click of the pair on `url`); the current first is the smallest (created_at, event_id). No index: the
-- lookup is one hash join of the batch's keys, and rows are only added in the insert's transaction.
CREATE TABLE IF NOT EXISTS campaign_firsts (
    workspace VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    kind UTINYINT NOT NULL,
    key UBIGINT NOT NULL,
    url VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    server VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    event_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS campaign_groups (
    workspace VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    recipient_domain VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    server VARCHAR NOT NULL,
    campaign_variant VARCHAR NOT NULL,
    sent BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    bounced BIGINT NOT NULL,
    complained BIGINT NOT NULL,
    opened BIGINT NOT NULL,
    opened_unique BIGINT NOT NULL,
    clicked BIGINT NOT NULL,
    clicked_unique BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    suppressed BIGINT NOT NULL,
    PRIMARY KEY (workspace, campaign_id, recipient_domain, provider, server, campaign_variant)
);

CREATE TABLE IF NOT EXISTS campaign_minutes (
    workspace VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    minute BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    bounced BIGINT NOT NULL,
    complained BIGINT NOT NULL,
    opened BIGINT NOT NULL,
    opened_unique BIGINT NOT NULL,
    clicked BIGINT NOT NULL,
    clicked_unique BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    suppressed BIGINT NOT NULL,
    PRIMARY KEY (workspace, campaign_id, minute)
);

CREATE TABLE IF NOT EXISTS campaign_links (
    workspace VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    clicks BIGINT NOT NULL,
    clicked_unique BIGINT NOT NULL,
    PRIMARY KEY (workspace, campaign_id, url)
);

-- Backfill from the events stored before this migration (same transaction as the tables).
INSERT INTO campaign_firsts
SELECT workspace, campaign_id, kind, key, url, arg_min(provider, (created_at, id)),
       arg_min(server, (created_at, id)), arg_min(created_at, (created_at, id)), arg_min(id, (created_at, id))
FROM (
    SELECT workspace, campaign_id, CASE WHEN type = 'message.opened' THEN 1 ELSE 2 END AS kind,
           pair_hash AS key, '' AS url, provider, server, created_at, id
    FROM events
    WHERE campaign_id <> '' AND type IN ('message.opened', 'message.clicked') AND NOT machine_open
      AND pair_hash <> 0
    UNION ALL
    SELECT workspace, campaign_id, 3 AS kind, pair_hash AS key, url, provider, server, created_at, id
    FROM events
    WHERE campaign_id <> '' AND type = 'message.clicked' AND NOT machine_open AND pair_hash <> 0
)
GROUP BY workspace, campaign_id, kind, key, url;

CREATE TEMPORARY TABLE first_flags AS
SELECT event_id, CAST(bit_or(CASE kind WHEN 1 THEN 1 WHEN 2 THEN 2 ELSE 4 END) AS UTINYINT) AS flags
FROM campaign_firsts GROUP BY event_id;

INSERT INTO campaign_groups
SELECT workspace, campaign_id, recipient_domain, provider, server, campaign_variant,
       count(*) FILTER (WHERE type = 'message.sent'), count(*) FILTER (WHERE type = 'message.delivered'),
       count(*) FILTER (WHERE type = 'message.bounced'), count(*) FILTER (WHERE type = 'message.complained'),
       count(*) FILTER (WHERE type = 'message.opened'),
       count(*) FILTER (WHERE type = 'message.opened' AND coalesce(f.flags, 0) % 2 = 1),
       count(*) FILTER (WHERE type = 'message.clicked'),
       count(*) FILTER (WHERE type = 'message.clicked' AND coalesce(f.flags, 0) % 4 >= 2),
       count(*) FILTER (WHERE type = 'subscriber.unsubscribed'), count(*) FILTER (WHERE type = 'message.failed'),
       count(*) FILTER (WHERE type = 'message.suppressed')
FROM events AS e LEFT JOIN first_flags AS f ON e.id = f.event_id
WHERE campaign_id <> '' AND type IN ('message.sent', 'message.delivered', 'message.bounced',
    'message.complained', 'message.opened', 'message.clicked', 'subscriber.unsubscribed',
    'message.failed', 'message.suppressed')
GROUP BY workspace, campaign_id, recipient_domain, provider, server, campaign_variant;

INSERT INTO campaign_minutes
SELECT workspace, campaign_id, epoch_ms(created_at) // 60000 * 60000 AS minute,
       count(*) FILTER (WHERE type = 'message.sent'), count(*) FILTER (WHERE type = 'message.delivered'),
       count(*) FILTER (WHERE type = 'message.bounced'), count(*) FILTER (WHERE type = 'message.complained'),
       count(*) FILTER (WHERE type = 'message.opened'),
       count(*) FILTER (WHERE type = 'message.opened' AND coalesce(f.flags, 0) % 2 = 1),
       count(*) FILTER (WHERE type = 'message.clicked'),
       count(*) FILTER (WHERE type = 'message.clicked' AND coalesce(f.flags, 0) % 4 >= 2),
       count(*) FILTER (WHERE type = 'subscriber.unsubscribed'), count(*) FILTER (WHERE type = 'message.failed'),
       count(*) FILTER (WHERE type = 'message.suppressed')
FROM events AS e LEFT JOIN first_flags AS f ON e.id = f.event_id
WHERE campaign_id <> '' AND type IN ('message.sent', 'message.delivered', 'message.bounced',
    'message.complained', 'message.opened', 'message.clicked', 'subscriber.unsubscribed',
    'message.failed', 'message.suppressed')
GROUP BY workspace, campaign_id, minute;

INSERT INTO campaign_links
SELECT workspace, campaign_id, url, count(*), count(*) FILTER (WHERE coalesce(f.flags, 0) >= 4)
FROM events AS e LEFT JOIN first_flags AS f ON e.id = f.event_id
WHERE campaign_id <> '' AND type = 'message.clicked' AND url <> ''
GROUP BY workspace, campaign_id, url;

DROP TABLE first_flags
