//! `kstash bench compare` through the real binary: it starts three kstash
//! servers (and, built with the `etcd` feature, three etcd members), loads
//! them at two concurrencies, stops them and writes its files.
//!
//! Steps (each test):
//! 1. run `kstash bench compare --targets … --concurrency 1,4 --workloads
//!    put,get --runs 1 --duration 1s --warmup 0s --keys 200 --out <tmp>
//!    --format json`, bounded;
//! 2. stdout is the results object, and `results.json` holds the same;
//! 3. every point of every store completed operations without errors, and
//!    the table has a row per point (with a ratio when both stores ran);
//! 4. `table.md`, `plot.svg` (both panels, every series) and one log per
//!    member exist;
//! 5. no member is left running: every process id it reports is gone.
//!
//! And the failures: a node that cannot start ends the command with its
//! log, and stops the nodes already running; a missing etcd binary is
//! named before anything starts.
//!
//! `kstash bench kms --local-cluster` gets a short end-to-end run of its
//! own (both KMS topologies, every workload and the burst), and so does
//! `kstash bench csi` (the mount storm: every phase at two concurrencies).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kstash");

/// Longest a short comparison may take, per store.
const PER_STORE: Duration = Duration::from_secs(120);

/// What one run of the command left behind.
struct Compared {
    results: Value,
    stderr: String,
    out: tempfile::TempDir,
}

/// Run `kstash bench compare` for `targets` with 1 s points into a fresh
/// directory; panics (with its stderr) when it fails or overruns.
fn compare(targets: &str) -> Compared {
    let out = tempfile::Builder::new()
        .prefix("t32-compare-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = Command::new(BIN)
        .args(["bench", "compare", "--targets", targets])
        .args([
            "--concurrency",
            "1,4",
            "--workloads",
            "put,get",
            "--runs",
            "1",
        ])
        .args(["--duration", "1s", "--warmup", "0s", "--keys", "200"])
        .args(["--format", "json", "--out"])
        .arg(out.path().join("results"))
        .arg("--scratch-dir")
        .arg(out.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("kstash bench compare starts");
    let limit = PER_STORE * targets.split(',').count() as u32;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kstash bench compare ran over {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let results: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    Compared {
        results,
        stderr,
        out,
    }
}

/// Whether process `pid` still runs a kstash or etcd program (a pid reused
/// by anything else does not count).
fn still_running(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
        let cmd = String::from_utf8_lossy(&cmd);
        cmd.contains("kstash") || cmd.contains("etcd")
    })
}

/// Steps 2 to 5 for a run over `stores`.
fn check(run: &Compared, stores: &[&str]) {
    let results = &run.results;
    let dir = run.out.path().join("results");
    eprintln!("--- step 2: stdout is results.json");
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(&file, results);

    eprintln!("--- step 3: every point did work; a row per point");
    let ran: Vec<&str> = results["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["store"].as_str().unwrap())
        .collect();
    assert_eq!(ran, stores, "{results}");
    for store in results["stores"].as_array().unwrap() {
        let points = store["points"].as_array().unwrap();
        assert_eq!(points.len(), 4, "put and get at 1 and 4 clients: {store}");
        for point in points {
            assert!(
                point["median"]["ops_per_s"].as_f64().unwrap() > 0.0,
                "{point}"
            );
            let runs = point["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 1, "{point}");
            assert!(runs[0]["ops"].as_u64().unwrap() > 0, "{point}");
            assert_eq!(runs[0]["errors"], 0, "{point}");
        }
    }
    let table = results["table"].as_array().unwrap();
    assert_eq!(table.len(), 4, "{results}");
    let both = stores.len() == 2;
    for row in table {
        assert_eq!(row["ratio"].is_number(), both, "{row}");
    }
    assert!(
        run.stderr.contains("kstash put c=4 run 1/1"),
        "a live line per run: {}",
        run.stderr
    );

    eprintln!("--- step 4: table.md, plot.svg and the logs");
    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(
        md.starts_with("| workload | clients | kstash ops/s"),
        "{md}"
    );
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| get |")).count(),
        2,
        "{md}"
    );
    let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    assert!(svg.contains("Throughput (ops/s)") && svg.contains("p99 latency (ms)"));
    for store in stores {
        for workload in ["put", "get"] {
            let name = format!("{store} {workload}");
            assert!(svg.contains(&name), "{name} missing from plot.svg");
        }
    }
    let logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs.len(), 3 * stores.len(), "{logs:?}");
    let node_1 = std::fs::read_to_string(dir.join("logs/kstash-node-1.log")).unwrap();
    assert!(
        node_1.contains("--bootstrap"),
        "the command line heads the log"
    );

    eprintln!("--- step 5: no member is left running");
    for store in results["stores"].as_array().unwrap() {
        let pids = store["pids"].as_array().unwrap();
        assert_eq!(pids.len(), 3, "{store}");
        for pid in pids {
            let pid = pid.as_u64().unwrap();
            assert!(!still_running(pid), "process {pid} of {store} still runs");
        }
    }
    assert_no_scratch_left(run.out.path());
}

/// The members' data dirs (`kstash-bench-*` under the scratch dir) are gone.
fn assert_no_scratch_left(scratch: &Path) {
    let left: Vec<String> = std::fs::read_dir(scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kstash-bench-"))
        .collect();
    assert!(left.is_empty(), "scratch dirs left behind: {left:?}");
}

#[test]
fn compare_runs_kstash_alone_and_leaves_nothing_running() {
    eprintln!("--- step 1: kstash bench compare --targets kstash");
    let run = compare("kstash");
    check(&run, &["kstash"]);
}

/// The same with etcd as well (skipped, with a notice, where no etcd binary
/// is installed; with CI=true a missing etcd fails).
#[cfg(feature = "etcd")]
#[test]
fn compare_runs_kstash_then_etcd() {
    if let Err(why) = kstash::storage::etcd::testing::find_binary() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no etcd binary: set ETCD_BIN or install etcd-server ({why})"
        );
        eprintln!("note: skipping this etcd test: no etcd binary ({why})");
        return;
    }
    eprintln!("--- step 1: kstash bench compare --targets kstash,etcd");
    let run = compare("kstash,etcd");
    check(&run, &["kstash", "etcd"]);
}

