//! `kstash kms-plugin`: kube-apiserver's KMS v2 plugin as its own process,
//! a client of a kstash cluster (`--address`, `--ca-cert` and `--timeout`
//! are the global client options; `--timeout` is each call's budget).
//!
//! Invariant: the process runs with umask 077 (the socket file is never
//! born wider than its owner), reads its token only from `--token-file`,
//! and on SIGTERM or SIGINT stops serving, removes its socket and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::GlobalArgs;
use crate::client::ClientOptions;
use crate::plugins::kms::remote::{RemotePlugin, RemotePluginOptions};
use crate::plugins::kms::{check_status_interval, KmsKey, KmsOptions, SocketOptions};
use crate::plugins::socket::parse_mode;

/// `kstash kms-plugin`.
#[derive(Debug, Clone, Args)]
pub struct KmsPluginArgs {
    /// The Unix socket kube-apiserver connects to: `unix:///abs/path` or
    /// `/abs/path` (the EncryptionConfiguration's `endpoint`). Its
    /// directory must exist; a stale socket file is replaced, a live one
    /// is never taken over, and the file is removed on exit.
    #[arg(long, value_name = "ENDPOINT")]
    pub socket: String,
    /// The named key, NAMESPACE/NAME; the token must belong to NAMESPACE
    /// and its policy allow encrypt and decrypt on keys/NAME.
    #[arg(long, value_name = "NS/NAME")]
    pub key: String,
    /// File holding the plugin's access token (refused when others can
    /// read it or group can write it); read again when it changes. The
    /// plugin renews the token before it expires.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Mode of the socket file, in octal; nothing for others (`0660` with
    /// `--socket-group` lets a group connect).
    #[arg(long, value_name = "MODE", default_value = "0600")]
    pub socket_mode: String,
    /// Group (numeric gid) of the socket file; the plugin's user must be a
    /// member. Default: the plugin's own group.
    #[arg(long, value_name = "GID")]
    pub socket_group: Option<u32>,
    /// How often the key's status is fetched from kstash: Status polls are
    /// answered from this cache; a status older than three intervals is
    /// answered UNAVAILABLE (100ms to 60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5s")]
    pub status_interval: Duration,
    /// Serve /healthz (the process runs), /readyz (Status answers ok) and
    /// /metrics over HTTP on this address (e.g. 127.0.0.1:8788; keep it on
    /// loopback).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
}

impl KmsPluginArgs {
    /// The plugin's options, checked.
    fn options(&self, global: &GlobalArgs) -> anyhow::Result<RemotePluginOptions> {
        if global.token.is_some() {
            bail!(
                "kstash kms-plugin reads its access token from --token-file only; unset \
                 --token / KSTASH_TOKEN"
            );
        }
        let mut socket = SocketOptions::new(&self.socket).context("--socket")?;
        socket.mode = parse_mode(&self.socket_mode).context("--socket-mode")?;
        socket.group = self.socket_group;
        let key = KmsKey::parse(&self.key)
            .map_err(anyhow::Error::msg)
            .context("--key")?;
        let status_interval = check_status_interval(self.status_interval)
            .map_err(anyhow::Error::msg)
            .context("--status-interval")?;
        Ok(RemotePluginOptions {
            client: ClientOptions {
                addresses: global.address.clone(),
                token: None,
                ca_cert: global.ca_cert.clone(),
                timeout: global.timeout,
            },
            token_file: self.token_file.clone(),
            kms: KmsOptions {
                socket,
                key,
                status_interval,
            },
            health_listen: self.health_listen,
        })
    }
}

/// Run the plugin until SIGTERM or SIGINT.
pub fn run(global: &GlobalArgs, args: &KmsPluginArgs) -> anyhow::Result<()> {
    let options = args.options(global)?;
    super::process::run_plugin(async {
        let plugin = RemotePlugin::start(options).await?;
        super::process::stop_signal().await?;
        plugin.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["kstash", "kms-plugin"], args].concat())
    }

    #[test]
    fn flags_parse_and_are_checked() {
        let cli = parse(&[
            "--socket",
            "unix:///run/kstash-kms/kms.sock",
            "--key",
            "kube-system/kube-kek",
            "--address",
            "https://a:8200,https://b:8200",
            "--token-file",
            "/etc/kstash-kms/token",
            "--ca-cert",
            "/etc/kstash-kms/ca.crt",
            "--socket-mode",
            "0660",
            "--socket-group",
            "998",
            "--status-interval",
            "2s",
            "--health-listen",
            "127.0.0.1:8788",
            "--timeout",
            "4s",
        ])
        .unwrap();
        let Command::KmsPlugin(args) = &cli.command else {
            panic!("not kms-plugin")
        };
        let o = args.options(&cli.global).unwrap();
        assert_eq!(o.kms.socket.path.to_str(), Some("/run/kstash-kms/kms.sock"));
        assert_eq!((o.kms.socket.mode, o.kms.socket.group), (0o660, Some(998)));
        assert_eq!(o.kms.key.to_string(), "kube-system/kube-kek");
        assert_eq!(o.kms.status_interval, std::time::Duration::from_secs(2));
        assert_eq!(o.client.addresses, ["https://a:8200", "https://b:8200"]);
        assert_eq!(o.client.timeout, std::time::Duration::from_secs(4));
        assert!(o.client.ca_cert.is_some() && o.client.token.is_none());
        assert_eq!(o.health_listen, Some("127.0.0.1:8788".parse().unwrap()));

        let base = [
            "--socket",
            "/run/kms.sock",
            "--key",
            "ns/k",
            "--token-file",
            "/t",
        ];
        let cli = parse(&base).unwrap();
        let Command::KmsPlugin(args) = &cli.command else {
            panic!("not kms-plugin")
        };
        let o = args.options(&cli.global).unwrap();
        assert_eq!((o.kms.socket.mode, o.kms.socket.group), (0o600, None));
        assert_eq!(o.kms.status_interval, std::time::Duration::from_secs(5));

        for (flag, value, want) in [
            ("--socket", "kms.sock", "--socket"),
            ("--key", "kek", "--key"),
            ("--socket-mode", "0666", "--socket-mode"),
            ("--status-interval", "1ms", "--status-interval"),
        ] {
            let mut args: Vec<&str> = base.to_vec();
            let at = args.iter().position(|a| *a == flag);
            match at {
                Some(i) => args[i + 1] = value,
                None => args.extend([flag, value]),
            }
            let cli = parse(&args).unwrap();
            let Command::KmsPlugin(a) = &cli.command else {
                panic!("not kms-plugin")
            };
            let err = format!("{:#}", a.options(&cli.global).unwrap_err());
            assert!(err.contains(want), "{flag} {value}: {err}");
        }
        let cli = parse(&[&base[..], &["--token", "kst_x"]].concat()).unwrap();
        let Command::KmsPlugin(a) = &cli.command else {
            panic!("not kms-plugin")
        };
        let err = a.options(&cli.global).unwrap_err().to_string();
        assert!(err.contains("--token-file only"), "{err}");
        assert!(
            parse(&["--key", "ns/k"]).is_err(),
            "--socket and --token-file are required"
        );
    }
}
