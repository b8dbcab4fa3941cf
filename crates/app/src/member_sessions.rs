//! Server-side sessions of the member portal. The cookie (`coalition_session`) holds a
//! random 32-byte token (64 hex digits); the store keeps only its SHA-256, so a copy of
//! it signs no one in. A session ends after 12 hours without a request or 7 days after
//! sign-in, whichever comes first; signing out deletes it; a member whose data was
//! erased has no session any more (`find` answers `None`).
//!
//! Sessions live in the database (`member_sessions`), or in Redis when Redis is
//! configured (`coalition_store::sessions`), where they end by themselves.
//!
//! The CSRF token of a session is derived from the cookie's token (SHA-256 under a
//! label): only the holder of the cookie can know it, a cross-site page cannot read it,
//! and nothing more has to be stored.

use crate::{App, AppError, AppResult};
use chrono::{DateTime, Duration, Utc};
use coalition_store::entities::member;
use coalition_store::portal::member_session;
use coalition_store::sessions::{RedisSessions, SessionStoreError};
use rand::RngCore;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// The session cookie's name.
pub const COOKIE: &str = "coalition_session";
/// A session unused this long is over.
pub const IDLE: Duration = Duration::hours(12);
/// A session is over this long after sign-in, however active.
pub const ABSOLUTE: Duration = Duration::days(7);
/// `last_seen_at` is written at most this often, so that reading pages costs no write
/// per request; the idle end is therefore known to within this much.
const TOUCH_EVERY: Duration = Duration::minutes(5);

/// Where sessions are kept.
#[derive(Clone)]
pub enum SessionStore {
    Database,
    Redis(Arc<RedisSessions>),
}

