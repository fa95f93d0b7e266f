-- The campaign report over a campaign's whole history (issue #13: p95 <= 300 ms on 1M recipients / 10M
-- events) reads these small tables instead of scanning the campaign's events: every value it shows is a
-- sum of integers. Unique opens and clicks are decided when an event is stored, not counted at read:
-- the store (analytics/campaign_firsts.py) looks the batch's non-machine opens and clicks up in
-- `campaign_firsts` and flags, in the new `events.firsts` bitmask, the event that is its message's first
-- open (1), first click (2), first click of that url (4); an event earlier than the stored first takes
-- its place and names the displaced one's time and server in `demoted_open_*` / `demoted_click_*`, so
-- the timeline and the providers move that unique count to the new first's bucket and server.
-- Materialized views on `events` then sum, per inserted block, the counters of the campaign events
-- (docs/analytics.md "Campaign aggregates").
-- Every statement is safe to run twice (the backfill empties the tables first). The event sink migrates
-- before it inserts, so no event lands between the backfill and the views.
ALTER TABLE events ADD COLUMN IF NOT EXISTS firsts UInt8 DEFAULT 0;

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_open_ms Int64 DEFAULT 0;

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_click_ms Int64 DEFAULT 0;

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_open_provider LowCardinality(String) DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_open_server LowCardinality(String) DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_click_provider LowCardinality(String) DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS demoted_click_server LowCardinality(String) DEFAULT '';

