//! The data dir is private: kstash creates it `0700` and every file in it
//! `0600`, and refuses to start on a data dir that group or others can reach.
//!
//! Invariants:
//! - Before anything touches the data dir, [`prepare`] sets the process
//!   umask to `077`, so every file and directory created afterwards, by
//!   kstash or by a library (sled's log files, snapshots, the `node-id`
//!   file), is private however it is opened.
//! - [`prepare`] checks the data dir and everything under it (at most
//!   [`MAX_CHECKED`] entries); an entry with any group or other permission
//!   bit is an error unless the operator allowed it explicitly
//!   (`allow_insecure_data_dir`), and then a warning naming each entry.
//! - A secret file kstash reads (a TLS or cluster private key, a file of
//!   unseal keys or a token) is refused by [`check_private_file`] when
//!   group can write it or others can read or write it.
//!
//! The data dir holds only ciphertext (invariant 1), but also the Raft log's
//! membership, token hashes and wrapped keys: a store that leaks them to
//! every local user gives an attacker the record half of a gatekeeper token.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Most entries [`prepare`] looks at under the data dir (a sled log and
/// its snapshots hold a few dozen).
pub const MAX_CHECKED: usize = 10_000;

/// Permission bits that make an entry reachable by group or others.
const NOT_PRIVATE: u32 = 0o077;

/// Why the data dir cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// The data dir could not be created or read.
    #[error("data dir {path}: {source}")]
    Io {
        /// The entry.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Group or others can reach entries of the data dir.
    #[error(
        "the data dir is not private: {} (kstash keeps its data dir 0700 and its files 0600; \
         fix it with `chmod -R go-rwx {}`, or point data_dir at a new directory kstash \
         creates; allow_insecure_data_dir = true only warns)",
        list(.entries), .dir.display()
    )]
    NotPrivate {
        /// The data dir.
        dir: PathBuf,
        /// Each entry with its mode, at most 5 of them.
        entries: Vec<(PathBuf, u32)>,
    },
}

/// Why a secret file is refused.
#[derive(Debug, Error)]
pub enum PrivateFileError {
    /// The file's metadata could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Group can write the file, or others can read or write it.
    #[error(
        "{} is readable by others or writable by group (mode {:o}); chmod 600 it",
        .path.display(), .mode & 0o777
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

fn list(entries: &[(PathBuf, u32)]) -> String {
    entries
        .iter()
        .take(5)
        .map(|(p, mode)| format!("{} is mode {:o}", p.display(), mode & 0o7777))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Set a private umask, create `dir` (mode `0700`, parents too) if it is
/// missing, and check that nothing under it is reachable by group or
/// others. With `allow_insecure`, an entry that is not private is logged as
/// a warning instead of refused.
pub fn prepare(dir: &Path, allow_insecure: bool) -> Result<(), DataDirError> {
    set_private_umask();
    create(dir)?;
    let entries = not_private(dir)?;
    if entries.is_empty() {
        return Ok(());
    }
    let err = DataDirError::NotPrivate {
        dir: dir.to_path_buf(),
        entries,
    };
    if allow_insecure {
        tracing::warn!("{err}");
        Ok(())
    } else {
        Err(err)
    }
}

/// Refuse a secret file (a private key, a file of keys or a token) that
/// others can read or write, or group can write.
pub fn check_private_file(path: &Path) -> Result<(), PrivateFileError> {
    let meta = fs::metadata(path).map_err(|source| PrivateFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Group-read is allowed: a Kubernetes Secret volume with an
        // `fsGroup` gives the pod's user its key as 0440 (root-owned, group
        // fsGroup), never as a 0600 file of its own.
        let mode = meta.permissions().mode();
        if mode & 0o027 != 0 {
            return Err(PrivateFileError::NotPrivate {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let _ = meta;
    Ok(())
}

/// Files and directories created from now on get no group or other bits.
fn set_private_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(NOT_PRIVATE));
}

fn create(dir: &Path) -> Result<(), DataDirError> {
    create_private_dir(dir).map_err(|source| DataDirError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Create `dir` and its missing parents, mode `0700`; an existing directory
/// is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Write `bytes` to `dir/name` durably and privately: a temp file made
/// `0600`, fsync, rename over `name`, fsync of the directory.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

/// Every entry under `dir` (itself included) whose mode has group or other
/// bits, walking at most [`MAX_CHECKED`] entries. Symbolic links are not
/// followed below the top (their own mode means nothing).
pub fn not_private(dir: &Path) -> Result<Vec<(PathBuf, u32)>, DataDirError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataDirError::Io { path, source }
    };
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), fs::metadata(dir).map_err(io_err(dir))?)];
    let mut seen = 0;
    while let Some((path, meta)) = pending.pop() {
        seen += 1;
        if seen > MAX_CHECKED {
            break;
        }
        if let Some(mode) = loose_mode(&meta) {
            found.push((path.clone(), mode));
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(io_err(&path))? {
                let entry = entry.map_err(io_err(&path))?;
                let child = entry.path();
                let meta = fs::symlink_metadata(&child).map_err(io_err(&child))?;
                if !meta.file_type().is_symlink() {
                    pending.push((child, meta));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn loose_mode(meta: &fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        (mode & NOT_PRIVATE != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_new_data_dir_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/data");
        prepare(&dir, false).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        fs::write(dir.join("file"), b"x").unwrap();
        let mode = fs::metadata(dir.join("file")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the umask makes new files private");
    }

    #[test]
    fn a_data_dir_others_can_reach_is_refused_or_only_warned_about() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir, false).unwrap();
        chmod(&dir, 0o750);
        let err = prepare(&dir, false).unwrap_err();
        assert!(err.to_string().contains("mode 750"), "{err}");
        assert!(err.to_string().contains("chmod -R go-rwx"), "{err}");
        prepare(&dir, true).expect("allowed explicitly: a warning only");
        chmod(&dir, 0o700);
        prepare(&dir, false).unwrap();

        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/log"), b"x").unwrap();
        chmod(&dir.join("sub/log"), 0o644);
        let err = prepare(&dir, false).unwrap_err();
        assert!(err.to_string().contains("sub/log is mode 644"), "{err}");
        chmod(&dir.join("sub/log"), 0o600);
        prepare(&dir, false).unwrap();
    }

    #[test]
    fn key_files_may_be_group_readable_but_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        fs::write(&key, "x").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o440, true), // a Kubernetes Secret volume with fsGroup
            (0o640, true),
            (0o660, false),
            (0o604, false),
            (0o644, false),
            (0o606, false),
        ] {
            chmod(&key, mode);
            assert_eq!(check_private_file(&key).is_ok(), ok, "mode {mode:o}");
        }
        chmod(&key, 0o644);
        let err = check_private_file(&key).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "key.pem is readable by others or writable by group (mode 644); chmod 600 it"
            ),
            "{err}"
        );
        let err = check_private_file(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("missing.pem: "), "{err}");
    }
}
