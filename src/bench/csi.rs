//! `kstash bench csi`: the mount storm. N simulated pods, each with a
//! ServiceAccount token of its own, mount M kstash secrets through a real
//! `kstash csi-provider` process, the way the Secrets Store CSI Driver asks
//! for them, against a three-node kstash on loopback.
//!
//! Per concurrency point (C Mounts in flight), with a fresh set of pods:
//! `first-mount` (every pod once: each logs in, the provider's login cache
//! is cold), `remount` (`rounds` times every pod again: what the driver's
//! rotation poll does; the pods' kstash tokens come from the cache), and
//! with `rotation` `rounds` more rounds, each after every secret got a new
//! value, where every Mount must show the new version. A row per phase:
//! mounts, mounts/s, p50/p90/p99/max latency, errors, and the logins and
//! cache hits the provider's `/metrics` counted meanwhile.
//!
//! The bench plays the Kubernetes cluster too: it makes a P-256 signing
//! key, writes its public half as a JWKS file, and starts every node with
//! `--kubernetes-issuer` and `--kubernetes-jwks-file`, so the nodes check
//! the pods' tokens exactly as they check a real cluster's.
//!
//! Invariants:
//! - The bench is a client the way the driver is one: gRPC over the
//!   provider's Unix socket, one connection, each `MountRequest` built as
//!   the driver builds it (attributes JSON with the class's parameters, the
//!   pod's fields and the ServiceAccount token map; permission; target
//!   path; on a remount the object versions of the last Mount). It has no
//!   shortcut into the provider or into kstash.
//! - A Mount counts only when it is right: no error, exactly the class's
//!   files, each with its mode and the value the bench wrote, and one
//!   object version per secret equal to the version kstash gave that
//!   write. Anything else is an error, and an error never counts as
//!   throughput; any error makes the run fail once the files are written.
//! - Whatever the caller chooses is bounded ([`MAX_PODS`], [`MAX_SECRETS`],
//!   [`MAX_VALUE_SIZE`], [`MAX_CONCURRENCY`], [`MAX_ROUNDS`]); every call has
//!   a deadline (`bench::socket::CALL_TIMEOUT`, 30 s) and every wait a limit.
//! - Nothing outlives the command: the members and the provider are
//!   stopped and reaped (also on an error, Ctrl-C or SIGTERM), and the
//!   socket, the JWKS file and the data dirs are removed. The signing key
//!   lives in memory only; tokens and secret values are never printed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hdrhistogram::Histogram;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::cluster::{LocalCluster, Scratch, NAMESPACE};
use super::socket::{check_socket_path, describe, unix_channel};
use super::{histogram, now, write_outputs};
use crate::acl::{Capability, Policy, Rule};
use crate::client::wire::{KubernetesRoleRequest, PutSecretRequest};
use crate::client::{Client, ClientOptions};
use crate::plugins::csi::attributes::{POD_NAME, POD_NAMESPACE, POD_UID, SERVICE_ACCOUNT, TOKENS};
use crate::plugins::csi::files::{DEFAULT_MODE, MAX_FILES};
use crate::plugins::csi::params::{ADDRESS, DEFAULT_AUDIENCE, NAMESPACE as NAMESPACE_PARAM};
use crate::plugins::csi::params::{OBJECTS, ROLE};
use crate::plugins::csi::pb;
use crate::plugins::csi::pb::csi_driver_provider_client::CsiDriverProviderClient;
use crate::plugins::csi::provider::MAX_RESPONSE_BYTES;
use crate::secret::SecretString;

/// Most simulated pods of a point.
pub const MAX_PODS: usize = 100_000;
/// Most secrets one pod mounts (the provider's limit of files per class).
pub const MAX_SECRETS: usize = MAX_FILES;
/// Largest value of one secret, in bytes.
pub const MAX_VALUE_SIZE: usize = 64 * 1024;
/// Most Mounts in flight at once.
pub const MAX_CONCURRENCY: usize = 4096;
/// Most remount (and rotation) rounds.
pub const MAX_ROUNDS: usize = 100;
/// Deadline of one scrape of the provider's `/metrics`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes in flight while setup stores or rotates the secrets.
const SETUP_PARALLEL: usize = 16;
/// The issuer of the bench's pretend cluster (a kind or kubeadm cluster's).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The Kubernetes namespace of the simulated pods.
pub const POD_K8S_NAMESPACE: &str = "storm";
/// The login role binding every ServiceAccount of [`POD_K8S_NAMESPACE`].
pub const ROLE_NAME: &str = "storm";
/// The policy of the role: read the bench's secrets.
const POLICY_NAME: &str = "csi-read";
/// Where the bench's secrets live in the kstash namespace (`csi/s0`, …).
pub const SECRET_PREFIX: &str = "csi";
/// Lifetime of a pod's projected token (the kubelet's default, 1 h).
const POD_TOKEN_SECS: u64 = 3600;
/// The file permission the driver passes (0644, its default, in decimal).
const DRIVER_PERMISSION: &str = "420";
/// The provider's socket file in the scratch dir.
const SOCKET_FILE: &str = crate::plugins::csi::SOCKET_FILE;

/// A measured phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every pod mounts once; every pod logs in.
    FirstMount,
    /// Every pod mounts again, `rounds` times; logins come from the cache.
    Remount,
    /// Every secret gets a new value, then every pod mounts again and must
    /// see it; `rounds` times.
    Rotation,
}

impl Phase {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Phase::FirstMount => "first-mount",
            Phase::Remount => "remount",
            Phase::Rotation => "rotation",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct CsiPlan {
    /// Simulated pods of each concurrency point.
    pub pods: usize,
    /// Secrets (files) each pod mounts.
    pub secrets: usize,
    /// Bytes of each secret's value.
    pub value_size: usize,
    /// Mounts in flight, one point per value.
    pub concurrency: Vec<usize>,
    /// Remount rounds after the first mount (and rotation rounds).
    pub rounds: usize,
    /// Also measure remounts after every secret changed.
    pub rotation: bool,
}

impl CsiPlan {
    /// Refuse a plan that measures nothing or exceeds a bound.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(1..=MAX_PODS).contains(&self.pods) {
            bail!("--pods must be 1 to {MAX_PODS}");
        }
        if !(1..=MAX_SECRETS).contains(&self.secrets) {
            bail!("--secrets must be 1 to {MAX_SECRETS} (the provider's files per class)");
        }
        if !(1..=MAX_VALUE_SIZE).contains(&self.value_size) {
            bail!("--value-size must be 1 to {MAX_VALUE_SIZE} bytes");
        }
        let volume = self.secrets * self.value_size;
        if volume > MAX_RESPONSE_BYTES {
            bail!(
                "--secrets {} of --value-size {} make {volume} bytes of contents per mount, over \
                 the provider's answer limit {MAX_RESPONSE_BYTES}: fewer or smaller secrets",
                self.secrets,
                self.value_size
            );
        }
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            bail!("--concurrency needs at least one value, each at least 1");
        }
        if let Some(c) = self.concurrency.iter().find(|c| **c > MAX_CONCURRENCY) {
            bail!("--concurrency {c} is over the limit of {MAX_CONCURRENCY}");
        }
        if self.rounds > MAX_ROUNDS {
            bail!("--rounds {} is over the limit of {MAX_ROUNDS}", self.rounds);
        }
        if self.rotation && self.rounds == 0 {
            bail!("--rotation measures remounts after each change: give --rounds 1 or more");
        }
        Ok(())
    }

    /// The phases of one point, with their rounds, in the order they run.
    fn phases(&self) -> Vec<(Phase, usize)> {
        let mut phases = vec![(Phase::FirstMount, 1)];
        if self.rounds > 0 {
            phases.push((Phase::Remount, self.rounds));
        }
        if self.rotation {
            phases.push((Phase::Rotation, self.rounds));
        }
        phases
    }
}

