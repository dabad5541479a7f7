//! `kstash bench compare`: the same closed-loop load against a three-node
//! kstash and a three-node etcd on loopback, one store after the other, and
//! one table of the two side by side, with a plot.
//!
//! Invariants:
//! - One store runs at a time: its cluster is stopped (every process
//!   reaped) before the next one starts, also when a run fails or the
//!   command is interrupted (Ctrl-C, SIGTERM).
//! - Both stores get the same load: the same clients, connections, keys and
//!   values, the client URLs of all three members, plaintext on loopback
//!   and their production durability (see `cluster`).
//! - Each point (workload, clients) runs `runs` times, in rounds over all
//!   points, so slow drift spreads over every point. A point reports the
//!   median over its runs of each number on its own; every run's report is
//!   kept in `results.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Serialize, Serializer};

use super::cluster::{self, LocalCluster};
use super::{now, BenchOptions, BenchReport, KstashTarget, Store, Target, Workload};

/// Clients that write every key before the first read workload.
const PREFILL_PARALLEL: usize = 64;

/// What to run against each store.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Concurrent clients of each point.
    pub concurrency: Vec<usize>,
    /// Workloads of each point.
    pub workloads: Vec<Workload>,
    /// Runs of each point.
    pub runs: usize,
    /// Measured time of a run.
    #[serde(rename = "duration_s", serialize_with = "as_secs")]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[serde(rename = "warmup_s", serialize_with = "as_secs")]
    pub warmup: Duration,
    /// Connections the clients share.
    pub connections: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Bytes per value.
    pub value_size: usize,
}

impl Plan {
    /// Refuse a plan that measures nothing.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            bail!("--concurrency needs at least one value, each at least 1");
        }
        if self.workloads.is_empty() {
            bail!("--workloads needs at least one workload");
        }
        if self.runs == 0 || self.connections == 0 || self.keys == 0 {
            bail!("--runs, --connections and --keys must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        Ok(())
    }

    /// The points, in the order they run in each round.
    fn points(&self) -> Vec<(Workload, usize)> {
        self.workloads
            .iter()
            .flat_map(|w| self.concurrency.iter().map(move |c| (*w, *c)))
            .collect()
    }

    /// Roughly how long one store is measured (runs, warm-ups), without
    /// the start and the prefill.
    fn measured_time(&self) -> Duration {
        let runs = (self.points().len() * self.runs) as u32;
        (self.duration + self.warmup) * runs
    }
}

fn as_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Where the stores come from and where the results go.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The load.
    pub plan: Plan,
    /// The stores, in the order they run, each with the binary to start.
    pub stores: Vec<(Store, PathBuf)>,
    /// Where the results and `logs/` go.
    pub out: PathBuf,
    /// The parent of the members' data dirs.
    pub scratch: PathBuf,
}

/// The medians over the runs of one point, each number on its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Operations per second.
    pub ops_per_s: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
}

impl Summary {
    /// The medians of `runs`.
    pub fn of(runs: &[BenchReport]) -> Summary {
        let med = |f: fn(&BenchReport) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Summary {
            ops_per_s: med(|r| r.ops_per_s),
            p50_ms: med(|r| r.p50_ms),
            p99_ms: med(|r| r.p99_ms),
            p999_ms: med(|r| r.p999_ms),
        }
    }
}

/// The median: the middle value, or the mean of the two middle values;
/// NaN for no value.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One point of one store.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// The medians over `runs`.
    pub median: Summary,
    /// Every run, in order.
    pub runs: Vec<BenchReport>,
}

/// Everything measured on one store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreResults {
    /// The store.
    pub store: Store,
    /// The binary its members ran.
    pub binary: PathBuf,
    /// What `binary --version` printed first.
    pub version: String,
    /// The members' process ids (all stopped by now).
    pub pids: Vec<u32>,
    /// The points, in plan order.
    pub points: Vec<Point>,
}

