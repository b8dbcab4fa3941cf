//! What bounds the argon2 work of the token endpoint. Argon2 runs one hash at a time
//! (one reused 19 MiB buffer keeps memory low), so every hash an attacker causes delays
//! every genuine client. Two things cut the attacker's share:
//! - failed authentications are counted per client id and per source address, and a
//!   client id or address over its limit is refused before the database is asked or
//!   anything is hashed, until its one-minute window ends. Verifications take turns,
//!   and an attempt is asked again when its turn comes, so attempts already in flight
//!   do not get past the limit: a window costs at most `limit` hashes per process;
//! - a verified secret is remembered for an hour, so a client asking again costs a
//!   SHA-256 instead of a hash, and is served even while its id or address is limited. Only a digest of (client id, stored hash, presented
//!   secret) is kept: a rotated secret (another stored hash) or another presented secret
//!   never matches it, and the secret itself is never stored.

use crate::{AppError, AppResult};
use coalition_store::failures::{Counted, FailureCounter};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The window failed attempts are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a verified secret is remembered: as long as a till's token usually lives, so
/// a till asking for its next token is recognised without a hash even while an attacker
/// keeps its client id or its (proxy's) address over the limit.
const REMEMBERED_FOR: Duration = Duration::from_secs(3600);
/// Remembered verifications at most (only genuine clients get in, at most one entry per
/// client and secret in a minute); when full, the expired go, then all.
const REMEMBERED_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failed authentications one client id may have in a window.
    pub per_client: u64,
    /// Failed authentications one source address may have in a window; 0 counts none.
    pub per_address: u64,
}

pub struct TokenGuard {
    failures: Arc<dyn FailureCounter>,
    limits: FailureLimits,
    /// Random per process: the remembered digests say nothing outside it.
    salt: [u8; 32],
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    /// One verification at a time, in arrival order (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
    hashes: AtomicU64,
    refused: AtomicU64,
}

