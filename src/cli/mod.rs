//! The `kstash` command line: `kstash server` runs a node; every other
//! command is a client of the REST API.
//!
//! Invariants:
//! - Exit status 0 on success, 2 on a usage error (clap's), 1 on any other
//!   error, printed as `Error: …` on stderr (`Error: <message> (<code>, HTTP
//!   <status>)` when the server refused).
//! - A secret is printed only when it is the result the user asked for (init,
//!   rekey, a new or replacement token or key, `kv get`, `key decrypt`);
//!   secrets given as input are never echoed and are read without echo when
//!   prompted for.
//! - Results go to stdout; notes and warnings to stderr.

mod certs;
mod commands;
mod csi_provider;
mod keys;
mod kms_plugin;
mod output;
mod process;
mod prompt;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use certs::ClusterCertsArgs;
pub use csi_provider::CsiProviderArgs;
pub use keys::KeyCommand;
pub use kms_plugin::KmsPluginArgs;
pub use output::Format;

use crate::bench::{Store, Workload};
use crate::config::ServerArgs;

/// kstash: a Raft-replicated secrets store for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "kstash", version, propagate_version = true)]
pub struct Cli {
    /// Client options (every command but `server`).
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every client command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Server base URLs with their scheme (`http://host:port` or
    /// `https://…`), comma-separated; the next one is tried when one
    /// cannot be connected to or answers 503 `sealed`/`removed`, and for
    /// reads and secret, policy or role writes also after an unknown
    /// outcome (another 503, a timeout).
    #[arg(
        long,
        global = true,
        env = "KSTASH_ADDR",
        value_delimiter = ',',
        default_value = crate::client::DEFAULT_ADDRESS,
        value_name = "URL,..."
    )]
    pub address: Vec<String>,
    /// Access token.
    #[arg(long, global = true, env = "KSTASH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA certificate(s) that signed the server's certificate.
    #[arg(long, global = true, env = "KSTASH_CACERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// How long the whole command may wait for servers, every retry and
    /// failover to the next address included (e.g. `30s`, `2m`).
    #[arg(
        long,
        global = true,
        env = "KSTASH_TIMEOUT",
        value_parser = humantime::parse_duration,
        default_value = "30s"
    )]
    pub timeout: Duration,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a kstash node.
    Server(Box<ServerArgs>),
    /// Initialise, unseal, seal, rotate and rekey (service owners and technicians).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Mint an access token: with the access key (`kstash login -n NS …`),
    /// or with a Kubernetes ServiceAccount token (`kstash login kubernetes
    /// …`).
    Login(LoginArgs),
    /// Inspect, renew or revoke access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the policies of a namespace.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage the Kubernetes login roles of a namespace: which
    /// ServiceAccounts may `kstash login kubernetes`, with which policies.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Named encryption keys of the token's namespace: create, get, list,
    /// rotate and configure them (an admin token); encrypt and decrypt with
    /// them (a token with `encrypt` / `decrypt` on `keys/<name>`).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Read and write secrets in the token's namespace.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Work with the audit log (uses --token / KSTASH_TOKEN: an admin token).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Load a cluster (over gRPC, with the token) and report ops/s and
    /// latency percentiles.
    Bench(BenchArgs),
    /// Serve kube-apiserver's KMS v2 plugin API on a Unix socket, with a
    /// named key of a kstash cluster (--address; the token from
    /// --token-file, renewed before it expires; --timeout is each call's
    /// budget). Runs until SIGTERM or SIGINT.
    KmsPlugin(Box<KmsPluginArgs>),
    /// Serve the Secrets Store CSI Driver's provider API on a Unix socket
    /// (one per node, a DaemonSet): pods mount kstash secrets as files,
    /// logged in with their own ServiceAccount tokens; the kstash
    /// addresses come from each SecretProviderClass (--ca-cert: trusted
    /// for classes without caCert; --timeout: each call's budget). Runs
    /// until SIGTERM or SIGINT.
    CsiProvider(Box<CsiProviderArgs>),
    /// Print a shell completion script, e.g. `kstash completion bash >
    /// /etc/bash_completion.d/kstash` or `source <(kstash completion zsh)`.
    Completion {
        /// The shell: bash, zsh, fish (also elvish, powershell).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `kstash bench`: closed-loop clients for a fixed time after a warm-up.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Instead of loading a running cluster: start local clusters and compare.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// put (256-byte values by default), get (linearizable) or stale-get.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Connections shared by the clients, round robin over --address.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// What to load: kstash (--address, --token) or, built with the `etcd`
    /// feature, etcd (--etcd-endpoints) through the same clients.
    #[arg(long, value_enum, default_value_t = Store::Kstash)]
    pub target: Store,
    /// etcd client URLs, comma-separated (with --target etcd).
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub etcd_endpoints: Vec<String>,
}