/// One line of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// kstash's medians, if kstash ran.
    pub kstash: Option<Summary>,
    /// etcd's medians, if etcd ran.
    pub etcd: Option<Summary>,
    /// kstash ops/s over etcd ops/s, when both ran and etcd did any.
    pub ratio: Option<f64>,
}

/// The whole result of `kstash bench compare` (`results.json`).
#[derive(Debug, Clone, Serialize)]
pub struct CompareResults {
    /// When the first store started (RFC 3339, UTC).
    pub started_at: String,
    /// When the last store measured so far stopped.
    pub finished_at: String,
    /// What ran.
    pub plan: Plan,
    /// Per store, in the order they ran.
    pub stores: Vec<StoreResults>,
    /// The comparison, one row per point.
    pub table: Vec<Row>,
}

/// Start each store in turn, run every point `runs` times, stop it. Each
/// member's log goes to `<out>/logs/`. After each store, `results.json`,
/// `table.md` and `plot.svg` in `out` hold every store measured so far, so
/// a later failure keeps them. Ctrl-C or SIGTERM stops the members and
/// ends with an error.
pub async fn run(opts: &CompareOptions) -> anyhow::Result<CompareResults> {
    opts.plan.check()?;
    let logs = opts.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut results = CompareResults {
        started_at: now(),
        finished_at: String::new(),
        plan: opts.plan.clone(),
        stores: Vec::new(),
        table: Vec::new(),
    };
    for (store, bin) in &opts.stores {
        let measured = tokio::select! {
            r = measure_store(*store, bin, opts, &logs) => r,
            signal = interrupted() => Err(anyhow::anyhow!(
                "interrupted by {signal}; every process the bench started is stopped"
            )),
        };
        let measured = measured.with_context(|| {
            let done: Vec<&str> = results.stores.iter().map(|s| s.store.name()).collect();
            let kept = match done[..] {
                [] => String::new(),
                _ => format!("; the results of {} are kept", done.join(", ")),
            };
            format!(
                "benchmarking {} (logs in {}{kept})",
                store.name(),
                logs.display()
            )
        })?;
        results.stores.push(measured);
        results.table = rows(&opts.plan, &results.stores);
        results.finished_at = now();
        write_outputs(&results, &opts.out)?;
    }
    Ok(results)
}

/// Start one store's cluster, load it, stop it.
async fn measure_store(
    store: Store,
    bin: &Path,
    opts: &CompareOptions,
    logs: &Path,
) -> anyhow::Result<StoreResults> {
    let plan = &opts.plan;
    eprintln!(
        "[compare] starting a three-node {} ({})",
        store.name(),
        bin.display()
    );
    let (mut cluster, points) = match store {
        Store::Kstash => {
            // The token outlives the whole measurement, with room for the
            // prefill; the server caps TTLs at its max (32 days by default).
            let ttl = plan.measured_time() * 2 + Duration::from_secs(3600);
            let cluster = LocalCluster::start_kstash(bin, &opts.scratch, logs, ttl).await?;
            let target =
                KstashTarget::connect(&cluster.endpoints, plan.connections, cluster.token()?, None)
                    .await?;
            let points = run_points(store, target, plan).await;
            (cluster, points)
        }
        #[cfg(feature = "etcd")]
        Store::Etcd => {
            let cluster = LocalCluster::start_etcd(bin, &opts.scratch, logs).await?;
            let target = super::EtcdTarget::connect(&cluster.endpoints, plan.connections).await?;
            let points = run_points(store, target, plan).await;
            (cluster, points)
        }
        #[cfg(not(feature = "etcd"))]
        Store::Etcd => bail!("{ETCD_FEATURE_MISSING}"),
    };
    cluster.stop();
    eprintln!("[compare] stopped {}", store.name());
    Ok(StoreResults {
        store,
        binary: bin.to_path_buf(),
        version: cluster::version_of(bin),
        pids: cluster.pids(),
        points: points?,
    })
}

