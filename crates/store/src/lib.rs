//! Storage: sea-orm entities and connection set-up, the balance cache (Redis or
//! in-process behind one trait), and the counters of failed token requests (likewise).

pub mod cache;
pub mod entities;
pub mod failures;
/// The member portal's sign-in codes, sessions and request counters.
pub mod portal;
pub mod sessions;

use migration::MigratorTrait;
pub use sea_orm;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use std::time::Duration;

/// Opens a Redis connection (reconnecting by itself afterwards) within 2 s, or `None`:
/// the cache, the failure counters and the sessions open theirs alike.
pub(crate) async fn open_redis(
    client: redis::Client,
    response_timeout: Duration,
) -> Option<redis::aio::ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1);
    let opening = redis::aio::ConnectionManager::new_with_config(client, config);
    tokio::time::timeout(Duration::from_secs(2), opening)
        .await
        .ok()?
        .ok()
}

/// The Redis of the store's own tests; `None` (said on stderr) without TEST_REDIS_URL,
/// whose tests then run in the PostgreSQL + Redis pass of CI.
#[cfg(test)]
pub(crate) fn test_redis_url() -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("needs TEST_REDIS_URL: runs in the PostgreSQL + Redis pass of .ci/run");
    }
    url
}

/// Connects to `DATABASE_URL`. SQLite is the embedded, single-process default: one
/// connection serialises writers, which is what SQLite does anyway, and avoids
/// "database is locked" on lock upgrades. PostgreSQL gets a real pool.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    let is_sqlite = url.starts_with("sqlite:");
    options.max_connections(if is_sqlite { 1 } else { max_connections });
    if is_sqlite {
        // An in-memory database lives exactly as long as its one connection.
        let forever = Duration::from_secs(10 * 365 * 24 * 3600);
        options
            .min_connections(1)
            .idle_timeout(forever)
            .max_lifetime(forever);
    }
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL;",
        )
        .await?;
    }
    Ok(db)
}

/// Applies the migrations. On PostgreSQL any number of processes may start at once
/// (replicas rolling out, or `coalition migrate` beside `serve`): without a lock two of
/// them create the same table at the same moment and one fails (`duplicate key value
/// violates unique constraint "pg_type_typname_nsp_index"`). A session advisory lock,
/// held on one pooled connection while the migrations run on others, lets one process
/// migrate while the rest wait and then find nothing left to do.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return migration::Migrator::up(db, None).await;
    }
    let mut holder = db
        .get_postgres_connection_pool()
        .acquire()
        .await
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))?;
    let lock = |sql: &'static str| sea_orm::sqlx::query(sql).bind(MIGRATION_LOCK);
    lock("SELECT pg_advisory_lock($1)")
        .execute(&mut *holder)
        .await
        .map_err(|e| DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)))?;
    let migrated = migration::Migrator::up(db, None).await;
    let unlocked = lock("SELECT pg_advisory_unlock($1)")
        .execute(&mut *holder)
        .await;
    if unlocked.is_err() {
        // The connection is unusable; closing it ends the session and its lock.
        holder.detach();
    }
    migrated
}

/// The migrations this binary knows and the database has not had, by name. Reads the
/// migration table only: sea-orm's own check creates that table first, which a role
/// without DDL rights (what the app runs as in a deployment) may not do.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let applied: Vec<String> = match db
        .query_all(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|row| row.try_get::<String>("", "version"))
            .collect::<Result<_, _>>()?,
        Err(e) if is_missing_table(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .filter(|name| !applied.contains(name))
        .collect())
}

/// A never-migrated database: PostgreSQL says 'relation "…" does not exist', SQLite
/// 'no such table'. Neither has a portable error code in sea-orm.
fn is_missing_table(err: &DbErr) -> bool {
    let text = err.to_string();
    text.contains("does not exist") || text.contains("no such table")
}

/// The advisory lock key of migrating (any constant; this one spells "coalMIGR").
const MIGRATION_LOCK: i64 = 0x636f_616c_4d49_4752;

/// Is this error a unique-constraint violation (a concurrent duplicate)?
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
