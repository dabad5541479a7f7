//! One run: start a fresh cluster, drive a workload with clients while the
//! nemesis breaks things, heal, read everything back on every node, check,
//! and write `store/<run>/`.
//!
//! Exit codes: 0 valid, 1 invalid, 2 unknown (the checker ran out of
//! budget), 3 the run was not a test (the cluster could not be set up, or a
//! requested fault never happened).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::api::Reply;
use crate::checker::{check, set_summaries, Budget, Verdict};
use crate::cluster::{Cluster, NAMESPACE, NODES};
use crate::events::{check_seals, check_tokens, EventKind};
use crate::history::{Input, Outcome, Output};
use crate::nemesis::{Fault, FaultRecord, Nemesis, Schedule};
use crate::report::{write_html, FaultWindow, Sample};
use crate::workload::{Client, Recorded, Recorder, Shared, Workload};

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The repository root (where `cluster/` is).
    pub repo: PathBuf,
    /// Where run directories go.
    pub store: PathBuf,
    /// The kstash image to run.
    pub image: String,
    /// The workload.
    pub workload: Workload,
    /// The `--nemesis` value, as given.
    pub nemesis: String,
    /// The faults it names.
    pub faults: Vec<Fault>,
    /// How long clients run.
    pub time: Duration,
    /// Ops per second over all clients.
    pub rate: f64,
    /// Clients per node.
    pub clients_per_node: usize,
    /// Healthy time before each fault.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub hold: Duration,
    /// Per-request timeout.
    pub op_timeout: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// The checker's time limit.
    pub check_time: Duration,
    /// Most ops the clients may start (the run also ends at `time`).
    pub max_ops: u64,
    /// Leave the cluster running after the run (for a look at it);
    /// otherwise `cluster/down -v` removes it.
    pub keep_cluster: bool,
}

const RECOVER_LIMIT: Duration = Duration::from_secs(60);

/// Do the run; returns the exit code.
pub fn run(opts: &RunOptions) -> i32 {
    let dir = opts.store.join(run_name(opts));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot make {}: {e}", dir.display());
        return 3;
    }
    let latest = opts.store.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink(dir.file_name().unwrap_or_default(), &latest);
    eprintln!("[run] {} → {}", run_name(opts), dir.display());
    let result = run_in(opts, &dir);
    if !opts.keep_cluster {
        let down = std::process::Command::new(opts.repo.join("cluster/down"))
            .arg("-v")
            .output();
        if !matches!(&down, Ok(o) if o.status.success()) {
            eprintln!("[run] cluster/down -v failed: remove the containers by hand");
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("[run] not a test: {e}");
            let verdict = json!({"verdict": "error", "error": e, "exit_code": 3});
            let _ = write_json(&dir.join("verdict.json"), &verdict);
            3
        }
    }
}

