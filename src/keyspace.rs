//! The storage layout: every key prefix and every stored record, in one place.
//!
//! Invariant: a stored record is `FORMAT_V1 | bincode(record)` decoded with a
//! size limit; a record type only ever gains fields at the end under a new
//! format byte, so a node can read what an older node wrote. Secret values are
//! stored only as barrier ciphertext (`KvRecord::ciphertext`), tokens and the
//! access key only as SHA-256 hashes, and key material only wrapped.
//! Byte fields are `serde_bytes`: the same bytes as a plain `Vec<u8>` (the
//! length, then the bytes), copied in one go rather than one call per byte.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::storage::StorageError;

/// The record at [`kubernetes_role_key`]: declared beside its validation
/// in `auth`, stored (and carried in the log) as bincode of its fields in
/// their order, like every record here.
pub use crate::auth::kubernetes::role::KubernetesRole;

/// Format byte of every record written by this version.
pub const FORMAT_V1: u8 = 1;

/// Upper bound on a decoded record; a KV record is at most the configured
/// value limit plus a small header, so 64 MiB only refuses garbage.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// `InitRecord`: present once the store is initialised.
pub const INIT: &[u8] = b"core/init";
/// The root key wrapped under the gatekeeper key (never the gatekeeper key).
pub const ROOT_KEY: &[u8] = b"core/root-key";
/// The keychain wrapped under the root key (opaque barrier blob).
pub const KEYCHAIN: &[u8] = b"core/keychain";
/// `AccessKeyRecord`: the hash of the current access key.
pub const ACCESS_KEY: &[u8] = b"core/access-key";
/// Per-term count of applied secret writes, `u64`, followed by a term
/// number (statistics; the encryption limit is kept by the reserved count).
pub const TERM_USAGE_PREFIX: &str = "core/term-usage/";
/// Per-term count of encryptions reserved through the log, `u64`, followed
/// by a term number: the cluster's count that forces a rotation
/// (invariant 9). Never decreases; at least the encryptions made.
pub const TERM_RESERVED_PREFIX: &str = "core/term-reserved/";
/// The keychain's active term, `u32`, as the last `Init` or
/// `RotateKeychain` set it: apply grants reservations for this term only
/// and accepts a rotation to the next term only. Absent in stores
/// initialised before it existed, until their first rotation.
pub const ACTIVE_TERM: &[u8] = b"core/active-term";
/// `GatekeeperTokenRecord`s by hex id (hash of the token).
pub const GATEKEEPER_TOKEN_PREFIX: &str = "gatekeeper/tokens/";
/// What a used gatekeeper token was used for inside its grace window
/// (`Vec<command::GatekeeperOperation>`), by the token's hex id: a retry of
/// the same operation gets the first result. Deleted with the token.
pub const GATEKEEPER_OPERATIONS_PREFIX: &str = "gatekeeper/operations/";
/// `AccessTokenRecord`s by hex id (hash of the token).
pub const ACCESS_TOKEN_PREFIX: &str = "auth/tokens/";
/// Policies: `acl/<namespace>/<name>` → `acl::Policy`.
pub const POLICY_PREFIX: &str = "acl/";
/// Kubernetes login roles:
/// `auth/kubernetes/roles/<namespace>/<name>` →
/// `auth::kubernetes::role::KubernetesRole`, beside the tokens they mint
/// and apart from them (a sweep of `auth/tokens/` never sees a role).
pub const KUBERNETES_ROLE_PREFIX: &str = "auth/kubernetes/roles/";
/// Named encryption keys: `keys/<namespace>/<name>` → `NamedKeyRecord`
/// (metadata in the clear, each version's material wrapped by the barrier).
pub const NAMED_KEY_PREFIX: &str = "keys/";
/// Secrets: `kv/<namespace>/<path>` → `KvRecord`.
pub const KV_PREFIX: &str = "kv/";
/// Kept outcomes of requests with an idempotency key, by hashed key.
pub const IDEMPOTENCY_PREFIX: &str = "idempotency/";

