//! The barrier: AES-256-GCM over every secret value before it enters the log.
//!
//! Key hierarchy: the gatekeeper key (never stored; rebuilt from unseal keys
//! or a gatekeeper token for one call) wraps the root key; the root key wraps
//! the keychain; the keychain holds one AES-256-GCM encryption key per term.
//! While unsealed the barrier holds the root key and the keychain in memory so
//! it can rotate on its own when a term nears its encryption limit; sealing
//! wipes both.
//!
//! Invariant 9 (AES-GCM limits), cluster-wide: the barrier encrypts only
//! inside a block of encryptions its node reserved through the log for the
//! active term ([`Barrier::grant`]); apply grants blocks so that the
//! reserved total of a term never passes the limit, whichever node asks.
//! A block is never reused: sealing, a restart or a rotation drops what is
//! left of it (counted as used). The barrier also never encrypts past its
//! own `limit` under a term, whatever a grant says.
//!
//! Value format: `version (1) | term (4, BE) | nonce (12) | ciphertext+tag`,
//! with the full storage key as AAD, so a ciphertext moved to another path or
//! namespace fails to decrypt. Architecture invariant: the barrier knows
//! nothing of storage, Raft or the API; callers hand it bytes and storage keys.

use std::sync::{Arc, Mutex, RwLock};

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
    /// This node holds no reserved encryptions under the active term (the
    /// term named); reserve a block through the log and grant it.
    #[error("no encryptions reserved under key term {0}")]
    ReservationNeeded(u32),
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

/// The encryptions this node may still make under the active term:
/// positions `next .. end` of the term's cluster-wide count.
#[derive(Debug, Default)]
struct Block {
    next: u64,
    end: u64,
}

struct Open {
    root: Key32,
    keychain: Arc<Keychain>,
    /// The reserved block of the active term; shared with the `Open` that
    /// replaces this one after a rekey (same keychain, same term).
    block: Arc<Mutex<Block>>,
}

impl Open {
    fn new(root: Key32, keychain: Keychain) -> Self {
        Open {
            root,
            keychain: Arc::new(keychain),
            block: Arc::default(),
        }
    }
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

    /// The most encryptions this barrier makes under one term (its
    /// configured `encryption_limit`, at least 1).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the barrier is sealed.
    pub fn is_sealed(&self) -> bool {
        self.current().is_none()
    }

