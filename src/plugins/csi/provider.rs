//! The provider's Mount: from the driver's request to the volume's files.
//!
//! One Mount: parse the attributes and the class's parameters; take the
//! pod's ServiceAccount token for the class's audience; log in to kstash as
//! the pod with the ServiceAccount login (or reuse the pod's fresh token,
//! see [`super::login`]); read every secret the class names, linearizably,
//! with that token; answer every file and one object version per secret.
//!
//! Invariants:
//! - All or nothing: a Mount answers every file of the class or none: one
//!   missing, forbidden or unfitting secret fails it (a [`MountError`]), so
//!   a volume is never half written.
//! - The provider holds no credential of its own: every read uses the
//!   access token kstash minted for this pod, so kstash's policies and
//!   audit see the pod, never the provider.
//! - `object_version` has one entry per secret path: id = the path, version
//!   = kstash's version of the secret (never a digest of its value).
//! - Rotation works by the driver calling Mount again: every Mount answers
//!   the full file set, whatever `current_object_version` says.
//! - Everything a class or request can make the provider do is bounded: the
//!   parameters ([`super::params`]), the reads in flight per Mount
//!   ([`READS_AT_ONCE`]), the answer's size ([`MAX_RESPONSE_BYTES`]), the
//!   clients kept ([`MAX_CLIENTS`]) and the login cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::attributes::{AttributesError, MountAttributes};
use super::login::{LoginCache, LoginKey, Lookup};
use super::metrics::CsiMetrics;
use super::mount_error::MountError;
use super::params::{MountParams, ObjectSpec, ParamsPolicy};
use super::pb;
use crate::client::wire::SecretResponse;
use crate::client::{Client, ClientError, ClientOptions};
use crate::secret::SecretString;

/// The runtime name `Version` answers.
pub const RUNTIME_NAME: &str = "kstash";

/// The provider API version the driver speaks.
pub const API_VERSION: &str = "v1alpha1";

/// Largest Mount answer, encoded: the driver's gRPC client receives at
/// most 4 MiB by default (its `--max-call-recv-msg-size`). Contents, file
/// names and object versions all count.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Largest Mount request accepted (attributes are at most 256 KiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Mounts answered at once on one connection; more wait.
pub const MAX_IN_FLIGHT: usize = 64;

/// Secrets one Mount reads from kstash at once.
pub const READS_AT_ONCE: usize = 8;

/// Clients (one per address list and CA) kept for reuse.
pub const MAX_CLIENTS: usize = 64;

/// How the provider runs.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// The budget of each call to kstash (every retry and failover round
    /// of it).
    pub call_timeout: Duration,
    /// Most access tokens kept in the login cache.
    pub login_cache_size: usize,
    /// What classes may ask for.
    pub policy: ParamsPolicy,
    /// Root certificates for classes without `caCert` (the provider's
    /// `--ca-cert`): its name for errors and its PEM.
    pub default_ca: Option<(String, Vec<u8>)>,
}

/// What a successful Mount answered, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mounted {
    /// How many files.
    pub files: usize,
    /// Their total size.
    pub bytes: usize,
    /// Whether the pod's cached token was used.
    pub cached_login: bool,
}

/// Which client serves a class: its addresses and the digest of its CA.
type ClientKey = (Vec<String>, Option<[u8; 32]>);

/// The provider: answers Mounts for the pods of one node.
#[derive(Debug)]
pub struct CsiProvider {
    options: ProviderOptions,
    logins: LoginCache,
    clients: Mutex<HashMap<ClientKey, Arc<Client>>>,
    metrics: CsiMetrics,
}