/// Everything `kstash bench csi` needs.
#[derive(Debug, Clone)]
pub struct CsiOptions {
    /// The load.
    pub plan: CsiPlan,
    /// The kstash binary of the nodes and the provider.
    pub bin: PathBuf,
    /// The parent of the scratch directories.
    pub scratch: PathBuf,
    /// Where `results.json`, `table.md` and `logs/` go.
    pub out: PathBuf,
}

/// One line of the table: one phase at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct CsiRow {
    /// What was measured.
    pub phase: Phase,
    /// Mounts in flight at once.
    pub concurrency: usize,
    /// Simulated pods.
    pub pods: usize,
    /// Rounds of every pod.
    pub rounds: usize,
    /// Correct Mounts.
    pub mounts: u64,
    /// Failed or wrong Mounts.
    pub errors: u64,
    /// Seconds from the first Mount sent until the last answered (summed
    /// over the rounds; the writes of a rotation are not counted).
    pub seconds: f64,
    /// Correct Mounts per second.
    pub mounts_per_s: f64,
    /// Median latency of correct Mounts, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
    /// Logins to kstash the provider made during the phase (`None` when
    /// its `/metrics` could not be read).
    pub logins: Option<u64>,
    /// Mounts that reused a pod's cached kstash token.
    pub cache_hits: Option<u64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// The whole result of `kstash bench csi` (`results.json`).
#[derive(Debug, Clone, Serialize)]
pub struct CsiResults {
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// What ran.
    pub plan: CsiPlan,
    /// The provider's socket (removed by now).
    pub socket: PathBuf,
    /// What the provider's Version answered (runtime name and version).
    pub provider: String,
    /// The node that led while measuring.
    pub leader: Option<u64>,
    /// The process ids of the nodes and the provider (all stopped by now).
    pub pids: Vec<u32>,
    /// One row per (concurrency, phase).
    pub rows: Vec<CsiRow>,
}

// ---------------------------------------------------------------------------
// The pretend cluster: its signing key and the pods' tokens

/// The bench's Kubernetes signing key: ES256 on P-256. The private half
/// stays in memory; the public half goes into the JWKS file.
pub struct ClusterKey {
    kid: String,
    encoding: EncodingKey,
    /// x and y of the public point, 32 bytes each.
    x: Vec<u8>,
    y: Vec<u8>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// A fresh key pair with a random key id.
    pub fn generate() -> anyhow::Result<ClusterKey> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("cannot make a P-256 key pair")?;
        // SEC1 uncompressed: 0x04 | x | y.
        let point = pair.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            bail!("the P-256 public key is not an uncompressed point");
        }
        let pem = Zeroizing::new(pair.serialize_pem());
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
            .context("cannot load the P-256 key for signing")?;
        Ok(ClusterKey {
            kid: hex::encode(rand::random::<[u8; 8]>()),
            encoding,
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        })
    }

    /// The JWKS document of the public key, as
    /// `kubectl get --raw /openid/v1/jwks` shows a cluster's.
    pub fn jwks(&self) -> serde_json::Value {
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&self.x),
            "y": URL_SAFE_NO_PAD.encode(&self.y),
        }]})
    }

    /// Sign `claims` as kube-apiserver does: header `alg` and `kid`, no
    /// `typ`.
    fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<SecretString> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = None;
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map(SecretString::new)
            .context("cannot sign a ServiceAccount token")
    }
}

/// A random version-4 UUID, as Kubernetes gives objects.
fn uuid(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One simulated pod: its names and the driver's attributes for its
/// volume, which hold its token.
pub struct Pod {
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// Its ServiceAccount's name.
    pub service_account: String,
    /// The Mount attributes (JSON), token included.
    attributes: SecretString,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("service_account", &self.service_account)
            .finish_non_exhaustive()
    }
}

impl Pod {
    /// Pod `index` of point `point`, with a ServiceAccount of its own and a
    /// projected token for audience `kstash` issued at `now` (Unix
    /// seconds), its volume of class `class`.
    fn new(
        point: usize,
        index: usize,
        key: &ClusterKey,
        class: &Class,
        now: u64,
        rng: &mut StdRng,
    ) -> anyhow::Result<Pod> {
        let service_account = format!("app-{point}-{index}");
        let name = format!("{service_account}-{}", hex::encode(rng.gen::<[u8; 3]>()));
        let uid = uuid(rng);
        let exp = now + POD_TOKEN_SECS;
        let claims = json!({
            "aud": [DEFAULT_AUDIENCE],
            "exp": exp,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "jti": uuid(rng),
            "kubernetes.io": {
                "namespace": POD_K8S_NAMESPACE,
                "node": {"name": "bench-node", "uid": uuid(rng)},
                "pod": {"name": name, "uid": uid},
                "serviceaccount": {"name": service_account, "uid": uuid(rng)},
            },
            "sub": format!("system:serviceaccount:{POD_K8S_NAMESPACE}:{service_account}"),
        });
        let token = key.sign(&claims)?;
        let expires =
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
                .to_string();
        let tokens = Zeroizing::new(
            json!({DEFAULT_AUDIENCE: {"token": token.expose(), "expirationTimestamp": expires}})
                .to_string(),
        );
        let mut attributes = class.parameters.clone();
        for (k, v) in [
            (POD_NAME, name.as_str()),
            (POD_NAMESPACE, POD_K8S_NAMESPACE),
            (POD_UID, uid.as_str()),
            (SERVICE_ACCOUNT, service_account.as_str()),
            (TOKENS, tokens.as_str()),
        ] {
            attributes.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
        let attributes = SecretString::new(serde_json::Value::Object(attributes).to_string());
        Ok(Pod {
            name,
            uid,
            service_account,
            attributes,
        })
    }

    /// The Mount the driver sends for this pod's volume, with the object
    /// versions of its last Mount.
    fn mount_request(&self, current: &[pb::ObjectVersion]) -> pb::MountRequest {
        pb::MountRequest {
            attributes: self.attributes.expose().to_string(),
            secrets: "{}".into(),
            target_path: format!(
                "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/secrets/mount",
                self.uid
            ),
            permission: DRIVER_PERMISSION.into(),
            current_object_version: current.to_vec(),
        }
    }
}

/// The pods of one point, their tokens signed by `key`.
fn make_pods(
    point: usize,
    count: usize,
    key: &ClusterKey,
    class: &Class,
) -> anyhow::Result<Vec<Pod>> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut rng = StdRng::from_entropy();
    (0..count)
        .map(|i| Pod::new(point, i, key, class, now, &mut rng))
        .collect()
}