/// Every process whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid = e.ok()?.file_name().to_string_lossy().into_owned();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

#[test]
fn a_node_that_cannot_start_ends_the_command_and_stops_the_others() {
    eprintln!("--- step 1: a kstash-bin whose joining nodes fail");
    let dir = tempfile::Builder::new()
        .prefix("t32-failing-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let script = dir.path().join("kstash-fails-to-join");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--join*) echo 'planted failure: cannot bind' >&2; exit 7;; esac\nexec {BIN} \"$@\"\n"
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let out = Command::new(BIN)
        .args(["bench", "compare", "--targets", "kstash", "--runs", "1"])
        .arg("--kstash-bin")
        .arg(&script)
        .arg("--out")
        .arg(dir.path().join("results"))
        .arg("--scratch-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    eprintln!("--- step 2: exit 1 naming the node, with its log");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Nodes 2 and 3 both fail; whichever is seen first is named.
    assert!(
        stderr.contains("kstash-node-2 exited") || stderr.contains("kstash-node-3 exited"),
        "{stderr}"
    );
    assert!(stderr.contains("planted failure: cannot bind"), "{stderr}");

    eprintln!("--- step 3: node 1 was stopped, its data dir removed");
    let left = processes_mentioning(&dir.path().to_string_lossy());
    assert!(left.is_empty(), "still running: {left:?}");
    assert_no_scratch_left(dir.path());
}

#[test]
fn a_missing_etcd_is_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["bench", "compare", "--targets", "kstash,etcd"])
        .args(["--etcd-bin", "/nonexistent/etcd", "--out"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let why = if cfg!(feature = "etcd") {
        "--etcd-bin /nonexistent/etcd: no such file"
    } else {
        "--features etcd"
    };
    assert!(stderr.contains(why), "{stderr}");
    assert!(!stderr.contains("starting"), "nothing started: {stderr}");
    assert!(!dir.path().join("logs").exists());
}

/// `kstash bench kms --local-cluster` end to end, short.
///
/// Steps:
/// 1. run `kstash bench kms --local-cluster --duration 300ms --warmup 0s
///    --burst 50 --ciphertexts 20 --format json` into a fresh dir, bounded;
/// 2. stdout is the results object, and `results.json` holds the same;
/// 3. a row per topology (stacked, plugin) × workload (status, encrypt,
///    decrypt at 1 and 16 clients; the burst), each with calls and no
///    error, and `table.md` lists them all;
/// 4. a log per node and one of the plugin exist;
/// 5. nothing is left: every process id it reports is gone, and so are the
///    sockets, the token file and the data dirs.
#[test]
fn kms_bench_measures_both_topologies_and_leaves_nothing_running() {
    eprintln!("--- step 1: kstash bench kms --local-cluster");
    // A short scratch dir under /tmp: a socket path has at most 107 bytes.
    let scratch = tempfile::Builder::new()
        .prefix("t32-kms-")
        .tempdir()
        .unwrap();
    let out = tempfile::Builder::new()
        .prefix("t32-kms-out-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let results_dir = out.path().join("results");
    let mut child = Command::new(BIN)
        .args(["--format", "json", "bench", "kms", "--local-cluster"])
        .args(["--duration", "300ms", "--warmup", "0s"])
        .args(["--burst", "50", "--ciphertexts", "20", "--out"])
        .arg(&results_dir)
        .arg("--scratch-dir")
        .arg(scratch.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("kstash bench kms starts");
    let deadline = Instant::now() + PER_STORE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kstash bench kms ran over {PER_STORE:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{status}; stderr:\n{stderr}");

    eprintln!("--- step 2: stdout is results.json");
    let results: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let file: Value =
        serde_json::from_slice(&std::fs::read(results_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(file, results);

    eprintln!("--- step 3: every topology × workload did calls, without errors");
    let rows = results["rows"].as_array().unwrap();
    let md = std::fs::read_to_string(results_dir.join("table.md")).unwrap();
    let mut expected = Vec::new();
    for workload in ["status", "encrypt", "decrypt"] {
        for clients in [1, 16] {
            for topology in ["stacked", "plugin"] {
                expected.push((workload, clients, topology));
            }
        }
    }
    for topology in ["stacked", "plugin"] {
        expected.push(("decrypt-burst", 50, topology));
    }
    let got: Vec<(&str, u64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["workload"].as_str().unwrap(),
                r["clients"].as_u64().unwrap(),
                r["topology"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, u64, &str)> = expected
        .into_iter()
        .map(|(w, c, t)| (w, c as u64, t))
        .collect();
    assert_eq!(got, expected, "{results}");
    for r in rows {
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
    let burst = rows
        .iter()
        .find(|r| r["workload"] == "decrypt-burst")
        .unwrap();
    assert_eq!(
        burst["ops"], 50,
        "every Decrypt of the burst answered: {burst}"
    );
    for (w, c, t) in &got {
        let line = format!("| {w} | {c} | {t} |");
        assert!(md.contains(&line), "{line} missing from table.md:\n{md}");
    }
    assert!(
        stderr.contains("[kms] plugin decrypt-burst c=50"),
        "a line per row: {stderr}"
    );

    eprintln!("--- step 4: the logs");
    let logs = results_dir.join("logs");
    for name in [
        "kstash-node-1",
        "kstash-node-2",
        "kstash-node-3",
        "kstash-kms-plugin",
    ] {
        assert!(logs.join(format!("{name}.log")).is_file(), "{name}.log");
    }
    let node_1 = std::fs::read_to_string(logs.join("kstash-node-1.log")).unwrap();
    assert!(node_1.contains("--kms-socket"), "node 1 serves the socket");

    eprintln!("--- step 5: nothing left running or on disk");
    let pids = results["pids"].as_array().unwrap();
    assert_eq!(pids.len(), 4, "three nodes and the plugin: {results}");
    for pid in pids {
        let pid = pid.as_u64().unwrap();
        assert!(!still_running(pid), "process {pid} still runs");
    }
    let left = processes_mentioning(&scratch.path().to_string_lossy());
    assert!(left.is_empty(), "still running: {left:?}");
    assert_no_scratch_left(scratch.path());
    for served in results["topologies"].as_array().unwrap() {
        let socket = served["socket"].as_str().unwrap();
        assert!(!Path::new(socket).exists(), "{socket} left behind");
    }
}

/// Run `kstash <args>` with stdout and stderr into files under `dir`, for
/// at most `limit`; panics (with its stderr) when it overruns.
fn run_bounded(
    args: &[&str],
    dir: &Path,
    limit: Duration,
) -> (std::process::ExitStatus, String, String) {
    let (stdout_path, stderr_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("kstash starts");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kstash {args:?} ran over {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        std::fs::read_to_string(&stdout_path).unwrap(),
        std::fs::read_to_string(&stderr_path).unwrap(),
    )
}

/// `kstash bench csi` end to end, short: the mount storm.
///
/// Steps:
/// 1. run `kstash bench csi --pods 20 --secrets 2 --rounds 1 --rotation
///    --concurrency 4,16 --format json` into a fresh dir, bounded;
/// 2. stdout is the results object, and `results.json` holds the same;
/// 3. a row per concurrency × phase (first-mount, remount, rotation), each
///    with 20 correct mounts and no error; every pod logged in on its first
///    mount (fresh pods per point) and never again, its remounts served
///    from the provider's cache; `table.md` lists every row;
/// 4. a log per node and one of the provider exist, and every node was
///    started with the bench's issuer and JWKS file;
/// 5. no ServiceAccount token (a JWT, `eyJ…`) in stdout, stderr, the
///    files or the logs;
/// 6. nothing is left: every process id it reports is gone, and so are the
///    socket, the JWKS file and the data dirs.
#[test]
fn csi_bench_storms_the_provider_and_leaves_nothing_running() {
    eprintln!("--- step 1: kstash bench csi");
    // A short scratch dir under /tmp: a socket path has at most 107 bytes.
    let scratch = tempfile::Builder::new()
        .prefix("t32-csi-")
        .tempdir()
        .unwrap();
    let out = tempfile::Builder::new()
        .prefix("t32-csi-out-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let results_dir = out.path().join("results");
    let (results_arg, scratch_arg) = (
        results_dir.to_str().unwrap().to_string(),
        scratch.path().to_str().unwrap().to_string(),
    );
    let args = [
        "--format",
        "json",
        "bench",
        "csi",
        "--pods",
        "20",
        "--secrets",
        "2",
        "--rounds",
        "1",
        "--rotation",
        "--concurrency",
        "4,16",
        "--out",
        &results_arg,
        "--scratch-dir",
        &scratch_arg,
    ];
    let started = Instant::now();
    let (status, stdout, stderr) = run_bounded(&args, out.path(), PER_STORE);
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    eprintln!("bench csi took {:?}", started.elapsed());

    eprintln!("--- step 2: stdout is results.json");
    let results: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let file: Value =
        serde_json::from_slice(&std::fs::read(results_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(file, results);

    eprintln!("--- step 3: every concurrency × phase mounted every pod, right");
    let rows = results["rows"].as_array().unwrap();
    let got: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["phase"].as_str().unwrap(),
                r["concurrency"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("first-mount", 4),
            ("remount", 4),
            ("rotation", 4),
            ("first-mount", 16),
            ("remount", 16),
            ("rotation", 16),
        ],
        "{results}"
    );
    let md = std::fs::read_to_string(results_dir.join("table.md")).unwrap();
    for r in rows {
        assert_eq!(r["mounts"], 20, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["mounts_per_s"].as_f64().unwrap() > 0.0, "{r}");
        let first = r["phase"] == "first-mount";
        assert_eq!(r["logins"], if first { 20 } else { 0 }, "{r}");
        assert_eq!(r["cache_hits"], if first { 0 } else { 20 }, "{r}");
        let line = format!(
            "| {} | {} | 20 |",
            r["phase"].as_str().unwrap(),
            r["concurrency"]
        );
        assert!(md.contains(&line), "{line} missing from table.md:\n{md}");
    }
    assert!(
        stderr.contains("[csi] rotation c=16: 20 mounts"),
        "a line per row: {stderr}"
    );

    eprintln!("--- step 4: the logs");
    let logs = results_dir.join("logs");
    for name in [
        "kstash-node-1",
        "kstash-node-2",
        "kstash-node-3",
        "kstash-csi-provider",
    ] {
        assert!(logs.join(format!("{name}.log")).is_file(), "{name}.log");
    }
    for node in 1..=3 {
        let log = std::fs::read_to_string(logs.join(format!("kstash-node-{node}.log"))).unwrap();
        let head = log.lines().next().unwrap();
        assert!(
            head.contains("--kubernetes-issuer") && head.contains("--kubernetes-jwks-file"),
            "node {node}: {head}"
        );
    }

    eprintln!("--- step 5: no token anywhere");
    let mut texts = vec![
        ("stdout".to_string(), stdout.clone()),
        ("stderr".to_string(), stderr.clone()),
        ("table.md".to_string(), md.clone()),
    ];
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        texts.push((
            path.display().to_string(),
            std::fs::read_to_string(&path).unwrap(),
        ));
    }
    for (name, text) in texts {
        assert!(!text.contains("eyJ"), "a JWT in {name}");
    }

    eprintln!("--- step 6: nothing left running or on disk");
    let pids = results["pids"].as_array().unwrap();
    assert_eq!(pids.len(), 4, "three nodes and the provider: {results}");
    for pid in pids {
        let pid = pid.as_u64().unwrap();
        assert!(!still_running(pid), "process {pid} still runs");
    }
    let left = processes_mentioning(&scratch.path().to_string_lossy());
    assert!(left.is_empty(), "still running: {left:?}");
    assert_no_scratch_left(scratch.path());
    let socket = results["socket"].as_str().unwrap();
    assert!(!Path::new(socket).exists(), "{socket} left behind");
}

#[test]
fn a_csi_plan_out_of_bounds_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    for (flags, want) in [
        (&["--secrets", "0"][..], "--secrets must be 1 to 256"),
        (&["--rounds", "0", "--rotation"][..], "--rotation"),
        (&["--concurrency", "0"][..], "--concurrency"),
    ] {
        let (status, _, stderr) = run_bounded(
            &[&["bench", "csi"], flags, &["--out", out.to_str().unwrap()]].concat(),
            dir.path(),
            Duration::from_secs(20),
        );
        assert_eq!(status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
        assert!(!stderr.contains("starting"), "nothing started: {stderr}");
        assert!(!out.exists(), "no out dir for a refused plan");
    }
}
