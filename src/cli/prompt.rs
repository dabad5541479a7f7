//! Where secrets come from when they are not on the command line: hidden
//! terminal prompts, files, the environment and stdin.
//!
//! Invariant: a secret read here is never echoed and lands directly in a
//! [`SecretString`] or a `Zeroizing` buffer.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::secret::SecretString;

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
    crate::config::check_private_file(path)?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?,
    );
    let trimmed = text.trim();
    if trimmed.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(SecretString::new(trimmed.to_string()))
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
