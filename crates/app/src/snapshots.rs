//! Per-programme snapshots kept in memory and dropped when the programme's version
//! column moves: the one mechanism behind the purchase terms (`terms`) and the API
//! clients' states (`credentials`).
//!
//! A change bumps its version column in its own transaction ([`bump`]); every process
//! polls the versions of the programmes it holds every [`POLL_EVERY`] and drops a
//! snapshot whose version moved ([`spawn_watcher`]). The process that made the change
//! does not wait for the poll: it records the new version at once
//! ([`Snapshots::changed`]), and from then on refuses to keep an older snapshot that a
//! request running alongside the change may still have been loading.

use crate::error::{AppError, AppResult};
use coalition_store::entities::programme;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use uuid::Uuid;

/// How often each process asks whether what it holds changed: well inside the one
/// second a change may take to reach every process.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// What a snapshot was read as of.
pub trait Versioned {
    fn version(&self) -> i64;
}

struct Held<T> {
    snapshots: HashMap<Uuid, Arc<T>>,
    /// The newest version this process knows of, per programme: older snapshots are
    /// not kept.
    known: HashMap<Uuid, i64>,
}

/// The snapshots of one kind this process holds, per programme.
pub struct Snapshots<T>(RwLock<Held<T>>);

impl<T> Default for Snapshots<T> {
    fn default() -> Self {
        Self(RwLock::new(Held {
            snapshots: HashMap::new(),
            known: HashMap::new(),
        }))
    }
}

impl<T: Versioned> Snapshots<T> {
    pub(crate) fn cached(&self, programme_id: Uuid) -> Option<Arc<T>> {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        held.snapshots.get(&programme_id).cloned()
    }

    pub(crate) fn keep(&self, programme_id: Uuid, snapshot: Arc<T>) {
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        let newest = held.known.get(&programme_id).copied().unwrap_or(i64::MIN);
        if snapshot.version() >= newest {
            held.known.insert(programme_id, snapshot.version());
            held.snapshots.insert(programme_id, snapshot);
        }
    }

    /// A change committed as `version`: forget the older snapshot.
    pub fn changed(&self, programme_id: Uuid, version: i64) {
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        let newest = held.known.entry(programme_id).or_insert(version);
        *newest = (*newest).max(version);
        let newest = *newest;
        if held
            .snapshots
            .get(&programme_id)
            .is_some_and(|s| s.version() < newest)
        {
            held.snapshots.remove(&programme_id);
        }
    }

    fn held_programmes(&self) -> Vec<Uuid> {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        held.snapshots.keys().copied().collect()
    }
}

/// Moves the programme's `column` on; call it in the change's transaction, and after
/// the commit hand the returned version to [`Snapshots::changed`].
pub(crate) async fn bump(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    column: programme::Column,
) -> AppResult<i64> {
    programme::Entity::update_many()
        .col_expr(column, Expr::col(column).add(1))
        .filter(programme::Column::Id.eq(programme_id))
        .exec(db)
        .await?;
    version(db, programme_id, column)
        .await?
        .ok_or(AppError::NotFound("programme"))
}

/// The programme's `column` as it is now.
pub(crate) async fn version(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    column: programme::Column,
) -> AppResult<Option<i64>> {
    Ok(programme::Entity::find_by_id(programme_id)
        .select_only()
        .column(column)
        .into_tuple()
        .one(db)
        .await?)
}

/// Polls `column` of the programmes this process holds and drops moved snapshots,
/// every [`POLL_EVERY`], for as long as the cache lives.
pub(crate) fn spawn_watcher<T: Versioned + Send + Sync + 'static>(
    db: DatabaseConnection,
    cache: &Arc<Snapshots<T>>,
    column: programme::Column,
) {
    let cache: Weak<Snapshots<T>> = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else { return };
            if let Err(e) = poll(&db, &cache, column).await {
                tracing::warn!(error = %e, column = ?column, "checking versions failed; retrying");
            }
        }
    });
}

async fn poll<T: Versioned>(
    db: &DatabaseConnection,
    cache: &Snapshots<T>,
    column: programme::Column,
) -> AppResult<()> {
    let held = cache.held_programmes();
    if held.is_empty() {
        return Ok(());
    }
    let versions: Vec<(Uuid, i64)> = programme::Entity::find()
        .select_only()
        .column(programme::Column::Id)
        .column(column)
        .filter(programme::Column::Id.is_in(held))
        .into_tuple()
        .all(db)
        .await?;
    for (programme_id, version) in versions {
        cache.changed(programme_id, version);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct At(i64);

    impl Versioned for At {
        fn version(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn a_change_drops_the_snapshot_and_refuses_older_ones() {
        let cache = Snapshots::<At>::default();
        let programme = Uuid::new_v4();
        cache.keep(programme, Arc::new(At(3)));
        assert_eq!(cache.cached(programme).unwrap().version(), 3);
        cache.changed(programme, 3);
        assert!(
            cache.cached(programme).is_some(),
            "same version: still good"
        );
        cache.changed(programme, 4);
        assert!(cache.cached(programme).is_none());
        // A request that began loading before the change must not put version 3 back.
        cache.keep(programme, Arc::new(At(3)));
        assert!(cache.cached(programme).is_none());
        cache.keep(programme, Arc::new(At(4)));
        assert_eq!(cache.cached(programme).unwrap().version(), 4);
    }
}
