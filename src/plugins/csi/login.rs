//! The provider's memory of the access tokens it minted for pods: a Mount
//! of a pod whose kstash token is still fresh reads with that token instead
//! of logging in again.
//!
//! Invariants:
//! - An entry answers only the same pod (uid, namespace, ServiceAccount)
//!   logging in the same way (kstash addresses, namespace, role, audience)
//!   *and* presenting the same ServiceAccount token: the entry keeps a
//!   SHA-256 digest of that token and compares it in constant time, so
//!   knowing a pod's uid is not enough to borrow its kstash token.
//! - A token is used only until [`REUSE_FRACTION`] of its lifetime has
//!   passed, and never past its expiry less [`EXPIRY_MARGIN`].
//! - The cache holds at most its capacity (expired entries go first, then
//!   the least recently used) and lives in memory only: tokens are
//!   [`SecretString`]s, zeroized when dropped, never written anywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::secret::{ct_eq, hash_secret, SecretString};

/// Default capacity: pods per node are few (110 by default); several
/// volumes each still fit.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Most entries an operator may configure.
pub const MAX_CAPACITY: usize = 65_536;

/// Part of a token's lifetime during which it is reused (the rest is
/// left for the reads of a Mount that starts late in it).
pub const REUSE_FRACTION: f64 = 0.8;

/// A token is never reused this close to its expiry.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Who logs in, and how: one cache entry each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginKey {
    /// The pod's uid.
    pub pod_uid: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// The kstash addresses, as the class lists them.
    pub addresses: Vec<String>,
    /// The kstash namespace.
    pub namespace: String,
    /// The login role.
    pub role: String,
    /// The token audience.
    pub audience: String,
}

struct Entry {
    /// SHA-256 of the ServiceAccount token the login used.
    presented: [u8; 32],
    token: SecretString,
    /// Reused until then.
    reuse_until: Instant,
    last_used: Instant,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh token of the same pod and ServiceAccount token.
    Hit,
    /// Nothing for this pod and login.
    Miss,
    /// An entry, but stale or for another ServiceAccount token: replaced
    /// by the next login.
    Stale,
}

/// Access tokens by pod, bounded (see the module's invariants).
pub struct LoginCache {
    capacity: usize,
    entries: Mutex<HashMap<LoginKey, Entry>>,
}

impl std::fmt::Debug for LoginCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.len())
            .finish()
    }
}

