//! Ingest: the gRPC `Ingest` service hosts push `ProfileBatch`es to.
//!
//! The handler is thin: check the bearer token (an interceptor), [`validate()`] the batch, hand
//! it to the single [`WriterHandle`], and map the outcome to a `Status`:
//!
//! | outcome | status |
//! |---|---|
//! | stored (in ClickHouse) | OK, `samples_stored` = the batch's samples |
//! | already stored | OK, `duplicate: true`, nothing stored |
//! | unknown `protocol_version` | FAILED_PRECONDITION naming the version |
//! | malformed, or past a size/expansion limit | INVALID_ARGUMENT saying what was wrong; nothing stored |
//! | larger than the memory budget could ever take | INVALID_ARGUMENT naming `--memory-budget` |
//! | rejected by ClickHouse on its own | INVALID_ARGUMENT; kept in the dead-letter directory |
//! | missing/wrong token, or a token of another host | UNAUTHENTICATED / PERMISSION_DENIED |
//! | ClickHouse unreachable or hung | UNAVAILABLE "ClickHouse unreachable: …; retry later" |
//! | memory budget used up | RESOURCE_EXHAUSTED "collector busy …; retry later" |
//!
//! Acknowledged means stored: see [`writer`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_collector::{ingest::{IngestConfig, RunningCollector}, store::{Store, StoreConfig}};
//! let store = Store::connect(&StoreConfig::new("http://127.0.0.1:8123")).await?;
//! store.migrate().await?;
//! let collector = RunningCollector::start(store, IngestConfig::default(), "127.0.0.1:0".parse()?).await?;
//! println!("listening on {}", collector.local_addr());
//! collector.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
pub mod inflight;
pub mod validate;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetprof_proto::fleetprof::v1 as pb;
use pb::ingest_server::{Ingest, IngestServer};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

pub use auth::{AuthenticatedHost, BearerAuth, HostTokensError, parse_host_tokens};
pub use validate::{Limits, ValidationError, validate};
pub use writer::{Ack, Submission, WriteError, WriterConfig, WriterHandle, WriterStats};

use crate::store::Store;

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The server failed.
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// PEM certificate chain and private key for TLS.
#[derive(Clone)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles { .. }")
    }
}

/// Settings of the ingest server.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Batch limits (see [`Limits`]).
    pub limits: Limits,
    /// Writer and buffer settings (see [`WriterConfig`]).
    pub writer: WriterConfig,
    /// Bearer token hosts must send (`authorization: Bearer <token>`); default none (no auth).
    pub token: Option<String>,
    /// TLS certificate and key; default none (plaintext h2c).
    pub tls: Option<TlsFiles>,
    /// Per-host tokens (`host_id` → token): a host must send its own token and may push only
    /// batches naming its own `host_id`. Checked after `token`, which (when set) every host may
    /// use. Default: none.
    pub host_tokens: Option<std::sync::Arc<HashMap<String, String>>>,
    /// Pushes handled at once, at most (more wait). Default 64.
    pub max_concurrent_pushes: usize,
    /// Time allowed for one push, from its arrival to its answer. Default 60 s.
    pub request_timeout: Duration,
    /// Memory for pushes being received, decoded and validated at once, each charged
    /// [`inflight::COPIES`] times its size (see [`inflight`]). A batch whose copies do not fit
    /// is refused INVALID_ARGUMENT. Default: enough for one batch of the default
    /// [`Limits::max_bytes`] (64 MiB) at a time, 256 MiB.
    pub max_inflight_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            writer: WriterConfig::default(),
            token: None,
            tls: None,
            host_tokens: None,
            max_concurrent_pushes: 64,
            request_timeout: Duration::from_secs(60),
            max_inflight_bytes: inflight::COPIES * ((64 << 20) + (64 << 10)),
        }
    }
}

/// The `Ingest` service implementation.
#[derive(Debug, Clone)]
pub struct IngestService {
    writer: WriterHandle,
    limits: Limits,
    /// The writer's budget ([`WriterConfig::max_pending_bytes`]): a batch needing more could
    /// never be taken, so it is refused for good rather than as busy.
    max_pending_bytes: usize,
}

