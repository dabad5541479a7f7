//! A Secrets Store CSI Driver for the provider tests: the client side of
//! `v1alpha1.CSIDriverProvider`, built to behave like the driver's node
//! server when a pod's CSI volume is published or republished.
//!
//! - [`Pod`]: a pod's name, namespace, uid and ServiceAccount, and the
//!   ServiceAccount tokens the kubelet hands the driver when the
//!   `CSIDriver` object lists `tokenRequests` (one per audience, made with
//!   [`crate::kube::SaToken`] and bound to the pod).
//! - [`Class`]: a `SecretProviderClass`: its name and `spec.parameters`.
//! - [`FakeDriver`]: connects to the provider's Unix socket with tonic,
//!   asks `Version`, and `Mount`s a pod's volume with the request the
//!   driver builds: `attributes` = a JSON object of strings holding the
//!   class's parameters, the pod fields, `csi.storage.k8s.io/ephemeral`,
//!   `secretProviderClass` and (when the pod has tokens)
//!   `csi.storage.k8s.io/serviceAccount.tokens`, itself a JSON *string* of
//!   `{"<audience>": {"token", "expirationTimestamp"}}`; `secrets` = `{}`
//!   (no `nodePublishSecretRef`); the kubelet's target path; `permission` =
//!   `"420"` (0644 in decimal); and `current_object_version` = what the
//!   previous successful Mount of the same volume answered. It then checks
//!   the answer as the driver does before writing ([`check_files`]) and
//!   writes the files, each with its mode, under a private directory that
//!   stands for the node's `/var/lib/kubelet`.
//!
//! Invariants: a refused Mount writes nothing and keeps the volume's
//! previous files and object versions (as the driver does); a successful
//! one replaces the volume's files as a whole; an answer the driver would
//! refuse fails the test with what was wrong.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use kstash::plugins::csi::mount_error::response_in;
use kstash::plugins::csi::pb;
use pb::csi_driver_provider_client::CsiDriverProviderClient;
use serde_json::{json, Map, Value};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::kube::{unix_now, uuid, SaToken, SigningKey, DEFAULT_AUDIENCE};

/// The driver's per-call deadline for a provider (its `--provider-timeout`
/// is shorter by default; the tests allow a failover inside one call).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The pod's name (an attribute the driver adds to the class's parameters).
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// The pod's uid.
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
/// The pod's ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
/// The pod's ServiceAccount tokens by audience (a JSON string).
pub const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
/// An inline (ephemeral) CSI volume: always, for this driver.
pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
/// The `SecretProviderClass` named by the volume.
pub const CLASS_NAME: &str = "secretProviderClass";

/// The file permission the driver passes: 0644, written in decimal.
pub const PERMISSION: &str = "420";

/// A pod whose volume the driver mounts.
#[derive(Clone, Debug)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (Kubernetes).
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// Audience → (token, expirationTimestamp as RFC 3339).
    tokens: BTreeMap<String, (String, String)>,
}

impl Pod {
    /// Pod `name` of ServiceAccount `namespace/service_account`, a fresh
    /// uid, and no token (a `CSIDriver` without `tokenRequests`).
    pub fn new(namespace: &str, service_account: &str, name: &str) -> Pod {
        Pod {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: uuid(),
            service_account: service_account.to_string(),
            tokens: BTreeMap::new(),
        }
    }

    /// [`Pod::new`] with a projected token for [`DEFAULT_AUDIENCE`] signed
    /// by `key`: the pod as the kubelet presents it with `tokenRequests:
    /// [{audience: kstash}]`.
    pub fn projected(key: &SigningKey, namespace: &str, service_account: &str, name: &str) -> Pod {
        let pod = Pod::new(namespace, service_account, name);
        let token = pod.sa_token();
        pod.with_token(DEFAULT_AUDIENCE, &token, key)
    }

    /// The claims of a fresh token of this pod's ServiceAccount, bound to
    /// this pod (audience [`DEFAULT_AUDIENCE`], one hour), to adjust.
    pub fn sa_token(&self) -> SaToken {
        SaToken::new(&self.namespace, &self.service_account, unix_now()).pod(&self.name, &self.uid)
    }

