//! Gzipped pprof `profile.proto`, what `go tool pprof`, Grafana and Pyroscope read.
//!
//! Shape of what is written:
//! - sample types `samples/count` and `cpu/nanoseconds` (count × the sampling period), the latter
//!   the default; `period_type` is `cpu/nanoseconds`, `period` one sample's nanoseconds;
//! - one pprof sample per (thread, stack) of the profile, labelled `pid`, `tid` (numbers), `comm`,
//!   `thread_name`, and `service`, `version`, `container_id` when known;
//! - one [`Mapping`] per module, with its build id. Addresses are what the symbolizer reported
//!   (file offsets for user code, kernel addresses), so mappings start at 0;
//! - [`Function`]s deduplicated by (name, file). A frame the symbolizer could not name keeps its
//!   `module+0xoffset` name as a function so every viewer shows something, and its mapping says
//!   `has_functions: false`;
//! - [`Location`]s deduplicated by (module, address, inline chain): a frame and the frames inlined
//!   into it share an address and become one location whose lines run innermost first, as
//!   `profile.proto` asks;
//! - the loss counters as a JSON comment (`go tool pprof -comments`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::UNIX_EPOCH;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use fleetprof_proto::pprof::{
    Function, Label, Line, Location, Mapping, Profile, Sample, ValueType,
};
use prost::Message;

use super::OutputError;
use crate::profile::{Frame, SymbolizedProfile};

/// Builds the (uncompressed) pprof message for `profile`.
///
/// Fails only when a sample refers to a frame or process that is not in the profile.
pub fn to_proto(profile: &SymbolizedProfile) -> Result<Profile, OutputError> {
    super::validate(profile)?;
    let mut builder = Builder::default();
    let period = saturating_i64(profile.period_nanos());

    let samples_count = builder.value_type("samples", "count");
    let cpu_nanos = builder.value_type("cpu", "nanoseconds");
    let mut out = Profile {
        sample_type: vec![samples_count, cpu_nanos],
        period_type: Some(cpu_nanos),
        period,
        default_sample_type: cpu_nanos.r#type,
        time_nanos: profile
            .start
            .duration_since(UNIX_EPOCH)
            .map(|d| saturating_i64(d.as_nanos()))
            .unwrap_or(0),
        duration_nanos: saturating_i64(profile.duration.as_nanos()),
        ..Default::default()
    };

    for sample in &profile.samples {
        let mut location_id = Vec::new();
        let mut rest = sample.stack.as_slice();
        while !rest.is_empty() {
            let len = inline_chain_len(profile, rest);
            let (chain, tail) = rest.split_at(len);
            location_id.push(builder.location(profile, chain));
            rest = tail;
        }

        let process = &profile.processes[sample.process as usize];
        let mut label = vec![
            builder.num_label("pid", process.pid),
            builder.num_label("tid", sample.tid),
            builder.str_label("comm", &process.comm),
            builder.str_label("thread_name", &sample.thread_name),
        ];
        for (key, value) in [
            ("service", &process.service),
            ("version", &process.version),
            ("container_id", &process.container_id),
        ] {
            if !value.is_empty() {
                label.push(builder.str_label(key, value));
            }
        }

        let count = saturating_i64(sample.count);
        out.sample.push(Sample {
            location_id,
            value: vec![count, count.saturating_mul(period)],
            label,
        });
    }

    if let Ok(losses) = serde_json::to_string(&profile.losses) {
        let comment = builder.string(&format!("fleetprof losses: {losses}"));
        out.comment.push(comment);
    }

    out.mapping = builder.mappings.into_iter().map(|(m, _)| m).collect();
    out.location = builder.locations;
    out.function = builder.functions;
    out.string_table = builder.strings;
    Ok(out)
}

/// Writes `profile` to `out` as gzipped `profile.proto`.
pub(super) fn write(profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), OutputError> {
    let bytes = to_proto(profile)?.encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()?;
    Ok(())
}

/// Decodes a pprof profile, gunzipping it first when it starts with the gzip magic (pprof files
/// are usually, but not always, compressed).
pub fn decode(bytes: &[u8]) -> Result<Profile, OutputError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut raw)?;
        Ok(Profile::decode(raw.as_slice())?)
    } else {
        Ok(Profile::decode(bytes)?)
    }
}

/// How many frames at the start of `stack` (leaf first) form one inline chain: frames marked
/// inlined, each followed by a frame at the same (module, address), ending with the frame they
/// were inlined into.
fn inline_chain_len(profile: &SymbolizedProfile, stack: &[u32]) -> usize {
    let frame = |i: usize| &profile.frames[stack[i] as usize];
    let mut len = 1;
    while len < stack.len() {
        let (inner, outer) = (frame(len - 1), frame(len));
        if inner.inlined && inner.module == outer.module && inner.address == outer.address {
            len += 1;
        } else {
            break;
        }
    }
    len
}

