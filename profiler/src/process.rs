//! Who a sampled process is: executable, cgroup and container, and the service and version its
//! samples are filed under.
//!
//! Service identity, first match wins: the configured [`ServiceRule`]s (by cgroup path or
//! executable path), then `FLEETPROF_SERVICE` / `FLEETPROF_VERSION` in the process's environment,
//! then the executable's file name and its GNU build-id (so a rebuilt binary is a new version).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use regex::Regex;
use serde::Deserialize;

use crate::profile::Process;

/// Environment variable a process sets to name its service.
pub const SERVICE_ENV: &str = "FLEETPROF_SERVICE";
/// Environment variable a process sets to name its version.
pub const VERSION_ENV: &str = "FLEETPROF_VERSION";

/// A configured rule that names the service of the processes it matches.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    /// Regex over the process's cgroup path (for example `^/system.slice/nginx\.service$`).
    #[serde(default, with = "opt_regex")]
    pub cgroup: Option<Regex>,
    /// Regex over the executable's path.
    #[serde(default, with = "opt_regex")]
    pub exe: Option<Regex>,
    /// The service name to give matching processes.
    pub service: String,
    /// The version to give them; default: from the environment or the build-id.
    #[serde(default)]
    pub version: Option<String>,
}

impl ServiceRule {
    fn matches(&self, cgroup: &str, exe: &str) -> bool {
        let cgroup_ok = self.cgroup.as_ref().is_none_or(|re| re.is_match(cgroup));
        let exe_ok = self.exe.as_ref().is_none_or(|re| re.is_match(exe));
        (self.cgroup.is_some() || self.exe.is_some()) && cgroup_ok && exe_ok
    }
}

