//! The barrier: AES-256-GCM over every secret value before it enters the log.
//!
//! Key hierarchy: the gatekeeper key (never stored; rebuilt from unseal keys
//! or a gatekeeper token for one call) wraps the root key; the root key wraps
//! the keychain; the keychain holds one AES-256-GCM encryption key per term.
//! While unsealed the barrier holds the root key and the keychain in memory so
//! it can rotate on its own when a term nears its encryption limit; sealing
//! wipes both.
//!
//! Value format: `version (1) | term (4, BE) | nonce (12) | ciphertext+tag`,
//! with the full storage key as AAD, so a ciphertext moved to another path or
//! namespace fails to decrypt. Architecture invariant: the barrier knows
//! nothing of storage, Raft or the API; callers hand it bytes and storage keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::keyspace;
use crate::secret::{self, Key32, NONCE_LEN};

/// Version byte of the value format.
pub const VALUE_FORMAT_V1: u8 = 1;
/// Header length: version, term, nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Default number of encryptions under one term before a forced rotation:
/// below 2^32, the bound for random 96-bit nonces.
pub const DEFAULT_ENCRYPTION_LIMIT: u64 = (1 << 32) - (1 << 20);

/// Errors of the barrier.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is sealed; nothing can be encrypted or decrypted.
    #[error("the barrier is sealed")]
    Sealed,
    /// A ciphertext does not authenticate under its key and storage path:
    /// tampered, truncated or moved.
    #[error("integrity check failed for a stored value")]
    Integrity,
    /// A ciphertext names a term this keychain does not have.
    #[error("stored value uses unknown key term {0}")]
    UnknownTerm(u32),
    /// The active term has reached its encryption limit; rotate first.
    #[error("the active encryption key reached its limit of {0} encryptions")]
    RotationRequired(u64),
    /// The root key does not open the keychain (wrong gatekeeper key).
    #[error("the keychain could not be opened with this key")]
    WrongKey,
}

/// One encryption key of the keychain.
#[derive(Serialize, Deserialize, Clone, Zeroize)]
#[zeroize(drop)]
struct TermKey {
    term: u32,
    key: [u8; 32],
    created_at_ms: u64,
}

/// The barrier's encryption keys, newest term active. Copy-on-write: a
/// rotation builds a new keychain and swaps it in.
#[derive(Serialize, Deserialize, Clone)]
pub struct Keychain {
    terms: Vec<TermKey>,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keychain(active term {})", self.active_term())
    }
}

impl Keychain {
    /// A keychain with one fresh key, term 1.
    pub fn first(now_ms: u64) -> Self {
        Keychain {
            terms: vec![TermKey {
                term: 1,
                key: *Key32::random().as_bytes(),
                created_at_ms: now_ms,
            }],
        }
    }

    /// This keychain plus one fresh key under the next term.
    pub fn rotated(&self, now_ms: u64) -> Self {
        let mut next = self.clone();
        next.terms.push(TermKey {
            term: self.active_term() + 1,
            key: *Key32::random().as_bytes(),
            created_at_ms: now_ms,
        });
        next
    }

    /// The term new writes use.
    pub fn active_term(&self) -> u32 {
        self.terms.last().map(|t| t.term).unwrap_or(0)
    }

    /// Every term, oldest first, with its creation time.
    pub fn terms(&self) -> Vec<(u32, u64)> {
        self.terms
            .iter()
            .map(|t| (t.term, t.created_at_ms))
            .collect()
    }

    fn key(&self, term: u32) -> Option<&[u8; 32]> {
        self.terms.iter().find(|t| t.term == term).map(|t| &t.key)
    }

    /// The keychain sealed under `root`, as stored under `keyspace::KEYCHAIN`.
    pub fn wrap(&self, root: &Key32) -> Vec<u8> {
        let plain = Zeroizing::new(bincode::serialize(self).expect("a keychain always serialises"));
        secret::seal(root, keyspace::KEYCHAIN, &plain)
    }

