//! The REST bodies as the client sees them.
//!
//! [`crate::service::types`] declares the server's side: requests there only
//! deserialize and responses only serialize. These are their mirrors, each
//! checked against the server's type by a unit test below, so a renamed field
//! fails `cargo test` instead of a user's command.
//!
//! Invariant: every secret is a [`SecretString`] (zeroized, `<redacted>` in
//! `Debug`); responses serialize back to the server's JSON unchanged, which is
//! what `--format json` prints.

use serde::{Deserialize, Serialize};

use crate::acl::Policy;
use crate::secret::SecretString;

/// Named encryption keys: the server's own types, which serialize and
/// deserialize both (none of them carries key material; the decrypted
/// plaintext is a [`SecretString`]).
pub use crate::service::types::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, NamedKeyConfig, NamedKeyInfo,
    NamedKeyList, NamedKeyVersionInfo,
};

/// `POST /v1/sys/init`.
#[derive(Serialize, Debug)]
pub struct InitRequest {
    /// Unseal keys to make.
    pub shares: u32,
    /// Unseal keys needed to unseal.
    pub threshold: u32,
    /// Gatekeeper tokens to mint.
    pub gatekeeper_tokens: u32,
}

/// Every secret init made, shown once.
#[derive(Serialize, Deserialize, Debug)]
pub struct InitResponse {
    /// Shamir shares of the gatekeeper key.
    pub unseal_keys: Vec<SecretString>,
    /// The access key.
    pub access_key: SecretString,
    /// Single-use gatekeeper tokens.
    pub gatekeeper_tokens: Vec<SecretString>,
}

/// `GET /v1/sys/status`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether init has run.
    pub initialized: bool,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// Unseal keys needed.
    pub threshold: u32,
    /// Unseal keys made.
    pub shares: u32,
    /// Unseal keys given so far.
    pub progress: u32,
    /// Storage backend name.
    pub storage: String,
    /// Server version.
    pub version: String,
    /// The answering node's id.
    pub node_id: u64,
    /// Whether the answering node leads.
    pub leader: bool,
    /// The leader the answering node knows of.
    #[serde(default)]
    pub leader_id: Option<u64>,
    /// Active encryption key term (only while unsealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_term: Option<u32>,
    /// Every node of the cluster.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// Whether the answering node was removed from the cluster.
    #[serde(default)]
    pub removed: bool,
}

/// One node as seen in status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Node id.
    pub id: u64,
    /// Client address.
    pub address: String,
    /// Whether its barrier is sealed; `None` when not known (not asked, or
    /// no answer).
    #[serde(default)]
    pub sealed: Option<bool>,
    /// Whether it leads.
    pub leader: bool,
    /// Whether it answered: `None` when it was not asked.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// The index of the last log entry it applied, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<u64>,
}

/// `POST /v1/sys/unseal`: exactly one of the three.
#[derive(Serialize, Debug, Default)]
pub struct UnsealRequest<'a> {
    /// One unseal key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a SecretString>,
    /// A gatekeeper token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gatekeeper_token: Option<&'a SecretString>,
    /// Forget the keys given so far.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// Status after an unseal call, plus a used gatekeeper token's replacement.
#[derive(Serialize, Deserialize, Debug)]
pub struct UnsealResponse {
    /// Status after the call.
    #[serde(flatten)]
    pub status: Status,
    /// The replacement gatekeeper token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gatekeeper_token: Option<SecretString>,
}

/// Proof of the gatekeeper key: a gatekeeper token or a threshold of unseal keys.
#[derive(Serialize, Debug, Default)]
pub struct GatekeeperAuth {
    /// A gatekeeper token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gatekeeper_token: Option<SecretString>,
    /// Unseal keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<SecretString>,
}

/// `POST /v1/sys/raft/remove`.
#[derive(Serialize, Debug)]
pub struct RemoveRequest<'a> {
    /// The node id to remove.
    pub node_id: u64,
    /// The operator's proof.
    #[serde(flatten)]
    pub auth: &'a GatekeeperAuth,
}

/// One member, from `raft/peers`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Peer {
    /// Node id.
    pub id: u64,
    /// Client API address.
    pub api_addr: String,
    /// Cluster address.
    pub cluster_addr: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether it leads.
    pub leader: bool,
    /// Highest log index known to match the leader's (leader only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
}

