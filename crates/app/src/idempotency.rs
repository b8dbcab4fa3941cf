//! Idempotency of point-moving requests. The record is written in the same transaction
//! as the work, under a primary key on (client, key): the database, not a lock in memory,
//! decides which of two concurrent duplicates wins; the loser replays the winner.
//! Only successful answers are recorded: a refused request moved nothing and may be
//! retried with the same key.

use crate::error::{AppError, AppResult};
use crate::App;
use coalition_store::entities::idempotency_key;
use coalition_store::is_unique_violation;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseTransaction, EntityTrait, TransactionTrait,
};
use std::future::Future;

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub client_id: String,
    pub key: String,
    /// Hash of the method, path and canonical body: "the same request".
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

async fn lookup(
    db: &impl ConnectionTrait,
    key: &IdempotencyKey,
) -> AppResult<Option<StoredResponse>> {
    let found = idempotency_key::Entity::find_by_id((key.client_id.clone(), key.key.clone()))
        .one(db)
        .await?;
    match found {
        None => Ok(None),
        Some(row) if row.request_hash != key.request_hash => Err(AppError::IdempotencyKeyReused),
        Some(row) => Ok(Some(StoredResponse {
            status: row.status_code as u16,
            body: row.response_body,
            location: row.location,
        })),
    }
}

/// After a request failed: if a request with the same key succeeded meanwhile (and made
/// this one fail, e.g. on a taken external reference or the key itself), its answer is
/// the answer; otherwise the failure is.
pub async fn replay_or(
    app: &App,
    key: &IdempotencyKey,
    err: AppError,
) -> AppResult<StoredResponse> {
    lookup(&app.db, key).await?.ok_or(err)
}

/// Runs `work` once per key: a replay returns the first answer; `after_commit` runs only
/// for the request that did the work (cache updates belong there).
pub async fn run<T, F, Fut>(
    app: &App,
    key: &IdempotencyKey,
    work: F,
) -> AppResult<(StoredResponse, Option<T>)>
where
    F: FnOnce(DatabaseTransaction) -> Fut,
    Fut: Future<Output = AppResult<(DatabaseTransaction, StoredResponse, T)>>,
{
    // No lookup first: a replay is rare, and it fails the work (the purchase's external
    // reference is taken) or the record's insert (the key is taken), both of which end in
    // the lookup below. A new request saves the round trip.
    let txn = app.db.begin().await?;
    let (txn, response, extra) = match work(txn).await {
        Ok(done) => done,
        // A concurrent duplicate may have won meanwhile (and made this attempt fail, e.g.
        // on a unique external reference): its answer is the answer.
        Err(e) => {
            return lookup(&app.db, key)
                .await?
                .map(|replay| (replay, None))
                .ok_or(e)
        }
    };
    let record = idempotency_key::ActiveModel {
        client_id: Set(key.client_id.clone()),
        key: Set(key.key.clone()),
        request_hash: Set(key.request_hash.clone()),
        status_code: Set(i32::from(response.status)),
        response_body: Set(response.body.clone()),
        location: Set(response.location.clone()),
        created_at: Set(chrono::Utc::now()),
    };
    let saved = match idempotency_key::Entity::insert(record)
        .exec_without_returning(&txn)
        .await
    {
        Ok(_) => txn.commit().await,
        Err(e) => {
            // Roll back before reading again: SQLite has a single connection.
            txn.rollback().await?;
            Err(e)
        }
    };
    match saved {
        Ok(()) => Ok((response, Some(extra))),
        Err(e) if is_unique_violation(&e) => {
            let replay = lookup(&app.db, key)
                .await?
                .ok_or_else(|| AppError::Internal("idempotency record vanished".into()))?;
            Ok((replay, None))
        }
        Err(e) => Err(e.into()),
    }
}