impl From<SessionStoreError> for AppError {
    fn from(err: SessionStoreError) -> Self {
        AppError::Internal(err.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSession {
    pub id: Uuid,
    pub member_id: Uuid,
    pub programme_id: Uuid,
    /// The partner whose link the member came through: branding only.
    pub partner_id: Option<Uuid>,
    /// The value every form of this session must send back.
    pub csrf_token: String,
    /// When the session ends if unused (the idle end, capped by the absolute end).
    pub expires_at: DateTime<Utc>,
    /// When the member signed in with her code (an ID token's `auth_time`).
    pub signed_in_at: DateTime<Utc>,
    /// The stored row (its token hash names it in the store).
    stored: member_session::Model,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn csrf_for(token: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"coalition portal csrf\0");
    digest.update(token.as_bytes());
    hex::encode(digest.finalize())
}

/// A cookie value that can be a token at all: anything else is not looked up.
fn well_formed(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// When a session ends unless used again: the idle end, capped by the absolute end.
fn ends_at(row: &member_session::Model) -> DateTime<Utc> {
    (row.last_seen_at + IDLE).min(row.expires_at)
}

/// The stored sessions that have ended by `now` (the rule of `ends_at`, in SQL).
fn ended_by(now: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(member_session::Column::ExpiresAt.lte(now))
        .add(member_session::Column::LastSeenAt.lte(now - IDLE))
}

fn session_of(row: member_session::Model, token: &str) -> MemberSession {
    MemberSession {
        id: row.id,
        member_id: row.member_id,
        programme_id: row.programme_id,
        partner_id: row.partner_id,
        csrf_token: csrf_for(token),
        expires_at: ends_at(&row),
        signed_in_at: row.created_at,
        stored: row,
    }
}

/// Starts a session for a member and commits `txn` (the sign-in's, which uses up the
/// code): in the database the session is part of it; in Redis it is written before the
/// commit, so that a Redis failure leaves the code unused (the member tries it again, as
/// the error page says). A sign-in whose commit then fails deletes the session again; if
/// even that fails, the session is one whose cookie nobody ever got, and it expires.
/// Returns the cookie's value (shown once, never stored) and the session.
pub async fn start(
    app: &App,
    txn: DatabaseTransaction,
    programme_id: Uuid,
    member_id: Uuid,
    partner_id: Option<Uuid>,
) -> AppResult<(String, MemberSession)> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let now = Utc::now();
    let row = member_session::Model {
        id: Uuid::now_v7(),
        token_hash: token_hash(&token),
        programme_id,
        member_id,
        partner_id,
        created_at: now,
        last_seen_at: now,
        expires_at: now + ABSOLUTE,
    };
    match &app.sessions {
        SessionStore::Database => {
            insert(&txn, &row, now).await?;
            txn.commit().await?;
        }
        SessionStore::Redis(redis) => {
            redis.create(&row, ends_at(&row)).await?;
            if let Err(e) = txn.commit().await {
                let _ = redis.delete(&row).await;
                return Err(e.into());
            }
        }
    }
    Ok((token.clone(), session_of(row, &token)))
}

async fn insert<C: ConnectionTrait>(
    db: &C,
    row: &member_session::Model,
    now: DateTime<Utc>,
) -> AppResult<()> {
    // Her sessions that ended unnoticed (never used again) go now: rows do not pile up.
    member_session::Entity::delete_many()
        .filter(member_session::Column::ProgrammeId.eq(row.programme_id))
        .filter(member_session::Column::MemberId.eq(row.member_id))
        .filter(ended_by(now))
        .exec(db)
        .await?;
    let active: member_session::ActiveModel = row.clone().into();
    member_session::Entity::insert(active)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The live session the cookie value names; `None` for an unknown, malformed, expired
/// or signed-out token, and for a member whose data was erased (her sessions are
/// deleted on the way).
pub async fn find(app: &App, cookie_value: &str) -> AppResult<Option<MemberSession>> {
    if !well_formed(cookie_value) {
        return Ok(None);
    }
    let Some(mut row) = stored(app, &token_hash(cookie_value)).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    if ends_at(&row) <= now {
        delete(app, &row).await?;
        return Ok(None);
    }
    let member = member::Entity::find_by_id(row.member_id)
        .one(&app.db)
        .await?;
    let alive = member
        .as_ref()
        .is_some_and(|m| m.erased_at.is_none() && m.programme_id == row.programme_id);
    if !alive {
        end_all(app, row.programme_id, row.member_id).await?;
        return Ok(None);
    }
    if now - row.last_seen_at >= TOUCH_EVERY {
        row.last_seen_at = now;
        touch(app, &row).await?;
    }
    Ok(Some(session_of(row, cookie_value)))
}

async fn stored(app: &App, hash: &str) -> AppResult<Option<member_session::Model>> {
    Ok(match &app.sessions {
        SessionStore::Database => {
            member_session::Entity::find()
                .filter(member_session::Column::TokenHash.eq(hash))
                .one(&app.db)
                .await?
        }
        SessionStore::Redis(redis) => redis.find(hash).await?,
    })
}

async fn touch(app: &App, row: &member_session::Model) -> AppResult<()> {
    match &app.sessions {
        // Not an update by primary key, which fails when a sign-out deleted the row
        // meanwhile: that page view was allowed, and the next one is not.
        SessionStore::Database => {
            member_session::Entity::update_many()
                .col_expr(
                    member_session::Column::LastSeenAt,
                    sea_orm::sea_query::Expr::value(row.last_seen_at),
                )
                .filter(member_session::Column::Id.eq(row.id))
                .exec(&app.db)
                .await?;
        }
        SessionStore::Redis(redis) => redis.touch(row, ends_at(row)).await?,
    }
    Ok(())
}

async fn delete(app: &App, row: &member_session::Model) -> AppResult<()> {
    match &app.sessions {
        SessionStore::Database => {
            member_session::Entity::delete_by_id(row.id)
                .exec(&app.db)
                .await?;
        }
        SessionStore::Redis(redis) => redis.delete(row).await?,
    }
    Ok(())
}

/// Signs the session out: the cookie's token names nothing from now on.
pub async fn end(app: &App, session: &MemberSession) -> AppResult<()> {
    delete(app, &session.stored).await
}

/// Ends every session of a member (after her data was erased).
pub async fn end_all(app: &App, programme_id: Uuid, member_id: Uuid) -> AppResult<()> {
    match &app.sessions {
        SessionStore::Database => {
            member_session::Entity::delete_many()
                .filter(member_session::Column::ProgrammeId.eq(programme_id))
                .filter(member_session::Column::MemberId.eq(member_id))
                .exec(&app.db)
                .await?;
        }
        SessionStore::Redis(redis) => redis.delete_member(programme_id, member_id).await?,
    }
    Ok(())
}

/// Deletes the sessions in the database that ended unnoticed (never used again): the
/// `forget-sign-ins` job. Sessions in Redis expire by themselves; rows left from before
/// Redis was configured go here too. How many went.
pub async fn forget_ended(app: &App, now: DateTime<Utc>) -> AppResult<u64> {
    let ended = member_session::Entity::delete_many()
        .filter(ended_by(now))
        .exec(&app.db)
        .await?;
    Ok(ended.rows_affected)
}

/// Compares a form's CSRF value with the session's in constant time.
pub fn csrf_matches(session: &MemberSession, sent: &str) -> bool {
    constant_time_eq(session.csrf_token.as_bytes(), sent.as_bytes())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hex_tokens_of_the_right_length_are_looked_up() {
        assert!(well_formed(&"a1".repeat(32)));
        assert!(!well_formed(&"A1".repeat(32)));
        assert!(!well_formed("abc"));
        assert!(!well_formed(&"g1".repeat(32)));
    }

    #[test]
    fn the_csrf_token_is_tied_to_the_session_token() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_ne!(csrf_for(&a), csrf_for(&b));
        assert_ne!(
            csrf_for(&a),
            token_hash(&a),
            "the stored hash is not the CSRF token"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
