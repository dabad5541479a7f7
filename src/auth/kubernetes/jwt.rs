//! A ServiceAccount token taken apart: its compact JWS parts, its header
//! and its claims, and the checks of the claims.
//!
//! Invariant: every way a token can be wrong maps to one [`Check`], and the
//! time checks read the time they are given (`now_ms`), never the clock, with
//! [`LEEWAY_MS`] for clock skew. Nothing here logs or keeps the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Deserializer};

use super::{Check, ServiceAccount};
use crate::acl::path::validate_namespace;

/// Longest token accepted, in bytes (a projected token is about 1 KiB).
pub const MAX_JWT_BYTES: usize = 16 * 1024;

/// Clock skew allowed between kstash and the API server that signed the
/// token, on `exp`, `nbf` and `iat`.
pub const LEEWAY_MS: u64 = 60_000;

/// Longest ServiceAccount name (a DNS-1123 subdomain).
const MAX_SUBDOMAIN_CHARS: usize = 253;

/// Longest `uid` accepted (Kubernetes uids are 36-character UUIDs).
const MAX_UID_CHARS: usize = 128;

/// A token split into its parts, header and claims decoded; its signature
/// not checked yet.
pub(super) struct Token<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The base64url signature.
    pub signature: &'a str,
    /// The header's `alg`, an asymmetric algorithm.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    claims: Claims,
}

/// The header fields kstash reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Critical extensions: kstash understands none, so a token naming any
    /// is refused (RFC 7515 §4.1.11).
    crit: Option<serde_json::Value>,
}

/// The claims kstash reads (a projected ServiceAccount token's shape).
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Audience,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

/// `aud`: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

/// The `kubernetes.io` claim block of a projected token.
#[derive(Deserialize)]
struct KubernetesClaims {
    namespace: Option<String>,
    serviceaccount: Option<Object>,
    pod: Option<Object>,
}

/// A Kubernetes object the token names.
#[derive(Deserialize)]
struct Object {
    name: Option<String>,
    uid: Option<String>,
}

/// A NumericDate (seconds since the epoch; RFC 7519 allows fractions),
/// saturated to `i64`.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match n.as_f64() {
        // `as` saturates; NaN cannot come out of JSON.
        Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
        _ => Err(serde::de::Error::custom("not a NumericDate")),
    }
}

/// Seconds to milliseconds, widened so no date overflows.
fn ms(seconds: i64) -> i128 {
    i128::from(seconds) * 1000
}

/// Decode one base64url part and parse it as JSON.
fn part<T: serde::de::DeserializeOwned>(b64: &str) -> Result<T, Check> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Check::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Check::Malformed)
}

impl<'a> Token<'a> {
    /// Split and decode `jwt`: [`Check::Malformed`] unless it is three
    /// base64url parts with JSON header and claims, at most
    /// [`MAX_JWT_BYTES`], naming no critical extension;
    /// [`Check::Algorithm`] unless `alg` is an asymmetric algorithm (RS*,
    /// PS*, ES256, ES384, EdDSA: never `none` or HS*).
    pub fn parse(jwt: &'a str) -> Result<Token<'a>, Check> {
        if jwt.len() > MAX_JWT_BYTES {
            return Err(Check::Malformed);
        }
        let (signing_input, signature) = jwt.rsplit_once('.').ok_or(Check::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(Check::Malformed)?;
        if payload.contains('.') {
            return Err(Check::Malformed);
        }
        let header: Header = part(header)?;
        if header.crit.is_some() {
            return Err(Check::Malformed);
        }
        let alg: Algorithm = header.alg.parse().map_err(|_| Check::Algorithm)?;
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(Check::Algorithm);
        }
        Ok(Token {
            signing_input,
            signature,
            alg,
            kid: header.kid,
            claims: part(payload)?,
        })
    }

    /// Check the claims as of `now_ms`: `iss` is `issuer` (when one is
    /// known), the token has not expired and is already valid, `aud`
    /// contains `audience`, `sub` names a ServiceAccount and the
    /// `kubernetes.io` block agrees with it.
    pub fn check_claims(
        &self,
        issuer: Option<&str>,
        audience: &str,
        now_ms: u64,
    ) -> Result<ServiceAccount, Check> {
        let c = &self.claims;
        if issuer.is_some_and(|want| c.iss.as_deref() != Some(want)) {
            return Err(Check::Issuer);
        }
        let now = i128::from(now_ms);
        let leeway = i128::from(LEEWAY_MS);
        // No `exp`: a legacy token that never expires, refused.
        let exp = c.exp.map(ms).ok_or(Check::Expired)?;
        if now >= exp + leeway {
            return Err(Check::Expired);
        }
        if c.nbf.map(ms).is_some_and(|nbf| nbf > now + leeway) {
            return Err(Check::NotYetValid);
        }
        if c.iat.map(ms).is_some_and(|iat| iat > now + leeway) {
            return Err(Check::IssuedInFuture);
        }
        if !c.aud.contains(audience) {
            return Err(Check::Audience);
        }
        let (namespace, name) = c
            .sub
            .as_deref()
            .and_then(parse_subject)
            .ok_or(Check::Subject)?;
        let k = c.kubernetes.as_ref().ok_or(Check::ClaimsMismatch)?;
        let account = k.serviceaccount.as_ref().ok_or(Check::ClaimsMismatch)?;
        if k.namespace.as_deref() != Some(namespace) || account.name.as_deref() != Some(name) {
            return Err(Check::ClaimsMismatch);
        }
        let uid_ok = |uid: &Option<String>| {
            uid.as_ref()
                .is_none_or(|u| !u.is_empty() && u.len() <= MAX_UID_CHARS)
        };
        let pod = match &k.pod {
            None => None,
            Some(pod) => {
                let name = pod.name.as_deref().ok_or(Check::ClaimsMismatch)?;
                if !is_dns_subdomain(name) || !uid_ok(&pod.uid) {
                    return Err(Check::ClaimsMismatch);
                }
                Some(name.to_string())
            }
        };
        if !uid_ok(&account.uid) {
            return Err(Check::ClaimsMismatch);
        }
        Ok(ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: account.uid.clone(),
            pod,
            expires_at_ms: u64::try_from(exp.max(0)).unwrap_or(u64::MAX),
        })
    }
}

