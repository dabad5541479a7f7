//! `kstash key …`: the named encryption keys of the token's namespace
//! (REST `/v1/keys`), with the access token of `--token` / KSTASH_TOKEN.
//!
//! Invariants:
//! - No more than [`keys::MAX_PLAINTEXT_BYTES`] of plaintext (its base64
//!   form with `--base64`) and [`keys::MAX_CIPHERTEXT_BYTES`] of ciphertext
//!   are read from a file or stdin; a larger input is refused before
//!   anything is sent.
//! - A plaintext is held in `Zeroizing` buffers, is written only where the
//!   user asked for it (stdout, or `--output FILE` created 0600), and never
//!   appears in a note, an error or a log line.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Subcommand;
use serde::Serialize;
use zeroize::Zeroizing;

use super::commands::{create_private, note_truncated, pages, print_lines};
use super::output::{line, note, print_json, print_raw, Format, Table};
use super::{parse_idempotency_key, PageArgs};
use crate::client::wire::{NamedKeyConfig, NamedKeyInfo, NamedKeyList};
use crate::client::Client;
use crate::keys;

/// `kstash key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a named encryption key (version 1) in the token's namespace
    /// (an admin token). Prints the key's metadata, never its material.
    Create {
        /// The key's name: 1 to 64 of a-z, 0-9, '-' and '_', starting with
        /// a letter or digit.
        name: String,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Show a key's versions, key ids and creation times, never its
    /// material (an admin token, or one that may encrypt or decrypt with
    /// it).
    Get {
        /// The key's name.
        name: String,
    },
    /// List the keys of the token's namespace, in name order (an admin
    /// token).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add a version to a key, which encrypts from now on; older versions
    /// keep decrypting (an admin token).
    Rotate {
        /// The key's name.
        name: String,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not rotate twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Set the oldest version of a key that still decrypts (an admin
    /// token). Versions below it stop decrypting for good: it never goes
    /// down.
    Config {
        /// The key's name.
        name: String,
        /// The oldest version that decrypts: 1 to the latest version.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        min_decryption_version: u32,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Encrypt bytes (at most 64 KiB) from --plaintext-file or stdin under
    /// the key's latest version, and print the ciphertext
    /// (`kstash:v<N>:…`; with --format json also the version and key id).
    /// Needs `encrypt` on `keys/<name>` (admin tokens have it).
    Encrypt {
        /// The key's name.
        name: String,
        /// Read the plaintext from FILE (`-`: stdin, the default), exactly
        /// as it is: a trailing newline is encrypted too.
        #[arg(long, value_name = "FILE")]
        plaintext_file: Option<PathBuf>,
        /// The input is base64 (standard alphabet; whitespace ignored):
        /// decode it and encrypt the bytes.
        #[arg(long)]
        base64: bool,
    },
    /// Decrypt a ciphertext the key made and write the plaintext, raw, to
    /// stdout or --output FILE. Needs `decrypt` on `keys/<name>` (admin
    /// tokens have it).
    Decrypt {
        /// The key's name.
        name: String,
        /// The ciphertext (`kstash:v<N>:…`), or `-` to read it from stdin.
        ciphertext: String,
        /// Write the plaintext to FILE, created with mode 0600 (an existing
        /// file is not overwritten), instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Write the plaintext in base64 (with a newline) instead of raw.
        #[arg(long)]
        base64: bool,
    },
}

/// Run `kstash key …`.
pub async fn run(client: &Client, fmt: Format, cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create {
            name,
            idempotency_key,
        } => {
            let info = client.create_key(&name, idempotency_key.as_deref()).await?;
            print_info(fmt, &info)?;
        }
        KeyCommand::Get { name } => print_info(fmt, &client.get_key(&name).await?)?,
        KeyCommand::List { page } => {
            let (names, cursor) = pages(&page, |c| async move {
                let l = client.list_keys(c.as_deref(), page.limit).await?;
                Ok((l.keys, l.truncated, l.cursor))
            })
            .await?;
            let l = NamedKeyList {
                keys: names,
                truncated: cursor.is_some(),
                cursor,
            };
            match fmt {
                Format::Json => print_json(&l)?,
                Format::Table => print_lines(&l.keys)?,
            }
            note_truncated(l.keys.len(), l.cursor.as_deref());
        }
        KeyCommand::Rotate {
            name,
            idempotency_key,
        } => {
            let info = client.rotate_key(&name, idempotency_key.as_deref()).await?;
            print_info(fmt, &info)?;
        }
        KeyCommand::Config {
            name,
            min_decryption_version,
            idempotency_key,
        } => {
            let config = NamedKeyConfig {
                min_decryption_version,
            };
            let info = client
                .configure_key(&name, &config, idempotency_key.as_deref())
                .await?;
            print_info(fmt, &info)?;
        }
        KeyCommand::Encrypt {
            name,
            plaintext_file,
            base64,
        } => {
            let plaintext = read_plaintext(plaintext_file.as_deref(), base64)?;
            let out = client.encrypt(&name, &plaintext).await?;
            match fmt {
                Format::Json => print_json(&out)?,
                Format::Table => line(&out.ciphertext)?,
            }
        }
        KeyCommand::Decrypt {
            name,
            ciphertext,
            output,
            base64,
        } => {
            let ciphertext = if ciphertext == "-" {
                read_ciphertext(&mut std::io::stdin().lock())?
            } else {
                ciphertext
            };
            let out = client.decrypt(&name, &ciphertext).await?;
            let bytes = if base64 {
                let mut text = base64::engine::general_purpose::STANDARD.encode(&*out.plaintext);
                text.push('\n');
                Zeroizing::new(text.into_bytes())
            } else {
                Zeroizing::new(out.plaintext.to_vec())
            };
            match (output, fmt) {
                (Some(path), fmt) => {
                    let mut f = create_private(&path)?;
                    f.write_all(&bytes)
                        .and_then(|()| f.sync_all())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    match fmt {
                        Format::Json => print_json(&Written {
                            output: &path,
                            key_version: out.key_version,
                            key_id: &out.key_id,
                        })?,
                        Format::Table => note(&format!(
                            "Wrote {} bytes to {} (decrypted by version {} of key {name}).",
                            bytes.len(),
                            path.display(),
                            out.key_version
                        )),
                    }
                }
                (None, Format::Json) => print_json(&out_json(&out))?,
                (None, Format::Table) => print_raw(&bytes)?,
            }
        }
    }
    Ok(())
}

/// What `key decrypt --output FILE --format json` prints: where the
/// plaintext went, not the plaintext.
#[derive(Serialize)]
struct Written<'a> {
    output: &'a Path,
    key_version: u32,
    key_id: &'a str,
}

/// The API's JSON answer of a decryption (`plaintext` in base64), for
/// `--format json` without `--output`: the plaintext is the result asked
/// for.
fn out_json(out: &crate::client::Decrypted) -> crate::client::wire::DecryptResponse {
    crate::client::wire::DecryptResponse {
        plaintext: crate::secret::SecretString::new(
            base64::engine::general_purpose::STANDARD.encode(&*out.plaintext),
        ),
        key_version: out.key_version,
        key_id: out.key_id.clone(),
    }
}

/// A key's metadata: the API's JSON, or a table and its versions.
fn print_info(fmt: Format, k: &NamedKeyInfo) -> anyhow::Result<()> {
    match fmt {
        Format::Json => print_json(k)?,
        Format::Table => {
            let mut t = Table::new();
            t.kv("Name", &k.name)
                .kv("Namespace", &k.namespace)
                .kv("Latest version", k.latest_version)
                .kv("Min decryption version", k.min_decryption_version)
                .kv("Key id", &k.key_id)
                .kv("Created at", &k.created_at)
                .kv("Exhausted", k.exhausted);
            t.print()?;
            line("")?;
            let mut v = Table::with_header(&["VERSION", "CREATED AT", "KEY ID"]);
            for version in &k.versions {
                v.row(vec![
                    version.version.to_string(),
                    version.created_at.clone(),
                    version.key_id.clone(),
                ]);
            }
            v.print()?;
            if k.exhausted {
                note(&format!(
                    "Version {} reached its encryption limit: rotate the key (kstash key rotate \
                     {}) to encrypt again.",
                    k.latest_version, k.name
                ));
            }
        }
    }
    Ok(())
}

/// Most bytes of input `key encrypt --base64` reads: the base64 form of
/// the largest plaintext, with room for line breaks.
const MAX_BASE64_INPUT: usize = 4 * keys::MAX_PLAINTEXT_BYTES.div_ceil(3) + (4 << 10);

/// The plaintext of `key encrypt`: FILE's bytes, or stdin's (`None` or
/// `-`), decoded from base64 with `base64`. At most
/// [`keys::MAX_PLAINTEXT_BYTES`].
fn read_plaintext(file: Option<&Path>, base64: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let limit = if base64 {
        MAX_BASE64_INPUT
    } else {
        keys::MAX_PLAINTEXT_BYTES
    };
    let (raw, from) = match file {
        Some(path) if path != Path::new("-") => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            (read_bounded(f, limit)?, path.display().to_string())
        }
        _ => {
            if std::io::stdin().is_terminal() {
                note("Reading the plaintext from stdin; end it with Ctrl-D.");
            }
            (
                read_bounded(std::io::stdin().lock(), limit)?,
                "stdin".into(),
            )
        }
    };
    plaintext_of(raw, base64, &from)
}

