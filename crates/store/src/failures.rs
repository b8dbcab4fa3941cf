//! Counters of failed attempts (client authentications at the token endpoint) in fixed
//! windows: a key's window opens at its first failure and lasts `window`; a key is
//! limited while its window holds `limit` failures or more. Redis shares the counts
//! between server processes; without Redis (or while it fails) they live in this
//! process. The caller asks before doing expensive work, so a limited key costs nothing.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A counted key and the failures it may have in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub key: String,
    pub limit: u64,
}

#[async_trait]
pub trait FailureCounter: Send + Sync {
    /// How long the most limited of `keys` stays limited; `None` when none is.
    async fn limited(&self, keys: &[Counted]) -> Option<Duration>;
    /// Counts one failure against each of `keys`.
    async fn record(&self, keys: &[Counted]);
}

struct Window {
    failures: u64,
    ends: Instant,
}

/// Counts in this process, in a bounded map.
pub struct InProcessFailures {
    window: Duration,
    capacity: usize,
    windows: Mutex<HashMap<String, Window>>,
}

impl InProcessFailures {
    pub fn new(window: Duration) -> Self {
        Self::with_capacity(window, 50_000)
    }

    pub fn with_capacity(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn wait(&self, keys: &[Counted], now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| windows.get(&k.key).map(|w| (k, w)))
            .filter(|(k, w)| w.ends > now && w.failures >= k.limit)
            .map(|(_, w)| w.ends - now)
            .max()
    }

    fn count(&self, keys: &[Counted], now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() + keys.len() > self.capacity {
            make_room(&mut windows, keys, self.capacity, now);
        }
        for k in keys {
            if windows.len() >= self.capacity && !windows.contains_key(&k.key) {
                continue; // every entry is a limited key still in its window: keep those
            }
            let fresh = Window {
                failures: 0,
                ends: now + self.window,
            };
            let window = windows.entry(k.key.clone()).or_insert(fresh);
            if window.ends <= now {
                window.failures = 0;
                window.ends = now + self.window;
            }
            window.failures += 1;
        }
    }
}

/// Drops ended windows, then (under a flood of distinct keys) the ones below their limit,
/// which limit nothing yet. The limits of keys not at hand are unknown; the smallest of
/// `keys` stands in for them (there are only two kinds of key).
fn make_room(
    windows: &mut HashMap<String, Window>,
    keys: &[Counted],
    capacity: usize,
    now: Instant,
) {
    windows.retain(|_, w| w.ends > now);
    if windows.len() + keys.len() > capacity {
        let smallest = keys.iter().map(|k| k.limit).min().unwrap_or(1);
        windows.retain(|_, w| w.failures >= smallest);
    }
}

#[async_trait]
impl FailureCounter for InProcessFailures {
    async fn limited(&self, keys: &[Counted]) -> Option<Duration> {
        self.wait(keys, Instant::now())
    }

    async fn record(&self, keys: &[Counted]) {
        self.count(keys, Instant::now());
    }
}

/// Counts in Redis under `{prefix}failures:`, shared by every process on that Redis.
/// Any failed call uses the in-process counts instead (logged once per outage), so a
/// Redis outage neither opens the gate wide nor stops tokens from being issued. After a
/// failure Redis is left alone for a moment, so that an unreachable Redis does not add
/// its timeout to every token request.
pub struct RedisFailures {
    client: redis::Client,
    /// Set once Redis first answers; the connection manager reconnects by itself after.
    connection: Arc<OnceLock<redis::aio::ConnectionManager>>,
    /// Redis is not tried before this instant (set by a failure).
    paused_until: Mutex<Instant>,
    prefix: String,
    window: Duration,
    check: redis::Script,
    count: redis::Script,
    fallback: InProcessFailures,
    failing: AtomicBool,
}

/// KEYS: the counters; ARGV: their limits. Returns the longest PTTL among the limited.
const CHECK: &str = r#"
local wait = 0
for i, key in ipairs(KEYS) do
  local failures = tonumber(redis.call('GET', key) or '0')
  if failures >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl > wait then wait = ttl end
  end
end
return wait
"#;

/// KEYS: the counters; ARGV[1]: the window in milliseconds. The window opens with the
/// first failure (a counter that somehow lost its expiry gets one again).
const COUNT: &str = r#"
for _, key in ipairs(KEYS) do
  local failures = redis.call('INCR', key)
  if failures == 1 or redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
return 0
"#;

