-- Events per (workspace, type, recipient, day, campaign): what segment event conditions read instead of
-- the events (docs/audience.md "Evaluation"), the same table as ClickHouse's migration 0006 so both
-- backends answer from the same data. DuckDB stores each event once (INSERT OR IGNORE on its id), so a
-- plain count is exact: the store adds the counts of the events a batch really inserts, in the same
-- transaction (analytics/duckdb_backend.py); erasure deletes the person's rows, retention their days.
CREATE TABLE IF NOT EXISTS event_days (
    workspace VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    recipient VARCHAR NOT NULL,
    day DATE NOT NULL,
    campaign_id VARCHAR NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (workspace, type, recipient, day, campaign_id)
);

-- Events stored before this migration (the migration runs in one transaction with the table).
INSERT INTO event_days
SELECT workspace, type, recipient, CAST(created_at AS DATE), campaign_id, count(*)
FROM events
GROUP BY ALL
ON CONFLICT DO NOTHING
