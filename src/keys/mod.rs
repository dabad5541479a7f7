//! Named encryption keys (in Vault's terms, transit keys): versioned
//! AES-256-GCM keys that live in a namespace, inside the barrier, and
//! encrypt small payloads for callers that never see the key — the
//! key-encryption key of the KMS v2 plugin above all.
//!
//! This module is plain code: names, the ciphertext and key id formats, the
//! AAD and the per-version encryption blocks. The records are declared in
//! `keyspace`, the commands in `state`, and the service layer wires them.
//!
//! Invariants:
//! - A ciphertext is `kstash:v<version>:<base64(nonce | ciphertext + tag)>`
//!   and its AAD names the namespace, the key, the key's uid and the
//!   version: a ciphertext decrypts only under the key version that made
//!   it, and tampering, another key (even one re-created under the same
//!   name) or another version fails cleanly ([`KeyError::Undecryptable`]).
//! - Key material is only ever held in [`Key32`] (zeroized on drop) and is
//!   stored only wrapped by the barrier.
//! - A version encrypts only inside a block of encryptions reserved through
//!   the log ([`KeyBlocks`]), so no version passes the cluster's
//!   encryption limit (DESIGN invariant 9, as for the barrier's terms).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::secret::{self, Key32};

/// Longest key name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Most versions one key may have: every encryption reads the key's record,
/// so the record is bounded. A key that needs more is replaced by a new key.
pub const MAX_VERSIONS: u32 = 1024;

/// Largest plaintext one encryption takes (a DEK seed is 32 bytes; the
/// bound keeps a caller from making the node encrypt megabytes per call).
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024;

/// Longest ciphertext text accepted for decryption: a ciphertext of
/// [`MAX_PLAINTEXT_BYTES`] in base64, with its header.
pub const MAX_CIPHERTEXT_BYTES: usize = 4 * (MAX_PLAINTEXT_BYTES + OVERHEAD).div_ceil(3) + 32;

/// Bytes the encryption adds to a plaintext before base64: nonce and tag.
const OVERHEAD: usize = secret::NONCE_LEN + 16;

/// The text every ciphertext starts with, before its version.
const CIPHERTEXT_PREFIX: &str = "kstash:v";

/// The text every key id starts with.
const KEY_ID_PREFIX: &str = "kstash:";

/// Bytes of a key's uid (random, made when the key is created).
pub const UID_BYTES: usize = 16;

/// What is wrong with a key name, a ciphertext or a key id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The key name does not fit `[a-z0-9][a-z0-9_-]*`, 1 to 64 bytes.
    #[error(
        "invalid key name {0:?}: use 1 to {MAX_NAME_BYTES} characters of a-z, 0-9, '-' and '_', \
         starting with a letter or digit"
    )]
    InvalidName(String),
    /// The ciphertext is not `kstash:v<version>:<base64>`.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// The ciphertext did not decrypt: tampered, cut, or made by another
    /// key or version.
    #[error(
        "the ciphertext does not decrypt under key {key} version {version}: it was changed, or \
         made by another key"
    )]
    Undecryptable {
        /// `<namespace>/<name>`.
        key: String,
        /// The version the ciphertext names.
        version: u32,
    },
}

/// Check a key name: 1 to [`MAX_NAME_BYTES`] characters of `[a-z0-9_-]`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    let b = name.as_bytes();
    let ok = (1..=MAX_NAME_BYTES).contains(&b.len())
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidName(
            name.chars().take(MAX_NAME_BYTES + 8).collect(),
        ))
    }
}

/// The path a policy rule names to grant `encrypt` or `decrypt` on a key:
/// `keys/<name>`. Those two capabilities are checked on key paths only, and
/// the secret capabilities (read, create, …) on secret paths only, so a
/// rule cannot grant one kind of access through the other.
pub fn acl_path(name: &str) -> String {
    format!("keys/{name}")
}

/// The key id of a key version, as the KMS plugin reports it:
/// `kstash:<namespace>/<name>:<uid hex>:v<version>`. Stable for a version,
/// different for every version and for a key re-created under a used name.
pub fn key_id(namespace: &str, name: &str, uid: &[u8; UID_BYTES], version: u32) -> String {
    format!(
        "{KEY_ID_PREFIX}{namespace}/{name}:{}:v{version}",
        hex::encode(uid)
    )
}

/// The parts of a key id made by [`key_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdParts {
    /// The kstash namespace.
    pub namespace: String,
    /// The key's name.
    pub name: String,
    /// The key's uid.
    pub uid: [u8; UID_BYTES],
    /// The version.
    pub version: u32,
}

/// Parse a key id made by [`key_id`]; `None` for anything else.
pub fn parse_key_id(id: &str) -> Option<KeyIdParts> {
    let rest = id.strip_prefix(KEY_ID_PREFIX)?;
    let (rest, version) = rest.rsplit_once(":v")?;
    let (path, uid) = rest.rsplit_once(':')?;
    let (namespace, name) = path.split_once('/')?;
    let version = parse_version(version)?;
    let uid: [u8; UID_BYTES] = hex::decode(uid).ok()?.try_into().ok()?;
    validate_name(name).ok()?;
    crate::acl::path::validate_namespace(namespace).ok()?;
    Some(KeyIdParts {
        namespace: namespace.into(),
        name: name.into(),
        uid,
        version,
    })
}

