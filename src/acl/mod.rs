//! Policies and their evaluation: which capabilities a token has on which
//! secret paths of its namespace.
//!
//! Invariant: evaluation denies by default. An [`Acl`] allows a capability on
//! a path only when the token holds the built-in [`ADMIN_POLICY`], or some rule
//! of one of its policies both matches the path and lists the capability
//! (the union of grants; there are no deny rules). A path that is neither a
//! canonical secret path nor a canonical list prefix (see [`path`]) is denied
//! to everyone, admin included. Rules that fail [`Policy::validate`] grant
//! nothing, even if one were somehow stored.
//!
//! Rule paths are `*` (everything), `prefix*` (every path starting with
//! `prefix`), or an exact canonical path. Namespaces are enforced by the
//! caller: an [`Acl`] is always about one namespace.

pub mod path;

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use path::PathError;

use path::excerpt;

/// Name of the built-in policy that grants every capability on every path
/// of its namespace and the right to manage that namespace's policies. It is
/// never stored, replaced or deleted.
pub const ADMIN_POLICY: &str = "admin";

/// Most rules in one policy.
pub const MAX_RULES: usize = 128;

/// Whether `name` is a built-in policy (which cannot be stored, replaced or
/// deleted).
pub fn is_builtin(name: &str) -> bool {
    name == ADMIN_POLICY
}

/// A permission error: the one wording of every 403, wherever a capability
/// is refused (the service's checks, apply's re-check, policy management):
///
/// `permission denied: <action> on <namespace>/<path> is not granted by the
/// token's policies [<p>, …] in namespace <token namespace>`
///
/// It names what was asked and what the token holds, never whether the
/// target exists (a write is `create or update` unless the token holds one
/// of them) and never a value. The field is private: [`Denial::new`] is the
/// only way to make one (and [`Denial::from_log`] to carry one rendered on
/// another replica through the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(String);

impl Denial {
    /// `action` (a capability, `create or update`, `manage policies`) on
    /// `path` in `namespace`, refused to a token of `token_namespace`
    /// holding `policies`.
    pub fn new(
        action: &str,
        namespace: &str,
        path: &str,
        token_namespace: &str,
        policies: &[String],
    ) -> Denial {
        Denial(format!(
            "permission denied: {action} on {namespace}/{path} is not granted by the token's \
             policies [{}] in namespace {token_namespace}",
            policies.join(", ")
        ))
    }

    /// A denial as [`Denial::new`] rendered it on the replica that applied
    /// the command (a `Rejection` carries it as text through the log).
    pub fn from_log(rendered: String) -> Denial {
        Denial(rendered)
    }

    /// The rendered message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AclError {
    /// The policy has no rules.
    #[error("policy has no rules; it needs 1 to {MAX_RULES}")]
    NoRules,
    /// The policy has more than [`MAX_RULES`] rules.
    #[error("policy has {count} rules; the limit is {MAX_RULES}")]
    TooManyRules {
        /// Number of rules in the policy.
        count: usize,
    },
    /// A rule lists no capabilities.
    #[error(
        "rules[{index}] has no capabilities; list at least one of read, create, update, delete, list, encrypt, decrypt"
    )]
    NoCapabilities {
        /// Zero-based index of the rule.
        index: usize,
    },
    /// A rule's path (or the part before its trailing `*`) is not canonical.
    #[error("rules[{index}].path is invalid: {reason}")]
    InvalidRulePath {
        /// Zero-based index of the rule.
        index: usize,
        /// What is wrong with the path.
        reason: PathError,
    },
    /// A rule's path has a `*` other than as its last character.
    #[error(
        "rules[{index}].path {path} is invalid: '*' is allowed only once, as the last character"
    )]
    MisplacedWildcard {
        /// Zero-based index of the rule.
        index: usize,
        /// Display-safe excerpt of the rule path.
        path: String,
    },
    /// A path, prefix or name outside a policy was refused.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Something a rule may allow on a path.
