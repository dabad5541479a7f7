//! The crate's import graph, checked by `cargo test`: which top-level module
//! may name which, and who may name openraft.
//!
//! Invariant: every path from one top-level module into another under
//! `src/` (`crate::x`, `crate::{x, …}`, a `super::` chain that reaches the
//! crate root, an intra-doc link `crate::x`) is an edge that [`ALLOWED`]
//! lists; [`ALLOWED`] has no cycle, so neither has the code; and only
//! `src/raft/` names openraft or reaches its handle (`Replica::raft`). This is
//! ARCHITECTURE.md's "dependencies point one way" in a form that fails.
//!
//! The scan reads source text, not the compiler's view: comments and the
//! contents of string and character literals are dropped first, and
//! `src/lib.rs` and `src/main.rs` (the crate roots) are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules any module may import: plain code with no kstash dependency of
/// its own (ARCHITECTURE: "`acl`, `secret` and `clock` are leaves that
/// anyone may use").
const LEAVES: [&str; 3] = ["acl", "secret", "clock"];

/// Each top-level module and the modules it may import besides
/// [`LEAVES`] (a leaf imports only what its own row lists). A module
/// missing here fails the test: give it a row.
const ALLOWED: &[(&str, &[&str])] = &[
    ("layers", &[]),
    ("acl", &[]),
    ("secret", &[]),
    ("clock", &[]),
    ("data_dir", &[]),
    ("auth", &[]),
    ("keys", &[]),
    ("storage", &[]),
    ("keyspace", &["auth", "keys", "storage"]),
    ("state", &["auth", "keys", "keyspace", "storage"]),
    ("barrier", &["keyspace"]),
    ("gatekeeper", &["state", "keyspace"]),
    ("raft", &["state", "keyspace", "storage", "data_dir"]),
    (
        "service",
        &[
            "auth",
            "keys",
            "gatekeeper",
            "barrier",
            "raft",
            "state",
            "keyspace",
            "storage",
        ],
    ),
    (
        "guard",
        &["service", "auth", "keys", "state", "keyspace", "storage"],
    ),
    (
        "api",
        &[
            "auth",
            "keys",
            "guard",
            "service",
            "gatekeeper",
            "barrier",
            "raft",
            "state",
            "keyspace",
            "storage",
        ],
    ),
    ("client", &["api", "service", "auth", "keys"]),
    (
        "plugins",
        &[
            "keys", "guard", "service", "client", "api", "auth", "data_dir",
        ],
    ),
    (
        "bench",
        &["api", "client", "plugins", "keys", "storage", "auth"],
    ),
    (
        "config",
        &[
            "auth",
            "keys",
            "api",
            "service",
            "gatekeeper",
            "barrier",
            "raft",
            "state",
            "keyspace",
            "storage",
            "data_dir",
        ],
    ),
    (
        "server",
        &[
            "auth",
            "keys",
            "plugins",
            "config",
            "api",
            "guard",
            "service",
            "gatekeeper",
            "barrier",
            "raft",
            "state",
            "keyspace",
            "storage",
            "data_dir",
        ],
    ),
    (
        "cli",
        &[
            "auth",
            "keys",
            "plugins",
            "config",
            "server",
            "api",
            "client",
            "bench",
            "service",
            "gatekeeper",
            "barrier",
            "raft",
            "state",
            "keyspace",
            "storage",
            "data_dir",
        ],
    ),
];

/// One Rust source file under `src/`.
struct Source {
    /// Path below `src/`, with `/` separators.
    rel: String,
    /// Its top-level module (`raft` for `raft/replica.rs`).
    module: String,
    /// How many modules deep the file's own module is (`raft/mod.rs` 1,
    /// `raft/replica.rs` 2): the `super::` chain that reaches the root.
    depth: usize,
    text: String,
}

/// Every `.rs` file under `src/` but the crate roots.
fn sources() -> Vec<Source> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let rel = rel_path(&root, &path);
            if rel == "lib.rs" || rel == "main.rs" {
                return None;
            }
            let parts: Vec<&str> = rel.split('/').collect();
            let module = parts[0].trim_end_matches(".rs").to_string();
            let depth = if rel.ends_with("/mod.rs") {
                parts.len() - 1
            } else {
                parts.len()
            };
            let text = std::fs::read_to_string(&path).unwrap();
            Some(Source {
                rel,
                module,
                depth,
                text,
            })
        })
        .collect()
}

