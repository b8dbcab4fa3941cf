//! Assembly of the `coalition` binary: configuration, telemetry, and the server.

pub mod config;
pub mod telemetry;

use coalition_app::auth::{TokenGuard, TokenKeys, FAILURE_WINDOW};
use coalition_app::member_sessions::SessionStore;
use coalition_app::App;
use coalition_store::cache::{BalanceCache, InProcessCache, RedisCache};
use coalition_store::failures::{FailureCounter, InProcessFailures, RedisFailures};
use coalition_store::sessions::RedisSessions;
use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;

/// Connects storage and cache and loads the signing key: everything a server needs.
/// Migrates first where `Config::migrate_on_start` says so (a fresh SQLite file just
/// works); elsewhere refuses a database whose schema is behind this binary.
pub async fn build_app(config: &Config) -> Result<App, String> {
    let db = coalition_store::connect(&config.database_url, config.db_max_connections)
        .await
        .map_err(|e| format!("DATABASE_URL: cannot connect: {e}"))?;
    if config.migrate_on_start {
        coalition_store::migrate(&db)
            .await
            .map_err(|e| format!("migrating the database: {e}"))?;
    } else {
        ensure_migrated(&db).await?;
    }
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
    let sessions = match &config.redis_url {
        Some(url) => SessionStore::Redis(Arc::new(
            RedisSessions::new(url, &config.redis_prefix).map_err(|e| format!("REDIS_URL: {e}"))?,
        )),
        None => SessionStore::Database,
    };
    let tokens =
        TokenKeys::load_or_generate(&db, config.jwt_secret.as_deref(), config.token_ttl_seconds)
            .await
            .map_err(|e| format!("loading the token signing key: {e}"))?;
    let member_tokens = coalition_app::auth::member_tokens::MemberTokenKeys::load_or_generate(
        &db,
        config.member_signing_key.as_deref(),
        &config.public_url,
    )
    .await
    .map_err(|e| format!("loading the member token signing key: {e}"))?;
    let mailer =
        coalition_app::mailer::Mailer::from_settings(config.smtp_url.as_deref(), &config.smtp_from)
            .map_err(|e| format!("COALITION_SMTP_URL: {e}"))?;
    let terms = Arc::default();
    coalition_app::terms::spawn_watcher(db.clone(), &terms);
    let credentials = Arc::default();
    coalition_app::credentials::spawn_watcher(db.clone(), &credentials);
    Ok(App {
        db,
        cache,
        tokens: Arc::new(tokens),
        member_tokens: Arc::new(member_tokens),
        token_guard: Arc::new(TokenGuard::new(failures, config.token_failures)),
        directory: Arc::default(),
        programmes: Arc::default(),
        terms,
        credentials,
        hold_ttl: std::time::Duration::from_secs(config.hold_ttl_seconds.unsigned_abs()),
        webhooks: Arc::new(coalition_app::webhooks::Webhooks::new(
            config.webhooks.clone(),
        )?),
        bank_authorization_lapse: chrono::Duration::hours(config.bank_authorization_lapse_hours),
        mailer: Arc::new(mailer),
        signin: config.signin,
        sessions,
    })
}

/// Refuses to run on a schema older than this binary: queries would fail one by one,
/// at run time, on whatever column is missing.
async fn ensure_migrated(db: &coalition_store::sea_orm::DatabaseConnection) -> Result<(), String> {
    let pending = coalition_store::pending_migrations(db)
        .await
        .map_err(|e| format!("reading the applied migrations: {e}"))?;
    match pending.as_slice() {
        [] => Ok(()),
        names => Err(format!(
            "the database schema is behind this binary ({} migration(s) not applied: {}); \
             run `coalition migrate` with a role allowed to change the schema, or set \
             COALITION_MIGRATE_ON_START=true",
            names.len(),
            names.join(", ")
        )),
    }
}

/// Where `database_url` points, for telling the operator which database a command used:
/// the SQLite file as an absolute path, or PostgreSQL's user, host, port and database.
/// Never the password (nor the query string, which may carry one).
pub fn describe_database(database_url: &str) -> String {
    if let Some(path) = sqlite_file(database_url) {
        return format!("SQLite file {}", path.display());
    }
    if database_url.starts_with("sqlite:") {
        return "SQLite in memory".to_owned();
    }
    let rest = database_url.split_once("://").map_or("", |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (user, location) = match rest.rsplit_once('@') {
        Some((credentials, location)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            (format!("{user}@"), location)
        }
        None => (String::new(), rest),
    };
    format!("PostgreSQL {user}{location}")
}

/// The SQLite file `database_url` names, made absolute against the working directory
/// (sqlx opens a relative path there); `None` for PostgreSQL or an in-memory database.
pub fn sqlite_file(database_url: &str) -> Option<std::path::PathBuf> {
    let path = database_url
        .strip_prefix("sqlite:")?
        .trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let path = std::path::Path::new(path);
    Some(match std::env::current_dir() {
        Ok(dir) => dir.join(path),
        Err(_) => path.to_owned(),
    })
}

/// Serves the API on `listener` until `shutdown` resolves, running the background jobs
/// every `jobs_interval` (`Config::jobs_interval`; `None`: no jobs) and delivering
/// webhooks every `app.webhooks.settings.interval` meanwhile. Handlers
/// see the peer's address (`ConnectInfo`): the token endpoint counts failed attempts per
/// address. The jobs stop with the server.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    jobs_interval: Option<std::time::Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let jobs = jobs_interval.map(|every| coalition_app::jobs::spawn_scheduler(app.clone(), every));
    let deliverer = app
        .webhooks
        .settings
        .interval
        .map(|every| coalition_app::webhooks::spawn_deliverer(app.clone(), every));
    let service = coalition_api::router(app).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(jobs) = jobs {
        jobs.stop().await;
    }
    if let Some(deliverer) = deliverer {
        deliverer.stop().await;
    }
    served
}

/// Logging to stderr with `Config::log_filter` in `Config::log_format`, traces when
/// `Config::otlp_endpoint` is set (`telemetry`), and panics logged without their message
/// (`log_panic`). Shut the answer down at exit: it flushes the traces.
pub fn init_telemetry(config: &Config) -> Result<telemetry::Telemetry, String> {
    let telemetry = telemetry::init(config)?;
    std::panic::set_hook(Box::new(log_panic));
    Ok(telemetry)
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
    fn a_database_is_described_without_its_password() {
        let pg = "postgres://app:s3cret@db.internal:5432/coalition?password=other&sslmode=require";
        assert_eq!(
            super::describe_database(pg),
            "PostgreSQL app@db.internal:5432/coalition"
        );
        assert_eq!(
            super::describe_database("postgresql://db/coalition"),
            "PostgreSQL db/coalition"
        );
        assert_eq!(
            super::describe_database("sqlite:///var/lib/c.db?mode=rwc"),
            "SQLite file /var/lib/c.db"
        );
        let here = std::env::current_dir().unwrap().join("coalition.db");
        assert_eq!(
            super::describe_database("sqlite://coalition.db?mode=rwc"),
            format!("SQLite file {}", here.display())
        );
        assert_eq!(
            super::describe_database("sqlite::memory:"),
            "SQLite in memory"
        );
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
