//! Canonical secret paths, list prefixes, and namespace / policy names.
//!
//! Invariant: every path that reaches the ACL or the keyspace has passed
//! [`canonical_path`] (a secret) or [`list_prefix`] (a list call), so it is
//! non-empty, at most [`MAX_PATH_BYTES`] bytes and [`MAX_PATH_SEGMENTS`]
//! segments, and contains no empty, `.` or `..` segment, no backslash, no
//! control character and no percent-encoded separator or dot. We *reject*
//! non-canonical input rather than rewrite it, so the string a policy is
//! checked against is byte-for-byte the string that is stored.
//!
//! Everything here is a pure function. Error messages echo at most
//! [`MAX_ECHO_CHARS`] characters of the input, with control characters escaped.

use thiserror::Error;

/// Longest secret path (or list prefix, without its trailing '/'), in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Most '/'-separated segments in a secret path.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// Longest namespace name (a DNS-1123 label), in characters.
pub const MAX_NAMESPACE_CHARS: usize = 63;

/// Longest policy name, in characters.
pub const MAX_POLICY_NAME_CHARS: usize = 64;

/// Most characters of user input that an error message repeats.
pub const MAX_ECHO_CHARS: usize = 64;

/// Why a path, prefix or name was refused.
///
/// Fields holding user input (`path`, `found`, `name`) are display-safe
/// excerpts: quoted, truncated to [`MAX_ECHO_CHARS`] characters and with
/// control characters, quotes and backslashes escaped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("path is empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path is {len} bytes; the limit is {MAX_PATH_BYTES}")]
    TooLong {
        /// Length of the path in bytes.
        len: usize,
    },
    /// The path has more than [`MAX_PATH_SEGMENTS`] segments.
    #[error("path has {count} segments; the limit is {MAX_PATH_SEGMENTS}")]
    TooManySegments {
        /// Number of '/'-separated segments.
        count: usize,
    },
    /// A leading, trailing or doubled '/'.
    #[error("path {path} has an empty segment (a leading, trailing or doubled '/')")]
    EmptySegment {
        /// Excerpt of the path.
        path: String,
    },
    /// A `.` or `..` segment.
    #[error("path segment '{segment}' is not allowed (in {path})")]
    DotSegment {
        /// The offending segment: `.` or `..`.
        segment: &'static str,
        /// Excerpt of the path.
        path: String,
    },
    /// A backslash anywhere in the path.
    #[error("path {path} contains a backslash, which is not allowed")]
    Backslash {
        /// Excerpt of the path.
        path: String,
    },
    /// A NUL or other control character (`char::is_control`).
    #[error("path {path} contains a control character, which is not allowed")]
    ControlChar {
        /// Excerpt of the path.
        path: String,
    },
    /// A literal `%2F`, `%2E` or `%5C` after URL decoding (double encoding).
    #[error(
        "path {path} contains '{found}', an encoded '/', '.' or '\\'; \
         double-encoded paths are not allowed"
    )]
    DoubleEncoded {
        /// Excerpt of the path.
        path: String,
        /// The sequence as written, e.g. `%2e`.
        found: String,
    },
    /// A URL path percent-encodes '/', '.' or '\'.
    #[error(
        "URL path has '{found}' at byte {offset}: a percent-encoded '/', '.' or '\\' \
         is not allowed; write the character itself"
    )]
    EncodedSeparator {
        /// The escape as written, e.g. `%2F`.
        found: String,
        /// Byte offset of the '%' in the raw URL path.
        offset: usize,
    },
    /// A URL path percent-encodes a NUL or control byte (`%00`–`%1F`, `%7F`).
    #[error(
        "URL path has '{found}' at byte {offset}: a percent-encoded control byte is not allowed"
    )]
    EncodedControl {
        /// The escape as written, e.g. `%0A`.
        found: String,
        /// Byte offset of the '%' in the raw URL path.
        offset: usize,
    },
    /// A '%' not followed by two hex digits.
    #[error("URL path has a malformed percent-escape {found} at byte {offset}: '%' must be followed by two hex digits")]
    MalformedEscape {
        /// Excerpt of what follows the '%', including it.
        found: String,
        /// Byte offset of the '%' in the raw URL path.
        offset: usize,
    },
    /// The percent-decoded bytes are not UTF-8.
    #[error("URL path does not decode to valid UTF-8 (bad byte at decoded offset {offset})")]
    NotUtf8 {
        /// Offset in the decoded bytes of the first invalid sequence.
        offset: usize,
    },
    /// A namespace that is not a DNS-1123 label.
    #[error(
        "namespace {name} is invalid: use lowercase letters, digits and '-', 1 to 63 characters, \
         starting and ending with a letter or digit"
    )]
    InvalidNamespace {
        /// Excerpt of the namespace.
        name: String,
    },
    /// A policy name outside `[a-z0-9][a-z0-9_-]{0,63}`.
    #[error(
        "policy name {name} is invalid: use lowercase letters, digits, '-' and '_', 1 to 64 characters, \
         starting with a letter or digit"
    )]
    InvalidPolicyName {
        /// Excerpt of the policy name.
        name: String,
    },
}