/// A version number as written in ids and ciphertexts: decimal, no sign,
/// no leading zero, at least 1.
fn parse_version(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok().filter(|v| *v >= 1)
}

/// The AAD of every encryption under a key version: a domain, the
/// namespace, the name, the uid and the version, each length-prefixed.
pub fn aad(namespace: &str, name: &str, uid: &[u8; UID_BYTES], version: u32) -> Vec<u8> {
    let mut out = b"kstash named key v1".to_vec();
    for part in [namespace.as_bytes(), name.as_bytes(), &uid[..]] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// Where a ciphertext was made: the key and version whose AAD it carries.
#[derive(Debug, Clone, Copy)]
pub struct KeyVersionRef<'a> {
    /// The kstash namespace.
    pub namespace: &'a str,
    /// The key's name.
    pub name: &'a str,
    /// The key's uid.
    pub uid: &'a [u8; UID_BYTES],
    /// The version.
    pub version: u32,
}

impl KeyVersionRef<'_> {
    fn aad(&self) -> Vec<u8> {
        aad(self.namespace, self.name, self.uid, self.version)
    }

    /// This version's key id.
    pub fn key_id(&self) -> String {
        key_id(self.namespace, self.name, self.uid, self.version)
    }
}

/// Encrypt `plaintext` under `key`, the material of version `at`: the
/// ciphertext text.
pub fn encrypt(key: &Key32, at: KeyVersionRef<'_>, plaintext: &[u8]) -> String {
    let sealed = secret::seal(key, &at.aad(), plaintext);
    format!(
        "{CIPHERTEXT_PREFIX}{}:{}",
        at.version,
        base64::engine::general_purpose::STANDARD.encode(sealed)
    )
}

/// A ciphertext text, parsed: its version and sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// The key version that made it.
    pub version: u32,
    /// `nonce | ciphertext + tag`.
    sealed: Vec<u8>,
}

impl Ciphertext {
    /// Parse `kstash:v<version>:<base64>`, bounded by
    /// [`MAX_CIPHERTEXT_BYTES`].
    pub fn parse(text: &str) -> Result<Ciphertext, KeyError> {
        if text.len() > MAX_CIPHERTEXT_BYTES {
            return Err(KeyError::Malformed(
                "longer than any ciphertext kstash makes",
            ));
        }
        let rest = text
            .strip_prefix(CIPHERTEXT_PREFIX)
            .ok_or(KeyError::Malformed("it does not start with kstash:v"))?;
        let (version, body) = rest
            .split_once(':')
            .ok_or(KeyError::Malformed("no ':' after the version"))?;
        let version =
            parse_version(version).ok_or(KeyError::Malformed("the version is not a number ≥ 1"))?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| KeyError::Malformed("the body is not base64"))?;
        if sealed.len() < OVERHEAD {
            return Err(KeyError::Malformed("too short to hold a nonce and a tag"));
        }
        Ok(Ciphertext { version, sealed })
    }

    /// Decrypt under `key`, the material of version `at` (whose version
    /// must be this ciphertext's).
    pub fn decrypt(
        &self,
        key: &Key32,
        at: KeyVersionRef<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let undecryptable = || KeyError::Undecryptable {
            key: format!("{}/{}", at.namespace, at.name),
            version: self.version,
        };
        if at.version != self.version {
            return Err(undecryptable());
        }
        secret::open(key, &at.aad(), &self.sealed).ok_or_else(undecryptable)
    }
}

/// One key version's place in [`KeyBlocks`]: namespace, name, uid, version.
type VersionSlot = (String, String, [u8; UID_BYTES], u32);

/// Most key versions a node holds a block for; past it every block is
/// dropped (counted as used), so a caller cycling through keys cannot grow
/// the map.
const MAX_BLOCKS: usize = 4096;

/// The blocks of encryptions this node reserved through the log, one per
/// key version in use: `next..end` of the reserved range.
#[derive(Debug, Default)]
pub struct KeyBlocks {
    blocks: Mutex<HashMap<VersionSlot, (u64, u64)>>,
}

impl KeyBlocks {
    fn slot(at: &KeyVersionRef<'_>) -> VersionSlot {
        (at.namespace.into(), at.name.into(), *at.uid, at.version)
    }

