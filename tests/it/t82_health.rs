//! Health semantics, as probes and load balancers see them:
//! - `/livez`: 200 whenever the process answers (sealed and uninitialised
//!   nodes are alive);
//! - `/readyz`: 200 when the node serves clients (initialised, unsealed, a
//!   leader known), else 503 with the reason;
//! - `/v1/sys/health`: 501 not initialised, 503 sealed (or no leader),
//!   200 the unsealed leader, 429 an unsealed follower (200 with
//!   `?standbyok=true`); the body is always the status;
//! - status and health say the same through REST and gRPC, field by field,
//!   and what a node does not know about a peer reads as unknown.

use std::collections::BTreeSet;
use std::time::Duration;

use kstash::api::grpc::pb;
use pb::sys_client::SysClient;
use reqwest::Method;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::common::{three_node_cluster, wait_until, ClusterCerts, Http, LinkCuts, TestNode};

const SETTLE: Duration = Duration::from_secs(20);

/// (status code, body text) of a GET.
async fn probe(http: &Http, path: &str) -> (u16, String) {
    let (code, body) = http.send_with_headers(Method::GET, path, &[], None).await;
    let text = match body {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    (code, text)
}

/// The three answers of one node: (livez, readyz, health) status codes.
async fn probes(http: &Http) -> (u16, u16, u16) {
    let (live, _) = probe(http, "/livez").await;
    let (ready, _) = probe(http, "/readyz").await;
    let (health, _) = probe(http, "/v1/sys/health").await;
    (live, ready, health)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_through_its_life() {
    let node = TestNode::start().await;
    let h = &node.http;
    assert_eq!(probes(h).await, (200, 503, 501), "before init");
    let (_, why) = probe(h, "/readyz").await;
    assert!(why.contains("not initialized"), "{why}");

    let (code, init) = h
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{init}");
    assert_eq!(probes(h).await, (200, 503, 503), "initialised, sealed");
    let (_, why) = probe(h, "/readyz").await;
    assert!(why.contains("sealed"), "{why}");
    let (code, body) = h.get("/v1/sys/health", None).await;
    assert_eq!(
        (code, &body["sealed"]),
        (503, &json!(true)),
        "the body is the status"
    );

    let (code, body) = h
        .post(
            "/v1/sys/unseal",
            None,
            json!({"key": init["unseal_keys"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(probes(h).await, (200, 200, 200), "unsealed, leads itself");
    let (code, st) = h.get("/v1/sys/status", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        (&st["leader"], &st["leader_id"]),
        (&json!(true), &json!(1)),
        "{st}"
    );

    let (code, body) = h.get("/v1/sys/health?standbyok=perhaps", None).await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_followers_and_a_sealed_restart() {
    let root = tempfile::Builder::new()
        .prefix("health-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let mut nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let init = crate::t76_faults::init_and_unseal(&nodes).await;

    let leader = nodes[0].leader().expect("a leader");
    wait_until(SETTLE, "every node ready", || async {
        let mut all = true;
        for n in &nodes {
            all &= probe(&n.http, "/readyz").await.0 == 200;
        }
        all
    })
    .await;
    for n in &nodes {
        let (live, ready, health) = probes(&n.http).await;
        let expected = if n.id() == leader { 200 } else { 429 };
        assert_eq!(
            (live, ready, health),
            (200, 200, expected),
            "node {}",
            n.id()
        );
        let (code, st) = n.http.get("/v1/sys/health?standbyok=true", None).await;
        assert_eq!(code, 200, "node {}: {st}", n.id());
        assert_eq!(st["leader_id"], json!(leader), "node {}: {st}", n.id());
    }

    // A follower restarted: alive, not ready, health 503 until unsealed.
    let idx = nodes.iter().position(|n| n.id() != leader).unwrap();
    let spec = nodes.remove(idx).stop().await;
    let restarted = crate::common::ClusterNode::start(spec, &certs, cuts.options())
        .await
        .unwrap();
    assert_eq!(probes(&restarted.http).await.0, 200, "alive while sealed");
    let (ready, why) = probe(&restarted.http, "/readyz").await;
    assert_eq!(ready, 503, "{why}");
    assert_eq!(probe(&restarted.http, "/v1/sys/health").await.0, 503);
    let (code, body) = nodes[0]
        .http
        .post(
            "/v1/sys/unseal",
            None,
            json!({"gatekeeper_token": init["gatekeeper_tokens"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wait_until(SETTLE, "the restarted follower is ready again", || async {
        probe(&restarted.http, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(probe(&restarted.http, "/v1/sys/health").await.0, 429);

    restarted.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

// ----- REST and gRPC agree field by field -----------------------------------

/// One proto message as JSON, by field name, read generically through the
/// descriptor reflection serves: an unset `optional` field is `null`, so a
/// field added to the proto shows up here without touching this code.
fn proto_json(message: &prost_reflect::DynamicMessage) -> Value {
    use prost_reflect::{ReflectMessage, Value as V};
    fn value(v: &V) -> Value {
        match v {
            V::Bool(b) => json!(b),
            V::U32(n) => json!(n),
            V::U64(n) => json!(n),
            V::I32(n) => json!(n),
            V::I64(n) => json!(n),
            V::String(s) => json!(s),
            V::List(items) => Value::Array(items.iter().map(value).collect()),
            V::Message(m) => proto_json(m),
            other => panic!("status holds no {other:?}"),
        }
    }
    let mut out = serde_json::Map::new();
    for field in message.descriptor().fields() {
        let v = if field.supports_presence() && !message.has_field(&field) {
            Value::Null
        } else {
            value(&message.get_field(&field))
        };
        out.insert(field.name().to_string(), v);
    }
    Value::Object(out)
}

/// A `kstash.v1` message from its generated form, as JSON (see [`proto_json`]).
fn grpc_json<M: prost::Message>(name: &str, m: &M) -> Value {
    let pool = prost_reflect::DescriptorPool::decode(kstash::api::grpc::FILE_DESCRIPTOR_SET)
        .expect("the reflected descriptor set decodes");
    let descriptor = pool
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the proto"));
    let dynamic = prost_reflect::DynamicMessage::decode(descriptor, m.encode_to_vec().as_slice())
        .expect("a message decodes by its own descriptor");
    proto_json(&dynamic)
}

/// The field names of a message of the proto and of a schema of the REST
/// OpenAPI document must be the same set.
async fn same_field_names(http: &Http) {
    let (code, doc) = http.get("/v1/openapi.json", None).await;
    assert_eq!(code, 200);
    let pool =
        prost_reflect::DescriptorPool::decode(kstash::api::grpc::FILE_DESCRIPTOR_SET).unwrap();
    for name in ["Status", "PeerStatus"] {
        let rest: BTreeSet<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("OpenAPI describes {name}"))
            .keys()
            .cloned()
            .collect();
        let grpc: BTreeSet<String> = pool
            .get_message_by_name(&format!("kstash.v1.{name}"))
            .unwrap()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(rest, grpc, "{name}: REST's fields and gRPC's differ");
    }
}

/// Where REST and gRPC say different things, field by field (a field
/// absent from REST's JSON reads as `null`; peers are compared by id);
/// empty when they agree. Fails at once if a field exists on one side only.
fn differences(rest: &Value, grpc: &Value) -> Vec<String> {
    fn walk(path: &str, rest: &Value, grpc: &Value, out: &mut Vec<String>) {
        let (Some(r), Some(g)) = (rest.as_object(), grpc.as_object()) else {
            if rest != grpc {
                out.push(format!("{path}: REST {rest} gRPC {grpc}"));
            }
            return;
        };
        for name in r.keys() {
            assert!(g.contains_key(name), "{path}.{name} is in REST only");
        }
        for (name, g_value) in g {
            let r_value = r.get(name).unwrap_or(&Value::Null);
            if name == "peers" {
                let by_id = |v: &Value| -> Vec<Value> {
                    let mut peers = v.as_array().cloned().unwrap_or_default();
                    peers.sort_by_key(|p| p["id"].as_u64());
                    peers
                };
                let (rp, gp) = (by_id(r_value), by_id(g_value));
                if rp.len() != gp.len() {
                    out.push(format!("{path}.peers: REST {r_value} gRPC {g_value}"));
                    continue;
                }
                for (i, (rp, gp)) in rp.iter().zip(&gp).enumerate() {
                    walk(&format!("{path}.peers[{i}]"), rp, gp, out);
                }
            } else {
                walk(&format!("{path}.{name}"), r_value, g_value, out);
            }
        }
    }
    let mut out = Vec::new();
    walk("", rest, grpc, &mut out);
    out
}

/// Status and health of one node through REST and gRPC agree field by
/// field. Two calls cannot be one instant (a sweep may apply an entry in
/// between), so each pair is taken again, a bounded number of times, until
/// it agrees; returns the last REST (status, health) bodies.
async fn rest_and_grpc_agree(http: &Http, addr: std::net::SocketAddr) -> (Value, Value) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC reaches the node");
    let mut sys = SysClient::new(channel);
    let mut last = Vec::new();
    for _ in 0..10 {
        let (code, rest_status) = http.get("/v1/sys/status", None).await;
        assert_eq!(code, 200, "{rest_status}");
        let grpc_status = sys.status(pb::StatusRequest {}).await.unwrap().into_inner();
        let (_, rest_health) = http.get("/v1/sys/health", None).await;
        let grpc_health = sys.health(pb::HealthRequest {}).await.unwrap().into_inner();
        let mut diff = differences(&rest_status, &grpc_json("kstash.v1.Status", &grpc_status));
        diff.extend(differences(
            &rest_health,
            &grpc_json("kstash.v1.Status", &grpc_health),
        ));
        if diff.is_empty() {
            return (rest_status, rest_health);
        }
        last = diff;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("REST and gRPC disagree: {last:#?}");
}

/// The peer of `id` in a status body.
fn peer(st: &Value, id: u64) -> &Value {
    st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("peer {id} in {st}"))
}

#[test]
fn differences_catch_a_field_on_one_side_or_a_value() {
    let rest = json!({"sealed": false, "peers": [{"id": 1, "sealed": null}]});
    let grpc = json!({"sealed": false, "key_term": null, "peers": [{"id": 1, "sealed": null}]});
    assert!(
        differences(&rest, &grpc).is_empty(),
        "absent in REST is null"
    );
    let grpc_sealed = json!({"sealed": false, "peers": [{"id": 1, "sealed": true}]});
    assert_eq!(differences(&rest, &grpc_sealed).len(), 1);
    let only_rest = std::panic::catch_unwind(|| {
        differences(
            &json!({"extra": 1, "sealed": false}),
            &json!({"sealed": false}),
        )
    });
    assert!(only_rest.is_err(), "a field in REST only fails");
}

/// Steps:
/// 1. one node, before init: the proto's and OpenAPI's field names of
///    Status and PeerStatus are the same sets; status and health agree
///    field by field through REST and gRPC;
/// 2. the same after init and unseal;
/// 3. three nodes, initialised and unsealed, then a follower stopped:
///    through a survivor, status and health agree field by field; status
///    says the stopped node is not reachable and its sealed state unknown
///    (`null`), never sealed; health, which asks no peer, says both are
///    unknown for every other node; each node is sure only of itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_status_agree_field_by_field() {
    tracing::info!("--- step 1: a fresh node");
    let node = TestNode::start().await;
    same_field_names(&node.http).await;
    let (st, _) = rest_and_grpc_agree(&node.http, node.server.addr).await;
    assert_eq!(st["initialized"], false, "{st}");

    tracing::info!("--- step 2: initialised and unsealed");
    node.init_unsealed(1, 1).await;
    let (st, health) = rest_and_grpc_agree(&node.http, node.server.addr).await;
    assert_eq!(st["sealed"], false, "{st}");
    let me = peer(&health, 1);
    assert_eq!(
        (&me["sealed"], &me["reachable"]),
        (&json!(false), &json!(true))
    );

    tracing::info!("--- step 3: three nodes, one follower down");
    let root = tempfile::Builder::new()
        .prefix("health-agree-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let mut nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    crate::t76_faults::init_and_unseal(&nodes).await;
    let leader = nodes[0].leader().expect("a leader");
    let idx = nodes.iter().position(|n| n.id() != leader).unwrap();
    let down = nodes.remove(idx);
    let down_id = down.id();
    down.stop().await;
    let survivor = nodes.iter().find(|n| n.id() == leader).unwrap();
    let (st, health) = rest_and_grpc_agree(&survivor.http, survivor.server.addr).await;
    let gone = peer(&st, down_id);
    assert_eq!(
        (&gone["sealed"], &gone["reachable"]),
        (&Value::Null, &json!(false)),
        "not answered: unknown, never sealed: {st}"
    );
    for n in &nodes {
        let p = peer(&st, n.id());
        assert_eq!(
            (&p["sealed"], &p["reachable"]),
            (&json!(false), &json!(true)),
            "{st}"
        );
    }
    for p in health["peers"].as_array().unwrap() {
        let expected = if p["id"] == leader {
            (json!(false), json!(true))
        } else {
            (Value::Null, Value::Null)
        };
        assert_eq!(
            (p["sealed"].clone(), p["reachable"].clone()),
            expected,
            "{health}"
        );
    }
    for n in nodes {
        n.stop().await;
    }
}