mod opt_regex {
    use regex::Regex;
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| Regex::new(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Reads process metadata from `/proc`, caching it per (pid, start time) so a reused pid is not
/// mistaken for the process that had it before.
#[derive(Debug, Default)]
pub struct ProcessInspector {
    rules: Vec<ServiceRule>,
    proc_root: PathBuf,
    cache: HashMap<(u32, u64), Process>,
}

impl ProcessInspector {
    /// An inspector reading `/proc` with these service rules.
    pub fn new(rules: Vec<ServiceRule>) -> Self {
        Self::with_proc_root(rules, "/proc")
    }

    /// An inspector reading another procfs-like tree (for tests).
    pub fn with_proc_root(rules: Vec<ServiceRule>, proc_root: impl Into<PathBuf>) -> Self {
        Self {
            rules,
            proc_root: proc_root.into(),
            cache: HashMap::new(),
        }
    }

    /// What is known about `pid`; a process that exited keeps what can be kept (its pid and the
    /// thread name the kernel gave), with the service named after the comm.
    pub fn inspect(&mut self, pid: u32, fallback_comm: &str) -> Process {
        let dir = self.proc_root.join(pid.to_string());
        let start_time = read_start_time(&dir).unwrap_or(0);
        if let Some(info) = self.cache.get(&(pid, start_time)) {
            return info.clone();
        }
        let info = self.read(pid, &dir, fallback_comm);
        if start_time != 0 {
            // Bounded: entries of exited processes are dropped in `forget_exited`.
            self.cache.insert((pid, start_time), info.clone());
        }
        info
    }

    /// Forgets what was read of `pid`: it called exec, so its executable, environment and
    /// build-id changed while its pid and start time did not.
    pub fn forget(&mut self, pid: u32) {
        self.cache.retain(|(cached, _), _| *cached != pid);
    }

    /// Drops cached entries of processes that no longer exist, bounding the cache.
    pub fn forget_exited(&mut self) {
        let root = self.proc_root.clone();
        self.cache.retain(|(pid, start), _| {
            read_start_time(&root.join(pid.to_string())).is_some_and(|s| s == *start)
        });
    }

    fn read(&self, pid: u32, dir: &Path, fallback_comm: &str) -> Process {
        let comm = std::fs::read_to_string(dir.join("comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| fallback_comm.to_string());
        let exe = std::fs::read_link(dir.join("exe"))
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        let cgroup = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|s| parse_cgroup_v2(&s))
            .unwrap_or_default();
        let container_id = container_id(&cgroup).unwrap_or_default();
        let env = std::fs::read(dir.join("environ"))
            .map(|b| parse_environ(&b))
            .unwrap_or_default();
        // Read through /proc/<pid>/exe so binaries inside containers (other mount namespaces)
        // and deleted binaries still give their build-id.
        let build_id = blazesym::helper::read_elf_build_id(&dir.join("exe"))
            .ok()
            .flatten()
            .map(|id| hex(&id))
            .unwrap_or_default();

        let rule = self.rules.iter().find(|r| r.matches(&cgroup, &exe));
        let exe_name = Path::new(&exe)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| comm.clone());
        let service = rule
            .map(|r| r.service.clone())
            .or_else(|| env.get(SERVICE_ENV).cloned())
            .unwrap_or(exe_name);
        let version = rule
            .and_then(|r| r.version.clone())
            .or_else(|| env.get(VERSION_ENV).cloned())
            .unwrap_or_else(|| build_id.clone());
        Process {
            pid,
            comm,
            exe,
            service,
            version,
            container_id,
            cgroup,
            build_id,
        }
    }
}

fn read_start_time(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // Field 22 (starttime); the comm in field 2 may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The cgroup v2 path (the `0::` line) of a `/proc/<pid>/cgroup` file.
pub fn parse_cgroup_v2(contents: &str) -> Option<String> {
    contents
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The container id a cgroup path names (Docker, containerd, CRI-O, Podman), if any.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.split('/').rev().find_map(|segment| {
        let segment = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = segment.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

fn parse_environ(bytes: &[u8]) -> HashMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            (k == SERVICE_ENV || k == VERSION_ENV).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker, containerd and CRI-O cgroup paths all yield the 64-hex container id.
    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!("/kubepods/burstable/pod1/cri-containerd-{id}.scope"),
            format!("/docker/{id}"),
            format!("/machine.slice/libpod-{id}.scope/container"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(id.as_str()), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    /// Rules beat the environment, which beats the executable's name; versions follow suit.
    #[test]
    fn service_identity_precedence() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_dir = tmp.path().join("42");
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("comm"), "worker\n").unwrap();
        std::fs::write(proc_dir.join("cgroup"), "0::/system.slice/api.service\n").unwrap();
        std::fs::write(
            proc_dir.join("environ"),
            b"A=1\0FLEETPROF_SERVICE=checkout\0FLEETPROF_VERSION=v7\0",
        )
        .unwrap();

        let mut plain = ProcessInspector::with_proc_root(vec![], tmp.path());
        let info = plain.inspect(42, "x");
        assert_eq!(
            (info.service.as_str(), info.version.as_str()),
            ("checkout", "v7")
        );
        assert_eq!(info.cgroup, "/system.slice/api.service");

        let rule: ServiceRule =
            toml::from_str("cgroup = '^/system.slice/api'\nservice = 'api'").unwrap();
        let mut ruled = ProcessInspector::with_proc_root(vec![rule], tmp.path());
        let info = ruled.inspect(42, "x");
        assert_eq!(
            (info.service.as_str(), info.version.as_str()),
            ("api", "v7")
        );

        std::fs::write(proc_dir.join("environ"), b"").unwrap();
        let mut bare = ProcessInspector::with_proc_root(vec![], tmp.path());
        assert_eq!(bare.inspect(42, "x").service, "worker");
    }

    /// A vanished process keeps the kernel's thread name as its service.
    #[test]
    fn exited_process_falls_back_to_comm() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inspector = ProcessInspector::with_proc_root(vec![], tmp.path());
        let info = inspector.inspect(7, "gone");
        assert_eq!(
            (info.pid, info.comm.as_str(), info.service.as_str()),
            (7, "gone", "gone")
        );
    }
}
