//! RAPL counters read through the perf `power` PMU (`/sys/bus/event_source/devices/power`).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use super::powercap::io_error;
use super::{DomainInfo, EnergyError};

/// From `linux/perf_event.h`; the `libc` crate does not export it.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// An energy event the PMU advertises, as described in its `events/` directory.
#[derive(Debug, PartialEq)]
pub(super) struct PmuEvent {
    /// Event name without the `energy-` prefix: `pkg`, `cores`, `gpu`, `ram`, `psys`.
    pub(super) name: String,
    /// The `perf_event_attr.config` value (`event=0x02` → 2).
    pub(super) config: u64,
    /// Joules per count, from `<event>.scale`.
    pub(super) scale: f64,
}

/// What the `power` PMU's sysfs directory says about it.
#[derive(Debug, PartialEq)]
pub(super) struct PowerPmu {
    /// `perf_event_attr.type` for this PMU.
    pub(super) pmu_type: u32,
    /// One CPU per package (the PMU's `cpumask`), with that package's id.
    pub(super) packages: Vec<(u32, u32)>,
    /// Its energy events.
    pub(super) events: Vec<PmuEvent>,
}

/// One open perf counter.
#[derive(Debug)]
pub(super) struct Counter {
    /// What the counter measures.
    pub(super) info: DomainInfo,
    file: File,
}

/// Reads the PMU description under `sysfs_root` without opening anything. `Ok(None)`: no PMU.
pub(super) fn describe(sysfs_root: &Path) -> Result<Option<PowerPmu>, EnergyError> {
    let dir = sysfs_root.join("bus/event_source/devices/power");
    if !dir.is_dir() {
        return Ok(None);
    }
    let type_path = dir.join("type");
    let type_text = read(&type_path)?;
    let pmu_type = type_text
        .trim()
        .parse()
        .map_err(|_| parse_error(&type_path, &type_text))?;

    // The PMU's cpumask names one CPU per package; without it only CPU 0 can be assumed.
    let cpus = match std::fs::read_to_string(dir.join("cpumask")) {
        Ok(text) => {
            parse_cpu_list(&text).ok_or_else(|| parse_error(&dir.join("cpumask"), &text))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => vec![0],
        Err(e) => return Err(io_error(&dir.join("cpumask"), e)),
    };
    let packages = cpus
        .iter()
        .enumerate()
        .map(|(index, &cpu)| {
            let path = sysfs_root.join(format!(
                "devices/system/cpu/cpu{cpu}/topology/physical_package_id"
            ));
            let id = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            (cpu, id.unwrap_or(index as u32))
        })
        .collect();

    let events_dir = dir.join("events");
    let mut names: Vec<String> = match std::fs::read_dir(&events_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("energy-") && !n.contains('.'))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(&events_dir, e)),
    };
    names.sort();
    let mut events = Vec::new();
    for file_name in names {
        if let Some(event) = describe_event(&events_dir, &file_name)? {
            events.push(event);
        }
    }
    if events.is_empty() {
        return Err(EnergyError::NoCounters { dir });
    }
    Ok(Some(PowerPmu {
        pmu_type,
        packages,
        events,
    }))
}

/// Parses one event; an event in another unit or with terms this reader does not know is skipped.
fn describe_event(events_dir: &Path, file_name: &str) -> Result<Option<PmuEvent>, EnergyError> {
    let path = events_dir.join(file_name);
    let text = read(&path)?;
    let mut config = None;
    for term in text.trim().split(',') {
        match term.split_once('=') {
            Some(("event", value)) => {
                config = Some(parse_number(value).ok_or_else(|| parse_error(&path, &text))?)
            }
            _ => {
                // The power PMU's format is `event` alone (config:0-7); anything else is a PMU
                // this reader was not written for.
                tracing::debug!(
                    event = file_name,
                    term,
                    "unknown perf event term, event skipped"
                );
                return Ok(None);
            }
        }
    }
    let Some(config) = config else {
        return Err(parse_error(&path, &text));
    };
    let unit_path = events_dir.join(format!("{file_name}.unit"));
    let unit = match std::fs::read_to_string(&unit_path) {
        Ok(unit) => unit,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::from("Joules"),
        Err(e) => return Err(io_error(&unit_path, e)),
    };
    if unit.trim() != "Joules" {
        tracing::debug!(
            event = file_name,
            unit = unit.trim(),
            "perf power event not in Joules, skipped"
        );
        return Ok(None);
    }
    let scale_path = events_dir.join(format!("{file_name}.scale"));
    let scale_text = match std::fs::read_to_string(&scale_path) {
        Ok(text) => text,
        // Without a scale the counts cannot be turned into joules.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&scale_path, e)),
    };
    let scale: f64 = scale_text
        .trim()
        .parse()
        .map_err(|_| parse_error(&scale_path, &scale_text))?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(parse_error(&scale_path, &scale_text));
    }
    let name = file_name.trim_start_matches("energy-").to_owned();
    Ok(Some(PmuEvent {
        name,
        config,
        scale,
    }))
}

