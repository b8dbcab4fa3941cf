//! Member portal sessions kept in Redis, when Redis is configured: every server process
//! on that Redis sees a sign-in and a sign-out at once, and Redis drops a session by
//! itself when it ends. (Without Redis they live in the `member_sessions` table.)
//!
//! A session is one key, `{prefix}session:{token hash}`, holding the row as JSON and
//! living until the session's end (idle or absolute, whichever comes first). A set per
//! member, `{prefix}member-sessions:{programme}:{member}`, names her sessions' keys so
//! that erasing her ends them all.
//!
//! Unlike the balance cache, sessions have no database to fall back on: a failed call
//! is an error the caller reports, never "no session" that signs a member out nor a
//! session taken from elsewhere.

use crate::portal::member_session;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

const CALL_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("redis sessions: {0}")]
pub struct SessionStoreError(String);

impl From<redis::RedisError> for SessionStoreError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

pub struct RedisSessions {
    client: redis::Client,
    /// Opened at the first call that finds Redis answering; reconnects by itself after.
    connection: Arc<OnceCell<redis::aio::ConnectionManager>>,
    prefix: String,
}

impl RedisSessions {
    /// Only a malformed URL is an error: Redis is first reached by the first call.
    pub fn new(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: Arc::new(OnceCell::new()),
            prefix: prefix.to_owned(),
        })
    }

    fn session_key(&self, token_hash: &str) -> String {
        format!("{}session:{token_hash}", self.prefix)
    }

    fn member_key(&self, programme_id: Uuid, member_id: Uuid) -> String {
        format!("{}member-sessions:{programme_id}:{member_id}", self.prefix)
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, SessionStoreError> {
        let client = self.client.clone();
        self.connection
            .get_or_try_init(|| async move {
                crate::open_redis(client, CALL_TIMEOUT)
                    .await
                    .ok_or_else(|| SessionStoreError("not reachable".into()))
            })
            .await
            .cloned()
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, SessionStoreError> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async(&mut connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SessionStoreError("timed out".into())),
        }
    }

    /// Stores a new session until `ends_at`, and names it under its member.
    pub async fn create(
        &self,
        row: &member_session::Model,
        ends_at: DateTime<Utc>,
    ) -> Result<(), SessionStoreError> {
        let ttl = millis_until(ends_at);
        let member_key = self.member_key(row.programme_id, row.member_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.session_key(&row.token_hash))
            .arg(to_json(row))
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("SADD")
            .arg(&member_key)
            .arg(&row.token_hash)
            .ignore()
            // The set outlives every session it names: each new one extends it to its
            // own absolute end.
            .cmd("PEXPIRE")
            .arg(&member_key)
            .arg(millis_until(row.expires_at))
            .ignore();
        self.run(&pipe).await
    }

    /// The stored session of a token's hash; `None` once it ended or was deleted.
    pub async fn find(
        &self,
        token_hash: &str,
    ) -> Result<Option<member_session::Model>, SessionStoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.session_key(token_hash));
        let (stored,): (Option<String>,) = self.run(&pipe).await?;
        Ok(stored.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Writes a used session back with its new end — only if it still exists, so that a
    /// sign-out racing with a page view is never undone.
    pub async fn touch(
        &self,
        row: &member_session::Model,
        ends_at: DateTime<Utc>,
    ) -> Result<(), SessionStoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.session_key(&row.token_hash))
            .arg(to_json(row))
            .arg("PX")
            .arg(millis_until(ends_at))
            .arg("XX")
            .ignore();
        self.run(&pipe).await
    }

    pub async fn delete(&self, row: &member_session::Model) -> Result<(), SessionStoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.session_key(&row.token_hash))
            .ignore()
            .cmd("SREM")
            .arg(self.member_key(row.programme_id, row.member_id))
            .arg(&row.token_hash)
            .ignore();
        self.run(&pipe).await
    }

    /// Ends every session of a member.
    pub async fn delete_member(
        &self,
        programme_id: Uuid,
        member_id: Uuid,
    ) -> Result<(), SessionStoreError> {
        let member_key = self.member_key(programme_id, member_id);
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(&member_key);
        let (hashes,): (Vec<String>,) = self.run(&pipe).await?;
        if hashes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for hash in &hashes {
            pipe.cmd("DEL").arg(self.session_key(hash)).ignore();
        }
        pipe.cmd("SREM").arg(&member_key).arg(&hashes).ignore();
        self.run(&pipe).await
    }
}

/// Milliseconds from now to `at`, at least 1 (Redis refuses a zero or negative expiry).
fn millis_until(at: DateTime<Utc>) -> i64 {
    (at - Utc::now()).num_milliseconds().max(1)
}

fn to_json(row: &member_session::Model) -> String {
    serde_json::to_string(row).expect("a session row serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as Span;

    fn redis_sessions() -> Option<RedisSessions> {
        let url = crate::test_redis_url()?;
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        Some(RedisSessions::new(&url, &prefix).expect("redis url"))
    }

    /// The interleaving a page view (read, then touch) and a sign-out (delete) on two
    /// servers can take: the touch lands after the delete. The session stays ended —
    /// and so after an erasure of the member.
    #[tokio::test]
    async fn a_touch_after_a_sign_out_or_an_erasure_brings_nothing_back() {
        let Some(sessions) = redis_sessions() else {
            return;
        };
        let now = Utc::now();
        let row = member_session::Model {
            id: Uuid::now_v7(),
            token_hash: "ab".repeat(32),
            programme_id: Uuid::now_v7(),
            member_id: Uuid::now_v7(),
            partner_id: None,
            created_at: now - Span::minutes(6),
            last_seen_at: now - Span::minutes(6),
            expires_at: now + Span::days(7),
        };
        for erase in [false, true] {
            sessions.create(&row, now + Span::hours(12)).await.unwrap();
            let mut read = sessions.find(&row.token_hash).await.unwrap().unwrap();
            if erase {
                sessions
                    .delete_member(row.programme_id, row.member_id)
                    .await
                    .unwrap();
            } else {
                sessions.delete(&read).await.unwrap();
            }
            read.last_seen_at = Utc::now();
            sessions
                .touch(&read, read.last_seen_at + Span::hours(12))
                .await
                .unwrap();
            assert_eq!(
                sessions.find(&row.token_hash).await.unwrap(),
                None,
                "erase {erase}"
            );
        }
    }
}