/// How long each run loads, and with what data (`kstash bench` and
/// `kstash bench compare`).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Measured time (e.g. `10s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
}

/// `kstash bench …`.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Start a three-node kstash and a three-node etcd on loopback, one
    /// after the other; load each at every concurrency, every run repeated;
    /// print the medians side by side with the kstash/etcd ratio, and write
    /// results.json, table.md, plot.svg and the members' logs into --out.
    Compare(Box<CompareArgs>),
    /// Load a Kubernetes KMS v2 socket the way kube-apiserver does: Status,
    /// Encrypt of 32-byte seeds, Decrypt, and a decrypt burst (what an
    /// apiserver restart does). Without --socket it starts a three-node
    /// kstash on loopback and measures both topologies side by side: the
    /// node's own socket (stacked) and a `kstash kms-plugin` process;
    /// results.json, table.md and the logs go into --out.
    Kms(Box<KmsArgs>),
    /// The mount storm: start a three-node kstash on loopback that trusts
    /// the bench's own ServiceAccount signing key, and a `kstash
    /// csi-provider`; N simulated pods, each with its own ServiceAccount
    /// token, mount M secrets through the provider's socket as the Secrets
    /// Store CSI Driver does (first mount, remount rounds, optionally
    /// rotation), every answer checked; results.json, table.md and the logs
    /// go into --out.
    Csi(Box<CsiArgs>),
}

/// `kstash bench csi`.
#[derive(Debug, Clone, Args)]
pub struct CsiArgs {
    /// Simulated pods of each concurrency point, each with its own
    /// ServiceAccount and token.
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// Secrets (files) each pod's volume mounts.
    #[arg(long, default_value_t = 5)]
    pub secrets: usize,
    /// Bytes of each secret's value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Mounts in flight at once, comma-separated: one point each, with
    /// fresh pods (the provider answers 64 at once per connection; more
    /// wait).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "16",
        value_name = "N,..."
    )]
    pub concurrency: Vec<usize>,
    /// Remount rounds of every pod after its first mount (the driver's
    /// rotation poll).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Also measure --rounds rounds after every secret got a new value;
    /// every Mount must show the new version.
    #[arg(long)]
    pub rotation: bool,
    /// The kstash binary the servers and the provider run (default: this
    /// executable).
    #[arg(long, value_name = "FILE")]
    pub kstash_bin: Option<PathBuf>,
    /// Where results.json, table.md and logs/ go (default:
    /// `bench-results/csi-<UTC time>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the nodes' data dirs, the provider's socket and the JWKS file
    /// go, in subdirectories removed at the end (default: the system temp
    /// dir; keep it short, a socket path has at most 107 bytes).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
}

/// `kstash bench kms`.
#[derive(Debug, Clone, Args)]
pub struct KmsArgs {
    /// An existing KMS v2 socket (`unix:///path` or `/path`) to load
    /// instead of a local cluster; the socket needs no kstash token.
    #[arg(long, value_name = "unix:///PATH", conflicts_with_all = ["local_cluster", "kstash_bin", "scratch_dir"])]
    pub socket: Option<String>,
    /// Start a three-node kstash on loopback with a key, a policy and a
    /// token, and measure the stacked and plugin topologies (the default
    /// without --socket).
    #[arg(long)]
    pub local_cluster: bool,
    /// Workloads, comma-separated: status, encrypt (random 32-byte seeds),
    /// decrypt (of ciphertexts made during setup).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "status,encrypt,decrypt",
        value_name = "W,..."
    )]
    pub workloads: Vec<crate::bench::kms::KmsWorkload>,
    /// Concurrent clients of each point, comma-separated (all share one
    /// connection, like the apiserver).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16",
        value_name = "N,..."
    )]
    pub concurrency: Vec<usize>,
    /// Measured time of each point.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
    pub duration: Duration,
    /// Unmeasured warm-up before each point.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Ciphertexts made during setup for the decrypt workload.
    #[arg(long, default_value_t = 256)]
    pub ciphertexts: usize,
    /// Distinct ciphertexts of the decrypt burst (0: no burst).
    #[arg(long, default_value_t = 1000)]
    pub burst: usize,
    /// Decrypts in flight during the burst (default: all of them at once).
    #[arg(long, value_name = "N")]
    pub burst_concurrency: Option<usize>,
    /// The kstash binary the servers and the plugin run (default: this
    /// executable).
    #[arg(long, value_name = "FILE")]
    pub kstash_bin: Option<PathBuf>,
    /// Where results.json, table.md and logs/ go (default:
    /// `bench-results/kms-<UTC time>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the nodes' data dirs, the sockets and the plugin's token file
    /// go, in subdirectories removed at the end (default: the system temp
    /// dir; keep it short, a socket path has at most 107 bytes).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
}