fn run_in(opts: &RunOptions, dir: &Path) -> Result<i32, String> {
    eprintln!("[run] starting a fresh cluster from {}", opts.image);
    let cluster = Arc::new(Cluster::start_fresh(
        &opts.repo,
        &opts.image,
        opts.op_timeout,
    )?);
    let token = cluster.login(NAMESPACE, "2h")?;
    for key in ["canary", "seal/probe"] {
        put_until_ok(&cluster, &token, key)?;
    }
    let rec = Arc::new(Recorder::new());
    let shared = Arc::new(Shared::new(
        cluster.clone(),
        rec.clone(),
        token,
        opts.op_timeout,
        opts.max_ops,
    ));
    let clients = opts.clients_per_node * NODES.len();
    let interval = Duration::from_secs_f64(clients as f64 / opts.rate.max(0.1));
    let deadline = Instant::now() + opts.time;
    eprintln!(
        "[run] {} clients, {:.0} ops/s for {:?}, nemesis {}",
        clients, opts.rate, opts.time, opts.nemesis
    );
    let mut handles = Vec::new();
    for p in 0..clients {
        let shared = shared.clone();
        let workload = opts.workload;
        let seed = opts.seed;
        handles.push(thread::spawn(move || {
            let mut c = Client::new(&shared, p as u64, p % NODES.len(), seed);
            c.run(&shared, workload, interval, deadline);
        }));
    }
    if opts.workload == Workload::Seal {
        let shared = shared.clone();
        let seed = opts.seed;
        handles.push(thread::spawn(move || {
            let mut c = Client::new(&shared, 100, 0, seed);
            c.run_sealer(&shared, deadline);
        }));
    }
    let schedule = Schedule {
        faults: opts.faults.clone(),
        quiet: opts.quiet,
        hold: opts.hold,
        recover_limit: RECOVER_LIMIT,
    };
    let mut nemesis = Nemesis::new(&shared, schedule, opts.seed);
    nemesis.run(deadline);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let end_ns = rec.now_ns();

    // Heal everything, wait, read everything back on every node.
    eprintln!("[run] healing and reading back on every node");
    let final_heal_ns = rec.now_ns();
    let heal = nemesis.heal_all();
    let final_recovered = nemesis.await_recovery();
    let stranded = heal.as_ref().err().cloned();
    let mut finals = Client::new(&shared, 1000, 0, opts.seed);
    let converged = final_reads(opts.workload, &shared, &mut finals);
    let recorded = rec.take();
    cluster.save_logs(&dir.join("logs"));

    // Check.
    let budget = Budget {
        time_limit: opts.check_time,
        ..Budget::default()
    };
    let started = Instant::now();
    let report = check(&recorded.history, &budget).map_err(|e| format!("history: {e}"))?;
    let check_s = started.elapsed().as_secs_f64();
    let token_violations = check_tokens(&recorded.events);
    // Seals end at heals and at the harness's own unseals, as well as at
    // the clients' recorded unseals.
    let mut reopen: Vec<u64> = nemesis
        .records
        .iter()
        .filter_map(|r| r.heal_ns)
        .chain([final_heal_ns])
        .chain(cluster.harness_unseals().into_iter().map(|t| rec.ns_at(t)))
        .collect();
    reopen.sort_unstable();
    let seal_violations = check_seals(&recorded.events, &reopen);
    let sets = set_summaries(&recorded.history);
    let lost: usize = sets.iter().map(|s| s.lost.len()).sum();
    let missing: Vec<&str> = opts
        .faults
        .iter()
        .filter(|f| !nemesis.records.iter().any(|r| r.fault == **f && r.happened))
        .map(|f| f.name())
        .collect();
    let unrecovered = nemesis
        .records
        .iter()
        .filter(|r| r.recovered_ns.is_none())
        .count()
        + usize::from(final_recovered.is_none());
    let mut recoveries: Vec<f64> = nemesis
        .records
        .iter()
        .filter_map(FaultRecord::recovery_s)
        .collect();
    recoveries.sort_by(f64::total_cmp);
    let median = recoveries.get(recoveries.len() / 2).copied();

    let ops = recorded.history.ops.len() + recorded.events.len();
    let count = |o: Outcome| {
        recorded
            .history
            .ops
            .iter()
            .filter(|op| op.outcome == o)
            .count()
            + recorded.events.iter().filter(|e| e.outcome == o).count()
    };
    let mut problems: Vec<String> = Vec::new();
    if let Verdict::Invalid(a) = &report.verdict {
        problems.push(format!("not linearizable: {}", a.explanation));
    }
    for v in token_violations.iter().chain(&seal_violations) {
        problems.push(format!("{}: {}", v.rule, v.explanation));
    }
    if lost > 0 {
        problems.push(format!("{lost} acknowledged adds lost"));
    }
    if !converged.0 {
        problems.push(format!("nodes did not converge: {}", converged.1));
    }
    if let Some(e) = &stranded {
        problems.push(format!("cluster stranded after the final heal: {e}"));
    }
    if unrecovered > 0 {
        problems.push(format!(
            "{unrecovered} heals never got every node serving within {RECOVER_LIMIT:?}"
        ));
    }
    let (verdict, code) = if !missing.is_empty() {
        ("error", 3)
    } else if !problems.is_empty() {
        ("invalid", 1)
    } else if let Verdict::Unknown { .. } = report.verdict {
        ("unknown", 2)
    } else {
        ("valid", 0)
    };
    let summary = json!({
        "verdict": verdict,
        "exit_code": code,
        "workload": opts.workload,
        "nemesis": opts.nemesis,
        "image": opts.image,
        "seed": opts.seed,
        "time_s": opts.time.as_secs_f64(),
        "ops": ops,
        "ok": count(Outcome::Ok),
        "fail": count(Outcome::Fail),
        "info": count(Outcome::Info),
        "problems": problems,
        "faults_requested": opts.faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "faults_never_happened": missing,
        "faults_injected": nemesis.records.len(),
        "recovery_s": {
            "median": median,
            "max": recoveries.last(),
            "each": recoveries,
            "final": final_recovered.map(|r| (r.saturating_sub(final_heal_ns)) as f64 / 1e9),
        },
        "converged": converged.0,
        "reopen_ns": reopen,
        "linearizability": report,
        "linearizability_check_s": check_s,
        "sets": sets,
        "token_violations": token_violations,
        "seal_violations": seal_violations,
    });
    write_outputs(dir, opts, &recorded, &nemesis.records, &summary, end_ns)?;
    eprintln!(
        "[run] {verdict}: {ops} ops ({} ok), {} faults, recovery median {}, {}",
        count(Outcome::Ok),
        nemesis.records.len(),
        median.map_or("—".into(), |m| format!("{m:.2} s")),
        dir.display()
    );
    for p in summary["problems"].as_array().into_iter().flatten() {
        eprintln!("[run]   {}", p.as_str().unwrap_or(""));
    }
    if !missing.is_empty() {
        eprintln!("[run] requested faults that never happened: {missing:?}");
    }
    Ok(code)
}

