//! What the Secrets Store CSI Driver sends in `MountRequest.attributes`: a
//! JSON object of strings holding the `SecretProviderClass` parameters, the
//! pod's fields, and (when the `CSIDriver` object lists `tokenRequests`)
//! the pod's ServiceAccount tokens by audience.
//!
//! Invariant: parsing is bounded ([`MAX_ATTRIBUTES_BYTES`], string values
//! only, at most [`MAX_PARAMETERS`] keys) and keeps every token a
//! [`SecretString`]: no error message, `Debug` output or log line quotes a
//! token or the attributes' text.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

use crate::secret::SecretString;

/// Largest `attributes` accepted (a few tokens of about 1 KiB and the
/// parameters fit many times).
pub const MAX_ATTRIBUTES_BYTES: usize = 256 * 1024;

/// Most keys the attributes may hold.
pub const MAX_PARAMETERS: usize = 64;

/// The pod's name.
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// The pod's uid.
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
/// The pod's ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
/// The pod's ServiceAccount tokens: a JSON map of audience to `{"token",
/// "expirationTimestamp"}`, present when the `CSIDriver` lists
/// `tokenRequests`.
pub const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// What is wrong with the attributes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AttributesError {
    /// Not a JSON object of strings, or over the bounds.
    #[error("the mount attributes are not usable: {0}")]
    Malformed(String),
    /// A pod field the driver always sends is missing.
    #[error("the mount attributes lack {0}: is the caller the Secrets Store CSI Driver?")]
    MissingPodField(&'static str),
    /// No token for the audience.
    #[error(
        "the driver sent no ServiceAccount token for audience {audience:?}: add \
         `tokenRequests: [{{audience: {audience}}}]` to the CSIDriver object \
         secrets-store.csi.k8s.io (or set the SecretProviderClass parameter audience to one it \
         lists)"
    )]
    NoToken {
        /// The audience asked for.
        audience: String,
    },
}

/// Where a JSON error is, and never what: serde_json's own message may
/// quote a string it did not expect (a token).
fn at(e: &serde_json::Error) -> String {
    format!("at line {} column {}", e.line(), e.column())
}

/// One ServiceAccount token the driver passed.
#[derive(Deserialize)]
struct TokenEntry {
    token: SecretString,
    #[serde(rename = "expirationTimestamp", default)]
    expiration: Option<String>,
}

/// The parsed attributes of one Mount.
pub struct MountAttributes {
    /// The pod's name.
    pub pod_name: String,
    /// The pod's Kubernetes namespace.
    pub pod_namespace: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// The `SecretProviderClass` parameters (every other key).
    pub parameters: BTreeMap<String, String>,
    tokens: BTreeMap<String, (SecretString, Option<String>)>,
}

