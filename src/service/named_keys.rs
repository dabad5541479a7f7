//! Named encryption keys: create, read, list, rotate and configure (admin
//! tokens of the namespace), and encrypt and decrypt (a token whose
//! policies grant `encrypt` or `decrypt` on `keys/<name>`, or the node's KMS
//! socket for the one key it serves).
//!
//! Invariants:
//! - Key material is made here, before proposing (invariant 4), wrapped by
//!   the barrier under `keyspace::named_key_material_aad`, and unwrapped
//!   only for one encryption or decryption, into a `Key32` zeroized on drop.
//!   No answer carries it.
//! - An encryption spends one encryption of a block reserved through the
//!   log for the key's latest version (`ReserveKeyEncryptions`), so no
//!   version passes the encryption limit cluster-wide (invariant 9).
//! - Only the latest version encrypts; every version from the key's
//!   `min_decryption_version` to the latest decrypts.

use base64::Engine;
use zeroize::Zeroizing;

use super::types::*;
use super::TokenHolder;
use super::{idempotency, Node, ServiceError};
use crate::acl::Capability;
use crate::clock::rfc3339;
use crate::keys::{self, Ciphertext, KeyVersionRef};
use crate::keyspace::{self, NamedKeyRecord};
use crate::raft::ProposeError;
use crate::secret::{Key32, SecretString};
use crate::state::command::{Applied, Command};
use crate::state::{ApplyError, NAMED_KEY_ACTION};

/// Most reservations one encryption waits for before it gives up (503,
/// retryable): other nodes rotated the key under it every time.
const MAX_ROUNDS: usize = 8;

/// Who uses a named key.
#[derive(Debug, Clone, Copy)]
pub enum KeyUser<'a> {
    /// An access token: its namespace, and its policies' `encrypt` and
    /// `decrypt` grants on `keys/<name>` (admin holds both).
    Token(&'a TokenHolder),
    /// The node's KMS socket, which serves exactly one key.
    Socket {
        /// The key's namespace.
        namespace: &'a str,
        /// The key's name.
        name: &'a str,
    },
}

impl KeyUser<'_> {
    /// The namespace the user works in.
    fn namespace(&self) -> &str {
        match self {
            KeyUser::Token(holder) => &holder.record.namespace,
            KeyUser::Socket { namespace, .. } => namespace,
        }
    }

    /// Check that the user may do `cap` (encrypt or decrypt) with `name`;
    /// `any_of` for metadata, which either capability allows.
    fn allow(&self, name: &str, caps: &[Capability]) -> Result<(), ServiceError> {
        match self {
            KeyUser::Token(holder) => {
                let path = keys::acl_path(name);
                if caps.iter().any(|c| holder.acl.allows(&path, *c)) {
                    Ok(())
                } else {
                    let action = caps
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ");
                    Err(ServiceError::Forbidden(holder.denial(
                        &action,
                        &holder.record.namespace,
                        &path,
                    )))
                }
            }
            KeyUser::Socket { name: served, .. } if *served == name => Ok(()),
            // Unreachable through the socket, which names its own key; kept
            // so a wrong call is a refusal, not a use of another key.
            KeyUser::Socket { .. } => Err(ServiceError::BadRequest(format!(
                "this KMS socket serves another key than {name}"
            ))),
        }
    }
}

/// A decrypted payload and the version that decrypted it.
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext (wiped on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The version that decrypted.
    pub key_version: u32,
    /// That version's key id.
    pub key_id: String,
}

impl Decrypted {
    /// The REST/JSON answer: the plaintext in base64.
    pub fn into_response(self) -> DecryptResponse {
        DecryptResponse {
            plaintext: SecretString::new(
                base64::engine::general_purpose::STANDARD.encode(&*self.plaintext),
            ),
            key_version: self.key_version,
            key_id: self.key_id,
        }
    }
}

impl Node {
    /// Check that `caller` may manage `name` in its own namespace: an
    /// admin token.
    fn key_admin(caller: &TokenHolder, name: &str) -> Result<(), ServiceError> {
        Self::namespace_admin(
            caller,
            &caller.record.namespace,
            NAMED_KEY_ACTION,
            &keys::acl_path(name),
        )
    }

    /// The record of `namespace/name`, or a 404 naming it.
    fn named_key(&self, namespace: &str, name: &str) -> Result<NamedKeyRecord, ServiceError> {
        self.sm()
            .named_key(namespace, name)?
            .ok_or_else(|| no_key(namespace, name))
    }

