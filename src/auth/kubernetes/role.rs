//! Roles: which Kubernetes service accounts may log in to a kstash
//! namespace, and with which policies.
//!
//! Invariant: a [`KubernetesRole`] is only made by [`KubernetesRole::new`],
//! which refuses anything it would not bind exactly (no wildcard over
//! Kubernetes namespaces, no wildcard inside a name) and bounds every
//! part, and returns the one normalized form of its input: entries in the
//! order given, policies without repeats, the defaults filled in. So the
//! same request body is always the same replicated command, and what `GET`
//! shows is what the admin wrote.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::acl::path::{self, excerpt};
use crate::clock::format_duration;

/// Lifetime of a token a role mints when the role names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Shortest lifetime a role may give its tokens.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The audience a ServiceAccount token must carry when the role names none
/// (the audience of the projected token a pod mounts for kstash).
pub const DEFAULT_AUDIENCE: &str = "kstash";
/// Most service-account entries one role binds.
pub const MAX_SERVICE_ACCOUNTS: usize = 64;
/// Longest audience, in characters.
pub const MAX_AUDIENCE_CHARS: usize = 256;
/// Longest Kubernetes namespace (a DNS-1123 label).
pub const MAX_K8S_NAMESPACE_CHARS: usize = 63;
/// Longest ServiceAccount name (a DNS-1123 subdomain).
pub const MAX_K8S_NAME_CHARS: usize = 253;
/// The name part of an entry that binds every service account of its
/// Kubernetes namespace (`<k8s-namespace>/*`).
pub const ANY_NAME: &str = "*";

/// A Kubernetes login role of one kstash namespace, as the log carries it
/// and the store keeps it (`keyspace::kubernetes_role_key`).
///
/// Log and storage format: bincode of these fields in this order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KubernetesRole {
    /// `<k8s-namespace>/<name>` or `<k8s-namespace>/*`, in the order given,
    /// no two alike.
    pub service_accounts: Vec<String>,
    /// Policies of the tokens it mints (may include `admin`), in the order
    /// given, without repeats.
    pub policies: Vec<String>,
    /// Lifetime of a minted token, in ms (never past the ServiceAccount
    /// token's own expiry; the login caps it).
    pub ttl_ms: u64,
    /// The audience a ServiceAccount token must carry.
    pub audience: String,
}

/// The node's limits a role is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleLimits {
    /// Most policies one access token may carry.
    pub max_policies: usize,
    /// Longest lifetime of an access token on this node.
    pub max_ttl: Duration,
}

/// Why a role was refused. Each message says what to fix; user input
/// appears only as a display-safe excerpt.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoleError {
    /// The role name breaks the naming rules.
    #[error(
        "role name {0} is invalid: use lowercase letters, digits, '-' and '_', 1 to 64 \
         characters, starting with a letter or digit"
    )]
    InvalidName(String),
    /// No service account is bound.
    #[error(
        "service_accounts is empty: bind at least one \"<k8s-namespace>/<name>\" or \
         \"<k8s-namespace>/*\""
    )]
    NoServiceAccounts,
    /// Too many service-account entries.
    #[error(
        "service_accounts has {0} entries; the limit is {MAX_SERVICE_ACCOUNTS} (bind a whole \
         Kubernetes namespace with \"<k8s-namespace>/*\")"
    )]
    TooManyServiceAccounts(usize),
    /// An entry is not `<k8s-namespace>/<name>`.
    #[error(
        "service account {0} is invalid: write \"<k8s-namespace>/<name>\" or \
         \"<k8s-namespace>/*\""
    )]
    ServiceAccountShape(String),
    /// An entry's Kubernetes namespace is `*` (every namespace).
    #[error(
        "service account {0} binds every Kubernetes namespace, which is not allowed: name the \
         Kubernetes namespace (\"<k8s-namespace>/*\" binds all of its service accounts)"
    )]
    AnyNamespace(String),
    /// An entry's namespace is not a DNS-1123 label.
    #[error(
        "service account {0} has an invalid Kubernetes namespace: use lowercase letters, digits \
         and '-', 1 to {MAX_K8S_NAMESPACE_CHARS} characters, starting and ending with a letter \
         or digit"
    )]
    K8sNamespace(String),
    /// An entry's name has a `*` that is not the whole name.
    #[error(
        "service account {0} has a '*' inside its name: '*' stands only for the whole name \
         (\"<k8s-namespace>/*\")"
    )]
    PartialWildcard(String),
    /// An entry's name is not a DNS-1123 subdomain.
    #[error(
        "service account {0} has an invalid name: use lowercase letters, digits, '-' and '.', \
         1 to {MAX_K8S_NAME_CHARS} characters, each '.'-separated part starting and ending with \
         a letter or digit"
    )]
    K8sName(String),
    /// The same entry twice.
    #[error("service account {0} is listed twice")]
    DuplicateServiceAccount(String),
    /// A policy name breaks the naming rules.
    #[error("{0}")]
    Policy(path::PathError),
    /// More policies than a token may carry.
    #[error("a role may give at most {0} policies")]
    TooManyPolicies(usize),
    /// The ttl is under [`MIN_TTL`].
    #[error("ttl must be at least 1s")]
    TtlTooShort,
    /// The ttl is over the node's `max_token_ttl`.
    #[error("ttl {ttl} exceeds the maximum of {max} (max_token_ttl)")]
    TtlTooLong {
        /// The ttl asked for.
        ttl: String,
        /// The node's maximum.
        max: String,
    },
    /// The audience is empty, too long, or has a space or a non-printable
    /// or non-ASCII character.
    #[error(
        "audience {0} is invalid: use 1 to {MAX_AUDIENCE_CHARS} printable ASCII characters \
         without spaces (the default is \"kstash\")"
    )]
    Audience(String),
}