/// What a mapping's locations turned out to have, to set its `has_*` flags truthfully.
#[derive(Clone, Copy)]
struct MappingFacts {
    all_functions: bool,
    all_filenames: bool,
    all_line_numbers: bool,
    any_inline: bool,
}

/// Interns strings, functions, locations and mappings as the samples are walked; ids are
/// 1-based positions, as pprof wants (0 means "none").
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<Vec<u32>, u64>,
    mappings: Vec<(Mapping, MappingFacts)>,
    mapping_ids: HashMap<String, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if self.strings.is_empty() {
            // profile.proto requires string_table[0] to be "".
            self.strings.push(String::new());
            self.string_ids.insert(String::new(), 0);
        }
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn value_type(&mut self, r#type: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(r#type),
            unit: self.string(unit),
        }
    }

    fn num_label(&mut self, key: &str, num: u32) -> Label {
        Label {
            key: self.string(key),
            num: i64::from(num),
            ..Default::default()
        }
    }

    fn str_label(&mut self, key: &str, value: &str) -> Label {
        Label {
            key: self.string(key),
            str: self.string(value),
            ..Default::default()
        }
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let key = (frame.function.clone(), frame.file.clone());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name = self.string(&frame.function);
        let filename = frame.file.as_deref().map_or(0, |f| self.string(f));
        self.functions.push(Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    fn mapping(&mut self, frame: &Frame) -> u64 {
        let id = match self.mapping_ids.get(&frame.module) {
            Some(&id) => id,
            None => {
                let id = self.mappings.len() as u64 + 1;
                let filename = self.string(&frame.module);
                let mapping = Mapping {
                    id,
                    filename,
                    ..Default::default()
                };
                let facts = MappingFacts {
                    all_functions: true,
                    all_filenames: true,
                    all_line_numbers: true,
                    any_inline: false,
                };
                self.mappings.push((mapping, facts));
                self.mapping_ids.insert(frame.module.clone(), id);
                id
            }
        };
        // The first frame of a module that knows the build id names it for the whole mapping.
        if self.mappings[id as usize - 1].0.build_id == 0
            && let Some(build_id) = frame.build_id.as_deref().filter(|b| !b.is_empty())
        {
            let build_id = self.string(build_id);
            self.mappings[id as usize - 1].0.build_id = build_id;
        }
        id
    }

    /// The location of one inline chain (frame ids, innermost first, all at one address).
    fn location(&mut self, profile: &SymbolizedProfile, chain: &[u32]) -> u64 {
        if let Some(&id) = self.location_ids.get(chain) {
            return id;
        }
        let outer = &profile.frames[*chain
            .last()
            .expect("an inline chain has at least one frame")
            as usize];
        let mapping_id = self.mapping(outer);
        let mut line = Vec::with_capacity(chain.len());
        let mut facts = self.mappings[mapping_id as usize - 1].1;
        facts.any_inline |= chain.len() > 1;
        for &frame_id in chain {
            let frame = &profile.frames[frame_id as usize];
            facts.all_functions &= frame.symbolized;
            facts.all_filenames &= frame.file.is_some();
            facts.all_line_numbers &= frame.line.is_some();
            line.push(Line {
                function_id: self.function(frame),
                line: frame.line.map_or(0, i64::from),
                column: 0,
            });
        }
        let (mapping, stored) = &mut self.mappings[mapping_id as usize - 1];
        *stored = facts;
        mapping.has_functions = facts.all_functions;
        mapping.has_filenames = facts.all_filenames;
        mapping.has_line_numbers = facts.all_line_numbers;
        mapping.has_inline_frames = facts.any_inline;

        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address: outer.address,
            line,
            is_folded: false,
        });
        self.location_ids.insert(chain.to_vec(), id);
        id
    }
}

