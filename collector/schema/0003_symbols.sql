-- fleetprof schema, version 3: names resolved by the collector's symbol store.

-- symbolized_frames: what the symbol store resolved for a (build_id, module_offset) the host
-- could not name, from a debug file of quality `quality` (1 dynsym only, 2 .symtab, 3 DWARF).
-- Each address is resolved once per quality; the names are then written back into `frames`,
-- `stacks` and `samples` (ALTER ... UPDATE), so every query sees them. `inlined` lists the
-- inlined calls at the address, outermost first (the stored frame carries the innermost).
CREATE TABLE IF NOT EXISTS symbolized_frames
(
    build_id String,
    module_offset UInt64,
    quality UInt8,
    function String,
    file String,
    line UInt32,
    inlined Array(String),
    resolved DateTime
)
ENGINE = ReplacingMergeTree(quality)
ORDER BY (build_id, module_offset);