/// Raft: the id of the last applied log entry (`Option<LogId>`), written in
/// the same batch as the entry's data.
pub const RAFT_LAST_APPLIED: &[u8] = b"raft/last-applied";
/// Raft: the last applied membership (`StoredMembership`), same batch.
pub const RAFT_MEMBERSHIP: &[u8] = b"raft/membership";
/// Raft: while a log entry with several requests is being applied, its log
/// id and how many of its requests are applied (`(LogId, u32)`), written
/// with each request's data; removed with the last one. A restart that
/// finds it (a persistent backend) skips what was applied.
pub const RAFT_APPLIED_PART: &[u8] = b"raft/applied-part";

/// Key of the kept outcome of an idempotency key (by its hashed id).
pub fn idempotency_key(id: &[u8; 32]) -> Vec<u8> {
    format!("{IDEMPOTENCY_PREFIX}{}", hex::encode(id)).into_bytes()
}

/// Key of the usage counter of `term`.
pub fn term_usage_key(term: u32) -> Vec<u8> {
    format!("{TERM_USAGE_PREFIX}{term:010}").into_bytes()
}

/// Key of the reserved-encryption count of `term`.
pub fn term_reserved_key(term: u32) -> Vec<u8> {
    format!("{TERM_RESERVED_PREFIX}{term:010}").into_bytes()
}

/// Key of a gatekeeper token record.
pub fn gatekeeper_token_key(id: &[u8; 32]) -> Vec<u8> {
    format!("{GATEKEEPER_TOKEN_PREFIX}{}", hex::encode(id)).into_bytes()
}

/// Key of the operations recorded for a used gatekeeper token.
pub fn gatekeeper_operations_key(id: &[u8; 32]) -> Vec<u8> {
    format!("{GATEKEEPER_OPERATIONS_PREFIX}{}", hex::encode(id)).into_bytes()
}

/// Key of an access token record.
pub fn access_token_key(id: &[u8; 32]) -> Vec<u8> {
    format!("{ACCESS_TOKEN_PREFIX}{}", hex::encode(id)).into_bytes()
}

/// Key of a policy.
pub fn policy_key(namespace: &str, name: &str) -> Vec<u8> {
    format!("{POLICY_PREFIX}{namespace}/{name}").into_bytes()
}

/// Prefix of a namespace's policies.
pub fn policy_prefix(namespace: &str) -> Vec<u8> {
    format!("{POLICY_PREFIX}{namespace}/").into_bytes()
}

/// Key of a Kubernetes login role.
pub fn kubernetes_role_key(namespace: &str, name: &str) -> Vec<u8> {
    format!("{KUBERNETES_ROLE_PREFIX}{namespace}/{name}").into_bytes()
}

/// Prefix of a namespace's Kubernetes login roles.
pub fn kubernetes_role_prefix(namespace: &str) -> Vec<u8> {
    format!("{KUBERNETES_ROLE_PREFIX}{namespace}/").into_bytes()
}

/// Key of a named encryption key's record.
pub fn named_key_key(namespace: &str, name: &str) -> Vec<u8> {
    format!("{NAMED_KEY_PREFIX}{namespace}/{name}").into_bytes()
}

/// Prefix of a namespace's named encryption keys.
pub fn named_key_prefix(namespace: &str) -> Vec<u8> {
    format!("{NAMED_KEY_PREFIX}{namespace}/").into_bytes()
}

/// The barrier's AAD for the wrapped material of one version of a named
/// key: the record's key and the version, so a wrapped version moved to
/// another key or version does not unwrap.
pub fn named_key_material_aad(namespace: &str, name: &str, version: u32) -> Vec<u8> {
    format!("{NAMED_KEY_PREFIX}{namespace}/{name}#v{version}").into_bytes()
}

