//! Requests and responses of the service layer. REST uses them as JSON bodies
//! directly; gRPC converts to and from its messages.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::MAX_LIST;
use crate::acl::Policy;
use crate::secret::SecretString;

/// `POST /v1/sys/init`.
#[derive(Deserialize, Debug, Clone, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Number of unseal keys to make (1..=255).
    pub shares: u32,
    /// Unseal keys needed to unseal (2..=shares; 1 only when shares is 1).
    pub threshold: u32,
    /// Gatekeeper tokens to mint at once (default 1, at most 16).
    #[serde(default = "one")]
    pub gatekeeper_tokens: u32,
}

fn one() -> u32 {
    1
}

/// The result of init: every secret it creates, shown exactly once.
#[derive(Serialize, Debug, ToSchema)]
pub struct InitResponse {
    /// Shamir shares of the gatekeeper key.
    #[schema(value_type = Vec<String>)]
    pub unseal_keys: Vec<SecretString>,
    /// The access key: mints access tokens.
    #[schema(value_type = String)]
    pub access_key: SecretString,
    /// Single-use gatekeeper tokens for seal/unseal/rotate.
    #[schema(value_type = Vec<String>)]
    pub gatekeeper_tokens: Vec<SecretString>,
}

/// `GET /v1/sys/status`: what anyone may know, sealed or not.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct Status {
    /// Whether init has run.
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// Unseal keys needed (0 before init).
    pub threshold: u32,
    /// Unseal keys made (0 before init).
    pub shares: u32,
    /// Unseal keys given so far towards the threshold.
    pub progress: u32,
    /// Storage backend name.
    pub storage: String,
    /// kstash version.
    pub version: String,
    /// This node's id.
    pub node_id: u64,
    /// Whether this node is the leader.
    pub leader: bool,
    /// The leader this node knows of (itself included), if any.
    pub leader_id: Option<u64>,
    /// Active encryption key term (only while unsealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_term: Option<u32>,
    /// Every node of the cluster.
    pub peers: Vec<PeerStatus>,
    /// Whether this node was removed from the cluster: it serves no
    /// requests, and `peers` lists the members that removed it.
    pub removed: bool,
}

/// One node as seen in status.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct PeerStatus {
    /// Node id.
    pub id: u64,
    /// Client address.
    pub address: String,
    /// Whether its barrier is sealed, as it said itself; `null` when not
    /// known: it was not asked (`reachable` is `null`) or did not answer
    /// (`reachable` is `false`). Never a guess.
    pub sealed: Option<bool>,
    /// Whether it leads (as the answering node sees it).
    pub leader: bool,
    /// Whether it answered the status call (bounded, about 500 ms): `true`
    /// it answered, `false` it was asked and did not, `null` it was not
    /// asked (health asks no peer). The answering node itself is `true`.
    pub reachable: Option<bool>,
    /// The index of the last log entry it applied, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<u64>,
}

/// `POST /v1/sys/unseal`: exactly one of `key`, `gatekeeper_token`, `reset`.
#[derive(Deserialize, Debug, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    /// One unseal key (progress is kept across calls).
    #[schema(value_type = Option<String>)]
    pub key: Option<SecretString>,
    /// A gatekeeper token (unseals in one call; returns its replacement).
    #[schema(value_type = Option<String>)]
    pub gatekeeper_token: Option<SecretString>,
    /// Forget the keys given so far.
    #[serde(default)]
    pub reset: bool,
}

/// Status plus, after a gatekeeper-token operation, the token's replacement.
#[derive(Serialize, Debug, ToSchema)]
pub struct UnsealResponse {
    /// Status after the call.
    #[serde(flatten)]
    pub status: Status,
    /// The replacement for the gatekeeper token that was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub gatekeeper_token: Option<SecretString>,
}