///
/// The variant order is part of the stored format (bincode encodes the
/// variant index): add new capabilities at the end, never reorder.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Read a secret's value.
    Read,
    /// Write a secret that does not exist yet.
    Create,
    /// Overwrite a secret that exists.
    Update,
    /// Delete a secret.
    Delete,
    /// List the paths under a prefix.
    List,
    /// Encrypt with the named key at `keys/<name>` (never checked on a
    /// secret path).
    Encrypt,
    /// Decrypt with the named key at `keys/<name>` (never checked on a
    /// secret path).
    Decrypt,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 7] = [
        Capability::Read,
        Capability::Create,
        Capability::Update,
        Capability::Delete,
        Capability::List,
        Capability::Encrypt,
        Capability::Decrypt,
    ];

    /// The lowercase name used in JSON (`"read"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::Create => "create",
            Capability::Update => "update",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Encrypt => "encrypt",
            Capability::Decrypt => "decrypt",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Capability::Read => 1,
            Capability::Create => 1 << 1,
            Capability::Update => 1 << 2,
            Capability::Delete => 1 << 3,
            Capability::List => 1 << 4,
            Capability::Encrypt => 1 << 5,
            Capability::Decrypt => 1 << 6,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One grant: `capabilities` on the paths that `path` matches.
///
/// `path` is `*` (every path), `prefix*` (every path starting with
/// `prefix`), or an exact canonical path.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The path pattern.
    pub path: String,
    /// What the rule allows on matching paths.
    pub capabilities: Vec<Capability>,
}

/// A named set of rules, stored per namespace. JSON:
/// `{"rules": [{"path": "app/*", "capabilities": ["read", "create"]}]}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The rules; their grants add up.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Check the policy: 1 to [`MAX_RULES`] rules, each with at least one
    /// capability and a valid path pattern. Reports the first problem.
    ///
    /// A pattern is `*`, or a prefix followed by an optional single trailing
    /// `*`. Without `*` the path must pass [`path::canonical_path`]; with it,
    /// the prefix must be empty or pass `canonical_path` after stripping one
    /// trailing '/' (`app/*`, `app/d*`, `app*` are fine; `a*b`, `app//*`,
    /// `../*` are not).
    pub fn validate(&self) -> Result<(), AclError> {
        if self.rules.is_empty() {
            return Err(AclError::NoRules);
        }
        if self.rules.len() > MAX_RULES {
            return Err(AclError::TooManyRules {
                count: self.rules.len(),
            });
        }
        for (index, rule) in self.rules.iter().enumerate() {
            Pattern::parse(&rule.path).map_err(|e| e.at(index, &rule.path))?;
            if rule.capabilities.is_empty() {
                return Err(AclError::NoCapabilities { index });
            }
        }
        Ok(())
    }

    /// The same policy with duplicate capabilities removed from each rule
    /// (first occurrence kept, order otherwise unchanged).
    pub fn normalized(mut self) -> Policy {
        for rule in &mut self.rules {
            let mut seen = 0u8;
            rule.capabilities.retain(|c| {
                let new = seen & c.bit() == 0;
                seen |= c.bit();
                new
            });
        }
        self
    }
}

/// A parsed rule path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Matches exactly this path.
    Exact(String),
    /// Matches every path (and list prefix) starting with this string.
    Prefix(String),
}

/// Why a rule path did not parse, before we know the rule's index.
enum PatternError {
    Wildcard,
    Path(PathError),
}

impl PatternError {
    fn at(self, index: usize, rule_path: &str) -> AclError {
        match self {
            PatternError::Wildcard => AclError::MisplacedWildcard {
                index,
                path: excerpt(rule_path),
            },
            PatternError::Path(reason) => AclError::InvalidRulePath { index, reason },
        }
    }
}