impl IngestService {
    /// A service submitting to `writer`, whose budget is `max_pending_bytes`.
    pub fn new(writer: WriterHandle, limits: Limits, max_pending_bytes: usize) -> Self {
        Self {
            writer,
            limits,
            max_pending_bytes,
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(
        &self,
        request: Request<pb::ProfileBatch>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let host = request
            .extensions()
            .get::<auth::AuthenticatedHost>()
            .cloned();
        let wire = request.into_inner();
        if let Some(auth::AuthenticatedHost(host_id)) = host {
            let sent = wire.host.as_ref().map_or("", |h| h.host_id.as_str());
            if sent != host_id {
                return Err(Status::permission_denied(format!(
                    "this token belongs to host {host_id:?}; it may not push batches of host {sent:?}"
                )));
            }
        }
        let batch = validate(&wire, &self.limits, now_ns()).map_err(|e| match e {
            ValidationError::UnknownVersion(_) => Status::failed_precondition(e.to_string()),
            ValidationError::Invalid(_) => Status::invalid_argument(e.to_string()),
        })?;
        let needs = batch.approx_bytes() + writer::decoded_bytes(&wire);
        if needs > self.max_pending_bytes {
            return Err(Status::invalid_argument(format!(
                "the batch needs {needs} bytes once decoded, more than this collector's budget for \
                 batches waiting to be written ({} bytes, half of --memory-budget): send smaller \
                 batches, or raise --memory-budget",
                self.max_pending_bytes
            )));
        }
        let key = batch.key.clone();
        match self.writer.submit(Submission { batch, wire }).await {
            Ok(Ack::Stored { samples }) => Ok(Response::new(pb::PushResponse {
                duplicate: false,
                samples_stored: samples,
            })),
            Ok(Ack::Duplicate) => {
                tracing::debug!(%key, "duplicate batch");
                Ok(Response::new(pb::PushResponse {
                    duplicate: true,
                    samples_stored: 0,
                }))
            }
            Err(e @ WriteError::Busy { .. }) => Err(Status::resource_exhausted(e.to_string())),
            Err(e @ WriteError::Rejected { .. }) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ (WriteError::Unavailable { .. } | WriteError::Stopped)) => {
                Err(Status::unavailable(e.to_string()))
            }
        }
    }
}

/// A collector serving gRPC in a background task (used by `serve`, tests and benches).
#[derive(Debug)]
pub struct RunningCollector {
    local_addr: SocketAddr,
    writer: WriterHandle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), IngestError>>,
    writer_task: tokio::task::JoinHandle<()>,
}

impl RunningCollector {
    /// Binds `addr` (port 0 picks a free port), starts the writer and the server.
    pub async fn start(
        store: Store,
        config: IngestConfig,
        addr: SocketAddr,
    ) -> Result<Self, IngestError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| IngestError::Bind { addr, source })?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (writer, writer_task) = WriterHandle::spawn(store, config.writer.clone());
        let service = IngestServer::new(IngestService::new(
            writer.clone(),
            config.limits.clone(),
            config.writer.max_pending_bytes,
        ))
        .max_decoding_message_size(config.limits.max_bytes.saturating_add(1024));
        let service = InterceptedService::new(
            service,
            BearerAuth::new(config.token.clone()).with_host_tokens(config.host_tokens.clone()),
        );
        // A push that cannot finish in time is answered DEADLINE_EXCEEDED (the host retries);
        // a bounded number are handled at once, whatever hosts send.
        let mut builder = Server::builder()
            .timeout(config.request_timeout)
            .concurrency_limit_per_connection(config.max_concurrent_pushes.max(1))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                config.max_concurrent_pushes.max(1),
            ))
            // Each push holds a few copies of its size until answered: bound them in bytes.
            .layer(inflight::InflightLayer::new(config.max_inflight_bytes));
        if let Some(tls) = &config.tls {
            let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(IngestError::Tls)?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = builder.add_service(service);
        let server = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await
                .map_err(IngestError::Serve)
        });
        tracing::info!(%local_addr, tls = config.tls.is_some(), auth = config.token.is_some() || config.host_tokens.is_some(), "collector listening");
        Ok(Self {
            local_addr,
            writer,
            shutdown: Some(tx),
            server,
            writer_task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The writer's counters (stored, duplicates, unavailable, dead-lettered, busy).
    pub fn stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    /// A shared handle on the writer's counters (for a metrics endpoint).
    pub fn stats_arc(&self) -> std::sync::Arc<WriterStats> {
        self.writer.stats_arc()
    }

    /// Waits until the server stops by itself (an error) — for `serve`, combine with a signal.
    pub async fn wait(&mut self) -> Result<(), IngestError> {
        match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "gRPC server task failed");
                Ok(())
            }
        }
    }

    /// Stops accepting, lets in-flight pushes finish (each stored, or answered UNAVAILABLE), and
    /// waits for the writer to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
        drop(self.writer);
        let _ = self.writer_task.await;
    }
}
