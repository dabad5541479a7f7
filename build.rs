//! Compiles `proto/kstash/v1/*.proto` (the client API),
//! `proto/kstash/cluster/v1/*.proto` (the internal cluster port) and
//! `proto/k8s/kms/v2/*.proto` (the Kubernetes KMS v2 plugin API) and
//! `proto/k8s/csi/v1alpha1/*.proto` (the Secrets Store CSI provider API) into Rust
//! (messages, tonic clients and servers). Parsing is done by `protox`, in
//! pure Rust, so the build needs no system `protoc`.
//!
//! It also writes `$OUT_DIR/kstash_v1_descriptor.bin`: the encoded file
//! descriptor set of the client API alone (never the cluster port's proto),
//! which gRPC server reflection serves (`src/api/grpc.rs`).

use std::path::{Path, PathBuf};

/// Where the protos live, relative to the crate root.
const PROTO_ROOT: &str = "proto";

/// Messages that carry secrets (unseal keys, gatekeeper tokens, the access
/// key, access tokens, ServiceAccount tokens, secret values, payloads of
/// named keys). They get no derived `Debug`;
/// `src/api/grpc.rs` implements one that prints `<redacted>`.
const SECRET_BEARING: &[&str] = &[
    ".kstash.v1.InitResponse",
    ".kstash.v1.UnsealRequest",
    ".kstash.v1.UnsealResponse",
    ".kstash.v1.GatekeeperAuth",
    ".kstash.v1.SysResponse",
    ".kstash.v1.RekeyRequest",
    ".kstash.v1.RekeyResponse",
    ".kstash.v1.MintGatekeeperTokensRequest",
    ".kstash.v1.MintGatekeeperTokensResponse",
    ".kstash.v1.KeysRequest",
    ".kstash.v1.RenewGatekeeperTokenRequest",
    ".kstash.v1.RevokeGatekeeperTokenRequest",
    ".kstash.v1.LoginRequest",
    ".kstash.v1.LoginResponse",
    ".kstash.v1.RevokeTokenRequest",
    // A Kubernetes ServiceAccount token (`jwt`).
    ".kstash.v1.KubernetesLoginRequest",
    ".kstash.v1.PutSecretRequest",
    ".kstash.v1.SecretResponse",
    // The string an operator HMACs: a token or key they hold.
    ".kstash.v1.AuditHashRequest",
    // The replacement gatekeeper token of a snapshot save.
    ".kstash.v1.SnapshotFile",
    // A payload encrypted or decrypted under a named key (a KMS DEK seed).
    ".kstash.v1.EncryptRequest",
    ".kstash.v1.DecryptResponse",
    // A DEK seed of kube-apiserver (KMS v2): `src/plugins/kms/` prints
    // only its length.
    ".v2.EncryptRequest",
    ".v2.DecryptResponse",
    // The CSI driver's Mount: the pod's ServiceAccount tokens and the
    // nodePublishSecretRef data (`attributes`, `secrets`), and the files of
    // the volume (`files`, `contents`); `src/plugins/csi/` prints none of it.
    ".v1alpha1.MountRequest",
    ".v1alpha1.MountResponse",
    ".v1alpha1.File",
    // Carries an unseal key or a gatekeeper token in `Unseal`;
    // `src/raft/cluster.rs` prints only its length.
    ".kstash.cluster.v1.Envelope",
];

/// The proto packages to compile, as directories under [`PROTO_ROOT`].
const PACKAGES: &[&[&str]] = &[
    &["kstash", "v1"],
    &["kstash", "cluster", "v1"],
    &["k8s", "kms", "v2"],
    &["k8s", "csi", "v1alpha1"],
];

/// The public package: the only one server reflection describes.
const PUBLIC_PACKAGE: &[&str] = &["kstash", "v1"];

/// The file under `OUT_DIR` that holds [`PUBLIC_PACKAGE`]'s descriptor set.
const PUBLIC_DESCRIPTOR: &str = "kstash_v1_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut protos = Vec::new();
    for package in PACKAGES {
        protos.extend(proto_files(&package_dir(package))?);
    }
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile(&protos, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(SECRET_BEARING)
        .compile_fds(fds)?;

    // Reflection: the public protos only, with their comments (what
    // `grpcurl describe` shows), encoded once at build time.
    let public = proto_files(&package_dir(PUBLIC_PACKAGE))?;
    let encoded = protox::Compiler::new([PROTO_ROOT])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(&public)?
        .encode_file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join(PUBLIC_DESCRIPTOR);
    std::fs::write(out, encoded)?;
    Ok(())
}

/// A package's directory under [`PROTO_ROOT`].
fn package_dir(package: &[&str]) -> PathBuf {
    package
        .iter()
        .fold(PathBuf::from(PROTO_ROOT), |dir, part| dir.join(part))
}

/// Every `.proto` file directly in `dir`, sorted for a stable build.
fn proto_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