/// A display-safe excerpt of user input: single-quoted, at most
/// [`MAX_ECHO_CHARS`] characters (then `…`), escaped like `{:?}`.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_ECHO_CHARS) + 8);
    out.push('\'');
    let mut chars = s.chars();
    for c in chars.by_ref().take(MAX_ECHO_CHARS) {
        out.extend(c.escape_debug());
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out.push('\'');
    out
}

/// The escape sequences that spell '/', '.' and '\' (matched case-insensitively).
const ENCODED_FORBIDDEN: [&[u8; 3]; 3] = [b"%2f", b"%2e", b"%5c"];

/// Decode the raw, still percent-encoded remainder of a URL path
/// (e.g. `app/db%20x` → `app/db x`).
///
/// Refuses a percent-encoded '/', '.' or '\' (`%2F`, `%2E`, `%5C`, any case),
/// a percent-encoded control byte (`%00`–`%1F`, `%7F`), a malformed escape,
/// and decoded bytes that are not UTF-8. Literal characters pass through
/// unchanged ('+' stays '+'). The result is *not* yet canonical: pass it to
/// [`canonical_path`] or [`list_prefix`].
pub fn decode_url_path(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (hi, lo) = match (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) {
            (Some(hi), Some(lo)) => (hi, lo),
            _ => {
                let rest = raw.get(i..).unwrap_or_default();
                let found: String = rest.chars().take(3).collect();
                return Err(PathError::MalformedEscape {
                    found: excerpt(&found),
                    offset: i,
                });
            }
        };
        // Both digits are ASCII, so this slice is on char boundaries.
        let found = raw.get(i..i + 3).unwrap_or_default().to_string();
        let decoded = (hi << 4) | lo;
        match decoded {
            b'/' | b'.' | b'\\' => {
                return Err(PathError::EncodedSeparator { found, offset: i });
            }
            0x00..=0x1f | 0x7f => {
                return Err(PathError::EncodedControl { found, offset: i });
            }
            _ => out.push(decoded),
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|e| PathError::NotUtf8 {
        offset: e.utf8_error().valid_up_to(),
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Check that `p` is a canonical secret path inside a namespace and return
/// it unchanged.
///
/// Rules: non-empty; at most [`MAX_PATH_BYTES`] bytes and
/// [`MAX_PATH_SEGMENTS`] segments; no empty segment (so no leading, trailing
/// or doubled '/'); no `.` or `..` segment; no backslash; no control
/// character; no literal `%2F`/`%2E`/`%5C` (any case). Nothing is rewritten.
pub fn canonical_path(p: &str) -> Result<String, PathError> {
    check_path(p)?;
    Ok(p.to_string())
}

/// The checks behind [`canonical_path`], without the allocation.
pub(crate) fn check_path(p: &str) -> Result<(), PathError> {
    if p.is_empty() {
        return Err(PathError::Empty);
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { len: p.len() });
    }
    if p.chars().any(char::is_control) {
        return Err(PathError::ControlChar { path: excerpt(p) });
    }
    if p.contains('\\') {
        return Err(PathError::Backslash { path: excerpt(p) });
    }
    if let Some(found) = find_encoded_forbidden(p) {
        return Err(PathError::DoubleEncoded {
            path: excerpt(p),
            found: found.to_string(),
        });
    }
    let count = p.split('/').count();
    if count > MAX_PATH_SEGMENTS {
        return Err(PathError::TooManySegments { count });
    }
    for segment in p.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment { path: excerpt(p) }),
            "." => {
                return Err(PathError::DotSegment {
                    segment: ".",
                    path: excerpt(p),
                })
            }
            ".." => {
                return Err(PathError::DotSegment {
                    segment: "..",
                    path: excerpt(p),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The first `%2F`/`%2E`/`%5C` (any case) in `p`, as written.
fn find_encoded_forbidden(p: &str) -> Option<&str> {
    let bytes = p.as_bytes();
    bytes.windows(3).enumerate().find_map(|(i, w)| {
        ENCODED_FORBIDDEN
            .iter()
            .any(|seq| w.eq_ignore_ascii_case(&seq[..]))
            .then(|| p.get(i..i + 3))
            .flatten()
    })
}

/// Check a list-call prefix and return it with exactly one trailing '/'.
///
/// The empty prefix (the namespace root) is allowed and returned as is.
/// Otherwise a single trailing '/' is allowed, and what precedes it must
/// pass [`canonical_path`]: `app` → `app/`, `app/` → `app/`, `` → ``.
pub fn list_prefix(p: &str) -> Result<String, PathError> {
    check_list_prefix(p)?;
    if p.is_empty() || p.ends_with('/') {
        Ok(p.to_string())
    } else {
        Ok(format!("{p}/"))
    }
}

/// The checks behind [`list_prefix`]: `p` is empty, or `p` minus one
/// trailing '/' (if any) is a canonical path.
pub(crate) fn check_list_prefix(p: &str) -> Result<(), PathError> {
    if p.is_empty() {
        return Ok(());
    }
    let stem = p.strip_suffix('/').unwrap_or(p);
    if stem.is_empty() {
        // "/" alone: a leading slash, not the root (which is "").
        return Err(PathError::EmptySegment { path: excerpt(p) });
    }
    check_path(stem)
}

/// Check a Kubernetes namespace name (a DNS-1123 label): 1 to 63
/// characters of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn validate_namespace(ns: &str) -> Result<(), PathError> {
    let b = ns.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = (1..=MAX_NAMESPACE_CHARS).contains(&b.len())
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(PathError::InvalidNamespace { name: excerpt(ns) })
    }
}

/// Check a policy name: 1 to 64 characters, `[a-z0-9][a-z0-9_-]*`.
pub fn validate_policy_name(name: &str) -> Result<(), PathError> {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = (1..=MAX_POLICY_NAME_CHARS).contains(&b.len())
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
        && b.first().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(PathError::InvalidPolicyName {
            name: excerpt(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg_path(n: usize) -> String {
        vec!["s"; n].join("/")
    }

    // --- canonical_path ---

    #[test]
    fn canonical_accepts_ordinary_paths() {
        for p in [
            "a",
            "app/db",
            "app/db x",
            "app/é/日本",
            "a.b/c..d/...",
            "a%20b",
            "a*b",
            "app/%2",
        ] {
            assert_eq!(canonical_path(p), Ok(p.to_string()), "{p}");
        }
    }

    #[test]
    fn canonical_rejects_empty() {
        assert_eq!(canonical_path(""), Err(PathError::Empty));
    }

    #[test]
    fn canonical_rejects_dot_segments() {
        assert!(matches!(
            canonical_path("app/../x"),
            Err(PathError::DotSegment { segment: "..", .. })
        ));
        assert!(matches!(
            canonical_path("./a"),
            Err(PathError::DotSegment { segment: ".", .. })
        ));
        assert!(matches!(
            canonical_path(".."),
            Err(PathError::DotSegment { .. })
        ));
        assert!(matches!(
            canonical_path("a/."),
            Err(PathError::DotSegment { .. })
        ));
        let msg = canonical_path("app/../x").unwrap_err().to_string();
        assert!(msg.contains("path segment '..' is not allowed"), "{msg}");
    }

    #[test]
    fn canonical_rejects_empty_segments() {
        for p in ["a//b", "/a", "a/", "/", "//"] {
            assert!(
                matches!(canonical_path(p), Err(PathError::EmptySegment { .. })),
                "{p}"
            );
        }
    }

    #[test]
    fn canonical_rejects_backslash() {
        assert!(matches!(
            canonical_path("a\\b"),
            Err(PathError::Backslash { .. })
        ));
        assert!(matches!(
            canonical_path("..\\x"),
            Err(PathError::Backslash { .. })
        ));
    }

    #[test]
    fn canonical_rejects_control_characters() {
        for p in [
            "a\u{0}b",
            "a\nb",
            "a\tb",
            "a\u{7f}",
            "a\u{85}b",
            "\u{1b}[31m",
        ] {
            assert!(
                matches!(canonical_path(p), Err(PathError::ControlChar { .. })),
                "{p:?}"
            );
        }
        let msg = canonical_path("a\nb").unwrap_err().to_string();
        assert!(msg.contains("'a\\nb'"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn canonical_rejects_too_long() {
        let ok = "a".repeat(MAX_PATH_BYTES);
        assert!(canonical_path(&ok).is_ok());
        let long = "a".repeat(1025);
        assert_eq!(canonical_path(&long), Err(PathError::TooLong { len: 1025 }));
        let msg = canonical_path(&"a".repeat(1500)).unwrap_err().to_string();
        assert_eq!(msg, "path is 1500 bytes; the limit is 1024");
    }

    #[test]
    fn canonical_rejects_too_many_segments() {
        assert!(canonical_path(&seg_path(32)).is_ok());
        assert_eq!(
            canonical_path(&seg_path(33)),
            Err(PathError::TooManySegments { count: 33 })
        );
    }

    #[test]
    fn canonical_rejects_double_encoding() {
        for (p, found) in [
            ("%2e%2E", "%2e"),
            ("a%2Fb", "%2F"),
            ("a/%5cb", "%5c"),
            ("x%2E", "%2E"),
        ] {
            match canonical_path(p) {
                Err(PathError::DoubleEncoded { found: f, .. }) => assert_eq!(f, found, "{p}"),
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    // --- list_prefix ---

    #[test]
    fn list_prefix_normalises_trailing_slash() {
        assert_eq!(list_prefix(""), Ok(String::new()));
        assert_eq!(list_prefix("app"), Ok("app/".to_string()));
        assert_eq!(list_prefix("app/"), Ok("app/".to_string()));
        assert_eq!(list_prefix("app/db/"), Ok("app/db/".to_string()));
    }

    #[test]
    fn list_prefix_rejects_bad_prefixes() {
        for p in [
            "/", "app//", "//", "/app", "app/../", "../", "./", "a\\b/", "a\nb/", "%2e/",
        ] {
            assert!(list_prefix(p).is_err(), "{p:?}");
        }
        assert!(list_prefix(&format!("{}/", seg_path(33))).is_err());
        assert!(list_prefix(&format!("{}/", seg_path(32))).is_ok());
    }

    // --- decode_url_path ---

    #[test]
    fn decode_passes_plain_text_and_decodes_escapes() {
        assert_eq!(decode_url_path("app/db"), Ok("app/db".to_string()));
        assert_eq!(decode_url_path(""), Ok(String::new()));
        assert_eq!(decode_url_path("a%20b"), Ok("a b".to_string()));
        assert_eq!(decode_url_path("a+b"), Ok("a+b".to_string()));
        assert_eq!(decode_url_path("%C3%A9"), Ok("é".to_string()));
        assert_eq!(decode_url_path("%c3%a9"), Ok("é".to_string()));
        assert_eq!(decode_url_path("%25"), Ok("%".to_string()));
    }

    #[test]
    fn decode_rejects_encoded_separators() {
        for raw in ["app%2Fx", "app%2fx", "app%2e%2e", "%2E", "a%5Cb", "a%5cb"] {
            assert!(
                matches!(
                    decode_url_path(raw),
                    Err(PathError::EncodedSeparator { .. })
                ),
                "{raw}"
            );
        }
        assert_eq!(
            decode_url_path("app%2Fx"),
            Err(PathError::EncodedSeparator {
                found: "%2F".to_string(),
                offset: 3
            })
        );
    }

    #[test]
    fn decode_rejects_encoded_controls() {
        for raw in ["a%00b", "%0a", "%0D", "%1f", "%1F", "%7f", "%7F"] {
            assert!(
                matches!(decode_url_path(raw), Err(PathError::EncodedControl { .. })),
                "{raw}"
            );
        }
    }

    #[test]
    fn decode_rejects_malformed_escapes() {
        for raw in ["%zz", "%", "a%", "a%2", "%2g", "%g2", "%é"] {
            assert!(
                matches!(decode_url_path(raw), Err(PathError::MalformedEscape { .. })),
                "{raw}"
            );
        }
        let msg = decode_url_path("ab%zz").unwrap_err().to_string();
        assert!(msg.contains("'%zz'") && msg.contains("byte 2"), "{msg}");
    }

    #[test]
    fn decode_rejects_invalid_utf8() {
        assert_eq!(
            decode_url_path("%FF"),
            Err(PathError::NotUtf8 { offset: 0 })
        );
        assert_eq!(
            decode_url_path("ab%C3"),
            Err(PathError::NotUtf8 { offset: 2 })
        );
        assert!(decode_url_path("%C3%28").is_err());
    }

    #[test]
    fn decode_then_canonical_catches_double_encoding() {
        let once = decode_url_path("app%252Fx").unwrap();
        assert_eq!(once, "app%2Fx");
        assert!(matches!(
            canonical_path(&once),
            Err(PathError::DoubleEncoded { .. })
        ));
    }

    // --- names ---

    #[test]
    fn namespaces() {
        for ns in ["a", "default", "team-a", "a1", "0", "1-2", &"a".repeat(63)] {
            assert_eq!(validate_namespace(ns), Ok(()), "{ns}");
        }
        for ns in [
            "",
            "Team_A",
            "team_a",
            "-a",
            "a-",
            "a.b",
            "A",
            "é",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    validate_namespace(ns),
                    Err(PathError::InvalidNamespace { .. })
                ),
                "{ns}"
            );
        }
        assert_eq!(
            validate_namespace("Team_A").unwrap_err().to_string(),
            "namespace 'Team_A' is invalid: use lowercase letters, digits and '-', 1 to 63 \
             characters, starting and ending with a letter or digit"
        );
    }

    #[test]
    fn policy_names() {
        for n in [
            "a",
            "admin",
            "read-only",
            "app_ro",
            "0",
            "a-",
            "a_",
            &"a".repeat(64),
        ] {
            assert_eq!(validate_policy_name(n), Ok(()), "{n}");
        }
        for n in [
            "",
            "-a",
            "_a",
            "App",
            "a.b",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(
                    validate_policy_name(n),
                    Err(PathError::InvalidPolicyName { .. })
                ),
                "{n}"
            );
        }
    }

    // --- messages ---

    #[test]
    fn messages_truncate_and_escape_input() {
        let long = format!("{}//x", "b".repeat(500));
        let msg = canonical_path(&long).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("'{}…'", "b".repeat(MAX_ECHO_CHARS))),
            "{msg}"
        );
        assert!(!msg.contains(&"b".repeat(MAX_ECHO_CHARS + 1)), "{msg}");

        let msg = validate_namespace("\u{1b}[2Jx").unwrap_err().to_string();
        assert!(msg.contains("'\\u{1b}[2Jx'"), "{msg}");
        assert!(!msg.contains('\u{1b}'));

        let msg = validate_policy_name(&"Z".repeat(1000))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 300, "{msg}");
    }
}
