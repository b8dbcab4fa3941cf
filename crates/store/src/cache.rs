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
/// How long a "changed" marker (the newest version a writer reported) is remembered.
/// A marker for version N refuses views older than N that were read before the write
/// and are put after it. It lives as long as the longest-lived view: an older view then
/// gets past it only from a reader that stalled between its database read and its put
/// for longer than any view may be kept, i.e. a view already older than MAX_TTL when it
/// is stored. (At 60 s, a reader a minute late could put back a view that would then be
/// served for 5 minutes.) Evicting, expiring or flushing views, or filling the marker in
/// with a short-lived view, never shortens it.
const MARKER_TTL: Duration = MAX_TTL;

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

struct View {
    version: i64,
    body: String,
    expires: Instant,
}

/// The newest version a writer reported for an account, kept until `until`.
struct Change {
    version: i64,
    until: Instant,
}

/// Views and change markers are kept apart, each map bounded by the capacity: dropping a
/// view to make room never forgets a version a slow reader must not undercut.
#[derive(Default)]
struct Tables {
    views: HashMap<Uuid, View>,
    changes: HashMap<Uuid, Change>,
    /// Set when live markers had to be dropped for room: until then, an account the
    /// cache knows nothing about takes no view (its marker may be one of those dropped).
    forgot_until: Option<Instant>,
}

impl Tables {
    /// Whether a view of `version` read from the database may be stored: never older
    /// than a known version, and for the same version only where no view is cached yet.
    fn may_store(&self, account: Uuid, version: i64, now: Instant) -> bool {
        let marked = self.changes.get(&account).filter(|c| now < c.until);
        let cached = self.views.get(&account);
        if marked.is_none() && cached.is_none() {
            return self.forgot_until.is_none_or(|until| now >= until);
        }
        let marked_ok = marked.is_none_or(|c| version >= c.version);
        let cached_ok = cached
            .is_none_or(|v| version > v.version || (version == v.version && now >= v.expires));
        marked_ok && cached_ok
    }

    /// Room for one more view: expired views go first, then (when that is not enough)
    /// all of them. Nothing is forgotten: the markers stay.
    fn make_room_for_view(&mut self, account: Uuid, capacity: usize, now: Instant) {
        if self.views.len() < capacity || self.views.contains_key(&account) {
            return;
        }
        self.views.retain(|_, view| now < view.expires);
        if self.views.len() >= capacity {
            self.views.clear();
        }
    }

    /// Room for one more marker: expired markers go first; when live ones fill the map,
    /// all go, and until the last of them would have expired no view is taken for an
    /// account the cache knows nothing about. Memory stays bounded, at the price of
    /// database reads; never at the price of an old view.
    fn make_room_for_change(&mut self, account: Uuid, capacity: usize, now: Instant) {
        if self.changes.len() < capacity || self.changes.contains_key(&account) {
            return;
        }
        self.changes.retain(|_, change| now < change.until);
        if self.changes.len() >= capacity {
            tracing::warn!(
                capacity,
                "more balances changed within the marker lifetime than the cache holds; \
                 balances not cached yet are read from the database for a while"
            );
            self.changes.clear();
            self.forgot_until = Some(now + MARKER_TTL);
        }
    }
}

pub struct InProcessCache {
    tables: Mutex<Tables>,
    /// At most this many views, and this many change markers, are kept.
    capacity: usize,
    stats: CacheStats,
}

impl Default for InProcessCache {
    fn default() -> Self {
        Self::with_capacity(200_000)
    }
}