impl CsiProvider {
    /// A provider counting in `metrics`; no I/O.
    pub fn new(options: ProviderOptions, metrics: CsiMetrics) -> CsiProvider {
        CsiProvider {
            logins: LoginCache::new(options.login_cache_size),
            options,
            clients: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The provider's series.
    pub fn metrics(&self) -> &CsiMetrics {
        &self.metrics
    }

    /// Answer one Mount (see the module's invariants). The request's
    /// `target_path` and `permission` are not used: the driver writes the
    /// files, each with its object's mode.
    pub async fn mount(
        &self,
        req: &pb::MountRequest,
    ) -> Result<(pb::MountResponse, Mounted), MountError> {
        let attributes = parse_attributes(&req.attributes)?;
        self.mount_for(&attributes).await
    }

    /// [`Self::mount`] with the attributes parsed.
    async fn mount_for(
        &self,
        attributes: &MountAttributes,
    ) -> Result<(pb::MountResponse, Mounted), MountError> {
        let params = MountParams::parse(
            &attributes.parameters,
            &attributes.pod_namespace,
            self.options.policy,
        )?;
        let (sa_token, _expiry) = attributes
            .token_for(&params.audience)
            .map_err(MountError::NoToken)?;
        let client = self.client(&params)?;
        let key = LoginKey {
            pod_uid: attributes.pod_uid.clone(),
            pod_namespace: attributes.pod_namespace.clone(),
            service_account: attributes.service_account.clone(),
            addresses: params.addresses.clone(),
            namespace: params.namespace.clone(),
            role: params.role.clone(),
            audience: params.audience.clone(),
        };
        let (token, cached) = self.token(&client, &key, &params, sa_token).await?;
        let secrets = match self.read_all(&client, &params, &token).await {
            // A cached token kstash no longer takes (revoked, or the
            // cluster's clock ran ahead): log in afresh, once.
            Err(ReadError::Unauthorized) if cached => {
                self.logins.forget(&key);
                self.metrics.set_cache(self.logins.len(), 0);
                let (token, _) = self.token(&client, &key, &params, sa_token).await?;
                self.read_all(&client, &params, &token).await
            }
            other => other,
        };
        let secrets = secrets.map_err(|e| e.into_mount_error(&params))?;
        let response = answer(&params, &secrets)?;
        let mounted = Mounted {
            files: response.files.len(),
            bytes: response.files.iter().map(|f| f.contents.len()).sum(),
            cached_login: cached,
        };
        Ok((response, mounted))
    }

    /// The client for the class's addresses and CA, made once and kept.
    fn client(&self, params: &MountParams) -> Result<Arc<Client>, MountError> {
        let ca = match &params.ca_cert {
            Some(pem) => Some((
                "SecretProviderClass parameter caCert".to_string(),
                pem.as_bytes().to_vec(),
            )),
            None => self.options.default_ca.clone(),
        };
        if ca.is_none() {
            if let Some(https) = params.addresses.iter().find(|a| a.starts_with("https:")) {
                // The client trusts no built-in roots: without a CA the
                // handshake would fail with a less helpful message.
                return Err(MountError::Class(super::params::ParamsError::Invalid {
                    name: "caCert".into(),
                    why: format!(
                        "{https} is https and no CA is given: put the PEM of the CA that signed \
                         kstash's certificate in caCert, or start the provider with --ca-cert"
                    ),
                }));
            }
        }
        let key: ClientKey = (
            params.addresses.clone(),
            ca.as_ref().map(|(_, pem)| Sha256::digest(pem).into()),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let options = ClientOptions {
            addresses: params.addresses.clone(),
            token: None,
            ca_cert: None,
            timeout: self.options.call_timeout,
        };
        let client = match &ca {
            Some((source, pem)) => Client::with_ca_pem(&options, source, pem),
            None => Client::new(&options),
        }
        .map_err(|e| {
            MountError::Class(super::params::ParamsError::Invalid {
                name: if params.ca_cert.is_some() {
                    "caCert".into()
                } else {
                    "address".into()
                },
                why: e.to_string(),
            })
        })?
        .with_budget_per_call();
        let client = Arc::new(client);
        if clients.len() >= MAX_CLIENTS {
            // Classes come and go; the clients of the old ones are rebuilt
            // cheaply when needed again.
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The pod's access token: the cached one, or a fresh login.
    async fn token(
        &self,
        client: &Client,
        key: &LoginKey,
        params: &MountParams,
        sa_token: &SecretString,
    ) -> Result<(SecretString, bool), MountError> {
        let (lookup, cached) = self.logins.get(key, sa_token, Instant::now());
        self.metrics.observe_lookup(lookup);
        if let (Lookup::Hit, Some(token)) = (lookup, cached) {
            return Ok((token, true));
        }
        let started = Instant::now();
        let answer = client
            .kubernetes_login(&params.namespace, &params.role, sa_token)
            .await;
        let login = match answer {
            Ok(login) => login,
            Err(e) => {
                let error = login_error(e, key, params);
                self.metrics.observe_login(match error {
                    MountError::Login(_) => "refused",
                    _ => "failed",
                });
                return Err(error);
            }
        };
        self.metrics.observe_login("ok");
        let lifetime = humantime::parse_rfc3339(&login.expires_at)
            .ok()
            .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        let evicted = self.logins.put(
            key.clone(),
            sa_token,
            login.token.clone(),
            lifetime,
            started,
        );
        self.metrics.set_cache(self.logins.len(), evicted);
        Ok((login.token, false))
    }

    /// Read every distinct path of the class with `token`, at most
    /// [`READS_AT_ONCE`] at a time; the first failure ends the Mount.
    async fn read_all(
        &self,
        client: &Client,
        params: &MountParams,
        token: &SecretString,
    ) -> Result<BTreeMap<String, SecretResponse>, ReadError> {
        let mut paths: Vec<String> = params.objects.iter().map(|o| o.path.clone()).collect();
        paths.sort_unstable();
        paths.dedup();
        stream::iter(paths)
            .map(|path: String| async move {
                match client.kv_get_as(&path, token).await {
                    Ok(secret) => Ok((path, secret)),
                    Err(e) => Err(ReadError::of(&path, e)),
                }
            })
            .buffer_unordered(READS_AT_ONCE)
            .try_collect()
            .await
    }
}

/// At most 253 characters of a name the driver sent (Kubernetes names
/// are no longer), for a log line.
fn short(name: &str) -> &str {
    name.char_indices()
        .nth(253)
        .map_or(name, |(i, _)| &name[..i])
}

/// The request's attributes, or why they are not what the driver sends.
fn parse_attributes(text: &str) -> Result<MountAttributes, MountError> {
    MountAttributes::parse(text).map_err(|e| match e {
        AttributesError::NoToken { .. } => MountError::NoToken(e),
        other => MountError::Request(other.to_string()),
    })
}

/// Why a read failed.
#[derive(Debug)]
enum ReadError {
    /// kstash did not take the token.
    Unauthorized,
    /// Anything else, for the path read.
    Other(String, ClientError),
}

impl ReadError {
    fn of(path: &str, e: ClientError) -> ReadError {
        match &e {
            ClientError::Api { status: 401, .. } => ReadError::Unauthorized,
            _ => ReadError::Other(path.to_string(), e),
        }
    }

    fn into_mount_error(self, params: &MountParams) -> MountError {
        let (path, e) = match self {
            ReadError::Unauthorized => {
                return MountError::Kstash(
                    "kstash refused the access token it had just minted for the pod".into(),
                )
            }
            ReadError::Other(path, e) => (path, e),
        };
        match e {
            ClientError::Api { status: 404, .. } => MountError::NotFound {
                path,
                namespace: params.namespace.clone(),
            },
            ClientError::Api {
                status: 403,
                message,
                ..
            } => MountError::Forbidden {
                path,
                namespace: params.namespace.clone(),
                role: params.role.clone(),
                detail: message,
            },
            other => unavailable_or_unexpected(other, &format!("reading {path:?}")),
        }
    }
}

/// A failed login as the driver is told it.
fn login_error(e: ClientError, key: &LoginKey, params: &MountParams) -> MountError {
    match e {
        ClientError::Api {
            status: 401 | 403, ..
        } => MountError::Login(format!(
            "kstash refused to log in ServiceAccount {}/{} with role {:?} of kstash namespace \
             {:?} (it does not say why, on purpose; its audit log's failed_check does): check \
             that the role binds this ServiceAccount, that its audience is {:?}, and that the \
             cluster's Kubernetes login is configured",
            key.pod_namespace, key.service_account, params.role, params.namespace, params.audience
        )),
        ClientError::Api {
            status: 400,
            message,
            ..
        } => MountError::Login(format!("kstash refused the login: {message}")),
        other => unavailable_or_unexpected(other, "logging in"),
    }
}

/// A failure that is kstash's state (retry later) or something unexpected.
fn unavailable_or_unexpected(e: ClientError, doing: &str) -> MountError {
    match &e {
        ClientError::Api {
            status: 429 | 500..=599,
            ..
        }
        | ClientError::Connect(_)
        | ClientError::Transport { .. }
        | ClientError::Timeout { .. } => MountError::Unavailable(format!("{doing}: {e}")),
        _ => MountError::Kstash(format!("{doing}: {e}")),
    }
}

/// The files and object versions of a Mount from the secrets read.
fn answer(
    params: &MountParams,
    secrets: &BTreeMap<String, SecretResponse>,
) -> Result<pb::MountResponse, MountError> {
    let mut files = Vec::with_capacity(params.objects.len());
    let mut total = 0usize;
    for object in &params.objects {
        let secret = secrets
            .get(&object.path)
            .expect("every object's path was read");
        let contents = contents(object, secret)?;
        // Stop early on the contents alone; the whole answer is measured
        // below.
        total = total.saturating_add(contents.len());
        if total > MAX_RESPONSE_BYTES {
            return Err(MountError::TooLarge {
                bytes: total,
                limit: MAX_RESPONSE_BYTES,
            });
        }
        files.push(pb::File {
            path: object.file.as_str().to_string(),
            mode: object.mode as i32,
            contents: contents.to_vec(),
        });
    }
    let object_version = secrets
        .iter()
        .map(|(path, secret)| pb::ObjectVersion {
            id: path.clone(),
            version: secret.version.to_string(),
        })
        .collect();
    let response = pb::MountResponse {
        object_version,
        error: None,
        files,
    };
    let bytes = prost::Message::encoded_len(&response);
    if bytes > MAX_RESPONSE_BYTES {
        return Err(MountError::TooLarge {
            bytes,
            limit: MAX_RESPONSE_BYTES,
        });
    }
    Ok(response)
}

/// One file's contents: the secret's value, or the member `field` of it.
fn contents(
    object: &ObjectSpec,
    secret: &SecretResponse,
) -> Result<Zeroizing<Vec<u8>>, MountError> {
    let path = &object.path;
    let value: Zeroizing<Vec<u8>> = match (&secret.value, &secret.value_base64) {
        (Some(text), _) => Zeroizing::new(text.expose().as_bytes().to_vec()),
        (None, Some(b64)) => Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.expose())
                .map_err(|_| {
                    MountError::Kstash(format!("the binary value of {path:?} is not base64"))
                })?,
        ),
        (None, None) => {
            return Err(MountError::Kstash(format!(
                "the answer for {path:?} holds no value"
            )))
        }
    };
    let Some(field) = &object.field else {
        return Ok(value);
    };
    let not_an_object = || {
        MountError::Value(format!(
            "object {path:?} asks for field {field:?}, and the secret's value is not a JSON \
             object: store it as one (e.g. {{\"{field}\": \"…\"}}), or remove the field"
        ))
    };
    if secret.value.is_none() {
        return Err(not_an_object());
    }
    // Our own messages only: serde_json's may quote the value.
    let members: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&value).map_err(|_| not_an_object())?;
    let Some(member) = members.get(field) else {
        let mut names: Vec<&str> = members.keys().map(String::as_str).take(20).collect();
        names.sort_unstable();
        return Err(MountError::Value(format!(
            "the secret {path:?} has no field {field:?} (its fields: {}): fix the object's field",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    Ok(Zeroizing::new(match member {
        serde_json::Value::String(text) => text.as_bytes().to_vec(),
        other => serde_json::to_vec(other).expect("a JSON value always serializes"),
    }))
}

#[tonic::async_trait]
impl pb::csi_driver_provider_server::CsiDriverProvider for Arc<CsiProvider> {
    async fn version(
        &self,
        _request: tonic::Request<pb::VersionRequest>,
    ) -> Result<tonic::Response<pb::VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::VersionResponse {
            version: API_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn mount(
        &self,
        request: tonic::Request<pb::MountRequest>,
    ) -> Result<tonic::Response<pb::MountResponse>, tonic::Status> {
        let started = Instant::now();
        let req = request.into_inner();
        // The log line names the pod by its fields: never a token, a value,
        // or the attributes' text.
        let mut pod = String::from("?");
        let outcome = match parse_attributes(&req.attributes) {
            Ok(attributes) => {
                pod = format!(
                    "{}/{} ({})",
                    short(&attributes.pod_namespace),
                    short(&attributes.pod_name),
                    short(&attributes.pod_uid)
                );
                self.mount_for(&attributes).await
            }
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        match outcome {
            Ok((response, mounted)) => {
                self.metrics.observe_mount(Ok(mounted.files), took);
                tracing::info!(
                    %pod,
                    files = mounted.files,
                    bytes = mounted.bytes,
                    cached_login = mounted.cached_login,
                    ms = took.as_millis() as u64,
                    "CSI Mount"
                );
                Ok(tonic::Response::new(response))
            }
            Err(e) => {
                self.metrics.observe_mount(Err(&e), took);
                tracing::warn!(%pod, code = e.code(), error = %e, ms = took.as_millis() as u64, "CSI Mount refused");
                Err(e.to_status())
            }
        }
    }
}

impl CsiProvider {
    /// The tonic service of `provider`, with the message limits.
    pub fn into_server(
        provider: Arc<CsiProvider>,
    ) -> pb::csi_driver_provider_server::CsiDriverProviderServer<Arc<CsiProvider>> {
        pb::csi_driver_provider_server::CsiDriverProviderServer::new(provider)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::csi::files::FileName;

    fn object(path: &str, file: &str, field: Option<&str>) -> ObjectSpec {
        ObjectSpec {
            path: path.into(),
            file: FileName::parse(file).unwrap(),
            mode: 0o440,
            field: field.map(str::to_string),
        }
    }

    fn params(objects: Vec<ObjectSpec>) -> MountParams {
        MountParams {
            addresses: vec!["http://127.0.0.1:8200".into()],
            role: "web".into(),
            namespace: "shop".into(),
            audience: "kstash".into(),
            ca_cert: None,
            objects,
        }
    }

    fn text(value: &str, version: u64) -> SecretResponse {
        SecretResponse {
            value: Some(SecretString::new(value.into())),
            value_base64: None,
            version,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn secrets(list: &[(&str, SecretResponse)]) -> BTreeMap<String, SecretResponse> {
        list.iter()
            .map(|(p, s)| {
                (
                    p.to_string(),
                    SecretResponse {
                        value: s.value.clone(),
                        value_base64: s.value_base64.clone(),
                        version: s.version,
                        created_at: String::new(),
                        updated_at: String::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn every_object_becomes_a_file_and_every_path_one_version() {
        let p = params(vec![
            object("db", "db/user", Some("user")),
            object("db", "db/password", Some("password")),
            object("db", "db/port", Some("port")),
            object("tls/key", "tls.key", None),
        ]);
        let read = secrets(&[
            (
                "db",
                text(r#"{"user":"app","password":"hunter2","port":5432}"#, 3),
            ),
            ("tls/key", text("-----BEGIN KEY-----", 1)),
        ]);
        let answer = answer(&p, &read).unwrap();
        let files: Vec<(&str, i32, &[u8])> = answer
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.contents.as_slice()))
            .collect();
        assert_eq!(
            files,
            [
                ("db/user", 0o440, &b"app"[..]),
                ("db/password", 0o440, &b"hunter2"[..]),
                ("db/port", 0o440, &b"5432"[..]),
                ("tls.key", 0o440, &b"-----BEGIN KEY-----"[..]),
            ]
        );
        let versions: Vec<(&str, &str)> = answer
            .object_version
            .iter()
            .map(|v| (v.id.as_str(), v.version.as_str()))
            .collect();
        assert_eq!(versions, [("db", "3"), ("tls/key", "1")]);
        assert!(answer.error.is_none());
    }

    #[test]
    fn a_binary_value_is_written_as_its_bytes() {
        let p = params(vec![object("bin", "blob", None)]);
        let mut secret = text("", 2);
        secret.value = None;
        secret.value_base64 = Some(SecretString::new("AP8B".into()));
        let answer = answer(&p, &secrets(&[("bin", secret)])).unwrap();
        assert_eq!(answer.files[0].contents, [0x00, 0xff, 0x01]);
    }

    #[test]
    fn a_field_needs_a_json_object_holding_it_and_errors_never_quote_the_value() {
        for (value, want) in [
            ("hunter2", "not a JSON object"),
            (r#"["hunter2"]"#, "not a JSON object"),
            (
                r#"{"user":"hunter2"}"#,
                "has no field \"password\" (its fields: user)",
            ),
        ] {
            let p = params(vec![object("db", "pw", Some("password"))]);
            let err = answer(&p, &secrets(&[("db", text(value, 1))])).unwrap_err();
            assert_eq!(err.code(), "InvalidSecretValue", "{value}");
            let message = err.to_string();
            assert!(message.contains(want), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let mut binary = text("", 1);
        binary.value = None;
        binary.value_base64 = Some(SecretString::new("e30=".into()));
        let p = params(vec![object("db", "pw", Some("password"))]);
        let err = answer(&p, &secrets(&[("db", binary)])).unwrap_err();
        assert_eq!(err.code(), "InvalidSecretValue");
    }

    #[test]
    fn a_volume_over_the_limit_answers_no_file() {
        let big = "x".repeat(MAX_RESPONSE_BYTES / 2 + 1);
        let p = params(vec![object("a", "a", None), object("b", "b", None)]);
        let read = secrets(&[("a", text(&big, 1)), ("b", text(&big, 1))]);
        let err = answer(&p, &read).unwrap_err();
        assert_eq!(err.code(), "MountTooLarge");
        assert!(err.to_string().contains("split the objects"), "{err}");

        // Contents just under the limit, names and versions over it.
        let names: Vec<String> = (0..256)
            .map(|i| format!("{i:03}/{}", "n".repeat(400)))
            .collect();
        let objects: Vec<ObjectSpec> = names
            .iter()
            .map(|n| object(&format!("p/{n}"), n, None))
            .collect();
        let each = (MAX_RESPONSE_BYTES - 100 * 1024) / 256;
        let value = "v".repeat(each);
        let read: BTreeMap<String, SecretResponse> = names
            .iter()
            .map(|n| (format!("p/{n}"), text(&value, 1)))
            .collect();
        let err = answer(&params(objects), &read).unwrap_err();
        assert_eq!(err.code(), "MountTooLarge");
        assert!(
            err.to_string()
                .contains(&format!("at most {MAX_RESPONSE_BYTES}")),
            "{err}"
        );
    }

    #[test]
    fn an_https_address_needs_a_ca_from_the_class_or_the_provider() {
        let provider = |default_ca| {
            CsiProvider::new(
                ProviderOptions {
                    call_timeout: Duration::from_secs(1),
                    login_cache_size: 4,
                    policy: ParamsPolicy::default(),
                    default_ca,
                },
                CsiMetrics::new(),
            )
        };
        let mut p = params(vec![]);
        p.addresses = vec!["https://kstash.kstash.svc:8200".into()];
        let err = provider(None).client(&p).unwrap_err();
        assert_eq!(err.code(), "InvalidSecretProviderClass");
        assert!(err.to_string().contains("caCert"), "{err}");
        let ca = rcgen::generate_simple_self_signed(vec!["kstash".into()])
            .unwrap()
            .cert
            .pem();
        assert!(
            provider(Some(("--ca-cert ca.pem".into(), ca.clone().into_bytes())))
                .client(&p)
                .is_ok()
        );
        p.ca_cert = Some(ca);
        let with_class_ca = provider(None);
        let first = with_class_ca.client(&p).unwrap();
        assert!(
            Arc::ptr_eq(&first, &with_class_ca.client(&p).unwrap()),
            "kept"
        );
        p.addresses = vec!["http://127.0.0.1:8200".into()];
        p.ca_cert = None;
        assert!(provider(None).client(&p).is_ok(), "plain http needs no CA");
    }

    #[test]
    fn kstash_answers_map_to_codes_the_driver_can_act_on() {
        let p = params(vec![]);
        let api = |status: u16, code: &str| ClientError::Api {
            status,
            code: code.into(),
            message: format!("server says {code}"),
        };
        let read = |e| ReadError::of("db", e).into_mount_error(&p).code();
        assert_eq!(read(api(404, "not_found")), "SecretNotFound");
        assert_eq!(read(api(403, "forbidden")), "SecretForbidden");
        assert_eq!(read(api(503, "sealed")), "KstashUnavailable");
        assert_eq!(read(api(429, "busy")), "KstashUnavailable");
        assert_eq!(
            read(ClientError::Connect("refused".into())),
            "KstashUnavailable"
        );
        assert_eq!(read(api(400, "invalid")), "KstashError");
        assert_eq!(read(api(401, "unauthorized")), "KstashError");
        let key = LoginKey {
            pod_uid: "u".into(),
            pod_namespace: "shop".into(),
            service_account: "web".into(),
            addresses: vec![],
            namespace: "shop".into(),
            role: "web".into(),
            audience: "kstash".into(),
        };
        let login = |e| login_error(e, &key, &p);
        let refused = login(api(401, "unauthorized"));
        assert_eq!(refused.code(), "LoginRefused");
        assert!(refused.to_string().contains("shop/web"), "{refused}");
        assert_eq!(login(api(400, "not_configured")).code(), "LoginRefused");
        assert_eq!(login(api(503, "no_leader")).code(), "KstashUnavailable");
        assert_eq!(
            login(ClientError::Timeout {
                budget: Duration::from_secs(1),
                tried: String::new()
            })
            .code(),
            "KstashUnavailable"
        );
    }
}
