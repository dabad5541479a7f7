//! The files of a CSI volume as the provider answers them: names the driver
//! will write under the pod's mount, and their modes.
//!
//! Invariant: a name that passes [`FileName::parse`] is relative, has no
//! empty, `.` or `..` element, does not start with `..`, holds no
//! backslash, NUL or other control character, and is at most
//! [`MAX_FILE_NAME_BYTES`] long; a mode that passes [`parse_mode`] is 0 to
//! 0o777; and [`FileSet`] never holds one name twice, nor a name that is a
//! directory of another (`a` and `a/b`). The driver refuses some of these
//! itself; the provider refuses all of them first, with a message that
//! names the object and says what to fix, so a volume is never half
//! written.

use std::collections::BTreeSet;

use thiserror::Error;

/// Longest file name, in bytes (a path under the mount).
pub const MAX_FILE_NAME_BYTES: usize = 512;

/// Most files one volume may have.
pub const MAX_FILES: usize = 256;

/// The mode of a file when its object gives none: read-only for the pod's
/// user.
pub const DEFAULT_MODE: u32 = 0o400;

/// What is wrong with a file name or mode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FileError {
    /// Empty, absolute, with a bad element, or too long.
    #[error("fileName {name:?} is not allowed: {why}")]
    Name {
        /// The name as given (cut to a readable length).
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The same file twice, or a file inside another file's name.
    #[error("fileName {0:?} is used twice, or as a file and as a directory: give every object its own fileName")]
    Duplicate(String),
    /// A mode that is not octal 0 to 0777.
    #[error("mode {0:?} is not allowed: give an octal mode with its leading 0, from 0000 to 0777 (e.g. \"0400\"; a bare number like 400 or 256 is refused, since it reads two ways)")]
    Mode(String),
    /// More files than a volume may have.
    #[error("the volume has more than {MAX_FILES} files")]
    TooMany,
}

/// A checked file name, relative to the mount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    /// Check `name` (see the module's invariant).
    pub fn parse(name: &str) -> Result<FileName, FileError> {
        let refuse = |why| {
            Err(FileError::Name {
                name: name.chars().take(80).collect(),
                why,
            })
        };
        if name.is_empty() {
            return refuse("it is empty");
        }
        if name.len() > MAX_FILE_NAME_BYTES {
            return refuse("it is longer than 512 bytes");
        }
        if name.starts_with('/') {
            return refuse("it is absolute; give a path relative to the mount");
        }
        if name.starts_with("..") {
            return refuse("it starts with '..'");
        }
        if name.chars().any(|c| c.is_control() || c == '\\') {
            return refuse("it holds a backslash or a control character");
        }
        for element in name.split('/') {
            match element {
                "" => return refuse("it has an empty element ('//' or a trailing '/')"),
                "." | ".." => return refuse("it has a '.' or '..' element"),
                _ => {}
            }
        }
        Ok(FileName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parse a file mode given as octal text with its leading zero (`"0400"`,
/// `"0o600"`, `"0"`): 0 to 0o777, nothing else (no setuid, setgid or
/// sticky bit). A bare number (`400`, `256`) is refused: JSON has no octal,
/// so `256` may mean 0o400 to its author and 0o256 (world-writable) here.
pub fn parse_mode(text: &str) -> Result<u32, FileError> {
    let digits = match text.strip_prefix("0o").or_else(|| text.strip_prefix("0O")) {
        Some(digits) => digits,
        None if text.starts_with('0') => text,
        None => return Err(FileError::Mode(text.chars().take(16).collect())),
    };
    let ok = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if ok && mode <= 0o777 => Ok(mode),
        _ => Err(FileError::Mode(text.chars().take(16).collect())),
    }
}

/// The names of one volume so far: each once, none inside another.
#[derive(Debug, Default)]
pub struct FileSet {
    names: BTreeSet<String>,
}

impl FileSet {
    /// Add `name`; refused when it is already there, when it would sit
    /// inside a file already there (`a/b` after `a`), or hold one (`a`
    /// after `a/b`), or when the volume is full.
    pub fn add(&mut self, name: &FileName) -> Result<(), FileError> {
        if self.names.len() >= MAX_FILES {
            return Err(FileError::TooMany);
        }
        let n = name.as_str();
        let clash = self.names.contains(n)
            || self.names.iter().any(|other| {
                n.strip_prefix(other.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
                    || other
                        .strip_prefix(n)
                        .is_some_and(|rest| rest.starts_with('/'))
            });
        if clash {
            return Err(FileError::Duplicate(n.to_string()));
        }
        self.names.insert(n.to_string());
        Ok(())
    }

    /// How many names it holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_without_escapes_pass() {
        for good in ["password", "db/password", "a.b", "a..b", "x/.hidden", "ä/ü"] {
            assert!(FileName::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            FileName::parse("db/password").unwrap().as_str(),
            "db/password"
        );
    }

    #[test]
    fn escapes_and_odd_names_are_refused() {
        let long = "a".repeat(MAX_FILE_NAME_BYTES + 1);
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "..x",
            "a/../../x",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "a\nb",
            long.as_str(),
        ] {
            assert!(
                matches!(FileName::parse(bad), Err(FileError::Name { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn modes_are_octal_up_to_0777() {
        for (text, mode) in [
            ("0400", 0o400),
            ("0640", 0o640),
            ("0o600", 0o600),
            ("0", 0),
            ("0777", 0o777),
        ] {
            assert_eq!(parse_mode(text), Ok(mode), "{text}");
        }
        for bad in [
            "", "0800", "1777", "4755", "01000", "rw", "-1", "0x1ff", "511x", "00400", "400",
            "256", "640", "7",
        ] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_volume_holds_each_name_once_and_no_file_inside_another() {
        let mut set = FileSet::default();
        let name = |n: &str| FileName::parse(n).unwrap();
        set.add(&name("a")).unwrap();
        set.add(&name("ab")).unwrap();
        set.add(&name("c/d")).unwrap();
        assert_eq!(set.add(&name("a")), Err(FileError::Duplicate("a".into())));
        assert!(set.add(&name("a/b")).is_err(), "a file inside the file a");
        assert!(
            set.add(&name("c")).is_err(),
            "a file where the directory c is"
        );
        set.add(&name("c/e")).unwrap();
        assert_eq!(set.len(), 4);
        let mut full = FileSet::default();
        for i in 0..MAX_FILES {
            full.add(&name(&format!("f{i}"))).unwrap();
        }
        assert_eq!(full.add(&name("one-more")), Err(FileError::TooMany));
    }
}