    /// Replace the token for `audience` with `token` signed by `key` (its
    /// `aud` claim is the builder's; `expirationTimestamp` is its `exp`).
    pub fn with_token(mut self, audience: &str, token: &SaToken, key: &SigningKey) -> Pod {
        let exp = token.exp().expect("a projected token expires");
        let at = kstash::clock::rfc3339(u64::try_from(exp).unwrap_or(0) * 1000);
        self.tokens
            .insert(audience.to_string(), (token.sign(key), at));
        self
    }

    /// The kubelet requested a new token for `audience` (rotation of the
    /// projected token: same pod, new `jti`, new signature).
    pub fn renew_token(self, audience: &str, key: &SigningKey) -> Pod {
        let token = self.sa_token().audiences(&[audience]);
        self.with_token(audience, &token, key)
    }

    /// No tokens at all.
    pub fn without_tokens(mut self) -> Pod {
        self.tokens.clear();
        self
    }

    /// The signed token for `audience`, if the pod has one.
    pub fn token(&self, audience: &str) -> Option<&str> {
        self.tokens.get(audience).map(|(t, _)| t.as_str())
    }

    /// Every signed token the pod holds.
    pub fn tokens(&self) -> Vec<String> {
        self.tokens.values().map(|(t, _)| t.clone()).collect()
    }

    /// The kubelet's target path of the pod's CSI volume `volume`.
    pub fn target_path(&self, volume: &str) -> String {
        format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/{volume}/mount",
            self.uid
        )
    }
}

/// A `SecretProviderClass`: its name and `spec.parameters`.
#[derive(Clone, Debug)]
pub struct Class {
    /// `metadata.name`.
    pub name: String,
    /// `spec.parameters`.
    pub parameters: BTreeMap<String, String>,
}

impl Class {
    /// A class named `name` without parameters.
    pub fn new(name: &str) -> Class {
        Class {
            name: name.to_string(),
            parameters: BTreeMap::new(),
        }
    }

    /// Set parameter `key`.
    pub fn with(mut self, key: &str, value: &str) -> Class {
        self.parameters.insert(key.to_string(), value.to_string());
        self
    }

    /// Drop parameter `key`.
    pub fn without(mut self, key: &str) -> Class {
        self.parameters.remove(key);
        self
    }
}

/// What a successful Mount left in the volume.
#[derive(Clone, Debug)]
pub struct Volume {
    /// File path (relative to the mount) → (mode, contents), as answered.
    pub files: BTreeMap<String, (u32, Vec<u8>)>,
    /// Object id → version.
    pub versions: BTreeMap<String, String>,
    /// Where the files were written here.
    pub dir: PathBuf,
}

impl Volume {
    /// The contents of `path` as text.
    pub fn text(&self, path: &str) -> &str {
        let (_, bytes) = self
            .files
            .get(path)
            .unwrap_or_else(|| panic!("no file {path:?} in {:?}", self.files.keys()));
        std::str::from_utf8(bytes).expect("UTF-8 contents")
    }

    /// The mode of `path` as answered.
    pub fn mode(&self, path: &str) -> u32 {
        self.files
            .get(path)
            .unwrap_or_else(|| panic!("no file {path:?} in {:?}", self.files.keys()))
            .0
    }

    /// The mode of `path` on disk.
    pub fn mode_on_disk(&self, path: &str) -> u32 {
        std::fs::metadata(self.dir.join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    /// The file names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.files.keys().map(String::as_str).collect()
    }
}

/// A refused Mount, as the driver sees it.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The gRPC message (the pod's event).
    pub message: String,
    /// `MountResponse.error.code` from the status details, if any.
    pub error_code: Option<String>,
    /// Files in the details' `MountResponse` (must be none).
    pub files_in_details: usize,
}

impl Refusal {
    fn of(status: &tonic::Status) -> Refusal {
        let response = response_in(status);
        Refusal {
            code: status.code(),
            message: status.message().to_string(),
            error_code: response
                .as_ref()
                .and_then(|r| r.error.as_ref())
                .map(|e| e.code.clone()),
            files_in_details: response.map_or(0, |r| r.files.len()),
        }
    }
}

