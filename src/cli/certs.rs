//! `kstash operator cluster-certs`: make the cluster CA and one mTLS
//! certificate per node for the cluster port, offline (no server is
//! contacted). The work is [`crate::raft::tls::make_cluster_certs`]; this
//! file only parses and prints.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::output::{line, note, print_json, Format, Table};
use crate::raft::tls::{make_cluster_certs_with, CA_VALIDITY_DAYS, NODE_VALIDITY_DAYS};

/// `kstash operator cluster-certs --out DIR NAME...`.
#[derive(Debug, Clone, Args)]
pub struct ClusterCertsArgs {
    /// Directory to write into (created with mode 0700 if missing); no
    /// existing file is ever overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Node names: the DNS name (e.g. `kstash-0.kstash`) or IP address that
    /// peers dial; each becomes the certificate's subject alternative name.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// A name every node certificate also carries (repeatable), e.g. the
    /// client Service in front of all nodes (`kstash.kstash.svc`).
    #[arg(long = "san", value_name = "NAME")]
    pub extra_names: Vec<String>,
}

/// What `--format json` prints.
#[derive(Serialize)]
struct Written {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    nodes: Vec<WrittenNode>,
}

#[derive(Serialize)]
struct WrittenNode {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

/// Make the certificates and list the files written.
pub fn run(args: &ClusterCertsArgs, fmt: Format) -> anyhow::Result<()> {
    let files = make_cluster_certs_with(&args.out, &args.names, &args.extra_names)
        .with_context(|| format!("cannot make cluster certificates in {}", args.out.display()))?;
    match fmt {
        Format::Json => print_json(&Written {
            ca_cert: files.ca_cert.clone(),
            ca_key: files.ca_key.clone(),
            nodes: files
                .nodes
                .iter()
                .map(|(name, cert, key)| WrittenNode {
                    name: name.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .collect(),
        })?,
        Format::Table => {
            let mut t = Table::with_header(&["FOR", "CERTIFICATE", "PRIVATE KEY"]);
            t.row(vec![
                "cluster CA".into(),
                files.ca_cert.display().to_string(),
                files.ca_key.display().to_string(),
            ]);
            for (name, cert, key) in &files.nodes {
                t.row(vec![
                    name.clone(),
                    cert.display().to_string(),
                    key.display().to_string(),
                ]);
            }
            t.print()?;
            line("")?;
            line(&format!(
                "The CA is valid for {CA_VALIDITY_DAYS} days, node certificates for {NODE_VALIDITY_DAYS} days."
            ))?;
        }
    }
    note(
        "Give each node ca.pem, its NAME.pem and NAME-key.pem (--cluster-ca, --cluster-cert,\n\
         --cluster-key). Keep ca-key.pem offline: whoever holds it can mint a peer identity,\n\
         and peers receive unseal keys and gatekeeper tokens over the cluster port.",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command, OperatorCommand};

    #[test]
    fn parses_out_and_names() {
        let cli = Cli::try_parse_from([
            "kstash",
            "operator",
            "cluster-certs",
            "--out",
            "/tmp/x",
            "kstash-0.kstash",
            "10.0.0.1",
        ])
        .unwrap();
        match cli.command {
            Command::Operator(OperatorCommand::ClusterCerts(a)) => {
                assert_eq!(a.names, ["kstash-0.kstash", "10.0.0.1"]);
                assert_eq!(a.out, std::path::Path::new("/tmp/x"));
            }
            other => panic!("{other:?}"),
        }
        let e = Cli::try_parse_from(["kstash", "operator", "cluster-certs", "--out", "/tmp/x"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