/// Proof of the gatekeeper key for sys operations: a gatekeeper token, or a
/// threshold of unseal keys in one request.
#[derive(Deserialize, Debug, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatekeeperAuth {
    /// A gatekeeper token (consumed; the response carries its replacement).
    #[schema(value_type = Option<String>)]
    pub gatekeeper_token: Option<SecretString>,
    /// At least `threshold` unseal keys.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<SecretString>,
}

/// Response of sys operations authorised by [`GatekeeperAuth`].
#[derive(Serialize, Debug, Default, ToSchema)]
pub struct SysResponse {
    /// The replacement for the gatekeeper token that was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub gatekeeper_token: Option<SecretString>,
    /// New active key term (rotate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_term: Option<u32>,
    /// New access key (access-key rotate).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub access_key: Option<SecretString>,
}

/// `POST /v1/sys/gatekeeper-tokens`: mint tokens with unseal keys.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintGatekeeperTokensRequest {
    /// At least `threshold` unseal keys.
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<SecretString>,
    /// How many tokens (default 1, at most 16).
    #[serde(default = "one")]
    pub count: u32,
}

/// A gatekeeper token as listed: its id, never the token.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct GatekeeperTokenInfo {
    /// Hex id (SHA-256 of the token).
    pub id: String,
    /// When it was minted (RFC 3339).
    pub created_at: String,
    /// When it was used, if it was (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_at: Option<String>,
    /// Until when a used token still works (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<String>,
}

/// Newly minted gatekeeper tokens.
#[derive(Serialize, Debug, ToSchema)]
pub struct MintGatekeeperTokensResponse {
    /// The tokens, shown once.
    #[schema(value_type = Vec<String>)]
    pub gatekeeper_tokens: Vec<SecretString>,
    /// Their ids, for revocation.
    pub ids: Vec<String>,
}

/// `POST /v1/sys/gatekeeper-tokens/list`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    /// At least `threshold` unseal keys.
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<SecretString>,
}

/// `POST /v1/sys/gatekeeper-tokens/revoke`: the token itself, or an id with
/// unseal keys.
#[derive(Deserialize, Debug, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeGatekeeperTokenRequest {
    /// The token to revoke (possession is authority).
    #[schema(value_type = Option<String>)]
    pub gatekeeper_token: Option<SecretString>,
    /// Hex id of the token to revoke (needs `keys`).
    pub id: Option<String>,
    /// Unseal keys, with `id`.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<SecretString>,
}

/// `POST /v1/sys/rekey`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RekeyRequest {
    /// At least `threshold` current unseal keys.
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<SecretString>,
    /// New number of unseal keys.
    pub shares: u32,
    /// New threshold.
    pub threshold: u32,
    /// Gatekeeper tokens to mint for the new gatekeeper key (default 1).
    #[serde(default = "one")]
    pub gatekeeper_tokens: u32,
}

/// The result of a rekey: new unseal keys and gatekeeper tokens.
#[derive(Serialize, Debug, ToSchema)]
pub struct RekeyResponse {
    /// The new unseal keys.
    #[schema(value_type = Vec<String>)]
    pub unseal_keys: Vec<SecretString>,
    /// New gatekeeper tokens (every older one is revoked).
    #[schema(value_type = Vec<String>)]
    pub gatekeeper_tokens: Vec<SecretString>,
}

/// A token lifetime: seconds as a number, or a duration string like `"90s"`,
/// `"15m"`, `"1h"`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(try_from = "DurationInput")]
#[schema(value_type = String, example = "1h")]
pub struct Ttl(pub std::time::Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationInput {
    Seconds(u64),
    Text(String),
}

impl TryFrom<DurationInput> for Ttl {
    type Error = String;
    fn try_from(d: DurationInput) -> Result<Self, String> {
        match d {
            DurationInput::Seconds(s) => Ok(Ttl(std::time::Duration::from_secs(s))),
            DurationInput::Text(t) => {
                if let Ok(s) = t.parse::<u64>() {
                    return Ok(Ttl(std::time::Duration::from_secs(s)));
                }
                humantime::parse_duration(&t)
                    .map(Ttl)
                    .map_err(|e| format!("invalid duration {t:?}: {e}"))
            }
        }
    }
}

/// `POST /v1/auth/access-key/login`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The access key.
    #[schema(value_type = String)]
    pub access_key: SecretString,
    /// The namespace the token is locked to.
    pub namespace: String,
    /// Policy names (may include the built-in `admin`).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Lifetime (default 1 h).
    pub ttl: Option<Ttl>,
}

