//! Booting a node: storage backend, service, sweeper, and the client port
//! (TLS with rustls, or plaintext on loopback only).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StorageKind};
use crate::raft::replica::{NoPeers, Replica, ReplicaConfig};
use crate::secret::SecretString;
use crate::service::types::{InitRequest, LoginRequest, UnsealRequest};
use crate::service::Node;
use crate::storage::memory::MemoryBackend;
use crate::storage::Backend;

/// A running node: its bound address, its service and its tasks.
pub struct Server {
    /// The client port actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The node's services.
    pub node: Arc<Node>,
    replica: Arc<Replica>,
    handle: axum_server::Handle<SocketAddr>,
    serve: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Server({})", self.addr)
    }
}

/// Open the configured storage backend.
pub fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    match config.storage {
        StorageKind::Memory => Ok(Arc::new(MemoryBackend::new())),
        #[cfg(feature = "etcd")]
        StorageKind::Etcd => Ok(Arc::new(crate::storage::etcd::EtcdBackend::connect(
            &config.etcd_endpoints,
            &config.etcd_prefix(),
            Duration::from_secs(5),
        )?)),
        #[cfg(not(feature = "etcd"))]
        StorageKind::Etcd => {
            anyhow::bail!(
                "this kstash was built without the etcd backend; rebuild with --features etcd"
            )
        }
    }
}

fn tls_config(config: &Config) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading certificates from {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("reading the private key from {}", key.display()))?
    .with_context(|| format!("{} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not form a valid TLS identity")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

impl Server {
    /// Bind the client port and start serving over `backend`.
    pub async fn start(
        config: &Config,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        config.check()?;
        let mut settings = config.settings();
        let listener = std::net::TcpListener::bind(config.api_addr)
            .with_context(|| format!("binding the client port {}", config.api_addr))?;
        let addr = listener.local_addr()?;
        settings.api_address = addr.to_string();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
        let replica = Replica::start(
            ReplicaConfig::single(config.node_id, addr.to_string(), config.data_dir.clone()),
            backend,
            clock.clone(),
            NoPeers,
            None,
        )
        .await?;
        replica.bootstrap_single(Duration::from_secs(10)).await?;
        let node = Arc::new(Node::new(replica.clone(), clock, settings));
        let app = crate::api::router(node.clone()).into_make_service();
        let handle = axum_server::Handle::new();
        let serve = match tls_config(config)? {
            Some(tls) => {
                let server = axum_server::from_tcp_rustls(
                    listener,
                    axum_server::tls_rustls::RustlsConfig::from_config(tls),
                )?
                .handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
            None => {
                let server = axum_server::from_tcp(listener)?.handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
        };
        let sweeper = tokio::spawn(sweep_loop(node.clone(), config.sweep_interval));
        Ok(Server {
            addr,
            node,
            replica,
            handle,
            serve,
            sweeper,
        })
    }

    /// Stop accepting, finish in-flight requests (up to 5 s), stop tasks.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        self.sweeper.abort();
        self.serve.await??;
        self.replica.shutdown().await;
        Ok(())
    }

    /// Serve until the process is asked to stop (Ctrl-C or SIGTERM).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

async fn sweep_loop(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = node.sweep().await {
            tracing::debug!(error = %e, "sweep failed; will retry");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Set up logging from the config's filter (`RUST_LOG` wins when set).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What `server --dev` creates and prints.
pub struct DevSecrets {
    /// The single unseal key.
    pub unseal_key: SecretString,
    /// The access key.
    pub access_key: SecretString,
    /// A gatekeeper token.
    pub gatekeeper_token: SecretString,
    /// An admin token for namespace `default`.
    pub token: SecretString,
}

/// Initialise 1-of-1, unseal, and mint an admin token for `default`.
pub async fn dev_bootstrap(node: &Node) -> anyhow::Result<DevSecrets> {
    let init = node
        .init(InitRequest {
            shares: 1,
            threshold: 1,
            gatekeeper_tokens: 1,
        })
        .await?;
    let unseal_key = init
        .unseal_keys
        .into_iter()
        .next()
        .context("init made no unseal key")?;
    node.unseal(UnsealRequest {
        key: Some(unseal_key.clone()),
        ..Default::default()
    })
    .await?;
    let login = node
        .login(LoginRequest {
            access_key: init.access_key.clone(),
            namespace: "default".into(),
            policies: vec![crate::acl::ADMIN_POLICY.into()],
            ttl: None,
        })
        .await?;
    Ok(DevSecrets {
        unseal_key,
        access_key: init.access_key,
        gatekeeper_token: init
            .gatekeeper_tokens
            .into_iter()
            .next()
            .context("init made no gatekeeper token")?,
        token: login.token,
    })
}

/// `kstash server`: run a node until stopped.
pub async fn run(config: Config, dev: bool) -> anyhow::Result<()> {
    init_logging(&config.log);
    let backend = open_backend(&config)?;
    let server = Server::start(&config, backend, Arc::new(SystemClock)).await?;
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(addr = %server.addr, storage = %config.storage_name(), "kstash listening");
    if dev {
        let s = dev_bootstrap(&server.node).await?;
        eprintln!(
            "\nWARNING: dev mode. Everything lives in memory and is lost on exit; the secrets\n\
             below are printed in the clear. Never use dev mode in production.\n"
        );
        println!("Address:          {scheme}://{}", server.addr);
        println!("Unseal key:       {}", s.unseal_key.expose());
        println!("Access key:       {}", s.access_key.expose());
        println!("Gatekeeper token: {}", s.gatekeeper_token.expose());
        println!("Token (default):  {}", s.token.expose());
        println!("\n  export KSTASH_ADDR={scheme}://{}", server.addr);
        println!("  export KSTASH_TOKEN={}", s.token.expose());
    }
    let outcome = server.run_until_signal().await;
    if dev && config.data_dir.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(&config.data_dir);
    }
    outcome
}
