-- The campaign report (analytics/campaign_report.py) groups by A/B variant and leaves machine opens out
-- of unique counts. Both facts were inside JSON text (`metadata.campaign_variant`,
-- `data.machine_open`); as columns they cost a byte or two per event and no JSON parsing per query.
-- The DEFAULT expressions make rows written before this migration readable as if they had the
-- columns: ClickHouse computes a missing column from its default on read (and writes it at the next
-- merge), so old events keep their variant and machine flag without rewriting a part. MATERIALIZE
-- then writes the two columns into the old parts in the background (a mutation; until it is done,
-- reads compute them), so queries stop parsing JSON for them. New rows carry the values the writer
-- computes (analytics/rows.py), which are the same expressions. Every statement is safe to run twice.
ALTER TABLE events ADD COLUMN IF NOT EXISTS machine_open Bool DEFAULT JSONExtractBool(data, 'machine_open');

ALTER TABLE events ADD COLUMN IF NOT EXISTS campaign_variant LowCardinality(String)
    DEFAULT if(campaign_id = '', '', JSONExtractString(metadata, 'campaign_variant'));

ALTER TABLE events MATERIALIZE COLUMN machine_open;

ALTER TABLE events MATERIALIZE COLUMN campaign_variant;