/// Every point of `plan`, `plan.runs` rounds, with a line on stderr per run.
/// Before the first read workload every key is written once.
async fn run_points<T: Target>(store: Store, target: T, plan: &Plan) -> anyhow::Result<Vec<Point>> {
    let points = plan.points();
    if points.iter().any(|(w, _)| *w != Workload::Put) {
        let keys = super::key_names(plan.keys);
        let value = super::value_bytes(plan.value_size);
        super::prefill(&target, &keys, &value, PREFILL_PARALLEL).await?;
    }
    let mut runs: Vec<Vec<BenchReport>> = vec![Vec::new(); points.len()];
    for round in 1..=plan.runs {
        for (i, (workload, clients)) in points.iter().enumerate() {
            let report = super::run(
                target.clone(),
                &BenchOptions {
                    workload: *workload,
                    clients: *clients,
                    connections: plan.connections,
                    duration: plan.duration,
                    warmup: plan.warmup,
                    keys: plan.keys,
                    value_size: plan.value_size,
                    prefill: false,
                    progress: false,
                },
            )
            .await?;
            eprintln!(
                "[compare] {} {} c={clients} run {round}/{}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                store.name(),
                workload.name(),
                plan.runs,
                report.ops_per_s,
                report.p50_ms,
                report.p99_ms,
                report.errors
            );
            if report.ops == 0 {
                bail!(
                    "{} {} with {clients} clients: no operation succeeded: {}",
                    store.name(),
                    workload.name(),
                    report.first_error.as_deref().unwrap_or("none finished")
                );
            }
            runs[i].push(report);
        }
    }
    Ok(points
        .into_iter()
        .zip(runs)
        .map(|((workload, clients), runs)| Point {
            workload,
            clients,
            median: Summary::of(&runs),
            runs,
        })
        .collect())
}

/// The first of Ctrl-C and SIGTERM, by name.
pub(super) async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // No handler: only Ctrl-C interrupts.
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// Why a build without the `etcd` feature cannot load etcd.
pub const ETCD_FEATURE_MISSING: &str = "this kstash was built without the `etcd` feature, \
     so it cannot load etcd: build it with `--features etcd` \
     (cargo run --release --features etcd -- bench compare), or pass --targets kstash";

/// The etcd binary: `given`, else `$ETCD_BIN`, else `etcd` on `PATH`.
#[cfg(feature = "etcd")]
pub fn etcd_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(bin) if !bin.is_file() => bail!("--etcd-bin {}: no such file", bin.display()),
        Some(bin) => Ok(bin.to_path_buf()),
        None => crate::storage::etcd::testing::find_binary().map_err(|why| {
            anyhow::anyhow!("no etcd binary ({why}): install etcd or pass --etcd-bin")
        }),
    }
}

/// The etcd binary: none without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
pub fn etcd_binary(_given: Option<&Path>) -> anyhow::Result<PathBuf> {
    bail!("{ETCD_FEATURE_MISSING}")
}

/// One row per point of `plan`: both stores' medians and the ratio of
/// their throughputs.
pub fn rows(plan: &Plan, stores: &[StoreResults]) -> Vec<Row> {
    let find = |store: Store, workload: Workload, clients: usize| {
        stores
            .iter()
            .filter(|s| s.store == store)
            .flat_map(|s| &s.points)
            .find(|p| p.workload == workload && p.clients == clients)
            .map(|p| p.median)
    };
    plan.points()
        .into_iter()
        .map(|(workload, clients)| {
            let kstash = find(Store::Kstash, workload, clients);
            let etcd = find(Store::Etcd, workload, clients);
            let ratio = match (kstash, etcd) {
                (Some(k), Some(e)) if e.ops_per_s > 0.0 => Some(k.ops_per_s / e.ops_per_s),
                _ => None,
            };
            Row {
                workload,
                clients,
                kstash,
                etcd,
                ratio,
            }
        })
        .collect()
}

