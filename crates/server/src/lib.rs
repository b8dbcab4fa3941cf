//! Assembly of the `coalition` binary: configuration, telemetry, and the server.

pub mod config;

use coalition_app::auth::{TokenGuard, TokenKeys, FAILURE_WINDOW};
use coalition_app::App;
use coalition_store::cache::{BalanceCache, InProcessCache, RedisCache};
use coalition_store::failures::{FailureCounter, InProcessFailures, RedisFailures};
use config::Config;
use std::net::SocketAddr;
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
    // Failed token requests are counted where the cache lives, so that several processes
    // on one Redis share the limits.
    let failures: Arc<dyn FailureCounter> = match &config.redis_url {
        Some(url) => Arc::new(
            RedisFailures::connect(url, &config.redis_prefix, FAILURE_WINDOW)
                .await
                .map_err(|e| format!("REDIS_URL: {e}"))?,
        ),
        None => Arc::new(InProcessFailures::new(FAILURE_WINDOW)),
    };
    let tokens =
        TokenKeys::load_or_generate(&db, config.jwt_secret.as_deref(), config.token_ttl_seconds)
            .await
            .map_err(|e| format!("loading the token signing key: {e}"))?;
    let terms = Arc::default();
    coalition_app::terms::spawn_watcher(db.clone(), &terms);
    Ok(App {
        db,
        cache,
        tokens: Arc::new(tokens),
        token_guard: Arc::new(TokenGuard::new(failures, config.token_failures)),
        directory: Arc::default(),
        programmes: Arc::default(),
        terms,
    })
}

/// Serves the API on `listener` until `shutdown` resolves. Handlers see the peer's
/// address (`ConnectInfo`): the token endpoint counts failed attempts per address.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = coalition_api::router(app).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Logging to stderr with `filter` (`Config::log_filter`, checked when the configuration
/// was read), and panics logged through it without their message (`log_panic`).
pub fn init_telemetry(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    std::panic::set_hook(Box::new(log_panic));
}

/// The panic hook: where it happened (and the backtrace when RUST_BACKTRACE asks for
/// one), never the message. The standard hook prints the message, and a message can
/// quote request data: slicing a string at a bad offset prints the string, which was a
/// client secret once. The request itself gets a problem+json 500 (CatchPanicLayer).
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map_or_else(|| "unknown".to_owned(), ToString::to_string);
    let backtrace = std::backtrace::Backtrace::capture();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(%location, thread, %backtrace, "panic (its message is not logged: it may quote request data)");
    } else {
        tracing::error!(%location, thread, "panic (its message is not logged: it may quote request data)");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_with_its_location_but_not_its_message() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(super::log_panic));
        let line = line!() + 3;
        let outcome = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| {
                panic!("byte index 2 is not a char boundary of `{}`", "cs_hunter2")
            })
        });
        std::panic::set_hook(previous);
        assert!(outcome.is_err());
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains(&format!("src/lib.rs:{line}")), "{log}");
        assert!(log.contains("panic"), "{log}");
        assert!(
            !log.contains("cs_hunter2") && !log.contains("char boundary"),
            "{log}"
        );
    }
}
