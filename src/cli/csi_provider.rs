//! `kstash csi-provider`: the Secrets Store CSI Driver's provider for
//! kstash, one process per node (a DaemonSet). `--ca-cert` (the global
//! client option) is trusted for classes without `caCert`; `--timeout` is
//! the budget of each call to kstash; the kstash addresses come from each
//! SecretProviderClass.
//!
//! Invariant: the process holds no credential of its own (`--token` is
//! refused): it logs in as each pod with the pod's ServiceAccount token.
//! It runs with umask 077 (the socket file is never born wider than its
//! owner), and on SIGTERM or SIGINT stops serving, removes its socket and
//! exits 0.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::GlobalArgs;
use crate::plugins::csi::login::{DEFAULT_CAPACITY, MAX_CAPACITY};
use crate::plugins::csi::params::ParamsPolicy;
use crate::plugins::csi::{CsiEndpoint, CsiMetrics, ProviderOptions};
use crate::plugins::health::HealthServer;
use crate::plugins::socket::{parse_mode, SocketOptions};

/// The socket where the driver looks for the kstash provider.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/secrets-store-csi-providers/kstash.sock";

/// `kstash csi-provider`.
#[derive(Debug, Clone, Args)]
pub struct CsiProviderArgs {
    /// The Unix socket the driver connects to: `<provider dir>/kstash.sock`
    /// (`unix:///abs/path` or `/abs/path`). Its directory must exist; a
    /// stale socket file is replaced, a live one is never taken over, and
    /// the file is removed on exit.
    #[arg(long, value_name = "ENDPOINT", default_value = DEFAULT_SOCKET)]
    pub socket: String,
    /// Mode of the socket file, in octal; nothing for others.
    #[arg(long, value_name = "MODE", default_value = "0600")]
    pub socket_mode: String,
    /// Group (numeric gid) of the socket file; the provider's user must be
    /// a member. Default: the provider's own group.
    #[arg(long, value_name = "GID")]
    pub socket_group: Option<u32>,
    /// Most pod access tokens kept in memory, so that a pod's next Mount
    /// (rotation) does not log in again while its token is fresh (1 to
    /// 65536).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CAPACITY)]
    pub login_cache_size: usize,
    /// Let classes name `http://` kstash addresses beyond loopback: the
    /// pods' ServiceAccount tokens and secrets then cross the network in
    /// the clear. For test clusters only.
    #[arg(long)]
    pub allow_http: bool,
    /// Serve /healthz (the process runs), /readyz (the socket is served)
    /// and /metrics over HTTP on this address (e.g. 0.0.0.0:8789 for the
    /// kubelet's probes).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
}

/// What the provider runs with, checked.
#[derive(Debug)]
struct Options {
    socket: SocketOptions,
    provider: ProviderOptions,
    health_listen: Option<SocketAddr>,
}

impl CsiProviderArgs {
    fn options(&self, global: &GlobalArgs) -> anyhow::Result<Options> {
        if global.token.is_some() {
            bail!(
                "kstash csi-provider holds no access token: it logs in as each pod with the \
                 pod's ServiceAccount token; unset --token / KSTASH_TOKEN"
            );
        }
        let mut socket = SocketOptions::new(&self.socket).context("--socket")?;
        socket.mode = parse_mode(&self.socket_mode).context("--socket-mode")?;
        socket.group = self.socket_group;
        if !(1..=MAX_CAPACITY).contains(&self.login_cache_size) {
            bail!(
                "--login-cache-size {}: give 1 to {MAX_CAPACITY}",
                self.login_cache_size
            );
        }
        let default_ca = match &global.ca_cert {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
                Some((format!("--ca-cert {}", path.display()), pem))
            }
            None => None,
        };
        Ok(Options {
            socket,
            provider: ProviderOptions {
                call_timeout: global.timeout,
                login_cache_size: self.login_cache_size,
                policy: ParamsPolicy {
                    allow_http: self.allow_http,
                },
                default_ca,
            },
            health_listen: self.health_listen,
        })
    }
}

/// Run the provider until SIGTERM or SIGINT.
pub fn run(global: &GlobalArgs, args: &CsiProviderArgs) -> anyhow::Result<()> {
    let options = args.options(global)?;
    super::process::run_plugin(async {
        crate::client::install_crypto_provider();
        let metrics = CsiMetrics::new();
        let health = match options.health_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--health-listen {addr}"))?,
            ),
            None => None,
        };
        let endpoint = CsiEndpoint::start(&options.socket, options.provider, metrics.clone())
            .await
            .context("--socket")?;
        let health = health.map(|listener| {
            HealthServer::start(
                "CSI provider",
                listener,
                Arc::new(endpoint.watch()),
                metrics.registry(),
            )
        });
        tracing::info!(
            socket = %endpoint.path().display(),
            health = ?health.as_ref().map(HealthServer::addr),
            "CSI provider ready"
        );
        super::process::stop_signal().await?;
        endpoint.shutdown().await;
        if let Some(health) = health {
            health.shutdown().await;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["kstash", "csi-provider"], args].concat())
    }

    fn options(args: &[&str]) -> anyhow::Result<super::Options> {
        let cli = parse(args).unwrap();
        let Command::CsiProvider(a) = &cli.command else {
            panic!("not csi-provider")
        };
        a.options(&cli.global)
    }

    #[test]
    fn flags_parse_and_are_checked() {
        let o = options(&[]).unwrap();
        assert_eq!(
            o.socket.path.to_str(),
            Some("/var/run/secrets-store-csi-providers/kstash.sock")
        );
        assert_eq!((o.socket.mode, o.socket.group), (0o600, None));
        assert_eq!(o.provider.login_cache_size, 1024);
        assert!(!o.provider.policy.allow_http);
        assert!(o.provider.default_ca.is_none() && o.health_listen.is_none());

        let o = options(&[
            "--socket",
            "/etc/kubernetes/secrets-store-csi-providers/kstash.sock",
            "--login-cache-size",
            "16",
            "--allow-http",
            "--health-listen",
            "0.0.0.0:8789",
            "--timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(o.provider.login_cache_size, 16);
        assert!(o.provider.policy.allow_http);
        assert_eq!(o.provider.call_timeout, std::time::Duration::from_secs(5));
        assert_eq!(o.health_listen, Some("0.0.0.0:8789".parse().unwrap()));

        for (args, want) in [
            (&["--socket", "kstash.sock"][..], "--socket"),
            (&["--socket-mode", "0666"][..], "--socket-mode"),
            (&["--login-cache-size", "0"][..], "--login-cache-size"),
            (&["--token", "kst_x"][..], "holds no access token"),
            (&["--ca-cert", "/nonexistent/ca.pem"][..], "--ca-cert"),
        ] {
            let err = format!("{:#}", options(args).unwrap_err());
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
