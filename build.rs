//! Compiles `proto/kstash/v1/*.proto` (the client API) and
//! `proto/kstash/cluster/v1/*.proto` (the internal cluster port) into Rust
//! (messages, tonic clients and servers). Parsing is done by `protox`, in
//! pure Rust, so the build needs no system `protoc`.

use std::path::{Path, PathBuf};

/// Where the protos live, relative to the crate root.
const PROTO_ROOT: &str = "proto";

/// Messages that carry secrets (unseal keys, gatekeeper tokens, the access
/// key, access tokens, secret values). They get no derived `Debug`;
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
    ".kstash.v1.PutSecretRequest",
    ".kstash.v1.SecretResponse",
    // Carries an unseal key or a gatekeeper token in `Unseal`;
    // `src/raft/cluster.rs` prints only its length.
    ".kstash.cluster.v1.Envelope",
];

/// The proto packages to compile, as directories under [`PROTO_ROOT`].
const PACKAGES: &[&[&str]] = &[&["kstash", "v1"], &["kstash", "cluster", "v1"]];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut protos = Vec::new();
    for package in PACKAGES {
        let dir = package
            .iter()
            .fold(PathBuf::from(PROTO_ROOT), |dir, part| dir.join(part));
        protos.extend(proto_files(&dir)?);
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
    Ok(())
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
