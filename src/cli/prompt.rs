//! Where secrets come from when they are not on the command line: hidden
//! terminal prompts, files, the environment and stdin.
//!
//! Invariants: a secret read here is never echoed (an error names the file
//! and the line, never the text) and lands directly in a [`SecretString`]
//! or a `Zeroizing` buffer; a secret file is refused when others can read
//! it ([`crate::data_dir::check_private_file`]); no more than
//! [`MAX_SECRET_INPUT`] bytes are read from a file or from stdin
//! ([`MAX_JWT_INPUT`] from a ServiceAccount token file).

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{bail, Context};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::{SecretKind, SecretString};

/// Most bytes a keys file, a token file or an access key file may hold:
/// 255 unseal keys (52 characters each) fit several times over.
pub const MAX_SECRET_INPUT: usize = 64 << 10;

/// Ask for a secret on the terminal without echo.
pub fn prompt_secret(label: &str) -> anyhow::Result<SecretString> {
    let text = rpassword::prompt_password(format!("{label}: "))
        .with_context(|| format!("cannot prompt for the {label} (is there a terminal?)"))?;
    let secret = SecretString::new(text);
    let trimmed = secret.expose().trim();
    if trimmed.is_empty() {
        bail!("no {label} entered");
    }
    if trimmed.len() != secret.expose().len() {
        return Ok(SecretString::new(trimmed.to_string()));
    }
    Ok(secret)
}

/// A secret given as an argument, or prompted for when absent or `-`.
pub fn secret_arg(value: Option<String>, label: &str) -> anyhow::Result<SecretString> {
    match value {
        None => prompt_secret(label),
        Some(v) if v == "-" => prompt_secret(label),
        Some(v) => Ok(SecretString::new(v)),
    }
}

/// A secret from an environment variable, when it is set and not empty.
pub fn secret_env(var: &str) -> Option<SecretString> {
    let v = std::env::var(var).ok()?;
    let v = SecretString::new(v);
    (!v.expose().trim().is_empty()).then(|| SecretString::new(v.expose().trim().to_string()))
}

/// `n` unseal keys, prompted one by one.
pub fn prompt_keys(n: u32) -> anyhow::Result<Vec<SecretString>> {
    (1..=n)
        .map(|i| prompt_secret(&format!("unseal key {i}/{n}")))
        .collect()
}

/// A secret kept in a file (surrounding whitespace dropped). The file must
/// not be readable by others or writable by group.
pub fn secret_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = read_secret_input(path)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        bail!("{} is empty", shown(path));
    }
    Ok(SecretString::new(trimmed.to_string()))
}

/// `path` as named in messages (`stdin` for `-`).
fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// The text of a secret file, or of stdin for `-`: a file others can read
/// is refused before it is opened, stdin that is a terminal (it would echo)
/// is refused, input over [`MAX_SECRET_INPUT`] bytes is refused, and so is
/// input that is not UTF-8.
fn read_secret_input(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let name = shown(path);
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = MAX_SECRET_INPUT as u64 + 1;
    if path == Path::new("-") {
        // Typed at a terminal, the input would be echoed as it is typed.
        if std::io::stdin().is_terminal() {
            bail!(
                "stdin is a terminal, which would echo what is typed: pipe the keys or \
                 token in, or leave out the file option to be prompted without echo"
            );
        }
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        crate::data_dir::check_private_file(path)?;
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {name}"))?;
    }
    if bytes.len() > MAX_SECRET_INPUT {
        bail!(
            "{name} holds more than {MAX_SECRET_INPUT} bytes; it is not a file of keys or a token"
        );
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            bail!("{name} is not text (UTF-8)")
        }
    }
}

/// Unseal keys from a file, or from stdin for `-`: one key per line, blank
/// lines and surrounding whitespace ignored. Each key must parse as an
/// unseal key and appear once; an error names the line, never the key.
pub fn keys_file(path: &Path) -> anyhow::Result<Vec<SecretString>> {
    let name = shown(path);
    let text = read_secret_input(path)?;
    let mut keys = Vec::new();
    let mut seen: Vec<(u8, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let key = crate::gatekeeper::shamir::parse(line)
            .map_err(|e| anyhow::anyhow!("{name}, line {n}: {e}"))?;
        if let Some((_, first)) = seen.iter().find(|(x, _)| *x == key.index()) {
            bail!("{name}, line {n}: the same unseal key as line {first}");
        }
        seen.push((key.index(), n));
        keys.push(SecretString::new(line.to_string()));
    }
    if keys.is_empty() {
        bail!("{name} holds no unseal key (one per line)");
    }
    Ok(keys)
}