impl InProcessCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tables: Mutex::default(),
            capacity,
            stats: CacheStats::default(),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().expect("cache lock")
    }

    // The trait's operations at a given instant, so tests can move the clock.
    fn get_at(&self, account: Uuid, now: Instant) -> Option<Versioned> {
        let found = self.tables().views.get(&account).and_then(|view| {
            (now < view.expires).then(|| Versioned {
                version: view.version,
                body: view.body.clone(),
            })
        });
        self.stats.count(found.is_some());
        found
    }

    fn put_at(&self, account: Uuid, value: Versioned, ttl: Duration, now: Instant) {
        let mut tables = self.tables();
        if !tables.may_store(account, value.version, now) {
            return;
        }
        tables.make_room_for_view(account, self.capacity, now);
        let view = View {
            version: value.version,
            body: value.body,
            expires: now + ttl.min(MAX_TTL),
        };
        tables.views.insert(account, view);
    }

    fn changed_at(&self, account: Uuid, version: i64, now: Instant) {
        let mut tables = self.tables();
        if tables
            .views
            .get(&account)
            .is_some_and(|v| v.version < version)
        {
            tables.views.remove(&account);
        }
        let newer_known = tables
            .changes
            .get(&account)
            .is_some_and(|c| now < c.until && c.version > version);
        if newer_known {
            return;
        }
        tables.make_room_for_change(account, self.capacity, now);
        let until = now + MARKER_TTL;
        tables.changes.insert(account, Change { version, until });
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        let tables = self.tables();
        tables.views.len() + tables.changes.len()
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
/// probe reaches Redis again; the probe then deletes every cached view before the cache
/// is trusted again, because a "changed" marker lost during the outage could otherwise
/// leave an old view behind. Markers live in keys of their own, which the flush keeps:
/// a marker is never wrong, and it keeps refusing views read before its write.
pub struct RedisCache {
    client: redis::Client,
    /// Set once Redis first answers (at start, or later by the probe).
    connection: OnceLock<redis::aio::ConnectionManager>,
    prefix: String,
    put_script: redis::Script,
    changed_script: redis::Script,
    /// Set by any failed call; cleared by the probe after a flush.
    unavailable: AtomicBool,
    /// Whether Redis answered last time we asked: set by the probe's PING, cleared by a
    /// failed marker. While the cache is off, changes are still marked when it is set,
    /// without waiting for a timeout on every write of an outage when it is not.
    answering: AtomicBool,
    /// "Changed" markers that did not reach Redis since the last flush. (A view that
    /// was not stored is only a later miss; a lost marker can leave an old view behind.)
    lost_changes: AtomicU64,
    stats: CacheStats,
}

/// Stores a view (KEYS[1]: hash v, b) unless the marker (KEYS[2]) or the cached view
/// knows a newer version, or the view of this version is cached already.
/// ARGV: version, body, milliseconds to live.
const PUT_IF_NEWEST: &str = r#"
local version = tonumber(ARGV[1])
local marked = tonumber(redis.call('GET', KEYS[2]))
if marked and version < marked then return 0 end
local cached = tonumber(redis.call('HGET', KEYS[1], 'v'))
if cached and version <= cached then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Records that a version exists (KEYS[2], unless a newer one is recorded) and deletes
/// an older view (KEYS[1]). ARGV: version, seconds the marker lives.
const MARK_CHANGED: &str = r#"
local version = tonumber(ARGV[1])
local marked = tonumber(redis.call('GET', KEYS[2]))
if not marked or version >= marked then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
local cached = tonumber(redis.call('HGET', KEYS[1], 'v'))
if cached and cached < version then redis.call('DEL', KEYS[1]) end
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
        let cache = Self::connect_without_probe(url, prefix).await?;
        tokio::spawn(probe(Arc::downgrade(&cache)));
        Ok(cache)
    }

    /// The cache with no recovery probe: once off, it stays off (tests hold it there).
    async fn connect_without_probe(
        url: &str,
        prefix: &str,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let cache = Arc::new(Self {
            client: redis::Client::open(url)?,
            connection: OnceLock::new(),
            prefix: prefix.to_owned(),
            put_script: redis::Script::new(PUT_IF_NEWEST),
            changed_script: redis::Script::new(MARK_CHANGED),
            unavailable: AtomicBool::new(false),
            answering: AtomicBool::new(true),
            lost_changes: AtomicU64::new(0),
            stats: CacheStats::default(),
        });
        if !cache.open().await {
            cache.answering.store(false, Ordering::Release);
            cache.failed("not reachable at start");
        }
        Ok(cache)
    }

    /// Opens the connection if it is not open yet; whether it is open.
    async fn open(&self) -> bool {
        if self.connection.get().is_some() {
            return true;
        }
        match crate::open_redis(self.client.clone(), CALL_TIMEOUT).await {
            Some(connection) => {
                let _ = self.connection.set(connection);
                true
            }
            None => false,
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

    /// The key of an account's cached view; the flush deletes these.
    fn view_key(&self, account: Uuid) -> String {
        format!("{}balance:{account}", self.prefix)
    }

    /// The key of an account's "changed" marker (not matched by the flush's pattern).
    fn marker_key(&self, account: Uuid) -> String {
        format!("{}balance-version:{account}", self.prefix)
    }

    /// Whether Redis may be read: it answers, and no change was lost since the last flush.
    fn trusted(&self) -> bool {
        !self.unavailable.load(Ordering::Acquire) && self.lost_changes.load(Ordering::Acquire) == 0
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

    /// One probe step: when Redis failed and answers again, delete every cached view,
    /// then trust it again — unless another change was lost meanwhile (next step retries).
    async fn recover(&self) {
        let lost = self.lost_changes.load(Ordering::Acquire);
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
        self.answering.store(pong.is_some(), Ordering::Release);
        if pong.is_none() {
            return;
        }
        let Some(flushed) = self.flush().await else {
            return;
        };
        if self
            .lost_changes
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

    /// Deletes this prefix's cached views, keeping the markers (SCAN, not KEYS: Redis
    /// keeps serving).
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

    /// Stores a view, unless the cache is off: a view is only a saving, not worth a
    /// call that may wait for the timeout.
    async fn store(&self, account: Uuid, value: &Versioned, ttl: Duration) {
        if self.unavailable.load(Ordering::Acquire) {
            return;
        }
        let Some(mut con) = self.connection() else {
            return;
        };
        let mut invocation = self.put_script.key(self.view_key(account));
        invocation.key(self.marker_key(account));
        // Milliseconds: a view that is true for less than a second (a hold about to
        // lapse, a lot about to expire) must not be kept for a whole one.
        let millis = ttl.min(MAX_TTL).as_millis().max(1) as u64;
        invocation.arg(value.version).arg(&value.body).arg(millis);
        let _: Option<i64> = self.call(invocation.invoke_async(&mut con)).await;
    }

    /// Marks a change, also while the cache is off for this process as long as Redis
    /// answers it: other processes may trust Redis again already (their probe flushed
    /// first) and would serve the view from before this write until this process's own
    /// flush. Only a marker that does not reach Redis is lost (and makes the flush
    /// needed); the flush when the probe gets through still happens.
    async fn mark(&self, account: Uuid, version: i64) {
        let off = self.unavailable.load(Ordering::Acquire);
        if off && !self.answering.load(Ordering::Acquire) {
            self.lost_changes.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let Some(mut con) = self.connection() else {
            self.lost_changes.fetch_add(1, Ordering::AcqRel);
            return;
        };
        let mut invocation = self.changed_script.key(self.view_key(account));
        invocation.key(self.marker_key(account));
        invocation.arg(version).arg(MARKER_TTL.as_secs());
        let marked: Option<i64> = self.call(invocation.invoke_async(&mut con)).await;
        if marked.is_none() {
            self.answering.store(false, Ordering::Release);
            self.lost_changes.fetch_add(1, Ordering::AcqRel);
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
                    .arg(self.view_key(account))
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
        self.store(account, &value, ttl).await;
    }

    async fn changed(&self, account: Uuid, version: i64) {
        self.mark(account, version).await;
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

    fn view(version: i64) -> Versioned {
        Versioned {
            version,
            body: format!("v{version}"),
        }
    }

    fn accounts<const N: usize>() -> [Uuid; N] {
        std::array::from_fn(|_| Uuid::new_v4())
    }

    #[test]
    fn a_full_cache_never_forgets_the_version_of_a_view_that_filled_in_a_change_marker() {
        let cache = InProcessCache::with_capacity(2);
        let now = Instant::now();
        let [x, y, z] = accounts();
        cache.changed_at(x, 5, now);
        cache.put_at(x, view(5), MAX_TTL, now); // a reader fills the marker in
        cache.put_at(y, view(1), MAX_TTL, now);
        cache.put_at(z, view(1), MAX_TTL, now); // full: views go
                                                // A slow reader that read version 4 before the write puts it now.
        cache.put_at(x, view(4), MAX_TTL, now);
        assert_eq!(cache.get_at(x, now), None, "version 4 came back");
    }

    #[test]
    fn a_change_marker_outlives_the_longest_lived_view() {
        let cache = InProcessCache::with_capacity(2);
        let [x, y, z] = accounts();
        let written = Instant::now();
        cache.changed_at(x, 5, written);
        // A reader that read version 4 before the write puts it just before a view put
        // at the time of the write would have expired; meanwhile the cache filled up.
        let late = written + MAX_TTL - Duration::from_secs(1);
        cache.put_at(y, view(1), MAX_TTL, late);
        cache.put_at(z, view(1), MAX_TTL, late);
        cache.put_at(x, view(4), MAX_TTL, late);
        assert_eq!(cache.get_at(x, late), None, "version 4 came back");
    }

    #[test]
    fn a_short_lived_view_does_not_shorten_the_life_of_the_marker_it_filled_in() {
        let cache = InProcessCache::with_capacity(2);
        let [x, y, z] = accounts();
        let written = Instant::now();
        cache.changed_at(x, 5, written);
        cache.put_at(x, view(5), Duration::from_secs(10), written);
        let later = written + Duration::from_secs(120);
        assert_eq!(cache.get_at(x, later), None, "the view expired");
        cache.put_at(y, view(1), MAX_TTL, later);
        cache.put_at(z, view(1), MAX_TTL, later);
        cache.put_at(x, view(4), MAX_TTL, later);
        assert_eq!(cache.get_at(x, later), None, "version 4 came back");
    }

    #[test]
    fn change_markers_are_bounded_too() {
        let cache = InProcessCache::with_capacity(4);
        let now = Instant::now();
        for account in accounts::<100>() {
            cache.changed_at(account, 1, now);
        }
        assert!(cache.entries() <= 8, "{} entries", cache.entries());
    }

    #[test]
    fn while_a_forgotten_change_could_matter_no_unknown_account_takes_a_view() {
        let cache = InProcessCache::with_capacity(2);
        let [a, b, c, d] = accounts();
        let now = Instant::now();
        cache.changed_at(a, 5, now);
        cache.changed_at(b, 5, now);
        cache.changed_at(c, 5, now); // more changes than room: one is forgotten
        assert!(cache.entries() <= 4, "{} entries", cache.entries());
        for account in [a, b, c] {
            cache.put_at(account, view(4), MAX_TTL, now);
            assert_eq!(cache.get_at(account, now), None, "version 4 was taken");
        }
        // An account never changed is not cached either while a forgotten marker lives...
        cache.put_at(d, view(1), MAX_TTL, now);
        assert_eq!(cache.get_at(d, now), None);
        // ...and is once any forgotten marker would have expired.
        let later = now + MARKER_TTL;
        cache.put_at(d, view(1), MAX_TTL, later);
        assert_eq!(cache.get_at(d, later), Some(view(1)));
    }

    #[test]
    fn a_full_cache_drops_views_but_keeps_change_markers() {
        let cache = InProcessCache::with_capacity(2);
        let [a, b, c, d] = accounts();
        let now = Instant::now();
        cache.changed_at(c, 5, now);
        cache.put_at(a, view(1), MAX_TTL, now);
        cache.put_at(b, view(1), MAX_TTL, now);
        cache.put_at(d, view(1), MAX_TTL, now); // full: views go, c's marker stays
        assert_eq!(cache.get_at(a, now), None);
        cache.put_at(c, view(4), MAX_TTL, now);
        assert_eq!(
            cache.get_at(c, now),
            None,
            "the marker still refuses version 4"
        );
        assert_eq!(cache.get_at(d, now), Some(view(1)));
        assert!(cache.entries() <= 4, "{} entries", cache.entries());
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

    // Redis: these run when TEST_REDIS_URL is set (the PostgreSQL + Redis pass of CI).

    async fn redis_cache() -> Option<(Arc<RedisCache>, String)> {
        let url = crate::test_redis_url()?;
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        let cache = RedisCache::connect(&url, &prefix).await.expect("redis url");
        assert!(cache.trusted(), "TEST_REDIS_URL {url} does not answer");
        Some((cache, prefix))
    }

    /// The longest any key of this account will live in Redis, in seconds.
    async fn longest_ttl(cache: &RedisCache, account: Uuid) -> i64 {
        let mut con = cache.connection().unwrap();
        let pattern = format!("{}*{account}*", cache.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut con)
            .await
            .unwrap();
        let mut longest = -2;
        for key in keys {
            let ttl: i64 = redis::cmd("TTL")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            longest = longest.max(ttl);
        }
        longest
    }

    #[tokio::test]
    async fn redis_a_change_marker_outlives_the_longest_lived_view() {
        let Some((cache, _)) = redis_cache().await else {
            return;
        };
        let [x] = accounts();
        cache.changed(x, 5).await;
        let marked = longest_ttl(&cache, x).await;
        assert!(
            marked >= MAX_TTL.as_secs() as i64 - 1,
            "marker lives {marked} s"
        );
        cache.put(x, view(5), Duration::from_secs(10)).await;
        assert_eq!(cache.get(x).await, Some(view(5)));
        let filled = longest_ttl(&cache, x).await;
        assert!(
            filled >= MAX_TTL.as_secs() as i64 - 1,
            "filled in, lives {filled} s"
        );
    }

    #[tokio::test]
    async fn redis_a_flush_deletes_views_but_keeps_change_markers() {
        let Some((cache, _)) = redis_cache().await else {
            return;
        };
        let [x] = accounts();
        cache.changed(x, 5).await;
        cache.put(x, view(5), MAX_TTL).await;
        assert_eq!(cache.flush().await, Some(1));
        assert_eq!(cache.get(x).await, None, "the view is gone");
        // A slow reader that read version 4 before the write puts it after the flush.
        cache.put(x, view(4), MAX_TTL).await;
        assert_eq!(cache.get(x).await, None, "version 4 came back");
    }

    #[tokio::test]
    async fn redis_a_process_that_considers_the_cache_unavailable_still_marks_its_changes() {
        let Some((peer, prefix)) = redis_cache().await else {
            return;
        };
        let url = std::env::var("TEST_REDIS_URL").unwrap();
        // No probe: the writer must stay "not recovered yet" for the whole test, which a
        // probe every 250 ms would end at any moment.
        let writer = RedisCache::connect_without_probe(&url, &prefix)
            .await
            .unwrap();
        let [x] = accounts();
        // The peer has recovered and caches version 1; the writer has not recovered yet
        // (its probe has not flushed), though Redis answers it.
        peer.put(x, view(1), MAX_TTL).await;
        assert_eq!(peer.get(x).await, Some(view(1)));
        writer.unavailable.store(true, Ordering::Release);
        writer.changed(x, 2).await;
        assert_eq!(peer.get(x).await, None, "the peer serves version 1");
        peer.put(x, view(1), MAX_TTL).await;
        assert_eq!(peer.get(x).await, None, "a slow reader put version 1 back");
        assert!(!writer.trusted(), "the writer still waits for its flush");
    }
}