/// Opens every event on one CPU per package, system-wide.
pub(super) fn open(pmu: &PowerPmu) -> Result<Vec<Counter>, EnergyError> {
    let mut counters = Vec::new();
    for (index, &(cpu, package)) in pmu.packages.iter().enumerate() {
        for event in &pmu.events {
            let name = match event.name.as_str() {
                "pkg" => format!("package-{package}"),
                // psys measures the whole platform; opening it once per package would count it
                // several times over.
                "psys" if index == 0 => String::from("psys"),
                "psys" => continue,
                "cores" => format!("package-{package}/core"),
                // RAPL's PP1 plane: powercap calls it `uncore`, perf calls it `gpu`.
                "gpu" => format!("package-{package}/uncore"),
                "ram" => format!("package-{package}/dram"),
                other => format!("package-{package}/{other}"),
            };
            let file = perf_event_open(pmu.pmu_type, event.config, cpu).map_err(|source| {
                EnergyError::PerfOpen {
                    event: format!("energy-{}", event.name),
                    cpu,
                    source,
                }
            })?;
            // Perf counts are 64-bit (the kernel widens the 32-bit MSR), so plain wrapping
            // subtraction is the right delta.
            counters.push(Counter {
                info: DomainInfo {
                    name,
                    joules_per_unit: event.scale,
                    wrap_at: None,
                },
                file,
            });
        }
    }
    Ok(counters)
}

/// Reads a counter's current count.
pub(super) fn read_counter(counter: &Counter) -> Result<u64, EnergyError> {
    let mut buf = [0u8; 8];
    (&counter.file)
        .read_exact(&mut buf)
        .map_err(|source| EnergyError::PerfRead {
            domain: counter.info.name.clone(),
            source,
        })?;
    Ok(u64::from_ne_bytes(buf))
}

/// The leading fields of `struct perf_event_attr`; the zeroed tail leaves every flag off, so the
/// counter is enabled at open and counts the whole CPU.
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    rest: [u64; 15],
}

fn perf_event_open(pmu_type: u32, config: u64, cpu: u32) -> io::Result<File> {
    let attr = PerfEventAttr {
        kind: pmu_type,
        size: size_of::<PerfEventAttr>() as u32,
        config,
        rest: [0; 15],
    };
    let cpu =
        libc::c_int::try_from(cpu).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `attr` is a valid, fully initialised perf_event_attr of the size it declares, and
    // outlives the call; pid -1 with a CPU and no group is a plain system-wide counter.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Parses a sysfs CPU list such as `0`, `0,28` or `0-3,8`.
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// `0x02` or `2`.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn read(path: &Path) -> Result<String, EnergyError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

fn parse_error(path: &Path, text: &str) -> EnergyError {
    EnergyError::Parse {
        path: path.to_owned(),
        contents: text.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU lists in sysfs syntax parse to the CPUs they name; malformed lists are refused.
    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0,28"), Some(vec![0, 28]));
        assert_eq!(parse_cpu_list("0-2,8"), Some(vec![0, 1, 2, 8]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    /// Event codes parse in hex and decimal.
    #[test]
    fn event_numbers() {
        assert_eq!(parse_number("0x02"), Some(2));
        assert_eq!(parse_number("0x1f"), Some(31));
        assert_eq!(parse_number("5"), Some(5));
        assert_eq!(parse_number("0xzz"), None);
    }
}
