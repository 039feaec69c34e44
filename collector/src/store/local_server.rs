//! A throwaway ClickHouse server for tests, demos and benches.
//!
//! Copies `/etc/clickhouse-server/{config,users}.xml` into a fresh temporary directory, points
//! data and logs there, picks free ports, enables `allow_experimental_low_cardinality_type` (so
//! `LowCardinality` works on 18.16), adds a read-only user [`READONLY_USER`] with a random
//! password (for the agent's SQL tool), and runs `clickhouse-server` in its own session. The
//! server is killed when the [`LocalClickHouse`] is dropped; its directory is removed.
//!
//! ```no_run
//! use fleetprof_collector::store::local_server::LocalClickHouse;
//! let mut server = LocalClickHouse::start()?;
//! println!("ClickHouse at {}", server.url());
//! server.restart()?; // same ports, same data
//! # Ok::<(), fleetprof_collector::store::local_server::LocalServerError>(())
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary this helper runs.
pub const SERVER_BINARY: &str = "/usr/sbin/clickhouse-server";
/// The configuration it starts from.
pub const CONFIG_DIR: &str = "/etc/clickhouse-server";
/// The read-only user added to `users.xml` (readonly = 1: reads only, no setting changes; its
/// profile bounds execution time, memory and result size).
pub const READONLY_USER: &str = "fleetprof_ro";

/// Errors starting or stopping the local server.
#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    /// The server is not installed.
    #[error("{SERVER_BINARY} not found: ClickHouse is not installed; run `cargo xtask setup`")]
    NotInstalled,
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer `/ping` in time or exited.
    #[error("ClickHouse did not start: {reason}; log tail:\n{log}")]
    NotReady {
        /// Why.
        reason: String,
        /// The end of the server's error log.
        log: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LocalServerError {
    let path = path.to_owned();
    move |source| LocalServerError::Io { what, path, source }
}

/// A running throwaway ClickHouse server.
#[derive(Debug)]
pub struct LocalClickHouse {
    dir: tempfile::TempDir,
    config: PathBuf,
    http_port: u16,
    tcp_port: u16,
    readonly_password: String,
    child: Option<Child>,
}

/// `N` distinct free ports.
fn free_ports<const N: usize>() -> Result<[u16; N], LocalServerError> {
    let list = free_port_list(N)?;
    let mut ports = [0; N];
    ports.copy_from_slice(&list);
    Ok(ports)
}

/// `n` distinct free ports (each listener is held until all are picked, so none repeats).
fn free_port_list(n: usize) -> Result<Vec<u16>, LocalServerError> {
    let mut listeners = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(io_err("binding", Path::new("127.0.0.1:0")))?;
        ports.push(
            listener
                .local_addr()
                .map_err(io_err("binding", Path::new("127.0.0.1:0")))?
                .port(),
        );
        listeners.push(listener);
    }
    Ok(ports)
}

/// The ports of one server.
#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    tcp: u16,
    interserver: u16,
}

/// Configuration added to the copied files: `<remote_servers>` entries, and settings of the
/// `default` and read-only profiles.
#[derive(Debug, Default)]
struct Extras {
    remote_servers: String,
    profile_settings: String,
}

fn random_password() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

impl LocalClickHouse {
    /// Writes a configuration into a fresh directory and starts the server; returns when
    /// `GET /ping` answers `Ok.` (about 0.2 s). Fails with [`LocalServerError::NotInstalled`]
    /// ("run `cargo xtask setup`") when the binary is missing.
    pub fn start() -> Result<Self, LocalServerError> {
        Self::start_in(&std::env::temp_dir())
    }

    /// Like [`LocalClickHouse::start`], with the server's directory created inside `parent`
    /// (the demo keeps its data under `target/demo/`).
    pub fn start_in(parent: &Path) -> Result<Self, LocalServerError> {
        let [http, tcp, interserver] = free_ports()?;
        Self::start_with(
            parent,
            Ports {
                http,
                tcp,
                interserver,
            },
            &Extras::default(),
        )
    }

