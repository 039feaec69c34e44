//! RAPL zones read from powercap sysfs (`/sys/class/powercap/intel-rapl:N[:M]`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{DomainInfo, EnergyError};

/// Control types whose zones are RAPL energy counters. `intel-rapl-mmio` is left out on purpose:
/// it is a second view of the same package counter and would count the package twice.
const PREFIXES: [&str; 2] = ["intel-rapl", "amd-rapl"];

/// Microjoules to joules.
const JOULES_PER_UJ: f64 = 1e-6;

/// One usable zone: where its counter lives and what it measures.
#[derive(Debug)]
pub(super) struct Zone {
    /// What the counter measures, and how it wraps.
    pub(super) info: DomainInfo,
    /// The zone's `energy_uj` file.
    pub(super) energy_uj: PathBuf,
}

/// Finds the RAPL zones under `powercap_dir` (normally `/sys/class/powercap`).
///
/// `Ok(None)` means there are no RAPL zones at all; zones lacking a counter are skipped, and if
/// every zone lacks one that is [`EnergyError::NoCounters`].
pub(super) fn detect(powercap_dir: &Path) -> Result<Option<Vec<Zone>>, EnergyError> {
    let entries = match std::fs::read_dir(powercap_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(powercap_dir, e)),
    };
    // Sorted by (control type, zone ids) so a package is seen before its subzones and domain
    // order is stable from one run to the next.
    let mut found: BTreeMap<(&'static str, Vec<u32>), PathBuf> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(powercap_dir, e))?;
        let file_name = entry.file_name();
        if let Some(key) = file_name.to_str().and_then(parse_zone_dir) {
            found.insert(key, entry.path());
        }
    }
    if found.is_empty() {
        return Ok(None);
    }

    let mut names: BTreeMap<(&'static str, u32), String> = BTreeMap::new();
    let mut zones = Vec::new();
    for ((prefix, ids), dir) in &found {
        let Some(name) = read_optional(&dir.join("name"))? else {
            tracing::debug!(zone = %dir.display(), "RAPL zone without a name, skipped");
            continue;
        };
        let name = name.trim().to_owned();
        let domain = match ids.as_slice() {
            [package] => {
                names.insert((prefix, *package), name.clone());
                name
            }
            [package, _] => match names.get(&(prefix, *package)) {
                Some(parent) => format!("{parent}/{name}"),
                None => format!("{prefix}:{package}/{name}"),
            },
            _ => unreachable!("parse_zone_dir yields one or two ids"),
        };
        let energy_uj = dir.join("energy_uj");
        // Read once now so that a root-only counter fails detection, not the first window.
        if read_optional(&energy_uj)?.is_none() {
            tracing::debug!(zone = %dir.display(), "RAPL zone without energy_uj, skipped");
            continue;
        }
        let max_path = dir.join("max_energy_range_uj");
        let Some(max) = read_optional(&max_path)? else {
            // Without the range a wrap would read as a huge jump; better no domain than a wrong one.
            tracing::debug!(zone = %dir.display(), "RAPL zone without max_energy_range_uj, skipped");
            continue;
        };
        let max = parse_u64(&max_path, &max)?;
        zones.push(Zone {
            info: DomainInfo {
                name: domain,
                joules_per_unit: JOULES_PER_UJ,
                wrap_at: Some(max),
            },
            energy_uj,
        });
    }
    if zones.is_empty() {
        return Err(EnergyError::NoCounters {
            dir: powercap_dir.to_owned(),
        });
    }
    Ok(Some(zones))
}

/// Reads a zone's counter, in microjoules; `None` when the zone has gone (its `energy_uj` no
/// longer exists, as when the RAPL driver is unloaded or the zone is removed).
pub(super) fn read_if_present(zone: &Zone) -> Result<Option<u64>, EnergyError> {
    match read_optional(&zone.energy_uj)? {
        Some(text) => parse_u64(&zone.energy_uj, &text).map(Some),
        None => {
            tracing::debug!(zone = %zone.energy_uj.display(), "RAPL counter gone");
            Ok(None)
        }
    }
}

/// `intel-rapl:0` → `("intel-rapl", [0])`, `intel-rapl:0:2` → `("intel-rapl", [0, 2])`.
fn parse_zone_dir(name: &str) -> Option<(&'static str, Vec<u32>)> {
    let (prefix, rest) = name.split_once(':')?;
    let prefix = PREFIXES.into_iter().find(|p| *p == prefix)?;
    let ids: Vec<u32> = rest
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (1..=2).contains(&ids.len()).then_some((prefix, ids))
}

/// Reads a sysfs file; a file that is not there is `None`.
fn read_optional(path: &Path) -> Result<Option<String>, EnergyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, EnergyError> {
    text.trim().parse().map_err(|_| EnergyError::Parse {
        path: path.to_owned(),
        contents: text.trim().to_owned(),
    })
}

/// Permission errors get their own variant: since CVE-2020-8694 (PLATYPUS) `energy_uj` is
/// readable by root only, and the fix is the operator's to make.
pub(super) fn io_error(path: &Path, source: io::Error) -> EnergyError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        EnergyError::PermissionDenied {
            path: path.to_owned(),
        }
    } else {
        EnergyError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zone directory names parse into control type and ids; other powercap entries do not.
    #[test]
    fn zone_dir_names() {
        assert_eq!(
            parse_zone_dir("intel-rapl:0"),
            Some(("intel-rapl", vec![0]))
        );
        assert_eq!(
            parse_zone_dir("intel-rapl:1:2"),
            Some(("intel-rapl", vec![1, 2]))
        );
        assert_eq!(parse_zone_dir("amd-rapl:3"), Some(("amd-rapl", vec![3])));
        assert_eq!(parse_zone_dir("intel-rapl"), None);
        assert_eq!(parse_zone_dir("intel-rapl-mmio:0"), None);
        assert_eq!(parse_zone_dir("intel-rapl:0:1:2"), None);
        assert_eq!(parse_zone_dir("intel-rapl:x"), None);
    }
}