/// What a refusal to manage roles names as its action (`acl::Denial`),
/// before the guard, in the service and at apply alike.
pub const MANAGE_ACTION: &str = "manage kubernetes roles";

/// What a refusal to manage the role `name` names as its target (`name`
/// empty: the list).
pub fn denial_target(name: &str) -> String {
    format!("auth/kubernetes/roles/{name}")
}

/// Check a role name: the rules of a policy name
/// (`[a-z0-9][a-z0-9_-]{0,63}`), worded for a role.
pub fn validate_role_name(name: &str) -> Result<(), RoleError> {
    path::validate_policy_name(name).map_err(|_| RoleError::InvalidName(excerpt(name)))
}

impl KubernetesRole {
    /// A role from its request's fields, checked against `limits`, in its
    /// normalized form (see the module's invariant): `ttl` defaults to
    /// [`DEFAULT_TTL`], `audience` to [`DEFAULT_AUDIENCE`].
    pub fn new(
        service_accounts: Vec<String>,
        policies: Vec<String>,
        ttl: Option<Duration>,
        audience: Option<String>,
        limits: RoleLimits,
    ) -> Result<Self, RoleError> {
        if service_accounts.is_empty() {
            return Err(RoleError::NoServiceAccounts);
        }
        if service_accounts.len() > MAX_SERVICE_ACCOUNTS {
            return Err(RoleError::TooManyServiceAccounts(service_accounts.len()));
        }
        for (i, entry) in service_accounts.iter().enumerate() {
            validate_service_account(entry)?;
            if service_accounts[..i].contains(entry) {
                return Err(RoleError::DuplicateServiceAccount(excerpt(entry)));
            }
        }
        let mut unique: Vec<String> = Vec::with_capacity(policies.len().min(limits.max_policies));
        for p in policies {
            path::validate_policy_name(&p).map_err(RoleError::Policy)?;
            if !unique.contains(&p) {
                if unique.len() == limits.max_policies {
                    return Err(RoleError::TooManyPolicies(limits.max_policies));
                }
                unique.push(p);
            }
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl < MIN_TTL {
            return Err(RoleError::TtlTooShort);
        }
        if ttl > limits.max_ttl {
            return Err(RoleError::TtlTooLong {
                ttl: format_duration(ttl),
                max: format_duration(limits.max_ttl),
            });
        }
        let audience = audience.unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
        let printable = audience.bytes().all(|b| b.is_ascii_graphic());
        if audience.is_empty() || audience.len() > MAX_AUDIENCE_CHARS || !printable {
            return Err(RoleError::Audience(excerpt(&audience)));
        }
        Ok(KubernetesRole {
            service_accounts,
            policies: unique,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            audience,
        })
    }

    /// Whether the role binds the service account `name` of the Kubernetes
    /// namespace `namespace`: an entry `namespace/name`, or `namespace/*`.
    pub fn binds(&self, namespace: &str, name: &str) -> bool {
        self.service_accounts.iter().any(|entry| {
            entry
                .split_once('/')
                .is_some_and(|(ns, n)| ns == namespace && (n == ANY_NAME || n == name))
        })
    }

    /// The lifetime of a minted token.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// Check one `<k8s-namespace>/<name>` or `<k8s-namespace>/*` entry.
fn validate_service_account(entry: &str) -> Result<(), RoleError> {
    let shown = || excerpt(entry);
    let Some((namespace, name)) = entry.split_once('/') else {
        return Err(RoleError::ServiceAccountShape(shown()));
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(RoleError::ServiceAccountShape(shown()));
    }
    if namespace == ANY_NAME {
        return Err(RoleError::AnyNamespace(shown()));
    }
    if !is_dns_label(namespace, MAX_K8S_NAMESPACE_CHARS) {
        return Err(RoleError::K8sNamespace(shown()));
    }
    if name == ANY_NAME {
        return Ok(());
    }
    if name.contains('*') {
        return Err(RoleError::PartialWildcard(shown()));
    }
    let subdomain =
        name.len() <= MAX_K8S_NAME_CHARS && name.split('.').all(|l| is_dns_label(l, 63));
    if !subdomain {
        return Err(RoleError::K8sName(shown()));
    }
    Ok(())
}

/// A DNS-1123 label of at most `max` characters: lowercase letters, digits
/// and '-', starting and ending with a letter or digit.
fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=max).contains(&b.len())
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RoleLimits = RoleLimits {
        max_policies: 3,
        max_ttl: Duration::from_secs(3600),
    };

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn role(accounts: &[&str]) -> Result<KubernetesRole, RoleError> {
        KubernetesRole::new(strings(accounts), strings(&["app"]), None, None, LIMITS)
    }