/// Result of `raft/peers`.
#[derive(Serialize, Deserialize, Debug)]
pub struct PeersResponse {
    /// The node that answered.
    pub node_id: u64,
    /// Every member.
    pub peers: Vec<Peer>,
}

/// Result of seal, rotate, access-key rotate and gatekeeper-token renew.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct SysResponse {
    /// The replacement gatekeeper token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gatekeeper_token: Option<SecretString>,
    /// New active key term (rotate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_term: Option<u32>,
    /// New access key (access-key rotate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<SecretString>,
}

/// `POST /v1/sys/gatekeeper-tokens`.
#[derive(Serialize, Debug)]
pub struct MintGatekeeperTokensRequest<'a> {
    /// Unseal keys.
    pub keys: &'a [SecretString],
    /// How many tokens.
    pub count: u32,
}

/// Newly minted gatekeeper tokens.
#[derive(Serialize, Deserialize, Debug)]
pub struct MintGatekeeperTokensResponse {
    /// The tokens, shown once.
    pub gatekeeper_tokens: Vec<SecretString>,
    /// Their ids.
    pub ids: Vec<String>,
}

/// `POST /v1/sys/gatekeeper-tokens/list`.
#[derive(Serialize, Debug)]
pub struct KeysRequest<'a> {
    /// Unseal keys.
    pub keys: &'a [SecretString],
}

/// `POST /v1/sys/gatekeeper-tokens/renew`.
#[derive(Serialize, Debug)]
pub struct RenewGatekeeperTokenRequest<'a> {
    /// The token to renew.
    pub gatekeeper_token: &'a SecretString,
}

/// Answer of `POST /v1/sys/gatekeeper-tokens/list`.
#[derive(Serialize, Deserialize, Debug)]
pub struct GatekeeperTokenList {
    /// The tokens' metadata.
    pub tokens: Vec<GatekeeperTokenInfo>,
}

/// A gatekeeper token's metadata (never the token).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct GatekeeperTokenInfo {
    /// Hex id.
    pub id: String,
    /// Minted at.
    pub created_at: String,
    /// Used at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<String>,
    /// Still usable until.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<String>,
}

/// `POST /v1/sys/gatekeeper-tokens/revoke`.
#[derive(Serialize, Debug, Default)]
pub struct RevokeGatekeeperTokenRequest<'a> {
    /// The token itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gatekeeper_token: Option<&'a SecretString>,
    /// Or its id, with unseal keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// Unseal keys, with `id`.
    #[serde(skip_serializing_if = "no_keys")]
    pub keys: &'a [SecretString],
}

fn no_keys(keys: &&[SecretString]) -> bool {
    keys.is_empty()
}

/// `POST /v1/sys/rekey`.
#[derive(Serialize, Debug)]
pub struct RekeyRequest<'a> {
    /// Current unseal keys.
    pub keys: &'a [SecretString],
    /// New number of unseal keys.
    pub shares: u32,
    /// New threshold.
    pub threshold: u32,
    /// Gatekeeper tokens to mint.
    pub gatekeeper_tokens: u32,
}

/// New unseal keys and gatekeeper tokens.
#[derive(Serialize, Deserialize, Debug)]
pub struct RekeyResponse {
    /// The new unseal keys.
    pub unseal_keys: Vec<SecretString>,
    /// The new gatekeeper tokens.
    pub gatekeeper_tokens: Vec<SecretString>,
}

/// `POST /v1/auth/access-key/login`.
#[derive(Serialize, Debug)]
pub struct LoginRequest<'a> {
    /// The access key.
    pub access_key: &'a SecretString,
    /// Namespace of the token.
    pub namespace: &'a str,
    /// Policy names.
    pub policies: &'a [String],
    /// Lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// A new access token.
#[derive(Serialize, Deserialize, Debug)]
pub struct LoginResponse {
    /// The bearer token.
    pub token: SecretString,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Namespace.
    pub namespace: String,
    /// Policies.
    pub policies: Vec<String>,
    /// Notes from the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/auth/kubernetes/login`; the answer is a [`LoginResponse`].
#[derive(Serialize, Debug)]
pub struct KubernetesLoginRequest<'a> {
    /// The kstash namespace to log in to.
    pub namespace: &'a str,
    /// The Kubernetes login role of that namespace.
    pub role: &'a str,
    /// The pod's ServiceAccount token (a JWT).
    pub jwt: &'a SecretString,
}

