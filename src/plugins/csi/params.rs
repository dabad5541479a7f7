//! A `SecretProviderClass`'s `parameters`, as the driver passes them in the
//! Mount attributes: which kstash cluster to ask (`address`, `caCert`), as
//! which login role (`role`, `namespace`, `audience`), and which secrets
//! become which files (`objects`, a YAML list).
//!
//! Invariant: a [`MountParams`] is fully checked before anything is sent
//! anywhere: every address is an http(s) URL (plain http only to a loopback
//! host unless the provider allows it), the role and namespace are valid
//! names, every object's path is a canonical secret path, its file name
//! passes [`FileName::parse`], its mode [`parse_mode`], and the file set
//! [`FileSet`] (each name once, none inside another). The objects YAML is
//! read without anchors, aliases or tags and within fixed bounds, so a
//! class cannot make the provider expand or allocate without limit. Errors
//! name the parameter (and the object by index) and say what to fix.

use std::collections::BTreeMap;

use thiserror::Error;

use super::files::{parse_mode, FileError, FileName, FileSet, DEFAULT_MODE, MAX_FILES};

/// The parameter naming the kstash node URLs.
pub const ADDRESS: &str = "address";
/// The parameter naming the Kubernetes login role.
pub const ROLE: &str = "role";
/// The parameter naming the kstash namespace.
pub const NAMESPACE: &str = "namespace";
/// The parameter naming the token audience.
pub const AUDIENCE: &str = "audience";
/// The parameter holding the PEM CA bundle.
pub const CA_CERT: &str = "caCert";
/// The parameter holding the objects YAML.
pub const OBJECTS: &str = "objects";

/// The token audience when the class names none.
pub const DEFAULT_AUDIENCE: &str = "kstash";
/// Most addresses one class may list.
pub const MAX_ADDRESSES: usize = 16;
/// Largest `objects` text, in bytes.
pub const MAX_OBJECTS_BYTES: usize = 64 * 1024;
/// Largest `caCert` text, in bytes.
pub const MAX_CA_CERT_BYTES: usize = 64 * 1024;

/// What is wrong with a class's parameters; the message names the
/// parameter and says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsError {
    /// A required parameter is missing or empty.
    #[error("the SecretProviderClass has no parameter {0:?}: add it under spec.parameters")]
    Missing(&'static str),
    /// A parameter's value is not usable.
    #[error("SecretProviderClass parameter {name}: {why}")]
    Invalid {
        /// The parameter (`objects[2].fileName` for an object's field).
        name: String,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// A file name, mode or the file set is wrong.
    #[error("SecretProviderClass parameter objects[{index}]: {source}")]
    File {
        /// The object's index in the list.
        index: usize,
        /// What is wrong.
        source: FileError,
    },
}

/// One object of the class: a secret and the file it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The secret's path inside the kstash namespace (canonical).
    pub path: String,
    /// The file it is written to, relative to the mount.
    pub file: FileName,
    /// The file's mode ([`DEFAULT_MODE`] when the object gives none).
    pub mode: u32,
    /// When set, the secret's value is a JSON object and the file holds
    /// this member of it (a string as is, anything else as JSON text).
    pub field: Option<String>,
}

/// The checked parameters of one Mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountParams {
    /// kstash node URLs, in the order given, without a trailing '/'.
    pub addresses: Vec<String>,
    /// The Kubernetes login role.
    pub role: String,
    /// The kstash namespace (the pod's namespace when the class names none).
    pub namespace: String,
    /// The audience of the pod token to log in with.
    pub audience: String,
    /// PEM root certificates for https addresses.
    pub ca_cert: Option<String>,
    /// The objects, in the order given (at most [`MAX_FILES`]).
    pub objects: Vec<ObjectSpec>,
}

/// What the provider's operator allows a class to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamsPolicy {
    /// Allow `http://` addresses to hosts other than loopback (the pod's
    /// ServiceAccount token then crosses the network in the clear).
    pub allow_http: bool,
}

impl MountParams {
    /// Check a class's `parameters`; `pod_namespace` is the default kstash
    /// namespace.
    pub fn parse(
        parameters: &BTreeMap<String, String>,
        pod_namespace: &str,
        policy: ParamsPolicy,
    ) -> Result<MountParams, ParamsError> {
        let _ = (parameters, pod_namespace, policy, DEFAULT_MODE, MAX_FILES);
        let _ = FileSet::default();
        let _ = parse_mode;
        todo!("issue 18: helper implements")
    }
}
