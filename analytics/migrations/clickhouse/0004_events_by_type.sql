-- Segment event conditions (analytics/segments.py) ask "which recipients had at least N events of one
-- type in the last D days". The table is ordered for the API's queries, (workspace, created_at, id), so
-- that question read every event of the window, of every type: a 365-day bounce window was a scan of
-- nearly all of a workspace's events. This projection keeps, inside every part, a narrow copy ordered
-- by (workspace, type, created_at, recipient): the primary key then narrows the read to one type and
-- one window, and only the five columns the conditions use are stored again (no payloads).
-- ClickHouse maintains it with the part (inserts, merges, erasure's ALTER UPDATE) and chooses it by
-- itself (reads without FINAL only; event conditions count distinct ids instead). A ReplacingMergeTree
-- accepts a projection only once it says what merges do with it: `rebuild` rebuilds it from the merged,
-- deduplicated rows. Every statement is safe to run twice; MATERIALIZE builds it for parts written
-- before this migration, in the background (until then those parts are read through the table's own
-- order, with the same answers).
ALTER TABLE events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE events ADD PROJECTION IF NOT EXISTS events_by_type (
    SELECT workspace, type, created_at, recipient, campaign_id, id
    ORDER BY workspace, type, created_at, recipient
);

ALTER TABLE events MATERIALIZE PROJECTION events_by_type;
