//! Spans of the use cases' database work, for traces. They share the target
//! `coalition::trace`, which only the trace exporter turns on: without it they cost a
//! call-site check.

use sea_orm::DbBackend;

/// A span around one step of database work (`operation`: what it does, e.g.
/// `purchase.write`) on `backend`.
pub(crate) fn db(backend: DbBackend, operation: &'static str) -> tracing::Span {
    let system = match backend {
        DbBackend::Postgres => "postgresql",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    };
    tracing::info_span!(
        target: "coalition::trace",
        "db",
        otel.name = operation,
        otel.kind = "client",
        db.system = system,
        db.operation = operation,
    )
}