    /// Inverse of [`Keychain::wrap`].
    pub fn unwrap(root: &Key32, blob: &[u8]) -> Result<Self, BarrierError> {
        let plain = secret::open(root, keyspace::KEYCHAIN, blob).ok_or(BarrierError::WrongKey)?;
        let chain: Keychain = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(1 << 20)
            .deserialize(&plain)
            .map_err(|_| BarrierError::WrongKey)?;
        if chain.terms.is_empty() {
            return Err(BarrierError::WrongKey);
        }
        Ok(chain)
    }
}

use bincode::Options as _;

/// Wrap the root key under the gatekeeper key (stored under `keyspace::ROOT_KEY`).
pub fn wrap_root(gatekeeper_key: &Key32, root: &Key32) -> Vec<u8> {
    secret::seal(gatekeeper_key, keyspace::ROOT_KEY, root.as_bytes())
}

/// Unwrap the root key; `WrongKey` when the gatekeeper key does not match.
pub fn unwrap_root(gatekeeper_key: &Key32, wrapped: &[u8]) -> Result<Key32, BarrierError> {
    let plain =
        secret::open(gatekeeper_key, keyspace::ROOT_KEY, wrapped).ok_or(BarrierError::WrongKey)?;
    Key32::from_slice(&plain).ok_or(BarrierError::WrongKey)
}

struct Open {
    root: Key32,
    keychain: Arc<Keychain>,
    /// Encryptions made under the active term (stored count at open time
    /// plus every encryption since).
    active_usage: AtomicU64,
}

/// The barrier of one node.
pub struct Barrier {
    open: RwLock<Option<Arc<Open>>>,
    limit: u64,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Barrier(sealed: {})", self.is_sealed())
    }
}

impl Barrier {
    /// A sealed barrier that forces a rotation after `limit` encryptions per term.
    pub fn new(limit: u64) -> Self {
        Barrier {
            open: RwLock::new(None),
            limit: limit.max(1),
        }
    }

    /// Whether the barrier is sealed.
    pub fn is_sealed(&self) -> bool {
        self.current().is_none()
    }