/// Check an answer's files as the driver does before it writes any: every
/// path relative, not empty, without a `..` element and not starting with
/// `..`; every mode 0 to 0777; and (our stricter rule) each path once and
/// none inside another file's path.
pub fn check_files(files: &[pb::File]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for f in files {
        let p = f.path.as_str();
        if p.is_empty() {
            return Err("a file has an empty path".into());
        }
        if p.starts_with('/') {
            return Err(format!("file {p:?} is absolute"));
        }
        if p.starts_with("..") || p.split('/').any(|e| e == "..") {
            return Err(format!("file {p:?} leaves the mount"));
        }
        if !(0..=0o777).contains(&f.mode) {
            return Err(format!("file {p:?} has mode {:#o}", f.mode));
        }
        if !seen.insert(p) {
            return Err(format!("file {p:?} is answered twice"));
        }
    }
    for p in &seen {
        let inside = format!("{p}/");
        if seen.iter().any(|q| q.starts_with(&inside)) {
            return Err(format!("file {p:?} is also a directory of another file"));
        }
    }
    Ok(())
}

/// The driver's side of one provider socket.
pub struct FakeDriver {
    client: CsiDriverProviderClient<Channel>,
    /// Stands for the node's root: volumes land under
    /// `root/var/lib/kubelet/pods/...`.
    root: tempfile::TempDir,
    /// Object versions of each volume's last successful Mount, by target
    /// path.
    versions: HashMap<String, Vec<pb::ObjectVersion>>,
}