/// The plaintext in `raw` (read from `from`), decoded when `base64`.
fn plaintext_of(
    raw: Option<Zeroizing<Vec<u8>>>,
    base64: bool,
    from: &str,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let too_large = || {
        anyhow::anyhow!(
            "the plaintext in {from} is over {} bytes (64 KiB), the most one encryption takes: \
             encrypt a smaller payload, such as a data key that encrypts the rest",
            keys::MAX_PLAINTEXT_BYTES
        )
    };
    let raw = raw.ok_or_else(too_large)?;
    if !base64 {
        return Ok(raw);
    }
    let text: Zeroizing<Vec<u8>> = Zeroizing::new(
        raw.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&*text)
        .map(Zeroizing::new)
        .map_err(|_| {
            anyhow::anyhow!(
                "{from} is not valid base64 (standard alphabet, padded with '='); leave out \
                 --base64 to encrypt the bytes as they are"
            )
        })?;
    if decoded.len() > keys::MAX_PLAINTEXT_BYTES {
        return Err(too_large());
    }
    Ok(decoded)
}

/// All of `input` when it holds at most `limit` bytes, else `None` (at
/// most `limit + 1` bytes are read). The buffer is allocated once, so no
/// copy is left behind by a reallocation.
fn read_bounded(input: impl Read, limit: usize) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(limit + 1));
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .context("cannot read the input")?;
    Ok((buf.len() <= limit).then_some(buf))
}

