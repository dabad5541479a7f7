//! A KMS v2 client that behaves like kube-apiserver's envelope code
//! (`k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2`): it polls
//! Status and accepts only version `v2`, healthz exactly `ok` and a key id
//! of 1 to 1024 bytes; it makes a random 32-byte DEK seed and calls Encrypt
//! with a uid; it accepts an EncryptResponse only when its key id is the
//! Status key id, its key id and ciphertext are 1 to 1024 bytes, and its
//! annotations have fully qualified domain names as keys and keys + values
//! within 32 KiB; it stores the envelope (key id, ciphertext, annotations)
//! and later Decrypts with exactly those. A key id that changes between
//! polls is a rotation, which the apiserver answers with a new seed.
//!
//! It connects over the Unix socket with tonic, as the apiserver's gRPC
//! client does, with a per-call timeout.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use hyper_util::rt::TokioIo;
use kstash::plugins::kms::pb;
use pb::key_management_service_client::KeyManagementServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// kube-apiserver's limits.
pub const MAX_KEY_ID: usize = 1024;
pub const MAX_CIPHERTEXT: usize = 1024;
pub const MAX_ANNOTATIONS: usize = 32 * 1024;

/// The apiserver's default KMS call timeout is 3 s.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What the apiserver stores next to a Secret encrypted under a DEK: the
/// envelope, and (only in this test) the seed, to compare.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    pub annotations: HashMap<String, Vec<u8>>,
    pub seed: Vec<u8>,
}

/// The apiserver's side of one KMS v2 plugin.
pub struct ApiserverKms {
    client: KeyManagementServiceClient<Channel>,
    path: PathBuf,
    /// The key id of the last healthy Status.
    key_id: Option<String>,
    /// Times the key id changed between healthy polls.
    rotations: usize,
}

