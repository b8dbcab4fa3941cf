//! Cache of balance views. The database is the truth: every cached value carries the
//! account's version, an older version never replaces a newer one, and any failure just
//! means a database read. Writers record "version N exists" after their commit, so a
//! slow reader holding version N-1 cannot put it back.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The longest a cached view lives; the caller passes a shorter life when the view will
/// change with the clock (points entering the "expiring soon" window, or expiring).
/// It also bounds the one staleness the versioning cannot prevent: a process cut off
/// from Redis alone cannot mark its writes there, and the others keep serving the view
/// from before until it expires (or that process's probe flushes).
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// How long a "changed" marker lives: far longer than any read that could race it.
const MARKER_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: i64,
    pub body: String,
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    /// Reads the database answered: not cached, or the cache was not trusted.
    pub misses: AtomicU64,
    /// Failed or timed-out cache calls.
    pub errors: AtomicU64,
    /// Times the cache was emptied after an outage.
    pub flushes: AtomicU64,
}

impl CacheStats {
    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
pub trait BalanceCache: Send + Sync {
    async fn get(&self, account: Uuid) -> Option<Versioned>;
    /// Stores a view read from the database for at most `ttl` (capped at `MAX_TTL`),
    /// unless a newer version is known.
    async fn put(&self, account: Uuid, value: Versioned, ttl: Duration);
    /// Records after a commit that `version` is now current: older views are gone.
    async fn changed(&self, account: Uuid, version: i64);
    /// Whether the cache is in use; `None` when there is no external cache to ask.
    async fn healthy(&self) -> Option<bool>;
    fn stats(&self) -> &CacheStats;
    /// `in_process` or `redis`, for metrics.
    fn backend(&self) -> &'static str;
}

struct Slot {
    version: i64,
    body: Option<String>,
    expires: Instant,
}

pub struct InProcessCache {
    slots: Mutex<HashMap<Uuid, Slot>>,
    /// Beyond this many slots, expired ones go, then cached values (markers stay).
    capacity: usize,
    stats: CacheStats,
}

impl Default for InProcessCache {
    fn default() -> Self {
        Self::with_capacity(200_000)
    }
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
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: Mutex::default(),
            capacity,
            stats: CacheStats::default(),
        }
    }

    /// Makes room without ever forgetting a live "changed" marker, which is what keeps a
    /// slow reader from putting back an older view.
    fn make_room(&self, slots: &mut HashMap<Uuid, Slot>, now: Instant) {
        if slots.len() < self.capacity {
            return;
        }
        slots.retain(|_, slot| slot.expires > now);
        if slots.len() >= self.capacity {
            slots.retain(|_, slot| slot.body.is_none());
        }
    }

    fn write(
        &self,
        account: Uuid,
        version: i64,
        body: Option<String>,
        ttl: Duration,
        now: Instant,
    ) {
        let mut slots = self.slots.lock().expect("cache lock");
        self.make_room(&mut slots, now);
        let current = slots.get(&account).map(|s| (s.version, s.body.is_some()));
        if may_replace(current, version, body.is_some()) {
            slots.insert(
                account,
                Slot {
                    version,
                    body,
                    expires: now + ttl.min(MAX_TTL),
                },
            );
        }
    }

    // The trait's operations at a given instant, so tests can move the clock.
    fn get_at(&self, account: Uuid, now: Instant) -> Option<Versioned> {
        let found = {
            let slots = self.slots.lock().expect("cache lock");
            slots.get(&account).and_then(|s| {
                let fresh = now < s.expires;
                s.body.clone().filter(|_| fresh).map(|body| Versioned {
                    version: s.version,
                    body,
                })
            })
        };
        self.stats.count(found.is_some());
        found
    }

    fn put_at(&self, account: Uuid, value: Versioned, ttl: Duration, now: Instant) {
        self.write(account, value.version, Some(value.body), ttl, now);
    }

    fn changed_at(&self, account: Uuid, version: i64, now: Instant) {
        self.write(account, version, None, MARKER_TTL, now);
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.slots.lock().expect("cache lock").len()
    }
}

