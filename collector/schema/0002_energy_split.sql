-- fleetprof schema, version 2: energy split as Kepler does it, with the method and its inputs.
--
-- Processes are charged only the active part of a window's energy (measured × the CPUs' busy
-- ratio from /proc/stat), each by its CPU time; the idle rest is the host's. Hosts without RAPL
-- write no rows to these tables (never zeros).

-- host_energy: per host, window and RAPL basis domain (psys, or each package and DRAM apart):
-- measured joules, the active part charged to processes and the idle part charged to none,
-- with the split's inputs (busy and all CPU-seconds over the window) and method.
-- `interval_seconds` is the time between the two counter readings (watts = joules ÷ it).
CREATE TABLE IF NOT EXISTS host_energy
(
    time DateTime,
    time_ns UInt64,
    window_ns UInt64,
    host String,
    host_id String,
    source String,
    domain String,
    measured_joules Float64,
    active_joules Float64,
    idle_joules Float64,
    busy_ratio Float64,
    busy_cpu_seconds Float64,
    total_cpu_seconds Float64,
    interval_seconds Float64,
    method String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (host, time, domain);

-- process_energy gains the split's per-process input (CPU-seconds in the window: samples ÷
-- frequency), the DRAM part of its joules, and the method (empty for rows of older profilers).
ALTER TABLE process_energy
    ADD COLUMN cpu_seconds Float64 DEFAULT 0,
    ADD COLUMN dram_joules Float64 DEFAULT 0,
    ADD COLUMN method String DEFAULT '';
