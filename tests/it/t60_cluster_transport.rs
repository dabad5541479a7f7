//! The cluster port: mutual TLS between peers, the Raft RPCs and kstash's
//! own RPCs over it, the link filter, and the envelope size limit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kstash::raft::cluster::{
    self, encode, pb, serve_on, ClusterError, ClusterHandler, ClusterService, ForwardReply,
    ForwardRequest, HandlerFuture, JoinReply, JoinRequest, MembershipExchange, PeerStatus,
    ReadIndexReply, UnsealReply, UnsealRequest, WireError, MAX_ENVELOPE_BYTES,
};
use kstash::raft::forwarder::{Forwarder, MAX_IN_FLIGHT as FORWARDS_IN_FLIGHT};
use kstash::raft::log_store::LogStore;
use kstash::raft::network::{Network, PeerError};
use kstash::raft::state_machine::StateMachineStore;
use kstash::raft::tls::{make_cluster_certs, CertFiles, ClusterTls};
use kstash::raft::types::{typ, NodeInfo};
use kstash::secret::SecretString;
use kstash::state::command::{Applied, Command, Request};
use kstash::state::State;
use kstash::storage::memory::MemoryBackend;
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use pb::cluster_client::ClusterClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// A `ClusterHandler` that records each call and answers from fixed data.
#[derive(Default)]
struct Stub {
    id: typ::NodeId,
    calls: Mutex<Vec<String>>,
    /// Answer `forward` with `NotLeader` (pointing at node 9).
    not_leader: AtomicBool,
    /// The last unseal secret received, to check it arrived intact.
    unsealed_with: Mutex<Option<UnsealRequest>>,
    /// `forward` calls under way now, and the most ever at once.
    forwarding: AtomicUsize,
    most_forwarding: AtomicUsize,
}

impl Stub {
    fn new(id: typ::NodeId) -> Arc<Stub> {
        Arc::new(Stub {
            id,
            ..Default::default()
        })
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl ClusterHandler for Stub {
    fn forward(&self, request: ForwardRequest) -> HandlerFuture<'_, ForwardReply> {
        Box::pin(async move {
            self.record(format!("forward hops={}", request.hops));
            let now = self.forwarding.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_forwarding.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.forwarding.fetch_sub(1, Ordering::SeqCst);
            if self.not_leader.load(Ordering::SeqCst) {
                return Err(ClusterError::NotLeader {
                    leader_id: Some(9),
                    leader: Some(NodeInfo {
                        api_addr: "kstash-9.kstash:8200".into(),
                        cluster_addr: "kstash-9.kstash:7400".into(),
                        ..Default::default()
                    }),
                });
            }
            Ok(ForwardReply {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, self.id), 42),
                response: Ok(Applied::Version(request.request.time_ms)),
            })
        })
    }

    fn read_index(&self) -> HandlerFuture<'_, ReadIndexReply> {
        Box::pin(async move {
            self.record("read_index".into());
            Ok(ReadIndexReply {
                read_log_id: Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(3, self.id),
                    41,
                )),
            })
        })
    }

    fn join(&self, request: JoinRequest) -> HandlerFuture<'_, JoinReply> {
        Box::pin(async move {
            self.record(format!("join {}", request.node_id));
            Ok(JoinReply { log_id: None })
        })
    }

    fn unseal(&self, request: UnsealRequest) -> HandlerFuture<'_, UnsealReply> {
        Box::pin(async move {
            self.record("unseal".into());
            *self.unsealed_with.lock().unwrap() = Some(request);
            Ok(UnsealReply {
                sealed: true,
                progress: 1,
                threshold: 3,
            })
        })
    }

    fn peer_status(&self) -> HandlerFuture<'_, PeerStatus> {
        Box::pin(async move {
            self.record("peer_status".into());
            Ok(PeerStatus {
                id: self.id,
                initialized: true,
                sealed: false,
                progress: 0,
                term: 3,
                leader: Some(self.id),
                last_applied: None,
            })
        })
    }

    fn membership(&self, request: MembershipExchange) -> HandlerFuture<'_, MembershipExchange> {
        Box::pin(async move {
            self.record("membership".into());
            Ok(request)
        })
    }
}

