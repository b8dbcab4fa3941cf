//! Service endpoints: health, metrics, and the answer for unknown paths.

use crate::problem::ApiError;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coalition_app::{App, AppError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub async fn not_found() -> ApiError {
    ApiError::App(AppError::NotFound("resource"))
}

/// A known path with a method it does not have: a problem like every other refusal
/// (axum adds the `Allow` header).
pub async fn method_not_allowed() -> axum::response::Response {
    crate::problem::problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "this path does not take this method; see the Allow header".into(),
        vec![],
    )
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "service", responses((status = 200, description = "alive")))]
pub async fn health_live() -> &'static str {
    "ok"
}

/// The database (and Redis, when configured) answer. A Redis outage is `degraded`, not
/// down: balances are then served from the database.
#[utoipa::path(get, path = "/health/ready", tag = "service", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health_ready(State(app): State<App>) -> Response {
    let database_ok = app.db.ping().await.is_ok();
    let cache = match app.cache.healthy().await {
        None => "not_configured",
        Some(true) => "ok",
        Some(false) => "degraded",
    };
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if !database_ok {
            "unavailable"
        } else if cache == "degraded" {
            "degraded"
        } else {
            "ok"
        }
        .into(),
        database: if database_ok { "ok" } else { "unavailable" }.into(),
        cache: cache.into(),
    };
    (status, Json(body)).into_response()
}

/// This process's counters in the Prometheus text format: HTTP requests, the database
/// pool, jobs, purchases, refunds and points, and the balance cache.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(app): State<App>) -> Response {
    let in_use = app.cache.healthy().await.unwrap_or(true);
    let mut text = crate::metrics::render_process(coalition_app::metrics::pool_usage(&app.db));
    text += &crate::metrics::render(app.cache.backend(), app.cache.stats(), in_use);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
    /// `ok`, `degraded`, or `not_configured`.
    pub cache: String,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(health_live))
        .routes(routes!(health_ready))
        .routes(routes!(metrics))
}