    /// The metadata of a key, as answers show it.
    fn key_info(&self, namespace: &str, name: &str, record: &NamedKeyRecord) -> NamedKeyInfo {
        let latest = record.latest();
        NamedKeyInfo {
            namespace: namespace.into(),
            name: name.into(),
            latest_version: latest.version,
            min_decryption_version: record.min_decryption_version,
            key_id: keys::key_id(namespace, name, &record.uid, latest.version),
            created_at: rfc3339(record.created_at_ms),
            exhausted: latest.reserved >= self.key_limit(),
            versions: record
                .versions
                .iter()
                .map(|v| NamedKeyVersionInfo {
                    version: v.version,
                    created_at: rfc3339(v.created_at_ms),
                    key_id: keys::key_id(namespace, name, &record.uid, v.version),
                })
                .collect(),
        }
    }

    /// The encryption limit of one key version: the barrier's.
    fn key_limit(&self) -> u64 {
        self.settings
            .encryption_limit
            .min(crate::state::MAX_ENCRYPTION_LIMIT)
    }

    /// Fresh key material for `version` of `namespace/name`, wrapped by the
    /// barrier: what a create or rotate command carries.
    async fn new_key_material(
        &self,
        namespace: &str,
        name: &str,
        version: u32,
    ) -> Result<Vec<u8>, ServiceError> {
        let material = Key32::random();
        let aad = keyspace::named_key_material_aad(namespace, name, version);
        let (_term, wrapped) = self.encrypt_value(&aad, material.as_bytes()).await?;
        Ok(wrapped)
    }

    /// The material of `version` of a key, unwrapped.
    fn key_material(
        &self,
        namespace: &str,
        name: &str,
        record: &NamedKeyRecord,
        version: u32,
    ) -> Result<Key32, ServiceError> {
        let stored = record.version(version).ok_or(ServiceError::Internal)?;
        let aad = keyspace::named_key_material_aad(namespace, name, version);
        let plain = self.barrier.decrypt(&aad, &stored.wrapped)?;
        Key32::from_slice(&plain).ok_or(ServiceError::Internal)
    }