/// The first `n` of `keys` (read from `path`), or an error saying how many
/// are missing.
pub fn enough_keys(
    mut keys: Vec<SecretString>,
    n: u32,
    path: &Path,
) -> anyhow::Result<Vec<SecretString>> {
    let n = n as usize;
    if keys.len() < n {
        bail!(
            "{} holds {} unseal key(s); this needs {n}",
            shown(path),
            keys.len()
        );
    }
    keys.truncate(n);
    Ok(keys)
}

/// A gatekeeper token from a file, or from stdin for `-`: one line,
/// surrounding whitespace ignored, shaped like a gatekeeper token.
pub fn gatekeeper_token_file(path: &Path) -> anyhow::Result<SecretString> {
    let token = secret_file(path)?;
    if !crate::secret::looks_like(SecretKind::GatekeeperToken, token.expose()) {
        bail!(
            "{} does not hold a gatekeeper token (one line starting with {})",
            shown(path),
            SecretKind::GatekeeperToken.prefix()
        );
    }
    Ok(token)
}

/// Most bytes a ServiceAccount token file may hold: the server refuses a
/// longer JWT, and real ones are about 1 KiB.
pub const MAX_JWT_INPUT: usize = 16 << 10;

/// A Kubernetes ServiceAccount token (a JWT) from `path`, surrounding
/// whitespace (the trailing newline) dropped. Unlike the other secret
/// files, one others can read is accepted: Kubernetes mounts projected
/// tokens world-readable inside the pod (mode 0644) and the pod cannot
/// change that. An error names the file, never its text.
pub fn jwt_file(path: &Path) -> anyhow::Result<SecretString> {
    let name = path.display();
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_JWT_INPUT as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| {
            format!(
                "cannot read the ServiceAccount token {name} (give --jwt-file or set \
                 KSTASH_JWT_FILE to the file of a projected token)"
            )
        })?;
    if bytes.len() > MAX_JWT_INPUT {
        bail!("{name} holds more than {MAX_JWT_INPUT} bytes; it is not a ServiceAccount token");
    }
    let text = match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(e) => {
            e.into_bytes().zeroize();
            bail!("{name} is not text (UTF-8); it is not a ServiceAccount token");
        }
    };
    let jwt = text.trim();
    if jwt.is_empty() {
        bail!("{name} is empty");
    }
    let parts = jwt.split('.').collect::<Vec<_>>();
    let base64url = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    if parts.len() != 3 || !parts.iter().all(base64url) {
        bail!(
            "{name} does not hold a ServiceAccount token (a JWT: three base64url parts \
             separated by dots, on one line)"
        );
    }
    Ok(SecretString::new(jwt.to_string()))
}