fn rel_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Split Rust source into code (comments dropped, string and character
/// literals emptied) and the text of its doc comments.
fn split_code_and_docs(src: &str) -> (String, String) {
    let chars: Vec<char> = src.chars().collect();
    let mut code = String::new();
    let mut docs = String::new();
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if at(i, "//") {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n);
            let is_doc = (at(i, "///") && !at(i, "////")) || at(i, "//!");
            if is_doc {
                docs.extend(&chars[i..end]);
                docs.push('\n');
            }
            i = end;
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (c == 'r' || at(i, "br")) && (i == 0 || !ident(chars[i - 1])) && {
            let j = i + if c == 'r' { 1 } else { 2 };
            let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
            chars.get(j + hashes) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let j = i + if c == 'r' { 1 } else { 2 };
            let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let mut k = j + hashes + 1;
            while k < chars.len() && !at(k, &close) {
                k += 1;
            }
            code.push_str("\"\"");
            i = k + close.chars().count();
        } else if c == '"' {
            let mut k = i + 1;
            while k < chars.len() && chars[k] != '"' {
                k += if chars[k] == '\\' { 2 } else { 1 };
            }
            code.push_str("\"\"");
            i = k + 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F}') or a lifetime ('a).
            if chars.get(i + 1) == Some(&'\\') {
                let mut k = i + 2;
                while k < chars.len() && chars[k] != '\'' {
                    k += 1;
                }
                code.push_str("' '");
                i = k + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                code.push_str("' '");
                i += 3;
            } else {
                code.push(c);
                i += 1;
            }
        } else {
            code.push(c);
            i += 1;
        }
    }
    (code, docs)
}