/// A new access token.
#[derive(Serialize, Debug, ToSchema)]
pub struct LoginResponse {
    /// The bearer token.
    #[schema(value_type = String)]
    pub token: SecretString,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// Its namespace.
    pub namespace: String,
    /// Its policies.
    pub policies: Vec<String>,
    /// Notes, e.g. policies that do not exist yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/auth/token/renew`.
#[derive(Deserialize, Debug, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Extend by this much from now (default: the token's TTL).
    pub increment: Option<Ttl>,
}

/// `POST /v1/auth/token/revoke`: with no body, revokes the caller's token.
#[derive(Deserialize, Debug, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Another access token to revoke (possession is authority).
    #[schema(value_type = Option<String>)]
    pub token: Option<SecretString>,
}

/// What a token may know about itself.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct TokenInfo {
    /// Short id (first hex digits of its hash), for audit.
    pub accessor: String,
    /// Namespace.
    pub namespace: String,
    /// Policies.
    pub policies: Vec<String>,
    /// Minted at (RFC 3339).
    pub created_at: String,
    /// Expires at (RFC 3339).
    pub expires_at: String,
    /// Seconds left.
    pub ttl: u64,
    /// It cannot be renewed past this (RFC 3339).
    pub max_expires_at: String,
}

/// A policy as returned by the API.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct PolicyResponse {
    /// Its name.
    pub name: String,
    /// Whether it is built in (`admin`).
    pub builtin: bool,
    /// Its rules.
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub policy: Policy,
}

/// Policy names of a namespace, in name order (one page of them).
#[derive(Serialize, Debug, ToSchema)]
pub struct PolicyList {
    /// Names, built-in ones included, sorted.
    pub policies: Vec<String>,
    /// Whether more names follow: the page stopped at its limit. A client
    /// that sees `true` has not seen every policy.
    pub truncated: bool,
    /// Present when `truncated`: the last name of this page; pass it as
    /// `cursor` to get the names after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `PUT /v1/kv/{path}`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// The secret, as UTF-8 text.
    #[schema(value_type = Option<String>)]
    pub value: Option<SecretString>,
    /// The secret as base64, for binary values (instead of `value`).
    #[schema(value_type = Option<String>)]
    pub value_base64: Option<SecretString>,
    /// Expected current version; 0 = the key must not exist.
    pub cas: Option<u64>,
}

/// The result of a write.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct PutSecretResponse {
    /// The version now stored.
    pub version: u64,
}

/// A secret read back.
#[derive(Serialize, Debug, ToSchema)]
pub struct SecretResponse {
    /// The value, when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub value: Option<SecretString>,
    /// The value as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub value_base64: Option<SecretString>,
    /// Its version.
    pub version: u64,
    /// First written (RFC 3339).
    pub created_at: String,
    /// This version written (RFC 3339).
    pub updated_at: String,
}

/// A list call's result: one level below the prefix, in key order;
/// sub-folders end in '/'. One page of at most `limit` names.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct KeyList {
    /// Names relative to the prefix.
    pub keys: Vec<String>,
    /// Whether more names follow: the page stopped at its limit. A client
    /// that sees `true` has not seen every name.
    pub truncated: bool,
    /// Present when `truncated`: the last name of this page (relative to
    /// the prefix, e.g. `db` or `app/`); pass it as `cursor` with the same
    /// prefix to get the names after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Paging of a list call: REST query parameters `cursor` and `limit`, gRPC
