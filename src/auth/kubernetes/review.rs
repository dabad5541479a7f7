//! TokenReview: asking the API server whether a token is still good (its
//! pod and service account still exist, it was not revoked).
//!
//! Invariant: the token travels only in the request body to the configured
//! API server; the answer (which echoes it) is wiped after reading and never
//! logged. An answer kstash cannot use is [`LoginError::Unavailable`], never
//! a refusal of the token.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::http::ApiClient;
use super::{Check, LoginError};
use crate::secret::SecretString;

/// The TokenReview endpoint.
const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Largest TokenReview answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Spec<'a> {
    token: &'a str,
    audiences: [&'a str; 1],
}

#[derive(Deserialize)]
struct Answer {
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Status {
    authenticated: Option<bool>,
    user: Option<User>,
    audiences: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
}

/// Ask the API server about `jwt` for `audience`: it must authenticate it
/// as `subject` (`system:serviceaccount:<ns>:<name>`), for `audience`.
pub(super) async fn review(
    client: &ApiClient,
    jwt: &SecretString,
    audience: &str,
    subject: &str,
) -> Result<(), LoginError> {
    let url = client.url(PATH);
    let request = Request {
        api_version: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: Spec {
            token: jwt.expose(),
            audiences: [audience],
        },
    };
    // Room for all of it, so no smaller copy is left behind unwiped.
    let mut body = Zeroizing::new(Vec::with_capacity(
        jwt.expose().len() + 2 * audience.len() + 256,
    ));
    serde_json::to_writer(&mut *body, &request)
        .map_err(|e| LoginError::Unavailable(format!("cannot encode a TokenReview: {e}")))?;
    let answer = client
        .post_json(&url, &body, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| LoginError::Unavailable(format!("cannot ask TokenReview at {url}: {e}")))?;
    let status = answer.status;
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(LoginError::Unavailable(format!(
            "TokenReview at {url} answered HTTP {status}: the API server does not let kstash review tokens; \
             bind kstash's ServiceAccount to the ClusterRole system:auth-delegator \
             (and check that kubernetes_token_file holds kstash's own token)"
        )));
    }
    if !status.is_success() {
        return Err(LoginError::Unavailable(format!(
            "TokenReview at {url} answered HTTP {status}"
        )));
    }
    let parsed: Answer = serde_json::from_slice(&answer.body).map_err(|e| {
        LoginError::Unavailable(format!(
            "TokenReview at {url} answered something that is not a TokenReview: {e}"
        ))
    })?;
    let status = parsed.status.ok_or_else(|| {
        LoginError::Unavailable(format!("TokenReview at {url} answered with no status"))
    })?;
    if status.authenticated != Some(true) {
        return Err(LoginError::Refused(Check::TokenReview));
    }
    let username = status.user.and_then(|u| u.username);
    if username.as_deref() != Some(subject) {
        return Err(LoginError::Refused(Check::TokenReviewMismatch));
    }
    if status
        .audiences
        .is_some_and(|all| !all.iter().any(|a| a == audience))
    {
        return Err(LoginError::Refused(Check::TokenReviewMismatch));
    }
    Ok(())
}