-- One row per event that was ever its key's first: kind 1 = open of the pair `key` (pair_hash, url ''),
-- 2 = click of the pair, 3 = click of the pair on `url`. The current first of a key is the row with the
-- smallest (created_at, event_id). Rows are inserted only after the lookup found no earlier one; a replay
-- of the same row is merged away (it is the whole sorting key). Same retention as the events.
CREATE TABLE IF NOT EXISTS campaign_firsts (
    workspace LowCardinality(String),
    campaign_id String,
    kind UInt8,
    key UInt64,
    url String,
    provider LowCardinality(String),
    server LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    event_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (workspace, campaign_id, kind, key, url, created_at, event_id);

-- Per (campaign, recipient domain, provider, server, variant): totals, domains, providers and variants
-- are GROUPING SETS over its few rows. SummingMergeTree: rows of one key are added up by merges, and
-- reads sum() per key, so unmerged rows give the same answer. Signed: erasure moves a person's counts
-- from their domain to '' with a negative row (analytics/clickhouse_backend.py).
CREATE TABLE IF NOT EXISTS campaign_groups (
    workspace LowCardinality(String),
    campaign_id String,
    recipient_domain LowCardinality(String),
    provider LowCardinality(String),
    server LowCardinality(String),
    campaign_variant LowCardinality(String),
    sent Int64,
    delivered Int64,
    bounced Int64,
    complained Int64,
    opened Int64,
    opened_unique Int64,
    clicked Int64,
    clicked_unique Int64,
    unsubscribed Int64,
    failed Int64,
    suppressed Int64
)
ENGINE = SummingMergeTree
ORDER BY (workspace, campaign_id, recipient_domain, provider, server, campaign_variant);

-- Per (campaign, minute): the timeline, re-bucketed at read time (every width of the ladder is a whole
-- number of minutes); its smallest and largest minute give the span. `minute` is epoch milliseconds.
CREATE TABLE IF NOT EXISTS campaign_minutes (
    workspace LowCardinality(String),
    campaign_id String,
    minute Int64,
    sent Int64,
    delivered Int64,
    bounced Int64,
    complained Int64,
    opened Int64,
    opened_unique Int64,
    clicked Int64,
    clicked_unique Int64,
    unsubscribed Int64,
    failed Int64,
    suppressed Int64
)
ENGINE = SummingMergeTree
ORDER BY (workspace, campaign_id, minute);

-- Per (campaign, clicked url): the links.
CREATE TABLE IF NOT EXISTS campaign_links (
    workspace LowCardinality(String),
    campaign_id String,
    url String,
    clicks Int64,
    clicked_unique Int64
)
ENGINE = SummingMergeTree
ORDER BY (workspace, campaign_id, url);

-- Backfill from the events stored before this migration: the firsts (earliest by (created_at, id) of each
-- key), then the counters with the flags those firsts give. Emptied first, so a second run counts nothing
-- twice (ClickHouse has no transactions).
TRUNCATE TABLE IF EXISTS campaign_firsts;

TRUNCATE TABLE IF EXISTS campaign_groups;

TRUNCATE TABLE IF EXISTS campaign_minutes;

TRUNCATE TABLE IF EXISTS campaign_links;

INSERT INTO campaign_firsts
SELECT workspace, campaign_id, kind, key, url, argMin(provider, (created_at, id)), argMin(server, (created_at, id)),
       argMin(created_at, (created_at, id)), argMin(id, (created_at, id))
FROM (
    SELECT workspace, campaign_id, if(type = 'message.opened', 1, 2) AS kind, pair_hash AS key, '' AS url,
           provider, server, created_at, id
    FROM events FINAL
    WHERE campaign_id != '' AND type IN ('message.opened', 'message.clicked') AND NOT machine_open
      AND pair_hash != 0
    UNION ALL
    SELECT workspace, campaign_id, 3 AS kind, pair_hash AS key, url, provider, server, created_at, id
    FROM events FINAL
    WHERE campaign_id != '' AND type = 'message.clicked' AND NOT machine_open AND pair_hash != 0
)
GROUP BY workspace, campaign_id, kind, key, url;

INSERT INTO campaign_groups
SELECT workspace, campaign_id, recipient_domain, provider, server, campaign_variant,
       countIf(type = 'message.sent'), countIf(type = 'message.delivered'), countIf(type = 'message.bounced'),
       countIf(type = 'message.complained'), countIf(type = 'message.opened'),
       countIf(type = 'message.opened' AND f % 2 = 1), countIf(type = 'message.clicked'),
       countIf(type = 'message.clicked' AND f % 4 >= 2), countIf(type = 'subscriber.unsubscribed'),
       countIf(type = 'message.failed'), countIf(type = 'message.suppressed')
FROM (
    SELECT e.workspace AS workspace, e.campaign_id AS campaign_id, e.recipient_domain AS recipient_domain,
           e.provider AS provider, e.server AS server, e.campaign_variant AS campaign_variant,
           e.type AS type, f.flags AS f
    FROM (
        SELECT * FROM events FINAL
        WHERE campaign_id != '' AND type IN ('message.sent', 'message.delivered', 'message.bounced',
            'message.complained', 'message.opened', 'message.clicked', 'subscriber.unsubscribed',
            'message.failed', 'message.suppressed')
    ) AS e
    LEFT JOIN (
        SELECT event_id, toUInt8(groupBitOr(multiIf(kind = 1, 1, kind = 2, 2, 4))) AS flags
        FROM campaign_firsts GROUP BY event_id
    ) AS f ON e.id = f.event_id
)
GROUP BY workspace, campaign_id, recipient_domain, provider, server, campaign_variant;

INSERT INTO campaign_minutes
SELECT workspace, campaign_id, minute,
       countIf(type = 'message.sent'), countIf(type = 'message.delivered'), countIf(type = 'message.bounced'),
       countIf(type = 'message.complained'), countIf(type = 'message.opened'),
       countIf(type = 'message.opened' AND f % 2 = 1), countIf(type = 'message.clicked'),
       countIf(type = 'message.clicked' AND f % 4 >= 2), countIf(type = 'subscriber.unsubscribed'),
       countIf(type = 'message.failed'), countIf(type = 'message.suppressed')
FROM (
    SELECT e.workspace AS workspace, e.campaign_id AS campaign_id,
           intDiv(toUnixTimestamp64Milli(e.created_at), 60000) * 60000 AS minute, e.type AS type, f.flags AS f
    FROM (
        SELECT * FROM events FINAL
        WHERE campaign_id != '' AND type IN ('message.sent', 'message.delivered', 'message.bounced',
            'message.complained', 'message.opened', 'message.clicked', 'subscriber.unsubscribed',
            'message.failed', 'message.suppressed')
    ) AS e
    LEFT JOIN (
        SELECT event_id, toUInt8(groupBitOr(multiIf(kind = 1, 1, kind = 2, 2, 4))) AS flags
        FROM campaign_firsts GROUP BY event_id
    ) AS f ON e.id = f.event_id
)
GROUP BY workspace, campaign_id, minute;

INSERT INTO campaign_links
SELECT e.workspace, e.campaign_id, e.url, count(), countIf(f.flags >= 4)
FROM (
    SELECT * FROM events FINAL WHERE campaign_id != '' AND type = 'message.clicked' AND url != ''
) AS e
LEFT JOIN (
    SELECT event_id, toUInt8(groupBitOr(multiIf(kind = 1, 1, kind = 2, 2, 4))) AS flags
    FROM campaign_firsts GROUP BY event_id
) AS f ON e.id = f.event_id
GROUP BY e.workspace, e.campaign_id, e.url;

-- The views: each insert into `events` adds its campaign events' counters (a few rows per block). A
-- first counts in its minute and its group, displacing or not; the displaced first's minute and
-- (provider, server) get -1: each event row is joined with the firsts it displaced (`d`, kind 0 = the
-- event itself, 1 = its displaced open, 2 = its displaced click; its domain and variant are the
-- pair's). Few events displace anything; folding them into these views rather than views of their own
-- spares the insert a part per table (separate views took a quarter of the insert rate).
CREATE MATERIALIZED VIEW IF NOT EXISTS campaign_groups_feed TO campaign_groups AS
SELECT workspace, campaign_id, recipient_domain, d.3 AS provider, d.4 AS server, campaign_variant,
       toInt64(countIf(d.1 = 0 AND type = 'message.sent')) AS sent,
       toInt64(countIf(d.1 = 0 AND type = 'message.delivered')) AS delivered,
       toInt64(countIf(d.1 = 0 AND type = 'message.bounced')) AS bounced,
       toInt64(countIf(d.1 = 0 AND type = 'message.complained')) AS complained,
       toInt64(countIf(d.1 = 0 AND type = 'message.opened')) AS opened,
       toInt64(countIf(d.1 = 0 AND type = 'message.opened' AND firsts % 2 = 1) - countIf(d.1 = 1)) AS opened_unique,
       toInt64(countIf(d.1 = 0 AND type = 'message.clicked')) AS clicked,
       toInt64(countIf(d.1 = 0 AND type = 'message.clicked' AND firsts % 4 >= 2) - countIf(d.1 = 2)) AS clicked_unique,
       toInt64(countIf(d.1 = 0 AND type = 'subscriber.unsubscribed')) AS unsubscribed,
       toInt64(countIf(d.1 = 0 AND type = 'message.failed')) AS failed,
       toInt64(countIf(d.1 = 0 AND type = 'message.suppressed')) AS suppressed
FROM events
ARRAY JOIN arrayFilter(
    x -> x.1 = 0 OR x.2 != 0,
    [(0, toInt64(0), toString(events.provider), toString(events.server)),
     (1, demoted_open_ms, toString(demoted_open_provider), toString(demoted_open_server)),
     (2, demoted_click_ms, toString(demoted_click_provider), toString(demoted_click_server))]
) AS d
WHERE campaign_id != '' AND type IN ('message.sent', 'message.delivered', 'message.bounced',
    'message.complained', 'message.opened', 'message.clicked', 'subscriber.unsubscribed',
    'message.failed', 'message.suppressed')
GROUP BY workspace, campaign_id, recipient_domain, d.3, d.4, campaign_variant;

CREATE MATERIALIZED VIEW IF NOT EXISTS campaign_minutes_feed TO campaign_minutes AS
SELECT workspace, campaign_id, intDiv(d.2, 60000) * 60000 AS minute,
       toInt64(countIf(d.1 = 0 AND type = 'message.sent')) AS sent,
       toInt64(countIf(d.1 = 0 AND type = 'message.delivered')) AS delivered,
       toInt64(countIf(d.1 = 0 AND type = 'message.bounced')) AS bounced,
       toInt64(countIf(d.1 = 0 AND type = 'message.complained')) AS complained,
       toInt64(countIf(d.1 = 0 AND type = 'message.opened')) AS opened,
       toInt64(countIf(d.1 = 0 AND type = 'message.opened' AND firsts % 2 = 1) - countIf(d.1 = 1)) AS opened_unique,
       toInt64(countIf(d.1 = 0 AND type = 'message.clicked')) AS clicked,
       toInt64(countIf(d.1 = 0 AND type = 'message.clicked' AND firsts % 4 >= 2) - countIf(d.1 = 2)) AS clicked_unique,
       toInt64(countIf(d.1 = 0 AND type = 'subscriber.unsubscribed')) AS unsubscribed,
       toInt64(countIf(d.1 = 0 AND type = 'message.failed')) AS failed,
       toInt64(countIf(d.1 = 0 AND type = 'message.suppressed')) AS suppressed
FROM events
ARRAY JOIN arrayFilter(
    x -> x.1 = 0 OR x.2 != 0,
    [(0, toUnixTimestamp64Milli(created_at)), (1, demoted_open_ms), (2, demoted_click_ms)]
) AS d
WHERE campaign_id != '' AND type IN ('message.sent', 'message.delivered', 'message.bounced',
    'message.complained', 'message.opened', 'message.clicked', 'subscriber.unsubscribed',
    'message.failed', 'message.suppressed')
GROUP BY workspace, campaign_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS campaign_links_feed TO campaign_links AS
SELECT workspace, campaign_id, url, toInt64(count()) AS clicks, toInt64(countIf(firsts >= 4)) AS clicked_unique
FROM events
WHERE campaign_id != '' AND type = 'message.clicked' AND url != ''
GROUP BY workspace, campaign_id, url