    #[test]
    fn service_account_entries_are_checked_one_by_one() {
        // Steps: each entry alone (with one good entry before it, so the
        // refusal is about this entry) is accepted or refused with the
        // error that says what to fix.
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "a".repeat(61));
        assert_eq!(long_name.len(), 253);
        let too_long_name = format!("{long_name}a");
        let label_ns = format!("{long_label}/x");
        let too_long_ns = format!("{too_long_label}/x");
        let name_ok = format!("ns/{long_name}");
        let name_too_long = format!("ns/{too_long_name}");
        type Kind = fn(&RoleError) -> bool;
        let shape: Kind = |e| matches!(e, RoleError::ServiceAccountShape(_));
        let any_ns: Kind = |e| matches!(e, RoleError::AnyNamespace(_));
        let bad_ns: Kind = |e| matches!(e, RoleError::K8sNamespace(_));
        let partial: Kind = |e| matches!(e, RoleError::PartialWildcard(_));
        let bad_name: Kind = |e| matches!(e, RoleError::K8sName(_));
        let cases: Vec<(&str, Option<Kind>)> = vec![
            ("team-a/app", None),
            ("team-a/*", None),
            ("kube-system/coredns", None),
            ("ns/my.service-account.v2", None),
            (&label_ns, None),
            (&name_ok, None),
            ("ns", Some(shape)),
            ("ns/", Some(shape)),
            ("/app", Some(shape)),
            ("ns/app/x", Some(shape)),
            ("", Some(shape)),
            ("*/app", Some(any_ns)),
            ("*/*", Some(any_ns)),
            ("team-*/app", Some(bad_ns)),
            ("Team/app", Some(bad_ns)),
            ("-ns/app", Some(bad_ns)),
            ("ns-/app", Some(bad_ns)),
            ("n.s/app", Some(bad_ns)),
            (" ns/app", Some(bad_ns)),
            (&too_long_ns, Some(bad_ns)),
            ("ns/app-*", Some(partial)),
            ("ns/**", Some(partial)),
            ("ns/App", Some(bad_name)),
            ("ns/app.", Some(bad_name)),
            ("ns/.app", Some(bad_name)),
            ("ns/a..b", Some(bad_name)),
            ("ns/app_1", Some(bad_name)),
            ("ns/app ", Some(bad_name)),
            ("ns/ä", Some(bad_name)),
            (&name_too_long, Some(bad_name)),
        ];
        for (entry, expected) in cases {
            let got = role(&["other/x", entry]);
            match (expected, got) {
                (None, Ok(r)) => assert_eq!(r.service_accounts, ["other/x", entry]),
                (Some(kind), Err(e)) => assert!(kind(&e), "{entry:?}: wrong error {e}"),
                (None, Err(e)) => panic!("{entry:?} refused: {e}"),
                (Some(_), Ok(_)) => panic!("{entry:?} accepted"),
            }
        }
    }

    #[test]
    fn a_role_is_bounded_and_has_no_repeated_entries() {
        assert_eq!(role(&[]), Err(RoleError::NoServiceAccounts));
        let many: Vec<String> = (0..=MAX_SERVICE_ACCOUNTS)
            .map(|i| format!("ns/sa-{i}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            role(&refs),
            Err(RoleError::TooManyServiceAccounts(MAX_SERVICE_ACCOUNTS + 1))
        );
        assert!(role(&refs[..MAX_SERVICE_ACCOUNTS]).is_ok());
        assert!(matches!(
            role(&["ns/a", "ns/b", "ns/a"]),
            Err(RoleError::DuplicateServiceAccount(_))
        ));
        assert!(matches!(
            role(&["ns/*", "ns/*"]),
            Err(RoleError::DuplicateServiceAccount(_))
        ));
    }

    #[test]
    fn policies_are_checked_deduplicated_and_counted_after_dedup() {
        let with =
            |p: &[&str]| KubernetesRole::new(strings(&["ns/a"]), strings(p), None, None, LIMITS);
        assert_eq!(
            with(&["b", "admin", "b", "a", "admin"]).unwrap().policies,
            ["b", "admin", "a"],
            "first occurrences, in the order given"
        );
        assert_eq!(with(&[]).unwrap().policies, Vec::<String>::new());
        assert_eq!(
            with(&["a", "b", "c", "d"]),
            Err(RoleError::TooManyPolicies(3))
        );
        assert!(matches!(with(&["Bad"]), Err(RoleError::Policy(_))));
        assert!(matches!(with(&["a/b"]), Err(RoleError::Policy(_))));
    }

    #[test]
    fn ttl_and_audience_have_defaults_and_bounds() {
        let with = |ttl: Option<Duration>, audience: Option<&str>| {
            KubernetesRole::new(
                strings(&["ns/a"]),
                vec![],
                ttl,
                audience.map(str::to_owned),
                LIMITS,
            )
        };
        let plain = with(None, None).unwrap();
        assert_eq!((plain.ttl_ms, plain.audience.as_str()), (900_000, "kstash"));
        assert_eq!(plain.ttl(), DEFAULT_TTL);
        assert_eq!(
            with(Some(Duration::from_secs(1)), None).unwrap().ttl_ms,
            1000
        );
        assert_eq!(
            with(Some(Duration::from_millis(999)), None),
            Err(RoleError::TtlTooShort)
        );
        assert_eq!(with(Some(LIMITS.max_ttl), None).unwrap().ttl_ms, 3_600_000);
        assert_eq!(
            with(Some(Duration::from_secs(3601)), None)
                .unwrap_err()
                .to_string(),
            "ttl 1h1s exceeds the maximum of 1h (max_token_ttl)"
        );
        let longest = "x".repeat(MAX_AUDIENCE_CHARS);
        for good in ["https://kubernetes.default.svc", "vault", "a", &longest] {
            assert_eq!(with(None, Some(good)).unwrap().audience, good);
        }
        let too_long = "x".repeat(MAX_AUDIENCE_CHARS + 1);
        for bad in ["", "two words", "tab\there", "ünï", "nl\n", &too_long] {
            assert!(
                matches!(with(None, Some(bad)), Err(RoleError::Audience(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn binds_exact_names_and_whole_namespaces_only() {
        let r = role(&["team-a/app", "team-b/*"]).unwrap();
        assert!(r.binds("team-a", "app"));
        assert!(!r.binds("team-a", "other"));
        assert!(!r.binds("team-a", "app2"));
        assert!(!r.binds("team-a", "ap"));
        assert!(!r.binds("team-a", ""));
        assert!(!r.binds("team-a", "*"));
        assert!(!r.binds("team-c", "app"));
        assert!(!r.binds("team", "a/app"));
        assert!(r.binds("team-b", "anything"));
        assert!(r.binds("team-b", "app"));
        assert!(!r.binds("team-b-x", "app"));
        assert!(!r.binds("", "app"));
    }

    #[test]
    fn role_names_follow_policy_name_rules_and_say_role() {
        validate_role_name("ci-runner_1").unwrap();
        for bad in ["", "Bad", "-x", "a/b", &"r".repeat(65)] {
            let e = validate_role_name(bad).unwrap_err();
            assert!(e.to_string().starts_with("role name"), "{e}");
        }
    }

    #[test]
    fn errors_echo_input_only_as_a_short_excerpt() {
        let long = format!("*/{}", "x".repeat(500));
        let e = role(&[&long]).unwrap_err().to_string();
        assert!(e.len() < 400, "{e}");
        assert!(e.contains('…'), "{e}");
    }
}
