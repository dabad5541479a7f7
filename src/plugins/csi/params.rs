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
//!
//! A blank optional parameter counts as absent. A parameter or object key
//! that differs from one of ours only in case, `-` or `_` is refused with
//! the right spelling rather than ignored. An object's `mode` is octal text
//! in every form, the JSON one included (`256` is 0o256, not 0o400).

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, Span, StrInput};
use thiserror::Error;

use super::files::{parse_mode, FileError, FileName, FileSet, DEFAULT_MODE, MAX_FILES};
use crate::acl::path::{canonical_path, excerpt, validate_namespace};
use crate::auth::kubernetes::role::validate_role_name;

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
/// Longest address, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 1024;
/// Longest `audience`, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 256;
/// Longest `field` of an object, in bytes.
pub const MAX_FIELD_BYTES: usize = 256;

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
    ///
    /// Keys the provider does not know are ignored (the driver adds its
    /// own), except those that differ from one of ours only in case, `-` or
    /// `_` (`Address`, `ca_cert`): those are refused with the right name,
    /// since ignoring them would quietly drop what the author meant.
    pub fn parse(
        parameters: &BTreeMap<String, String>,
        pod_namespace: &str,
        policy: ParamsPolicy,
    ) -> Result<MountParams, ParamsError> {
        for key in parameters.keys() {
            refuse_misspelt(key, &PARAMETERS, |known| {
                invalid(
                    excerpt(key),
                    format!("is not a parameter; did you mean {known}? (names are case-sensitive)"),
                )
            })?;
        }
        let addresses = parse_addresses(required(parameters, ADDRESS)?, policy)?;

        let role = required(parameters, ROLE)?.trim();
        validate_role_name(role).map_err(|e| invalid(ROLE, e.to_string()))?;

        let namespace = match optional(parameters, NAMESPACE) {
            Some(ns) => {
                let ns = ns.trim();
                validate_namespace(ns).map_err(|e| invalid(NAMESPACE, e.to_string()))?;
                ns
            }
            None => {
                validate_namespace(pod_namespace).map_err(|e| {
                    invalid(
                        NAMESPACE,
                        format!(
                            "the pod's namespace cannot be the kstash namespace ({e}): set \
                             the parameter namespace"
                        ),
                    )
                })?;
                pod_namespace
            }
        };

        let audience = match optional(parameters, AUDIENCE) {
            Some(a) => check_audience(a.trim())?,
            None => DEFAULT_AUDIENCE,
        };

        let ca_cert = optional(parameters, CA_CERT)
            .map(|pem| check_ca_cert(pem).map(|()| pem.to_string()))
            .transpose()?;

        let objects = parse_objects(required(parameters, OBJECTS)?)?;

        Ok(MountParams {
            addresses,
            role: role.to_string(),
            namespace: namespace.to_string(),
            audience: audience.to_string(),
            ca_cert,
            objects,
        })
    }
}

/// The parameters the provider reads.
const PARAMETERS: [&str; 6] = [ADDRESS, ROLE, NAMESPACE, AUDIENCE, CA_CERT, OBJECTS];

/// The keys of one object.
const OBJECT_KEYS: [&str; 4] = ["path", "fileName", "mode", "field"];

/// A [`ParamsError::Invalid`] for `name`.
fn invalid(name: impl Into<String>, why: impl Into<String>) -> ParamsError {
    ParamsError::Invalid {
        name: name.into(),
        why: why.into(),
    }
}

/// A parameter that may be absent; blank counts as absent.
fn optional<'a>(parameters: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    parameters
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// A parameter that must be given and not blank.
fn required<'a>(
    parameters: &'a BTreeMap<String, String>,
    name: &'static str,
) -> Result<&'a str, ParamsError> {
    optional(parameters, name).ok_or(ParamsError::Missing(name))
}