    /// Propose a create, rotate or config of `namespace/name` and answer
    /// the key as it is after it: this node catches up first, so the answer
    /// shows the change even when the leader applied it before this node.
    async fn propose_key_change(
        &self,
        command: Command,
        idempotency: Option<crate::state::command::Idempotency>,
        namespace: &str,
        name: &str,
    ) -> Result<NamedKeyInfo, ServiceError> {
        match self.raft.propose_with(command, idempotency).await {
            Ok(_) => {}
            Err(ProposeError::Rejected(ApplyError::NotFound)) => {
                return Err(no_key(namespace, name))
            }
            Err(ProposeError::Rejected(ApplyError::NamedKeyExists)) => {
                return Err(key_exists(namespace, name))
            }
            Err(ProposeError::Rejected(ApplyError::StaleKeyVersion { latest })) => {
                return Err(ServiceError::Conflict(format!(
                    "key {namespace}/{name} was rotated by another request meanwhile (now at \
                     version {latest}); read it and rotate again if you still need to"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.linearize().await?;
        let record = self.named_key(namespace, name)?;
        Ok(self.key_info(namespace, name, &record))
    }

    /// Create the named key `name` in the caller's namespace, with version
    /// 1 (admin tokens only; idempotency key as for [`Node::put_secret`]).
    pub async fn create_key(
        &self,
        caller: &TokenHolder,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<NamedKeyInfo, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        keys::validate_name(name)?;
        Self::key_admin(caller, name)?;
        let namespace = caller.record.namespace.clone();
        // With an idempotency key, a resend of a create that was applied
        // must reach apply, which answers it with the first outcome (apply
        // refuses any other create of an existing key); without one, an
        // existing key is refused here, before any key material is made.
        if key.is_none() && self.sm().named_key(&namespace, name)?.is_some() {
            return Err(key_exists(&namespace, name));
        }
        let idempotency =
            idempotency(caller, &self.barrier, key, "create-key", &[name.as_bytes()])?;
        let uid: [u8; keys::UID_BYTES] = crate::secret::random_bytes();
        let wrapped = self.new_key_material(&namespace, name, 1).await?;
        let command = Command::CreateNamedKey {
            by: caller.actor(),
            namespace: namespace.clone(),
            name: name.into(),
            uid,
            wrapped,
        };
        self.propose_key_change(command, idempotency, &namespace, name)
            .await
    }

    /// A key's metadata (never its material): for admin tokens, tokens
    /// that may encrypt or decrypt with it, and the KMS socket serving it.
    pub async fn get_key(
        &self,
        user: KeyUser<'_>,
        name: &str,
    ) -> Result<NamedKeyInfo, ServiceError> {
        self.require_unsealed()?;
        keys::validate_name(name)?;
        user.allow(name, &[Capability::Encrypt, Capability::Decrypt])?;
        let namespace = user.namespace();
        let record = self.named_key(namespace, name)?;
        Ok(self.key_info(namespace, name, &record))
    }

    /// The caller's namespace's key names, one page (admin tokens only).
    pub async fn list_keys(
        &self,
        caller: &TokenHolder,
        page: &ListPage,
    ) -> Result<NamedKeyList, ServiceError> {
        self.require_unsealed()?;
        let cursor = page.cursor();
        if let Some(c) = cursor {
            keys::validate_name(c)?;
        }
        Self::key_admin(caller, "")?;
        let stored = self
            .sm()
            .named_key_names(&caller.record.namespace, cursor, page.limit())?;
        Ok(NamedKeyList {
            cursor: stored
                .truncated
                .then(|| stored.names.last().cloned())
                .flatten(),
            truncated: stored.truncated,
            keys: stored.names,
        })
    }

    /// Add a version to `name`, which encrypts from now on; older versions
    /// keep decrypting (admin tokens only; idempotency key as for
    /// [`Node::put_secret`]: a retry does not rotate twice).
    pub async fn rotate_key(
        &self,
        caller: &TokenHolder,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<NamedKeyInfo, ServiceError> {
        self.require_unsealed()?;
        keys::validate_name(name)?;
        Self::key_admin(caller, name)?;
        let namespace = caller.record.namespace.clone();
        let record = self.named_key(&namespace, name)?;
        let version = record.next_version().map_err(ServiceError::BadRequest)?;
        // The idempotency target is the key, not the version: a retry
        // after an unknown outcome finds the first rotation's answer.
        let idempotency =
            idempotency(caller, &self.barrier, key, "rotate-key", &[name.as_bytes()])?;
        let wrapped = self.new_key_material(&namespace, name, version).await?;
        let command = Command::RotateNamedKey {
            by: caller.actor(),
            namespace: namespace.clone(),
            name: name.into(),
            version,
            wrapped,
        };
        self.propose_key_change(command, idempotency, &namespace, name)
            .await
    }

    /// Set the oldest version of `name` that still decrypts (admin tokens
    /// only): 1 to the latest version, never lower than it is.
    pub async fn configure_key(
        &self,
        caller: &TokenHolder,
        name: &str,
        config: NamedKeyConfig,
        key: Option<&IdempotencyKey>,
    ) -> Result<NamedKeyInfo, ServiceError> {
        self.require_unsealed()?;
        keys::validate_name(name)?;
        Self::key_admin(caller, name)?;
        let namespace = caller.record.namespace.clone();
        let record = self.named_key(&namespace, name)?;
        let min = config.min_decryption_version;
        record
            .check_min_decryption_version(min)
            .map_err(ServiceError::BadRequest)?;
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "configure-key",
            &[name.as_bytes(), &min.to_be_bytes()],
        )?;
        let command = Command::ConfigureNamedKey {
            by: caller.actor(),
            namespace: namespace.clone(),
            name: name.into(),
            min_decryption_version: min,
        };
        self.propose_key_change(command, idempotency, &namespace, name)
            .await
    }

    /// Encrypt `plaintext` (at most [`keys::MAX_PLAINTEXT_BYTES`]) with the
    /// latest version of `name`.
    pub async fn encrypt_with_key(
        &self,
        user: KeyUser<'_>,
        name: &str,
        plaintext: &[u8],
    ) -> Result<EncryptResponse, ServiceError> {
        self.require_unsealed()?;
        keys::validate_name(name)?;
        if plaintext.len() > keys::MAX_PLAINTEXT_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "plaintext is {} bytes; the limit is {}",
                plaintext.len(),
                keys::MAX_PLAINTEXT_BYTES
            )));
        }
        user.allow(name, &[Capability::Encrypt])?;
        let namespace = user.namespace();
        if let KeyUser::Socket { .. } = user {
            // A token's call was authenticated against a linearizable
            // state; the socket's is not: catch up (and prove a leader).
            self.linearize().await?;
        }
        for _ in 0..MAX_ROUNDS {
            let record = self.named_key(namespace, name)?;
            let version = record.latest().version;
            let at = KeyVersionRef {
                namespace,
                name,
                uid: &record.uid,
                version,
            };
            if !self.key_blocks.take(&at) {
                self.reserve_key_encryptions(&at).await?;
                continue;
            }
            let material = self.key_material(namespace, name, &record, version)?;
            return Ok(EncryptResponse {
                ciphertext: keys::encrypt(&material, at, plaintext),
                key_version: version,
                key_id: at.key_id(),
            });
        }
        Err(ServiceError::Unavailable(format!(
            "no encryption could be reserved under key {namespace}/{name}: it was rotated under \
             every attempt; retry"
        )))
    }

    /// Reserve a block of encryptions under the key version `at` through the
    /// log and hold it. A version that changed meanwhile makes the caller
    /// read the key again (this node catches up first).
    async fn reserve_key_encryptions(&self, at: &KeyVersionRef<'_>) -> Result<(), ServiceError> {
        let _one_at_a_time = self.reserve_lock.lock().await;
        if self.key_blocks.has_left(at) {
            return Ok(());
        }
        let reserve = Command::ReserveKeyEncryptions {
            namespace: at.namespace.into(),
            name: at.name.into(),
            uid: *at.uid,
            version: at.version,
            count: (self.key_limit() / 16).clamp(1, super::encryption::MAX_RESERVATION),
            limit: self.key_limit(),
        };
        match self.raft.propose(reserve).await {
            Ok(Applied::Reserved { start, count }) => {
                self.key_blocks.grant(at, start, count);
                Ok(())
            }
            Ok(_) => Err(ServiceError::Internal),
            Err(ProposeError::Rejected(ApplyError::StaleKeyVersion { .. })) => {
                self.linearize().await
            }
            Err(ProposeError::Rejected(ApplyError::NotFound)) => Err(no_key(at.namespace, at.name)),
            Err(ProposeError::Rejected(ApplyError::NamedKeyExhausted { version })) => {
                tracing::warn!(
                    namespace = at.namespace,
                    key = at.name,
                    version,
                    "a named key version reached its encryption limit; rotate the key"
                );
                Err(ServiceError::Unavailable(format!(
                    "key {}/{} version {version} reached its encryption limit ({}); rotate the \
                     key (kstash key rotate {}) to encrypt again",
                    at.namespace,
                    at.name,
                    self.key_limit(),
                    at.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Decrypt a ciphertext of `name`, made by any of its versions from
    /// `min_decryption_version` to the latest.
    pub async fn decrypt_with_key(
        &self,
        user: KeyUser<'_>,
        name: &str,
        ciphertext: &str,
    ) -> Result<Decrypted, ServiceError> {
        self.require_unsealed()?;
        keys::validate_name(name)?;
        let parsed = Ciphertext::parse(ciphertext)?;
        user.allow(name, &[Capability::Decrypt])?;
        let namespace = user.namespace();
        if let KeyUser::Socket { .. } = user {
            self.linearize().await?;
        }
        let record = self.named_key(namespace, name)?;
        let version = parsed.version;
        let latest = record.latest().version;
        if version > latest {
            return Err(ServiceError::BadRequest(format!(
                "the ciphertext names version {version} of key {namespace}/{name}, which has \
                 versions 1 to {latest}: it was made by another key"
            )));
        }
        if version < record.min_decryption_version {
            return Err(ServiceError::BadRequest(format!(
                "the ciphertext was made by version {version} of key {namespace}/{name}, which \
                 is retired (min_decryption_version is {})",
                record.min_decryption_version
            )));
        }
        let material = self.key_material(namespace, name, &record, version)?;
        let at = KeyVersionRef {
            namespace,
            name,
            uid: &record.uid,
            version,
        };
        let plaintext = parsed.decrypt(&material, at)?;
        Ok(Decrypted {
            plaintext,
            key_version: version,
            key_id: at.key_id(),
        })
    }

    /// The key id a KMS socket reports for `namespace/name`, from this
    /// node's own state (no Raft round): refused unless the node is
    /// unsealed, knows a leader, has the key, and its latest version can
    /// still encrypt.
    pub fn key_status(&self, namespace: &str, name: &str) -> Result<String, ServiceError> {
        self.require_unsealed()?;
        if self.raft.leader().is_none() {
            return Err(ServiceError::Unavailable(
                "this node knows no leader: the cluster has no quorum, or an election is running"
                    .into(),
            ));
        }
        let record = self.named_key(namespace, name)?;
        let latest = record.latest();
        if latest.reserved >= self.key_limit() {
            return Err(ServiceError::Unavailable(format!(
                "key {namespace}/{name} version {} reached its encryption limit; rotate the key",
                latest.version
            )));
        }
        Ok(keys::key_id(namespace, name, &record.uid, latest.version))
    }
}

/// The 404 of a key that does not exist.
fn no_key(namespace: &str, name: &str) -> ServiceError {
    ServiceError::NotFound(format!("no key {name} in namespace {namespace}"))
}

/// The 409 of a create whose key exists.
fn key_exists(namespace: &str, name: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "key {name} exists in namespace {namespace}; rotate it (kstash key rotate {name}) for a \
         new version"
    ))
}