/// Key of a secret; also the barrier's AAD for its ciphertext.
pub fn kv_key(namespace: &str, path: &str) -> Vec<u8> {
    format!("{KV_PREFIX}{namespace}/{path}").into_bytes()
}

/// Prefix of a namespace's secrets under `prefix` (empty or ending in '/').
pub fn kv_prefix(namespace: &str, prefix: &str) -> Vec<u8> {
    format!("{KV_PREFIX}{namespace}/{prefix}").into_bytes()
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_RECORD_BYTES)
        .reject_trailing_bytes()
}

/// Encode a record with its format byte.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    options()
        .serialize_into(&mut out, record)
        .expect("records serialise: no maps with non-string keys, under the size limit");
    out
}

/// Decode a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => options()
            .deserialize(body)
            .map_err(|e| StorageError::Corrupt(format!("undecodable record: {e}"))),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown record format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

/// The store was initialised with these Shamir parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InitRecord {
    /// Number of unseal keys.
    pub shares: u8,
    /// Unseal keys needed to reconstruct the gatekeeper key.
    pub threshold: u8,
    /// When the store was initialised (leader time, ms since the epoch).
    pub initialized_at_ms: u64,
    /// When the unseal keys were last replaced (init or rekey).
    pub rekeyed_at_ms: u64,
}

/// The hash of the current access key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AccessKeyRecord {
    /// SHA-256 of the access key.
    pub hash: [u8; 32],
    /// When it was minted.
    pub created_at_ms: u64,
}

/// A gatekeeper token: the gatekeeper key wrapped under a key derived from
/// the token. Record alone or token alone: useless.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct GatekeeperTokenRecord {
    /// SHA-256 of the token.
    pub id: [u8; 32],
    /// The gatekeeper key sealed under HKDF(token).
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
    /// When it was minted.
    pub created_at_ms: u64,
    /// Set once the token has been used.
    pub used: Option<GatekeeperTokenUse>,
}

impl std::fmt::Debug for GatekeeperTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatekeeperTokenRecord")
            .field("id", &hex::encode(&self.id[..6]))
            .field("created_at_ms", &self.created_at_ms)
            .field("used", &self.used.as_ref().map(|u| u.at_ms))
            .finish_non_exhaustive()
    }
}

/// How a used gatekeeper token may still be presented during its grace window.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct GatekeeperTokenUse {
    /// When it was first used.
    pub at_ms: u64,
    /// Until when the same token still works.
    pub grace_until_ms: u64,
    /// The replacement token sealed under HKDF(this token), so a repeated use
    /// inside the grace window hands out the same replacement.
    #[serde(with = "serde_bytes")]
    pub replacement_wrapped: Vec<u8>,
}

/// An access token's state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenRecord {
    /// The one namespace it is locked to.
    pub namespace: String,
    /// Policy names (may include the built-in `admin`).
    pub policies: Vec<String>,
    /// When it was minted.
    pub created_at_ms: u64,
    /// When it stops working.
    pub expires_at_ms: u64,
    /// The TTL it was minted with; a renewal extends by this much.
    pub ttl_ms: u64,
    /// It can never be renewed past this instant.
    pub max_expires_at_ms: u64,
}

/// A stored secret: barrier ciphertext plus the metadata apply needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KvRecord {
    /// 1 for a new key, +1 on every write.
    pub version: u64,
    /// `version | term | nonce | ciphertext+tag`, AAD = the storage key.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
    /// When version 1 was written.
    pub created_at_ms: u64,
    /// When this version was written.
    pub updated_at_ms: u64,
}

/// A named encryption key (`keys/<namespace>/<name>`): its versions, in
/// order from 1, and the oldest one that may still decrypt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamedKeyRecord {
    /// Random, made when the key was created: part of every key id and
    /// AAD, so a key re-created under a used name is another key.
    pub uid: [u8; crate::keys::UID_BYTES],
    /// When version 1 was made.
    pub created_at_ms: u64,
    /// Versions below this one no longer decrypt (1: all do).
    pub min_decryption_version: u32,
    /// Every version, 1 to the latest, in order (never empty).
    pub versions: Vec<NamedKeyVersion>,
}