// ---------------------------------------------------------------------------
// The SecretProviderClass and what a Mount must answer

/// The class every pod's volume uses: its `parameters`.
#[derive(Debug, Clone)]
pub struct Class {
    parameters: serde_json::Map<String, serde_json::Value>,
}

impl Class {
    /// A class reading `secrets` secrets from the nodes at `addresses`
    /// with role [`ROLE_NAME`] of the bench's kstash namespace (`bench`).
    pub fn new(addresses: &[String], secrets: usize) -> Class {
        let mut objects = String::new();
        for j in 0..secrets {
            let _ = writeln!(
                objects,
                "- path: {}\n  fileName: {}",
                secret_path(j),
                file_name(j)
            );
        }
        let mut parameters = serde_json::Map::new();
        for (k, v) in [
            (ADDRESS, addresses.join(",")),
            (ROLE, ROLE_NAME.to_string()),
            (NAMESPACE_PARAM, NAMESPACE.to_string()),
            (OBJECTS, objects),
        ] {
            parameters.insert(k.to_string(), serde_json::Value::String(v));
        }
        Class { parameters }
    }
}

/// The path of secret `j`.
fn secret_path(j: usize) -> String {
    format!("{SECRET_PREFIX}/s{j}")
}

/// The file secret `j` becomes.
fn file_name(j: usize) -> String {
    format!("s{j}")
}

/// What one secret holds now. Bench data; never printed.
#[derive(Clone)]
struct Stored {
    path: String,
    file: String,
    version: u64,
    value: Zeroizing<Vec<u8>>,
}

/// The state every Mount of a round must show.
type Expected = Arc<Vec<Stored>>;

/// The object versions of `expected`, as a Mount answers them.
fn versions_of(expected: &[Stored]) -> Vec<pb::ObjectVersion> {
    expected
        .iter()
        .map(|s| pb::ObjectVersion {
            id: s.path.clone(),
            version: s.version.to_string(),
        })
        .collect()
}

/// Whether `answer` is exactly the volume of `expected`; the message names
/// the file or object, never a value.
fn check_mount(answer: &pb::MountResponse, expected: &[Stored]) -> Result<(), String> {
    if let Some(e) = answer.error.as_ref().filter(|e| !e.code.is_empty()) {
        return Err(format!("the answer carries error code {:?}", e.code));
    }
    if answer.files.len() != expected.len() {
        return Err(format!(
            "{} files answered, {} expected",
            answer.files.len(),
            expected.len()
        ));
    }
    for want in expected {
        let Some(file) = answer.files.iter().find(|f| f.path == want.file) else {
            return Err(format!("no file {:?}", want.file));
        };
        if file.mode != DEFAULT_MODE as i32 {
            return Err(format!(
                "file {:?} has mode {:#o}, not {DEFAULT_MODE:#o}",
                want.file, file.mode
            ));
        }
        if file.contents[..] != want.value[..] {
            return Err(format!(
                "file {:?} ({} bytes) is not version {} of {} ({} bytes)",
                want.file,
                file.contents.len(),
                want.version,
                want.path,
                want.value.len()
            ));
        }
    }
    if answer.object_version.len() != expected.len() {
        return Err(format!(
            "{} object versions answered, {} expected",
            answer.object_version.len(),
            expected.len()
        ));
    }
    for want in expected {
        let Some(got) = answer.object_version.iter().find(|v| v.id == want.path) else {
            return Err(format!("no object version for {}", want.path));
        };
        if got.version != want.version.to_string() {
            return Err(format!(
                "object {} has version {:?}, not {}",
                want.path, got.version, want.version
            ));
        }
    }
    Ok(())
}

/// A fresh random value of `size` printable bytes.
fn random_value(rng: &mut StdRng, size: usize) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(rng.sample_iter(&Alphanumeric).take(size).collect())
}

/// Write a new random value to every secret (at most [`SETUP_PARALLEL`]
/// writes at once) and return what they hold now; each version must be
/// above `previous`'s.
async fn write_secrets(
    admin: &Client,
    secrets: usize,
    value_size: usize,
    previous: Option<&[Stored]>,
) -> anyhow::Result<Vec<Stored>> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let mut written: Vec<(usize, Stored)> = stream::iter(0..secrets)
        .map(|j| async move {
            let value = random_value(&mut StdRng::from_entropy(), value_size);
            let text = String::from_utf8(value.to_vec()).expect("alphanumeric is UTF-8");
            let path = secret_path(j);
            let put = admin
                .kv_put(
                    &path,
                    &PutSecretRequest {
                        value: Some(SecretString::new(text)),
                        value_base64: None,
                        cas: None,
                    },
                    None,
                )
                .await
                .with_context(|| format!("cannot write the secret {path}"))?;
            let stored = Stored {
                path,
                file: file_name(j),
                version: put.version,
                value,
            };
            anyhow::Ok((j, stored))
        })
        .buffer_unordered(SETUP_PARALLEL)
        .try_collect()
        .await?;
    written.sort_by_key(|(j, _)| *j);
    let written: Vec<Stored> = written.into_iter().map(|(_, s)| s).collect();
    if let Some(previous) = previous {
        moved_on(&written, previous)?;
    }
    Ok(written)
}