fn put_until_ok(cluster: &Cluster, token: &str, key: &str) -> Result<(), String> {
    let mut last = String::new();
    for round in 0..20 {
        match cluster.api(round % NODES.len()).put(token, key, "x", None) {
            Reply::Ok(_) => return Ok(()),
            other => last = other.describe(),
        }
        thread::sleep(Duration::from_millis(500));
    }
    Err(format!("writing {key}: {last}"))
}

/// Final reads on every node (recorded in the history, so the checker sees
/// them), then convergence: every node's own state (stale reads) agrees.
fn final_reads(workload: Workload, shared: &Shared, c: &mut Client) -> (bool, String) {
    match workload {
        Workload::Register => {
            let keys = shared.register_keys();
            for node in 0..NODES.len() {
                for key in &keys {
                    c.register(shared, node, key, Input::Read);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let mut differing = Vec::new();
                for key in &keys {
                    let versions: Vec<Option<u64>> = (0..NODES.len())
                        .map(
                            |n| match shared.cluster.api(n).get(&shared.token, key, true) {
                                Reply::Ok(v) => v.get("version").and_then(Value::as_u64),
                                r if r.is_status(404) => Some(0),
                                _ => None,
                            },
                        )
                        .collect();
                    if versions.iter().any(Option::is_none)
                        || versions.windows(2).any(|w| w[0] != w[1])
                    {
                        differing.push(format!("{key}: {versions:?}"));
                    }
                }
                if differing.is_empty() {
                    return (true, String::new());
                }
                if Instant::now() > deadline {
                    return (false, differing.join(", "));
                }
                thread::sleep(Duration::from_millis(500));
            }
        }
        Workload::Set => {
            let mut seen: Vec<Option<usize>> = vec![Some(0); NODES.len()];
            for k in 0..shared.sets() {
                for (node, total) in seen.iter_mut().enumerate() {
                    let r = c.read_set(shared, node, k);
                    let n = match r {
                        // A truncated page is not the whole set: no count.
                        Reply::Ok(v)
                            if v.get("truncated").and_then(Value::as_bool) == Some(true) =>
                        {
                            None
                        }
                        Reply::Ok(v) => v.get("keys").and_then(Value::as_array).map(Vec::len),
                        r if r.is_status(404) => Some(0),
                        _ => None,
                    };
                    *total = total.zip(n).map(|(a, b)| a + b);
                }
            }
            let same = seen.iter().all(Option::is_some) && seen.windows(2).all(|w| w[0] == w[1]);
            (same, format!("elements per node: {seen:?}"))
        }
        Workload::Token | Workload::Seal => {
            let answers: Vec<bool> = (0..NODES.len())
                .map(|n| {
                    let r = shared.cluster.api(n).get(&shared.token, "canary", false);
                    matches!(r, Reply::Ok(_))
                })
                .collect();
            (
                answers.iter().all(|a| *a),
                format!("canary readable per node: {answers:?}"),
            )
        }
    }
}

fn write_outputs(
    dir: &Path,
    opts: &RunOptions,
    recorded: &Recorded,
    faults: &[FaultRecord],
    summary: &Value,
    end_ns: u64,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing {}: {e}", dir.display());
    let mut history =
        std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl")).map_err(io)?);
    for op in &recorded.history.ops {
        serde_json::to_writer(&mut history, &json!({"type": "op", "op": op}))
            .map_err(|e| e.to_string())?;
        history.write_all(b"\n").map_err(io)?;
    }
    for e in &recorded.events {
        serde_json::to_writer(&mut history, &json!({"type": "event", "event": e}))
            .map_err(|e| e.to_string())?;
        history.write_all(b"\n").map_err(io)?;
    }
    history.flush().map_err(io)?;
    write_json(&dir.join("faults.json"), &json!(faults)).map_err(io)?;
    write_json(&dir.join("verdict.json"), summary).map_err(io)?;
    let samples: Vec<Sample> = recorded
        .history
        .ops
        .iter()
        .map(|op| Sample {
            f: match &op.input {
                Input::Read => "read",
                Input::Write { .. } => "write",
                Input::Cas { .. } => match op.output {
                    Some(Output::CasMismatch { .. }) => "cas-mismatch",
                    _ => "cas",
                },
                Input::Add { .. } => "add",
                Input::ReadSet => "read_set",
            }
            .to_string(),
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
            outcome: op.outcome,
        })
        .chain(recorded.events.iter().map(|e| Sample {
            f: EventKind::name(e.kind).to_string(),
            invoke_ns: e.invoke_ns,
            complete_ns: e.complete_ns,
            outcome: e.outcome,
        }))
        .collect();
    let windows: Vec<FaultWindow> = faults
        .iter()
        .filter(|f| f.happened)
        .map(|f| FaultWindow {
            kind: f.fault.name().to_string(),
            targets: f.targets.clone(),
            start_ns: f.start_ns,
            heal_ns: f.heal_ns,
            recovered_ns: f.recovered_ns,
        })
        .collect();
    let title = format!(
        "kstash jepsen: {} under {} ({}s)",
        serde_json::to_value(opts.workload)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        opts.nemesis,
        opts.time.as_secs()
    );
    write_html(dir, &title, summary, &samples, &windows, end_ns).map_err(io)?;
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// `20261124T221503Z-register-all`.
fn run_name(opts: &RunOptions) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let workload = serde_json::to_value(opts.workload)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let nemesis: String = opts
        .nemesis
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{workload}-{nemesis}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Re-check a stored run's history (`history.jsonl`): the linearizability
/// verdict and the token and seal rules. Returns the exit code.
pub fn recheck(dir: &Path, check_time: Duration) -> Result<i32, String> {
    let text = std::fs::read_to_string(dir.join("history.jsonl"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut recorded = Recorded::default();
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        match v.get("type").and_then(Value::as_str) {
            Some("op") => recorded.history.ops.push(
                serde_json::from_value(v["op"].clone())
                    .map_err(|e| format!("line {}: {e}", n + 1))?,
            ),
            Some("event") => recorded.events.push(
                serde_json::from_value(v["event"].clone())
                    .map_err(|e| format!("line {}: {e}", n + 1))?,
            ),
            _ => return Err(format!("line {}: neither op nor event", n + 1)),
        }
    }
    let budget = Budget {
        time_limit: check_time,
        ..Budget::default()
    };
    let report = check(&recorded.history, &budget).map_err(|e| e.to_string())?;
    // Heals and the harness's own unseals also end sealed intervals.
    let reopen: Vec<u64> = std::fs::read_to_string(dir.join("verdict.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("reopen_ns").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    let violations: BTreeMap<&str, usize> = check_tokens(&recorded.events)
        .iter()
        .chain(&check_seals(&recorded.events, &reopen))
        .fold(BTreeMap::new(), |mut m, v| {
            *m.entry(v.rule).or_insert(0) += 1;
            m
        });
    let lost: usize = set_summaries(&recorded.history)
        .iter()
        .map(|s| s.lost.len())
        .sum();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "linearizability": report,
            "rule_violations": violations,
            "lost_adds": lost,
        }))
        .unwrap_or_default()
    );
    let code = if !violations.is_empty() || lost > 0 {
        1
    } else {
        report.verdict.exit_code()
    };
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