/// The table as Markdown, with a line saying what the numbers are.
pub fn markdown(results: &CompareResults) -> String {
    let mut md = String::from(
        "| workload | clients | kstash ops/s | kstash p50 ms | kstash p99 ms \
         | etcd ops/s | etcd p50 ms | etcd p99 ms | ratio (kstash/etcd ops/s) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let cells = |s: Option<Summary>| match s {
        Some(s) => format!("{:.0} | {:.2} | {:.2}", s.ops_per_s, s.p50_ms, s.p99_ms),
        None => "– | – | –".to_string(),
    };
    for row in &results.table {
        let ratio = row.ratio.map_or("–".to_string(), |r| format!("{r:.2}"));
        // Writing into a String cannot fail.
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {ratio} |",
            row.workload.name(),
            row.clients,
            cells(row.kstash),
            cells(row.etcd)
        );
    }
    let plan = &results.plan;
    let _ = writeln!(
        md,
        "\nMedians of {} run(s) per point, each {:.1} s measured after {:.1} s of warm-up; \
         {} connections over the three members; {} keys; {}-byte values. \
         put: durable write; get: linearizable read; stale-get: the member's own state.",
        plan.runs,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.connections,
        plan.keys,
        plan.value_size
    );
    md
}

/// Write `results.json`, `table.md` and `plot.svg` into `out`.
fn write_outputs(results: &CompareResults, out: &Path) -> anyhow::Result<()> {
    let write = |name: &str, body: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.json", &serde_json::to_vec_pretty(results)?)?;
    write("table.md", markdown(results).as_bytes())?;
    write("plot.svg", super::plot::svg(&results.stores)?.as_bytes())?;
    Ok(())
}