impl FakeDriver {
    /// Connect to the provider's socket at `socket`.
    pub async fn connect(socket: &Path) -> anyhow::Result<FakeDriver> {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://[::]:50051")
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .with_context(|| format!("connecting to the provider socket {}", socket.display()))?;
        let root = tempfile::Builder::new()
            .prefix("csi-node-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        Ok(FakeDriver {
            client: CsiDriverProviderClient::new(channel),
            root,
            versions: HashMap::new(),
        })
    }

    /// `Version`, as the driver asks it at start.
    pub async fn version(&mut self) -> Result<pb::VersionResponse, tonic::Status> {
        self.client
            .version(pb::VersionRequest {
                version: "v1alpha1".into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The attributes the driver sends for `pod` and `class`: the class's
    /// parameters, then the pod fields and volume context on top.
    pub fn attributes(class: &Class, pod: &Pod) -> String {
        let mut map = Map::new();
        for (k, v) in &class.parameters {
            map.insert(k.clone(), json!(v));
        }
        map.insert(CLASS_NAME.into(), json!(class.name));
        map.insert(EPHEMERAL.into(), json!("true"));
        map.insert(POD_NAME.into(), json!(pod.name));
        map.insert(POD_NAMESPACE.into(), json!(pod.namespace));
        map.insert(POD_UID.into(), json!(pod.uid));
        map.insert(SERVICE_ACCOUNT.into(), json!(pod.service_account));
        if !pod.tokens.is_empty() {
            let tokens: Map<String, Value> = pod
                .tokens
                .iter()
                .map(|(aud, (token, at))| {
                    (
                        aud.clone(),
                        json!({"token": token, "expirationTimestamp": at}),
                    )
                })
                .collect();
            // A JSON string holding JSON, as the kubelet passes it.
            map.insert(TOKENS.into(), json!(Value::Object(tokens).to_string()));
        }
        Value::Object(map).to_string()
    }

    /// The request the driver sends to mount `pod`'s volume `volume` of
    /// `class`, with the volume's current object versions.
    pub fn request(&self, class: &Class, pod: &Pod, volume: &str) -> pb::MountRequest {
        let target = pod.target_path(volume);
        pb::MountRequest {
            attributes: Self::attributes(class, pod),
            secrets: "{}".into(),
            current_object_version: self.versions.get(&target).cloned().unwrap_or_default(),
            target_path: target,
            permission: PERMISSION.into(),
        }
    }

    /// Mount `pod`'s volume `volume` of `class`: the files written, or the
    /// refusal.
    pub async fn mount(
        &mut self,
        class: &Class,
        pod: &Pod,
        volume: &str,
    ) -> Result<Volume, Refusal> {
        let request = self.request(class, pod, volume);
        self.send(request).await
    }

    /// Send `request` as is and handle the answer as the driver does.
    pub async fn send(&mut self, request: pb::MountRequest) -> Result<Volume, Refusal> {
        let target = request.target_path.clone();
        let response = match self.client.mount(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(Refusal::of(&status)),
        };
        if let Some(e) = response.error.as_ref().filter(|e| !e.code.is_empty()) {
            panic!(
                "the provider answered OK with error code {:?}: the driver fails such a mount",
                e.code
            );
        }
        if let Err(why) = check_files(&response.files) {
            panic!("the driver refuses the provider's answer: {why}");
        }
        let dir = self.local_dir(&target);
        self.write(&dir, &response.files);
        self.versions
            .insert(target, response.object_version.clone());
        Ok(Volume {
            files: response
                .files
                .iter()
                .map(|f| (f.path.clone(), (f.mode as u32, f.contents.clone())))
                .collect(),
            versions: response
                .object_version
                .iter()
                .map(|v| (v.id.clone(), v.version.clone()))
                .collect(),
            dir,
        })
    }

    /// Forget the volume's object versions: the next Mount carries none
    /// (a kubelet republish since driver v1.6, or a restarted driver).
    pub fn forget_versions(&mut self, pod: &Pod, volume: &str) {
        self.versions.remove(&pod.target_path(volume));
    }

    /// The object versions the next Mount of the volume carries.
    pub fn current_versions(&self, pod: &Pod, volume: &str) -> Vec<pb::ObjectVersion> {
        self.versions
            .get(&pod.target_path(volume))
            .cloned()
            .unwrap_or_default()
    }

    /// Where `pod`'s volume `volume` is written here.
    pub fn volume_dir(&self, pod: &Pod, volume: &str) -> PathBuf {
        self.local_dir(&pod.target_path(volume))
    }

    /// Whether anything was ever written for `pod`'s volume `volume`.
    pub fn wrote_anything(&self, pod: &Pod, volume: &str) -> bool {
        self.volume_dir(pod, volume).exists()
    }

    fn local_dir(&self, target: &str) -> PathBuf {
        self.root.path().join(target.trim_start_matches('/'))
    }

    /// Replace the volume's files with `files` (checked), each with its
    /// mode; directories 0755.
    fn write(&self, dir: &Path, files: &[pb::File]) {
        if dir.exists() {
            // Files of mode 0 or 0400 in place: make them removable.
            std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::create_dir_all(dir).unwrap();
        for f in files {
            let path = dir.join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&path, &f.contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode as u32))
                .unwrap();
        }
    }
}

#[test]
fn the_driver_refuses_what_it_must_before_writing() {
    let file = |path: &str, mode: i32| pb::File {
        path: path.into(),
        mode,
        contents: vec![],
    };
    assert!(check_files(&[file("a", 0o400), file("d/b", 0o777), file("..x/c", 0)]).is_err());
    assert!(check_files(&[file("a", 0o400), file("d/b", 0o777), file("c..", 0)]).is_ok());
    for bad in [
        vec![file("", 0o400)],
        vec![file("/etc/passwd", 0o400)],
        vec![file("../x", 0o400)],
        vec![file("a/../../x", 0o400)],
        vec![file("..data", 0o400)],
        vec![file("a", 0o1000)],
        vec![file("a", -1)],
        vec![file("a", 0o400), file("a", 0o400)],
        vec![file("a", 0o400), file("a/b", 0o400)],
    ] {
        assert!(check_files(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn attributes_are_a_json_map_of_strings_with_the_tokens_as_a_json_string() {
    let key = SigningKey::ec("ec-fixture");
    let pod = Pod::projected(&key, "shop", "web", "web-0");
    let class = Class::new("kstash-web").with("role", "web");
    let attributes: BTreeMap<String, String> =
        serde_json::from_str(&FakeDriver::attributes(&class, &pod)).unwrap();
    assert_eq!(attributes["role"], "web");
    assert_eq!(attributes[CLASS_NAME], "kstash-web");
    assert_eq!(attributes[POD_UID], pod.uid);
    let tokens: Value = serde_json::from_str(&attributes[TOKENS]).unwrap();
    assert_eq!(tokens["kstash"]["token"], pod.token("kstash").unwrap());
    let at = tokens["kstash"]["expirationTimestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
    let none = FakeDriver::attributes(&class, &pod.clone().without_tokens());
    assert!(!none.contains(TOKENS), "{none}");
}