/// All of stdin, as it is.
pub fn read_stdin() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .context("reading stdin")?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private (0600) file holding `text`.
    fn private_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    }

    fn unseal_keys(shares: u8, threshold: u8) -> Vec<SecretString> {
        let key = crate::secret::Key32::random();
        crate::gatekeeper::shamir::split(&key, shares, threshold)
    }

    #[test]
    fn keys_come_one_per_line_blank_lines_and_spaces_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let keys = unseal_keys(3, 2);
        let text = format!(
            "\n  {}  \n\n\t{}\r\n{}\n\n",
            keys[0].expose(),
            keys[1].expose(),
            keys[2].expose()
        );
        let path = private_file(dir.path(), "keys", &text);
        let read = keys_file(&path).unwrap();
        let exposed: Vec<&str> = read.iter().map(|k| k.expose()).collect();
        let want: Vec<&str> = keys.iter().map(|k| k.expose()).collect();
        assert_eq!(exposed, want);
        assert_eq!(enough_keys(read, 2, &path).unwrap().len(), 2);
        let e = enough_keys(keys_file(&path).unwrap(), 4, &path).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds 3 unseal key(s); this needs 4"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_key_is_named_by_its_line_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let keys = unseal_keys(2, 2);
        let mut typo = keys[1].expose().to_string();
        typo.replace_range(3..4, if &typo[3..4] == "A" { "B" } else { "A" });
        let path = private_file(
            dir.path(),
            "keys",
            &format!("{}\n\n{typo}\n", keys[0].expose()),
        );
        let e = keys_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("invalid unseal key"),
            "{e}"
        );
        assert!(!e.contains(&typo) && !e.contains(keys[0].expose()), "{e}");

        let twice = format!("{}\n{}\n", keys[0].expose(), keys[0].expose());
        let path = private_file(dir.path(), "twice", &twice);
        let e = keys_file(&path).unwrap_err().to_string();
        assert!(e.contains("line 2: the same unseal key as line 1"), "{e}");

        let path = private_file(dir.path(), "empty", "\n \n");
        let e = keys_file(&path).unwrap_err().to_string();
        assert!(e.contains("holds no unseal key"), "{e}");
    }

    #[test]
    fn oversized_and_binary_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(dir.path(), "big", &"x".repeat(MAX_SECRET_INPUT + 1));
        let e = keys_file(&path).unwrap_err().to_string();
        assert!(e.contains("more than 65536 bytes"), "{e}");
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = keys_file(&path).unwrap_err().to_string();
        assert!(e.contains("not text"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_keys_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = unseal_keys(1, 1);
        let path = private_file(dir.path(), "keys", keys[0].expose());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = keys_file(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
        let e = gatekeeper_token_file(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
    }

    #[test]
    fn a_jwt_file_is_bounded_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{jwt}\n")).unwrap();
        #[cfg(unix)]
        {
            // Kubernetes mounts projected tokens world-readable.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert_eq!(jwt_file(&path).unwrap().expose(), jwt);

        let big = dir.path().join("big");
        std::fs::write(&big, "a".repeat(MAX_JWT_INPUT + 1)).unwrap();
        let e = format!("{:#}", jwt_file(&big).unwrap_err());
        assert!(
            e.contains("more than 16384 bytes") && e.contains("big"),
            "{e}"
        );
        let exact = dir.path().join("exact");
        let long = format!("{}.b.c", "a".repeat(MAX_JWT_INPUT - 4));
        std::fs::write(&exact, &long).unwrap();
        assert_eq!(jwt_file(&exact).unwrap().expose().len(), MAX_JWT_INPUT);

        let missing = dir.path().join("missing");
        let e = format!("{:#}", jwt_file(&missing).unwrap_err());
        assert!(
            e.contains("missing") && e.contains("--jwt-file") && e.contains("KSTASH_JWT_FILE"),
            "{e}"
        );

        let secret = "not-a-jwt-but-secret";
        for (file, text, says) in [
            ("empty", "\n", "is empty"),
            ("plain", secret, "does not hold a ServiceAccount token"),
            (
                "two",
                "a.b.c\na.b.c\n",
                "does not hold a ServiceAccount token",
            ),
            ("dots", "a..c", "does not hold a ServiceAccount token"),
        ] {
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            let e = format!("{:#}", jwt_file(&path).unwrap_err());
            assert!(e.contains(says) && e.contains(file), "{file}: {e}");
            assert!(!e.contains(secret), "{e}");
        }
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        let e = jwt_file(&bin).unwrap_err().to_string();
        assert!(e.contains("not text"), "{e}");
    }

    #[test]
    fn a_token_file_holds_one_gatekeeper_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = crate::secret::new_bearer(SecretKind::GatekeeperToken);
        let path = private_file(dir.path(), "tok", &format!("\n {} \n", token.expose()));
        assert_eq!(
            gatekeeper_token_file(&path).unwrap().expose(),
            token.expose()
        );
        let two = format!("{}\n{}\n", token.expose(), token.expose());
        let path = private_file(dir.path(), "two", &two);
        let e = gatekeeper_token_file(&path).unwrap_err().to_string();
        assert!(e.contains("does not hold a gatekeeper token"), "{e}");
        assert!(!e.contains(token.expose()), "{e}");
    }
}
