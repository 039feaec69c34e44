//! The web UI: flame graphs, diffs, functions, regressions, fixes and opportunities in a browser.
//!
//! ```text
//! ClickHouse ──query / regressions / changes readers──> ui::data (views as plain data)
//!                                                        ├─> /api/...  JSON for scripts
//!                                                        └─> pages     server-rendered HTML + SVG
//! agent outbox (proposal.json, PR.md, fix.patch) ──────> fixes on a regression's page
//! skills/ (SKILL.md front matter) ─────────────────────> opportunities
//! ```
//!
//! Served by `fleetprof-collector serve --ui-listen ADDR` or `fleetprof-collector ui --listen
//! ADDR`. Every page is rendered on the server from the same data its `/api/` twin returns; flame
//! graphs are drawn in the browser from the tree embedded in the page (a few hundred lines of
//! vanilla JavaScript, embedded in the binary like the stylesheet). Every view's state (service,
//! window or version, zoomed frame, search, icicle) is in its URL, so a link opens the same view.
//! With a token configured, every request must carry it as `Authorization: Bearer <token>` or
//! the `fleetprof_token` cookie that `/login` sets.
//!
//! ```no_run
//! # async fn demo(store: fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::ui::UiError> {
//! use fleetprof_collector::ui::{RunningUi, UiConfig};
//! let mut ui = RunningUi::start(store, UiConfig::default(), "127.0.0.1:8080".parse().unwrap()).await?;
//! println!("open http://{}/", ui.local_addr());
//! ui.wait().await?;
//! # Ok(()) }
//! ```

mod api;
mod data;
mod fixes;
mod flame;
mod html;
mod pages;
mod skills;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::changes::ChangesError;
use crate::query::QueryError;
use crate::regressions::RegressionsError;
use crate::store::Store;

pub use data::{
    ChangePoint, CompareView, FlameView, FunctionView, OpportunitiesView, Opportunity,
    RegressionRow, RegressionView, ServiceSummary, ServicesView,
};
pub use fixes::{Fix, FixCheck};
pub use flame::FlameNode;

/// Errors serving the UI or answering one of its requests.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The listening address could not be bound.
    #[error("listening for the web UI on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("serving the web UI: {0}")]
    Serve(#[source] std::io::Error),
    /// A query failed (or its arguments were bad).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Reading regressions failed.
    #[error(transparent)]
    Regressions(#[from] RegressionsError),
    /// Reading changes or deploys failed.
    #[error(transparent)]
    Changes(#[from] ChangesError),
    /// A request's parameters were missing or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Query(QueryError::BadArgument(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Regressions(RegressionsError::BadArgument(_)) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// How the UI is served.
#[derive(Debug, Clone, Default)]
pub struct UiConfig {
    /// Token every request must carry (the ingest token). Default: none, no authentication.
    pub token: Option<String>,
    /// Agent outbox directories whose proposals (`<outbox>/<branch>/proposal.json`) are shown as
    /// the fixes of regressions and opportunities. Default: none.
    pub outboxes: Vec<PathBuf>,
    /// The skills directory (`<skills>/<name>/SKILL.md`) opportunities are matched against.
    /// Default: none (the opportunities page says how to set it).
    pub skills: Option<PathBuf>,
}

/// What every handler shares.
#[derive(Debug)]
struct Ctx {
    store: Store,
    config: UiConfig,
}

type Shared = State<Arc<Ctx>>;

/// The UI's routes over `store`: pages at `/`, JSON under `/api/`, assets under `/assets/`.
pub fn router(store: Store, config: UiConfig) -> Router {
    let ctx = Arc::new(Ctx { store, config });
    Router::new()
        .merge(pages::routes())
        .nest("/api", api::routes())
        .layer(middleware::from_fn_with_state(ctx.clone(), authenticate))
        .merge(pages::public_routes())
        .with_state(ctx)
}

const TOKEN_COOKIE: &str = "fleetprof_token";

/// Lets a request through when no token is configured or it carries the token (bearer header
/// or cookie); pages answer with the login form, the API with 401.
async fn authenticate(State(ctx): Shared, request: Request, next: Next) -> Response {
    let Some(expected) = &ctx.config.token else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
        .map(str::as_bytes)
        .next();
    let ok = [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|t| bool::from(t.ct_eq(expected.as_bytes())));
    if ok {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or invalid `Authorization: Bearer <token>`",
        )
            .into_response()
    } else {
        pages::login_page(request.uri().to_string())
    }
}

/// The UI, serving on a socket until shut down.
#[derive(Debug)]
pub struct RunningUi {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningUi {
    /// Binds `addr` (port 0 picks a free port) and serves the UI over `store`.
    pub async fn start(store: Store, config: UiConfig, addr: SocketAddr) -> Result<Self, UiError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| UiError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| UiError::Bind { addr, source })?;
        let app = router(store, config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "web UI listening");
        Ok(Self {
            addr,
            task,
            stop: Some(stop),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server stops (it only stops on [`RunningUi::shutdown`] or an error).
    pub async fn wait(&mut self) -> Result<(), UiError> {
        match (&mut self.task).await {
            Ok(r) => r.map_err(UiError::Serve),
            Err(e) => Err(UiError::Serve(std::io::Error::other(e))),
        }
    }

    /// Stops accepting requests and waits for those under way.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.wait().await;
    }
}
