-- fleetprof schema, version 5: exact rollups under retry, cheaper retry checks, truncated
-- stacks counted.
--
-- Rollup markers: one row per batch in each of `function_minutes` and `service_minutes`,
-- written in the same INSERT and partition as the batch's rollup rows, so a retry after a
-- partial write knows whether that batch's rollups are in and writes each exactly once. A
-- marker repeats the key of one of the batch's own rollup rows with zero samples, its
-- `rollup_batch` set to the batch key and `rollup_batches = 1`; rollup rows have
-- `rollup_batch = ''` and `rollup_batches = 0`. Queries that sum and group see no difference.
-- `rollup_batch` ends the sort key (so merges keep markers apart; a column added to the sort
-- key must be added in the same statement and without a default).
ALTER TABLE function_minutes ADD COLUMN rollup_batch String, ADD COLUMN rollup_batches UInt64,
    MODIFY ORDER BY (service, function, minute, version, rollup_batch);

ALTER TABLE service_minutes ADD COLUMN rollup_batch String, ADD COLUMN rollup_batches UInt64,
    MODIFY ORDER BY (service, minute, version, host, rollup_batch);

-- `truncated_stacks` (LossCounters field 13): samples whose stack was cut (depth limit, an
-- unreadable frame); such a sample's root frame is a `[truncated: …]` placeholder.
ALTER TABLE losses ADD COLUMN truncated_stacks UInt64 DEFAULT 0;

-- batch_attempts: one row per batch the collector started to write, written before any of the
-- batch's rows. A batch with no row here has nothing stored anywhere, so the collector looks
-- for part-written tables (a slow scan of each) only for batches an earlier attempt started and
-- did not finish (no `batches` row).
CREATE TABLE IF NOT EXISTS batch_attempts
(
    host_id String,
    boot_id String,
    sequence UInt64,
    time DateTime,
    attempted DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, boot_id, sequence);
