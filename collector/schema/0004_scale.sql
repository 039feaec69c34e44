-- fleetprof schema, version 4: storage at fleet scale.
--
-- `samples` rows keep the stack's id and no longer its names: a stack's function names are
-- stored once, in `stacks` (deduplicated across hosts and batches: the collector writes a stack
-- only when it has not written it recently, and ReplacingMergeTree folds the rest). Join on
-- `stack_id` for names (collector/schema/QUERIES.md shows how).
--
-- The per-minute rollups `function_minutes` and `service_minutes` are now aggregated by the
-- collector, once per INSERT group, instead of by materialized views that expanded every sample
-- row into one row per function of its stack. Their tables and their rows are unchanged.
--
-- Upgrading from v1-v3 keeps every row: the old rows' names are in `stacks` already (the v1
-- writer stored every stack there too), so dropping the column loses nothing. The views go first,
-- as they read the column.

DROP TABLE IF EXISTS function_minutes_mv;

DROP TABLE IF EXISTS service_minutes_mv;

ALTER TABLE samples DROP COLUMN functions;
