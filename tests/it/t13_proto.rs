//! The public proto as other tools see it: gRPC server reflection on the
//! client port (what `grpcurl` uses when it has no proto file), and comments
//! in `proto/` that name only files the repository has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};

use crate::common::TestNode;

/// The `kstash.v1` services, as `proto/kstash/v1/kstash.proto` declares them.
const SERVICES: &[&str] = &[
    "kstash.v1.Sys",
    "kstash.v1.Auth",
    "kstash.v1.Policies",
    "kstash.v1.KubernetesRoles",
    "kstash.v1.Keys",
    "kstash.v1.Kv",
];

/// One reflection request, answered through either version of the service.
enum Ask {
    ListServices,
    FileContainingSymbol(&'static str),
    FileByFilename(&'static str),
}

/// What reflection answered: service names, file descriptors, or an error
/// (code, message), in the stream or in an error message.
#[derive(Debug)]
enum Answer {
    Services(Vec<String>),
    Files(Vec<FileDescriptorProto>),
    Error(tonic::Code, String),
}

fn files(raw: Vec<Vec<u8>>) -> Answer {
    Answer::Files(
        raw.iter()
            .map(|b| FileDescriptorProto::decode(b.as_slice()).expect("a file descriptor"))
            .collect(),
    )
}

/// Ask `ask` through reflection v1 on `channel`, as grpcurl does: one
/// request on the bidirectional stream.
async fn ask_v1(channel: Channel, ask: Ask) -> Answer {
    use v1::server_reflection_request::MessageRequest as Req;
    use v1::server_reflection_response::MessageResponse as Resp;
    let message_request = Some(match ask {
        Ask::ListServices => Req::ListServices(String::new()),
        Ask::FileContainingSymbol(s) => Req::FileContainingSymbol(s.into()),
        Ask::FileByFilename(f) => Req::FileByFilename(f.into()),
    });
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request,
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(stream_of_one(request))
        .await
        .expect("reflection v1 answers")
        .into_inner();
    let answer = match answers.message().await {
        Ok(answer) => answer.expect("one answer"),
        Err(status) => return Answer::Error(status.code(), status.message().to_string()),
    };
    match answer.message_response.expect("a response") {
        Resp::ListServicesResponse(l) => {
            Answer::Services(l.service.into_iter().map(|s| s.name).collect())
        }
        Resp::FileDescriptorResponse(f) => files(f.file_descriptor_proto),
        Resp::ErrorResponse(e) => Answer::Error(e.error_code.into(), e.error_message),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// [`ask_v1`] through reflection v1alpha (older grpcurl releases use it).
async fn ask_v1alpha(channel: Channel, ask: Ask) -> Answer {
    use v1alpha::server_reflection_request::MessageRequest as Req;
    use v1alpha::server_reflection_response::MessageResponse as Resp;
    let message_request = Some(match ask {
        Ask::ListServices => Req::ListServices(String::new()),
        Ask::FileContainingSymbol(s) => Req::FileContainingSymbol(s.into()),
        Ask::FileByFilename(f) => Req::FileByFilename(f.into()),
    });
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request,
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(stream_of_one(request))
        .await
        .expect("reflection v1alpha answers")
        .into_inner();
    let answer = match answers.message().await {
        Ok(answer) => answer.expect("one answer"),
        Err(status) => return Answer::Error(status.code(), status.message().to_string()),
    };
    match answer.message_response.expect("a response") {
        Resp::ListServicesResponse(l) => {
            Answer::Services(l.service.into_iter().map(|s| s.name).collect())
        }
        Resp::FileDescriptorResponse(f) => files(f.file_descriptor_proto),
        Resp::ErrorResponse(e) => Answer::Error(e.error_code.into(), e.error_message),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A stream of exactly one item.
fn stream_of_one<T: Send + 'static>(item: T) -> impl futures_util::stream::Stream<Item = T> {
    futures_util::stream::iter([item])
}

/// Checks one version of reflection against the node behind `channel`.
async fn check_reflection<F, Fut>(channel: &Channel, ask: F, version: &str)
where
    F: Fn(Channel, Ask) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    tracing::info!("--- {version}: list services");
    let Answer::Services(listed) = ask(channel.clone(), Ask::ListServices).await else {
        panic!("{version}: ListServices answers a list");
    };
    let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let itself = format!("grpc.reflection.{version}.ServerReflection");
    let expected: BTreeSet<&str> = SERVICES.iter().copied().chain([itself.as_str()]).collect();
    assert_eq!(
        listed, expected,
        "{version}: kstash.v1 and reflection itself"
    );

    tracing::info!("--- {version}: the file that declares kstash.v1.Sys");
    let Answer::Files(files) =
        ask(channel.clone(), Ask::FileContainingSymbol("kstash.v1.Sys")).await
    else {
        panic!("{version}: kstash.v1.Sys is described");
    };
    assert_eq!(files.len(), 1, "{version}: the proto imports nothing");
    let file = &files[0];
    assert_eq!(
        (file.name(), file.package()),
        ("kstash/v1/kstash.proto", "kstash.v1"),
        "{version}"
    );
    let declared: Vec<String> = file
        .service
        .iter()
        .map(|s| format!("kstash.v1.{}", s.name()))
        .collect();
    assert_eq!(declared, SERVICES, "{version}: every kstash.v1 service");
    let sys = &file.service[0];
    assert!(
        sys.method.iter().any(|m| m.name() == "Status"),
        "{version}: Sys has Status"
    );
    assert!(
        file.message_type.iter().any(|m| m.name() == "PeerStatus"),
        "{version}: messages are described too"
    );

    tracing::info!("--- {version}: the cluster port's proto is not described");
    for ask_for in [
        Ask::FileContainingSymbol("kstash.cluster.v1.Cluster"),
        Ask::FileByFilename("kstash/cluster/v1/cluster.proto"),
    ] {
        match ask(channel.clone(), ask_for).await {
            Answer::Error(code, message) => {
                assert_eq!(code, tonic::Code::NotFound, "{version}: {message}")
            }
            other => panic!("{version}: the cluster proto leaked: {other:?}"),
        }
    }
}

/// Steps:
/// 1. a fresh node (not initialised, so sealed) on loopback, plaintext;
/// 2. reflection v1: list services (the kstash.v1 ones and reflection);
///    the file containing `kstash.v1.Sys` is `kstash/v1/kstash.proto` and
///    declares every kstash.v1 service; the cluster proto is not found;
/// 3. the same through v1alpha;
/// 4. the calls were counted under the reflection method's own label.
#[tokio::test]
async fn reflection_describes_the_public_services_only() {
    tracing::info!("--- step 1: a fresh node");
    let node = TestNode::start().await;
    let (_, st) = node.http.get("/v1/sys/status", None).await;
    assert_eq!(
        st["sealed"], true,
        "reflection is asked of a sealed node: {st}"
    );
    let channel = Channel::from_shared(format!("http://{}", node.server.addr))
        .unwrap()
        .connect()
        .await
        .expect("gRPC reaches the test node");

    tracing::info!("--- step 2: v1");
    check_reflection(&channel, ask_v1, "v1").await;
    tracing::info!("--- step 3: v1alpha");
    check_reflection(&channel, ask_v1alpha, "v1alpha").await;

    tracing::info!("--- step 4: metrics");
    let text = reqwest::get(format!("http://{}/metrics", node.server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for method in kstash::api::grpc::REFLECTION_METHODS {
        assert!(
            text.contains(&format!("route=\"{method}\"")),
            "{method} is counted: {text}"
        );
    }
}

/// Steps (a plaintext node, sealed: never initialised):
/// 1. reflection through `localhost` (what `grpcurl -plaintext
///    localhost:PORT` sends as `:authority`) → answered;
/// 2. through a foreign name → PERMISSION_DENIED as a gRPC status, as for
///    every gRPC call (the Host rule holds for reflection too);
/// 3. a reflection request as `text/plain` (a browser's cross-site request)
///    → 415, as for every gRPC call.
#[tokio::test]
async fn reflection_passes_the_edges_as_grpc() {
    let node = TestNode::start().await;
    let addr = node.server.addr;
    let as_host = |authority: &str| {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .origin(format!("http://{authority}").parse().unwrap())
    };

    tracing::info!("--- step 1: localhost");
    let channel = as_host(&format!("localhost:{}", addr.port()))
        .connect()
        .await
        .unwrap();
    let Answer::Services(listed) = ask_v1(channel, Ask::ListServices).await else {
        panic!("reflection answers through localhost");
    };
    assert!(listed.iter().any(|s| s == "kstash.v1.Sys"), "{listed:?}");

    tracing::info!("--- step 2: a foreign name");
    let channel = as_host("evil.example").connect().await.unwrap();
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let refused = client
        .server_reflection_info(stream_of_one(request))
        .await
        .expect_err("a foreign host is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    tracing::info!("--- step 3: text/plain");
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{addr}{}",
            kstash::api::grpc::REFLECTION_METHODS[0]
        ))
        .header("content-type", "text/plain")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
}

// ----- file paths in proto comments -------------------------------------------

/// File extensions that make a word in a comment a file path.
const FILE_EXTENSIONS: &[&str] = &[
    ".rs", ".proto", ".md", ".toml", ".sh", ".py", ".yaml", ".yml", ".json",
];

/// Every word of the `//` comments of `text` that names a file (ends in one
/// of [`FILE_EXTENSIONS`]), with its line number.
fn paths_in_comments(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((_, comment)) = line.split_once("//") else {
            continue;
        };
        let words = comment
            .split(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
            .map(|w| w.trim_end_matches('.'));
        for word in words {
            if FILE_EXTENSIONS
                .iter()
                .any(|e| word.ends_with(e) && word.len() > e.len())
            {
                out.push((n + 1, word.to_string()));
            }
        }
    }
    out
}

/// Every `.proto` file under `dir`, recursively.
fn protos_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(protos_under(&path));
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The paths named in proto comments that do not exist, relative to the
/// repository root `root`, as `file:line: path`.
fn missing_paths(root: &Path) -> (usize, Vec<String>) {
    let mut named = 0;
    let mut missing = Vec::new();
    for proto in protos_under(&root.join("proto")) {
        let text = std::fs::read_to_string(&proto).unwrap();
        for (line, path) in paths_in_comments(&text) {
            named += 1;
            if !root.join(&path).is_file() {
                let shown = proto.strip_prefix(root).unwrap_or(&proto).display();
                missing.push(format!("{shown}:{line}: {path}"));
            }
        }
    }
    (named, missing)
}

#[test]
fn the_scan_finds_paths_in_comments_only() {
    let text = "// see `src/raft/cluster.rs` and DESIGN.md.\n\
                message A { string b = 1; } // README.md, \"x/y.proto\"\n\
                package kstash.v1;\n\
                // not a path: kstash.v1, app/db, e.g. 1.5\n";
    let found: Vec<(usize, String)> = paths_in_comments(text);
    assert_eq!(
        found,
        [
            (1, "src/raft/cluster.rs".to_string()),
            (1, "DESIGN.md".to_string()),
            (2, "README.md".to_string()),
            (2, "x/y.proto".to_string()),
        ]
    );
}

/// Steps: scan the comments of every `.proto` under `proto/` for file
/// paths; each must be a file of the repository (paths are relative to its
/// root). The scan must find some, or it proves nothing.
#[test]
fn proto_comments_name_only_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (named, missing) = missing_paths(root);
    assert!(named > 0, "the scan found no path at all");
    assert!(
        missing.is_empty(),
        "proto comments name files the repository does not have:\n{}",
        missing.join("\n")
    );
}
