//! `/api/...`: every view's data as JSON, for scripts (the pages render the same data).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/services?since=24h` | services with CPU, energy, versions, open regressions |
//! | `GET /api/flame?service=S[&version=V][&since=…]` | flame tree and top functions |
//! | `GET /api/compare?service=S&baseline=A&comparison=B` | diff rows and differential tree |
//! | `GET /api/function?service=S&function=F` | history, change points, deploys, stacks, callers, callees, lines |
//! | `GET /api/regressions[?service=S&state=open]` | stored regressions with their fixes |
//! | `GET /api/regressions/{id}` | one regression with candidates and fix |
//! | `GET /api/opportunities` | hot functions matching opportunity skills |
//!
//! Errors are `{"error": "..."}` with 400 (bad parameters), 404 or 500.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::data::{self, Params};
use super::{Ctx, Shared, UiError};

pub(crate) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/services", get(services))
        .route("/flame", get(flame))
        .route("/compare", get(compare))
        .route("/function", get(function))
        .route("/regressions", get(regression_list))
        .route("/regressions/{id}", get(regression))
        .route("/opportunities", get(opportunities))
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "UI API request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

fn json<T: serde::Serialize>(r: Result<T, UiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn services(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    json(data::services(&ctx, &p).await)
}

async fn flame(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    json(data::flame(&ctx, &p).await)
}

async fn compare(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    json(data::compare(&ctx, &p).await)
}

async fn function(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    json(data::function(&ctx, &p).await)
}

async fn regression_list(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    json(data::regression_list(&ctx, &p).await)
}

async fn regression(State(ctx): Shared, Path(id): Path<String>) -> Response {
    json(data::regression(&ctx, &id).await)
}

async fn opportunities(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    json(data::opportunities(&ctx, &p).await)
}
