//! Cache of balance views. The database is the truth: every cached value carries the
//! account's version, an older version never replaces a newer one, and any failure just
//! means a database read. Writers record "version N exists" after their commit, so a
//! slow reader holding version N-1 cannot put it back.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a cached view lives: it also shows "points expiring soon", which moves with
/// the clock, not only with writes.
pub const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: i64,
    pub body: String,
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
}

#[async_trait]
pub trait BalanceCache: Send + Sync {
    async fn get(&self, account: Uuid) -> Option<Versioned>;
    /// Stores a view read from the database, unless a newer version is known.
    async fn put(&self, account: Uuid, value: Versioned);
    /// Records after a commit that `version` is now current: older views are gone.
    async fn changed(&self, account: Uuid, version: i64);
    /// Whether the cache answers; `None` when there is no external cache to ask.
    async fn healthy(&self) -> Option<bool>;
    fn stats(&self) -> &CacheStats;
}

struct Slot {
    version: i64,
    body: Option<String>,
    stored: Instant,
}

#[derive(Default)]
pub struct InProcessCache {
    slots: Mutex<HashMap<Uuid, Slot>>,
    stats: CacheStats,
}

/// Decides whether a write of (version, body) may replace what is cached: never an older
/// version, and for the same version only a value may fill in a bare "changed" marker.
fn may_replace(current: Option<(i64, bool)>, version: i64, has_body: bool) -> bool {
    match current {
        None => true,
        Some((v, _)) if version > v => true,
        Some((v, current_has_body)) => version == v && has_body && !current_has_body,
    }
}

impl InProcessCache {
    fn write(&self, account: Uuid, version: i64, body: Option<String>) {
        let mut slots = self.slots.lock().expect("cache lock");
        let current = slots.get(&account).map(|s| (s.version, s.body.is_some()));
        if may_replace(current, version, body.is_some()) {
            slots.insert(
                account,
                Slot {
                    version,
                    body,
                    stored: Instant::now(),
                },
            );
        }
    }
}

#[async_trait]
impl BalanceCache for InProcessCache {
    async fn get(&self, account: Uuid) -> Option<Versioned> {
        let found = {
            let slots = self.slots.lock().expect("cache lock");
            slots.get(&account).and_then(|s| {
                let fresh = s.stored.elapsed() < TTL;
                s.body.clone().filter(|_| fresh).map(|body| Versioned {
                    version: s.version,
                    body,
                })
            })
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    async fn put(&self, account: Uuid, value: Versioned) {
        self.write(account, value.version, Some(value.body));
    }

    async fn changed(&self, account: Uuid, version: i64) {
        self.write(account, version, None);
    }

    async fn healthy(&self) -> Option<bool> {
        None
    }

    fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

/// Redis-backed cache. Each write is one Lua script so the version check and the write
/// are atomic across server processes. Calls are bounded by a short timeout; after any
/// failed write the cache is flushed before it is trusted again, so a marker lost during
/// an outage cannot leave a stale value behind.
pub struct RedisCache {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    write_script: redis::Script,
    lost_write: AtomicBool,
    stats: CacheStats,
}

const WRITE_IF_NEWER: &str = r#"
local current = redis.call('HGET', KEYS[1], 'v')
local version = tonumber(ARGV[1])
local has_body = ARGV[2] ~= ''
if current then
  current = tonumber(current)
  if version < current then return 0 end
  if version == current and (not has_body or redis.call('HEXISTS', KEYS[1], 'b') == 1) then return 0 end
end
redis.call('DEL', KEYS[1])
if has_body then
  redis.call('HSET', KEYS[1], 'v', version, 'b', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'v', version)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

const CALL_TIMEOUT: Duration = Duration::from_millis(250);

impl RedisCache {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let connection = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            write_script: redis::Script::new(WRITE_IF_NEWER),
            lost_write: AtomicBool::new(false),
            stats: CacheStats::default(),
        })
    }

    fn key(&self, account: Uuid) -> String {
        format!("{}balance:{account}", self.prefix)
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("timed out");
                None
            }
        }
    }

    fn failed(&self, why: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            error = why,
            "redis cache call failed; serving from the database"
        );
    }

    /// After a lost write, drop every cached balance before trusting the cache again.
    async fn recover(&self) -> bool {
        if !self.lost_write.load(Ordering::Acquire) {
            return true;
        }
        let mut con = self.connection.clone();
        let pattern = format!("{}balance:*", self.prefix);
        let keys: Option<Vec<String>> = self
            .call(redis::cmd("KEYS").arg(&pattern).query_async(&mut con))
            .await;
        let Some(keys) = keys else { return false };
        for chunk in keys.chunks(500) {
            let deleted: Option<()> = self
                .call(redis::cmd("DEL").arg(chunk).query_async(&mut con))
                .await;
            if deleted.is_none() {
                return false;
            }
        }
        self.lost_write.store(false, Ordering::Release);
        tracing::info!(
            flushed = keys.len(),
            "redis cache back; flushed balances cached before the outage"
        );
        true
    }

    async fn write(&self, account: Uuid, version: i64, body: &str) {
        if !self.recover().await {
            self.lost_write.store(true, Ordering::Release);
            return;
        }
        let mut con = self.connection.clone();
        let mut invocation = self.write_script.key(self.key(account));
        invocation.arg(version).arg(body).arg(TTL.as_secs());
        let written: Option<i64> = self.call(invocation.invoke_async(&mut con)).await;
        if written.is_none() {
            self.lost_write.store(true, Ordering::Release);
        }
    }
}

#[async_trait]
impl BalanceCache for RedisCache {
    async fn get(&self, account: Uuid) -> Option<Versioned> {
        if !self.recover().await {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut con = self.connection.clone();
        let fields: Option<(Option<i64>, Option<String>)> = self
            .call(
                redis::cmd("HMGET")
                    .arg(self.key(account))
                    .arg("v")
                    .arg("b")
                    .query_async(&mut con),
            )
            .await;
        let found = match fields {
            Some((Some(version), Some(body))) => Some(Versioned { version, body }),
            _ => None,
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    async fn put(&self, account: Uuid, value: Versioned) {
        self.write(account, value.version, &value.body).await;
    }

    async fn changed(&self, account: Uuid, version: i64) {
        self.write(account, version, "").await;
    }

    async fn healthy(&self) -> Option<bool> {
        let mut con = self.connection.clone();
        let pong: Option<String> = self.call(redis::cmd("PING").query_async(&mut con)).await;
        Some(pong.is_some())
    }

    fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let cache = InProcessCache::default();
        let id = Uuid::new_v4();
        cache
            .put(
                id,
                Versioned {
                    version: 2,
                    body: "two".into(),
                },
            )
            .await;
        cache
            .put(
                id,
                Versioned {
                    version: 1,
                    body: "one".into(),
                },
            )
            .await;
        assert_eq!(cache.get(id).await.unwrap().body, "two");
        cache.changed(id, 3).await;
        assert_eq!(cache.get(id).await, None, "a change hides the old view");
        cache
            .put(
                id,
                Versioned {
                    version: 2,
                    body: "stale".into(),
                },
            )
            .await;
        assert_eq!(
            cache.get(id).await,
            None,
            "a slow reader cannot put back an old view"
        );
        cache
            .put(
                id,
                Versioned {
                    version: 3,
                    body: "three".into(),
                },
            )
            .await;
        assert_eq!(cache.get(id).await.unwrap().body, "three");
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.stats().misses.load(Ordering::Relaxed), 2);
    }
}
