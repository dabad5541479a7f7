//! The data dir is private: created 0700 with every file 0600 (Raft log,
//! snapshots, node-id), and a data dir that group or others can reach is
//! refused at start unless `--allow-insecure-data-dir` turns the refusal
//! into a warning.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestNode;

/// Every entry under `dir` (itself included) whose mode has group or
/// other bits.
fn loose_entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            out.push(format!("{} {:o}", path.display(), mode & 0o777));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
    }
    out
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn every_file_kstash_writes_is_private() {
    // Steps: a node whose data dir kstash creates (below a fresh temp dir,
    // with a low snapshot threshold); init, write enough for snapshots;
    // every directory under the data dir is 0700 and every file 0600.
    let root = tempfile::Builder::new()
        .prefix("private-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = root.path().join("made/by/kstash");
    let d = dir.clone();
    let n = TestNode::start_with(move |a| {
        a.data_dir = Some(d);
        a.snapshot_threshold = Some(10);
    })
    .await;
    let init = n.init_unsealed(1, 1).await;
    let token = n
        .login(&init["access_key"], "default", &["admin"], None)
        .await;
    for i in 0..40 {
        let (code, body) = n
            .http
            .put(
                &format!("/v1/kv/app/s{i}"),
                Some(&token),
                json!({"value": "v"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    assert!(dir.join("snapshots").is_dir(), "a snapshot was taken");
    assert!(
        count_files(&dir) >= 4,
        "node-id, the sled files, a snapshot"
    );
    assert_eq!(loose_entries(&dir), Vec::<String>::new());
    n.server.shutdown().await.unwrap();
}

/// Run `kstash server` on a plaintext loopback port over `data_dir` with
/// `extra` flags for up to `wait`; returns its exit status (None: still
/// running, then stopped) and its stderr.
fn run_server(data_dir: &Path, extra: &[&str], wait: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kstash"))
        .args(["server", "--tls-disable", "--api-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if start.elapsed() > wait {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

#[test]
fn a_data_dir_others_can_read_is_refused_unless_allowed() {
    // Steps: a data dir made 0755 by someone else; `kstash server` refuses
    // to start and says why and how to fix it; with
    // --allow-insecure-data-dir it starts with a warning; a file in a
    // private data dir that others can read is refused as well.
    let root = tempfile::Builder::new()
        .prefix("loose-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (status, err) = run_server(&dir, &[], Duration::from_secs(20));
    assert!(
        status.is_some_and(|c| c != 0),
        "must refuse: {status:?} {err}"
    );
    assert!(
        err.contains("not private") && err.contains("mode 755"),
        "{err}"
    );
    assert!(err.contains("chmod -R go-rwx"), "says how to fix it: {err}");
    assert_eq!(count_files(&dir), 0, "a refused start writes nothing");

    let (status, err) = run_server(&dir, &["--allow-insecure-data-dir"], Duration::from_secs(3));
    assert_eq!(status, None, "allowed explicitly, it serves: {err}");
    assert!(err.contains("not private"), "with a warning: {err}");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.join("node-id"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, err) = run_server(&dir, &[], Duration::from_secs(20));
    assert!(
        status.is_some_and(|c| c != 0),
        "must refuse: {status:?} {err}"
    );
    assert!(err.contains("node-id is mode 644"), "{err}");
}
