//! Snapshot restore of a standalone node, end to end with the real binary:
//! the hint `operator snapshot restore` prints is a command line that
//! works as printed.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::Command;

use serde_json::{json, Value};

use crate::procs::{free_ports, init, login, ProcNode, BIN};

/// Run the `kstash` CLI with `args`; (exit code, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KSTASH_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run kstash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A standalone (no cluster port) plaintext node on loopback.
fn standalone(id: u64, api_addr: SocketAddr, root: &std::path::Path, name: &str) -> ProcNode {
    let data_dir = root.join(name);
    let args: Vec<OsString> = vec![
        "server".into(),
        "--tls-disable".into(),
        "--node-id".into(),
        id.to_string().into(),
        "--api-addr".into(),
        api_addr.to_string().into(),
        "--data-dir".into(),
        data_dir.clone().into(),
    ];
    ProcNode::new(
        id,
        api_addr,
        data_dir,
        root.join(format!("{name}.log")),
        args,
    )
}

/// Steps:
/// 1. a standalone node (no `--cluster-addr`): init 1 of 1 with a
///    gatekeeper token, unseal, write a secret;
/// 2. `operator snapshot save FILE` with the gatekeeper token; stop the node;
/// 3. `operator snapshot restore FILE --data-dir NEW --node-id 1 --api-addr
///    A` (no `--cluster-addr`) into an empty data dir: its hint names no
///    `--bootstrap` to use, and a `kstash server …` line;
/// 4. `--bootstrap` is refused by a node without `--cluster-addr` (why the
///    hint must not suggest it);
/// 5. start the node with the printed command line (plus `--tls-disable`,
///    as the hint says for loopback): initialised and sealed; unseal with
///    the original key; log in; read the secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_node_restores_as_the_hint_says() {
    let root = tempfile::Builder::new()
        .prefix("t79-restore-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let ports = free_ports(2);
    let first_addr: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let restored_addr: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();

    tracing::info!("--- step 1: a standalone node; init, unseal, write");
    let mut first = standalone(1, first_addr, root.path(), "first");
    first.spawn().unwrap();
    first.wait_up().await;
    let init = init(&first.api, 1, 1, 1).await;
    let key = init["unseal_keys"][0].clone();
    let (code, body) = first
        .api
        .post("/v1/sys/unseal", None, json!({ "key": key }))
        .await;
    assert_eq!((code, &body["sealed"]), (200, &json!(false)), "{body}");
    let token = login(&first.api, &init["access_key"], "app").await;
    let (code, body) = first
        .api
        .put(
            "/v1/kv/db",
            Some(&token),
            json!({"value": "restored-value"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step 2: save a snapshot; stop the node");
    let file = root.path().join("saved.snap");
    let file_s = file.to_str().unwrap();
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap();
    let addr = format!("http://{first_addr}");
    let (code, out, err) = cli(
        &["--address", &addr, "operator", "snapshot", "save", file_s],
        &[("KSTASH_GATEKEEPER_TOKEN", gk)],
    );
    assert_eq!(code, 0, "{out}{err}");
    first.kill();

    tracing::info!("--- step 3: restore offline, standalone");
    let dir = root.path().join("restored");
    let dir_s = dir.to_str().unwrap();
    let api_s = restored_addr.to_string();
    let (code, out, err) = cli(
        &[
            "operator",
            "snapshot",
            "restore",
            file_s,
            "--data-dir",
            dir_s,
            "--node-id",
            "1",
            "--api-addr",
            &api_s,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Restored snapshot"), "{out}");
    assert!(
        !out.contains("with --bootstrap"),
        "a standalone node is not told to use --bootstrap: {out}"
    );
    let command = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("kstash server "))
        .unwrap_or_else(|| panic!("the hint gives a `kstash server` command line: {out}"));
    let mut args: Vec<OsString> = vec!["server".into()];
    args.extend(command.split_whitespace().map(OsString::from));
    assert!(
        !args
            .iter()
            .any(|a| a == "--bootstrap" || a == "--cluster-addr"),
        "{command}"
    );

    tracing::info!("--- step 4: --bootstrap without --cluster-addr is refused");
    let (code, out, err) = cli(
        &[
            "server",
            "--tls-disable",
            "--data-dir",
            dir_s,
            "--node-id",
            "1",
            "--api-addr",
            &api_s,
            "--bootstrap",
        ],
        &[],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("--bootstrap needs --cluster-addr"), "{err}");

    tracing::info!("--- step 5: start it as printed; unseal; read the secret");
    args.push("--tls-disable".into());
    let mut restored = ProcNode::new(
        1,
        restored_addr,
        dir.clone(),
        root.path().join("restored.log"),
        args,
    );
    restored.spawn().unwrap();
    let st: Value = restored.wait_up().await;
    assert_eq!(
        (&st["initialized"], &st["sealed"]),
        (&json!(true), &json!(true)),
        "{st}"
    );
    let (code, body) = restored
        .api
        .post("/v1/sys/unseal", None, json!({ "key": key }))
        .await;
    assert_eq!((code, &body["sealed"]), (200, &json!(false)), "{body}");
    let token = login(&restored.api, &init["access_key"], "app").await;
    let (code, body) = restored.api.get("/v1/kv/db", Some(&token)).await;
    assert_eq!(
        (code, &body["value"]),
        (200, &json!("restored-value")),
        "{body}"
    );
    restored.kill();
}
