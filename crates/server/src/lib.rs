//! Assembly of the `coalition` binary: configuration, telemetry, and the server.

pub mod config;

use coalition_app::auth::TokenKeys;
use coalition_app::App;
use coalition_store::cache::{BalanceCache, InProcessCache, RedisCache};
use config::Config;
use std::sync::Arc;

/// Connects storage and cache and loads the signing key: everything a server needs.
/// Migrations run first, so a fresh SQLite file (or database) just works.
pub async fn build_app(config: &Config) -> Result<App, String> {
    let db = coalition_store::connect(&config.database_url, config.db_max_connections)
        .await
        .map_err(|e| format!("DATABASE_URL: cannot connect: {e}"))?;
    coalition_store::migrate(&db)
        .await
        .map_err(|e| format!("migrating the database: {e}"))?;
    let cache: Arc<dyn BalanceCache> = match &config.redis_url {
        Some(url) => RedisCache::connect(url, &config.redis_prefix)
            .await
            .map_err(|e| format!("REDIS_URL: {e}"))?,
        None => Arc::new(InProcessCache::default()),
    };
    let tokens =
        TokenKeys::load_or_generate(&db, config.jwt_secret.as_deref(), config.token_ttl_seconds)
            .await
            .map_err(|e| format!("loading the token signing key: {e}"))?;
    Ok(App {
        db,
        cache,
        tokens: Arc::new(tokens),
        directory: Arc::default(),
        programmes: Arc::default(),
        partners: Arc::default(),
    })
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, coalition_api::router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn init_telemetry() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("COALITION_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