#[async_trait]
impl BalanceCache for InProcessCache {
    async fn get(&self, account: Uuid) -> Option<Versioned> {
        self.get_at(account, Instant::now())
    }

    async fn put(&self, account: Uuid, value: Versioned, ttl: Duration) {
        self.put_at(account, value, ttl, Instant::now());
    }

    async fn changed(&self, account: Uuid, version: i64) {
        self.changed_at(account, version, Instant::now());
    }

    async fn healthy(&self) -> Option<bool> {
        None
    }

    fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn backend(&self) -> &'static str {
        "in_process"
    }
}

/// Redis-backed cache. Each write is one Lua script so the version check and the write
/// are atomic across server processes. Calls are bounded by a short timeout. After a
/// failure the cache is bypassed (reads go to the database, fast) until a background
/// probe reaches Redis again; the probe then deletes every cached balance before the
/// cache is trusted again, because a "changed" marker lost during the outage could
/// otherwise leave an old value behind.
pub struct RedisCache {
    client: redis::Client,
    /// Set once Redis first answers (at start, or later by the probe).
    connection: OnceLock<redis::aio::ConnectionManager>,
    prefix: String,
    write_script: redis::Script,
    /// Set by any failed call; cleared by the probe after a flush.
    unavailable: AtomicBool,
    /// Writes that did not reach Redis since the last flush.
    lost_writes: AtomicU64,
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
/// How often the probe checks a Redis that failed: the longest a recovered Redis waits
/// before it is used again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

impl RedisCache {
    /// Connects and starts the recovery probe, which lives as long as the cache. Only a
    /// malformed URL is an error: a Redis that does not answer yet leaves the cache off
    /// until the probe reaches it, so a server can start during a Redis outage.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<Self>, redis::RedisError> {
        let cache = Arc::new(Self {
            client: redis::Client::open(url)?,
            connection: OnceLock::new(),
            prefix: prefix.to_owned(),
            write_script: redis::Script::new(WRITE_IF_NEWER),
            unavailable: AtomicBool::new(false),
            lost_writes: AtomicU64::new(0),
            stats: CacheStats::default(),
        });
        if !cache.open().await {
            cache.failed("not reachable at start");
        }
        tokio::spawn(probe(Arc::downgrade(&cache)));
        Ok(cache)
    }

    /// Opens the connection if it is not open yet; whether it is open.
    async fn open(&self) -> bool {
        if self.connection.get().is_some() {
            return true;
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let opening = redis::aio::ConnectionManager::new_with_config(self.client.clone(), config);
        match tokio::time::timeout(Duration::from_secs(2), opening).await {
            Ok(Ok(connection)) => {
                let _ = self.connection.set(connection);
                true
            }
            _ => false,
        }
    }

    /// The open connection; `None` (counted as a failure) before Redis first answered.
    fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        let connection = self.connection.get().cloned();
        if connection.is_none() {
            self.failed("not connected");
        }
        connection
    }

    fn key(&self, account: Uuid) -> String {
        format!("{}balance:{account}", self.prefix)
    }