    fn current(&self) -> Option<Arc<Open>> {
        self.open.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Open the barrier with the root key and the stored keychain blob;
    /// `usage` is the stored encryption count of the active term.
    pub fn open(
        &self,
        root: Key32,
        keychain_blob: &[u8],
        usage: impl Fn(u32) -> u64,
    ) -> Result<(), BarrierError> {
        let keychain = Keychain::unwrap(&root, keychain_blob)?;
        let used = usage(keychain.active_term());
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Open {
            root,
            keychain: Arc::new(keychain),
            active_usage: AtomicU64::new(used),
        }));
        Ok(())
    }

    /// Seal: drop the root key and keychain (their memory is zeroized on drop).
    pub fn seal(&self) {
        self.open.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The active term, when unsealed.
    pub fn active_term(&self) -> Option<u32> {
        self.current().map(|o| o.keychain.active_term())
    }

    /// Every term with its creation time, when unsealed.
    pub fn terms(&self) -> Option<Vec<(u32, u64)>> {
        self.current().map(|o| o.keychain.terms())
    }

    /// Encrypt `plaintext` for `storage_key`; returns the term used and the
    /// stored bytes. Fails with `RotationRequired` once the active term has
    /// been used `limit` times.
    pub fn encrypt(
        &self,
        storage_key: &[u8],
        plaintext: &[u8],
    ) -> Result<(u32, Vec<u8>), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let used = open.active_usage.fetch_add(1, Ordering::SeqCst);
        if used >= self.limit {
            open.active_usage.fetch_sub(1, Ordering::SeqCst);
            return Err(BarrierError::RotationRequired(self.limit));
        }
        let term = open.keychain.active_term();
        let key = open
            .keychain
            .key(term)
            .ok_or(BarrierError::UnknownTerm(term))?;
        let nonce: [u8; NONCE_LEN] = secret::random_bytes();
        let cipher = Aes256Gcm::new(key.into());
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: storage_key,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VALUE_FORMAT_V1);
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok((term, out))
    }

    /// The term a stored value was encrypted under, read from its header.
    pub fn term_of(stored: &[u8]) -> Option<u32> {
        if stored.len() < HEADER_LEN + TAG_LEN || stored[0] != VALUE_FORMAT_V1 {
            return None;
        }
        Some(u32::from_be_bytes(stored[1..5].try_into().ok()?))
    }

    /// Decrypt a value stored under `storage_key`.
    pub fn decrypt(
        &self,
        storage_key: &[u8],
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let term = Self::term_of(stored).ok_or(BarrierError::Integrity)?;
        let key = open
            .keychain
            .key(term)
            .ok_or(BarrierError::UnknownTerm(term))?;
        let nonce = &stored[5..HEADER_LEN];
        let cipher = Aes256Gcm::new(key.into());
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &stored[HEADER_LEN..],
                    aad: storage_key,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| BarrierError::Integrity)
    }

    /// A rotated keychain, sealed under the in-memory root key, ready to be
    /// proposed. Nothing changes until [`Barrier::install`] is called with it.
    pub fn prepare_rotation(&self, now_ms: u64) -> Result<(u32, Vec<u8>), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let next = open.keychain.rotated(now_ms);
        Ok((next.active_term(), next.wrap(&open.root)))
    }

    /// Install a committed keychain blob (after a rotation), reusing the
    /// in-memory root key; `usage` gives the stored count of its active term.
    pub fn install(
        &self,
        keychain_blob: &[u8],
        usage: impl Fn(u32) -> u64,
    ) -> Result<(), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let keychain = Keychain::unwrap(&open.root, keychain_blob)?;
        if keychain.active_term() == open.keychain.active_term() {
            return Ok(());
        }
        let used = usage(keychain.active_term());
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Open {
            root: open.root.clone(),
            keychain: Arc::new(keychain),
            active_usage: AtomicU64::new(used),
        }));
        Ok(())
    }

    /// For a rekey: a fresh root key, and the current keychain re-wrapped
    /// under it. Nothing changes until [`Barrier::replace_root`].
    pub fn prepare_rekey(&self) -> Result<(Key32, Vec<u8>), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let root = Key32::random();
        let blob = open.keychain.wrap(&root);
        Ok((root, blob))
    }

    /// Switch to a committed new root key (after a rekey).
    pub fn replace_root(&self, root: Key32) -> Result<(), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Open {
            root,
            keychain: open.keychain.clone(),
            active_usage: AtomicU64::new(open.active_usage.load(Ordering::SeqCst)),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(limit: u64) -> (Barrier, Key32) {
        let root = Key32::random();
        let blob = Keychain::first(1).wrap(&root);
        let b = Barrier::new(limit);
        b.open(root.clone(), &blob, |_| 0).unwrap();
        (b, root)
    }

    #[test]
    fn round_trip_and_format() {
        let (b, _) = opened(10);
        let (term, ct) = b.encrypt(b"kv/ns/a", b"hunter2").unwrap();
        assert_eq!(term, 1);
        assert_eq!(ct[0], VALUE_FORMAT_V1);
        assert_eq!(Barrier::term_of(&ct), Some(1));
        assert_eq!(ct.len(), HEADER_LEN + 7 + TAG_LEN);
        assert_eq!(b.decrypt(b"kv/ns/a", &ct).unwrap().as_slice(), b"hunter2");
    }

    #[test]
    fn moved_or_tampered_ciphertext_fails_integrity() {
        let (b, _) = opened(10);
        let (_, ct) = b.encrypt(b"kv/ns/a", b"hunter2").unwrap();
        assert_eq!(b.decrypt(b"kv/ns/b", &ct), Err(BarrierError::Integrity));
        assert_eq!(b.decrypt(b"kv/other/a", &ct), Err(BarrierError::Integrity));
        let mut bad = ct.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(b.decrypt(b"kv/ns/a", &bad), Err(BarrierError::Integrity));
        assert_eq!(
            b.decrypt(b"kv/ns/a", &ct[..10]),
            Err(BarrierError::Integrity)
        );
    }

    #[test]
    fn sealed_barrier_refuses_everything() {
        let (b, _) = opened(10);
        let (_, ct) = b.encrypt(b"k", b"v").unwrap();
        b.seal();
        assert!(b.is_sealed());
        assert_eq!(b.encrypt(b"k", b"v"), Err(BarrierError::Sealed));
        assert_eq!(b.decrypt(b"k", &ct), Err(BarrierError::Sealed));
    }

    #[test]
    fn rotation_keeps_old_terms_readable_and_writes_new_term() {
        let (b, root) = opened(10);
        let (_, old) = b.encrypt(b"k", b"old").unwrap();
        let (term, blob) = b.prepare_rotation(2).unwrap();
        assert_eq!(term, 2);
        assert_eq!(b.active_term(), Some(1), "nothing changes before install");
        b.install(&blob, |_| 0).unwrap();
        let (t, new) = b.encrypt(b"k", b"new").unwrap();
        assert_eq!(t, 2);
        assert_eq!(b.decrypt(b"k", &old).unwrap().as_slice(), b"old");
        assert_eq!(b.decrypt(b"k", &new).unwrap().as_slice(), b"new");
        // A fresh barrier opened from the stored blob reads both.
        let b2 = Barrier::new(10);
        b2.open(root, &blob, |_| 0).unwrap();
        assert_eq!(b2.decrypt(b"k", &old).unwrap().as_slice(), b"old");
    }

    #[test]
    fn encryption_limit_forces_rotation() {
        let (b, _) = opened(2);
        b.encrypt(b"k", b"1").unwrap();
        b.encrypt(b"k", b"2").unwrap();
        assert_eq!(
            b.encrypt(b"k", b"3"),
            Err(BarrierError::RotationRequired(2))
        );
        let (_, blob) = b.prepare_rotation(5).unwrap();
        b.install(&blob, |_| 0).unwrap();
        assert_eq!(b.encrypt(b"k", b"3").unwrap().0, 2);
    }

    #[test]
    fn stored_usage_counts_toward_the_limit() {
        let root = Key32::random();
        let blob = Keychain::first(1).wrap(&root);
        let b = Barrier::new(3);
        b.open(root, &blob, |_| 3).unwrap();
        assert_eq!(
            b.encrypt(b"k", b"v"),
            Err(BarrierError::RotationRequired(3))
        );
    }

    #[test]
    fn wrong_keys_are_refused() {
        let root = Key32::random();
        let blob = Keychain::first(1).wrap(&root);
        let b = Barrier::new(3);
        assert_eq!(
            b.open(Key32::random(), &blob, |_| 0),
            Err(BarrierError::WrongKey)
        );
        assert!(b.is_sealed());
        let gk = Key32::random();
        let wrapped = wrap_root(&gk, &root);
        assert_eq!(
            unwrap_root(&gk, &wrapped).unwrap().as_bytes(),
            root.as_bytes()
        );
        assert!(unwrap_root(&Key32::random(), &wrapped).is_err());
    }

    #[test]
    fn rekey_rewraps_the_same_keychain() {
        let (b, _) = opened(10);
        let (_, ct) = b.encrypt(b"k", b"v").unwrap();
        let (root2, blob2) = b.prepare_rekey().unwrap();
        b.replace_root(root2.clone()).unwrap();
        let b2 = Barrier::new(10);
        b2.open(root2, &blob2, |_| 0).unwrap();
        assert_eq!(b2.decrypt(b"k", &ct).unwrap().as_slice(), b"v");
    }
}