/// `kstash bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Concurrent clients of each point, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,64,256",
        value_name = "N,..."
    )]
    pub concurrency: Vec<usize>,
    /// Workloads, comma-separated: put, get (linearizable), stale-get.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "put,get",
        value_name = "W,..."
    )]
    pub workloads: Vec<Workload>,
    /// Runs of each point; the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Connections shared by the clients, round robin over the three members.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Stores to start and load, in this order, comma-separated (etcd
    /// needs a kstash built with `--features etcd`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kstash,etcd",
        value_name = "STORE,..."
    )]
    pub targets: Vec<Store>,
    /// The kstash binary the servers run (default: this executable).
    #[arg(long, value_name = "FILE")]
    pub kstash_bin: Option<PathBuf>,
    /// The etcd binary (default: $ETCD_BIN, else `etcd` on PATH).
    #[arg(long, value_name = "FILE")]
    pub etcd_bin: Option<PathBuf>,
    /// Where results.json, table.md, plot.svg and logs/ go (default:
    /// `bench-results/compare-<UTC time>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the members' data dirs go, in a subdirectory removed at the
    /// end (default: the system temp dir). Fsync costs depend on this disk.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
}

/// `kstash operator …`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Initialise the cluster: prints the unseal keys, the access key and
    /// gatekeeper tokens, once.
    Init {
        /// Unseal keys to make.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=255))]
        shares: u32,
        /// Unseal keys needed to unseal.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=255))]
        threshold: u32,
        /// Gatekeeper tokens to mint.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=16))]
        gatekeeper_tokens: u32,
    },
    /// Give one unseal key (prompted without echo when KEY is omitted), the
    /// keys of a file (`--keys-file`), or a gatekeeper token
    /// (`--gatekeeper-token`, `--gatekeeper-token-file`, or
    /// KSTASH_GATEKEEPER_TOKEN when nothing else is given).
    Unseal {
        /// One unseal key.
        #[arg(conflicts_with_all = ["gatekeeper_token", "gatekeeper_token_file", "keys_file", "reset"])]
        key: Option<String>,
        /// Unseal with a gatekeeper token; prompted when given without a value or as `-`.
        #[arg(long, num_args = 0..=1, default_missing_value = "-", value_name = "TOKEN", conflicts_with_all = ["gatekeeper_token_file", "keys_file", "reset"])]
        gatekeeper_token: Option<String>,
        /// Unseal with the gatekeeper token in FILE (`-`: stdin).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["keys_file", "reset"])]
        gatekeeper_token_file: Option<PathBuf>,
        /// Give the unseal keys in FILE (`-`: stdin), one per line, in turn
        /// until the node is unsealed (blank lines ignored; the file must
        /// not be readable by others).
        #[arg(long, value_name = "FILE", conflicts_with = "reset")]
        keys_file: Option<PathBuf>,
        /// Forget the unseal keys given so far.
        #[arg(long)]
        reset: bool,
    },
    /// Seal the cluster.
    Seal(GatekeeperAuthArgs),
    /// Add a new encryption key term to the keychain.
    Rotate(GatekeeperAuthArgs),
    /// Manage the access key.
    #[command(subcommand)]
    AccessKey(AccessKeyCommand),
    /// Replace the unseal keys (prompts for the current threshold of keys,
    /// or reads them with `--keys-file`); revokes every gatekeeper token.
    Rekey {
        /// New number of unseal keys.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
        shares: u32,
        /// New threshold.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
        threshold: u32,
        /// Gatekeeper tokens to mint for the new keys.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=16))]
        gatekeeper_tokens: u32,
        #[command(flatten)]
        keys: KeysFileArgs,
    },
    /// Show whether the cluster is initialised and sealed, and its nodes.
    Status,
    /// Mint, list, renew and revoke gatekeeper tokens.
    #[command(subcommand)]
    GatekeeperToken(GatekeeperTokenCommand),
    /// Make a cluster CA and one mTLS certificate per node for the cluster
    /// port, into a directory (offline; contacts no server).
    ClusterCerts(certs::ClusterCertsArgs),
    /// Raft membership: list peers, remove a member.
    #[command(subcommand)]
    Raft(RaftCommand),
    /// Save a snapshot of the (encrypted) state, or restore one offline.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `kstash operator raft …`.
#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// List the cluster's members: id, addresses, voter or learner, leader,
    /// matched log index (known on the leader). Needs no credential and
    /// works on a sealed node.
    Peers,
    /// Remove a member from the voters and learners (on the leader; a
    /// follower answers with the leader's address).
    Remove {
        /// The node id to remove.
        id: u64,
        #[command(flatten)]
        auth: GatekeeperAuthArgs,
    },
}