fn saturating_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixture::{self, LIBC_BUILD_ID, WORKLOAD_BUILD_ID};

    fn written() -> Profile {
        let mut bytes = Vec::new();
        write(&fixture::profile(), &mut bytes).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "not gzipped");
        decode(&bytes).unwrap()
    }

    fn s(p: &Profile, id: i64) -> &str {
        &p.string_table[id as usize]
    }

    fn function_names(p: &Profile, location_id: u64) -> Vec<&str> {
        let location = &p.location[location_id as usize - 1];
        assert_eq!(location.id, location_id);
        location
            .line
            .iter()
            .map(|l| {
                let function = &p.function[l.function_id as usize - 1];
                s(p, function.name)
            })
            .collect()
    }

    fn label<'a>(p: &'a Profile, sample: &'a Sample, key: &str) -> Option<&'a Label> {
        sample.label.iter().find(|l| s(p, l.key) == key)
    }

    /// The gzipped output decodes to the header we promise: "" first, two sample types, period,
    /// time and duration.
    #[test]
    fn header_round_trips() {
        let p = written();
        assert_eq!(p.string_table[0], "");
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(types, vec![("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = p.period_type.unwrap();
        assert_eq!(
            (s(&p, period_type.r#type), s(&p, period_type.unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 1_000_000_000 / 19);
        assert_eq!(p.time_nanos, 1_700_000_000 * 1_000_000_000);
        assert_eq!(p.duration_nanos, 5_000_000_000);
        assert!(
            p.comment
                .iter()
                .any(|&c| s(&p, c).contains("\"stack_collisions\":1"))
        );
    }

    /// Stacks come back leaf first with the same function names, the inlined pair as one
    /// location with two lines innermost first, and values count and count × period.
    #[test]
    fn samples_round_trip() {
        let p = written();
        assert_eq!(p.sample.len(), 5);
        let first = &p.sample[0];
        assert_eq!(first.value, vec![30, 30 * (1_000_000_000 / 19)]);
        assert_eq!(
            first.location_id.len(),
            3,
            "compute+step must share one location"
        );
        assert_eq!(
            function_names(&p, first.location_id[0]),
            vec!["compute", "step"]
        );
        assert_eq!(function_names(&p, first.location_id[1]), vec!["hot_loop"]);
        assert_eq!(function_names(&p, first.location_id[2]), vec!["main"]);
        let inlined = &p.location[first.location_id[0] as usize - 1];
        assert_eq!(inlined.address, 0x1200);

        // The other thread's identical stack reuses the same locations.
        assert_eq!(p.sample[1].location_id, first.location_id);
        assert_eq!(p.sample[1].value[0], 12);

        let syscall: Vec<Vec<&str>> = p.sample[2]
            .location_id
            .iter()
            .map(|&l| function_names(&p, l))
            .collect();
        assert_eq!(
            syscall,
            vec![
                vec!["do_syscall_64"],
                vec!["entry_SYSCALL_64"],
                vec!["write"],
                vec!["hot_loop"],
                vec!["main"]
            ]
        );
        assert_eq!(
            function_names(&p, p.sample[3].location_id[0]),
            vec!["/usr/lib/libc.so.6+0x2abc"]
        );

        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 58);
        // Functions are deduplicated: nine distinct (name, file) pairs in the fixture.
        assert_eq!(p.function.len(), 9);
    }

    /// Labels carry the process and thread identity, and leave out what is unknown.
    #[test]
    fn labels_identify_the_thread() {
        let p = written();
        let worker = &p.sample[1];
        assert_eq!(label(&p, worker, "pid").unwrap().num, 100);
        assert_eq!(label(&p, worker, "tid").unwrap().num, 101);
        assert_eq!(s(&p, label(&p, worker, "comm").unwrap().str), "myworkload");
        assert_eq!(
            s(&p, label(&p, worker, "thread_name").unwrap().str),
            "worker"
        );
        assert_eq!(
            s(&p, label(&p, worker, "service").unwrap().str),
            "workload-svc"
        );
        assert_eq!(s(&p, label(&p, worker, "version").unwrap().str), "1.2.3");
        let other = &p.sample[4];
        assert_eq!(label(&p, other, "pid").unwrap().num, 200);
        assert!(label(&p, other, "service").is_none());
        assert!(label(&p, other, "version").is_none());
    }

    /// One mapping per module, with its build id and flags that match what was symbolized.
    #[test]
    fn mappings_are_per_module_and_truthful() {
        let p = written();
        let by_name = |name: &str| {
            p.mapping
                .iter()
                .find(|m| s(&p, m.filename) == name)
                .unwrap()
        };
        assert_eq!(p.mapping.len(), 4);
        let workload = by_name("/usr/bin/myworkload");
        assert_eq!(s(&p, workload.build_id), WORKLOAD_BUILD_ID);
        assert!(workload.has_functions && workload.has_filenames && workload.has_line_numbers);
        assert!(workload.has_inline_frames);
        let libc = by_name("/usr/lib/libc.so.6");
        assert_eq!(s(&p, libc.build_id), LIBC_BUILD_ID);
        assert!(!libc.has_functions, "libc has an unsymbolized frame");
        assert!(!libc.has_inline_frames);
        let kernel = by_name("[kernel]");
        assert_eq!(kernel.build_id, 0);
        assert!(kernel.has_functions && !kernel.has_filenames && !kernel.has_line_numbers);
        for location in &p.location {
            assert_eq!(
                p.mapping[location.mapping_id as usize - 1].id,
                location.mapping_id
            );
        }
    }

    /// `decode` also reads an uncompressed profile, and rejects garbage.
    #[test]
    fn decode_accepts_plain_and_rejects_garbage() {
        let plain = to_proto(&fixture::profile()).unwrap().encode_to_vec();
        assert_eq!(decode(&plain).unwrap().sample.len(), 5);
        assert!(decode(&[0x1f, 0x8b, 0, 1, 2]).is_err());
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
