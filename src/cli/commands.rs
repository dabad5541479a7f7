//! One handler per command: gather input (arguments, prompts, files), make
//! the REST calls through [`Client`], print the result.

use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine;
use zeroize::Zeroizing;

use super::output::{line, note, print_json, print_raw, Format, Table};
use super::prompt::{
    enough_keys, gatekeeper_token_file, jwt_file, keys_file, prompt_keys, read_stdin, secret_arg,
    secret_env, secret_file,
};
use super::{
    AccessKeyCommand, AuditCommand, BenchArgs, BenchCommand, Cli, Command, CompareArgs, CsiArgs,
    GatekeeperAuthArgs, GatekeeperTokenCommand, GlobalArgs, KeysFileArgs, KmsArgs,
    KubernetesLoginArgs, KvCommand, LoginArgs, LoginMethod, OperatorCommand, PageArgs,
    PolicyCommand, RaftCommand, RoleCommand, SecretField, SnapshotCommand, TokenCommand,
};
use crate::bench::compare::{CompareOptions, Plan};
use crate::bench::Store;
use crate::client::wire::*;
use crate::client::{Client, ClientError, ClientOptions};
use crate::secret::SecretString;

/// Environment variable holding a gatekeeper token.
const GATEKEEPER_TOKEN_ENV: &str = "KSTASH_GATEKEEPER_TOKEN";
/// Environment variable holding the access key.
const ACCESS_KEY_ENV: &str = "KSTASH_ACCESS_KEY";

const SHOWN_ONCE: &str = "\
These secrets are shown once: kstash keeps no copy it could show again.
Give each unseal key to a different service owner; any {threshold} of them unseal the cluster.
Keep the access key and the gatekeeper tokens in a secrets manager: a gatekeeper token
unseals the cluster on its own, and the access key mints tokens for every namespace.";