/// fields of the same names.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Continue after this name: the `cursor` of the previous page. It is
    /// checked like a path; a name that no longer exists is fine.
    pub cursor: Option<String>,
    /// Most names to return; `None` or 0 means [`MAX_LIST`], and larger
    /// values are cut to [`MAX_LIST`] (the answer's `truncated` says so).
    pub limit: Option<u32>,
}

impl ListPage {
    /// The number of names this page may hold: 1 to [`MAX_LIST`].
    pub fn limit(&self) -> usize {
        match self.limit {
            None | Some(0) => MAX_LIST,
            Some(n) => usize::try_from(n).map_or(MAX_LIST, |n| n.min(MAX_LIST)),
        }
    }

    /// The cursor, with the empty string (gRPC's "unset") read as none.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.is_empty())
    }
}

/// A client's idempotency key (REST header `Idempotency-Key`, gRPC field
/// `idempotency_key`): 1 to 128 characters from `A-Z a-z 0-9 - _ . :`.
/// A write sent again with the same key within ten minutes is answered
/// with the first outcome instead of being applied twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

impl IdempotencyKey {
    /// Check a key; a clear error names what is wrong.
    pub fn parse(key: &str) -> Result<Self, crate::service::ServiceError> {
        let bad = |why: &str| crate::service::ServiceError::bad(format!("idempotency key {why}"));
        if key.is_empty() {
            return Err(bad("is empty"));
        }
        if key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(bad(&format!(
                "is {} characters; at most {MAX_IDEMPOTENCY_KEY} are allowed",
                key.len()
            )));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(bad("may only hold A-Z, a-z, 0-9, '-', '_', '.' and ':'"));
        }
        Ok(IdempotencyKey(key.to_string()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How current a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the read started (the default).
    #[default]
    Linearizable,
    /// This node's own applied state, without asking the leader: faster,
    /// and answers while no leader is known, but may miss recent writes.
    Stale,
}

impl Consistency {
    /// Parse `linearizable` or `stale` (an empty value is the default).
    pub fn parse(s: &str) -> Result<Self, crate::service::ServiceError> {
        match s {
            "" | "linearizable" => Ok(Consistency::Linearizable),
            "stale" => Ok(Consistency::Stale),
            _ => Err(crate::service::ServiceError::bad(
                "consistency must be linearizable or stale",
            )),
        }
    }
}

/// `POST /v1/sys/audit/hash`: a string to HMAC as the audit log does.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditHashRequest {
    /// The string (a token, a key, a value), exactly as it was sent.
    #[schema(value_type = String)]
    pub input: SecretString,
}

/// The HMAC of an [`AuditHashRequest`]'s input.
#[derive(Serialize, Debug, ToSchema)]
pub struct AuditHashResponse {
    /// `hmac-sha256:<64 hex digits>`, as it appears in the audit log.
    pub hash: String,
}

/// `PUT /v1/namespaces/{ns}/auth/kubernetes/roles/{role}`: which Kubernetes
/// service accounts may log in to the namespace through this role, and what
/// their tokens get.
#[derive(Deserialize, Debug, Clone, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRoleBody {
    /// `<k8s-namespace>/<name>`, or `<k8s-namespace>/*` for every service
    /// account of that Kubernetes namespace.
    pub service_accounts: Vec<String>,
    /// Policies of the tokens this role mints (may include `admin`).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Lifetime of a minted token (default 15 m); never past the
    /// ServiceAccount token's own expiry.
    pub ttl: Option<Ttl>,
    /// The audience a ServiceAccount token must carry (default `kstash`).
    pub audience: Option<String>,
}