/// `kstash operator snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Build a fresh snapshot on the node reached and write it to FILE
    /// (mode 0600). It holds ciphertext only; the unseal keys open it.
    Save {
        /// Where to write the snapshot.
        file: PathBuf,
        #[command(flatten)]
        auth: GatekeeperAuthArgs,
    },
    /// Offline: restore FILE into the empty data dir of a node, which then
    /// holds the snapshot's state as a one-member cluster, and print how to
    /// start it. Without --cluster-addr it is a standalone node: start it on
    /// that data dir as before (no `--bootstrap`, which needs
    /// `--cluster-addr`). With --cluster-addr, start it with its cluster
    /// port and `--bootstrap`; other nodes join it afterwards with fresh
    /// data dirs. Either way, unseal it with the original unseal keys.
    Restore {
        /// A file written by `snapshot save`.
        file: PathBuf,
        /// The new node's data dir: must be missing or empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// The new node's id (written to the data dir's `node-id` file).
        #[arg(long)]
        node_id: u64,
        /// The client API address the node will advertise (`host:port`).
        #[arg(long)]
        api_addr: String,
        /// The cluster address the node will advertise (`host:port`);
        /// leave it out for a standalone node.
        #[arg(long, default_value = "")]
        cluster_addr: String,
    },
}

/// How a sys operation proves the gatekeeper key: one of these, else
/// KSTASH_GATEKEEPER_TOKEN.
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub struct GatekeeperAuthArgs {
    /// A gatekeeper token (consumed; its replacement is printed). `-` prompts.
    #[arg(long, value_name = "TOKEN")]
    pub gatekeeper_token: Option<String>,
    /// Read the gatekeeper token from FILE (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    pub gatekeeper_token_file: Option<PathBuf>,
    /// Prompt for N unseal keys instead.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=255))]
    pub keys: Option<u32>,
    /// Read unseal keys from FILE (`-`: stdin) instead, one per line (blank
    /// lines ignored; the file must not be readable by others); the
    /// cluster's threshold of them is sent.
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
}

/// Where the commands that need the threshold of unseal keys get them.
#[derive(Debug, Clone, Args)]
pub struct KeysFileArgs {
    /// Read the unseal keys from FILE (`-`: stdin) instead of prompting:
    /// one per line, blank lines ignored; the file must not be readable by
    /// others. The cluster's threshold of them is sent.
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
}

/// `kstash operator access-key …`.
#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// Replace the access key; prints the new one.
    Rotate(GatekeeperAuthArgs),
}

/// `kstash operator gatekeeper-token …`.
#[derive(Debug, Subcommand)]
pub enum GatekeeperTokenCommand {
    /// Mint gatekeeper tokens (prompts for the threshold of unseal keys,
    /// or reads them with `--keys-file`).
    Create {
        /// How many.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
        count: u32,
        #[command(flatten)]
        keys: KeysFileArgs,
    },
    /// List gatekeeper tokens by id (prompts for the threshold of unseal
    /// keys, or reads them with `--keys-file`).
    List(KeysFileArgs),
    /// Use a gatekeeper token once to get its replacement. TOKEN omitted:
    /// `--gatekeeper-token-file`, else KSTASH_GATEKEEPER_TOKEN, else a
    /// prompt; `-` prompts.
    Renew {
        /// The gatekeeper token.
        #[arg(value_name = "TOKEN", conflicts_with = "gatekeeper_token_file")]
        gatekeeper_token: Option<String>,
        /// Read the gatekeeper token from FILE (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        gatekeeper_token_file: Option<PathBuf>,
    },
    /// Revoke a gatekeeper token: the token itself (`-` prompts;
    /// `--gatekeeper-token-file` reads it), or `--id` with the threshold of
    /// unseal keys (prompted, or read with `--keys-file`).
    #[command(group = clap::ArgGroup::new("which").required(true).args(["gatekeeper_token", "gatekeeper_token_file", "id"]))]
    Revoke {
        /// The gatekeeper token.
        #[arg(value_name = "TOKEN")]
        gatekeeper_token: Option<String>,
        /// Read the gatekeeper token from FILE (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        gatekeeper_token_file: Option<PathBuf>,
        /// Hex id of the token (see `list`).
        #[arg(long, value_name = "HEX")]
        id: Option<String>,
        /// With `--id`: read the unseal keys from FILE (`-`: stdin) instead
        /// of prompting, one per line.
        #[arg(long, value_name = "FILE", requires = "id")]
        keys_file: Option<PathBuf>,
    },
}

