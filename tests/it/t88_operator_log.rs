//! What the default log tells an operator: three real `kstash server`
//! processes started without `--log` (and without `RUST_LOG`) log kstash's
//! own events at info, once each, and nothing of openraft below `warn`, and
//! never a secret.

use std::time::Duration;

use serde_json::json;

use crate::procs::{self, ProcCluster};

/// Longest wait for anything that should take a few election timeouts.
const SETTLE: Duration = Duration::from_secs(20);

/// Steps: start three nodes with the default log filter (node 1
/// bootstraps, 2 and 3 join) → init through node 1, unseal every node with
/// a threshold of keys → write a secret → rotate the encryption key → read
/// every node's log: no line comes from openraft at INFO, DEBUG or TRACE;
/// node 1 says it listens (with its storage), bootstrapped, became the
/// leader, was initialised, unsealed and rotated the key; nodes 2 and 3 say
/// they joined, follow node 1 and were unsealed; "became the leader" comes
/// once; no unseal key, access key, token or value appears.
#[tokio::test]
async fn the_default_log_says_what_the_node_does_without_openraft_chatter() {
    let cluster = ProcCluster::start_with_log("oplog", &[], None).await;
    let api = cluster.api(1);

    eprintln!("--- step: init, unseal, write, rotate");
    let init = procs::init(&api, 3, 2, 1).await;
    let keys: Vec<_> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    for key in &keys {
        let (code, body) = api
            .post("/v1/sys/unseal", None, json!({ "key": key }))
            .await;
        assert_eq!(code, 200, "{body}");
    }
    cluster.wait_voters(SETTLE).await;
    let token = procs::login(&api, &init["access_key"], "default").await;
    let value = "log-probe-value-5e1f";
    let (code, body) = api
        .put("/v1/kv/app/db", Some(&token), json!({ "value": value }))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = api
        .post("/v1/sys/rotate", None, json!({ "keys": keys }))
        .await;
    assert_eq!(code, 200, "{body}");
    // Followers log their unseal and leader within a moment.
    procs::wait_for(
        SETTLE,
        Duration::from_millis(100),
        "every node logged its unseal",
        || {
            let done =
                (1..=3).all(|id| log_of(&cluster, id).contains("kstash::service::sys: unsealed"));
            async move { done.then_some(()) }
        },
    )
    .await;

    eprintln!("--- step: read the logs");
    let secrets: Vec<String> = init["unseal_keys"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&init["access_key"], &init["gatekeeper_tokens"][0]])
        .map(|s| s.as_str().unwrap().to_string())
        .chain([token.clone(), value.to_string()])
        .collect();
    for id in 1..=3u64 {
        let log = log_of(&cluster, id);
        for line in log.lines() {
            for level in ["INFO", "DEBUG", "TRACE"] {
                assert!(
                    !line.contains(&format!(" {level} openraft")),
                    "node {id} logs openraft's internals by default: {line}"
                );
            }
            for secret in &secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "node {id} logged a secret: {line}"
                );
            }
        }
        let mut expected = vec![
            "kstash listening",
            "storage=",
            "kstash::service::sys: unsealed",
        ];
        if id == 1 {
            expected.extend([
                "bootstrapped a new cluster",
                "became the leader",
                "initialized",
                "encryption key rotated",
            ]);
        } else {
            expected.extend(["joined the cluster", "following the leader, node 1"]);
        }
        for event in expected {
            assert!(log.contains(event), "node {id} logs {event:?}:\n{log}");
        }
        let leading = log.matches("became the leader").count();
        assert_eq!(leading, usize::from(id == 1), "node {id}:\n{log}");
    }
}

fn log_of(cluster: &ProcCluster, id: u64) -> String {
    std::fs::read_to_string(&cluster.node(id).log).unwrap_or_default()
}

/// Steps: `jepsen/run --help` names `--build-only` and the progress
/// interval → with stub `docker` (the image is there) and stub `cargo`
/// (3 s, silent) on PATH, `jepsen/run --build-only --quiet 5` says what it
/// builds, says it is still at it every second, says when it is done, and
/// exits 0 without running anything → shellcheck (when installed) finds
/// nothing in jepsen/run and cluster/build.
#[test]
fn jepsen_run_shows_progress_while_it_builds() {
    use std::process::Command;
    let repo = env!("CARGO_MANIFEST_DIR");
    let run = format!("{repo}/jepsen/run");
    let help = Command::new("bash")
        .args([&run, "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["--build-only", "KSTASH_PROGRESS_EVERY", "--quiet N"] {
        assert!(help.contains(needle), "--help names {needle}:\n{help}");
    }

    let stubs = tempfile::Builder::new()
        .prefix("jepsen-run-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    for (name, body) in [("docker", "exit 0"), ("cargo", "sleep 3")] {
        let path = stubs.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let path = format!(
        "{}:{}",
        stubs.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("timeout")
        .args(["60", "bash", &run, "--build-only", "--quiet", "5"])
        .env("PATH", path)
        .env("KSTASH_PROGRESS_EVERY", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for needle in [
        "image kstash:dev is there",
        "building the jepsen harness",
        "still building the jepsen harness",
        "done in",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("running: kstash-jepsen"), "{stderr}");

    match Command::new("shellcheck")
        .current_dir(repo)
        .args(["-x", "jepsen/run", "cluster/build"])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => eprintln!("shellcheck is not installed ({e}): skipped"),
    }
}
