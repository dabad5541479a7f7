//! `kstash-jepsen`: run a workload against the `cluster/` containers under a
//! nemesis and check what the clients saw (see `jepsen/README.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kstash_jepsen::nemesis::Fault;
use kstash_jepsen::run::{recheck, run, RunOptions};
use kstash_jepsen::workload::Workload;

#[derive(Parser)]
#[command(
    name = "kstash-jepsen",
    about = "Chaos tests for kstash: workloads, faults, a linearizability checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a fresh cluster/, drive a workload under faults, check, report.
    /// Exit code: 0 valid, 1 invalid, 2 unknown, 3 not a test.
    Run {
        /// register, set, token or seal.
        #[arg(long, value_enum, default_value = "register")]
        workload: Workload,
        /// Faults: none, all, partition, kill, pause, membership, or a
        /// comma-separated list of partition-leader, partition-follower,
        /// partition-ring, kill-node, kill-leader, pause-node, pause-leader, restart,
        /// churn.
        #[arg(long, default_value = "all")]
        nemesis: String,
        /// Seconds the clients run.
        #[arg(long, default_value_t = 300)]
        time: u64,
        /// Operations per second over all clients.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Most operations the clients may start (the run also ends at --time).
        #[arg(long, default_value_t = 200_000)]
        max_ops: u64,
        /// Clients per node.
        #[arg(long, default_value_t = 2)]
        clients_per_node: usize,
        /// Healthy seconds before each fault.
        #[arg(long, default_value_t = 6)]
        quiet: u64,
        /// Seconds each fault lasts.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Seconds before a request counts as indeterminate.
        #[arg(long, default_value_t = 5)]
        op_timeout: u64,
        /// The kstash image to run.
        #[arg(long, env = "KSTASH_IMAGE", default_value = "kstash:dev")]
        image: String,
        /// Seed of every random choice.
        #[arg(long)]
        seed: Option<u64>,
        /// Where run directories go.
        #[arg(long, default_value = "jepsen/store")]
        store: PathBuf,
        /// The repository root (holding cluster/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Seconds the linearizability checker may take.
        #[arg(long, default_value_t = 300)]
        check_time: u64,
        /// Leave the cluster running afterwards (default: cluster/down -v).
        #[arg(long)]
        keep_cluster: bool,
    },
    /// Check a stored run's history again.
    Check {
        /// A run directory (jepsen/store/<run>).
        dir: PathBuf,
        /// Seconds the linearizability checker may take.
        #[arg(long, default_value_t = 300)]
        check_time: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            workload,
            nemesis,
            time,
            rate,
            max_ops,
            clients_per_node,
            quiet,
            hold,
            op_timeout,
            image,
            seed,
            store,
            repo,
            check_time,
            keep_cluster,
        } => {
            let faults = match Fault::parse_list(&nemesis) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("kstash-jepsen: {e}");
                    return ExitCode::from(64);
                }
            };
            if rate <= 0.0 || clients_per_node == 0 || time == 0 {
                eprintln!("kstash-jepsen: --rate, --clients-per-node and --time must be positive");
                return ExitCode::from(64);
            }
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
            run(&RunOptions {
                repo,
                store,
                image,
                workload,
                nemesis,
                faults,
                time: Duration::from_secs(time),
                rate,
                max_ops,
                clients_per_node,
                quiet: Duration::from_secs(quiet),
                hold: Duration::from_secs(hold),
                op_timeout: Duration::from_secs(op_timeout),
                seed,
                check_time: Duration::from_secs(check_time),
                keep_cluster,
            })
        }
        Command::Check { dir, check_time } => {
            match recheck(&dir, Duration::from_secs(check_time)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("kstash-jepsen: {e}");
                    3
                }
            }
        }
    };
    ExitCode::from(code as u8)
}