/// `kstash login`: with the access key (the options below), or with a
/// Kubernetes ServiceAccount token (`kstash login kubernetes`).
#[derive(Debug, Clone, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    override_usage = "kstash login --namespace <NAMESPACE> [OPTIONS]    (with the access key)\n       \
        kstash login kubernetes --namespace <NAMESPACE> --role <ROLE> [--jwt-file <FILE>]"
)]
pub struct LoginArgs {
    /// Log in another way than with the access key.
    #[command(subcommand)]
    pub method: Option<LoginMethod>,
    /// Namespace the token is locked to.
    #[arg(long, short = 'n', required = true)]
    pub namespace: Option<String>,
    /// A policy of the token (repeatable; `admin` is built in).
    #[arg(long = "policy", short = 'p', value_name = "POLICY")]
    pub policies: Vec<String>,
    /// Token lifetime (e.g. `1h`, `90s`, or seconds); the server's default when omitted.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<u64>,
    /// File holding the access key (must not be readable by others or writable by group).
    /// Default: KSTASH_ACCESS_KEY, else a prompt.
    #[arg(long, value_name = "FILE")]
    pub access_key_file: Option<PathBuf>,
    /// Print only the token, e.g. `export KSTASH_TOKEN=$(kstash login … --token-only)`.
    #[arg(long)]
    pub token_only: bool,
}

/// `kstash login …`: the ways to log in besides the access key.
#[derive(Debug, Clone, Subcommand)]
pub enum LoginMethod {
    /// Mint an access token with a Kubernetes ServiceAccount token (a JWT):
    /// the role of the namespace must bind the pod's service account. The
    /// token expires with the role's TTL or the JWT, whichever comes first,
    /// and cannot be renewed past that: log in again with a fresh JWT.
    Kubernetes(KubernetesLoginArgs),
}

/// The pod's own ServiceAccount token, where Kubernetes mounts it.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// `kstash login kubernetes`.
#[derive(Debug, Clone, Args)]
pub struct KubernetesLoginArgs {
    /// The kstash namespace to log in to.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// The Kubernetes login role of that namespace (see `kstash role`).
    #[arg(long, short = 'r')]
    pub role: String,
    /// File holding the ServiceAccount token (a JWT; at most 16 KiB).
    /// Default: the pod's own token. Its audience is the API server's; a
    /// role expects audience `kstash` by default, so mount a projected token
    /// for that audience (e.g. at `/var/run/secrets/kstash/token`) and
    /// point here, or at KSTASH_JWT_FILE, to it.
    #[arg(
        long,
        env = "KSTASH_JWT_FILE",
        value_name = "FILE",
        default_value = DEFAULT_JWT_FILE
    )]
    pub jwt_file: PathBuf,
    /// Print only the token, e.g. `export KSTASH_TOKEN=$(kstash login
    /// kubernetes … --token-only)`.
    #[arg(long)]
    pub token_only: bool,
}

/// `kstash token …` (uses --token / KSTASH_TOKEN).
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Show the current token's namespace, policies and expiry.
    Lookup,
    /// Extend the current token.
    Renew {
        /// Extend by this much from now (default: the token's TTL).
        #[arg(long, value_parser = parse_ttl)]
        increment: Option<u64>,
    },
    /// Revoke TOKEN (`-` prompts), or the current token when omitted.
    Revoke {
        /// The token to revoke.
        #[arg(value_name = "TOKEN")]
        target: Option<String>,
    },
}

/// `kstash audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the HMAC the audit log shows for VALUE (`hmac-sha256:<hex>`,
    /// the same on every node), to find a leaked token or key in the log.
    /// Without VALUE (or with `-`) it is read without echo.
    Hash {
        /// The string to hash, exactly as it was sent.
        #[arg(value_name = "VALUE")]
        value: Option<String>,
    },
}