/// A Kubernetes login role, as stored.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct KubernetesRoleResponse {
    /// The role's name.
    pub name: String,
    /// The service accounts it binds (`<k8s-namespace>/<name>` or `/*`).
    pub service_accounts: Vec<String>,
    /// Policies of the tokens it mints.
    pub policies: Vec<String>,
    /// Lifetime of a minted token, as a duration (`15m`).
    pub ttl: String,
    /// The audience a ServiceAccount token must carry.
    pub audience: String,
}

/// Role names of a namespace, in name order (one page of them).
#[derive(Serialize, Debug, ToSchema)]
pub struct KubernetesRoleList {
    /// Names, sorted.
    pub roles: Vec<String>,
    /// Whether more names follow: the page stopped at its limit.
    pub truncated: bool,
    /// Present when `truncated`: pass it as `cursor` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `POST /v1/auth/kubernetes/login`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLoginRequest {
    /// The kstash namespace to log in to.
    pub namespace: String,
    /// The role in that namespace.
    pub role: String,
    /// The pod's ServiceAccount token (a JWT).
    #[schema(value_type = String)]
    pub jwt: SecretString,
}

/// A successful ServiceAccount login: the answer for the client, and who
/// logged in (for the audit record).
#[derive(Debug)]
pub struct KubernetesLogin {
    /// What the client gets (the shape of the access-key login's answer).
    pub response: LoginResponse,
    /// `system:serviceaccount:<ns>:<name>`.
    pub subject: String,
}

/// One version of a named encryption key (never its material).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct NamedKeyVersionInfo {
    /// 1, 2, …
    pub version: u32,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Its key id, as the KMS plugin reports it.
    pub key_id: String,
}

/// A named encryption key's metadata: `GET /v1/keys/{name}` and the answer
/// of create, rotate and config. Never key material.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct NamedKeyInfo {
    /// The kstash namespace it lives in.
    pub namespace: String,
    /// The key's name.
    pub name: String,
    /// The newest version, which encrypts.
    pub latest_version: u32,
    /// The oldest version that still decrypts.
    pub min_decryption_version: u32,
    /// The key id of the newest version.
    pub key_id: String,
    /// When version 1 was made (RFC 3339).
    pub created_at: String,
    /// Whether the newest version has used up its encryptions (rotate the
    /// key to encrypt again).
    pub exhausted: bool,
    /// Every version, oldest first.
    pub versions: Vec<NamedKeyVersionInfo>,
}

/// Key names of the caller's namespace, in name order (one page of them).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct NamedKeyList {
    /// Names, sorted.
    pub keys: Vec<String>,
    /// Whether more names follow: the page stopped at its limit.
    pub truncated: bool,
    /// Present when `truncated`: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `POST /v1/keys/{name}/config`.
#[derive(Serialize, Deserialize, Debug, Clone, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedKeyConfig {
    /// Versions below this one stop decrypting (1 to the latest version).
    pub min_decryption_version: u32,
}

/// `POST /v1/keys/{name}/encrypt`.
#[derive(Serialize, Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The plaintext, base64 (at most 64 KiB decoded).
    #[schema(value_type = String)]
    pub plaintext: SecretString,
}

/// What an encryption under a named key gives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct EncryptResponse {
    /// `kstash:v<version>:<base64>`.
    pub ciphertext: String,
    /// The version that encrypted.
    pub key_version: u32,
    /// That version's key id.
    pub key_id: String,
}

/// `POST /v1/keys/{name}/decrypt`.
#[derive(Serialize, Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// A ciphertext made by this key: `kstash:v<version>:<base64>`.
    pub ciphertext: String,
}

/// What a decryption under a named key gives.
#[derive(Serialize, Deserialize, Debug, ToSchema)]
pub struct DecryptResponse {
    /// The plaintext, base64.
    #[schema(value_type = String)]
    pub plaintext: SecretString,
    /// The version that decrypted.
    pub key_version: u32,
    /// That version's key id.
    pub key_id: String,
}