/// One node: a real Raft over the sled log store and a memory state
/// machine, its cluster port over mutual TLS, and a stub handler.
struct Peer {
    id: typ::NodeId,
    info: NodeInfo,
    tls: ClusterTls,
    raft: typ::Raft,
    stub: Arc<Stub>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), cluster::ServeError>>,
    _dir: tempfile::TempDir,
}

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 200,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        install_snapshot_timeout: 5000,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

impl Peer {
    /// Start node `id` with certificate `cert_name`, advertising
    /// `host:<port>` (the port is bound on 127.0.0.1).
    async fn start(id: typ::NodeId, certs: &CertFiles, cert_name: &str, host: &str) -> Peer {
        let (_, cert, key) = certs.nodes.iter().find(|(n, _, _)| n == cert_name).unwrap();
        let tls = ClusterTls::load(&certs.ca_cert, cert, key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let info = NodeInfo {
            api_addr: format!("{host}:1"),
            cluster_addr: format!("{host}:{port}"),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("log")).unwrap();
        let sm = StateMachineStore::open(
            State::new(Arc::new(MemoryBackend::new())),
            &dir.path().join("sm"),
        )
        .unwrap();
        let network = Network::new(id, tls.clone());
        let raft = typ::Raft::new(id, raft_config(), network, log, sm)
            .await
            .unwrap();
        let stub = Stub::new(id);
        let handler: Arc<dyn ClusterHandler> = stub.clone();
        let service = ClusterService::new(raft.clone(), handler);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_tls = tls.clone();
        let serving = tokio::spawn(async move {
            serve_on(listener, &server_tls, service, async {
                let _ = stopped.await;
            })
            .await
        });
        Peer {
            id,
            info,
            tls,
            raft,
            stub,
            stop,
            serving,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.raft.shutdown().await.unwrap();
        let _ = self.stop.send(());
        self.serving.await.unwrap().unwrap();
    }
}

/// A raw client of `addr` trusting `ca`, presenting `identity` if any.
fn raw_client(ca: &Path, identity: Option<(&Path, &Path)>, addr: &str) -> ClusterClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect_lazy();
    ClusterClient::new(channel)
}

fn forward_request(hops: u8, time_ms: u64) -> ForwardRequest {
    ForwardRequest {
        hops,
        request: Request {
            time_ms,
            command: Command::Sweep,
            idempotency: None,
        },
    }
}

/// Call every RPC of the cluster service with a well-formed envelope.
async fn call_every_rpc(
    client: &mut ClusterClient<Channel>,
) -> Vec<(&'static str, Result<pb::Envelope, Status>)> {
    let unit = || encode(&()).unwrap();
    let join = JoinRequest {
        node_id: 7,
        node: NodeInfo {
            api_addr: "evil:1".into(),
            cluster_addr: "evil:2".into(),
            ..Default::default()
        },
    };
    let unseal = UnsealRequest::GatekeeperToken(SecretString::new("ksg_not-sent".into()));
    let vote = typ::VoteRequest::new(openraft::Vote::new(99, 7), None);
    let ok = |r: Result<tonic::Response<pb::Envelope>, Status>| r.map(|r| r.into_inner());
    vec![
        ("AppendEntries", ok(client.append_entries(unit()).await)),
        ("Vote", ok(client.vote(encode(&vote).unwrap()).await)),
        ("InstallSnapshot", ok(client.install_snapshot(unit()).await)),
        (
            "Forward",
            ok(client
                .forward(encode(&forward_request(2, 1)).unwrap())
                .await),
        ),
        (
            "ForwardBatch",
            ok(client
                .forward_batch(encode(&vec![forward_request(2, 1)]).unwrap())
                .await),
        ),
        ("ReadIndex", ok(client.read_index(unit()).await)),
        ("Join", ok(client.join(encode(&join).unwrap()).await)),
        ("Unseal", ok(client.unseal(encode(&unseal).unwrap()).await)),
        ("PeerStatus", ok(client.peer_status(unit()).await)),
    ]
}

/// The whole error chain of a status, for assertions and the log.
fn chain(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        text.push_str(&format!(" <- {s}"));
        source = s.source();
    }
    text
}

/// How many failed TLS handshakes the cluster servers have logged (tonic
/// logs each at debug level; `capture_logs` records them).
fn tls_refusals() -> usize {
    let logs = crate::common::captured_logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .matches("tls accept error")
        .count()
}