/// `kstash policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy from a JSON file (`-` = stdin):
    /// `{"rules": [{"path": "app/*", "capabilities": ["read"]}]}`.
    Put {
        /// Namespace.
        namespace: String,
        /// Policy name.
        name: String,
        /// JSON file, or `-` for stdin.
        file: PathBuf,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Show a policy.
    Get {
        /// Namespace.
        namespace: String,
        /// Policy name.
        name: String,
    },
    /// List the policies of a namespace, in name order.
    List {
        /// Namespace.
        namespace: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete a policy.
    Delete {
        /// Namespace.
        namespace: String,
        /// Policy name.
        name: String,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
}

/// `kstash role …`: a namespace's Kubernetes login roles (an admin token of
/// the namespace, from --token / KSTASH_TOKEN).
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create or replace a role: the ServiceAccounts it binds and what their
    /// tokens get.
    Put {
        /// Namespace.
        namespace: String,
        /// Role name.
        name: String,
        /// A ServiceAccount the role binds, `K8S_NAMESPACE/NAME`, or
        /// `K8S_NAMESPACE/*` for every one of that Kubernetes namespace
        /// (repeatable; at least one).
        #[arg(long = "service-account", value_name = "K8S_NS/NAME", required = true)]
        service_accounts: Vec<String>,
        /// A policy of the tokens the role mints (repeatable; `admin` is
        /// built in).
        #[arg(long = "policy", short = 'p', value_name = "POLICY")]
        policies: Vec<String>,
        /// Lifetime of a minted token (e.g. `15m`, or seconds); never past
        /// the ServiceAccount token's own expiry. The server's default (15 m)
        /// when omitted.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// The audience a ServiceAccount token must carry (the server's
        /// default, `kstash`, when omitted).
        #[arg(long)]
        audience: Option<String>,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Show a role.
    Get {
        /// Namespace.
        namespace: String,
        /// Role name.
        name: String,
    },
    /// List the roles of a namespace, in name order.
    List {
        /// Namespace.
        namespace: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete a role.
    Delete {
        /// Namespace.
        namespace: String,
        /// Role name.
        name: String,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
}

/// Fields of a secret that `kv get --field` can print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretField {
    /// The value, raw (no newline added; binary values decoded).
    Value,
    /// The version number.
    Version,
    /// When it was first written.
    CreatedAt,
    /// When this version was written.
    UpdatedAt,
}

/// `kstash kv …`.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write a secret. VALUE `-` reads stdin as it is (a trailing newline is
    /// kept; binary input is sent as base64).
    Put {
        /// Secret path, e.g. `app/db`.
        path: String,
        /// The value, or `-` for stdin.
        value: String,
        /// Write only if the current version is N (0 = only if absent).
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Read a secret.
    Get {
        /// Secret path.
        path: String,
        /// Print only this field (`value` is printed raw).
        #[arg(long, value_enum)]
        field: Option<SecretField>,
        /// Read this node's own state without asking the leader: faster and
        /// works without a leader, but may miss the latest writes.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a secret.
    Delete {
        /// Secret path.
        path: String,
        /// Idempotency key: running the command again with the same key
        /// within 10 minutes does not apply it twice (default: a fresh key,
        /// which still makes the CLI's own failover retries safe).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// List the names one level below PREFIX (folders end in '/').
    List {
        /// Prefix; the namespace root when omitted.
        prefix: Option<String>,
        /// Read this node's own state without asking the leader: faster and
        /// works without a leader, but may miss the latest writes.
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Paging of a listing. The server returns at most 10 000 names per call;
/// when more follow, the CLI says so on stderr with the cursor to continue
/// from (and JSON output carries `truncated` and `cursor`).
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Start after this name: the cursor a truncated listing printed.
    #[arg(long, value_name = "NAME")]
    pub cursor: Option<String>,
    /// Most names to ask for per call (1 to 10000; default 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub limit: Option<u32>,
    /// Follow the cursors until the listing is complete and print every name.
    #[arg(long)]
    pub all: bool,
}

/// An idempotency key, checked with the server's rules.
fn parse_idempotency_key(s: &str) -> Result<String, String> {
    crate::service::types::IdempotencyKey::parse(s)
        .map(|k| k.as_str().to_string())
        .map_err(|e| e.to_string())
}

/// A lifetime: whole seconds, or a duration like `90s`, `15m`, `1h`.
fn parse_ttl(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 {
        return Err("use whole seconds".into());
    }
    Ok(d.as_secs())
}

/// Parse the command line, run the command, and map the outcome to an exit
/// status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `kstash … | head`: the reader left; not an error worth a message.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            output::note(&format!("Error: {e:#}"));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_loads_a_cluster_or_compares_with_a_subcommand() {
        let cli = Cli::try_parse_from(["kstash", "bench", "--workload", "get", "--clients", "4"])
            .unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("not bench")
        };
        assert!(args.command.is_none());
        assert_eq!((args.workload, args.clients), (Workload::Get, 4));

        let cli = Cli::try_parse_from([
            "kstash",
            "bench",
            "compare",
            "--concurrency",
            "1,64",
            "--targets",
            "kstash",
            "--duration",
            "1s",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.format, Format::Json);
        let Command::Bench(args) = cli.command else {
            panic!("not bench")
        };
        let Some(BenchCommand::Compare(c)) = args.command else {
            panic!("not compare")
        };
        assert_eq!(c.concurrency, [1, 64]);
        assert_eq!(c.workloads, [Workload::Put, Workload::Get]);
        assert_eq!(c.targets, [Store::Kstash]);
        assert_eq!((c.runs, c.connections), (3, 8));
        assert_eq!(c.load.duration, Duration::from_secs(1));

        // The load flags of `bench` belong to `bench`, not to `compare`.
        let e = Cli::try_parse_from(["kstash", "bench", "--clients", "4", "compare"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bench_kms_defaults_to_a_local_cluster_and_takes_a_socket_alone() {
        use crate::bench::kms::KmsWorkload;
        let kms = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["kstash", "bench", "kms"], args].concat())?;
            let Command::Bench(b) = cli.command else {
                panic!("not bench")
            };
            let Some(BenchCommand::Kms(k)) = b.command else {
                panic!("not kms")
            };
            Ok::<_, clap::Error>(k)
        };
        let k = kms(&[]).unwrap();
        assert!(k.socket.is_none());
        use KmsWorkload::*;
        assert_eq!(k.workloads, [Status, Encrypt, Decrypt]);
        assert_eq!(k.concurrency, [1, 16]);
        assert_eq!(
            (k.duration, k.warmup),
            (Duration::from_secs(4), Duration::from_secs(1))
        );
        assert_eq!(
            (k.ciphertexts, k.burst, k.burst_concurrency),
            (256, 1000, None)
        );

        let k = kms(&["--socket", "unix:///run/k.sock", "--workloads", "decrypt"]).unwrap();
        assert_eq!(k.socket.as_deref(), Some("unix:///run/k.sock"));
        assert_eq!(k.workloads, [Decrypt]);
        for clash in [["--local-cluster"].as_slice(), &["--scratch-dir", "/tmp"]] {
            let e = kms(&[&["--socket", "/run/k.sock"], clash].concat()).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{clash:?}"
            );
        }
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("1m 30s"), Ok(90));
        assert!(parse_ttl("1500ms").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "kstash",
            "kv",
            "get",
            "app/db",
            "--field",
            "value",
            "--address",
            "http://a:1,http://b:2",
        ])
        .unwrap();
        assert_eq!(cli.global.address, ["http://a:1", "http://b:2"]);
        assert!(matches!(
            cli.command,
            Command::Kv(KvCommand::Get {
                field: Some(SecretField::Value),
                ..
            })
        ));
        let cli =
            Cli::try_parse_from(["kstash", "operator", "unseal", "--gatekeeper-token"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Operator(OperatorCommand::Unseal { gatekeeper_token: Some(ref t), .. }) if t == "-"
        ));
        let e = Cli::try_parse_from([
            "kstash",
            "operator",
            "seal",
            "--keys",
            "3",
            "--gatekeeper-token",
            "x",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e =
            Cli::try_parse_from(["kstash", "operator", "gatekeeper-token", "revoke"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        // One proof per sys command; --keys-file and the token file are
        // proofs like the others.
        for pair in [
            ["--keys-file", "-", "--gatekeeper-token", "x"],
            ["--keys-file", "-", "--keys", "2"],
            ["--gatekeeper-token-file", "-", "--keys-file", "f"],
        ] {
            let mut args = vec!["kstash", "operator", "rotate"];
            args.extend(pair);
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{pair:?}");
        }
        let cli = Cli::try_parse_from([
            "kstash",
            "operator",
            "raft",
            "remove",
            "3",
            "--keys-file",
            "-",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Operator(OperatorCommand::Raft(RaftCommand::Remove { id: 3, ref auth }))
                if auth.keys_file.as_deref() == Some(std::path::Path::new("-"))
        ));
        let e = Cli::try_parse_from(["kstash", "operator", "unseal", "KEY", "--keys-file", "f"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from([
            "kstash",
            "operator",
            "gatekeeper-token",
            "revoke",
            "--keys-file",
            "f",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2, "--keys-file needs --id");
        let cli = Cli::try_parse_from([
            "kstash",
            "operator",
            "gatekeeper-token",
            "revoke",
            "--id",
            "ab",
            "--keys-file",
            "-",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Operator(OperatorCommand::GatekeeperToken(
                GatekeeperTokenCommand::Revoke {
                    keys_file: Some(_),
                    ..
                }
            ))
        ));
        // The membership view takes no credential flags.
        assert!(Cli::try_parse_from(["kstash", "operator", "raft", "peers"]).is_ok());
        let e = Cli::try_parse_from(["kstash", "operator", "raft", "peers", "--keys", "2"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let cli = Cli::try_parse_from(["kstash", "completion", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completion {
                shell: clap_complete::Shell::Zsh
            }
        ));
        let cli = Cli::try_parse_from([
            "kstash", "login", "-n", "team-a", "-p", "a", "-p", "b", "--ttl", "1s",
        ])
        .unwrap();
        match cli.command {
            Command::Login(l) => assert_eq!((l.policies.len(), l.ttl), (2, Some(1))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn login_with_the_access_key_or_kubernetes() {
        // The access-key login keeps its form.
        let cli = Cli::try_parse_from(["kstash", "login", "-n", "team-a", "--token-only"]).unwrap();
        let Command::Login(l) = cli.command else {
            panic!("not login")
        };
        assert!(l.method.is_none() && l.token_only);
        assert_eq!(l.namespace.as_deref(), Some("team-a"));

        // The ServiceAccount login is a subcommand beside it.
        let cli = Cli::try_parse_from([
            "kstash",
            "login",
            "kubernetes",
            "--namespace",
            "team-a",
            "--role",
            "web",
            "--jwt-file",
            "/tmp/t",
            "--token-only",
        ])
        .unwrap();
        let Command::Login(l) = cli.command else {
            panic!("not login")
        };
        let Some(LoginMethod::Kubernetes(k)) = l.method else {
            panic!("not kubernetes")
        };
        assert_eq!((k.namespace.as_str(), k.role.as_str()), ("team-a", "web"));
        assert_eq!(k.jwt_file, PathBuf::from("/tmp/t"));
        assert!(k.token_only);

        // Without --jwt-file: the pod's token (KSTASH_JWT_FILE is not set
        // in tests).
        let cli =
            Cli::try_parse_from(["kstash", "login", "kubernetes", "-n", "a", "-r", "r"]).unwrap();
        let Command::Login(LoginArgs {
            method: Some(LoginMethod::Kubernetes(k)),
            ..
        }) = cli.command
        else {
            panic!("not kubernetes")
        };
        assert_eq!(k.jwt_file, PathBuf::from(DEFAULT_JWT_FILE));

        // Neither form, or a mix of both, is a usage error that says what
        // is missing.
        let e = Cli::try_parse_from(["kstash", "login"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.render().to_string();
        assert!(
            e.contains("--namespace") && e.contains("kstash login kubernetes"),
            "{e}"
        );
        let e = Cli::try_parse_from(["kstash", "login", "kubernetes", "-n", "a"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--role"), "{e}");
        for mixed in [
            &["login", "-n", "a", "kubernetes", "-n", "a", "-r", "r"][..],
            &[
                "login",
                "kubernetes",
                "-n",
                "a",
                "-r",
                "r",
                "--policy",
                "admin",
            ][..],
            &[
                "login",
                "kubernetes",
                "-n",
                "a",
                "-r",
                "r",
                "--access-key-file",
                "f",
            ][..],
        ] {
            let args = std::iter::once("kstash").chain(mixed.iter().copied());
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{mixed:?}");
        }
    }

    #[test]
    fn role_commands_parse() {
        let cli = Cli::try_parse_from([
            "kstash",
            "role",
            "put",
            "team-a",
            "web",
            "--service-account",
            "shop/web",
            "--service-account",
            "batch/*",
            "-p",
            "app-ro",
            "--ttl",
            "10m",
            "--audience",
            "vault",
            "--idempotency-key",
            "k-1",
        ])
        .unwrap();
        let Command::Role(RoleCommand::Put {
            namespace,
            name,
            service_accounts,
            policies,
            ttl,
            audience,
            idempotency_key,
        }) = cli.command
        else {
            panic!("not role put")
        };
        assert_eq!((namespace.as_str(), name.as_str()), ("team-a", "web"));
        assert_eq!(service_accounts, ["shop/web", "batch/*"]);
        assert_eq!(policies, ["app-ro"]);
        assert_eq!(ttl, Some(600));
        assert_eq!(audience.as_deref(), Some("vault"));
        assert_eq!(idempotency_key.as_deref(), Some("k-1"));

        // A role binds at least one ServiceAccount.
        let e = Cli::try_parse_from(["kstash", "role", "put", "team-a", "web"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--service-account"), "{e}");
        let e = Cli::try_parse_from([
            "kstash",
            "role",
            "put",
            "a",
            "w",
            "--service-account",
            "s/w",
            "--idempotency-key",
            "bad key",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);

        let cli =
            Cli::try_parse_from(["kstash", "role", "list", "team-a", "--limit", "5", "--all"])
                .unwrap();
        assert!(matches!(
            cli.command,
            Command::Role(RoleCommand::List { ref page, .. }) if page.limit == Some(5) && page.all
        ));
        for sub in ["get", "delete"] {
            let cli = Cli::try_parse_from(["kstash", "role", sub, "team-a", "web"]).unwrap();
            assert!(matches!(
                cli.command,
                Command::Role(RoleCommand::Get { .. } | RoleCommand::Delete { .. })
            ));
        }
    }
}