impl NamedKeyRecord {
    /// The newest version, which encrypts.
    pub fn latest(&self) -> &NamedKeyVersion {
        self.versions
            .last()
            .expect("a named key has at least one version")
    }

    /// The version a rotation adds, or why the key cannot have another
    /// (it has [`crate::keys::MAX_VERSIONS`]). The service checks it before
    /// making key material, and apply again.
    pub fn next_version(&self) -> Result<u32, String> {
        let latest = self.latest().version;
        if latest >= crate::keys::MAX_VERSIONS {
            return Err(format!(
                "the key has {latest} versions, the most one key may have; create a new key"
            ));
        }
        Ok(latest + 1)
    }

    /// Whether `min` may become the minimum decryption version: 1 to the
    /// latest version, and never below the current one (retired versions
    /// stay retired). The service checks it before proposing, and apply
    /// again.
    pub fn check_min_decryption_version(&self, min: u32) -> Result<(), String> {
        let latest = self.latest().version;
        if min == 0 || min > latest {
            return Err(format!(
                "min_decryption_version must be 1 to the latest version ({latest}); got {min}"
            ));
        }
        if min < self.min_decryption_version {
            return Err(format!(
                "min_decryption_version is {} and never goes down (got {min}): versions below it \
                 are retired",
                self.min_decryption_version
            ));
        }
        Ok(())
    }

    /// Version `version`, if the key has it.
    pub fn version(&self, version: u32) -> Option<&NamedKeyVersion> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.versions.get(index).filter(|v| v.version == version)
    }
}

/// One version of a named key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamedKeyVersion {
    /// 1, 2, …
    pub version: u32,
    /// When it was made (the log entry's time).
    pub created_at_ms: u64,
    /// The 32-byte key, as barrier ciphertext under
    /// [`named_key_material_aad`] (its term is in the ciphertext's header).
    #[serde(with = "serde_bytes")]
    pub wrapped: Vec<u8>,
    /// Encryptions reserved under this version through the log (at least
    /// the encryptions made); never decreases.
    pub reserved: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `KvRecord` as releases before `serde_bytes` encoded it.
    #[derive(Serialize)]
    struct PlainKvRecord {
        version: u64,
        ciphertext: Vec<u8>,
        created_at_ms: u64,
        updated_at_ms: u64,
    }

    #[test]
    fn byte_fields_encode_byte_for_byte_as_before_serde_bytes() {
        // Lengths either side of bincode's one-byte varint limit (250).
        for len in [0, 1, 250, 251, 300, 65_536] {
            let ciphertext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let old = encode(&PlainKvRecord {
                version: 9,
                ciphertext: ciphertext.clone(),
                created_at_ms: 1,
                updated_at_ms: 2,
            });
            let new = KvRecord {
                version: 9,
                ciphertext,
                created_at_ms: 1,
                updated_at_ms: 2,
            };
            assert_eq!(encode(&new), old, "length {len}");
            assert_eq!(decode::<KvRecord>(&old).unwrap(), new);
        }
    }

    #[test]
    fn records_round_trip_with_their_format_byte() {
        let r = KvRecord {
            version: 3,
            ciphertext: vec![1, 2, 3],
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        let bytes = encode(&r);
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<KvRecord>(&bytes).unwrap(), r);
    }

    #[test]
    fn unknown_formats_and_garbage_are_refused() {
        assert!(decode::<KvRecord>(&[]).is_err());
        assert!(decode::<KvRecord>(&[9, 1, 2]).is_err());
        assert!(decode::<KvRecord>(&[FORMAT_V1, 0xff, 0xff, 0xff]).is_err());
        let mut bytes = encode(&7u64);
        bytes.push(0);
        assert!(decode::<u64>(&bytes).is_err(), "trailing bytes are refused");
    }
}
