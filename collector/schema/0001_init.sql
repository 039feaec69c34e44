-- fleetprof schema, version 1.
--
-- Runs on ClickHouse 18.16 and on modern ClickHouse: no TTL, CODECs, skipping indexes, Map,
-- DateTime64 or LowCardinality. Every table is partitioned by day (or month for small tables),
-- so retention is `ALTER TABLE ... DROP PARTITION <yyyymmdd>`.
-- The collector runs this file statement by statement (split on semicolons), as ClickHouse
-- does not accept several statements in one request; each statement is idempotent.
-- Times: `time` columns are DateTime (UTC seconds); `*_ns` columns are nanoseconds since the epoch.

-- samples: one row per (batch, process, thread, stack) with its sample count; the main table.
-- `functions` is the stack's function names ROOT FIRST (`functions[-1]` is the leaf, i.e. the
-- function that was on CPU), so self time is `functions[-1] = 'f'` and total time is
-- `has(functions, 'f')`. `time` is the start of the batch's window (10 s by default).
-- Unsymbolized frames appear as `module+0xoffset`. `stack_id` joins to `stacks` for frame details.
CREATE TABLE IF NOT EXISTS samples
(
    time DateTime,
    time_ns UInt64,
    host String,
    host_id String,
    boot_id String,
    sequence UInt64,
    service String,
    version String,
    pid UInt32,
    tid UInt32,
    comm String,
    thread String,
    container_id String,
    stack_id UInt64,
    functions Array(String),
    count UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (service, time, version, host, stack_id);

-- stacks: stack_id -> the stack's frames and function names, root first. A stack_id is a hash
-- of its frame ids, so the same stack from any host has the same id.
CREATE TABLE IF NOT EXISTS stacks
(
    stack_id UInt64,
    frame_ids Array(UInt64),
    functions Array(String),
    first_seen DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY stack_id;

-- frames: frame_id -> what the symbolizer knew about it. `inlined` = inlined into its caller;
-- `kernel` = kernel frame. file/line are empty/0 without debug info.
CREATE TABLE IF NOT EXISTS frames
(
    frame_id UInt64,
    function String,
    module String,
    build_id String,
    file String,
    line UInt32,
    inlined UInt8,
    kernel UInt8,
    module_offset UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY frame_id;

-- processes: one row per process per batch in which it was seen (so first/last seen are
-- `min(time)` / `max(time)`), with its service, version, container and build-id.
CREATE TABLE IF NOT EXISTS processes
(
    time DateTime,
    host String,
    host_id String,
    boot_id String,
    pid UInt32,
    comm String,
    exe String,
    service String,
    version String,
    container_id String,
    cgroup String,
    build_id String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (service, host, pid, time);

-- energy: joules per host, RAPL domain and batch window. Hosts without a RAPL source write no
-- rows here (see batches.energy_available / energy_unavailable_reason): never zeros.
CREATE TABLE IF NOT EXISTS energy
(
    time DateTime,
    time_ns UInt64,
    window_ns UInt64,
    host String,
    host_id String,
    source String,
    domain String,
    joules Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, domain, time);

-- process_energy: joules attributed to a process by its share of the window's CPU samples.
CREATE TABLE IF NOT EXISTS process_energy
(
    time DateTime,
    time_ns UInt64,
    window_ns UInt64,
    host String,
    host_id String,
    pid UInt32,
    comm String,
    service String,
    version String,
    joules Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (service, time, host, pid);

-- batches: one row per stored batch; (host_id, boot_id, sequence) is its identity, which the
-- collector checks before storing so a retried batch lands once. `samples` = sum of counts.
CREATE TABLE IF NOT EXISTS batches
(
    host_id String,
    boot_id String,
    sequence UInt64,
    host String,
    time DateTime,
    start_time_ns UInt64,
    end_time_ns UInt64,
    received DateTime,
    frequency_hz UInt32,
    samples UInt64,
    sample_rows UInt32,
    processes UInt32,
    stacks UInt32,
    frames UInt32,
    kernel_release String,
    agent_version String,
    energy_available UInt8,
    energy_unavailable_reason String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, boot_id, sequence);

-- losses: per batch, every way samples or stacks were lost or left out on the host
-- (see LossCounters in proto/proto/fleetprof/v1/ingest.proto).
CREATE TABLE IF NOT EXISTS losses
(
    time DateTime,
    host String,
    host_id String,
    boot_id String,
    sequence UInt64,
    events UInt64,
    idle UInt64,
    filtered UInt64,
    recorded UInt64,
    user_stack_unavailable UInt64,
    kernel_stack_unavailable UInt64,
    stack_collisions UInt64,
    stack_other_errors UInt64,
    counts_map_full UInt64,
    unsymbolized_frames UInt64,
    spool_dropped_batches UInt64,
    spool_dropped_samples UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, time);

-- function_minutes: per (service, function, minute, version) rollup of samples, maintained by
-- function_minutes_mv. self_samples = samples with the function as leaf; total_samples = samples
-- whose stack contains the function (counted once per stack even under recursion).
-- SummingMergeTree merges rows eventually: always read it with sum(...) and GROUP BY.
CREATE TABLE IF NOT EXISTS function_minutes
(
    service String,
    function String,
    minute DateTime,
    version String,
    self_samples UInt64,
    total_samples UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (service, function, minute, version);

-- function_minutes_mv: fills function_minutes on every insert into samples.
CREATE MATERIALIZED VIEW IF NOT EXISTS function_minutes_mv TO function_minutes AS
SELECT
    service,
    function,
    toStartOfMinute(time) AS minute,
    version,
    sum(count * (function = functions[-1])) AS self_samples,
    sum(count) AS total_samples
FROM samples
ARRAY JOIN arrayDistinct(functions) AS function
GROUP BY service, function, minute, version;

-- service_minutes: samples per (service, version, host, minute), maintained by service_minutes_mv;
-- the denominator for shares and the source of `query services`. Read with sum(...).
CREATE TABLE IF NOT EXISTS service_minutes
(
    service String,
    minute DateTime,
    version String,
    host String,
    samples UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (service, minute, version, host);

-- service_minutes_mv: fills service_minutes on every insert into samples.
CREATE MATERIALIZED VIEW IF NOT EXISTS service_minutes_mv TO service_minutes AS
SELECT
    service,
    toStartOfMinute(time) AS minute,
    version,
    host,
    sum(count) AS samples
FROM samples
GROUP BY service, minute, version, host;

-- changes: source changes (commits) that may explain a regression, with the files and functions
-- they touched. Filled by `fleetprof-collector changes` (root-cause ranking).
CREATE TABLE IF NOT EXISTS changes
(
    sha String,
    service String,
    author String,
    time DateTime,
    title String,
    files Array(String),
    functions Array(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (service, time, sha);

-- deploys: when a service's version went out, and from which commit.
CREATE TABLE IF NOT EXISTS deploys
(
    service String,
    version String,
    at DateTime,
    commit String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (service, at, version);

-- regressions: what the detector found, one row per (service, id) and state change; the row with
-- the newest `updated` wins (ReplacingMergeTree(updated); read with FINAL or argMax).
-- candidates and report are JSON strings (root-cause candidates, the agent's report).
CREATE TABLE IF NOT EXISTS regressions
(
    id String,
    service String,
    functions Array(String),
    onset DateTime,
    detected DateTime,
    updated DateTime,
    before_share Float64,
    after_share Float64,
    cost_samples Float64,
    cost Float64,
    significance Float64,
    state String,
    candidates String,
    report String
)
ENGINE = ReplacingMergeTree(updated)
PARTITION BY toYYYYMM(onset)
ORDER BY (service, id);