/// Wait (briefly) until the count of failed handshakes exceeds `before`.
async fn wait_for_more_tls_refusals(before: usize) -> bool {
    for _ in 0..50 {
        if tls_refusals() > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Steps:
/// 1. make the cluster certificates (names `127.0.0.1`, `localhost`) and a
///    second, foreign CA with `cluster-certs`' function;
/// 2. start node 1 (a real single-node Raft, initialised) at
///    `127.0.0.1:<port>` and node 2 (a real, empty Raft) at
///    `localhost:<port>`, each serving the cluster port over mTLS with a stub
///    handler;
/// 3. kstash RPCs from node 2 to node 1 with a valid certificate: peer
///    status, forward (hop budget decremented; spent budget refused before
///    the handler; not-leader hint), read index, join, unseal (the secret
///    arrives intact);
/// 4. Raft RPCs over the wire: node 1 snapshots and purges its log, then
///    adds node 2 as a learner, which needs InstallSnapshot and
///    AppendEntries to node 2 (a DNS name); a Vote from node 2 to node 1 is
///    answered (refused: stale term);
/// 5. a client without a client certificate, one with a certificate from
///    the foreign CA, and a plaintext client get no answer to any of the
///    eight RPCs (the server logs a failed handshake; the stub sees
///    nothing);
/// 6. the link filter: a cut link fails as Unreachable for both Raft and
///    kstash RPCs without sending; other links and address-only clients
///    still work;
/// 7. oversized envelopes: the client refuses to send one; the server
///    refuses one that a raw client sends, before the handler;
/// 8. shut both nodes down; no unseal secret sent above is in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_talk_over_mutual_tls_and_strangers_get_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::common::capture_logs();

    tracing::info!("--- step 1: certificates");
    let dir = tempfile::tempdir().unwrap();
    let certs = make_cluster_certs(
        &dir.path().join("cluster"),
        &["127.0.0.1".to_string(), "localhost".to_string()],
    )
    .unwrap();
    let foreign =
        make_cluster_certs(&dir.path().join("foreign"), &["127.0.0.1".to_string()]).unwrap();

    tracing::info!("--- step 2: start two nodes");
    let n1 = Peer::start(1, &certs, "127.0.0.1", "127.0.0.1").await;
    let n2 = Peer::start(2, &certs, "localhost", "localhost").await;
    n1.raft
        .initialize(BTreeMap::from([(n1.id, n1.info.clone())]))
        .await
        .unwrap();
    n1.raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "node 1 leads itself")
        .await
        .unwrap();

    tracing::info!("--- step 3: kstash RPCs with a valid certificate");
    let net2 = Network::new(2, n2.tls.clone());
    let to1 = net2.peer(1, &n1.info);
    let status = to1.peer_status().await.unwrap();
    assert_eq!(
        (status.id, status.leader, status.sealed),
        (1, Some(1), false)
    );

    let reply = to1.forward(&forward_request(3, 1234)).await.unwrap();
    assert_eq!(reply.response, Ok(Applied::Version(1234)));
    assert_eq!(reply.log_id.index, 42);
    let spent = to1.forward(&forward_request(0, 1)).await.unwrap_err();
    assert_eq!(
        spent.remote(),
        Some(&ClusterError::HopsExhausted),
        "{spent}"
    );
    n1.stub.not_leader.store(true, Ordering::SeqCst);
    let e = to1.forward(&forward_request(1, 1)).await.unwrap_err();
    match e.remote() {
        Some(ClusterError::NotLeader {
            leader_id: Some(9),
            leader: Some(info),
        }) => assert_eq!(info.cluster_addr, "kstash-9.kstash:7400"),
        other => panic!("want NotLeader with a hint, got {other:?}"),
    }
    assert!(e.is_retryable());
    n1.stub.not_leader.store(false, Ordering::SeqCst);

    // A batch: one outcome per request, in order; each spends its own hop.
    let batch = [
        forward_request(3, 11),
        forward_request(0, 12),
        forward_request(2, 13),
    ];
    let outcomes = to1.forward_batch(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(
        outcomes[0].as_ref().unwrap().response,
        Ok(Applied::Version(11))
    );
    let spent = outcomes[1].as_ref().unwrap_err();
    assert_eq!(
        spent.remote(),
        Some(&ClusterError::HopsExhausted),
        "{spent}"
    );
    assert_eq!(
        outcomes[2].as_ref().unwrap().response,
        Ok(Applied::Version(13))
    );
    let too_many: Vec<_> = (0..=cluster::MAX_FORWARD_BATCH as u64)
        .map(|i| forward_request(3, i))
        .collect();
    let refused = to1.forward_batch(&too_many).await.unwrap_err();
    assert!(
        matches!(refused, PeerError::Unreachable { .. }) && refused.remote().is_none(),
        "refused before any is proposed: {refused}"
    );

    assert_eq!(to1.read_index().await.unwrap().index(), 41);
    let before_burst = n1.stub.calls();

    // A burst through the forwarder: every caller gets its own outcome, and
    // the leader sees more forwards at once than calls can be under way
    // (so they came in batches).
    let forwarder = Forwarder::start();
    let burst = (100..150).map(|i| forwarder.forward(to1.clone(), forward_request(3, i)));
    let outcomes = futures_util::future::join_all(burst).await;
    for (i, outcome) in (100..150).zip(outcomes) {
        assert_eq!(outcome.unwrap().response, Ok(Applied::Version(i)));
    }
    let most = n1.stub.most_forwarding.load(Ordering::SeqCst);
    assert!(most > FORWARDS_IN_FLIGHT, "{most} forwards at once");
    n1.stub.calls.lock().unwrap().truncate(before_burst.len());
    let join = JoinRequest {
        node_id: 2,
        node: n2.info.clone(),
    };
    assert_eq!(to1.join(&join).await.unwrap(), JoinReply { log_id: None });
    let secret = SecretString::new("ksg_the-token-travels-inside-mtls".into());
    let unsealed = to1
        .unseal(&UnsealRequest::GatekeeperToken(secret.clone()))
        .await
        .unwrap();
    assert_eq!(
        (unsealed.sealed, unsealed.progress, unsealed.threshold),
        (true, 1, 3)
    );
    assert_eq!(
        n1.stub.unsealed_with.lock().unwrap().take(),
        Some(UnsealRequest::GatekeeperToken(secret))
    );
    assert_eq!(
        n1.stub.calls(),
        [
            "peer_status",
            "forward hops=2",
            "forward hops=0",
            "forward hops=2",
            "forward hops=1",
            "read_index",
            "join 2",
            "unseal"
        ],
        "a spent hop budget never reaches the handler; it sees the budget left"
    );

    tracing::info!("--- step 4: Raft RPCs over the wire");
    n1.raft.trigger().snapshot().await.unwrap();
    let m = n1
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await
        .unwrap();
    let snap = m.snapshot.unwrap();
    n1.raft.trigger().purge_log(snap.index).await.unwrap();
    n1.raft
        .wait(Some(Duration::from_secs(10)))
        .purged(Some(snap), "log purged up to the snapshot")
        .await
        .unwrap();
    let added = tokio::time::timeout(
        Duration::from_secs(20),
        n1.raft.add_learner(n2.id, n2.info.clone(), true),
    )
    .await
    .expect("the learner catches up in time")
    .unwrap();
    n2.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(added.log_id.index), "learner applied the join")
        .await
        .unwrap();
    let m2 = n2.raft.metrics().borrow().clone();
    assert_eq!(
        m2.snapshot.map(|s| s.index),
        Some(snap.index),
        "node 2 got node 1's snapshot"
    );
    assert_eq!(m2.current_leader, Some(1));

    let mut net2_raft = net2.clone();
    let mut conn = net2_raft.new_client(1, &n1.info).await;
    let stale = typ::VoteRequest::new(openraft::Vote::new(0, 2), None);
    let resp = conn
        .vote(stale, RPCOption::new(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(!resp.vote_granted, "a stale vote is refused: {resp:?}");

    tracing::info!("--- step 5: strangers get no answer");
    let addr1 = n1.info.cluster_addr.clone();
    let before = n1.stub.calls();
    let valid = (certs.nodes[1].1.as_path(), certs.nodes[1].2.as_path());
    let mut control = raw_client(&certs.ca_cert, Some(valid), &addr1);
    assert!(control.peer_status(encode(&()).unwrap()).await.is_ok());
    let mut before_strangers = n1.stub.calls();
    assert_eq!(before_strangers.pop().as_deref(), Some("peer_status"));
    assert_eq!(before_strangers, before);

    let no_cert = raw_client(&certs.ca_cert, None, &addr1);
    let foreign_cert = raw_client(
        &certs.ca_cert,
        Some((&foreign.nodes[0].1, &foreign.nodes[0].2)),
        &addr1,
    );
    let plaintext = ClusterClient::new(
        Endpoint::from_shared(format!("http://{addr1}"))
            .unwrap()
            .connect_lazy(),
    );
    for (who, mut client) in [
        ("no client certificate", no_cert),
        ("a certificate from another CA", foreign_cert),
        ("plaintext", plaintext),
    ] {
        let refusals = tls_refusals();
        for (rpc, outcome) in call_every_rpc(&mut client).await {
            let status = match outcome {
                Ok(env) => panic!("{who}: {rpc} was answered: {env:?}"),
                Err(status) => status,
            };
            tracing::info!(who, rpc, error = %chain(&status), "refused");
            assert!(
                std::error::Error::source(&status).is_some(),
                "{who}: {rpc}: the error comes from the transport, not from an answer: {}",
                chain(&status)
            );
            assert_ne!(status.code(), Code::Ok);
        }
        assert!(
            wait_for_more_tls_refusals(refusals).await,
            "{who}: the server logs a failed TLS handshake"
        );
    }
    assert_eq!(
        n1.stub.calls().len(),
        before.len() + 1,
        "no stranger's RPC reached the handler"
    );

    tracing::info!("--- step 6: the link filter");
    let cut = Network::new(2, n2.tls.clone())
        .with_link_filter(Arc::new(|from, to| !(from == 2 && to == 1)));
    let calls = n1.stub.calls().len();
    let e = cut.peer(1, &n1.info).peer_status().await.unwrap_err();
    assert!(matches!(e, PeerError::Unreachable { .. }), "{e}");
    let e = cut
        .peer(1, &n1.info)
        .unseal(&UnsealRequest::Key(SecretString::new("k".into())))
        .await
        .unwrap_err();
    assert!(matches!(e, PeerError::Unreachable { .. }), "{e}");
    let mut cut_raft = cut.clone();
    let mut conn = cut_raft.new_client(1, &n1.info).await;
    let e = conn
        .vote(
            typ::VoteRequest::new(openraft::Vote::new(0, 2), None),
            RPCOption::new(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e}");
    assert_eq!(n1.stub.calls().len(), calls, "nothing was sent");
    let to2 = Network::new(1, n1.tls.clone())
        .with_link_filter(Arc::new(|from, to| !(from == 2 && to == 1)))
        .peer(2, &n2.info);
    assert_eq!(
        to2.peer_status().await.unwrap().id,
        2,
        "the other direction works"
    );
    assert_eq!(
        cut.peer_at(&n1.info.cluster_addr)
            .peer_status()
            .await
            .unwrap()
            .id,
        1
    );

    tracing::info!("--- step 7: oversized envelopes");
    let calls = n1.stub.calls().len();
    let big = ForwardRequest {
        hops: 1,
        request: Request {
            time_ms: 1,
            command: Command::PutSecret {
                by: kstash::state::command::Actor::AccessToken { id: [0; 32] },
                namespace: "ns".into(),
                path: "big".into(),
                cas: None,
                term: 1,
                ciphertext: vec![0; MAX_ENVELOPE_BYTES],
            },
            idempotency: None,
        },
    };
    let e = to1.forward(&big).await.unwrap_err();
    assert!(
        matches!(
            e,
            PeerError::Wire {
                source: WireError::TooLarge { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.is_retryable());
    let mut raw = raw_client(&certs.ca_cert, Some(valid), &addr1);
    let status = raw
        .forward(pb::Envelope {
            payload: vec![cluster::FORMAT_V1; MAX_ENVELOPE_BYTES + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", chain(&status));
    assert!(
        status.message().contains("exceeds the limit"),
        "{}",
        chain(&status)
    );
    assert!(
        std::error::Error::source(&status).is_none(),
        "the server answered"
    );
    assert_eq!(n1.stub.calls().len(), calls, "the handler saw neither");

    tracing::info!("--- step 8: shut down");
    n2.stop().await;
    n1.stop().await;
    let logs = crate::common::captured_logs().lock().unwrap();
    let logs = String::from_utf8_lossy(&logs);
    assert!(
        !logs.contains("the-token-travels-inside-mtls") && !logs.contains("ksg_not-sent"),
        "an unseal secret reached a log line"
    );
}