/// `system:serviceaccount:<namespace>:<name>` → (namespace, name), each a
/// valid Kubernetes name.
fn parse_subject(sub: &str) -> Option<(&str, &str)> {
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (validate_namespace(namespace).is_ok() && is_dns_subdomain(name)).then_some((namespace, name))
}

/// A DNS-1123 subdomain (a ServiceAccount's or pod's name): at most 253
/// characters, dot-separated DNS-1123 labels.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= MAX_SUBDOMAIN_CHARS && name.split('.').all(|l| validate_namespace(l).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    fn token(header: serde_json::Value, claims: serde_json::Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    const NOW: u64 = 1_800_000_000_000;

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://kubernetes.default.svc",
            "sub": "system:serviceaccount:shop:web",
            "aud": ["kstash", "other"],
            "exp": NOW / 1000 + 600,
            "iat": NOW / 1000 - 10,
            "nbf": NOW / 1000 - 10,
            "kubernetes.io": {
                "namespace": "shop",
                "serviceaccount": {"name": "web", "uid": "8b3d2c1e-0000-4000-8000-000000000001"},
                "pod": {"name": "web-7d9f-abcde", "uid": "8b3d2c1e-0000-4000-8000-000000000002"}
            }
        })
    }

    fn check(claims: serde_json::Value, now_ms: u64) -> Result<ServiceAccount, Check> {
        let jwt = token(serde_json::json!({"alg": "RS256", "kid": "k"}), claims);
        Token::parse(&jwt)?.check_claims(Some("https://kubernetes.default.svc"), "kstash", now_ms)
    }

    fn with(mut c: serde_json::Value, pointer: &str, v: serde_json::Value) -> serde_json::Value {
        *c.pointer_mut(pointer).unwrap() = v;
        c
    }

    #[test]
    fn a_projected_token_yields_its_service_account() {
        let sa = check(claims(), NOW).unwrap();
        assert_eq!(
            sa,
            ServiceAccount {
                namespace: "shop".into(),
                name: "web".into(),
                uid: Some("8b3d2c1e-0000-4000-8000-000000000001".into()),
                pod: Some("web-7d9f-abcde".into()),
                expires_at_ms: NOW + 600_000,
            }
        );
        let mut no_pod = claims();
        no_pod["kubernetes.io"]
            .as_object_mut()
            .unwrap()
            .remove("pod");
        assert_eq!(check(no_pod, NOW).unwrap().pod, None);
    }

    #[test]
    fn only_asymmetric_algorithms_and_well_formed_tokens_parse() {
        for alg in ["none", "HS256", "HS384", "HS512", "rs256", "", "ES512"] {
            let jwt = token(serde_json::json!({"alg": alg}), claims());
            assert_eq!(Token::parse(&jwt).err(), Some(Check::Algorithm), "{alg}");
        }
        for alg in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ] {
            let jwt = token(serde_json::json!({"alg": alg}), claims());
            assert!(Token::parse(&jwt).is_ok(), "{alg}");
        }
        let good = token(serde_json::json!({"alg": "RS256"}), claims());
        let (h, rest) = good.split_once('.').unwrap();
        let malformed = [
            "".to_string(),
            "abc".to_string(),
            format!("{h}.{rest}.extra"),
            format!("{h}!.{rest}"),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode(b"not json")),
            token(serde_json::json!({"kid": "k"}), claims()),
            token(
                serde_json::json!({"alg": "RS256", "crit": ["exp"]}),
                claims(),
            ),
            token(
                serde_json::json!({"alg": "RS256"}),
                serde_json::json!({"sub": 7}),
            ),
            token(
                serde_json::json!({"alg": "RS256"}),
                serde_json::json!({"exp": "soon"}),
            ),
            format!("{}.c2ln", "a".repeat(MAX_JWT_BYTES)),
        ];
        for jwt in malformed {
            assert_eq!(
                Token::parse(&jwt).err(),
                Some(Check::Malformed),
                "{:.60}",
                jwt
            );
        }
    }

    #[test]
    fn time_claims_have_a_minute_of_leeway_against_the_time_given() {
        let exp = NOW + 600_000;
        assert!(
            check(claims(), exp + LEEWAY_MS - 1).is_ok(),
            "inside the leeway"
        );
        assert_eq!(check(claims(), exp + LEEWAY_MS).err(), Some(Check::Expired));
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            check(no_exp, NOW).err(),
            Some(Check::Expired),
            "legacy token"
        );
        let future = |s: u64| serde_json::json!(s / 1000);
        let nbf = with(claims(), "/nbf", future(NOW + LEEWAY_MS));
        assert!(check(nbf, NOW).is_ok(), "nbf exactly at the leeway");
        let nbf = with(claims(), "/nbf", future(NOW + LEEWAY_MS + 1000));
        assert_eq!(check(nbf, NOW).err(), Some(Check::NotYetValid));
        let iat = with(claims(), "/iat", future(NOW + LEEWAY_MS));
        assert!(check(iat, NOW).is_ok(), "iat exactly at the leeway");
        let iat = with(claims(), "/iat", future(NOW + LEEWAY_MS + 1000));
        assert_eq!(check(iat, NOW).err(), Some(Check::IssuedInFuture));
        let fraction = with(
            claims(),
            "/exp",
            serde_json::json!(exp as f64 / 1000.0 + 0.5),
        );
        assert_eq!(check(fraction, NOW).unwrap().expires_at_ms, exp);
    }

    #[test]
    fn issuer_audience_subject_and_claims_must_agree() {
        let cases = [
            (
                "/iss",
                serde_json::json!("https://evil.example"),
                Check::Issuer,
            ),
            ("/aud", serde_json::json!(["other"]), Check::Audience),
            ("/aud", serde_json::json!("kstash-not"), Check::Audience),
            (
                "/sub",
                serde_json::json!("system:serviceaccount:shop"),
                Check::Subject,
            ),
            (
                "/sub",
                serde_json::json!("system:node:shop:web"),
                Check::Subject,
            ),
            (
                "/sub",
                serde_json::json!("system:serviceaccount:Shop:web"),
                Check::Subject,
            ),
            (
                "/sub",
                serde_json::json!("system:serviceaccount:shop:web:x"),
                Check::Subject,
            ),
            (
                "/kubernetes.io/namespace",
                serde_json::json!("bank"),
                Check::ClaimsMismatch,
            ),
            (
                "/kubernetes.io/serviceaccount/name",
                serde_json::json!("db"),
                Check::ClaimsMismatch,
            ),
            (
                "/kubernetes.io/serviceaccount/uid",
                serde_json::json!(""),
                Check::ClaimsMismatch,
            ),
            (
                "/kubernetes.io/pod/name",
                serde_json::json!("Bad_Pod"),
                Check::ClaimsMismatch,
            ),
            (
                "/kubernetes.io",
                serde_json::json!({}),
                Check::ClaimsMismatch,
            ),
        ];
        for (pointer, value, want) in cases {
            let got = check(with(claims(), pointer, value.clone()), NOW).err();
            assert_eq!(got, Some(want), "{pointer} = {value}");
        }
        let aud_string = with(claims(), "/aud", serde_json::json!("kstash"));
        assert!(check(aud_string, NOW).is_ok(), "aud as one string");
        let mut no_aud = claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(no_aud, NOW).err(), Some(Check::Audience));
        let mut no_block = claims();
        no_block.as_object_mut().unwrap().remove("kubernetes.io");
        assert_eq!(check(no_block, NOW).err(), Some(Check::ClaimsMismatch));
        let dotted = with(
            claims(),
            "/sub",
            serde_json::json!("system:serviceaccount:shop:web.v2"),
        );
        let dotted = with(
            dotted,
            "/kubernetes.io/serviceaccount/name",
            serde_json::json!("web.v2"),
        );
        assert_eq!(check(dotted, NOW).unwrap().name, "web.v2");
        let jwt = token(serde_json::json!({"alg": "ES256"}), claims());
        let unknown_issuer = Token::parse(&jwt)
            .unwrap()
            .check_claims(None, "kstash", NOW);
        assert!(
            unknown_issuer.is_ok(),
            "no issuer known: iss is not compared"
        );
    }
}