/// `bench-results/compare-<UTC time, e.g. 20250102T030405Z>`.
pub fn default_out_dir() -> PathBuf {
    super::out_dir_for("compare")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A run's report with these numbers.
    pub fn report(workload: Workload, clients: usize, ops_per_s: f64, p99_ms: f64) -> BenchReport {
        BenchReport {
            workload,
            clients,
            connections: 8,
            duration_s: 1.0,
            ops: ops_per_s as u64,
            ops_per_s,
            p50_ms: p99_ms / 4.0,
            p99_ms,
            p999_ms: p99_ms * 2.0,
            max_ms: p99_ms * 3.0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn plan(concurrency: &[usize], workloads: &[Workload]) -> Plan {
        Plan {
            concurrency: concurrency.to_vec(),
            workloads: workloads.to_vec(),
            runs: 3,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connections: 8,
            keys: 10_000,
            value_size: 256,
        }
    }

    /// A store's results: one run per given (workload, clients, ops/s, p99).
    pub fn store(store: Store, points: &[(Workload, usize, f64, f64)]) -> StoreResults {
        StoreResults {
            store,
            binary: PathBuf::from(store.name()),
            version: "test".into(),
            pids: vec![1, 2, 3],
            points: points
                .iter()
                .map(|&(w, c, ops, p99)| {
                    let runs = vec![report(w, c, ops, p99)];
                    Point {
                        workload: w,
                        clients: c,
                        median: Summary::of(&runs),
                        runs,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn medians_of_odd_even_and_unsorted_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_summary_takes_each_numbers_median_on_its_own() {
        let mut runs = vec![
            report(Workload::Put, 16, 100.0, 9.0),
            report(Workload::Put, 16, 300.0, 1.0),
            report(Workload::Put, 16, 200.0, 5.0),
        ];
        // The run with the median throughput is not the one with the median p99.
        runs[0].p50_ms = 0.5;
        let s = Summary::of(&runs);
        assert_eq!(s.ops_per_s, 200.0);
        assert_eq!(s.p99_ms, 5.0);
        assert_eq!(s.p999_ms, 10.0);
        assert_eq!(s.p50_ms, 0.5);
    }

    #[test]
    fn rows_follow_the_plan_and_divide_kstash_by_etcd() {
        let plan = plan(&[1, 64], &[Workload::Put, Workload::Get]);
        let kstash = store(
            Store::Kstash,
            &[
                (Workload::Put, 1, 500.0, 4.0),
                (Workload::Put, 64, 9000.0, 20.0),
                (Workload::Get, 1, 1000.0, 2.0),
                (Workload::Get, 64, 30000.0, 6.0),
            ],
        );
        let etcd = store(
            Store::Etcd,
            &[
                (Workload::Put, 1, 1000.0, 3.0),
                (Workload::Put, 64, 6000.0, 25.0),
                (Workload::Get, 1, 0.0, 0.0),
            ],
        );
        let rows = rows(&plan, &[kstash.clone(), etcd]);
        let keys: Vec<_> = rows.iter().map(|r| (r.workload, r.clients)).collect();
        assert_eq!(
            keys,
            [
                (Workload::Put, 1),
                (Workload::Put, 64),
                (Workload::Get, 1),
                (Workload::Get, 64)
            ]
        );
        assert_eq!(rows[0].ratio, Some(0.5));
        assert_eq!(rows[1].ratio, Some(1.5));
        assert_eq!(rows[1].etcd.unwrap().p99_ms, 25.0);
        assert_eq!(rows[2].ratio, None, "etcd did nothing: no ratio");
        assert_eq!(rows[3].etcd, None);
        assert_eq!(rows[3].ratio, None);

        let alone = super::rows(&plan, &[kstash]);
        assert!(alone.iter().all(|r| r.kstash.is_some() && r.etcd.is_none()));
        assert!(alone.iter().all(|r| r.ratio.is_none()));
    }

    #[test]
    fn the_markdown_table_has_a_line_per_point_with_the_ratio() {
        let plan = plan(&[64], &[Workload::Put]);
        let stores = vec![
            store(Store::Kstash, &[(Workload::Put, 64, 9000.0, 20.0)]),
            store(Store::Etcd, &[(Workload::Put, 64, 6000.0, 25.0)]),
        ];
        let results = CompareResults {
            started_at: now(),
            finished_at: now(),
            table: rows(&plan, &stores),
            plan,
            stores,
        };
        let md = markdown(&results);
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[0].starts_with("| workload | clients | kstash ops/s"),
            "{md}"
        );
        assert!(lines[0].ends_with("| ratio (kstash/etcd ops/s) |"), "{md}");
        assert_eq!(
            lines[2],
            "| put | 64 | 9000 | 5.00 | 20.00 | 6000 | 6.25 | 25.00 | 1.50 |"
        );
        assert!(md.contains("Medians of 3 run(s)"), "{md}");
    }

    #[test]
    fn plans_that_measure_nothing_are_refused() {
        let good = plan(&[1, 16], &[Workload::Put]);
        assert!(good.check().is_ok());
        assert_eq!(good.measured_time(), Duration::from_secs(2 * 3 * 12));
        for bad in [
            plan(&[], &[Workload::Put]),
            plan(&[0], &[Workload::Put]),
            plan(&[1], &[]),
            Plan {
                runs: 0,
                ..good.clone()
            },
            Plan {
                connections: 0,
                ..good.clone()
            },
            Plan {
                duration: Duration::ZERO,
                ..good.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_out_dir_is_stamped_in_utc() {
        let dir = default_out_dir();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(dir.starts_with("bench-results"));
        assert!(
            name.starts_with("compare-") && name.ends_with('Z'),
            "{name}"
        );
        assert_eq!(name.len(), "compare-20250102T030405Z".len(), "{name}");
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_without_the_feature_names_the_feature() {
        let e = etcd_binary(None).unwrap_err().to_string();
        assert!(e.contains("--features etcd"), "{e}");
    }
}