    /// Whether Redis may be read: it answers, and no write was lost since the last flush.
    fn trusted(&self) -> bool {
        !self.unavailable.load(Ordering::Acquire) && self.lost_writes.load(Ordering::Acquire) == 0
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
        if !self.unavailable.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                "redis cache unavailable; serving balances from the database"
            );
        }
    }

    /// One probe step: when Redis failed and answers again, delete every cached balance,
    /// then trust it again — unless another write was lost meanwhile (next step retries).
    async fn recover(&self) {
        let lost = self.lost_writes.load(Ordering::Acquire);
        if !self.unavailable.load(Ordering::Acquire) && lost == 0 {
            return;
        }
        if !self.open().await {
            return;
        }
        let Some(mut con) = self.connection() else {
            return;
        };
        let pong: Option<String> = self.call(redis::cmd("PING").query_async(&mut con)).await;
        if pong.is_none() {
            return;
        }
        let Some(flushed) = self.flush().await else {
            return;
        };
        if self
            .lost_writes
            .compare_exchange(lost, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.unavailable.store(false, Ordering::Release);
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                flushed,
                "redis cache back; deleted the balances cached before the outage"
            );
        }
    }

    /// Deletes this prefix's cached balances (SCAN, not KEYS: Redis keeps serving).
    async fn flush(&self) -> Option<usize> {
        let mut con = self.connection()?;
        let pattern = format!("{}balance:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut flushed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .call(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut con),
                )
                .await?;
            if !keys.is_empty() {
                let _: () = self
                    .call(redis::cmd("UNLINK").arg(&keys).query_async(&mut con))
                    .await?;
                flushed += keys.len();
            }
            if next == 0 {
                return Some(flushed);
            }
            cursor = next;
        }
    }

    async fn write(&self, account: Uuid, version: i64, body: &str, ttl: Duration) {
        if self.unavailable.load(Ordering::Acquire) {
            self.lost_writes.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let Some(mut con) = self.connection() else {
            self.lost_writes.fetch_add(1, Ordering::AcqRel);
            return;
        };
        let mut invocation = self.write_script.key(self.key(account));
        let seconds = ttl.min(MAX_TTL).as_secs().max(1);
        invocation.arg(version).arg(body).arg(seconds);
        let written: Option<i64> = self.call(invocation.invoke_async(&mut con)).await;
        if written.is_none() {
            self.lost_writes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Runs until the cache is dropped.
async fn probe(cache: Weak<RedisCache>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cache) = cache.upgrade() else { return };
        cache.recover().await;
    }
}

#[async_trait]
impl BalanceCache for RedisCache {
    async fn get(&self, account: Uuid) -> Option<Versioned> {
        if !self.trusted() {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Some(mut con) = self.connection() else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
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
        self.stats.count(found.is_some());
        found
    }

    async fn put(&self, account: Uuid, value: Versioned, ttl: Duration) {
        self.write(account, value.version, &value.body, ttl).await;
    }

    async fn changed(&self, account: Uuid, version: i64) {
        self.write(account, version, "", MARKER_TTL).await;
    }

    /// Asks Redis, so a readiness check notices an outage even when no request has.
    async fn healthy(&self) -> Option<bool> {
        let Some(mut con) = self.connection.get().cloned() else {
            return Some(false);
        };
        let pong: Option<String> = self.call(redis::cmd("PING").query_async(&mut con)).await;
        Some(pong.is_some() && self.trusted())
    }

    fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_cache_drops_values_but_keeps_change_markers() {
        let cache = InProcessCache::with_capacity(3);
        let (a, b, c, d) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let view = |version: i64| Versioned {
            version,
            body: format!("v{version}"),
        };
        cache.put(a, view(1), MAX_TTL).await;
        cache.put(b, view(1), MAX_TTL).await;
        cache.changed(c, 5).await;
        cache.put(d, view(1), MAX_TTL).await; // full: values go, c's marker stays
        assert_eq!(cache.get(a).await, None);
        cache.put(c, view(4), MAX_TTL).await;
        assert_eq!(
            cache.get(c).await,
            None,
            "the marker still refuses version 4"
        );
        assert_eq!(cache.get(d).await.unwrap().body, "v1");
    }

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
                MAX_TTL,
            )
            .await;
        cache
            .put(
                id,
                Versioned {
                    version: 1,
                    body: "one".into(),
                },
                MAX_TTL,
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
                MAX_TTL,
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
                MAX_TTL,
            )
            .await;
        assert_eq!(cache.get(id).await.unwrap().body, "three");
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.stats().misses.load(Ordering::Relaxed), 2);
    }
}