impl LoginCache {
    /// An empty cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> LoginCache {
        LoginCache {
            capacity: capacity.clamp(1, MAX_CAPACITY),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LoginKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token for `key` when the same ServiceAccount token minted it
    /// and it is still fresh at `now`.
    pub fn get(
        &self,
        key: &LoginKey,
        presented: &SecretString,
        now: Instant,
    ) -> (Lookup, Option<SecretString>) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return (Lookup::Miss, None);
        };
        if now >= entry.reuse_until || !ct_eq(&entry.presented, &hash_secret(presented)) {
            return (Lookup::Stale, None);
        }
        entry.last_used = now;
        (Lookup::Hit, Some(entry.token.clone()))
    }

    /// Remember `token`, minted at `now` for `key` with `presented`, valid
    /// for `lifetime`. Returns how many entries were evicted to make room.
    pub fn put(
        &self,
        key: LoginKey,
        presented: &SecretString,
        token: SecretString,
        lifetime: Duration,
        now: Instant,
    ) -> usize {
        let reuse = lifetime
            .mul_f64(REUSE_FRACTION)
            .min(lifetime.saturating_sub(EXPIRY_MARGIN));
        if reuse.is_zero() {
            // Too short-lived to be worth keeping.
            self.lock().remove(&key);
            return 0;
        }
        let mut entries = self.lock();
        let mut evicted = 0;
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            let before = entries.len();
            entries.retain(|_, e| now < e.reuse_until);
            evicted = before - entries.len();
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                    evicted += 1;
                }
            }
        }
        entries.insert(
            key,
            Entry {
                presented: hash_secret(presented),
                token,
                reuse_until: now + reuse,
                last_used: now,
            },
        );
        evicted
    }

    /// Forget `key`'s token (kstash refused it: revoked or expired early).
    pub fn forget(&self, key: &LoginKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str) -> LoginKey {
        LoginKey {
            pod_uid: uid.into(),
            pod_namespace: "shop".into(),
            service_account: "web".into(),
            addresses: vec!["https://kstash:8200".into()],
            namespace: "shop".into(),
            role: "web".into(),
            audience: "kstash".into(),
        }
    }

    fn s(text: &str) -> SecretString {
        SecretString::new(text.into())
    }

    #[test]
    fn a_fresh_token_is_reused_for_the_same_pod_and_service_account_token() {
        let cache = LoginCache::new(8);
        let t0 = Instant::now();
        assert_eq!(cache.get(&key("a"), &s("sa-1"), t0).0, Lookup::Miss);
        cache.put(
            key("a"),
            &s("sa-1"),
            s("ks-1"),
            Duration::from_secs(100),
            t0,
        );
        let (found, token) = cache.get(&key("a"), &s("sa-1"), t0 + Duration::from_secs(79));
        assert_eq!(found, Lookup::Hit);
        assert_eq!(token.unwrap().expose(), "ks-1");
        // Another pod, another ServiceAccount token, another role: no.
        assert_eq!(cache.get(&key("b"), &s("sa-1"), t0).0, Lookup::Miss);
        assert_eq!(cache.get(&key("a"), &s("sa-2"), t0).0, Lookup::Stale);
        let mut other_role = key("a");
        other_role.role = "admin".into();
        assert_eq!(cache.get(&other_role, &s("sa-1"), t0).0, Lookup::Miss);
        let mut other_sa = key("a");
        other_sa.service_account = "db".into();
        assert_eq!(cache.get(&other_sa, &s("sa-1"), t0).0, Lookup::Miss);
    }

    #[test]
    fn a_token_past_its_reuse_window_or_forgotten_is_not_used() {
        let cache = LoginCache::new(8);
        let t0 = Instant::now();
        cache.put(key("a"), &s("sa"), s("ks"), Duration::from_secs(100), t0);
        assert_eq!(
            cache
                .get(&key("a"), &s("sa"), t0 + Duration::from_secs(80))
                .0,
            Lookup::Stale
        );
        // A short token keeps its margin from the expiry.
        cache.put(key("a"), &s("sa"), s("ks"), Duration::from_secs(20), t0);
        assert_eq!(
            cache
                .get(&key("a"), &s("sa"), t0 + Duration::from_secs(9))
                .0,
            Lookup::Hit
        );
        assert_eq!(
            cache
                .get(&key("a"), &s("sa"), t0 + Duration::from_secs(10))
                .0,
            Lookup::Stale
        );
        // Shorter than the margin: not kept at all.
        cache.put(key("a"), &s("sa"), s("ks"), Duration::from_secs(5), t0);
        assert!(cache.is_empty());
        cache.put(key("a"), &s("sa"), s("ks"), Duration::from_secs(100), t0);
        cache.forget(&key("a"));
        assert_eq!(cache.get(&key("a"), &s("sa"), t0).0, Lookup::Miss);
    }

    #[test]
    fn the_cache_is_bounded_expired_first_then_least_recently_used() {
        let cache = LoginCache::new(3);
        let t0 = Instant::now();
        let life = Duration::from_secs(100);
        cache.put(key("a"), &s("sa"), s("a"), life, t0);
        cache.put(key("b"), &s("sa"), s("b"), Duration::from_secs(20), t0);
        cache.put(key("c"), &s("sa"), s("c"), life, t0);
        // b's reuse window ended: it goes first.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(cache.put(key("d"), &s("sa"), s("d"), life, t1), 1);
        assert_eq!(cache.get(&key("b"), &s("sa"), t1).0, Lookup::Miss);
        // a is used, c is not: c is the least recently used.
        assert_eq!(cache.get(&key("a"), &s("sa"), t1).0, Lookup::Hit);
        assert_eq!(cache.put(key("e"), &s("sa"), s("e"), life, t1), 1);
        assert_eq!(cache.get(&key("c"), &s("sa"), t1).0, Lookup::Miss);
        assert_eq!(cache.len(), 3);
        // Replacing an entry evicts nothing.
        assert_eq!(cache.put(key("e"), &s("sa"), s("e2"), life, t1), 0);
        assert_eq!(cache.len(), 3);
        assert_eq!(LoginCache::new(0).capacity, 1);
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = LoginCache::new(2);
        cache.put(
            key("a"),
            &s("sa-secret"),
            s("ks-secret"),
            Duration::from_secs(100),
            Instant::now(),
        );
        let printed = format!("{cache:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