impl std::fmt::Debug for MountAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountAttributes")
            .field("pod_name", &self.pod_name)
            .field("pod_namespace", &self.pod_namespace)
            .field("pod_uid", &self.pod_uid)
            .field("service_account", &self.service_account)
            .field("parameters", &self.parameters)
            .field("token_audiences", &self.tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MountAttributes {
    /// Parse the attributes' JSON text.
    pub fn parse(text: &str) -> Result<MountAttributes, AttributesError> {
        let malformed = |m: String| AttributesError::Malformed(m);
        if text.len() > MAX_ATTRIBUTES_BYTES {
            return Err(malformed(format!(
                "{} bytes; the limit is {MAX_ATTRIBUTES_BYTES}",
                text.len()
            )));
        }
        let mut map: BTreeMap<String, String> = serde_json::from_str(text)
            .map_err(|e| malformed(format!("not a JSON object of strings ({})", at(&e))))?;
        if map.len() > MAX_PARAMETERS {
            return Err(malformed(format!(
                "{} keys; the limit is {MAX_PARAMETERS}",
                map.len()
            )));
        }
        let mut take = |key: &'static str| {
            map.remove(key)
                .filter(|v| !v.is_empty())
                .ok_or(AttributesError::MissingPodField(key))
        };
        let pod_name = take(POD_NAME)?;
        let pod_namespace = take(POD_NAMESPACE)?;
        let pod_uid = take(POD_UID)?;
        let service_account = take(SERVICE_ACCOUNT)?;
        let tokens = match map.remove(TOKENS).filter(|t| !t.is_empty()) {
            None => BTreeMap::new(),
            Some(raw) => {
                let raw = SecretString::new(raw);
                let entries: BTreeMap<String, TokenEntry> = serde_json::from_str(raw.expose())
                    .map_err(|e| {
                        malformed(format!(
                            "{TOKENS} is not a map of audience to {{token, expirationTimestamp}} \
                             ({})",
                            at(&e)
                        ))
                    })?;
                entries
                    .into_iter()
                    .map(|(aud, e)| (aud, (e.token, e.expiration)))
                    .collect()
            }
        };
        Ok(MountAttributes {
            pod_name,
            pod_namespace,
            pod_uid,
            service_account,
            parameters: map,
            tokens,
        })
    }

    /// The pod's ServiceAccount token for `audience`, and its expiry as the
    /// driver gave it (RFC 3339), or a refusal that says how to get one.
    pub fn token_for(
        &self,
        audience: &str,
    ) -> Result<(&SecretString, Option<&str>), AttributesError> {
        self.tokens
            .get(audience)
            .map(|(token, expiration)| (token, expiration.as_deref()))
            .ok_or_else(|| AttributesError::NoToken {
                audience: audience.chars().take(256).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.secret-part.sig";

    fn attributes(extra: serde_json::Value) -> String {
        let tokens =
            json!({"kstash": {"token": TOKEN, "expirationTimestamp": "2026-12-05T07:00:00Z"}});
        let mut base = json!({
            POD_NAME: "web-0",
            POD_NAMESPACE: "shop",
            POD_UID: "0b0e-uid",
            SERVICE_ACCOUNT: "web",
            TOKENS: tokens.to_string(),
            "role": "web",
            "objects": "- path: db/password\n  fileName: password\n",
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base.to_string()
    }

    #[test]
    fn the_drivers_attributes_parse_into_pod_fields_parameters_and_tokens() {
        let a = MountAttributes::parse(&attributes(json!({}))).unwrap();
        assert_eq!(
            (
                a.pod_name.as_str(),
                a.pod_namespace.as_str(),
                a.pod_uid.as_str()
            ),
            ("web-0", "shop", "0b0e-uid")
        );
        assert_eq!(a.service_account, "web");
        assert_eq!(a.parameters.keys().collect::<Vec<_>>(), ["objects", "role"]);
        let (token, expiry) = a.token_for("kstash").unwrap();
        assert_eq!(token.expose(), TOKEN);
        assert_eq!(expiry, Some("2026-12-05T07:00:00Z"));
        assert!(!format!("{a:?}").contains("secret-part"));
    }

    #[test]
    fn a_missing_audience_says_how_to_get_a_token() {
        let a = MountAttributes::parse(&attributes(json!({}))).unwrap();
        let e = a.token_for("vault").unwrap_err();
        assert!(e.to_string().contains("tokenRequests"), "{e}");
        let none = MountAttributes::parse(&attributes(json!({ TOKENS: "" }))).unwrap();
        assert!(matches!(
            none.token_for("kstash"),
            Err(AttributesError::NoToken { .. })
        ));
    }

    #[test]
    fn bad_attributes_are_refused_without_quoting_a_token() {
        let cases = [
            "not json".to_string(),
            "[]".to_string(),
            json!({POD_NAME: 1}).to_string(),
            attributes(json!({ POD_UID: "" })),
            attributes(json!({ TOKENS: format!("{{\"kstash\": \"{TOKEN}\"}}") })),
            attributes(json!({ TOKENS: format!("{{\"kstash\": {{\"token\": \"{TOKEN}\"") })),
            "x".repeat(MAX_ATTRIBUTES_BYTES + 1),
            serde_json::to_string(
                &(0..=MAX_PARAMETERS)
                    .map(|i| (format!("k{i}"), "v".to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .unwrap(),
        ];
        for case in cases {
            let e = MountAttributes::parse(&case).unwrap_err();
            assert!(!e.to_string().contains("secret-part"), "{e}");
        }
        assert_eq!(
            MountAttributes::parse(&json!({POD_NAME: "p"}).to_string()).unwrap_err(),
            AttributesError::MissingPodField(POD_NAMESPACE)
        );
    }
}