/// Identifiers and punctuation of code (`::` is one token).
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The names a path names first after its root, at token `i` (just after
/// the root's `::`): `x` for `x::…`, each of `x`, `y` for `{x::…, y}`.
fn first_segments(toks: &[String], i: usize) -> Vec<String> {
    let is_ident = |t: &str| {
        t.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    };
    match toks.get(i).map(String::as_str) {
        Some("{") => {
            let mut names = Vec::new();
            let mut depth = 0;
            let mut expect_name = true;
            for t in &toks[i..] {
                match t.as_str() {
                    "{" => {
                        depth += 1;
                        expect_name = depth == 1;
                        continue;
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "," if depth == 1 => {
                        expect_name = true;
                        continue;
                    }
                    t if expect_name && depth == 1 && is_ident(t) && t != "self" => {
                        names.push(t.to_string());
                    }
                    _ => {}
                }
                expect_name = false;
            }
            names
        }
        Some(t) if is_ident(t) && t != "self" => vec![t.to_string()],
        _ => Vec::new(),
    }
}

/// The top-level modules that code in a file `depth` modules deep names:
/// through `crate::`, or through a `super::` chain that reaches the crate
/// root (inline `mod x { … }` blocks count as one level more).
fn crate_paths(code: &str, depth: usize) -> BTreeSet<String> {
    let toks = tokens(code);
    let mut found = BTreeSet::new();
    let mut braces = 0usize;
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let prev_is_path = i > 0 && toks[i - 1] == "::";
        match toks[i].as_str() {
            "mod" if toks.get(i + 2).is_some_and(|t| t == "{") => {
                inline_mods.push(braces + 1);
            }
            "{" => braces += 1,
            "}" => {
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
                braces = braces.saturating_sub(1);
            }
            "crate" if !prev_is_path && toks.get(i + 1).is_some_and(|t| t == "::") => {
                found.extend(first_segments(&toks, i + 2));
            }
            "super" if !prev_is_path => {
                let mut k = i;
                let mut ups = 0;
                while toks.get(k).is_some_and(|t| t == "super")
                    && toks.get(k + 1).is_some_and(|t| t == "::")
                {
                    ups += 1;
                    k += 2;
                }
                if ups > 0 && ups == depth + inline_mods.len() {
                    found.extend(first_segments(&toks, k));
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The top-level modules a file names, in its code and its doc links.
fn imports(text: &str, depth: usize) -> BTreeSet<String> {
    let (code, docs) = split_code_and_docs(text);
    let mut found = crate_paths(&code, depth);
    for (at, _) in docs.match_indices("crate::") {
        let before = docs[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = docs[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// Whether code names openraft (`openraft::…`, `use openraft`), the
/// `typ` aliases of its generic types, or reaches its handle through
/// `Replica::raft` (a `.raft()` call).
fn names_openraft(text: &str) -> Vec<&'static str> {
    let (code, _) = split_code_and_docs(text);
    let toks = tokens(&code);
    let mut why = BTreeSet::new();
    for (i, t) in toks.iter().enumerate() {
        let next = |k: usize| toks.get(i + k).map(String::as_str);
        if t == "openraft" {
            why.insert("names the openraft crate");
        }
        if t == "typ" && next(1) == Some("::") {
            why.insert("names raft::types::typ (openraft's generic types)");
        }
        if t == "." && next(1) == Some("raft") && next(2) == Some("(") && next(3) == Some(")") {
            why.insert("calls Replica::raft (openraft's handle)");
        }
    }
    why.into_iter().collect()
}

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    ALLOWED
        .iter()
        .map(|(m, deps)| {
            let leaves = if LEAVES.contains(m) {
                &[][..]
            } else {
                &LEAVES[..]
            };
            (*m, deps.iter().chain(leaves).copied().collect())
        })
        .collect()
}

#[test]
fn every_import_between_top_level_modules_is_in_the_table() {
    let table = allowed();
    let sources = sources();
    let mut problems = Vec::new();
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    for module in &modules {
        if !table.contains_key(module) {
            problems.push(format!(
                "src/{module} is not in layers::ALLOWED: give it a row (what it may import)"
            ));
        }
    }
    for row in table.keys() {
        if !modules.contains(row) {
            problems.push(format!(
                "layers::ALLOWED has a row for {row}, which is not a module under src/"
            ));
        }
    }
    for source in &sources {
        let Some(may) = table.get(source.module.as_str()) else {
            continue;
        };
        for used in imports(&source.text, source.depth) {
            if used != source.module
                && modules.contains(used.as_str())
                && !may.contains(used.as_str())
            {
                problems.push(format!(
                    "src/{} imports crate::{used}, which {} may not import (layers::ALLOWED; \
                     ARCHITECTURE.md, dependencies point one way)",
                    source.rel, source.module
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_allowed_dependencies_have_no_cycle() {
    let table = allowed();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Result<(), String> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            return Err(format!("{} -> {m}", path[at..].join(" -> ")));
        }
        if done.contains(m) {
            return Ok(());
        }
        path.push(m);
        for dep in table.get(m).into_iter().flatten().filter(|d| **d != m) {
            visit(dep, table, path, done)?;
        }
        path.pop();
        done.insert(m);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        if let Err(cycle) = visit(m, &table, &mut Vec::new(), &mut done) {
            panic!("layers::ALLOWED has a cycle: {cycle}");
        }
    }
}

#[test]
fn only_src_raft_names_openraft() {
    let mut problems = Vec::new();
    for source in sources() {
        if source.module == "raft" {
            continue;
        }
        let why = names_openraft(&source.text);
        if !why.is_empty() {
            problems.push(format!(
                "src/{} {}: only src/raft/ may (ask replica::Replica for what you need)",
                source.rel,
                why.join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_every_form_of_import_and_nothing_in_comments_or_strings() {
    let names =
        |text: &str, depth: usize| -> Vec<String> { imports(text, depth).into_iter().collect() };
    assert_eq!(names("use crate::service::Node;", 1), ["service"]);
    assert_eq!(
        names("use crate::{service::{Node, MAX_LIST}, self, storage};", 2),
        ["service", "storage"]
    );
    assert_eq!(
        names("let x = crate::config::format_duration(d);", 2),
        ["config"]
    );
    assert_eq!(
        names("macro_rules! m { () => { $crate::api::x() } }", 1),
        ["api"]
    );
    // `super::` reaches the crate root from a file 1 deep with one `super`,
    // from a file 2 deep with two; an inline `mod` adds a level.
    assert_eq!(names("use super::config::Config;", 1), ["config"]);
    assert_eq!(
        names("use super::replica::Replica;", 2),
        Vec::<String>::new()
    );
    assert_eq!(names("use super::super::api::edges;", 2), ["api"]);
    assert_eq!(
        names("mod tests { use super::super::cli; }\nuse super::bench;", 1),
        ["bench", "cli"]
    );
    // Doc links count; plain comments and strings do not.
    assert_eq!(
        names("/// See [`crate::server::Server`].\nfn f() {}", 1),
        ["server"]
    );
    assert_eq!(
        names(
            "// crate::api\n/* crate::cli */ fn f() { let s = \"crate::bench\"; let r = r#\"crate::client\"#; let c = '\"'; }",
            1
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            "fn f<'a>(x: &'a str) -> char { let c = '{'; crate::state::g(x) }",
            1
        ),
        ["state"]
    );
    assert!(names_openraft("use openraft::Raft;").len() == 1);
    assert!(names_openraft("let m = self.raft.raft().metrics();").len() == 1);
    assert!(names_openraft("let s = \"info,openraft=warn\"; // openraft::Raft").is_empty());
}