/// `PUT /v1/namespaces/{ns}/auth/kubernetes/roles/{name}`.
#[derive(Serialize, Debug)]
pub struct KubernetesRoleRequest<'a> {
    /// `<k8s-namespace>/<name>` or `<k8s-namespace>/*`.
    pub service_accounts: &'a [String],
    /// Policies of the tokens the role mints.
    pub policies: &'a [String],
    /// Lifetime of a minted token in seconds (the server's default, 15 m,
    /// when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// The audience a ServiceAccount token must carry (the server's
    /// default, `kstash`, when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<&'a str>,
}

/// A Kubernetes login role read back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KubernetesRole {
    /// Its name.
    pub name: String,
    /// The service accounts it binds.
    pub service_accounts: Vec<String>,
    /// Policies of the tokens it mints.
    pub policies: Vec<String>,
    /// Lifetime of a minted token, as a duration (`15m`).
    pub ttl: String,
    /// The audience a ServiceAccount token must carry.
    pub audience: String,
}

/// Kubernetes login role names of a namespace: one page.
#[derive(Serialize, Deserialize, Debug)]
pub struct KubernetesRoleList {
    /// Names.
    pub roles: Vec<String>,
    /// More names follow this page.
    #[serde(default)]
    pub truncated: bool,
    /// When truncated: where the next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `POST /v1/auth/token/renew`.
#[derive(Serialize, Debug, Default)]
pub struct RenewRequest {
    /// Extension in seconds from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub increment: Option<u64>,
}

/// `POST /v1/auth/token/revoke`.
#[derive(Serialize, Debug, Default)]
pub struct RevokeRequest<'a> {
    /// Another token to revoke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a SecretString>,
}

/// `POST /v1/sys/audit/hash`.
#[derive(Serialize, Debug)]
pub struct AuditHashRequest<'a> {
    /// The string to HMAC.
    pub input: &'a SecretString,
}

/// The audit log's HMAC of a string.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuditHashResponse {
    /// `hmac-sha256:<hex>`.
    pub hash: String,
}

/// What a token knows about itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Short id.
    pub accessor: String,
    /// Namespace.
    pub namespace: String,
    /// Policies.
    pub policies: Vec<String>,
    /// Minted at.
    pub created_at: String,
    /// Expires at.
    pub expires_at: String,
    /// Seconds left.
    pub ttl: u64,
    /// Renewal limit.
    pub max_expires_at: String,
}

/// A policy read back.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PolicyResponse {
    /// Its name.
    pub name: String,
    /// Whether it is built in.
    pub builtin: bool,
    /// Its rules.
    #[serde(flatten)]
    pub policy: Policy,
}

/// Policy names of a namespace: one page.
#[derive(Serialize, Deserialize, Debug)]
pub struct PolicyList {
    /// Names.
    pub policies: Vec<String>,
    /// More names follow this page.
    #[serde(default)]
    pub truncated: bool,
    /// When truncated: where the next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `PUT /v1/kv/{path}`: `value` or `value_base64`.
#[derive(Serialize, Debug)]
pub struct PutSecretRequest {
    /// UTF-8 value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
    /// Binary value, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<SecretString>,
    /// Expected current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas: Option<u64>,
}

/// Result of a write.
#[derive(Serialize, Deserialize, Debug)]
pub struct PutSecretResponse {
    /// The version now stored.
    pub version: u64,
}

/// A secret read back.
#[derive(Serialize, Deserialize, Debug)]
pub struct SecretResponse {
    /// UTF-8 value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
    /// Binary value, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<SecretString>,
    /// Version.
    pub version: u64,
    /// First written.
    pub created_at: String,
    /// This version written.
    pub updated_at: String,
}

/// Names one level below a prefix: one page.
#[derive(Serialize, Deserialize, Debug)]
pub struct KeyList {
    /// Names; sub-folders end in '/'.
    pub keys: Vec<String>,
    /// More names follow this page.
    #[serde(default)]
    pub truncated: bool,
    /// When truncated: where the next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    //! Each mirror against the server's own type: server responses must
    //! decode here, client requests must decode there.

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::*;
    use crate::service::types as server;

