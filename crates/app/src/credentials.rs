//! Whether an access token's client may still act: checked on every request, from
//! memory, so a disabled, deleted or cut-off client's tokens stop working within a
//! second on every process instead of at their expiry.
//!
//! Each process keeps, per programme, every client's status and generation. A change
//! to either bumps `programmes.credentials_version` in its own transaction ([`bump`]);
//! every process polls the versions it holds every [`POLL_EVERY`] and drops a moved
//! snapshot — the `snapshots` mechanism of `terms`, on its own column so a credential change does
//! not make every process reload the purchase terms. A token names its client and the
//! generation it was issued under; disabling, enabling or cutting a secret at once
//! moves the generation, so the client's earlier tokens never come back.

use crate::auth::IssuedUnder;
use crate::error::{AppError, AppResult};
use crate::snapshots::{self, Snapshots, Versioned};
use crate::{App, Caller};
use coalition_store::entities::{api_client, programme};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

pub use crate::terms::POLL_EVERY;

/// A client that may get and use tokens.
pub const ACTIVE: &str = "active";
/// A client refused at the token endpoint and on every request, until enabled again.
pub const DISABLED: &str = "disabled";

/// Seconds a token's issue time may lie ahead of this process's clock (another
/// process's clock) and still count as "issued before this snapshot was read".
const CLOCK_SKEW_SECONDS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientState {
    active: bool,
    generation: i64,
}

/// One programme's clients as of `version`, read from the database no earlier than
/// `read_from` (unix seconds).
#[derive(Debug)]
pub struct Snapshot {
    version: i64,
    read_from: i64,
    clients: HashMap<String, ClientState>,
}

/// What a snapshot says of a token.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Admitted,
    Revoked,
    /// Not in the snapshot: created after it was read, or deleted.
    Unknown,
}

impl Snapshot {
    fn verdict(&self, client_id: &str, issued: &IssuedUnder) -> Verdict {
        match self.clients.get(client_id) {
            Some(state) if state.active && state.generation == issued.generation => {
                Verdict::Admitted
            }
            Some(_) => Verdict::Revoked,
            None => Verdict::Unknown,
        }
    }

    /// Whether the client of a token issued at `issued_at` must be in this snapshot if
    /// it still exists: the snapshot was read after the token was issued.
    fn covers(&self, issued_at: i64) -> bool {
        self.read_from > issued_at + CLOCK_SKEW_SECONDS
    }
}

impl Versioned for Snapshot {
    fn version(&self) -> i64 {
        self.version
    }
}

/// The client states this process holds.
pub type CredentialsCache = Snapshots<Snapshot>;

/// The caller of a bearer token, if the token is valid and its client may still act.
pub async fn authenticate(app: &App, token: &str) -> AppResult<Caller> {
    let (caller, issued) = app.tokens.verify_issued(token)?;
    admit(app, caller.programme_id, &caller.client_id, &issued).await?;
    Ok(caller)
}

/// Whether a token of `client_id` issued under `issued` may still act: its client
/// exists, is active and has not moved generation since. Member tokens are checked
/// against the client that got them in the same way (`oidc::authenticate_member`).
pub async fn admit(
    app: &App,
    programme_id: Uuid,
    client_id: &str,
    issued: &IssuedUnder,
) -> AppResult<()> {
    let snapshot = match app.credentials.cached(programme_id) {
        Some(snapshot) => snapshot,
        None => reload(app, programme_id).await?,
    };
    let verdict = match snapshot.verdict(client_id, issued) {
        Verdict::Unknown if !snapshot.covers(issued.issued_at) => {
            reload(app, programme_id).await?.verdict(client_id, issued)
        }
        verdict => verdict,
    };
    match verdict {
        Verdict::Admitted => Ok(()),
        Verdict::Revoked | Verdict::Unknown => Err(AppError::TokenRevoked),
    }
}

async fn reload(app: &App, programme_id: Uuid) -> AppResult<Arc<Snapshot>> {
    let snapshot = Arc::new(load(&app.db, programme_id).await?);
    app.credentials.keep(programme_id, snapshot.clone());
    Ok(snapshot)
}

/// Reads the version before the clients (see `terms::load`).
async fn load(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<Snapshot> {
    let read_from = chrono::Utc::now().timestamp();
    let version = snapshots::version(db, programme_id, programme::Column::CredentialsVersion)
        .await?
        .ok_or(AppError::TokenRevoked)?;
    let rows: Vec<(String, String, i64)> = api_client::Entity::find()
        .select_only()
        .column(api_client::Column::ClientId)
        .column(api_client::Column::Status)
        .column(api_client::Column::Generation)
        .filter(api_client::Column::ProgrammeId.eq(programme_id))
        .into_tuple()
        .all(db)
        .await?;
    let clients = rows
        .into_iter()
        .map(|(client_id, status, generation)| {
            let active = status == ACTIVE;
            (client_id, ClientState { active, generation })
        })
        .collect();
    Ok(Snapshot {
        version,
        read_from,
        clients,
    })
}

/// Records a credential change; call it in the change's transaction, and after the
/// commit hand the returned version to [`CredentialsCache::changed`].
pub async fn bump(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<i64> {
    snapshots::bump(db, programme_id, programme::Column::CredentialsVersion).await
}

/// Drops the snapshots whose programme's credentials moved, within [`POLL_EVERY`].
pub fn spawn_watcher(db: DatabaseConnection, cache: &Arc<CredentialsCache>) {
    snapshots::spawn_watcher(db, cache, programme::Column::CredentialsVersion);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: i64, read_from: i64, active: bool, generation: i64) -> Snapshot {
        let state = ClientState { active, generation };
        Snapshot {
            version,
            read_from,
            clients: HashMap::from([("cl_a".to_owned(), state)]),
        }
    }

    fn issued(generation: i64, issued_at: i64) -> IssuedUnder {
        IssuedUnder {
            generation,
            issued_at,
        }
    }

    #[test]
    fn only_an_active_client_of_the_tokens_generation_is_admitted() {
        let active = snapshot(1, 100, true, 2);
        assert_eq!(active.verdict("cl_a", &issued(2, 50)), Verdict::Admitted);
        assert_eq!(active.verdict("cl_a", &issued(1, 50)), Verdict::Revoked);
        assert_eq!(active.verdict("cl_b", &issued(2, 50)), Verdict::Unknown);
        let disabled = snapshot(1, 100, false, 2);
        assert_eq!(disabled.verdict("cl_a", &issued(2, 50)), Verdict::Revoked);
    }

    #[test]
    fn a_snapshot_read_before_a_token_was_issued_does_not_cover_it() {
        let s = snapshot(1, 100, true, 0);
        assert!(s.covers(100 - CLOCK_SKEW_SECONDS - 1));
        assert!(!s.covers(100));
        assert!(!s.covers(100 - CLOCK_SKEW_SECONDS));
    }
}