const REPLACED_TOKEN: &str = "\
The gatekeeper token you used is consumed: it keeps working only until its grace window
ends. Use the replacement above from now on.";

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::client::install_crypto_provider();
    if let Command::Server(args) = &cli.command {
        let config = args.resolve().context("invalid server configuration")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return rt.block_on(crate::server::run(config, args.dev));
    }
    if let Command::Operator(OperatorCommand::ClusterCerts(args)) = &cli.command {
        return super::certs::run(args, cli.global.format);
    }
    if let Command::Operator(OperatorCommand::Snapshot(SnapshotCommand::Restore {
        file,
        data_dir,
        node_id,
        api_addr,
        cluster_addr,
    })) = &cli.command
    {
        return restore_offline(file, data_dir, *node_id, api_addr, cluster_addr);
    }
    if let Command::Bench(args) = &cli.command {
        return bench(&cli.global, args);
    }
    if let Command::Completion { shell } = &cli.command {
        return completion(*shell);
    }
    if let Command::KmsPlugin(args) = &cli.command {
        return super::kms_plugin::run(&cli.global, args);
    }
    if let Command::CsiProvider(args) = &cli.command {
        return super::csi_provider::run(&cli.global, args);
    }
    let g = &cli.global;
    let client = Client::new(&ClientOptions {
        addresses: g.address.clone(),
        token: g.token.clone().map(SecretString::new),
        ca_cert: g.ca_cert.clone(),
        timeout: g.timeout,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let fmt = g.format;
    rt.block_on(async {
        match cli.command {
            Command::Server(_)
            | Command::Bench(_)
            | Command::Completion { .. }
            | Command::KmsPlugin(_)
            | Command::CsiProvider(_) => {
                unreachable!("handled above")
            }
            Command::Operator(c) => operator(&client, fmt, c).await,
            Command::Login(args) => login(&client, fmt, args).await,
            Command::Token(c) => token(&client, fmt, c).await,
            Command::Policy(c) => policy(&client, fmt, c).await,
            Command::Role(c) => role(&client, fmt, c).await,
            Command::Key(c) => super::keys::run(&client, fmt, c).await,
            Command::Kv(c) => kv(&client, fmt, c).await,
            Command::Audit(c) => audit(&client, fmt, c).await,
        }
    })
}

// ---- operator ---------------------------------------------------------------

async fn operator(client: &Client, fmt: Format, cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Init {
            shares,
            threshold,
            gatekeeper_tokens,
        } => {
            let req = InitRequest {
                shares,
                threshold,
                gatekeeper_tokens,
            };
            let resp = client.init(&req).await?;
            let warning = SHOWN_ONCE.replace("{threshold}", &threshold.to_string());
            match fmt {
                Format::Json => {
                    print_json(&resp)?;
                    note(&warning);
                }
                Format::Table => {
                    let mut t = Table::new();
                    for (i, k) in resp.unseal_keys.iter().enumerate() {
                        t.kv(&format!("Unseal key {}", i + 1), k.expose());
                    }
                    t.kv("Access key", resp.access_key.expose());
                    for (i, k) in resp.gatekeeper_tokens.iter().enumerate() {
                        t.kv(&format!("Gatekeeper token {}", i + 1), k.expose());
                    }
                    t.print()?;
                    line(&format!("\n{warning}"))?;
                }
            }
        }
        OperatorCommand::Unseal {
            keys_file: Some(path),
            ..
        } => unseal_from_file(client, fmt, &path).await?,
        OperatorCommand::Unseal {
            key,
            gatekeeper_token,
            gatekeeper_token_file: token_file,
            keys_file: None,
            reset,
        } => {
            let key = match &key {
                Some(_) => Some(secret_arg(key, "unseal key")?),
                None => None,
            };
            let token = match (&key, gatekeeper_token, token_file, reset) {
                (None, Some(t), _, _) => Some(secret_arg(Some(t), "gatekeeper token")?),
                (None, None, Some(path), _) => Some(gatekeeper_token_file(&path)?),
                (None, None, None, false) => secret_env(GATEKEEPER_TOKEN_ENV),
                _ => None,
            };
            let key = match (key, &token, reset) {
                (None, None, false) => Some(secret_arg(None, "unseal key")?),
                (k, _, _) => k,
            };
            let resp = client
                .unseal(&UnsealRequest {
                    key: key.as_ref(),
                    gatekeeper_token: token.as_ref(),
                    reset,
                })
                .await?;
            match fmt {
                Format::Json => print_json(&resp)?,
                Format::Table => {
                    let mut t = status_table(&resp.status);
                    if let Some(r) = &resp.gatekeeper_token {
                        t.kv("Gatekeeper token (replacement)", r.expose());
                    }
                    t.print()?;
                }
            }
            if resp.gatekeeper_token.is_some() {
                note(REPLACED_TOKEN);
            }
        }
        OperatorCommand::Seal(auth) => {
            let resp = client.seal(&gatekeeper_auth(client, auth).await?).await?;
            print_sys(fmt, &resp, "Sealed.")?;
        }
        OperatorCommand::Rotate(auth) => {
            let resp = client.rotate(&gatekeeper_auth(client, auth).await?).await?;
            print_sys(fmt, &resp, "Rotated the encryption key.")?;
        }
        OperatorCommand::AccessKey(AccessKeyCommand::Rotate(auth)) => {
            let auth = gatekeeper_auth(client, auth).await?;
            let resp = client.rotate_access_key(&auth).await?;
            print_sys(
                fmt,
                &resp,
                "Rotated the access key; the old one no longer mints tokens.",
            )?;
        }
        OperatorCommand::Rekey {
            shares,
            threshold,
            gatekeeper_tokens,
            keys,
        } => {
            let keys = threshold_keys(client, &keys).await?;
            let resp = client
                .rekey(&RekeyRequest {
                    keys: &keys,
                    shares,
                    threshold,
                    gatekeeper_tokens,
                })
                .await?;
            let warning = format!(
                "These secrets are shown once: kstash keeps no copy it could show again.\n\
                 Give each unseal key to a different service owner; any {threshold} of them unseal the cluster.\n\
                 The old unseal keys and every older gatekeeper token no longer work."
            );
            match fmt {
                Format::Json => {
                    print_json(&resp)?;
                    note(&warning);
                }
                Format::Table => {
                    let mut t = Table::new();
                    for (i, k) in resp.unseal_keys.iter().enumerate() {
                        t.kv(&format!("Unseal key {}", i + 1), k.expose());
                    }
                    for (i, k) in resp.gatekeeper_tokens.iter().enumerate() {
                        t.kv(&format!("Gatekeeper token {}", i + 1), k.expose());
                    }
                    t.print()?;
                    line(&format!("\n{warning}"))?;
                }
            }
        }
        OperatorCommand::Status => {
            let status = client.status().await?;
            match fmt {
                Format::Json => print_json(&status)?,
                Format::Table => {
                    status_table(&status).print()?;
                    if !status.peers.is_empty() {
                        line("")?;
                        peers_table(&status.peers).print()?;
                    }
                }
            }
        }
        OperatorCommand::GatekeeperToken(c) => gatekeeper_token(client, fmt, c).await?,
        OperatorCommand::ClusterCerts(_) => unreachable!("handled in run, offline"),
        OperatorCommand::Snapshot(SnapshotCommand::Restore { .. }) => {
            unreachable!("handled in run, offline")
        }
        OperatorCommand::Raft(RaftCommand::Peers) => {
            let resp = client.raft_peers().await?;
            match fmt {
                Format::Json => print_json(&resp)?,
                Format::Table => {
                    let mut t =
                        Table::with_header(&["ID", "API", "CLUSTER", "ROLE", "LEADER", "MATCHED"]);
                    for p in &resp.peers {
                        t.row(vec![
                            p.id.to_string(),
                            p.api_addr.clone(),
                            p.cluster_addr.clone(),
                            p.role.clone(),
                            if p.leader { "yes" } else { "" }.into(),
                            p.matched_index.map(|i| i.to_string()).unwrap_or_default(),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        OperatorCommand::Raft(RaftCommand::Remove { id, auth }) => {
            let auth = gatekeeper_auth(client, auth).await?;
            let resp = client
                .raft_remove(&RemoveRequest {
                    node_id: id,
                    auth: &auth,
                })
                .await?;
            print_sys(fmt, &resp, &format!("Removed node {id} from the cluster."))?;
        }
        OperatorCommand::Snapshot(SnapshotCommand::Save { file, auth }) => {
            let auth = gatekeeper_auth(client, auth).await?;
            let mut out = create_private(&file)?;
            let mut progress = |n: u64| eprint!("\rreceived {n} bytes");
            let saved = client.snapshot_save(&auth, &mut out, &mut progress).await;
            eprintln!();
            let replacement = match saved {
                Ok(r) => r,
                Err(e) => {
                    drop(out);
                    let _ = std::fs::remove_file(&file);
                    return Err(e.into());
                }
            };
            out.sync_all()
                .with_context(|| format!("cannot sync {}", file.display()))?;
            let resp = SysResponse {
                gatekeeper_token: replacement,
                ..Default::default()
            };
            print_sys(
                fmt,
                &resp,
                &format!("Saved the snapshot to {}.", file.display()),
            )?;
        }
    }
    Ok(())
}

async fn gatekeeper_token(
    client: &Client,
    fmt: Format,
    cmd: GatekeeperTokenCommand,
) -> anyhow::Result<()> {
    match cmd {
        GatekeeperTokenCommand::Create { count, keys } => {
            let keys = threshold_keys(client, &keys).await?;
            let resp = client
                .mint_gatekeeper_tokens(&MintGatekeeperTokensRequest { keys: &keys, count })
                .await?;
            match fmt {
                Format::Json => print_json(&resp)?,
                Format::Table => {
                    let mut t = Table::with_header(&["ID", "GATEKEEPER TOKEN"]);
                    for (id, tok) in resp.ids.iter().zip(&resp.gatekeeper_tokens) {
                        t.row(vec![id.clone(), tok.expose().to_string()]);
                    }
                    t.print()?;
                }
            }
            note(
                "These gatekeeper tokens are shown once; each one unseals the cluster on its own.",
            );
        }
        GatekeeperTokenCommand::List(keys) => {
            let keys = threshold_keys(client, &keys).await?;
            let resp = client.list_gatekeeper_tokens(&keys).await?;
            match fmt {
                Format::Json => print_json(&resp)?,
                Format::Table => {
                    let mut t = Table::with_header(&["ID", "CREATED", "USED", "GRACE UNTIL"]);
                    for i in &resp.tokens {
                        t.row(vec![
                            i.id.clone(),
                            i.created_at.clone(),
                            i.used_at.clone().unwrap_or_else(|| "-".into()),
                            i.grace_until.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    t.print()?;
                }
            }
        }
        GatekeeperTokenCommand::Renew {
            gatekeeper_token,
            gatekeeper_token_file: token_file,
        } => {
            let token = match token_file {
                Some(path) => gatekeeper_token_file(&path)?,
                None => explicit_or_env_gatekeeper_token(gatekeeper_token)?,
            };
            let resp = client.renew_gatekeeper_token(&token).await?;
            print_sys(fmt, &resp, "Renewed.")?;
        }
        GatekeeperTokenCommand::Revoke {
            gatekeeper_token,
            gatekeeper_token_file: token_file,
            id,
            keys_file,
        } => {
            let token = match (gatekeeper_token, token_file, &id) {
                (Some(t), None, None) => Some(secret_arg(Some(t), "gatekeeper token")?),
                (None, Some(path), None) => Some(gatekeeper_token_file(&path)?),
                (None, None, Some(_)) => None,
                _ => bail!("give one of TOKEN, --gatekeeper-token-file FILE or --id HEX"),
            };
            match (token, id) {
                (Some(token), _) => {
                    client
                        .revoke_gatekeeper_token(&RevokeGatekeeperTokenRequest {
                            gatekeeper_token: Some(&token),
                            ..Default::default()
                        })
                        .await?;
                }
                (None, id) => {
                    let keys = threshold_keys(client, &KeysFileArgs { keys_file }).await?;
                    client
                        .revoke_gatekeeper_token(&RevokeGatekeeperTokenRequest {
                            gatekeeper_token: None,
                            id: id.as_deref(),
                            keys: &keys,
                        })
                        .await?;
                }
            }
            if fmt == Format::Table {
                line("Revoked.")?;
            }
        }
    }
    Ok(())
}

/// The gatekeeper-key proof of seal, rotate, access-key rotate, raft remove
/// and snapshot save: an explicit `--gatekeeper-token` or
/// `--gatekeeper-token-file`, else `--keys N` prompted keys, else
/// `--keys-file` (the cluster's threshold of them), else the environment.
async fn gatekeeper_auth(
    client: &Client,
    args: GatekeeperAuthArgs,
) -> anyhow::Result<GatekeeperAuth> {
    let token = |token| GatekeeperAuth {
        gatekeeper_token: Some(token),
        keys: Vec::new(),
    };
    let keys = |keys| GatekeeperAuth {
        gatekeeper_token: None,
        keys,
    };
    if let Some(t) = args.gatekeeper_token {
        return Ok(token(secret_arg(Some(t), "gatekeeper token")?));
    }
    if let Some(path) = args.gatekeeper_token_file {
        return Ok(token(gatekeeper_token_file(&path)?));
    }
    if let Some(n) = args.keys {
        return Ok(keys(prompt_keys(n)?));
    }
    if let Some(path) = args.keys_file {
        let from_file = KeysFileArgs {
            keys_file: Some(path),
        };
        return Ok(keys(threshold_keys(client, &from_file).await?));
    }
    if let Some(t) = secret_env(GATEKEEPER_TOKEN_ENV) {
        return Ok(token(t));
    }
    bail!(
        "give --gatekeeper-token TOKEN or --gatekeeper-token-file FILE (or set \
         {GATEKEEPER_TOKEN_ENV}), or --keys N to type N unseal keys, or --keys-file FILE"
    )
}

/// TOKEN as given (`-` prompts); omitted: the environment, else a prompt.
fn explicit_or_env_gatekeeper_token(arg: Option<String>) -> anyhow::Result<SecretString> {
    match arg {
        Some(t) => secret_arg(Some(t), "gatekeeper token"),
        None => match secret_env(GATEKEEPER_TOKEN_ENV) {
            Some(t) => Ok(t),
            None => secret_arg(None, "gatekeeper token"),
        },
    }
}

/// Ask the server for its threshold, then take that many unseal keys from
/// the keys file (read before the server is asked), or prompt for them.
async fn threshold_keys(client: &Client, args: &KeysFileArgs) -> anyhow::Result<Vec<SecretString>> {
    let from_file = match &args.keys_file {
        Some(path) => Some((keys_file(path)?, path)),
        None => None,
    };
    let status = client.status().await?;
    if !status.initialized {
        bail!("the cluster is not initialised (kstash operator init)");
    }
    if let Some((keys, path)) = from_file {
        return enough_keys(keys, status.threshold, path);
    }
    note(&format!(
        "This needs {} of the {} current unseal keys.",
        status.threshold, status.shares
    ));
    prompt_keys(status.threshold)
}

/// `operator unseal --keys-file`: give the file's keys one by one until the
/// node reports unsealed; refused before anything is sent when the file
/// holds fewer keys than the unseal still needs.
async fn unseal_from_file(client: &Client, fmt: Format, path: &Path) -> anyhow::Result<()> {
    let keys = keys_file(path)?;
    let status = client.status().await?;
    if !status.initialized {
        bail!("the cluster is not initialised (kstash operator init)");
    }
    let mut last = UnsealResponse {
        status,
        gatekeeper_token: None,
    };
    if last.status.sealed {
        let needed = last.status.threshold.saturating_sub(last.status.progress);
        let what = format!(
            "the unseal needs {needed} more key(s) (progress {}/{})",
            last.status.progress, last.status.threshold
        );
        if keys.len() < needed as usize {
            bail!("{} holds {} unseal key(s); {what}", shown(path), keys.len());
        }
        for (i, key) in keys.iter().enumerate() {
            last = client
                .unseal(&UnsealRequest {
                    key: Some(key),
                    gatekeeper_token: None,
                    reset: false,
                })
                .await
                .with_context(|| format!("unseal key {} of {}", i + 1, shown(path)))?;
            if !last.status.sealed {
                break;
            }
        }
        if last.status.sealed {
            bail!(
                "still sealed after the {} key(s) of {} (progress {}/{})",
                keys.len(),
                shown(path),
                last.status.progress,
                last.status.threshold
            );
        }
    }
    match fmt {
        Format::Json => print_json(&last)?,
        Format::Table => status_table(&last.status).print()?,
    }
    Ok(())
}

fn status_table(s: &Status) -> Table {
    let mut t = Table::new();
    if s.removed {
        t.kv("Removed from the cluster", "yes: serves no requests");
    }
    t.kv("Initialized", s.initialized).kv("Sealed", s.sealed);
    if s.initialized {
        t.kv("Unseal progress", format!("{}/{}", s.progress, s.threshold))
            .kv(
                "Unseal keys",
                format!("{} of {} needed", s.threshold, s.shares),
            );
    }
    t.kv("Storage", &s.storage)
        .kv("Version", &s.version)
        .kv("Node id", s.node_id)
        .kv("Leader", s.leader);
    if let Some(id) = s.leader_id {
        t.kv("Leader id", id);
    }
    if let Some(term) = s.key_term {
        t.kv("Key term", term);
    }
    t
}

/// The peers of a status: what the answering node does not know reads
/// `unknown` (sealed) or `not asked` (reachable), never a guess.
fn peers_table(peers: &[PeerStatus]) -> Table {
    let mut t = Table::with_header(&["NODE", "ADDRESS", "SEALED", "LEADER", "REACHABLE"]);
    for p in peers {
        t.row(vec![
            p.id.to_string(),
            p.address.clone(),
            p.sealed.map_or("unknown".into(), |s| s.to_string()),
            p.leader.to_string(),
            p.reachable.map_or("not asked".into(), |r| r.to_string()),
        ]);
    }
    t
}

/// Print a [`SysResponse`]: its fields, or `done` when it has none.
fn print_sys(fmt: Format, resp: &SysResponse, done: &str) -> anyhow::Result<()> {
    match fmt {
        Format::Json => print_json(resp)?,
        Format::Table => {
            let mut t = Table::new();
            if let Some(term) = resp.key_term {
                t.kv("Key term", term);
            }
            if let Some(k) = &resp.access_key {
                t.kv("Access key", k.expose());
            }
            if let Some(r) = &resp.gatekeeper_token {
                t.kv("Gatekeeper token (replacement)", r.expose());
            }
            line(done)?;
            t.print()?;
        }
    }
    if resp.access_key.is_some() {
        note("The new access key is shown once.");
    }
    if resp.gatekeeper_token.is_some() {
        note(REPLACED_TOKEN);
    }
    Ok(())
}

// ---- login and tokens ---------------------------------------------------------

async fn login(client: &Client, fmt: Format, args: LoginArgs) -> anyhow::Result<()> {
    let namespace = match (args.method, args.namespace) {
        (Some(LoginMethod::Kubernetes(k)), _) => return kubernetes_login(client, fmt, k).await,
        (None, Some(namespace)) => namespace,
        (None, None) => bail!(
            "give --namespace to log in with the access key, or use `kstash login kubernetes \
             --namespace NS --role ROLE` to log in with a ServiceAccount token"
        ),
    };
    let access_key = match &args.access_key_file {
        Some(path) => secret_file(path).context("--access-key-file")?,
        None => match secret_env(ACCESS_KEY_ENV) {
            Some(k) => k,
            None => secret_arg(None, "access key")?,
        },
    };
    let resp = client
        .login(&LoginRequest {
            access_key: &access_key,
            namespace: &namespace,
            policies: &args.policies,
            ttl: args.ttl,
        })
        .await?;
    print_login(fmt, &resp, args.token_only)
}

/// `kstash login kubernetes`: the JWT from its file, never printed.
async fn kubernetes_login(
    client: &Client,
    fmt: Format,
    args: KubernetesLoginArgs,
) -> anyhow::Result<()> {
    let jwt = jwt_file(&args.jwt_file)?;
    let resp = client
        .kubernetes_login(&args.namespace, &args.role, &jwt)
        .await?;
    print_login(fmt, &resp, args.token_only)
}

/// A new access token: its warnings on stderr, then the token alone
/// (`token_only`) or the whole answer.
fn print_login(fmt: Format, resp: &LoginResponse, token_only: bool) -> anyhow::Result<()> {
    for w in &resp.warnings {
        note(&format!("Warning: {w}"));
    }
    if token_only {
        let mut line = Zeroizing::new(resp.token.expose().to_string());
        line.push('\n');
        print_raw(line.as_bytes())?;
        return Ok(());
    }
    match fmt {
        Format::Json => print_json(resp)?,
        Format::Table => {
            let mut t = Table::new();
            t.kv("Token", resp.token.expose())
                .kv("Expires at", &resp.expires_at)
                .kv("Namespace", &resp.namespace)
                .kv("Policies", resp.policies.join(", "));
            t.print()?;
        }
    }
    Ok(())
}

async fn audit(client: &Client, fmt: Format, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Hash { value } => {
            let input = secret_arg(value, "string to hash")?;
            let out = client.audit_hash(&input).await?;
            match fmt {
                Format::Json => print_json(&out)?,
                Format::Table => line(&out.hash)?,
            }
        }
    }
    Ok(())
}

async fn token(client: &Client, fmt: Format, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Lookup => print_token_info(fmt, &client.token_self().await?)?,
        TokenCommand::Renew { increment } => {
            let info = client.token_renew(&RenewRequest { increment }).await?;
            print_token_info(fmt, &info)?;
        }
        TokenCommand::Revoke { target } => {
            let other = match target {
                Some(t) => Some(secret_arg(Some(t), "token")?),
                None => None,
            };
            client.token_revoke(other.as_ref()).await?;
            if fmt == Format::Table {
                line("Revoked.")?;
            }
        }
    }
    Ok(())
}

fn print_token_info(fmt: Format, info: &TokenInfo) -> anyhow::Result<()> {
    match fmt {
        Format::Json => print_json(info)?,
        Format::Table => {
            let mut t = Table::new();
            t.kv("Accessor", &info.accessor)
                .kv("Namespace", &info.namespace)
                .kv("Policies", info.policies.join(", "))
                .kv("Created at", &info.created_at)
                .kv("Expires at", &info.expires_at)
                .kv(
                    "TTL",
                    crate::clock::format_duration(std::time::Duration::from_secs(info.ttl)),
                )
                .kv("Renewable until", &info.max_expires_at);
            t.print()?;
        }
    }
    Ok(())
}

// ---- policies -----------------------------------------------------------------

async fn policy(client: &Client, fmt: Format, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Put {
            namespace,
            name,
            file,
            idempotency_key,
        } => {
            let text = read_input(&file)?;
            let policy: crate::acl::Policy = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{}: not a policy ({{\"rules\": [{{\"path\", \"capabilities\"}}]}})",
                    shown(&file)
                )
            })?;
            client
                .policy_put(&namespace, &name, &policy, idempotency_key.as_deref())
                .await?;
            if fmt == Format::Table {
                line(&format!("Wrote policy {name} in namespace {namespace}."))?;
            }
        }
        PolicyCommand::Get { namespace, name } => {
            let p = client.policy_get(&namespace, &name).await?;
            match fmt {
                Format::Json => print_json(&p)?,
                Format::Table => {
                    let mut t = Table::new();
                    t.kv("Name", &p.name).kv("Built in", p.builtin);
                    t.print()?;
                    if !p.policy.rules.is_empty() {
                        let mut r = Table::with_header(&["PATH", "CAPABILITIES"]);
                        for rule in &p.policy.rules {
                            let caps: Vec<_> =
                                rule.capabilities.iter().map(|c| c.as_str()).collect();
                            r.row(vec![rule.path.clone(), caps.join(", ")]);
                        }
                        line("")?;
                        r.print()?;
                    }
                }
            }
        }
        PolicyCommand::List { namespace, page } => {
            let (policies, cursor) = pages(&page, |c| {
                let (client, namespace) = (&client, &namespace);
                async move {
                    let l = client
                        .policy_list(namespace, c.as_deref(), page.limit)
                        .await?;
                    Ok((l.policies, l.truncated, l.cursor))
                }
            })
            .await?;
            let l = PolicyList {
                policies,
                truncated: cursor.is_some(),
                cursor,
            };
            match fmt {
                Format::Json => print_json(&l)?,
                Format::Table => print_lines(&l.policies)?,
            }
            note_truncated(l.policies.len(), l.cursor.as_deref());
        }
        PolicyCommand::Delete {
            namespace,
            name,
            idempotency_key,
        } => {
            client
                .policy_delete(&namespace, &name, idempotency_key.as_deref())
                .await?;
            if fmt == Format::Table {
                line(&format!("Deleted policy {name} in namespace {namespace}."))?;
            }
        }
    }
    Ok(())
}

// ---- Kubernetes login roles -----------------------------------------------------

async fn role(client: &Client, fmt: Format, cmd: RoleCommand) -> anyhow::Result<()> {
    match cmd {
        RoleCommand::Put {
            namespace,
            name,
            service_accounts,
            policies,
            ttl,
            audience,
            idempotency_key,
        } => {
            let role = KubernetesRoleRequest {
                service_accounts: &service_accounts,
                policies: &policies,
                ttl,
                audience: audience.as_deref(),
            };
            client
                .put_kubernetes_role(&namespace, &name, &role, idempotency_key.as_deref())
                .await?;
            if fmt == Format::Table {
                line(&format!("Wrote role {name} in namespace {namespace}."))?;
            }
        }
        RoleCommand::Get { namespace, name } => {
            let r = client.get_kubernetes_role(&namespace, &name).await?;
            match fmt {
                Format::Json => print_json(&r)?,
                Format::Table => {
                    let mut t = Table::new();
                    t.kv("Name", &r.name)
                        .kv("Service accounts", r.service_accounts.join(", "))
                        .kv("Policies", r.policies.join(", "))
                        .kv("TTL", &r.ttl)
                        .kv("Audience", &r.audience);
                    t.print()?;
                }
            }
        }
        RoleCommand::List { namespace, page } => {
            let (roles, cursor) = pages(&page, |c| {
                let (client, namespace) = (&client, &namespace);
                async move {
                    let l = client
                        .list_kubernetes_roles(namespace, c.as_deref(), page.limit)
                        .await?;
                    Ok((l.roles, l.truncated, l.cursor))
                }
            })
            .await?;
            let l = KubernetesRoleList {
                roles,
                truncated: cursor.is_some(),
                cursor,
            };
            match fmt {
                Format::Json => print_json(&l)?,
                Format::Table => print_lines(&l.roles)?,
            }
            note_truncated(l.roles.len(), l.cursor.as_deref());
        }
        RoleCommand::Delete {
            namespace,
            name,
            idempotency_key,
        } => {
            client
                .delete_kubernetes_role(&namespace, &name, idempotency_key.as_deref())
                .await?;
            if fmt == Format::Table {
                line(&format!("Deleted role {name} in namespace {namespace}."))?;
            }
        }
    }
    Ok(())
}

// ---- kv -----------------------------------------------------------------------

async fn kv(client: &Client, fmt: Format, cmd: KvCommand) -> anyhow::Result<()> {
    match cmd {
        KvCommand::Put {
            path,
            value,
            cas,
            idempotency_key,
        } => {
            let req = if value == "-" {
                let bytes = read_stdin()?;
                match std::str::from_utf8(&bytes) {
                    Ok(s) => PutSecretRequest {
                        value: Some(SecretString::new(s.to_string())),
                        value_base64: None,
                        cas,
                    },
                    Err(_) => PutSecretRequest {
                        value: None,
                        value_base64: Some(SecretString::new(
                            base64::engine::general_purpose::STANDARD.encode(&bytes[..]),
                        )),
                        cas,
                    },
                }
            } else {
                PutSecretRequest {
                    value: Some(SecretString::new(value)),
                    value_base64: None,
                    cas,
                }
            };
            let resp = client
                .kv_put(&path, &req, idempotency_key.as_deref())
                .await?;
            match fmt {
                Format::Json => print_json(&resp)?,
                Format::Table => {
                    let mut t = Table::new();
                    t.kv("Path", &path).kv("Version", resp.version);
                    t.print()?;
                }
            }
        }
        KvCommand::Get { path, field, stale } => {
            if path.ends_with('/') {
                bail!(
                    "{path:?} names a folder, not a secret: list what is below it with \
                     `kstash kv list {}`",
                    shell_word(&path)
                );
            }
            let s = match client.kv_get(&path, stale).await {
                Ok(s) => s,
                Err(e) => return Err(folder_hint(client, &path, stale, e).await),
            };
            match field {
                Some(SecretField::Value) => print_raw(&secret_bytes(&s)?)?,
                Some(SecretField::Version) => line(&s.version.to_string())?,
                Some(SecretField::CreatedAt) => line(&s.created_at)?,
                Some(SecretField::UpdatedAt) => line(&s.updated_at)?,
                None => match fmt {
                    Format::Json => print_json(&s)?,
                    Format::Table => {
                        let mut t = Table::new();
                        match (&s.value, &s.value_base64) {
                            (Some(v), _) => t.kv("Value", v.expose()),
                            (None, Some(b)) => t.kv("Value (base64)", b.expose()),
                            (None, None) => t.kv("Value", ""),
                        };
                        t.kv("Version", s.version)
                            .kv("Created at", &s.created_at)
                            .kv("Updated at", &s.updated_at);
                        t.print()?;
                    }
                },
            }
        }
        KvCommand::Delete {
            path,
            idempotency_key,
        } => {
            client.kv_delete(&path, idempotency_key.as_deref()).await?;
            if fmt == Format::Table {
                line(&format!("Deleted {path}."))?;
            }
        }
        KvCommand::List {
            prefix,
            stale,
            page,
        } => {
            let prefix = prefix.as_deref().unwrap_or("");
            let (keys, cursor) = pages(&page, |c| {
                let client = &client;
                async move {
                    let l = client
                        .kv_list(prefix, stale, c.as_deref(), page.limit)
                        .await?;
                    Ok((l.keys, l.truncated, l.cursor))
                }
            })
            .await?;
            let l = KeyList {
                keys,
                truncated: cursor.is_some(),
                cursor,
            };
            match fmt {
                Format::Json => print_json(&l)?,
                Format::Table => print_lines(&l.keys)?,
            }
            note_truncated(l.keys.len(), l.cursor.as_deref());
        }
    }
    Ok(())
}

/// A 404 for `path` where names exist below `path/` says how to list them;
/// any other error, or a failed look below, is returned as it was.
async fn folder_hint(client: &Client, path: &str, stale: bool, e: ClientError) -> anyhow::Error {
    if !matches!(e, ClientError::Api { status: 404, .. }) {
        return e.into();
    }
    let folder = format!("{path}/");
    match client.kv_list(&folder, stale, None, Some(1)).await {
        Ok(l) if !l.keys.is_empty() => anyhow::anyhow!(
            "{e}; {path:?} is a folder: list what is below it with `kstash kv list {}`",
            shell_word(&folder)
        ),
        _ => e.into(),
    }
}

/// `text` as one shell word: as it is when it holds only safe characters,
/// else single-quoted.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/_.-:@%+=,".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        shell_quote(text)
    }
}

/// `kstash completion SHELL`: the script, for the whole command tree.
fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kstash", &mut script);
    print_raw(&script)?;
    Ok(())
}

/// The secret's bytes: its text, or its decoded base64 form.
fn secret_bytes(s: &SecretResponse) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    match (&s.value, &s.value_base64) {
        (Some(v), _) => Ok(Zeroizing::new(v.expose().as_bytes().to_vec())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.expose())
            .map(Zeroizing::new)
            .context("the server sent invalid base64"),
        (None, None) => Ok(Zeroizing::new(Vec::new())),
    }
}

// ---- helpers ------------------------------------------------------------------

/// One page of a listing, or with `--all` every page: the names and, when
/// the last page fetched was truncated, the cursor to continue from.
/// `fetch(cursor)` answers (names, truncated, cursor) of one call.
pub(super) async fn pages<F, Fut>(
    page: &PageArgs,
    mut fetch: F,
) -> anyhow::Result<(Vec<String>, Option<String>)>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<String>, bool, Option<String>), ClientError>>,
{
    let mut names = Vec::new();
    let mut cursor = page.cursor.clone();
    loop {
        let (got, truncated, next) = fetch(cursor.clone()).await?;
        let empty = got.is_empty();
        names.extend(got);
        if !truncated {
            return Ok((names, None));
        }
        let Some(next) = next else {
            bail!("the server says the listing goes on but sent no cursor to continue from");
        };
        if !page.all {
            return Ok((names, Some(next)));
        }
        if empty || cursor.as_deref() == Some(next.as_str()) {
            bail!("the server's listing does not advance past {next:?}; stopping");
        }
        cursor = Some(next);
    }
}

/// Tell the user on stderr that a listing is incomplete and how to go on.
pub(super) fn note_truncated(shown: usize, cursor: Option<&str>) {
    if let Some(c) = cursor {
        note(&format!(
            "Listing truncated after {shown} names: more follow. Continue with --cursor {}, or use --all.",
            shell_quote(c)
        ));
    }
}

/// `text` in single quotes for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A file's bytes, or stdin's for `-`.
fn read_input(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if path == Path::new("-") {
        return read_stdin();
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .with_context(|| path.display().to_string())
}

fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

pub(super) fn print_lines(lines: &[String]) -> anyhow::Result<()> {
    let mut t = Table::new();
    for l in lines {
        t.row(vec![l.clone()]);
    }
    t.print()?;
    Ok(())
}

/// Create `path` for writing with mode 0600; refuses to overwrite.
pub(super) fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// `operator snapshot restore`: offline, into an empty data dir. The file
/// is validated before anything is written.
fn restore_offline(
    file: &Path,
    data_dir: &Path,
    node_id: u64,
    api_addr: &str,
    cluster_addr: &str,
) -> anyhow::Result<()> {
    use crate::raft::replica::NodeIdentity;
    use crate::raft::state_machine::{restore_snapshot_offline, validate_snapshot};
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    eprintln!("read {} bytes from {}", bytes.len(), file.display());
    let found = validate_snapshot(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a usable snapshot: {e}", file.display()))?;
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "the data dir {} is not empty; restore only into a new, empty data dir",
                    data_dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", data_dir.display())),
    }
    // The same private data dir the server insists on: made 0700, files
    // 0600, a directory others can reach refused before anything is written.
    crate::data_dir::prepare(data_dir, false)?;
    let (identity, _) = NodeIdentity::open(data_dir, node_id)?;
    let node = crate::raft::types::NodeInfo {
        api_addr: api_addr.to_string(),
        cluster_addr: cluster_addr.to_string(),
        incarnation: identity.incarnation,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let restored = rt
        .block_on(restore_snapshot_offline(&bytes, data_dir, node_id, node))
        .map_err(|e| anyhow::anyhow!("restore failed: {e}"))?;
    line(&format!(
        "Restored snapshot {} (log index {}, {} entries) into {} as node {node_id}.",
        restored.snapshot_id,
        found.last_index,
        found.pairs,
        data_dir.display()
    ))?;
    line(&restart_hint(data_dir, node_id, api_addr, cluster_addr))?;
    Ok(())
}

/// How to start a node restored by `operator snapshot restore`, which
/// depends on whether it was restored for a cluster (`cluster_addr` given)
/// or as a standalone node: `--bootstrap` needs `--cluster-addr`, and a
/// standalone node needs neither (the restored data dir already holds its
/// one-member membership).
fn restart_hint(data_dir: &Path, node_id: u64, api_addr: &str, cluster_addr: &str) -> String {
    let dir = shell_word(&data_dir.display().to_string());
    let api = shell_word(api_addr);
    if cluster_addr.is_empty() {
        format!(
            "Start it as a standalone node on this data dir (no --cluster-addr, no --bootstrap), \
             with your TLS settings (or --tls-disable on a loopback address):\n\
             \n  kstash server --data-dir {dir} --node-id {node_id} --api-addr {api}\n\n\
             It starts sealed: unseal it with the original unseal keys."
        )
    } else {
        let advertised = shell_word(cluster_addr);
        format!(
            "Start it as a new one-member cluster, with its cluster port and TLS files:\n\
             \n  kstash server --data-dir {dir} --node-id {node_id} --api-addr {api} \
             --cluster-addr HOST:PORT --advertise-cluster-addr {advertised} --bootstrap \
             --cluster-ca FILE --cluster-cert FILE --cluster-key FILE\n\n\
             It starts sealed: unseal it with the original unseal keys, then start the \
             other nodes with empty data dirs and --join {advertised}."
        )
    }
}

/// `kstash bench`: a multi-threaded runtime, gRPC connections to the
/// addresses, then the report as a table or JSON.
fn bench(g: &GlobalArgs, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.command {
        Some(BenchCommand::Compare(compare)) => return bench_compare(g.format, compare),
        Some(BenchCommand::Kms(kms)) => return bench_kms(g.format, kms),
        Some(BenchCommand::Csi(csi)) => return bench_csi(g.format, csi),
        None => {}
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let options = crate::bench::BenchOptions {
        workload: args.workload,
        clients: args.clients,
        connections: args.connections,
        duration: args.load.duration,
        warmup: args.load.warmup,
        keys: args.load.keys,
        value_size: args.load.value_size,
        prefill: true,
        progress: true,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = match args.target {
        Store::Kstash => {
            let token = g
                .token
                .as_deref()
                .context("the bench needs an access token (--token or KSTASH_TOKEN)")?;
            let ca = match &g.ca_cert {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            rt.block_on(async {
                let target = crate::bench::KstashTarget::connect(
                    &g.address,
                    args.connections,
                    token,
                    ca.as_deref(),
                )
                .await?;
                crate::bench::run(target, &options).await
            })?
        }
        #[cfg(feature = "etcd")]
        Store::Etcd => rt.block_on(async {
            let target =
                crate::bench::EtcdTarget::connect(&args.etcd_endpoints, args.connections).await?;
            crate::bench::run(target, &options).await
        })?,
        #[cfg(not(feature = "etcd"))]
        Store::Etcd => bail!("{}", crate::bench::compare::ETCD_FEATURE_MISSING),
    };
    if report.ops == 0 {
        bail!(
            "no operation succeeded in {:.1} s: {}",
            report.duration_s,
            report.first_error.as_deref().unwrap_or("none finished")
        );
    }
    match g.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!(
                "{:<10} {:>7} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7}",
                "workload",
                "clients",
                "conns",
                "ops",
                "ops/s",
                "p50 ms",
                "p99 ms",
                "p99.9",
                "errors"
            );
            println!(
                "{:<10} {:>7} {:>5} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                report.workload.name(),
                report.clients,
                report.connections,
                report.ops,
                report.ops_per_s,
                report.p50_ms,
                report.p99_ms,
                report.p999_ms,
                report.errors
            );
            if let Some(e) = &report.first_error {
                note(&format!("first error: {e}"));
            }
        }
    }
    Ok(())
}

/// `kstash bench compare`: find the binaries, run every store in turn on a
/// multi-threaded runtime, write the files, print the table (or JSON).
fn bench_compare(fmt: Format, args: &CompareArgs) -> anyhow::Result<()> {
    let mut stores = Vec::new();
    for store in &args.targets {
        if stores.iter().any(|(s, _)| s == store) {
            continue;
        }
        let bin = match store {
            Store::Kstash => match &args.kstash_bin {
                Some(bin) if !bin.is_file() => {
                    bail!("--kstash-bin {}: no such file", bin.display())
                }
                Some(bin) => bin.clone(),
                None => std::env::current_exe().context("cannot find this executable")?,
            },
            Store::Etcd => crate::bench::compare::etcd_binary(args.etcd_bin.as_deref())?,
        };
        stores.push((*store, bin));
    }
    let options = CompareOptions {
        plan: Plan {
            concurrency: args.concurrency.clone(),
            workloads: args.workloads.clone(),
            runs: args.runs,
            duration: args.load.duration,
            warmup: args.load.warmup,
            connections: args.connections,
            keys: args.load.keys,
            value_size: args.load.value_size,
        },
        stores,
        out: args
            .out
            .clone()
            .unwrap_or_else(crate::bench::compare::default_out_dir),
        scratch: args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    options.plan.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let results = rt.block_on(crate::bench::compare::run(&options))?;
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Format::Table => print!("{}", crate::bench::compare::markdown(&results)),
    }
    note(&format!(
        "results.json, table.md, plot.svg and logs/ are in {}",
        options.out.display()
    ));
    Ok(())
}

/// `kstash bench kms`: the socket or the local cluster, the plan, then the
/// table (or JSON) once every process it started is stopped.
fn bench_kms(fmt: Format, args: &KmsArgs) -> anyhow::Result<()> {
    use crate::bench::kms::{self, KmsOptions, KmsPlan, KmsSource};
    let source = match &args.socket {
        Some(socket) => KmsSource::Socket(kms::socket_path(socket)?),
        None => KmsSource::LocalCluster {
            bin: match &args.kstash_bin {
                Some(bin) if !bin.is_file() => {
                    bail!("--kstash-bin {}: no such file", bin.display())
                }
                Some(bin) => bin.clone(),
                None => std::env::current_exe().context("cannot find this executable")?,
            },
            scratch: args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
        },
    };
    let options = KmsOptions {
        plan: KmsPlan {
            workloads: args.workloads.clone(),
            concurrency: args.concurrency.clone(),
            duration: args.duration,
            warmup: args.warmup,
            ciphertexts: args.ciphertexts,
            burst: args.burst,
            burst_concurrency: args.burst_concurrency,
        },
        source,
        out: args.out.clone().unwrap_or_else(kms::default_out_dir),
    };
    options.plan.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let results = rt.block_on(kms::run(&options))?;
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Format::Table => print!("{}", kms::markdown(&results)),
    }
    note(&format!(
        "results.json, table.md and logs/ are in {}",
        options.out.display()
    ));
    Ok(())
}

/// `kstash bench csi`: the binary, the plan, then the table (or JSON) once
/// every process it started is stopped.
fn bench_csi(fmt: Format, args: &CsiArgs) -> anyhow::Result<()> {
    use crate::bench::csi::{self, CsiOptions, CsiPlan};
    let options = CsiOptions {
        plan: CsiPlan {
            pods: args.pods,
            secrets: args.secrets,
            value_size: args.value_size,
            concurrency: args.concurrency.clone(),
            rounds: args.rounds,
            rotation: args.rotation,
        },
        bin: match &args.kstash_bin {
            Some(bin) if !bin.is_file() => {
                bail!("--kstash-bin {}: no such file", bin.display())
            }
            Some(bin) => bin.clone(),
            None => std::env::current_exe().context("cannot find this executable")?,
        },
        scratch: args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
        out: args.out.clone().unwrap_or_else(csi::default_out_dir),
    };
    options.plan.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let results = rt.block_on(csi::run(&options))?;
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Format::Table => print!("{}", csi::markdown(&results)),
    }
    note(&format!(
        "results.json, table.md and logs/ are in {}",
        options.out.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_table_says_unknown_for_what_was_not_asked() {
        let peer = |id, sealed, reachable| PeerStatus {
            id,
            address: format!("127.0.0.1:820{id}"),
            sealed,
            leader: id == 1,
            reachable,
            last_applied: None,
        };
        let t = peers_table(&[
            peer(1, Some(false), Some(true)),
            peer(2, None, Some(false)),
            peer(3, None, None),
        ]);
        let text = t.render();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[1], ["1", "127.0.0.1:8201", "false", "true", "true"]);
        assert_eq!(
            rows[2],
            ["2", "127.0.0.1:8202", "unknown", "false", "false"]
        );
        assert_eq!(
            rows[3],
            ["3", "127.0.0.1:8203", "unknown", "false", "not", "asked"]
        );
    }

    #[test]
    fn the_restart_hint_fits_the_case() {
        let dir = Path::new("/var/lib/kstash/new node");
        let alone = restart_hint(dir, 4, "127.0.0.1:8200", "");
        assert!(
            alone.contains(
                "\n  kstash server --data-dir '/var/lib/kstash/new node' --node-id 4 \
                 --api-addr 127.0.0.1:8200\n"
            ),
            "{alone}"
        );
        assert!(alone.contains("no --bootstrap"), "{alone}");
        let clustered = restart_hint(dir, 4, "127.0.0.1:8200", "kstash-3:7400");
        assert!(
            clustered.contains("--advertise-cluster-addr kstash-3:7400 --bootstrap"),
            "{clustered}"
        );
        assert!(clustered.contains("--join kstash-3:7400"), "{clustered}");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