    fn through<T: Serialize, U: DeserializeOwned>(v: &T) -> U {
        let json = serde_json::to_string(v).unwrap();
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    fn s(x: &str) -> SecretString {
        SecretString::new(x.to_string())
    }

    fn server_status() -> server::Status {
        server::Status {
            initialized: true,
            sealed: false,
            threshold: 3,
            shares: 5,
            progress: 0,
            storage: "memory".into(),
            version: "0.1.0".into(),
            node_id: 1,
            leader: true,
            leader_id: Some(1),
            key_term: Some(2),
            peers: vec![server::PeerStatus {
                id: 1,
                address: "127.0.0.1:8200".into(),
                sealed: Some(false),
                leader: true,
                reachable: Some(true),
                last_applied: Some(7),
            }],
            removed: true,
        }
    }

    #[test]
    fn responses_decode() {
        let st: Status = through(&server_status());
        assert_eq!((st.threshold, st.key_term, st.peers.len()), (3, Some(2), 1));
        assert!(st.removed);

        let u: UnsealResponse = through(&server::UnsealResponse {
            status: server_status(),
            gatekeeper_token: Some(s("ksg_x")),
        });
        assert_eq!(u.gatekeeper_token.unwrap().expose(), "ksg_x");
        assert!(u.status.initialized);

        let i: InitResponse = through(&server::InitResponse {
            unseal_keys: vec![s("a"), s("b")],
            access_key: s("ksa_x"),
            gatekeeper_tokens: vec![s("ksg_y")],
        });
        assert_eq!(i.unseal_keys.len(), 2);

        let r: SysResponse = through(&server::SysResponse {
            gatekeeper_token: None,
            key_term: Some(3),
            access_key: Some(s("ksa_z")),
        });
        assert_eq!(r.key_term, Some(3));

        let m: MintGatekeeperTokensResponse = through(&server::MintGatekeeperTokensResponse {
            gatekeeper_tokens: vec![s("ksg_1")],
            ids: vec!["ab".into()],
        });
        assert_eq!(m.ids, ["ab"]);

        let g: GatekeeperTokenInfo = through(&server::GatekeeperTokenInfo {
            id: "ab".into(),
            created_at: "t".into(),
            used_at: None,
            grace_until: Some("u".into()),
        });
        assert_eq!(g.grace_until.as_deref(), Some("u"));

        let k: RekeyResponse = through(&server::RekeyResponse {
            unseal_keys: vec![s("a")],
            gatekeeper_tokens: vec![],
        });
        assert_eq!(k.unseal_keys.len(), 1);

        let l: LoginResponse = through(&server::LoginResponse {
            token: s("kst_x"),
            expires_at: "t".into(),
            namespace: "team-a".into(),
            policies: vec!["admin".into()],
            warnings: vec![],
        });
        assert_eq!(l.namespace, "team-a");

        let t: TokenInfo = through(&server::TokenInfo {
            accessor: "ab".into(),
            namespace: "n".into(),
            policies: vec![],
            created_at: "c".into(),
            expires_at: "e".into(),
            ttl: 5,
            max_expires_at: "m".into(),
        });
        assert_eq!(t.ttl, 5);

        let policy: Policy =
            serde_json::from_str(r#"{"rules":[{"path":"app/*","capabilities":["read"]}]}"#)
                .unwrap();
        let p: PolicyResponse = through(&server::PolicyResponse {
            name: "p".into(),
            builtin: false,
            policy: policy.clone(),
        });
        assert_eq!(p.policy, policy);

        let pl: PolicyList = through(&server::PolicyList {
            policies: vec!["admin".into()],
            truncated: false,
            cursor: None,
        });
        assert_eq!(pl.policies, ["admin"]);
        assert!(!pl.truncated && pl.cursor.is_none());
        let pl: PolicyList = through(&server::PolicyList {
            policies: vec!["a".into()],
            truncated: true,
            cursor: Some("a".into()),
        });
        assert!(pl.truncated && pl.cursor.as_deref() == Some("a"));

        let role: KubernetesRole = through(&server::KubernetesRoleResponse {
            name: "web".into(),
            service_accounts: vec!["shop/web".into(), "batch/*".into()],
            policies: vec!["app-ro".into()],
            ttl: "15m".into(),
            audience: "kstash".into(),
        });
        assert_eq!((role.service_accounts.len(), role.ttl.as_str()), (2, "15m"));
        let rl: KubernetesRoleList = through(&server::KubernetesRoleList {
            roles: vec!["a".into()],
            truncated: true,
            cursor: Some("a".into()),
        });
        assert!(rl.truncated && rl.cursor.as_deref() == Some("a") && rl.roles == ["a"]);
        let rl: KubernetesRoleList = through(&server::KubernetesRoleList {
            roles: vec![],
            truncated: false,
            cursor: None,
        });
        assert!(!rl.truncated && rl.cursor.is_none());

        let w: PutSecretResponse = through(&server::PutSecretResponse { version: 4 });
        assert_eq!(w.version, 4);

        let sr: SecretResponse = through(&server::SecretResponse {
            value: Some(s("v")),
            value_base64: None,
            version: 1,
            created_at: "c".into(),
            updated_at: "u".into(),
        });
        assert_eq!(sr.value.unwrap().expose(), "v");

        let kl: KeyList = through(&server::KeyList {
            keys: vec!["a/".into()],
            truncated: false,
            cursor: None,
        });
        assert_eq!(kl.keys, ["a/"]);
        assert!(!kl.truncated && kl.cursor.is_none());
        let kl: KeyList = through(&server::KeyList {
            keys: vec!["a/".into()],
            truncated: true,
            cursor: Some("a/".into()),
        });
        assert!(kl.truncated && kl.cursor.as_deref() == Some("a/"));
    }

    #[test]
    fn requests_decode() {
        let keys = [s("k1"), s("k2")];
        let _: server::InitRequest = through(&InitRequest {
            shares: 5,
            threshold: 3,
            gatekeeper_tokens: 1,
        });
        let u: server::UnsealRequest = through(&UnsealRequest {
            key: Some(&keys[0]),
            ..Default::default()
        });
        assert!(u.key.is_some() && u.gatekeeper_token.is_none() && !u.reset);
        let u: server::UnsealRequest = through(&UnsealRequest {
            reset: true,
            ..Default::default()
        });
        assert!(u.reset);
        let a: server::GatekeeperAuth = through(&GatekeeperAuth {
            gatekeeper_token: None,
            keys: keys.to_vec(),
        });
        assert_eq!(a.keys.len(), 2);
        let _: server::MintGatekeeperTokensRequest = through(&MintGatekeeperTokensRequest {
            keys: &keys,
            count: 2,
        });
        let _: server::KeysRequest = through(&KeysRequest { keys: &keys });
        let r: server::RevokeGatekeeperTokenRequest = through(&RevokeGatekeeperTokenRequest {
            id: Some("ab"),
            keys: &keys,
            ..Default::default()
        });
        assert_eq!(r.id.as_deref(), Some("ab"));
        let _: server::RekeyRequest = through(&RekeyRequest {
            keys: &keys,
            shares: 3,
            threshold: 2,
            gatekeeper_tokens: 1,
        });
        let l: server::LoginRequest = through(&LoginRequest {
            access_key: &keys[0],
            namespace: "team-a",
            policies: &["admin".to_string()],
            ttl: Some(90),
        });
        assert_eq!(l.ttl.unwrap().0.as_secs(), 90);
        let k: server::KubernetesLoginRequest = through(&KubernetesLoginRequest {
            namespace: "team-a",
            role: "web",
            jwt: &keys[1],
        });
        assert_eq!((k.namespace.as_str(), k.role.as_str()), ("team-a", "web"));
        assert_eq!(k.jwt.expose(), "k2");
        let accounts = ["shop/web".to_string(), "batch/*".to_string()];
        let r: server::KubernetesRoleBody = through(&KubernetesRoleRequest {
            service_accounts: &accounts,
            policies: &["app-ro".to_string()],
            ttl: Some(600),
            audience: Some("vault"),
        });
        assert_eq!(r.service_accounts, accounts);
        assert_eq!(r.policies, ["app-ro"]);
        assert_eq!(r.ttl.unwrap().0.as_secs(), 600);
        assert_eq!(r.audience.as_deref(), Some("vault"));
        let r: server::KubernetesRoleBody = through(&KubernetesRoleRequest {
            service_accounts: &accounts,
            policies: &[],
            ttl: None,
            audience: None,
        });
        assert!(r.ttl.is_none() && r.audience.is_none() && r.policies.is_empty());
        let n: server::RenewRequest = through(&RenewRequest {
            increment: Some(60),
        });
        assert_eq!(n.increment.unwrap().0.as_secs(), 60);
        let _: server::RevokeRequest = through(&RevokeRequest {
            token: Some(&keys[0]),
        });
        let p: server::PutSecretRequest = through(&PutSecretRequest {
            value: Some(s("v")),
            value_base64: None,
            cas: Some(0),
        });
        assert_eq!(p.cas, Some(0));
    }
}