/// Fails unless every secret of `now` has a higher version than in
/// `before`: a rotation round must be able to tell new from old.
fn moved_on(now: &[Stored], before: &[Stored]) -> anyhow::Result<()> {
    for (now, before) in now.iter().zip(before) {
        if now.version <= before.version {
            bail!(
                "writing {} gave version {}, not above {}",
                now.path,
                now.version,
                before.version
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The driver's side of the socket

/// One gRPC connection to the provider's socket, as the driver keeps one;
/// clones share it.
#[derive(Clone)]
pub struct ProviderSocket {
    client: CsiDriverProviderClient<Channel>,
}

impl ProviderSocket {
    /// Connect to the socket at `path` (one HTTP/2 connection, each call
    /// bounded by `bench::socket::CALL_TIMEOUT`, 30 s).
    pub async fn connect(path: &Path) -> anyhow::Result<ProviderSocket> {
        let channel = unix_channel(path, "provider").await?;
        Ok(ProviderSocket {
            client: CsiDriverProviderClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        })
    }

    /// Version: `<runtime name> <runtime version>`.
    async fn version(&self) -> Result<String, String> {
        let reply = self
            .client
            .clone()
            .version(pb::VersionRequest {
                version: "v1alpha1".into(),
            })
            .await
            .map_err(describe)?
            .into_inner();
        Ok(format!("{} {}", reply.runtime_name, reply.runtime_version))
    }

    /// One Mount, checked against `expected`.
    async fn mount(&self, request: pb::MountRequest, expected: &[Stored]) -> Result<(), String> {
        let answer = self
            .client
            .clone()
            .mount(request)
            .await
            .map_err(describe)?
            .into_inner();
        check_mount(&answer, expected)
    }
}

/// What the Mounts of a phase gave.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: histogram(),
            errors: 0,
            first_error: None,
            seconds: 0.0,
        }
    }

    fn add(&mut self, other: Tally) -> anyhow::Result<()> {
        self.hist.add(&other.hist).context("merging histograms")?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.seconds += other.seconds;
        Ok(())
    }
}

/// One round: every pod mounts once, at most `concurrency` at a time,
/// sending `current` as the versions it holds; each answer must be
/// `expected`.
async fn round(
    socket: &ProviderSocket,
    pods: &Arc<Vec<Pod>>,
    concurrency: usize,
    current: &Arc<Vec<pb::ObjectVersion>>,
    expected: &Expected,
) -> anyhow::Result<Tally> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..concurrency.clamp(1, pods.len().max(1)) {
        let (socket, pods, next) = (socket.clone(), pods.clone(), next.clone());
        let (current, expected) = (current.clone(), expected.clone());
        tasks.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(pod) = pods.get(i) else { break };
                let request = pod.mount_request(&current);
                let sent = Instant::now();
                match socket.mount(request, &expected).await {
                    Ok(()) => tally
                        .hist
                        .saturating_record(sent.elapsed().as_micros().max(1) as u64),
                    Err(e) => {
                        tally.errors += 1;
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("pod {}: {e}", pod.name));
                    }
                }
            }
            tally
        });
    }
    let mut all = Tally::new();
    while let Some(done) = tasks.join_next().await {
        all.add(done.context("mount task")?)?;
    }
    all.seconds = started.elapsed().as_secs_f64();
    Ok(all)
}

// ---------------------------------------------------------------------------
// The provider's counters

/// The provider's login counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    logins: u64,
    cache_hits: u64,
}

/// The value of series `series` (name and labels, exactly) in Prometheus
/// text; 0 when absent (a counter not yet touched).
fn series_value(text: &str, series: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .next()
        .unwrap_or(0)
}

/// The counters in the provider's `/metrics` text.
fn counters(text: &str) -> Counters {
    Counters {
        logins: series_value(text, "kstash_csi_logins_total{outcome=\"ok\"}"),
        cache_hits: series_value(text, "kstash_csi_login_cache_lookups_total{result=\"hit\"}"),
    }
}

/// Reads the provider's `/metrics`.
struct MetricsScraper {
    http: reqwest::Client,
    url: String,
}

impl MetricsScraper {
    fn new(addr: std::net::SocketAddr) -> anyhow::Result<MetricsScraper> {
        crate::client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(SCRAPE_TIMEOUT)
            .build()
            .context("cannot build an HTTP client")?;
        Ok(MetricsScraper {
            http,
            url: format!("http://{addr}/metrics"),
        })
    }