    fn current(&self) -> Option<Arc<Open>> {
        self.open.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Open the barrier with the root key and the stored keychain blob.
    /// It holds no reserved encryptions yet.
    pub fn open(&self, root: Key32, keychain_blob: &[u8]) -> Result<(), BarrierError> {
        let keychain = Keychain::unwrap(&root, keychain_blob)?;
        *self.open.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(Open::new(root, keychain)));
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
    /// stored bytes. Spends one reserved encryption of the active term:
    /// fails with `ReservationNeeded` when none is left, and with
    /// `RotationRequired` when the reservations reached `limit`.
    pub fn encrypt(
        &self,
        storage_key: &[u8],
        plaintext: &[u8],
    ) -> Result<(u32, Vec<u8>), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let term = open.keychain.active_term();
        {
            let mut block = open.block.lock().unwrap_or_else(|e| e.into_inner());
            if block.next >= block.end {
                return Err(if block.end >= self.limit {
                    BarrierError::RotationRequired(self.limit)
                } else {
                    BarrierError::ReservationNeeded(term)
                });
            }
            block.next += 1;
        }
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

    /// A keyed digest (HMAC-SHA256) of `parts`, each length-prefixed after
    /// `domain`, under a key derived (HKDF-SHA256) from the keychain's first
    /// term. Every node of a cluster computes the same digest, before and
    /// after rotations and rekeys, and nobody without the keychain can: a
    /// digest kept in the log lets a node tell whether two requests carried
    /// the same value without keeping the value, and a guess at the value
    /// cannot be checked against it offline.
    pub fn keyed_digest(&self, domain: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], BarrierError> {
        use hkdf::hmac::Mac;
        let mut mac = self.first_term_mac(b"kstash barrier keyed digest v1")?;
        for part in std::iter::once(domain).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }

    /// HMAC-SHA256 of `value` under the cluster's **audit key**: a key
    /// derived (HKDF) from the keychain's first term, so it lives only in
    /// the barrier, every node of the cluster has the same one, and it
    /// stays across rotations and rekeys. The audit log shows every secret
    /// a caller presents as this HMAC, and `kstash audit hash` computes it
    /// for a known string; without the keychain nobody can, so a guess at
    /// a secret cannot be checked against the log offline.
    pub fn audit_hmac(&self, value: &[u8]) -> Result<[u8; 32], BarrierError> {
        use hkdf::hmac::Mac;
        let mut mac = self.first_term_mac(b"kstash audit key v1")?;
        mac.update(value);
        Ok(mac.finalize().into_bytes().into())
    }

    /// An HMAC-SHA256 under a key derived for `purpose` from the first
    /// term of the keychain (the same on every node, for good).
    fn first_term_mac(
        &self,
        purpose: &[u8],
    ) -> Result<hkdf::hmac::Hmac<sha2::Sha256>, BarrierError> {
        use hkdf::hmac::{Hmac, Mac};
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let first = open.keychain.terms.first().ok_or(BarrierError::Sealed)?;
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(None, &first.key)
            .expand(purpose, &mut key[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(<Hmac<sha2::Sha256> as Mac>::new_from_slice(&key[..])
            .expect("HMAC takes a key of any length"))
    }

    /// Whether this node must reserve encryptions under `term` before it can
    /// encrypt: `term` is active and its block is used up (but not at the
    /// limit). False when sealed or another term is active.
    pub fn needs_reservation(&self, term: u32) -> bool {
        let Some(open) = self.current() else {
            return false;
        };
        let block = open.block.lock().unwrap_or_else(|e| e.into_inner());
        open.keychain.active_term() == term && block.next >= block.end && block.end < self.limit
    }

    /// Take a block the log granted: positions `start .. start + count` of
    /// `term`'s cluster-wide count, cut at this barrier's own limit. It
    /// replaces what is left of the current block (which is lost, counted
    /// as used). Returns false, and changes nothing, when sealed or when
    /// `term` is no longer the active term (the block is lost too).
    pub fn grant(&self, term: u32, start: u64, count: u64) -> bool {
        let Some(open) = self.current() else {
            return false;
        };
        if open.keychain.active_term() != term {
            return false;
        }
        let mut block = open.block.lock().unwrap_or_else(|e| e.into_inner());
        let start = start.min(self.limit);
        block.next = start;
        block.end = start.saturating_add(count).min(self.limit);
        true
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
    /// in-memory root key. Only a newer active term replaces the current
    /// keychain; the new term starts with no reserved encryptions.
    pub fn install(&self, keychain_blob: &[u8]) -> Result<(), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        let keychain = Keychain::unwrap(&open.root, keychain_blob)?;
        if keychain.active_term() <= open.keychain.active_term() {
            return Ok(());
        }
        let mut slot = self.open.write().unwrap_or_else(|e| e.into_inner());
        // Swap only what was read: a concurrent seal or install wins.
        if slot.as_ref().is_some_and(|o| Arc::ptr_eq(o, &open)) {
            *slot = Some(Arc::new(Open::new(open.root.clone(), keychain)));
        }
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

    /// Switch to a committed new root key (after a rekey). The keychain and
    /// the reserved block stay (shared, so nothing is spent twice).
    pub fn replace_root(&self, root: Key32) -> Result<(), BarrierError> {
        let open = self.current().ok_or(BarrierError::Sealed)?;
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Open {
            root,
            keychain: open.keychain.clone(),
            block: open.block.clone(),
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
        b.open(root.clone(), &blob).unwrap();
        assert!(b.grant(1, 0, limit));
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
    fn keyed_digests_stay_across_rotation_and_need_the_keychain() {
        let (b, _) = opened(10);
        let d = |b: &Barrier, v: &[u8]| b.keyed_digest(b"test", &[b"a", v]).unwrap();
        let first = d(&b, b"hunter2");
        assert_eq!(first, d(&b, b"hunter2"), "deterministic");
        assert_ne!(first, d(&b, b"hunter3"), "another value, another digest");
        // Length prefixes: moving a byte between parts changes the digest.
        assert_ne!(
            b.keyed_digest(b"test", &[b"ab", b"c"]).unwrap(),
            b.keyed_digest(b"test", &[b"a", b"bc"]).unwrap()
        );
        assert_ne!(
            first,
            b.keyed_digest(b"other", &[b"a", b"hunter2"]).unwrap()
        );
        // Not a plain hash of the input: it needs the keychain.
        use sha2::Digest as _;
        let plain: [u8; 32] = sha2::Sha256::digest(b"hunter2").into();
        assert_ne!(first, plain);
        // Another node of the cluster (same keychain), after a rotation and
        // under a new root key: the same digest.
        let (_, blob) = b.prepare_rotation(2).unwrap();
        b.install(&blob).unwrap();
        assert_eq!(b.active_term(), Some(2));
        assert_eq!(first, d(&b, b"hunter2"), "the same after a rotation");
        let (new_root, rewrapped) = b.prepare_rekey().unwrap();
        let other = Barrier::new(10);
        other.open(new_root, &rewrapped).unwrap();
        assert_eq!(first, d(&other, b"hunter2"), "the same on another node");
        // Another cluster (another keychain): another digest.
        let (stranger, _) = opened(10);
        assert_ne!(first, d(&stranger, b"hunter2"));
        b.seal();
        assert_eq!(b.keyed_digest(b"test", &[b"a"]), Err(BarrierError::Sealed));
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
        b.install(&blob).unwrap();
        assert!(b.grant(2, 0, 1));
        let (t, new) = b.encrypt(b"k", b"new").unwrap();
        assert_eq!(t, 2);
        assert_eq!(b.decrypt(b"k", &old).unwrap().as_slice(), b"old");
        assert_eq!(b.decrypt(b"k", &new).unwrap().as_slice(), b"new");
        // A fresh barrier opened from the stored blob reads both.
        let b2 = Barrier::new(10);
        b2.open(root, &blob).unwrap();
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
        b.install(&blob).unwrap();
        assert_eq!(
            b.encrypt(b"k", b"3"),
            Err(BarrierError::ReservationNeeded(2)),
            "a new term starts with nothing reserved"
        );
        assert!(b.grant(2, 0, 1));
        assert_eq!(b.encrypt(b"k", b"3").unwrap().0, 2);
    }

    #[test]
    fn encrypts_only_inside_a_granted_block() {
        let root = Key32::random();
        let blob = Keychain::first(1).wrap(&root);
        let b = Barrier::new(100);
        b.open(root, &blob).unwrap();
        assert_eq!(
            b.encrypt(b"k", b"v"),
            Err(BarrierError::ReservationNeeded(1)),
            "nothing is reserved at open, whatever was used before"
        );
        assert!(b.needs_reservation(1));
        assert!(!b.needs_reservation(2), "term 2 is not active");
        // The log granted positions 40..43 of term 1.
        assert!(b.grant(1, 40, 3));
        assert!(!b.needs_reservation(1));
        for _ in 0..3 {
            assert_eq!(b.encrypt(b"k", b"v").unwrap().0, 1);
        }
        assert_eq!(
            b.encrypt(b"k", b"v"),
            Err(BarrierError::ReservationNeeded(1))
        );
        // A block for a term that is not active is not taken.
        assert!(!b.grant(2, 0, 10));
        assert_eq!(
            b.encrypt(b"k", b"v"),
            Err(BarrierError::ReservationNeeded(1))
        );
    }

    #[test]
    fn a_grant_is_cut_at_the_own_limit() {
        let (b, _) = opened(5);
        // A peer with a higher limit could be granted past ours.
        assert!(b.grant(1, 3, 10));
        b.encrypt(b"k", b"4").unwrap();
        b.encrypt(b"k", b"5").unwrap();
        assert_eq!(
            b.encrypt(b"k", b"6"),
            Err(BarrierError::RotationRequired(5))
        );
        assert!(!b.needs_reservation(1), "at the limit: rotate, not reserve");
        assert!(b.grant(1, 7, 10));
        assert_eq!(
            b.encrypt(b"k", b"8"),
            Err(BarrierError::RotationRequired(5))
        );
    }

    #[test]
    fn sealing_drops_the_block_and_rekey_keeps_it() {
        let (b, root) = opened(10);
        let blob = Keychain::first(1).wrap(&root);
        b.encrypt(b"k", b"v").unwrap();
        b.seal();
        assert!(!b.needs_reservation(1), "sealed");
        b.open(root, &blob).unwrap();
        assert_eq!(
            b.encrypt(b"k", b"v"),
            Err(BarrierError::ReservationNeeded(1)),
            "what was left of the block before the seal is gone"
        );
        assert!(b.grant(1, 5, 2));
        b.encrypt(b"k", b"v").unwrap();
        let (root2, _) = b.prepare_rekey().unwrap();
        b.replace_root(root2).unwrap();
        b.encrypt(b"k", b"v").unwrap();
        assert_eq!(
            b.encrypt(b"k", b"v"),
            Err(BarrierError::ReservationNeeded(1)),
            "the rekeyed barrier spends the same block, not a fresh one"
        );
    }

    #[test]
    fn install_never_goes_back_to_an_older_term() {
        let (b, _) = opened(10);
        let (_, older) = b.prepare_rotation(2).unwrap();
        let (_, _) = b.prepare_rotation(2).unwrap();
        b.install(&older).unwrap();
        assert_eq!(b.active_term(), Some(2));
        let (_, newer) = b.prepare_rotation(3).unwrap();
        b.install(&newer).unwrap();
        assert_eq!(b.active_term(), Some(3));
        b.install(&older).unwrap();
        assert_eq!(b.active_term(), Some(3), "an older keychain is ignored");
    }

    #[test]
    fn wrong_keys_are_refused() {
        let root = Key32::random();
        let blob = Keychain::first(1).wrap(&root);
        let b = Barrier::new(3);
        assert_eq!(b.open(Key32::random(), &blob), Err(BarrierError::WrongKey));
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
        b2.open(root2, &blob2).unwrap();
        assert_eq!(b2.decrypt(b"k", &ct).unwrap().as_slice(), b"v");
    }
}