/// Is `name` a fully qualified domain name as Kubernetes checks it: two or
/// more DNS-1123 labels, at most 253 characters.
pub fn is_fqdn(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl ApiserverKms {
    /// Connect to the plugin's socket at `path`.
    pub async fn connect(path: &Path) -> anyhow::Result<ApiserverKms> {
        let socket = path.to_path_buf();
        let channel = Endpoint::from_static("http://[::]:50051")
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .with_context(|| format!("connecting to the KMS socket {}", path.display()))?;
        Ok(ApiserverKms {
            client: KeyManagementServiceClient::new(channel),
            path: path.to_path_buf(),
            key_id: None,
            rotations: 0,
        })
    }

    /// The raw Status call.
    pub async fn status(&mut self) -> Result<pb::StatusResponse, tonic::Status> {
        self.client
            .status(pb::StatusRequest {})
            .await
            .map(|r| r.into_inner())
    }

    /// One poll as the apiserver's health check does it: the key id of a
    /// healthy plugin, or why it is not healthy. Counts rotations.
    pub async fn poll_status(&mut self) -> anyhow::Result<String> {
        let s = self
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("Status failed: {:?}: {}", e.code(), e.message()))?;
        ensure!(s.version == "v2", "Status version {:?}, not v2", s.version);
        ensure!(s.healthz == "ok", "Status healthz {:?}, not ok", s.healthz);
        ensure!(
            !s.key_id.is_empty() && s.key_id.len() <= MAX_KEY_ID,
            "Status key id is {} bytes",
            s.key_id.len()
        );
        if self.key_id.as_ref().is_some_and(|k| *k != s.key_id) {
            self.rotations += 1;
        }
        self.key_id = Some(s.key_id.clone());
        Ok(s.key_id)
    }

    /// Poll until Status is healthy (every 100 ms, at most `timeout`).
    pub async fn wait_healthy(&mut self, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.poll_status().await {
                Ok(key_id) => return key_id,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("the KMS plugin was not healthy within {timeout:?}: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Poll until Status fails with `code` (every 100 ms, at most
    /// `timeout`); returns its message.
    pub async fn wait_failing(&mut self, code: tonic::Code, timeout: Duration) -> String {
        self.wait_failing_because(code, "", timeout).await
    }

    /// Poll until Status fails with `code` and a message containing `why`
    /// (every 100 ms, at most `timeout`); returns the message.
    pub async fn wait_failing_because(
        &mut self,
        code: tonic::Code,
        why: &str,
        timeout: Duration,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.status().await {
                Err(e) if e.code() == code && e.message().contains(why) => {
                    return e.message().to_string()
                }
                other => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "Status did not fail with {code:?} ({why:?}) within {timeout:?}: last {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Poll until the key id differs from `old` (every 100 ms, at most
    /// `timeout`): a rotation, seen as the apiserver sees it.
    pub async fn wait_rotation(&mut self, old: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(key_id) = self.poll_status().await {
                if key_id != old {
                    return key_id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no rotation seen within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether a key id change was seen between healthy polls.
    pub fn rotation_seen(&self) -> bool {
        self.rotations > 0
    }

    /// How many key id changes were seen.
    pub fn rotations(&self) -> usize {
        self.rotations
    }

    /// The raw Encrypt call.
    pub async fn encrypt_raw(
        &mut self,
        plaintext: Vec<u8>,
    ) -> Result<pb::EncryptResponse, tonic::Status> {
        self.client
            .encrypt(pb::EncryptRequest {
                plaintext,
                uid: uid(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The raw Decrypt call.
    pub async fn decrypt_raw(
        &mut self,
        key_id: &str,
        ciphertext: Vec<u8>,
        annotations: HashMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, tonic::Status> {
        self.client
            .decrypt(pb::DecryptRequest {
                ciphertext,
                uid: uid(),
                key_id: key_id.into(),
                annotations,
            })
            .await
            .map(|r| r.into_inner().plaintext)
    }

    /// What the apiserver does for a new DEK: poll Status, make a random
    /// 32-byte seed, Encrypt it, and check the reply before storing it.
    pub async fn encrypt_seed(&mut self) -> anyhow::Result<Envelope> {
        let status_key_id = self.poll_status().await?;
        let seed: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
        let resp = self
            .encrypt_raw(seed.clone())
            .await
            .map_err(|e| anyhow::anyhow!("Encrypt failed: {:?}: {}", e.code(), e.message()))?;
        validate_encrypt_response(&resp)?;
        if resp.key_id != status_key_id {
            bail!(
                "Encrypt's key id {:?} is not Status's {:?}: the apiserver refuses the rotation",
                resp.key_id,
                status_key_id
            );
        }
        Ok(Envelope {
            key_id: resp.key_id,
            ciphertext: resp.ciphertext,
            annotations: resp.annotations,
            seed,
        })
    }

    /// Decrypt a stored envelope: its seed.
    pub async fn decrypt(&mut self, envelope: &Envelope) -> anyhow::Result<Vec<u8>> {
        self.decrypt_raw(
            &envelope.key_id,
            envelope.ciphertext.clone(),
            envelope.annotations.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("Decrypt failed: {:?}: {}", e.code(), e.message()))
    }

    /// The socket this client connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The checks the apiserver makes of an EncryptResponse before it stores
/// an envelope (`ValidateEncryptedObject`).
pub fn validate_encrypt_response(r: &pb::EncryptResponse) -> anyhow::Result<()> {
    ensure!(
        !r.key_id.is_empty() && r.key_id.len() <= MAX_KEY_ID,
        "key id is {} bytes",
        r.key_id.len()
    );
    ensure!(
        !r.ciphertext.is_empty() && r.ciphertext.len() <= MAX_CIPHERTEXT,
        "ciphertext is {} bytes",
        r.ciphertext.len()
    );
    let mut size = 0;
    for (k, v) in &r.annotations {
        ensure!(
            is_fqdn(k),
            "annotation key {k:?} is not a fully qualified domain name"
        );
        size += k.len() + v.len();
    }
    ensure!(size <= MAX_ANNOTATIONS, "annotations are {size} bytes");
    Ok(())
}

/// A fresh uid per call, as the apiserver makes them.
fn uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..])
    )
}

#[test]
fn fqdns_are_checked_as_kubernetes_does() {
    for good in ["kms.kstash.io", "a.b", "x-1.example.com"] {
        assert!(is_fqdn(good), "{good}");
    }
    for bad in ["kstash", "", "a..b", "-a.b", "A.b", "a_b.c", ".a.b"] {
        assert!(!is_fqdn(bad), "{bad}");
    }
}
