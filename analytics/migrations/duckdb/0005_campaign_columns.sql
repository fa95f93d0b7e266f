-- The campaign report (analytics/campaign_report.py) groups by A/B variant and leaves machine opens out
-- of unique counts. Both facts were inside JSON text (`metadata.campaign_variant`,
-- `data.machine_open`); as columns they need no JSON parsing per query. Rows written before this
-- migration get their values from the JSON they already hold, in the same transaction, so old events
-- keep their variant and machine flag. New rows carry the values the writer computes (analytics/rows.py).
ALTER TABLE events ADD COLUMN IF NOT EXISTS machine_open BOOLEAN DEFAULT false;

ALTER TABLE events ADD COLUMN IF NOT EXISTS campaign_variant VARCHAR DEFAULT '';

UPDATE events SET machine_open = coalesce(json_extract_string(data, '$.machine_open') = 'true', false)
WHERE data LIKE '%machine_open%';

UPDATE events SET campaign_variant = coalesce(json_extract_string(metadata, '$.campaign_variant'), '')
WHERE campaign_id <> '' AND metadata LIKE '%campaign_variant%';