impl Pattern {
    fn parse(rule_path: &str) -> Result<Pattern, PatternError> {
        match rule_path.strip_suffix('*') {
            Some(prefix) => {
                if prefix.contains('*') {
                    return Err(PatternError::Wildcard);
                }
                // Empty, or canonical after stripping one trailing '/':
                // exactly the rule for list prefixes.
                path::check_list_prefix(prefix).map_err(PatternError::Path)?;
                Ok(Pattern::Prefix(prefix.to_string()))
            }
            None => {
                if rule_path.contains('*') {
                    return Err(PatternError::Wildcard);
                }
                path::check_path(rule_path).map_err(PatternError::Path)?;
                Ok(Pattern::Exact(rule_path.to_string()))
            }
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == path,
            Pattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// One compiled rule: a pattern and a capability bit set.
#[derive(Debug, Clone)]
struct Grant {
    pattern: Pattern,
    caps: u8,
}

/// The effective permissions of one token in its namespace: deny by
/// default, the union of its policies' grants, or everything for admin.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    admin: bool,
    grants: Vec<Grant>,
}

impl Acl {
    /// How a refused write of `path` needing `cap` (create or update) is
    /// named: `create or update` when this ACL grants neither there (naming
    /// one would tell whether the secret exists); the one it lacks when it
    /// grants the other (the outcome of a write tells that anyway).
    pub fn write_action(&self, path: &str, cap: Capability) -> String {
        if self.allows(path, Capability::Create) || self.allows(path, Capability::Update) {
            cap.to_string()
        } else {
            "create or update".to_string()
        }
    }

    /// Build the ACL of a token that holds the built-in admin policy
    /// (`admin`) and/or these stored policies. Rules that would fail
    /// [`Policy::validate`] are skipped (they grant nothing).
    pub fn new<'a>(admin: bool, policies: impl IntoIterator<Item = &'a Policy>) -> Acl {
        let grants = policies
            .into_iter()
            .flat_map(|p| p.rules.iter())
            .filter_map(|rule| {
                let pattern = Pattern::parse(&rule.path).ok()?;
                let caps = rule.capabilities.iter().fold(0u8, |acc, c| acc | c.bit());
                (caps != 0).then_some(Grant { pattern, caps })
            })
            .collect();
        Acl { admin, grants }
    }

    /// Whether this ACL allows `cap` on `path`: a canonical secret path, or a
    /// list prefix as returned by [`path::list_prefix`] (`""` or ending in
    /// '/'). Any other `path` is denied, even to admin.
    pub fn allows(&self, path: &str, cap: Capability) -> bool {
        if path::check_list_prefix(path).is_err() {
            return false;
        }
        self.admin
            || self
                .grants
                .iter()
                .any(|g| g.caps & cap.bit() != 0 && g.pattern.matches(path))
    }

    /// Whether the token holds the built-in admin policy (and so may manage
    /// its namespace's policies).
    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

#[cfg(test)]
mod tests {
    use super::Capability::*;
    use super::*;

    fn rule(path: &str, caps: &[Capability]) -> Rule {
        Rule {
            path: path.to_string(),
            capabilities: caps.to_vec(),
        }
    }

    fn policy(rules: &[(&str, &[Capability])]) -> Policy {
        Policy {
            rules: rules.iter().map(|(p, c)| rule(p, c)).collect(),
        }
    }

    fn acl(policies: &[Policy]) -> Acl {
        Acl::new(false, policies.iter())
    }

    // --- capability ---

    #[test]
    fn capability_names() {
        let names: Vec<String> = Capability::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            names,
            ["read", "create", "update", "delete", "list", "encrypt", "decrypt"]
        );
        for c in Capability::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }

    #[test]
    fn builtin_names() {
        assert!(is_builtin("admin"));
        assert!(!is_builtin("Admin"));
        assert!(!is_builtin("reader"));
    }

    // --- evaluation ---

    #[test]
    fn prefix_rule_grants_listed_caps_under_prefix_only() {
        let acl = acl(&[policy(&[("app/*", &[Read, Create])])]);
        assert!(acl.allows("app/db", Read));
        assert!(acl.allows("app/db", Create));
        assert!(acl.allows("app/a/b/c", Read));
        assert!(!acl.allows("app/db", Delete));
        assert!(!acl.allows("app/db", Update));
        assert!(!acl.allows("other/x", Read));
        assert!(!acl.allows("app", Read));
        assert!(!acl.allows("apple", Read));
        assert!(!acl.is_admin());
    }

    #[test]
    fn prefix_rule_covers_list_prefix() {
        let acl = acl(&[policy(&[("app/*", &[List])])]);
        assert!(acl.allows("app/", List));
        assert!(acl.allows("app/sub/", List));
        assert!(!acl.allows("", List));
        assert!(!acl.allows("ap/", List));
    }

    #[test]
    fn partial_segment_prefix_rule() {
        let acl = acl(&[policy(&[("app/d*", &[Read]), ("team*", &[Read])])]);
        assert!(acl.allows("app/db", Read));
        assert!(acl.allows("app/d", Read));
        assert!(!acl.allows("app/x", Read));
        assert!(acl.allows("team", Read));
        assert!(acl.allows("teammates/x", Read));
    }

    #[test]
    fn star_matches_everything_including_root() {
        let acl = acl(&[policy(&[("*", &[List, Read])])]);
        assert!(acl.allows("", List));
        assert!(acl.allows("x", Read));
        assert!(acl.allows("a/b/c", Read));
        assert!(!acl.allows("a/b/c", Delete));
    }

    #[test]
    fn exact_rule_matches_only_that_path() {
        let acl = acl(&[policy(&[("app/db", &[Read])])]);
        assert!(acl.allows("app/db", Read));
        assert!(!acl.allows("app/db/x", Read));
        assert!(!acl.allows("app/db2", Read));
        assert!(!acl.allows("app/db/", List));
        assert!(!acl.allows("app", Read));
    }

    #[test]
    fn grants_are_the_union_across_policies() {
        let p1 = policy(&[("app/*", &[Read])]);
        let p2 = policy(&[("app/*", &[Delete]), ("ops/key", &[Update])]);
        let acl = Acl::new(false, [&p1, &p2]);
        assert!(acl.allows("app/db", Read));
        assert!(acl.allows("app/db", Delete));
        assert!(acl.allows("ops/key", Update));
        assert!(!acl.allows("app/db", Create));
        assert!(!acl.allows("ops/key", Read));
    }

    #[test]
    fn empty_acl_denies() {
        let acl = Acl::new(false, []);
        for c in Capability::ALL {
            assert!(!acl.allows("app/db", c));
            assert!(!acl.allows("", c));
        }
        assert!(!acl.is_admin());
        assert!(!Acl::default().allows("x", Read));
    }

    #[test]
    fn admin_allows_everything() {
        let acl = Acl::new(true, []);
        assert!(acl.is_admin());
        for c in Capability::ALL {
            assert!(acl.allows("app/db", c));
            assert!(acl.allows("any/deep/path", c));
            assert!(acl.allows("", c));
            assert!(acl.allows("app/", c));
        }
    }

    #[test]
    fn non_canonical_paths_are_denied_even_to_admin() {
        let admin = Acl::new(true, []);
        let star = acl(&[policy(&[("*", &Capability::ALL)])]);
        let app = acl(&[policy(&[("app/*", &Capability::ALL)])]);
        for p in [
            "app/../x",
            "app/./x",
            "app//x",
            "/app/x",
            "app/x\\y",
            "app/\u{0}",
            "app/%2e%2e/x",
        ] {
            for a in [&admin, &star, &app] {
                assert!(!a.allows(p, Read), "{p:?}");
            }
        }
    }

    #[test]
    fn invalid_rules_grant_nothing() {
        let bad = policy(&[
            ("a*b", &[Read]),
            ("../*", &[Read]),
            ("app//*", &[Read]),
            ("/*", &[Read]),
            ("app/x", &[]),
        ]);
        let acl = acl(&[bad]);
        for p in ["a", "ab", "a*b", "app/x", "app/", "x"] {
            for c in Capability::ALL {
                assert!(!acl.allows(p, c), "{p}");
            }
        }
    }

    #[test]
    fn new_clones_so_the_policy_can_be_dropped() {
        let acl = {
            let p = policy(&[("app/*", &[Read])]);
            Acl::new(false, [&p])
        };
        assert!(acl.allows("app/db", Read));
    }

    // --- validation ---

    #[test]
    fn valid_rule_paths() {
        for p in ["*", "app/*", "app/d*", "app*", "app", "app/db", "a/b/c/*"] {
            assert_eq!(policy(&[(p, &[Read])]).validate(), Ok(()), "{p}");
        }
    }

    #[test]
    fn misplaced_wildcards_are_refused() {
        for p in ["a*b", "*/x", "**", "app/**", "*a*"] {
            assert!(
                matches!(
                    policy(&[(p, &[Read])]).validate(),
                    Err(AclError::MisplacedWildcard { index: 0, .. })
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn non_canonical_rule_paths_are_refused() {
        for p in [
            "app//*", "../*", "app/../*", "./*", "/*", "//*", "/app", "app/", "a//b", "app/../x",
            "a\\b", "a\nb/*", "%2e%2E/*", "",
        ] {
            assert!(
                matches!(
                    policy(&[(p, &[Read])]).validate(),
                    Err(AclError::InvalidRulePath { index: 0, .. })
                ),
                "{p:?}"
            );
        }
        let long = format!("{}*", "a".repeat(1025));
        assert!(policy(&[(&long, &[Read])]).validate().is_err());
    }

    #[test]
    fn rule_errors_name_the_rule() {
        let p = policy(&[("ok/*", &[Read]), ("x/*", &[Read]), ("app/../*", &[Read])]);
        let err = p.validate().unwrap_err();
        assert_eq!(
            err,
            AclError::InvalidRulePath {
                index: 2,
                reason: PathError::DotSegment {
                    segment: "..",
                    path: "'app/..'".to_string()
                }
            }
        );
        assert_eq!(
            err.to_string(),
            "rules[2].path is invalid: path segment '..' is not allowed (in 'app/..')"
        );
    }

    #[test]
    fn rule_count_limits() {
        assert_eq!(Policy { rules: vec![] }.validate(), Err(AclError::NoRules));
        let max = Policy {
            rules: vec![rule("a", &[Read]); MAX_RULES],
        };
        assert_eq!(max.validate(), Ok(()));
        let over = Policy {
            rules: vec![rule("a", &[Read]); MAX_RULES + 1],
        };
        assert_eq!(over.validate(), Err(AclError::TooManyRules { count: 129 }));
    }

    #[test]
    fn rule_without_capabilities_is_refused() {
        let p = policy(&[("a", &[Read]), ("b", &[])]);
        assert_eq!(p.validate(), Err(AclError::NoCapabilities { index: 1 }));
    }

    #[test]
    fn duplicates_are_valid_and_normalised_away() {
        let p = policy(&[("a/*", &[List, Read, List, Read, Create]), ("b", &[Read])]);
        assert_eq!(p.validate(), Ok(()));
        let n = p.normalized();
        assert_eq!(n, policy(&[("a/*", &[List, Read, Create]), ("b", &[Read])]));
    }

    #[test]
    fn path_errors_convert_into_acl_errors() {
        fn f() -> Result<(), AclError> {
            path::validate_namespace("Bad")?;
            Ok(())
        }
        assert!(matches!(
            f(),
            Err(AclError::Path(PathError::InvalidNamespace { .. }))
        ));
    }

    // --- JSON ---

    #[test]
    fn json_round_trip() {
        let json = r#"{"rules": [{"path": "app/*", "capabilities": ["read", "create"]}]}"#;
        let p: Policy = serde_json::from_str(json).unwrap();
        assert_eq!(p, policy(&[("app/*", &[Read, Create])]));
        let back = serde_json::to_string(&p).unwrap();
        assert_eq!(
            back,
            r#"{"rules":[{"path":"app/*","capabilities":["read","create"]}]}"#
        );
        let again: Policy = serde_json::from_str(&back).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let top = r#"{"rules": [], "extra": 1}"#;
        let err = serde_json::from_str::<Policy>(top).unwrap_err().to_string();
        assert!(err.contains("extra"), "{err}");
        let inner = r#"{"rules": [{"path": "a", "capabilities": ["read"], "deny": true}]}"#;
        let err = serde_json::from_str::<Policy>(inner)
            .unwrap_err()
            .to_string();
        assert!(err.contains("deny"), "{err}");
    }

    #[test]
    fn missing_fields_are_rejected() {
        assert!(serde_json::from_str::<Policy>("{}").is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"rules": [{"path": "a"}]}"#).is_err());
    }

    #[test]
    fn unknown_capability_is_rejected_by_name() {
        let json = r#"{"rules": [{"path": "a", "capabilities": ["read", "fly"]}]}"#;
        let err = serde_json::from_str::<Policy>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fly"), "{err}");
        // Capabilities are lowercase only.
        let json = r#"{"rules": [{"path": "a", "capabilities": ["Read"]}]}"#;
        let err = serde_json::from_str::<Policy>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Read"), "{err}");
    }
}
