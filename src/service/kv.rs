//! Secrets: put (encrypting through the barrier), get (decrypting), delete
//! and list, always inside the caller's namespace.

use base64::Engine;
use zeroize::Zeroizing;

use super::types::*;
use super::TokenHolder;
use super::{idempotency, Node, ServiceError};
use crate::acl::{path, Capability};
use crate::barrier::BarrierError;
use crate::clock::rfc3339;
use crate::keyspace;
use crate::secret::SecretString;
use crate::state::command::{Applied, Command};

impl Node {
    // ----- kv ---------------------------------------------------------------

    pub(super) fn allow(
        caller: &TokenHolder,
        path: &str,
        cap: Capability,
    ) -> Result<(), ServiceError> {
        if caller.acl.allows(path, cap) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(caller.denial(
                &cap.to_string(),
                &caller.record.namespace,
                path,
            )))
        }
    }

    /// The capability (create or update) and check-and-set checks of a
    /// write, against the secret's version `current` (0 = absent).
    fn put_precheck(
        caller: &TokenHolder,
        path: &str,
        cas: Option<u64>,
        current: u64,
    ) -> Result<(), ServiceError> {
        let cap = if current > 0 {
            Capability::Update
        } else {
            Capability::Create
        };
        if !caller.acl.allows(path, cap) {
            let action = caller.acl.write_action(path, cap);
            return Err(ServiceError::Forbidden(caller.denial(
                &action,
                &caller.record.namespace,
                path,
            )));
        }
        match cas {
            Some(expected) if expected != current => Err(ServiceError::Conflict(format!(
                "check-and-set failed: expected version {expected}, found {current}"
            ))),
            _ => Ok(()),
        }
    }

    /// Write a secret in the caller's namespace. With an idempotency key, a
    /// repeat of the same write within its window gets the first outcome.
    pub async fn put_secret(
        &self,
        caller: &TokenHolder,
        raw_path: &str,
        req: PutSecretRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<PutSecretResponse, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        let path = path::canonical_path(raw_path)?;
        let value: Zeroizing<Vec<u8>> = match (req.value, req.value_base64) {
            (Some(v), None) => Zeroizing::new(v.expose().as_bytes().to_vec()),
            (None, Some(b)) => Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b.expose())
                    .map_err(|_| ServiceError::bad("value_base64 is not valid base64"))?,
            ),
            _ => {
                return Err(ServiceError::bad(
                    "give exactly one of value or value_base64",
                ))
            }
        };
        if value.len() > self.settings.max_value_bytes {
            return Err(ServiceError::TooLarge(format!(
                "value is {} bytes; the limit is {}",
                value.len(),
                self.settings.max_value_bytes
            )));
        }
        let namespace = caller.record.namespace.clone();
        let cas = req.cas.map(|c| c.to_be_bytes());
        // The value is part of the request: the same key with another value
        // is another request (409), never silently answered with the first.
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "put-secret",
            &[
                path.as_bytes(),
                cas.as_ref().map_or(&[][..], |c| &c[..]),
                &value[..],
            ],
        )?;
        if idempotency.is_some()
            && (caller.acl.allows(&path, Capability::Create)
                || caller.acl.allows(&path, Capability::Update))
        {
            // A retry may find its own first attempt applied (the secret now
            // exists, the version moved on): leave the exact capability and
            // check-and-set checks to apply, which answers a retry with the
            // first outcome.
        } else {
            // Checked here so a doomed write does not spend an encryption
            // (or force a rotation); apply checks again for races. This
            // node's state may lag the leader's, so a rejection is only
            // given after catching up: otherwise a lagging follower would
            // answer with a version that was already replaced (found by
            // jepsen/, see its README).
            let version = self
                .sm()
                .secret(&namespace, &path)?
                .map_or(0, |r| r.version);
            if let Err(e) = Self::put_precheck(caller, &path, req.cas, version) {
                let may_write = caller.acl.allows(&path, Capability::Create)
                    || caller.acl.allows(&path, Capability::Update);
                if !may_write {
                    // No state of the secret lets this caller write here.
                    return Err(e);
                }
                self.linearize().await?;
                let version = self
                    .sm()
                    .secret(&namespace, &path)?
                    .map_or(0, |r| r.version);
                Self::put_precheck(caller, &path, req.cas, version)?;
            }
        }
        let storage_key = keyspace::kv_key(&namespace, &path);
        let (term, ciphertext) = self.encrypt_value(&storage_key, &value).await?;
        let applied = self
            .raft
            .propose_with(
                Command::PutSecret {
                    by: caller.actor(),
                    namespace,
                    path,
                    cas: req.cas,
                    term,
                    ciphertext,
                },
                idempotency,
            )
            .await?;
        match applied {
            Applied::Version(version) => Ok(PutSecretResponse { version }),
            _ => Err(ServiceError::Internal),
        }
    }

    /// Read a secret from the caller's namespace; a linearizable read sees
    /// every write acknowledged before it started, a stale one this node's
    /// own state.
    pub async fn get_secret(
        &self,
        caller: &TokenHolder,
        raw_path: &str,
    ) -> Result<SecretResponse, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        let path = path::canonical_path(raw_path)?;
        Self::allow(caller, &path, Capability::Read)?;
        let namespace = &caller.record.namespace;
        let record = self
            .sm()
            .secret(namespace, &path)?
            .ok_or_else(|| ServiceError::NotFound(format!("no secret at {path}")))?;
        let storage_key = keyspace::kv_key(namespace, &path);
        let plain = match self.barrier.decrypt(&storage_key, &record.ciphertext) {
            Err(BarrierError::UnknownTerm(_)) => {
                self.reload_keychain()?;
                self.barrier.decrypt(&storage_key, &record.ciphertext)
            }
            other => other,
        }
        .map_err(|e| {
            if matches!(e, BarrierError::Integrity | BarrierError::UnknownTerm(_)) {
                tracing::warn!(namespace = %namespace, path = %path, "stored secret failed its integrity check");
            }
            ServiceError::from(e)
        })?;
        let (value, value_base64) = match std::str::from_utf8(&plain) {
            Ok(s) => (Some(SecretString::new(s.to_string())), None),
            Err(_) => (
                None,
                Some(SecretString::new(
                    base64::engine::general_purpose::STANDARD.encode(plain.as_slice()),
                )),
            ),
        };
        Ok(SecretResponse {
            value,
            value_base64,
            version: record.version,
            created_at: rfc3339(record.created_at_ms),
            updated_at: rfc3339(record.updated_at_ms),
        })
    }

    /// Delete a secret from the caller's namespace (idempotency key as for
    /// [`Node::put_secret`]).
    pub async fn delete_secret(
        &self,
        caller: &TokenHolder,
        raw_path: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        let path = path::canonical_path(raw_path)?;
        Self::allow(caller, &path, Capability::Delete)?;
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "delete-secret",
            &[path.as_bytes()],
        )?;
        let command = Command::DeleteSecret {
            by: caller.actor(),
            namespace: caller.record.namespace.clone(),
            path: path.clone(),
        };
        self.propose_delete(command, idempotency, || {
            ServiceError::NotFound(format!("no secret at {path}"))
        })
        .await
    }

    /// Names one level below `prefix` in the caller's namespace, one page
    /// of them (`consistency` as for a read). Reads keys only, skips each
    /// folder's subtree and stops at the page's limit; see
    /// [`crate::state::listing::list_level`]. Nothing under the prefix is
    /// `NotFound` on a first page; a later page (with a cursor) may be empty.
    pub async fn list_secrets(
        &self,
        caller: &TokenHolder,
        raw_prefix: &str,
        page: &ListPage,
    ) -> Result<KeyList, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        let prefix = path::list_prefix(raw_prefix)?;
        let cursor = page.cursor();
        if let Some(c) = cursor {
            check_cursor(&prefix, c)?;
        }
        Self::allow(caller, &prefix, Capability::List)?;
        let found =
            self.sm()
                .secret_names(&caller.record.namespace, &prefix, cursor, page.limit())?;
        if found.names.is_empty() && cursor.is_none() {
            return Err(ServiceError::NotFound(format!("nothing under {prefix:?}")));
        }
        Ok(KeyList {
            cursor: found
                .truncated
                .then(|| found.names.last().cloned())
                .flatten(),
            truncated: found.truncated,
            keys: found.names,
        })
    }
}

/// Check a list cursor: one name of a listing under `prefix` (`db` or
/// `app/`), which with the prefix must form a valid path.
fn check_cursor(prefix: &str, cursor: &str) -> Result<(), ServiceError> {
    let stem = cursor.strip_suffix('/').unwrap_or(cursor);
    if stem.is_empty() || stem.contains('/') {
        return Err(ServiceError::bad(
            "cursor must be one name of the listing (as a previous page returned it)",
        ));
    }
    path::canonical_path(&format!("{prefix}{stem}"))?;
    Ok(())
}