    /// Spend one encryption of the block held for `at`; `false` when there
    /// is none left (reserve a block first).
    pub fn take(&self, at: &KeyVersionRef<'_>) -> bool {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        match blocks.get_mut(&Self::slot(at)) {
            Some((next, end)) if *next < *end => {
                *next += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether a block with encryptions left is held for `at` (a writer
    /// that waited for a reservation finds the one another writer made).
    pub fn has_left(&self, at: &KeyVersionRef<'_>) -> bool {
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        blocks
            .get(&Self::slot(at))
            .is_some_and(|(next, end)| next < end)
    }

    /// Hold the block `start..start + count` granted for `at` (replacing
    /// what is left of an earlier one, which counts as used).
    pub fn grant(&self, at: &KeyVersionRef<'_>, start: u64, count: u64) {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        if blocks.len() >= MAX_BLOCKS {
            blocks.clear();
        }
        blocks.insert(Self::slot(at), (start, start.saturating_add(count)));
    }

    /// Drop every block (sealing): what was left counts as used.
    pub fn clear(&self) {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: [u8; UID_BYTES] = [7; UID_BYTES];

    fn at(version: u32) -> KeyVersionRef<'static> {
        KeyVersionRef {
            namespace: "team-a",
            name: "kek",
            uid: &UID,
            version,
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "kms-kek", "k_2", &"a".repeat(64)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a/b",
            "a.b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ciphertexts_round_trip_and_bind_their_key_and_version() {
        let key = Key32::random();
        let text = encrypt(&key, at(3), b"seed");
        assert!(text.starts_with("kstash:v3:"), "{text}");
        let ct = Ciphertext::parse(&text).unwrap();
        assert_eq!(ct.version, 3);
        assert_eq!(ct.decrypt(&key, at(3)).unwrap().as_slice(), b"seed");
        // Another version, key, namespace, name or uid: refused.
        assert!(ct.decrypt(&key, at(2)).is_err());
        assert!(ct.decrypt(&Key32::random(), at(3)).is_err());
        let other_uid = [8; UID_BYTES];
        for other in [
            KeyVersionRef {
                namespace: "team-b",
                ..at(3)
            },
            KeyVersionRef {
                name: "kek2",
                ..at(3)
            },
            KeyVersionRef {
                uid: &other_uid,
                ..at(3)
            },
        ] {
            assert!(ct.decrypt(&key, other).is_err(), "{other:?}");
        }
        // The version in the text is bound too: relabelled, it fails.
        let relabelled = text.replacen("kstash:v3:", "kstash:v2:", 1);
        let ct2 = Ciphertext::parse(&relabelled).unwrap();
        assert!(ct2.decrypt(&key, at(2)).is_err());
        // One flipped bit of the body fails.
        let mut sealed = ct.sealed.clone();
        sealed[20] ^= 1;
        let flipped = Ciphertext { sealed, ..ct };
        assert_eq!(
            flipped.decrypt(&key, at(3)).unwrap_err(),
            KeyError::Undecryptable {
                key: "team-a/kek".into(),
                version: 3
            }
        );
    }

    #[test]
    fn malformed_ciphertexts_are_refused() {
        for bad in [
            "",
            "vault:v1:AAAA",
            "kstash:v:AAAA",
            "kstash:v0:AAAA",
            "kstash:v01:AAAA",
            "kstash:v-1:AAAA",
            "kstash:v1",
            "kstash:v1:!!!!",
            "kstash:v1:AAAA",
            "kstash:v99999999999:AAAA",
        ] {
            assert!(
                matches!(Ciphertext::parse(bad), Err(KeyError::Malformed(_))),
                "{bad}"
            );
        }
        let long = format!("kstash:v1:{}", "A".repeat(MAX_CIPHERTEXT_BYTES));
        assert!(Ciphertext::parse(&long).is_err());
    }

    #[test]
    fn key_ids_round_trip_and_fit_kms_limits() {
        let id = key_id("team-a", "kek", &UID, 12);
        assert_eq!(id, format!("kstash:team-a/kek:{}:v12", hex::encode(UID)));
        let parts = parse_key_id(&id).unwrap();
        assert_eq!(
            parts,
            KeyIdParts {
                namespace: "team-a".into(),
                name: "kek".into(),
                uid: UID,
                version: 12
            }
        );
        let longest = key_id(&"n".repeat(63), &"k".repeat(64), &UID, u32::MAX);
        assert!(longest.len() <= 1024, "{}", longest.len());
        for bad in [
            "",
            "kstash:team-a/kek:00:v1",
            "kstash:team-a/kek:v1",
            "kstash:team-a:0707070707070707070707070707070707:v1",
            &id.replace(":v12", ":v0"),
            &id.replace("team-a", "Team"),
        ] {
            assert_eq!(parse_key_id(bad), None, "{bad}");
        }
        // A ciphertext of a 32-byte seed fits the KMS ciphertext limit.
        let ct = encrypt(&Key32::random(), at(u32::MAX), &[0; 32]);
        assert!(ct.len() <= 1024);
    }

    #[test]
    fn blocks_are_spent_once_and_dropped_on_clear() {
        let blocks = KeyBlocks::default();
        assert!(!blocks.take(&at(1)));
        blocks.grant(&at(1), 10, 2);
        assert!(blocks.has_left(&at(1)));
        assert!(blocks.take(&at(1)));
        assert!(blocks.take(&at(1)));
        assert!(!blocks.take(&at(1)));
        assert!(!blocks.has_left(&at(1)));
        assert!(!blocks.take(&at(2)), "a block is per version");
        blocks.grant(&at(1), 12, 5);
        blocks.clear();
        assert!(!blocks.take(&at(1)));
    }
}