    fn start_with(parent: &Path, ports: Ports, extras: &Extras) -> Result<Self, LocalServerError> {
        if !Path::new(SERVER_BINARY).exists() {
            return Err(LocalServerError::NotInstalled);
        }
        std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        let dir = tempfile::Builder::new()
            .prefix("fleetprof-clickhouse-")
            .tempdir_in(parent)
            .map_err(io_err("creating a directory in", parent))?;
        let root = dir.path().to_owned();
        for sub in ["data", "log"] {
            std::fs::create_dir_all(root.join(sub)).map_err(io_err("creating", &root.join(sub)))?;
        }
        let Ports {
            http: http_port,
            tcp: tcp_port,
            interserver: interserver_port,
        } = ports;
        let src = Path::new(CONFIG_DIR);
        let config = std::fs::read_to_string(src.join("config.xml"))
            .map_err(io_err("reading", &src.join("config.xml")))?;
        let data = format!("{}/", root.join("data").display());
        let log = format!("{}/", root.join("log").display());
        let config = config
            .replace("/var/lib/clickhouse/", &data)
            .replace("/var/log/clickhouse-server/", &log)
            .replace(
                "<http_port>8123</http_port>",
                &format!("<http_port>{http_port}</http_port>"),
            )
            .replace(
                "<tcp_port>9000</tcp_port>",
                &format!("<tcp_port>{tcp_port}</tcp_port>"),
            )
            .replace(
                "<interserver_http_port>9009</interserver_http_port>",
                &format!("<interserver_http_port>{interserver_port}</interserver_http_port>"),
            )
            .replace("<port>9000</port>", &format!("<port>{tcp_port}</port>"))
            .replace("<level>trace</level>", "<level>warning</level>")
            .replace(
                "<remote_servers incl=\"clickhouse_remote_servers\" >",
                &format!(
                    "<remote_servers incl=\"clickhouse_remote_servers\" >{}",
                    extras.remote_servers
                ),
            )
            .replace(
                "</yandex>",
                "    <listen_host>127.0.0.1</listen_host>\n</yandex>",
            );
        let users = std::fs::read_to_string(src.join("users.xml"))
            .map_err(io_err("reading", &src.join("users.xml")))?;
        let readonly_password = random_password();
        let users = users
            .replacen(
                "<default>",
                &format!(
                    "<default>\n            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>{}",
                    extras.profile_settings
                ),
                1,
            )
            .replacen(
                "</profiles>",
                &format!(
                "    <fleetprof_readonly>\n            <readonly>1</readonly>\n            \
                 <max_execution_time>60</max_execution_time>\n            \
                 <max_result_rows>1000000</max_result_rows>\n            \
                 <max_result_bytes>200000000</max_result_bytes>\n            \
                 <result_overflow_mode>throw</result_overflow_mode>\n            \
                 <max_memory_usage>2000000000</max_memory_usage>\n            \
                 <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>{}\n        \
                 </fleetprof_readonly>\n    </profiles>",
                    extras.profile_settings
                ),
                1,
            )
            .replacen(
                "</users>",
                &format!(
                    "    <{READONLY_USER}>\n            <password>{readonly_password}</password>\n            \
                     <networks><ip>::/0</ip></networks>\n            <profile>fleetprof_readonly</profile>\n            \
                     <quota>default</quota>\n        </{READONLY_USER}>\n    </users>"
                ),
                1,
            );
        let config_path = root.join("config.xml");
        std::fs::write(&config_path, config).map_err(io_err("writing", &config_path))?;
        std::fs::write(root.join("users.xml"), users)
            .map_err(io_err("writing", &root.join("users.xml")))?;
        let mut server = Self {
            dir,
            config: config_path,
            http_port,
            tcp_port,
            readonly_password,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), LocalServerError> {
        let stdout = std::fs::File::create(self.dir.path().join("log/stdout.log"))
            .map_err(io_err("creating", &self.dir.path().join("log/stdout.log")))?;
        let stderr = stdout
            .try_clone()
            .map_err(io_err("creating", &self.dir.path().join("log/stdout.log")))?;
        let mut command = Command::new(SERVER_BINARY);
        command
            .arg(format!("--config-file={}", self.config.display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: setsid is async-signal-safe; it detaches the server from our terminal and
        // process group (as `setsid clickhouse-server` would), so a test's Ctrl-C or job control
        // does not reach it half-way; Drop kills it.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(io_err("starting", Path::new(SERVER_BINARY)))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), LocalServerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(LocalServerError::NotReady {
                    reason: format!("server exited with {status}"),
                    log: self.log_tail(),
                });
            }
            if Instant::now() > deadline {
                return Err(LocalServerError::NotReady {
                    reason: format!(
                        "no `Ok.` from /ping on port {} within {timeout:?}",
                        self.http_port
                    ),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `GET /ping` answers `Ok.` now.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.ends_with("Ok.\n") || response.contains("\r\n\r\nOk.")
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["log/clickhouse-server.err.log", "log/stdout.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
                out.push('\n');
            }
        }
        out
    }

    /// The HTTP endpoint, e.g. `http://127.0.0.1:38123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native-protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The directory holding configuration, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// (user, password) of the read-only user.
    pub fn readonly_credentials(&self) -> (&str, &str) {
        (READONLY_USER, &self.readonly_password)
    }

    /// The server's process id while it runs (e.g. to SIGSTOP it: a server that accepts
    /// connections and never answers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Whether the server process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); data stays for [`Self::restart`].
    pub fn stop(&mut self) -> Result<(), LocalServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain syscall on the pid of our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The port must be free before a restart can bind it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the server again on the same ports and data (stops it first if running).
    pub fn restart(&mut self) -> Result<(), LocalServerError> {
        self.stop()?;
        self.spawn()
    }
}

impl LocalClickHouse {
    /// Leaves the server running and its directory in place after this value is gone (the
    /// demo's `--keep`); returns the server's process id and directory.
    pub fn detach(mut self) -> (u32, PathBuf) {
        let pid = self.child.take().map_or(0, |c| c.id());
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::Builder::new()
                .prefix("fleetprof-clickhouse-detached-")
                .tempdir()
                .expect("temp dir"),
        );
        (pid, dir.keep())
    }
}

/// Several throwaway servers on loopback that form a ClickHouse cluster, laid out as
/// `fleetprof-collector migrate --cluster` expects (see [`super::cluster`]): every server's
/// `<remote_servers>` defines `NAME` with one shard per server and `NAME_shared` with one shard
/// listing every server as a replica (`internal_replication` false); the `default` and read-only
/// profiles carry [`super::cluster::REQUIRED_SETTINGS`].
///
/// ```no_run
/// use fleetprof_collector::store::local_server::LocalCluster;
/// let cluster = LocalCluster::start("fleetprof", 2)?;
/// for (address, url) in cluster.node_urls() {
///     println!("{address} at {url}");
/// }
/// # Ok::<(), fleetprof_collector::store::local_server::LocalServerError>(())
/// ```
#[derive(Debug)]
pub struct LocalCluster {
    name: String,
    nodes: Vec<LocalClickHouse>,
}

impl LocalCluster {
    /// Starts `servers` servers forming the cluster `name` (and `name_shared`); returns when
    /// every one answers `/ping`.
    pub fn start(name: &str, servers: usize) -> Result<Self, LocalServerError> {
        let ports: Vec<Ports> = free_port_list(3 * servers)?
            .chunks(3)
            .map(|p| Ports {
                http: p[0],
                tcp: p[1],
                interserver: p[2],
            })
            .collect();
        let replica = |p: &Ports| {
            format!(
                "<replica><host>127.0.0.1</host><port>{}</port></replica>",
                p.tcp
            )
        };
        let shards: String = ports
            .iter()
            .map(|p| format!("<shard>{}</shard>", replica(p)))
            .collect();
        let replicas: String = ports.iter().map(replica).collect();
        let extras = Extras {
            remote_servers: format!(
                "\n        <{name}>{shards}</{name}>\n        <{name}_shared><shard>\
                 <internal_replication>false</internal_replication>{replicas}</shard>\
                 </{name}_shared>"
            ),
            profile_settings: super::cluster::REQUIRED_SETTINGS
                .iter()
                .map(|(setting, value)| format!("\n            <{setting}>{value}</{setting}>"))
                .collect(),
        };
        let nodes = ports
            .into_iter()
            .map(|p| LocalClickHouse::start_with(&std::env::temp_dir(), p, &extras))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_owned(),
            nodes,
        })
    }

    /// The cluster's name in `<remote_servers>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The servers, in shard order.
    pub fn nodes(&self) -> &[LocalClickHouse] {
        &self.nodes
    }

    /// Each server's `host:port` as `system.clusters` lists it, with its HTTP endpoint (the
    /// `--node-url` values of `migrate --cluster`).
    pub fn node_urls(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (format!("127.0.0.1:{}", n.tcp_port()), n.url()))
            .collect()
    }
}

impl Drop for LocalClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