impl TokenGuard {
    pub fn new(failures: Arc<dyn FailureCounter>, limits: FailureLimits) -> Self {
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self {
            failures,
            limits,
            salt,
            remembered: Mutex::new(HashMap::new()),
            turn: tokio::sync::Mutex::new(()),
            hashes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Argon2 verifications the token endpoint ran (unknown client ids included).
    pub fn secret_hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Token requests refused because a client id or address was over its limit.
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The counters an attempt by `client_id` from `source` is counted against.
    pub(super) fn counted(&self, client_id: &str, source: Option<IpAddr>) -> Vec<Counted> {
        let client = hex::encode(&Sha256::digest(client_id.as_bytes())[..16]);
        let mut keys = vec![Counted {
            key: format!("client:{client}"),
            limit: self.limits.per_client,
        }];
        if let (Some(ip), true) = (source, self.limits.per_address > 0) {
            keys.push(Counted {
                key: format!("addr:{}", address_key(ip)),
                limit: self.limits.per_address,
            });
        }
        keys
    }

    /// Refuses, before any work, an attempt whose client id or address is limited.
    pub(super) async fn refuse_if_limited(&self, counted: &[Counted]) -> AppResult<()> {
        match self.failures.limited(counted).await {
            None => Ok(()),
            Some(wait) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(AppError::RateLimited {
                    retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        }
    }

    pub(super) async fn failed(&self, counted: &[Counted]) {
        self.failures.record(counted).await;
    }

    /// Waits for the turn to verify a secret.
    pub(super) async fn hashing_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    pub(super) fn hashing(&self) {
        self.hashes.fetch_add(1, Ordering::Relaxed);
    }

    fn digest(&self, client_id: &str, stored_hash: &str, secret: &str) -> [u8; 32] {
        let presented = Sha256::digest(secret.as_bytes());
        let mut digest = Sha256::new();
        digest.update(self.salt);
        // Length-prefixed, so no two different triples run together into the same bytes.
        for part in [client_id.as_bytes(), stored_hash.as_bytes(), &presented[..]] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        digest.finalize().into()
    }

    /// Whether this very secret was verified against this very stored hash lately.
    pub(super) fn remembers(&self, client_id: &str, stored_hash: &str, secret: &str) -> bool {
        let digest = self.digest(client_id, stored_hash, secret);
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered
            .get(&digest)
            .is_some_and(|until| *until > Instant::now())
    }

    pub(super) fn remember(&self, client_id: &str, stored_hash: &str, secret: &str) {
        let digest = self.digest(client_id, stored_hash, secret);
        let now = Instant::now();
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= REMEMBERED_CAPACITY {
            remembered.retain(|_, until| *until > now);
        }
        if remembered.len() >= REMEMBERED_CAPACITY {
            remembered.clear();
        }
        remembered.insert(digest, now + REMEMBERED_FOR);
    }
}

/// An IPv4 address as it is; an IPv6 address by its /64, which one subscriber usually
/// holds whole (counting single addresses would let it try 2^64 times).
fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_store::failures::InProcessFailures;

    fn guard() -> TokenGuard {
        let failures = Arc::new(InProcessFailures::new(FAILURE_WINDOW));
        TokenGuard::new(
            failures,
            FailureLimits {
                per_client: 3,
                per_address: 5,
            },
        )
    }

    #[test]
    fn a_remembered_secret_matches_only_the_same_client_hash_and_secret() {
        let g = guard();
        g.remember("cl_a", "$argon2id$one", "cs_right");
        assert!(g.remembers("cl_a", "$argon2id$one", "cs_right"));
        assert!(!g.remembers("cl_a", "$argon2id$one", "cs_wrong"));
        assert!(!g.remembers("cl_a", "$argon2id$rotated", "cs_right"));
        assert!(!g.remembers("cl_b", "$argon2id$one", "cs_right"));
        // Lengths are part of the digest: moving bytes between parts is another triple.
        assert!(!g.remembers("cl_a$", "argon2id$one", "cs_right"));
        // Another process (another salt) remembers nothing of it.
        assert!(!guard().remembers("cl_a", "$argon2id$one", "cs_right"));
    }

    #[test]
    fn the_remembered_set_stays_bounded() {
        let g = guard();
        for n in 0..REMEMBERED_CAPACITY + 10 {
            g.remember(&format!("cl_{n}"), "h", "s");
        }
        assert!(g.remembered.lock().unwrap().len() <= REMEMBERED_CAPACITY);
    }

    #[test]
    fn attempts_count_per_client_and_per_address_with_ipv6_by_its_64() {
        let g = guard();
        let v6a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let a = g.counted("cl_x", Some(v6a));
        let b = g.counted("cl_x", Some(v6b));
        assert_eq!(a, b);
        assert_eq!(a[1].key, "addr:2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(g.counted("cl_x", Some(mapped))[1].key, "addr:192.0.2.7");
        assert_eq!(g.counted("cl_x", None).len(), 1);
        assert_ne!(g.counted("cl_y", None), g.counted("cl_x", None));
        let no_addresses = TokenGuard::new(
            Arc::new(InProcessFailures::new(FAILURE_WINDOW)),
            FailureLimits {
                per_client: 3,
                per_address: 0,
            },
        );
        assert_eq!(no_addresses.counted("cl_x", Some(v6a)).len(), 1);
    }

    #[tokio::test]
    async fn a_limited_attempt_is_refused_with_the_seconds_to_wait() {
        let g = guard();
        let counted = g.counted("cl_x", Some("192.0.2.1".parse().unwrap()));
        for _ in 0..3 {
            assert!(g.refuse_if_limited(&counted).await.is_ok());
            g.failed(&counted).await;
        }
        match g.refuse_if_limited(&counted).await {
            Err(AppError::RateLimited {
                retry_after_seconds,
            }) => assert!((1..=60).contains(&retry_after_seconds)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(g.refusals(), 1);
    }
}