const CALL_TIMEOUT: Duration = Duration::from_millis(250);
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl RedisFailures {
    /// Only a malformed URL is an error: an unreachable Redis is tried again later, the
    /// in-process counts standing in meanwhile.
    pub async fn connect(
        url: &str,
        prefix: &str,
        window: Duration,
    ) -> Result<Self, redis::RedisError> {
        let failures = Self {
            client: redis::Client::open(url)?,
            connection: Arc::new(OnceLock::new()),
            paused_until: Mutex::new(Instant::now()),
            prefix: format!("{prefix}failures:"),
            window,
            check: redis::Script::new(CHECK),
            count: redis::Script::new(COUNT),
            fallback: InProcessFailures::new(window),
            failing: AtomicBool::new(false),
        };
        match crate::open_redis(failures.client.clone(), CALL_TIMEOUT).await {
            Some(connection) => {
                let _ = failures.connection.set(connection);
            }
            None => {
                failures.failed::<()>("not reachable at start");
            }
        }
        Ok(failures)
    }

    /// The connection; before Redis first answered, `None` while another attempt to
    /// connect runs in the background (a request does not wait for it).
    fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        if let Some(connection) = self.connection.get() {
            return Some(connection.clone());
        }
        let (client, slot) = (self.client.clone(), self.connection.clone());
        tokio::spawn(async move {
            if let Some(connection) = crate::open_redis(client, CALL_TIMEOUT).await {
                let _ = slot.set(connection);
            }
        });
        self.failed("not connected")
    }

    fn paused(&self) -> bool {
        Instant::now() < *self.paused_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed<T>(&self, why: &str) -> Option<T> {
        *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Instant::now() + PAUSE_AFTER_FAILURE;
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                "redis unreachable: counting failed token requests in this process"
            );
        }
        None
    }

    fn keys(&self, keys: &[Counted]) -> Vec<String> {
        keys.iter()
            .map(|k| format!("{}{}", self.prefix, k.key))
            .collect()
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        if self.paused() {
            return None;
        }
        let mut connection = self.connection()?;
        match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(value)) => {
                self.failing.store(false, Ordering::Release);
                Some(value)
            }
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("timed out"),
        }
    }
}

#[async_trait]
impl FailureCounter for RedisFailures {
    async fn limited(&self, keys: &[Counted]) -> Option<Duration> {
        if keys.is_empty() {
            return None;
        }
        let mut invocation = self.check.prepare_invoke();
        for (key, counted) in self.keys(keys).into_iter().zip(keys) {
            invocation.key(key).arg(counted.limit);
        }
        match self.run::<u64>(invocation).await {
            Some(0) => None,
            Some(millis) => Some(Duration::from_millis(millis)),
            None => self.fallback.limited(keys).await,
        }
    }

    async fn record(&self, keys: &[Counted]) {
        if keys.is_empty() {
            return;
        }
        let mut invocation = self.count.prepare_invoke();
        for key in self.keys(keys) {
            invocation.key(key);
        }
        invocation.arg(self.window.as_millis() as u64);
        if self.run::<i64>(invocation).await.is_none() {
            self.fallback.record(keys).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, limit: u64) -> Counted {
        Counted {
            key: name.into(),
            limit,
        }
    }

    #[test]
    fn a_key_is_limited_from_its_limit_until_its_window_ends() {
        let counter = InProcessFailures::new(Duration::from_secs(60));
        let start = Instant::now();
        let (client, address) = (key("client:a", 3), key("addr:1", 5));
        let both = [client.clone(), address.clone()];
        for _ in 0..2 {
            counter.count(&both, start);
        }
        assert_eq!(counter.wait(&both, start), None);
        counter.count(&both, start);
        let later = start + Duration::from_secs(10);
        assert_eq!(counter.wait(&both, later), Some(Duration::from_secs(50)));
        // The address alone is below its limit; another client from it is not limited.
        assert_eq!(counter.wait(&[key("client:b", 3), address], later), None);
        // A new window starts after the old one ends.
        let next_minute = start + Duration::from_secs(61);
        assert_eq!(counter.wait(&both, next_minute), None);
        counter.count(std::slice::from_ref(&client), next_minute);
        assert_eq!(counter.wait(&[client], next_minute), None);
    }

    #[tokio::test]
    async fn without_redis_the_counts_live_in_this_process() {
        // Nothing listens on port 1: connecting fails at once.
        let counter = RedisFailures::connect("redis://127.0.0.1:1", "t:", Duration::from_secs(60))
            .await
            .unwrap();
        let keys = [key("client:a", 2)];
        counter.record(&keys).await;
        assert_eq!(counter.limited(&keys).await, None);
        counter.record(&keys).await;
        assert!(counter.limited(&keys).await.is_some());
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_the_map_bounded_and_the_limited_keys() {
        let counter = InProcessFailures::with_capacity(Duration::from_secs(60), 100);
        let now = Instant::now();
        let target = [key("client:target", 2)];
        counter.count(&target, now);
        counter.count(&target, now);
        for n in 0..1_000 {
            counter.count(&[key(&format!("client:{n}"), 2)], now);
        }
        assert!(counter.windows.lock().unwrap().len() <= 100);
        assert!(counter.wait(&target, now).is_some());
    }
}