/// A name folded for spotting misspellings: lowercase, without `-`/`_`.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `refuse(known)` when `key` is not one of `known_names` but folds to one.
fn refuse_misspelt(
    key: &str,
    known_names: &[&'static str],
    refuse: impl FnOnce(&'static str) -> ParamsError,
) -> Result<(), ParamsError> {
    if known_names.contains(&key) {
        return Ok(());
    }
    let folded = fold(key);
    match known_names.iter().find(|known| fold(known) == folded) {
        Some(known) => Err(refuse(known)),
        None => Ok(()),
    }
}

/// The node URLs: checked, normalised, without a trailing '/', each once.
fn parse_addresses(text: &str, policy: ParamsPolicy) -> Result<Vec<String>, ParamsError> {
    let bad = |why: String| invalid(ADDRESS, why);
    let entries = || {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
    };
    let count = entries().count();
    if count == 0 {
        return Err(bad(
            "lists no URL: give the kstash nodes' URLs, separated by commas or spaces".into(),
        ));
    }
    if count > MAX_ADDRESSES {
        return Err(bad(format!(
            "lists {count} URLs; the limit is {MAX_ADDRESSES}"
        )));
    }
    let mut addresses: Vec<String> = Vec::with_capacity(count);
    for (n, entry) in entries().enumerate() {
        let address = check_address(entry, policy)
            .map_err(|why| bad(format!("entry {} {why}", shown(n, entry))))?;
        if addresses.contains(&address) {
            return Err(bad(format!(
                "lists {address} twice: give each kstash node once"
            )));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// How an address entry appears in a message: its position, and its text
/// unless that could hold a password (`user:pass@host`).
fn shown(n: usize, entry: &str) -> String {
    if entry.contains('@') {
        format!("{}", n + 1)
    } else {
        format!("{} ({})", n + 1, excerpt(entry))
    }
}

/// One address, normalised by the URL parser (lowercase host, no default
/// port) and without a trailing '/'.
fn check_address(entry: &str, policy: ParamsPolicy) -> Result<String, String> {
    if entry.len() > MAX_ADDRESS_BYTES {
        return Err(format!("is longer than {MAX_ADDRESS_BYTES} bytes"));
    }
    let url = reqwest::Url::parse(entry)
        .map_err(|e| format!("is not a URL ({e}): write https://<host>[:<port>]"))?;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err("is not an http:// or https:// URL".into()),
    };
    let Some(host) = url.host_str() else {
        return Err("has no host: write https://<host>[:<port>]".into());
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "holds a user name or password: kstash takes none in the URL (the pod logs in \
             with its ServiceAccount token)"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("has a query or fragment: give only scheme, host, port and path".into());
    }
    if !https && !policy.allow_http && !is_loopback(host) {
        return Err(
            "is plain http to a host that is not loopback: the pod's ServiceAccount token \
             would cross the network in the clear; use https:// with caCert (or start the \
             provider with --allow-http)"
                .into(),
        );
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// 127.0.0.0/8, ::1 or `localhost`, from the URL's normalised host (the
/// parser has already turned `127.1` into `127.0.0.1`, and put IPv6 in
/// brackets).
fn is_loopback(host: &str) -> bool {
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// 1 to [`MAX_AUDIENCE_BYTES`] bytes, no whitespace or control character.
fn check_audience(audience: &str) -> Result<&str, ParamsError> {
    if audience.len() > MAX_AUDIENCE_BYTES {
        return Err(invalid(
            AUDIENCE,
            format!("is longer than {MAX_AUDIENCE_BYTES} bytes"),
        ));
    }
    if audience
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(
            AUDIENCE,
            format!(
                "{} holds whitespace or a control character: give the audience the CSIDriver's \
                 tokenRequests list (default {DEFAULT_AUDIENCE})",
                excerpt(audience)
            ),
        ));
    }
    Ok(audience)
}

/// At least one CERTIFICATE block, each parsing as X.509, and no private
/// key. Messages never quote the text: a pasted key must not reach a log.
fn check_ca_cert(pem: &str) -> Result<(), ParamsError> {
    let bad = |why: String| invalid(CA_CERT, why);
    if pem.len() > MAX_CA_CERT_BYTES {
        return Err(bad(format!(
            "is {} bytes; the limit is {MAX_CA_CERT_BYTES}",
            pem.len()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = pem.as_bytes();
    // Each item consumes input, so this ends within the bounded text.
    for (n, item) in rustls_pemfile::read_all(&mut reader).enumerate() {
        let item = item.map_err(|_| {
            bad(format!(
                "PEM block {} is malformed (a bad BEGIN or END line, or bad base64)",
                n + 1
            ))
        })?;
        match item {
            rustls_pemfile::Item::X509Certificate(der) => {
                roots.add(der).map_err(|e| {
                    bad(format!(
                        "PEM block {} is not a usable X.509 certificate ({e})",
                        n + 1
                    ))
                })?;
            }
            rustls_pemfile::Item::Pkcs1Key(_)
            | rustls_pemfile::Item::Pkcs8Key(_)
            | rustls_pemfile::Item::Sec1Key(_) => {
                return Err(bad(format!(
                    "PEM block {} is a private key: caCert takes only the CA's certificates; \
                     remove the key and replace it, since the class has shown it to everyone \
                     who may read SecretProviderClasses",
                    n + 1
                )));
            }
            _ => {}
        }
    }
    if roots.is_empty() {
        return Err(bad(
            "holds no PEM CERTIFICATE block: give the certificate of the CA that signed the \
             kstash nodes' certificates"
                .into(),
        ));
    }
    Ok(())
}

/// What kind of YAML node an event opens, for messages.
fn kind(event: &Event<'_>) -> &'static str {
    match event {
        Event::Scalar(..) => "a single value",
        Event::SequenceStart(..) => "a list",
        Event::MappingStart(..) => "a mapping",
        Event::Alias(_) => "an alias",
        _ => "the end of its YAML node",
    }
}

/// Where an event is, as people count: line and column from 1.
fn at(span: &Span) -> String {
    format!(
        "at line {} column {}",
        span.start.line(),
        span.start.col() + 1
    )
}

/// The events of the objects YAML, each checked for what the provider
/// never follows: anchors, aliases and tags.
struct Events<'a> {
    parser: Parser<'a, StrInput<'a>>,
}

impl<'a> Events<'a> {
    fn new(text: &'a str) -> Self {
        Events {
            parser: Parser::new_from_str(text),
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), ParamsError> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => {
                refuse_indirection(&event, &span)?;
                Ok((event, span))
            }
            Some(Err(e)) => Err(invalid(
                OBJECTS,
                format!(
                    "is not valid YAML: {} at line {} column {}",
                    e.info(),
                    e.marker().line(),
                    e.marker().col() + 1
                ),
            )),
            None => Err(invalid(OBJECTS, "the YAML ends early")),
        }
    }
}

/// Refuse an anchor, alias or tag: an alias can repeat a node without
/// bound (the "billion laughs"), and a tag could make a value mean other
/// than its text.
fn refuse_indirection(event: &Event<'_>, span: &Span) -> Result<(), ParamsError> {
    let (anchor, tagged) = match event {
        Event::Alias(_) => {
            return Err(invalid(
                OBJECTS,
                format!(
                    "uses a YAML alias (*name) {}: write every value out",
                    at(span)
                ),
            ))
        }
        Event::Scalar(_, _, anchor, tag)
        | Event::SequenceStart(anchor, tag)
        | Event::MappingStart(anchor, tag) => (*anchor, tag.is_some()),
        _ => (0, false),
    };
    if anchor != 0 {
        return Err(invalid(
            OBJECTS,
            format!(
                "uses a YAML anchor (&name) {}: anchors and aliases are not allowed; write \
                 every value out",
                at(span)
            ),
        ));
    }
    if tagged {
        return Err(invalid(
            OBJECTS,
            format!(
                "uses a YAML tag (!name) {}: tags are not allowed; write plain values",
                at(span)
            ),
        ));
    }
    Ok(())
}

/// The objects YAML (or JSON): one document, a list of 1 to [`MAX_FILES`]
/// flat mappings. Nesting never goes past a mapping in the list: any other
/// opening is refused at once, so depth is bounded at two.
fn parse_objects(text: &str) -> Result<Vec<ObjectSpec>, ParamsError> {
    if text.len() > MAX_OBJECTS_BYTES {
        return Err(invalid(
            OBJECTS,
            format!("is {} bytes; the limit is {MAX_OBJECTS_BYTES}", text.len()),
        ));
    }
    let usage = "give a YAML list of {path, fileName, mode, field} mappings";
    let mut events = Events::new(text);
    // StreamStart.
    events.next()?;
    match events.next()? {
        (Event::DocumentStart(_), _) => {}
        _ => return Err(invalid(OBJECTS, format!("holds no YAML document: {usage}"))),
    }
    match events.next()? {
        (Event::SequenceStart(..), _) => {}
        (other, span) => {
            return Err(invalid(
                OBJECTS,
                format!("is {} {}, not a list: {usage}", kind(&other), at(&span)),
            ))
        }
    }
    let mut objects = Vec::new();
    let mut files = FileSet::default();
    // Each turn reads one object, and there are at most MAX_FILES.
    loop {
        match events.next()? {
            (Event::SequenceEnd, _) => break,
            (Event::MappingStart(..), span) => {
                let index = objects.len();
                if index == MAX_FILES {
                    return Err(invalid(
                        OBJECTS,
                        format!(
                            "lists more than {MAX_FILES} objects {}: a volume holds at most \
                             {MAX_FILES} files",
                            at(&span)
                        ),
                    ));
                }
                let values = read_object(&mut events, index)?;
                objects.push(check_object(index, values, &mut files)?);
            }
            (other, span) => {
                return Err(invalid(
                    format!("{OBJECTS}[{}]", objects.len()),
                    format!("is {} {}, not a mapping: {usage}", kind(&other), at(&span)),
                ))
            }
        }
    }
    if objects.is_empty() {
        return Err(invalid(OBJECTS, format!("is an empty list: {usage}")));
    }
    // What follows the list: the document's end, then the stream's. Each
    // event consumes input, so this ends.
    loop {
        match events.next()? {
            (Event::DocumentEnd, _) => {}
            (Event::StreamEnd, _) => return Ok(objects),
            (Event::DocumentStart(_), span) => {
                return Err(invalid(
                    OBJECTS,
                    format!("holds a second YAML document {}: give one list", at(&span)),
                ))
            }
            (other, span) => {
                return Err(invalid(
                    OBJECTS,
                    format!("has {} after its list {}", kind(&other), at(&span)),
                ))
            }
        }
    }
}

/// The values of one object's mapping, by [`OBJECT_KEYS`] position. At
/// most four keys are read: a fifth is unknown or a repeat.
fn read_object(events: &mut Events<'_>, index: usize) -> Result<[Option<String>; 4], ParamsError> {
    let mut values: [Option<String>; 4] = Default::default();
    loop {
        let key = match events.next()? {
            (Event::MappingEnd, _) => return Ok(values),
            (Event::Scalar(key, ..), _) => key,
            (other, span) => {
                return Err(invalid(
                    format!("{OBJECTS}[{index}]"),
                    format!(
                        "has {} as a key {}: the keys are path, fileName, mode and field",
                        kind(&other),
                        at(&span)
                    ),
                ))
            }
        };
        let name = format!(
            "{OBJECTS}[{index}].{}",
            key.chars().take(64).collect::<String>()
        );
        refuse_misspelt(&key, &OBJECT_KEYS, |known| {
            invalid(
                &name,
                format!("is not a key; did you mean {known}? (keys are case-sensitive)"),
            )
        })?;
        let Some(slot) = OBJECT_KEYS.iter().position(|k| *k == key) else {
            return Err(invalid(
                format!("{OBJECTS}[{index}]"),
                format!(
                    "has the unknown key {}: the keys are path, fileName, mode and field",
                    excerpt(&key)
                ),
            ));
        };
        if values[slot].is_some() {
            return Err(invalid(name, "is given twice: give each key once"));
        }
        match events.next()? {
            (Event::Scalar(value, ..), _) => values[slot] = Some(value.into_owned()),
            (other, span) => {
                return Err(invalid(
                    name,
                    format!("is {} {}: give a single value", kind(&other), at(&span)),
                ))
            }
        }
    }
}

/// Check one object's values and add its file to `files`.
fn check_object(
    index: usize,
    values: [Option<String>; 4],
    files: &mut FileSet,
) -> Result<ObjectSpec, ParamsError> {
    let name = |key: &str| format!("{OBJECTS}[{index}].{key}");
    let [path, file_name, mode, field] = values;
    let path = path.ok_or_else(|| {
        invalid(
            name("path"),
            "is missing: give the secret's path in the kstash namespace (e.g. db/password)",
        )
    })?;
    let path = canonical_path(&path).map_err(|e| {
        invalid(
            name("path"),
            format!("{e}: give the secret's path in the kstash namespace (e.g. db/password)"),
        )
    })?;
    let file_name = file_name.ok_or_else(|| {
        invalid(
            name("fileName"),
            "is missing: give the file's name relative to the mount (e.g. password)",
        )
    })?;
    let file = FileName::parse(&file_name).map_err(|source| ParamsError::File { index, source })?;
    let mode = match mode {
        None => DEFAULT_MODE,
        Some(m) => parse_mode(&m).map_err(|source| ParamsError::File { index, source })?,
    };
    let field = field
        .map(|f| check_field(&f).map(|()| f))
        .transpose()
        .map_err(|why| invalid(name("field"), why))?;
    files
        .add(&file)
        .map_err(|source| ParamsError::File { index, source })?;
    Ok(ObjectSpec {
        path,
        file,
        mode,
        field,
    })
}

/// A JSON member name: 1 to [`MAX_FIELD_BYTES`] bytes, no control character.
fn check_field(field: &str) -> Result<(), String> {
    if field.is_empty() {
        return Err(
            "is empty: name a member of the secret's JSON value, or leave field out".into(),
        );
    }
    if field.len() > MAX_FIELD_BYTES {
        return Err(format!("is longer than {MAX_FIELD_BYTES} bytes"));
    }
    if field.chars().any(char::is_control) {
        return Err(format!("{} holds a control character", excerpt(field)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECTS_YAML: &str = "\
- path: db/password
  fileName: password
- path: db/config
  fileName: config/db.json
  mode: 0440
- path: db/config
  fileName: config/user
  field: user
  mode: \"0o400\"
";

    fn class(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut parameters: BTreeMap<String, String> = [
            (ADDRESS, "https://kstash-0.kstash:8200"),
            (ROLE, "web"),
            (OBJECTS, OBJECTS_YAML),
            ("secretProviderClass", "web-secrets"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            parameters.insert(k.to_string(), v.to_string());
        }
        parameters
    }

    fn parse(parameters: &BTreeMap<String, String>) -> Result<MountParams, ParamsError> {
        MountParams::parse(parameters, "shop", ParamsPolicy::default())
    }

    fn parse_objects_of(yaml: &str) -> Result<MountParams, ParamsError> {
        parse(&class(&[(OBJECTS, yaml)]))
    }

    /// The message of a refusal, which must name `name` (the parameter or
    /// the object's key) and contain `says`.
    #[track_caller]
    fn refused(result: Result<MountParams, ParamsError>, name: &str, says: &str) {
        let err = result.expect_err("should be refused");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("SecretProviderClass parameter {name}:")),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
    }

    fn certificate_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["kstash".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    fn object(path: &str, file: &str, mode: u32, field: Option<&str>) -> ObjectSpec {
        ObjectSpec {
            path: path.into(),
            file: FileName::parse(file).unwrap(),
            mode,
            field: field.map(str::to_string),
        }
    }

    #[test]
    fn a_full_class_parses_with_every_value_checked() {
        let pem = certificate_pem();
        let parameters = class(&[
            (
                ADDRESS,
                "https://kstash-0.kstash:8200/, https://KSTASH-1.kstash:8200\n\
                 https://kstash-2.kstash:443/base/\n",
            ),
            (ROLE, "web\n"),
            (NAMESPACE, "payments"),
            (AUDIENCE, "kstash-prod"),
            (CA_CERT, &pem),
            ("csi.storage.k8s.io/pod.name", "ignored"),
        ]);
        let params = parse(&parameters).unwrap();
        assert_eq!(
            params,
            MountParams {
                addresses: vec![
                    "https://kstash-0.kstash:8200".into(),
                    "https://kstash-1.kstash:8200".into(),
                    "https://kstash-2.kstash/base".into(),
                ],
                role: "web".into(),
                namespace: "payments".into(),
                audience: "kstash-prod".into(),
                ca_cert: Some(pem),
                objects: vec![
                    object("db/password", "password", DEFAULT_MODE, None),
                    object("db/config", "config/db.json", 0o440, None),
                    object("db/config", "config/user", 0o400, Some("user")),
                ],
            }
        );
    }

    #[test]
    fn defaults_fill_namespace_audience_and_mode() {
        let params = parse(&class(&[(NAMESPACE, "  "), (CA_CERT, "")])).unwrap();
        assert_eq!(params.namespace, "shop");
        assert_eq!(params.audience, DEFAULT_AUDIENCE);
        assert_eq!(params.ca_cert, None);
        assert_eq!(params.objects[0].mode, DEFAULT_MODE);
        refused(
            MountParams::parse(&class(&[]), "Shop", ParamsPolicy::default()),
            NAMESPACE,
            "the pod's namespace",
        );
    }

    #[test]
    fn objects_may_be_a_json_array() {
        let json = r#"[{"path": "db/password", "fileName": "password", "mode": "0400"},
                       {"path": "db/config", "fileName": "cfg", "field": "user"}]"#;
        let params = parse_objects_of(json).unwrap();
        assert_eq!(
            params.objects,
            vec![
                object("db/password", "password", 0o400, None),
                object("db/config", "cfg", DEFAULT_MODE, Some("user")),
            ]
        );
    }

    #[test]
    fn modes_are_octal_in_every_scalar_style() {
        for mode in ["0400", "400", "\"0400\"", "'0400'", "0o400", "\"0o400\""] {
            let yaml = format!("- {{path: a, fileName: b, mode: {mode}}}");
            let params = parse_objects_of(&yaml).unwrap();
            assert_eq!(params.objects[0].mode, 0o400, "{mode}");
        }
        for mode in ["01777", "0800", "9", "\"\"", "0x1ff"] {
            let yaml = format!("- {{path: a, fileName: b, mode: {mode}}}");
            refused(parse_objects_of(&yaml), "objects[0]", "mode");
        }
    }

    #[test]
    fn missing_required_parameters_are_named() {
        for name in [ADDRESS, ROLE, OBJECTS] {
            let mut parameters = class(&[]);
            parameters.remove(name);
            assert_eq!(parse(&parameters), Err(ParamsError::Missing(name)));
            parameters.insert(name.into(), " \n".into());
            assert_eq!(parse(&parameters), Err(ParamsError::Missing(name)));
        }
    }

    #[test]
    fn misspelt_parameters_are_refused_with_the_right_name() {
        for (key, right) in [
            ("Address", ADDRESS),
            ("caCERT", CA_CERT),
            ("ca_cert", CA_CERT),
            ("OBJECTS", OBJECTS),
        ] {
            refused(
                parse(&class(&[(key, "x")])),
                &format!("'{key}'"),
                &format!("did you mean {right}?"),
            );
        }
        // Keys of the driver, and others that are not near ours, pass.
        let params = parse(&class(&[
            ("csi.storage.k8s.io/ephemeral", "false"),
            ("roleName", "x"),
        ]));
        assert!(params.is_ok(), "{params:?}");
    }

    #[test]
    fn addresses_must_be_http_urls_with_a_host_only() {
        for (address, says) in [
            ("kstash-0:8200", "not an http:// or https:// URL"),
            ("ftp://kstash-0", "not an http:// or https:// URL"),
            ("https://", "is not a URL"),
            ("not a url", "is not a URL"),
            ("https://kstash-0/?x=1", "query or fragment"),
            ("https://kstash-0/#top", "query or fragment"),
            ("https://user:hunter2@kstash-0", "user name or password"),
        ] {
            refused(parse(&class(&[(ADDRESS, address)])), ADDRESS, says);
        }
        let message = parse(&class(&[(ADDRESS, "https://user:hunter2@kstash-0")]))
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
        let long = format!("https://{}.example", "a".repeat(MAX_ADDRESS_BYTES));
        refused(parse(&class(&[(ADDRESS, &long)])), ADDRESS, "longer than");
    }

    #[test]
    fn addresses_are_bounded_and_each_given_once() {
        let many: Vec<String> = (0..=MAX_ADDRESSES)
            .map(|i| format!("https://kstash-{i}"))
            .collect();
        refused(
            parse(&class(&[(ADDRESS, &many.join(","))])),
            ADDRESS,
            "the limit is 16",
        );
        refused(parse(&class(&[(ADDRESS, " , ,")])), ADDRESS, "lists no URL");
        let params = parse(&class(&[(ADDRESS, &many[1..].join(" ,\n"))])).unwrap();
        assert_eq!(params.addresses.len(), MAX_ADDRESSES);
        refused(
            parse(&class(&[(
                ADDRESS,
                "https://kstash-0:443 https://KSTASH-0/",
            )])),
            ADDRESS,
            "lists https://kstash-0 twice",
        );
    }

    #[test]
    fn plain_http_goes_only_to_loopback_unless_allowed() {
        for local in [
            "http://127.0.0.1:8200",
            "http://127.3.2.1",
            "http://[::1]:8200",
            "http://localhost:8200",
        ] {
            let params = parse(&class(&[(ADDRESS, local)]));
            assert!(params.is_ok(), "{local}: {params:?}");
        }
        for remote in [
            "http://kstash-0.kstash:8200",
            "http://10.0.0.7",
            "http://localhost.example.com",
            "http://[::2]",
        ] {
            refused(
                parse(&class(&[(ADDRESS, remote)])),
                ADDRESS,
                "would cross the network in the clear; use https:// with caCert (or start the \
                 provider with --allow-http)",
            );
            let allowed = MountParams::parse(
                &class(&[(ADDRESS, remote)]),
                "shop",
                ParamsPolicy { allow_http: true },
            );
            assert!(allowed.is_ok(), "{remote}: {allowed:?}");
        }
    }

    #[test]
    fn role_namespace_and_audience_must_be_valid_names() {
        refused(parse(&class(&[(ROLE, "Web")])), ROLE, "role name 'Web'");
        refused(parse(&class(&[(ROLE, "a/b")])), ROLE, "is invalid");
        refused(
            parse(&class(&[(NAMESPACE, "-shop")])),
            NAMESPACE,
            "namespace '-shop' is invalid",
        );
        refused(
            parse(&class(&[(AUDIENCE, "kstash prod")])),
            AUDIENCE,
            "whitespace",
        );
        refused(
            parse(&class(&[(AUDIENCE, "kstash\u{7}")])),
            AUDIENCE,
            "control character",
        );
        let long = "a".repeat(MAX_AUDIENCE_BYTES + 1);
        refused(parse(&class(&[(AUDIENCE, &long)])), AUDIENCE, "longer than");
        let longest = "a".repeat(MAX_AUDIENCE_BYTES);
        assert!(parse(&class(&[(AUDIENCE, &longest)])).is_ok());
    }

    #[test]
    fn ca_cert_must_hold_certificates_and_no_key() {
        refused(
            parse(&class(&[(CA_CERT, "not pem at all")])),
            CA_CERT,
            "holds no PEM CERTIFICATE block",
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        refused(
            parse(&class(&[(CA_CERT, garbage)])),
            CA_CERT,
            "PEM block 1 is not a usable X.509 certificate",
        );
        let unended = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        refused(
            parse(&class(&[(CA_CERT, unended)])),
            CA_CERT,
            "PEM block 1 is malformed",
        );
        let pair = rcgen::generate_simple_self_signed(vec!["kstash".to_string()]).unwrap();
        let key = pair.signing_key.serialize_pem();
        let with_key = format!("{}{key}", pair.cert.pem());
        let err = parse(&class(&[(CA_CERT, &with_key)])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("PEM block 2 is a private key"),
            "{message}"
        );
        let body: String = key.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!message.contains(&body), "{message}");
        let big = format!("{}{}", certificate_pem(), " ".repeat(MAX_CA_CERT_BYTES));
        refused(parse(&class(&[(CA_CERT, &big)])), CA_CERT, "the limit is");
    }

    #[test]
    fn objects_must_be_a_list_of_one_to_max_files_mappings() {
        refused(
            parse_objects_of("path: db/password\nfileName: password\n"),
            OBJECTS,
            "is a mapping at line 1 column 1, not a list",
        );
        refused(parse_objects_of("db/password"), OBJECTS, "a single value");
        refused(parse_objects_of("[]"), OBJECTS, "is an empty list");
        refused(parse_objects_of("# nothing\n"), OBJECTS, "no YAML document");
        refused(
            parse_objects_of("- db/password\n"),
            "objects[0]",
            "not a mapping",
        );
        refused(
            parse_objects_of("- - a\n"),
            "objects[0]",
            "is a list at line 1 column 3, not a mapping",
        );
        let many: String = (0..=MAX_FILES)
            .map(|i| format!("- {{path: s/{i}, fileName: f{i}}}\n"))
            .collect();
        assert!(many.len() < MAX_OBJECTS_BYTES);
        refused(
            parse_objects_of(&many),
            OBJECTS,
            "lists more than 256 objects at line 257",
        );
        let most: String = many.lines().take(MAX_FILES).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_objects_of(&most).unwrap().objects.len(), MAX_FILES);
    }

    #[test]
    fn oversize_objects_are_refused_before_parsing() {
        let big = format!(
            "- {{path: a, fileName: b}}\n#{}\n",
            "x".repeat(MAX_OBJECTS_BYTES)
        );
        refused(parse_objects_of(&big), OBJECTS, "the limit is 65536");
    }

    #[test]
    fn object_keys_are_known_given_once_and_hold_single_values() {
        refused(
            parse_objects_of("- {path: a, filename: b}"),
            "objects[0].filename",
            "did you mean fileName?",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b, file_name: c}"),
            "objects[0].file_name",
            "did you mean fileName?",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b}\n- {path: a, fileName: c, owner: d}"),
            "objects[1]",
            "unknown key 'owner'",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b, path: c}"),
            "objects[0].path",
            "given twice",
        );
        refused(
            parse_objects_of("- path: {name: a}\n  fileName: b\n"),
            "objects[0].path",
            "is a mapping at line 1 column 9: give a single value",
        );
        refused(
            parse_objects_of("- path: a\n  fileName: [b, c]\n"),
            "objects[0].fileName",
            "is a list",
        );
        refused(
            parse_objects_of("- {[path]: a, fileName: b}"),
            "objects[0]",
            "has a list as a key",
        );
        refused(
            parse_objects_of("- {fileName: b}"),
            "objects[0].path",
            "is missing",
        );
        refused(
            parse_objects_of("- {path: a}"),
            "objects[0].fileName",
            "is missing",
        );
    }

    #[test]
    fn anchors_aliases_and_tags_are_refused() {
        // The "billion laughs" shape: each list repeats the one before.
        let laughs = "\
- &l0 {path: a, fileName: b}
- &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0]
- &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]
";
        refused(
            parse_objects_of(laughs),
            OBJECTS,
            "uses a YAML anchor (&name) at line 1 column 3",
        );
        refused(
            parse_objects_of("- path: &p a\n  fileName: b\n"),
            OBJECTS,
            "uses a YAML anchor",
        );
        refused(
            parse_objects_of("- {path: !!str a, fileName: b}"),
            OBJECTS,
            "uses a YAML tag (!name) at line 1 column 10",
        );
        refused(
            parse_objects_of("!objects\n- {path: a, fileName: b}"),
            OBJECTS,
            "uses a YAML tag",
        );
        // The parser cannot reach an alias without first passing its
        // anchor, which is refused; the alias check stands on its own.
        let span = Span::empty(saphyr_parser::Marker::new(0, 1, 0));
        let alias = refuse_indirection(&Event::Alias(1), &span).unwrap_err();
        assert!(alias.to_string().contains("uses a YAML alias"), "{alias}");
    }

    #[test]
    fn objects_are_one_document_of_valid_yaml() {
        refused(
            parse_objects_of("- {path: a, fileName: b}\n---\n- {path: c, fileName: d}\n"),
            OBJECTS,
            "holds a second YAML document at line 2 column 1",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b}\n...\n--- x\n"),
            OBJECTS,
            "second YAML document",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b\n"),
            OBJECTS,
            "is not valid YAML",
        );
        let err = parse_objects_of("- path: a\n  fileName: b\n bad: c\n").unwrap_err();
        assert!(err.to_string().contains("at line 3 column"), "{err}");
        assert!(parse_objects_of("- {path: a, fileName: b}\n...\n").is_ok());
    }

    #[test]
    fn object_paths_file_names_and_fields_are_checked() {
        refused(
            parse_objects_of("- {path: ../x, fileName: b}"),
            "objects[0].path",
            "path segment '..' is not allowed",
        );
        refused(
            parse_objects_of("- {path: /db/x, fileName: b}"),
            "objects[0].path",
            "empty segment",
        );
        refused(
            parse_objects_of("- {path: a, fileName: /etc/passwd}"),
            "objects[0]",
            "fileName \"/etc/passwd\" is not allowed: it is absolute",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b}\n- {path: a, fileName: x/../../b}"),
            "objects[1]",
            "it has a '.' or '..' element",
        );
        refused(
            parse_objects_of("- {path: a, fileName: ../b}"),
            "objects[0]",
            "it starts with '..'",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b, field: ''}"),
            "objects[0].field",
            "is empty",
        );
        refused(
            parse_objects_of("- {path: a, fileName: b, field: \"a\\tb\"}"),
            "objects[0].field",
            "control character",
        );
        let long = format!("- {{path: a, fileName: b, field: {}}}", "f".repeat(257));
        refused(
            parse_objects_of(&long),
            "objects[0].field",
            "longer than 256 bytes",
        );
    }

    #[test]
    fn every_file_name_is_used_once_and_never_as_a_directory() {
        assert_eq!(
            parse_objects_of("- {path: a, fileName: x}\n- {path: b, fileName: x}"),
            Err(ParamsError::File {
                index: 1,
                source: FileError::Duplicate("x".into()),
            })
        );
        refused(
            parse_objects_of("- {path: a, fileName: a}\n- {path: b, fileName: a/b}"),
            "objects[1]",
            "used twice, or as a file and as a directory",
        );
        // One secret may become two files (two fields of its JSON value).
        let params = parse_objects_of(
            "- {path: db, fileName: user, field: user}\n\
             - {path: db, fileName: pass, field: password}",
        )
        .unwrap();
        assert_eq!(params.objects.len(), 2);
    }
}