    async fn text(&self) -> Result<String, String> {
        let reply = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if !reply.status().is_success() {
            return Err(format!("GET {}: {}", self.url, reply.status()));
        }
        reply
            .text()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))
    }

    /// The counters now, or `None` (with a line on stderr).
    async fn counters(&self) -> Option<Counters> {
        match self.text().await {
            Ok(text) => Some(counters(&text)),
            Err(e) => {
                eprintln!("[csi] cannot read the provider's counters: {e}");
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The run

/// A row from a phase's tally and the counters around it.
fn row(
    phase: Phase,
    concurrency: usize,
    pods: usize,
    rounds: usize,
    tally: &Tally,
    before: Option<Counters>,
    after: Option<Counters>,
) -> CsiRow {
    let hist = &tally.hist;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let mounts = hist.len();
    let delta = before.zip(after);
    CsiRow {
        phase,
        concurrency,
        pods,
        rounds,
        mounts,
        errors: tally.errors,
        seconds: tally.seconds,
        mounts_per_s: mounts as f64 / tally.seconds.max(1e-9),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        logins: delta.map(|(b, a)| a.logins.saturating_sub(b.logins)),
        cache_hits: delta.map(|(b, a)| a.cache_hits.saturating_sub(b.cache_hits)),
        first_error: tally.first_error.clone(),
    }
}

/// A row as a line on stderr.
fn progress(r: &CsiRow) {
    eprintln!(
        "[csi] {} c={}: {} mounts, {:.0} mounts/s, p50 {:.2} ms, p99 {:.2} ms, logins {}, \
         errors {}",
        r.phase.name(),
        r.concurrency,
        r.mounts,
        r.mounts_per_s,
        r.p50_ms,
        r.p99_ms,
        r.logins.map_or("?".to_string(), |n| n.to_string()),
        r.errors
    );
}

/// What the bench measures through: the socket, the secrets' writer, and
/// the provider's counters.
struct Storm<'a> {
    socket: &'a ProviderSocket,
    admin: &'a Client,
    scraper: Option<&'a MetricsScraper>,
    key: &'a ClusterKey,
    class: &'a Class,
}

impl Storm<'_> {
    async fn counters(&self) -> Option<Counters> {
        match self.scraper {
            Some(s) => s.counters().await,
            None => None,
        }
    }

    /// Every point of `plan`: fresh pods, then each phase. `stored` is what
    /// the secrets hold; a rotation moves it on.
    async fn measure(&self, plan: &CsiPlan, mut stored: Expected) -> anyhow::Result<Vec<CsiRow>> {
        let mut rows = Vec::new();
        for (point, &concurrency) in plan.concurrency.iter().enumerate() {
            let pods = Arc::new(make_pods(point, plan.pods, self.key, self.class)?);
            // What each pod holds: nothing before its first Mount.
            let mut held: Arc<Vec<pb::ObjectVersion>> = Arc::new(Vec::new());
            for (phase, rounds) in plan.phases() {
                let before = self.counters().await;
                let mut tally = Tally::new();
                for _ in 0..rounds {
                    if phase == Phase::Rotation {
                        let next =
                            write_secrets(self.admin, plan.secrets, plan.value_size, Some(&stored))
                                .await?;
                        stored = Arc::new(next);
                    }
                    tally.add(round(self.socket, &pods, concurrency, &held, &stored).await?)?;
                    held = Arc::new(versions_of(&stored));
                }
                let after = self.counters().await;
                let r = row(phase, concurrency, plan.pods, rounds, &tally, before, after);
                progress(&r);
                rows.push(r);
            }
        }
        Ok(rows)
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Run `kstash bench csi`: start, prepare, measure, stop, and write
/// `results.json` and `table.md` into `out` (the logs into `out/logs`).
/// Ctrl-C or SIGTERM stops everything and ends with an error; so does any
/// failed Mount (after the files are written).
pub async fn run(opts: &CsiOptions) -> anyhow::Result<CsiResults> {
    opts.plan.check()?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let started_at = now();
    let measured = tokio::select! {
        r = measure_local_cluster(opts) => r,
        signal = super::compare::interrupted() => Err(anyhow::anyhow!(
            "interrupted by {signal}; every process the bench started is stopped"
        )),
    }?;
    let results = CsiResults {
        started_at,
        finished_at: now(),
        plan: opts.plan.clone(),
        socket: measured.socket,
        provider: measured.provider,
        leader: measured.leader,
        pids: measured.pids,
        rows: measured.rows,
    };
    write_outputs(&results, &markdown(&results), &opts.out)?;
    verdict(&results.rows)?;
    Ok(results)
}

/// Fails when a Mount failed or a phase did none.
fn verdict(rows: &[CsiRow]) -> anyhow::Result<()> {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.errors > 0 || r.mounts == 0)
        .map(|r| {
            format!(
                "{} c={}: {} of {} mounts failed, first: {}",
                r.phase.name(),
                r.concurrency,
                r.errors,
                r.errors + r.mounts,
                r.first_error.as_deref().unwrap_or("none finished")
            )
        })
        .collect();
    if !bad.is_empty() {
        bail!("mounts failed: {}", bad.join("; "));
    }
    Ok(())
}

/// What the local cluster gave.
struct Measured {
    socket: PathBuf,
    provider: String,
    leader: Option<u64>,
    pids: Vec<u32>,
    rows: Vec<CsiRow>,
}

/// Make the signing key and the JWKS file, start a three-node kstash that
/// trusts it, write the secrets, the policy and the role, start a
/// `kstash csi-provider`, wait until it answers, measure, and stop
/// everything.
async fn measure_local_cluster(opts: &CsiOptions) -> anyhow::Result<Measured> {
    let plan = &opts.plan;
    let logs = opts.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // Declared first, dropped last: removed after every process stopped.
    let scratch = Scratch::create(&opts.scratch, "csi")?;
    let socket_path = scratch.path().join(SOCKET_FILE);
    check_socket_path(&socket_path)?;
    let key = ClusterKey::generate()?;
    let jwks = scratch.path().join("jwks.json");
    std::fs::write(&jwks, key.jwks().to_string())
        .with_context(|| format!("cannot write {}", jwks.display()))?;

    eprintln!(
        "[csi] starting a three-node kstash ({}) trusting the bench's ServiceAccount key",
        opts.bin.display()
    );
    let every_node = [
        "--kubernetes-issuer".into(),
        ISSUER.into(),
        "--kubernetes-jwks-file".into(),
        jwks.clone().into_os_string(),
    ];
    let token_ttl = Duration::from_secs(6 * 3600);
    let mut cluster = LocalCluster::start_kstash_configured(
        &opts.bin,
        &opts.scratch,
        &logs,
        token_ttl,
        &[],
        &every_node,
    )
    .await?;
    let admin = Client::new(&ClientOptions {
        addresses: cluster.endpoints.clone(),
        token: Some(SecretString::new(cluster.token()?.to_string())),
        ca_cert: None,
        timeout: Duration::from_secs(60),
    })?;

    eprintln!(
        "[csi] writing {} secrets of {} bytes, the policy {POLICY_NAME} and the role {ROLE_NAME}",
        plan.secrets, plan.value_size
    );
    let stored = Arc::new(write_secrets(&admin, plan.secrets, plan.value_size, None).await?);
    let policy = Policy {
        rules: vec![Rule {
            path: format!("{SECRET_PREFIX}/*"),
            capabilities: vec![Capability::Read],
        }],
    };
    admin
        .policy_put(NAMESPACE, POLICY_NAME, &policy, None)
        .await
        .with_context(|| format!("cannot write the policy {POLICY_NAME}"))?;
    admin
        .put_kubernetes_role(
            NAMESPACE,
            ROLE_NAME,
            &KubernetesRoleRequest {
                service_accounts: &[format!("{POD_K8S_NAMESPACE}/*")],
                policies: &[POLICY_NAME.to_string()],
                ttl: None,
                audience: None,
            },
            None,
        )
        .await
        .with_context(|| format!("cannot write the role {ROLE_NAME}"))?;

    let health = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = std::process::Command::new(&opts.bin);
    cmd.arg("csi-provider")
        .arg("--socket")
        .arg(format!("unix://{}", socket_path.display()))
        .args(["--health-listen", &health.to_string()])
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KSTASH_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cluster.spawn_helper("kstash-csi-provider", cmd, &logs)?;
    let what = format!(
        "the provider socket {} answers Version",
        socket_path.display()
    );
    let (socket, provider) = cluster
        .wait_until(&what, || async {
            let socket = ProviderSocket::connect(&socket_path).await.ok()?;
            let version = socket.version().await.ok()?;
            Some((socket, version))
        })
        .await?;
    let scraper = MetricsScraper::new(health)?;
    {
        let scraper = &scraper;
        cluster
            .wait_until("the provider serves /metrics", || async move {
                scraper.text().await.ok().map(drop)
            })
            .await?;
    }
    let leader = admin.status().await.ok().and_then(|s| s.leader_id);
    eprintln!(
        "[csi] {} pods × {} secrets through {provider} at concurrency {:?}",
        plan.pods, plan.secrets, plan.concurrency
    );
    let class = Class::new(&cluster.endpoints, plan.secrets);
    let storm = Storm {
        socket: &socket,
        admin: &admin,
        scraper: Some(&scraper),
        key: &key,
        class: &class,
    };
    let rows = storm.measure(plan, stored).await;
    drop(socket);
    cluster.stop();
    eprintln!("[csi] stopped the cluster and the provider");
    let pids = cluster.pids();
    drop(cluster);
    drop(scratch);
    Ok(Measured {
        socket: socket_path,
        provider,
        leader,
        pids,
        rows: rows?,
    })
}

/// The table as Markdown, with lines saying what the numbers are.
pub fn markdown(results: &CsiResults) -> String {
    let mut md = String::from(
        "| phase | concurrency | mounts | mounts/s | p50 ms | p90 ms | p99 ms | max ms | logins | cache hits | seconds | errors |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
    for r in &results.rows {
        // Writing into a String cannot fail.
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} | {} |",
            r.phase.name(),
            r.concurrency,
            r.mounts,
            r.mounts_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            count(r.logins),
            count(r.cache_hits),
            r.seconds,
            r.errors
        );
    }
    let plan = &results.plan;
    let leader = match results.leader {
        Some(n) => format!("node {n} led"),
        None => "the leader was not known".to_string(),
    };
    let _ = write!(
        md,
        "\n{} simulated pods per concurrency point, each with its own ServiceAccount and \
         projected token, mount {} secrets of {} bytes through one `kstash csi-provider` \
         ({}) over one gRPC connection, as the Secrets Store CSI Driver does, against a \
         three-node kstash on loopback ({leader}). first-mount: every pod once, each logging \
         in; remount: every pod again, {} round(s), as the driver's rotation poll does",
        plan.pods, plan.secrets, plan.value_size, results.provider, plan.rounds
    );
    if plan.rotation {
        let _ = write!(
            md,
            "; rotation: {} round(s), each after every secret got a new value, every Mount \
             showing the new version",
            plan.rounds
        );
    }
    md.push_str(
        ". Every answer is checked (each file's contents, mode and object version); a wrong \
         one is an error. seconds: from the first Mount sent until the last answered; logins \
         and cache hits: the provider's /metrics.\n",
    );
    md
}

/// `bench-results/csi-<UTC time, e.g. 20250102T030405Z>`.
pub fn default_out_dir() -> PathBuf {
    super::out_dir_for("csi")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::auth::kubernetes::{KubernetesAuth, KubernetesSettings};
    use crate::plugins::csi::attributes::MountAttributes;
    use crate::plugins::csi::pb::csi_driver_provider_server::{
        CsiDriverProvider, CsiDriverProviderServer,
    };

    fn plan() -> CsiPlan {
        CsiPlan {
            pods: 20,
            secrets: 3,
            value_size: 64,
            concurrency: vec![4],
            rounds: 2,
            rotation: false,
        }
    }

    /// Two secrets as setup writes them: `csi/s0` v1, `csi/s1` v3.
    fn stored() -> Vec<Stored> {
        vec![
            Stored {
                path: secret_path(0),
                file: file_name(0),
                version: 1,
                value: Zeroizing::new(b"first-value-abc".to_vec()),
            },
            Stored {
                path: secret_path(1),
                file: file_name(1),
                version: 3,
                value: Zeroizing::new(b"second-value-xyz".to_vec()),
            },
        ]
    }

    /// The right answer for `expected`, as the provider gives it.
    fn answer(expected: &[Stored]) -> pb::MountResponse {
        pb::MountResponse {
            object_version: versions_of(expected),
            error: None,
            files: expected
                .iter()
                .map(|s| pb::File {
                    path: s.file.clone(),
                    mode: DEFAULT_MODE as i32,
                    contents: s.value.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn plans_that_measure_nothing_or_too_much_are_refused() {
        assert!(plan().check().is_ok());
        assert!(CsiPlan {
            rounds: 0,
            ..plan()
        }
        .check()
        .is_ok());
        for (bad, want) in [
            (CsiPlan { pods: 0, ..plan() }, "--pods"),
            (
                CsiPlan {
                    pods: MAX_PODS + 1,
                    ..plan()
                },
                "--pods",
            ),
            (
                CsiPlan {
                    secrets: 0,
                    ..plan()
                },
                "--secrets",
            ),
            (
                CsiPlan {
                    secrets: MAX_SECRETS + 1,
                    ..plan()
                },
                "--secrets",
            ),
            (
                CsiPlan {
                    value_size: 0,
                    ..plan()
                },
                "--value-size",
            ),
            (
                CsiPlan {
                    value_size: MAX_VALUE_SIZE + 1,
                    ..plan()
                },
                "--value-size",
            ),
            (
                CsiPlan {
                    secrets: 100,
                    value_size: MAX_VALUE_SIZE,
                    ..plan()
                },
                "bytes of contents per mount",
            ),
            (
                CsiPlan {
                    concurrency: vec![],
                    ..plan()
                },
                "--concurrency",
            ),
            (
                CsiPlan {
                    concurrency: vec![4, 0],
                    ..plan()
                },
                "--concurrency",
            ),
            (
                CsiPlan {
                    concurrency: vec![MAX_CONCURRENCY + 1],
                    ..plan()
                },
                "--concurrency",
            ),
            (
                CsiPlan {
                    rounds: MAX_ROUNDS + 1,
                    ..plan()
                },
                "--rounds",
            ),
            (
                CsiPlan {
                    rounds: 0,
                    rotation: true,
                    ..plan()
                },
                "--rotation",
            ),
        ] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_phases_follow_the_plan() {
        use Phase::*;
        assert_eq!(plan().phases(), [(FirstMount, 1), (Remount, 2)]);
        let rotating = CsiPlan {
            rotation: true,
            rounds: 3,
            ..plan()
        };
        assert_eq!(
            rotating.phases(),
            [(FirstMount, 1), (Remount, 3), (Rotation, 3)]
        );
        let once = CsiPlan {
            rounds: 0,
            ..plan()
        };
        assert_eq!(once.phases(), [(FirstMount, 1)]);
    }

    /// The pods' tokens pass kstash's own ServiceAccount checks in
    /// JWKS-file mode, each names its own ServiceAccount and pod, and the
    /// attributes are what the provider reads.
    #[tokio::test]
    async fn pod_tokens_pass_kstashs_own_checks_against_the_jwks_file() {
        let key = ClusterKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, key.jwks().to_string()).unwrap();
        let auth = KubernetesAuth::open(KubernetesSettings {
            issuer: Some(ISSUER.into()),
            jwks_file: Some(jwks),
            local_check: true,
            jwks_refresh: Duration::from_secs(300),
            ..KubernetesSettings::default()
        })
        .unwrap();
        let addresses = vec![
            "http://127.0.0.1:1".to_string(),
            "http://127.0.0.1:2".to_string(),
        ];
        let class = Class::new(&addresses, 2);
        let pods = make_pods(7, 3, &key, &class).unwrap();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut uids = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for (i, pod) in pods.iter().enumerate() {
            let a = MountAttributes::parse(pod.attributes.expose()).unwrap();
            assert_eq!(a.pod_namespace, POD_K8S_NAMESPACE);
            assert_eq!((&a.pod_name, &a.pod_uid), (&pod.name, &pod.uid));
            assert_eq!(a.service_account, format!("app-7-{i}"));
            assert_eq!(a.parameters["address"], addresses.join(","));
            assert_eq!(a.parameters["role"], ROLE_NAME);
            assert_eq!(a.parameters["namespace"], NAMESPACE);
            assert_eq!(
                a.parameters["objects"],
                "- path: csi/s0\n  fileName: s0\n- path: csi/s1\n  fileName: s1\n"
            );
            let (token, expiry) = a.token_for(DEFAULT_AUDIENCE).unwrap();
            assert!(expiry.is_some_and(|e| e.ends_with('Z')), "{expiry:?}");
            let account = auth.verify(token, DEFAULT_AUDIENCE, now_ms).await.unwrap();
            assert_eq!(account.namespace, POD_K8S_NAMESPACE);
            assert_eq!(account.name, pod.service_account);
            assert_eq!(account.pod.as_deref(), Some(pod.name.as_str()));
            assert!(account.expires_at_ms > now_ms + 3_000_000);
            uids.insert(pod.uid.clone());
            tokens.insert(token.expose().to_string());
            let shown = format!("{pod:?}");
            assert!(!shown.contains(token.expose()), "{shown}");
        }
        assert_eq!((uids.len(), tokens.len()), (3, 3), "every pod its own");
        // Another key's tokens are refused: the JWKS holds this key only.
        let stranger = ClusterKey::generate().unwrap();
        let other = make_pods(8, 1, &stranger, &class).unwrap();
        let a = MountAttributes::parse(other[0].attributes.expose()).unwrap();
        let (token, _) = a.token_for(DEFAULT_AUDIENCE).unwrap();
        assert!(auth.verify(token, DEFAULT_AUDIENCE, now_ms).await.is_err());
    }

    #[test]
    fn a_mount_counts_only_when_it_is_exactly_the_volume() {
        let expected = stored();
        assert_eq!(check_mount(&answer(&expected), &expected), Ok(()));
        let mut reordered = answer(&expected);
        reordered.files.reverse();
        reordered.object_version.reverse();
        assert_eq!(check_mount(&reordered, &expected), Ok(()));

        type Spoil = Box<dyn Fn(&mut pb::MountResponse)>;
        let wrong: Vec<(&str, Spoil)> = vec![
            (
                "error code",
                Box::new(|a| {
                    a.error = Some(pb::Error {
                        code: "SecretNotFound".into(),
                    })
                }),
            ),
            ("1 files answered", Box::new(|a| drop(a.files.pop()))),
            (
                "3 files answered",
                Box::new(|a| {
                    let extra = a.files[0].clone();
                    a.files.push(pb::File {
                        path: "s9".into(),
                        ..extra
                    })
                }),
            ),
            (
                "no file \"s1\"",
                Box::new(|a| a.files[1].path = "s1x".into()),
            ),
            ("mode 0o644", Box::new(|a| a.files[0].mode = 0o644)),
            (
                "is not version 3 of csi/s1",
                Box::new(|a| a.files[1].contents[0] ^= 1),
            ),
            (
                "is not version 1 of csi/s0",
                Box::new(|a| a.files[0].contents.push(b'!')),
            ),
            (
                "1 object versions",
                Box::new(|a| drop(a.object_version.pop())),
            ),
            (
                "no object version for csi/s0",
                Box::new(|a| a.object_version[0].id = "csi/s00".into()),
            ),
            (
                "object csi/s1 has version \"2\"",
                Box::new(|a| a.object_version[1].version = "2".into()),
            ),
        ];
        for (want, spoil) in wrong {
            let mut a = answer(&expected);
            spoil(&mut a);
            let e = check_mount(&a, &expected).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("value"), "no value quoted: {e}");
        }
    }

    #[test]
    fn a_rotation_must_give_every_secret_a_higher_version() {
        let before = stored();
        let mut after = stored();
        after[0].version = 2;
        after[1].version = 4;
        assert!(moved_on(&after, &before).is_ok());
        after[1].version = 3;
        let e = moved_on(&after, &before).unwrap_err().to_string();
        assert_eq!(e, "writing csi/s1 gave version 3, not above 3");
    }

    #[test]
    fn the_counters_are_read_from_the_providers_own_series() {
        use crate::plugins::csi::login::Lookup;
        let m = crate::plugins::csi::CsiMetrics::new();
        assert_eq!(
            counters(&crate::plugins::health::render(&m.registry())),
            Counters::default()
        );
        for _ in 0..3 {
            m.observe_login("ok");
        }
        m.observe_login("refused");
        m.observe_lookup(Lookup::Hit);
        m.observe_lookup(Lookup::Hit);
        m.observe_lookup(Lookup::Miss);
        let text = crate::plugins::health::render(&m.registry());
        assert_eq!(
            counters(&text),
            Counters {
                logins: 3,
                cache_hits: 2
            },
            "{text}"
        );
    }

    /// A Mount the fake saw: the pod's uid and the versions it said it held.
    type Seen = (String, Vec<pb::ObjectVersion>);

    /// A provider that answers every Mount with the volume of `expected`,
    /// after `delay`, and plants faults: every `fail_every`-th Mount is
    /// UNAVAILABLE, every `stale_every`-th shows an older version.
    #[derive(Clone)]
    struct Fake {
        expected: Arc<Vec<Stored>>,
        delay: Duration,
        fail_every: Option<u64>,
        stale_every: Option<u64>,
        mounts: Arc<AtomicU64>,
        in_flight: Arc<AtomicU64>,
        most_in_flight: Arc<AtomicU64>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Fake {
        fn new(expected: Vec<Stored>) -> Fake {
            Fake {
                expected: Arc::new(expected),
                delay: Duration::ZERO,
                fail_every: None,
                stale_every: None,
                mounts: Arc::default(),
                in_flight: Arc::default(),
                most_in_flight: Arc::default(),
                seen: Arc::default(),
            }
        }
    }

    #[tonic::async_trait]
    impl CsiDriverProvider for Fake {
        async fn version(
            &self,
            _: Request<pb::VersionRequest>,
        ) -> Result<Response<pb::VersionResponse>, Status> {
            Ok(Response::new(pb::VersionResponse {
                version: "v1alpha1".into(),
                runtime_name: "fake".into(),
                runtime_version: "0.0.1".into(),
            }))
        }

        async fn mount(
            &self,
            req: Request<pb::MountRequest>,
        ) -> Result<Response<pb::MountResponse>, Status> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let n = self.mounts.fetch_add(1, Ordering::SeqCst) + 1;
            let req = req.into_inner();
            let a = MountAttributes::parse(&req.attributes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.seen
                .lock()
                .unwrap()
                .push((a.pod_uid, req.current_object_version));
            if self.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
                return Err(Status::unavailable("planted failure"));
            }
            let mut reply = answer(&self.expected);
            if self.stale_every.is_some_and(|k| n.is_multiple_of(k)) {
                reply.object_version[0].version = "0".into();
            }
            Ok(Response::new(reply))
        }
    }

    /// `fake` served on a socket in a fresh temp dir, until the guard drops.
    struct Served {
        path: PathBuf,
        _stop: tokio::sync::oneshot::Sender<()>,
        _dir: tempfile::TempDir,
    }

    fn serve(fake: Fake) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_FILE);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CsiDriverProviderServer::new(fake))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Served {
            path,
            _stop: stop,
            _dir: dir,
        }
    }

    fn pods(n: usize) -> Arc<Vec<Pod>> {
        let key = ClusterKey::generate().unwrap();
        let class = Class::new(&["http://127.0.0.1:1".to_string()], 2);
        Arc::new(make_pods(0, n, &key, &class).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_mounts_every_pod_once_at_most_c_at_a_time() {
        let fake = Fake {
            delay: Duration::from_millis(10),
            ..Fake::new(stored())
        };
        let served = serve(fake.clone());
        let socket = ProviderSocket::connect(&served.path).await.unwrap();
        assert_eq!(socket.version().await.unwrap(), "fake 0.0.1");
        let pods = pods(30);
        let expected: Expected = Arc::new(stored());
        let held = Arc::new(versions_of(&expected));
        let tally = round(&socket, &pods, 5, &held, &expected).await.unwrap();
        assert_eq!((tally.hist.len(), tally.errors), (30, 0));
        assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 5);
        // Six waves of 10 ms.
        assert!(tally.seconds >= 0.06, "{}", tally.seconds);
        let seen = fake.seen.lock().unwrap();
        let uids: BTreeSet<&String> = seen.iter().map(|(uid, _)| uid).collect();
        assert_eq!(uids.len(), 30, "every pod once");
        assert!(seen
            .iter()
            .all(|(_, held)| held.len() == 2 && held[1].id == "csi/s1" && held[1].version == "3"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_and_stale_mounts_are_errors_never_throughput() {
        let fake = Fake {
            fail_every: Some(5),
            stale_every: Some(7),
            ..Fake::new(stored())
        };
        let served = serve(fake);
        let socket = ProviderSocket::connect(&served.path).await.unwrap();
        let expected: Expected = Arc::new(stored());
        let tally = round(&socket, &pods(35), 1, &Arc::new(Vec::new()), &expected)
            .await
            .unwrap();
        // 7 refused (every 5th), 4 more stale (every 7th but the 35th,
        // refused already).
        assert_eq!((tally.hist.len(), tally.errors), (24, 11));
        let first = tally.first_error.unwrap();
        assert!(first.contains("Unavailable: planted failure"), "{first}");
        let r = row(Phase::Remount, 1, 35, 1, &Tally::new(), None, None);
        assert_eq!((r.mounts, r.logins), (0, None));
        assert!(verdict(&[r])
            .unwrap_err()
            .to_string()
            .contains("remount c=1"));
    }

    #[test]
    fn a_run_fails_on_any_error_even_with_mounts_done() {
        let mut tally = Tally::new();
        tally.hist.saturating_record(1500);
        tally.seconds = 0.5;
        let before = Some(Counters {
            logins: 10,
            cache_hits: 4,
        });
        let after = Some(Counters {
            logins: 30,
            cache_hits: 4,
        });
        let ok = row(Phase::FirstMount, 16, 20, 1, &tally, before, after);
        assert_eq!((ok.logins, ok.cache_hits), (Some(20), Some(0)));
        assert!((ok.mounts_per_s - 2.0).abs() < 1e-9, "{ok:?}");
        assert!(verdict(std::slice::from_ref(&ok)).is_ok());
        tally.errors = 1;
        tally.first_error = Some("pod app-0-1: no file \"s0\"".into());
        let bad = row(Phase::Rotation, 16, 20, 1, &tally, before, None);
        assert_eq!(bad.logins, None, "no counters after: unknown");
        let e = verdict(&[ok, bad]).unwrap_err().to_string();
        assert!(
            e.contains("rotation c=16: 1 of 2 mounts failed, first: pod app-0-1"),
            "{e}"
        );
    }

    #[test]
    fn the_table_has_a_line_per_row_and_says_what_ran() {
        let mut tally = Tally::new();
        tally.hist.saturating_record(2500);
        tally.seconds = 0.25;
        let counted = Some(Counters::default());
        let results = CsiResults {
            started_at: now(),
            finished_at: now(),
            plan: CsiPlan {
                rotation: true,
                ..plan()
            },
            socket: "/s/kstash.sock".into(),
            provider: "kstash 0.1.0".into(),
            leader: Some(2),
            pids: vec![],
            rows: vec![
                row(Phase::FirstMount, 4, 20, 1, &tally, counted, counted),
                row(Phase::Rotation, 4, 20, 2, &tally, None, None),
            ],
        };
        let md = markdown(&results);
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[0].starts_with("| phase | concurrency | mounts | mounts/s"),
            "{md}"
        );
        assert_eq!(
            lines[2],
            "| first-mount | 4 | 1 | 4 | 2.50 | 2.50 | 2.50 | 2.50 | 0 | 0 | 0.25 | 0 |"
        );
        assert!(lines[3].starts_with("| rotation | 4 | 1 |"), "{md}");
        assert!(lines[3].contains("| ? | ? |"), "{md}");
        assert!(md.contains("20 simulated pods"), "{md}");
        assert!(md.contains("3 secrets of 64 bytes"), "{md}");
        assert!(md.contains("node 2 led"), "{md}");
        assert!(md.contains("rotation: 2 round(s)"), "{md}");
    }

    #[test]
    fn the_default_out_dir_is_stamped_in_utc() {
        let dir = default_out_dir();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(dir.starts_with("bench-results"));
        assert!(name.starts_with("csi-") && name.ends_with('Z'), "{name}");
        assert_eq!(name.len(), "csi-20250102T030405Z".len(), "{name}");
    }

    #[test]
    fn long_socket_paths_are_refused_with_what_to_shorten() {
        assert!(check_socket_path(Path::new("/tmp/x/kstash.sock")).is_ok());
        let long = PathBuf::from(format!("/tmp/{}/kstash.sock", "x".repeat(120)));
        let e = check_socket_path(&long).unwrap_err().to_string();
        assert!(e.contains("--scratch-dir"), "{e}");
    }
}