/// A ciphertext from `input` (`key decrypt NAME -`): surrounding
/// whitespace trimmed, at most [`keys::MAX_CIPHERTEXT_BYTES`].
fn read_ciphertext(input: &mut impl Read) -> anyhow::Result<String> {
    let Some(raw) = read_bounded(input, keys::MAX_CIPHERTEXT_BYTES + 2)? else {
        bail!(
            "the ciphertext on stdin is over {} bytes, longer than any ciphertext kstash makes",
            keys::MAX_CIPHERTEXT_BYTES
        );
    };
    let text = std::str::from_utf8(&raw)
        .context("the ciphertext on stdin is not text (expected kstash:v<N>:<base64>)")?
        .trim();
    if text.is_empty() {
        bail!("no ciphertext on stdin (expected kstash:v<N>:<base64>)");
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    #[test]
    fn key_commands_parse() {
        let parse = |args: &[&str]| {
            let argv = ["kstash", "key"].iter().chain(args).copied();
            Cli::try_parse_from(argv).map(|c| c.command)
        };
        let Ok(Command::Key(KeyCommand::Config {
            name,
            min_decryption_version,
            idempotency_key,
        })) = parse(&[
            "config",
            "kek",
            "--min-decryption-version",
            "2",
            "--idempotency-key",
            "c-1",
        ])
        else {
            panic!("not key config")
        };
        assert_eq!((name.as_str(), min_decryption_version), ("kek", 2));
        assert_eq!(idempotency_key.as_deref(), Some("c-1"));
        // config needs a version of at least 1.
        for bad in [
            &["config", "kek"][..],
            &["config", "kek", "--min-decryption-version", "0"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert!(matches!(
            parse(&["encrypt", "kek", "--plaintext-file", "f", "--base64"]),
            Ok(Command::Key(KeyCommand::Encrypt {
                plaintext_file: Some(_),
                base64: true,
                ..
            }))
        ));
        assert!(matches!(
            parse(&["decrypt", "kek", "-", "-o", "out"]),
            Ok(Command::Key(KeyCommand::Decrypt { ref ciphertext, output: Some(_), base64: false, .. }))
                if ciphertext == "-"
        ));
        // decrypt needs the ciphertext; a bad idempotency key is a usage error.
        assert_eq!(parse(&["decrypt", "kek"]).unwrap_err().exit_code(), 2);
        let e = parse(&["create", "kek", "--idempotency-key", "bad key"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(matches!(
            parse(&["list", "--limit", "5", "--all"]),
            Ok(Command::Key(KeyCommand::List { ref page })) if page.limit == Some(5) && page.all
        ));
        for sub in ["get", "rotate", "create"] {
            assert!(parse(&[sub, "kek"]).is_ok(), "{sub}");
        }
    }

    #[test]
    fn plaintext_input_is_bounded_and_base64_is_decoded() {
        let max = keys::MAX_PLAINTEXT_BYTES;
        // Raw: up to the limit as it is, one byte more refused.
        let ok = read_bounded(&vec![7u8; max][..], max).unwrap();
        assert_eq!(plaintext_of(ok, false, "stdin").unwrap().len(), max);
        let over = read_bounded(&vec![7u8; max + 1][..], max).unwrap();
        assert!(over.is_none());
        let e = plaintext_of(over, false, "f").unwrap_err().to_string();
        assert!(e.contains("over 65536 bytes") && e.contains("in f"), "{e}");

        // Base64: whitespace ignored, decoded, the decoded size bounded.
        let text = b"aGVs\nbG8=\n".to_vec();
        let got = plaintext_of(Some(Zeroizing::new(text)), true, "stdin").unwrap();
        assert_eq!(&got[..], b"hello");
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; max + 1]);
        let raw = read_bounded(big.as_bytes(), MAX_BASE64_INPUT).unwrap();
        assert!(
            raw.is_some(),
            "the base64 of 64 KiB + 1 fits the read bound"
        );
        assert!(plaintext_of(raw, true, "stdin").is_err());
        let e = plaintext_of(Some(Zeroizing::new(b"s3cr3t!!".to_vec())), true, "stdin")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not valid base64") && !e.contains("s3cr3t"),
            "{e}"
        );
    }

    #[test]
    fn a_ciphertext_from_stdin_is_trimmed_and_bounded() {
        let got = read_ciphertext(&mut &b"  kstash:v1:AAAA\n"[..]).unwrap();
        assert_eq!(got, "kstash:v1:AAAA");
        assert!(read_ciphertext(&mut &b"\n"[..]).is_err());
        let long = vec![b'A'; keys::MAX_CIPHERTEXT_BYTES + 3];
        let e = read_ciphertext(&mut &long[..]).unwrap_err().to_string();
        assert!(e.contains("longer than any ciphertext"), "{e}");
    }
}
