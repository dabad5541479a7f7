//! The single-node walk-through again, through the real `kstash` binary:
//! a `kstash server` child process and one CLI process per step.
//!
//! Steps:
//! 1. start `kstash server --tls-disable --api-addr 127.0.0.1:<free port>`;
//! 2. `operator init --shares 5 --threshold 3 --format json`;
//! 3. `operator status` says sealed, progress 0/3;
//! 4. `operator unseal KEY` twice: progress 2/3, still sealed;
//! 5. the third key unseals;
//! 6. `login --namespace team-a --policy admin` (access key from
//!    `KSTASH_ACCESS_KEY`) prints a token;
//! 7. `policy put team-a app-rw -` from stdin (app/* read, create, update);
//! 8. `login --namespace team-a --policy app-rw --token-only`;
//! 9. `kv put app/db s3cret`, then `kv get app/db --field value` prints exactly `s3cret`;
//! 10. a team-b token's `kv get app/db` fails with exit 1;
//! 11. `kv get app/../x` is refused (by the client: URL normalisation would
//!     turn it into `x`), and `kv get app//x` by the server with HTTP 400;
//! 12. a `--ttl 1s` token fails after 1.5 s;
//! 13. a revoked token fails;
//! 14. `--address http://127.0.0.1:1,<live>` fails over to the live node;
//! 15. usage errors exit 2; the access key is never printed after init.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kstash");

/// A `kstash server` child process, killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let child = Command::new(BIN)
            .env_clear()
            .env("KSTASH_LOG", "warn")
            .args(["server", "--tls-disable", "--api-addr", &addr.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kstash server starts");
        let mut server = ServerProcess {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("kstash server exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one CLI run produced.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Assert success and return stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        &self.stdout
    }

    /// Assert a failure with `code` whose stderr contains `needle`.
    fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in {self:?}"
        );
    }
}

/// Runs the CLI against one server with a clean environment.
struct Cli {
    address: String,
    /// Everything printed after init (to check the access key never is).
    seen: std::cell::RefCell<String>,
}

impl Cli {
    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("KSTASH_ADDR", &self.address)
            .env("KSTASH_TIMEOUT", "10s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let out = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        let mut seen = self.seen.borrow_mut();
        seen.push_str(&out.stdout);
        seen.push_str(&out.stderr);
        out
    }

    fn with_token(&self, token: &str, args: &[&str]) -> Out {
        self.run(args, &[("KSTASH_TOKEN", token)], None)
    }

    /// Init with one unseal key, unseal: the access key and an admin token
    /// of `ns`.
    fn init_one_key(&self, ns: &str) -> (String, String) {
        let out = self.run(
            &[
                "operator",
                "init",
                "--shares",
                "1",
                "--threshold",
                "1",
                "--format",
                "json",
            ],
            &[],
            None,
        );
        let init: Value = serde_json::from_str(out.ok()).unwrap();
        let key = init["unseal_keys"][0].as_str().unwrap();
        let access_key = init["access_key"].as_str().unwrap().to_string();
        self.run(&["operator", "unseal", key], &[], None).ok();
        let admin = self.login(&access_key, ns, "admin", &[]);
        (access_key, admin)
    }

    fn login(&self, access_key: &str, ns: &str, policy: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "login",
            "--namespace",
            ns,
            "--policy",
            policy,
            "--token-only",
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args, &[("KSTASH_ACCESS_KEY", access_key)], None);
        let token = out.ok().trim_end_matches('\n').to_string();
        assert!(
            token.starts_with("kst_") && !token.contains(char::is_whitespace),
            "{out:?}"
        );
        token
    }
}

#[test]
fn cli_walk_through() {
    eprintln!("--- step 1: start the server");
    let server = ServerProcess::start();
    let cli = Cli {
        address: server.url(),
        seen: Default::default(),
    };

    eprintln!("--- step 2: init 5/3");
    let out = cli.run(
        &[
            "operator",
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--format",
            "json",
        ],
        &[],
        None,
    );
    let init: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(out.stderr.contains("shown once"), "{out:?}");
    let keys: Vec<String> = init["unseal_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(init["gatekeeper_tokens"].as_array().unwrap().len(), 1);
    let access_key = init["access_key"].as_str().unwrap().to_string();
    cli.seen.borrow_mut().clear();

    eprintln!("--- step 3: status is sealed");
    let out = cli.run(&["operator", "status", "--format", "json"], &[], None);
    let st: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        (st["initialized"].as_bool(), st["sealed"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(st["threshold"], 3);
    let table = cli.run(&["operator", "status"], &[], None);
    assert!(table.ok().contains("Sealed           true"), "{table:?}");

    eprintln!("--- step 4: two keys, progress 2/3");
    let out = cli.run(
        &["operator", "unseal", &keys[0], "--format", "json"],
        &[],
        None,
    );
    let st: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        (st["progress"].as_u64(), st["sealed"].as_bool()),
        (Some(1), Some(true))
    );
    let out = cli.run(&["operator", "unseal", &keys[1]], &[], None);
    assert!(out.ok().contains("Unseal progress  2/3"), "{out:?}");
    assert!(
        !out.stdout.contains(&keys[1]),
        "the key given is not echoed"
    );

    eprintln!("--- step 5: the third key unseals");
    let out = cli.run(
        &["operator", "unseal", &keys[2], "--format", "json"],
        &[],
        None,
    );
    let st: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(st["sealed"], false, "{out:?}");

    eprintln!("--- step 6: admin login for team-a");
    let out = cli.run(
        &["login", "--namespace", "team-a", "--policy", "admin"],
        &[("KSTASH_ACCESS_KEY", &access_key)],
        None,
    );
    let admin = out
        .ok()
        .lines()
        .find_map(|l| l.strip_prefix("Token"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no Token row: {out:?}"));
    assert!(admin.starts_with("kst_"), "{out:?}");
    assert!(out.stdout.contains("team-a"));

    eprintln!("--- step 7: policy app-rw from stdin");
    let policy = r#"{"rules": [{"path": "app/*", "capabilities": ["read", "create", "update"]}]}"#;
    let out = cli.run(
        &["policy", "put", "team-a", "app-rw", "-"],
        &[("KSTASH_TOKEN", &admin)],
        Some(policy),
    );
    out.ok();
    let out = cli.with_token(&admin, &["policy", "get", "team-a", "app-rw"]);
    assert!(out.ok().contains("app/*  read, create, update"), "{out:?}");

    eprintln!("--- step 8: app-rw token, --token-only");
    let app = cli.login(&access_key, "team-a", "app-rw", &[]);

    eprintln!("--- step 9: put and get app/db");
    cli.with_token(&app, &["kv", "put", "app/db", "s3cret"])
        .ok();
    let out = cli.with_token(&app, &["kv", "get", "app/db", "--field", "value"]);
    assert_eq!(out.ok(), "s3cret", "raw value, no newline");

    eprintln!("--- step 10: a team-b token cannot read team-a's secret");
    let team_b = cli.login(&access_key, "team-b", "admin", &[]);
    let out = cli.with_token(&team_b, &["kv", "get", "app/db"]);
    out.fails(1, "Error: ");
    assert!(out.stderr.contains(", HTTP 4"), "{out:?}");
    assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));

    eprintln!("--- step 11: non-canonical paths");
    let out = cli.with_token(&app, &["kv", "get", "app/../x"]);
    out.fails(1, "path segment '..' is not allowed");
    let out = cli.with_token(&app, &["kv", "get", "app//x"]);
    out.fails(1, "(bad_request, HTTP 400)");

    eprintln!("--- step 12: a 1 s token expires");
    let short = cli.login(&access_key, "team-a", "app-rw", &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    cli.with_token(&short, &["kv", "get", "app/db"])
        .fails(1, "HTTP 401");

    eprintln!("--- step 13: a revoked token fails");
    let gone = cli.login(&access_key, "team-a", "app-rw", &[]);
    cli.with_token(&gone, &["kv", "get", "app/db", "--field", "value"])
        .ok();
    assert!(cli
        .with_token(&gone, &["token", "revoke"])
        .ok()
        .contains("Revoked"));
    cli.with_token(&gone, &["kv", "get", "app/db"])
        .fails(1, "HTTP 401");
    let out = cli.with_token(&app, &["token", "lookup", "--format", "json"]);
    let info: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(info["namespace"], "team-a", "the other token still works");

    eprintln!("--- step 14: failover to the live address");
    let both = format!("http://127.0.0.1:1,{}", server.url());
    let out = cli.with_token(
        &app,
        &[
            "--address",
            &both,
            "kv",
            "get",
            "app/db",
            "--field",
            "value",
        ],
    );
    assert_eq!(out.ok(), "s3cret");
    let out = cli.with_token(
        &app,
        &["--address", "http://127.0.0.1:1", "kv", "get", "app/db"],
    );
    out.fails(1, "could not connect");

    eprintln!("--- step 15: usage errors, and no access key in any output");
    cli.run(&["kv", "get"], &[], None).fails(2, "PATH");
    cli.run(
        &["operator", "seal", "--keys", "3", "--gatekeeper-token", "x"],
        &[],
        None,
    )
    .fails(2, "cannot be used with");
    assert!(
        !cli.seen.borrow().contains(&access_key),
        "the access key was printed after init"
    );
    let log = server.log();
    assert!(
        !log.contains("s3cret") && !log.contains(&access_key),
        "secret in the server log:\n{log}"
    );
}

/// `kstash bench` against one node: puts, linearizable and stale gets each
/// complete operations without errors and report sane percentiles, as a
/// table and as JSON; a bad token makes it fail with the server's reason.
#[test]
fn bench_loads_a_node_and_reports() {
    let server = ServerProcess::start();
    let cli = Cli {
        address: server.url(),
        seen: Default::default(),
    };
    let (_, token) = cli.init_one_key("bench");

    // Only ops that start and end inside the window count, and the whole
    // suite shares two cores: a 1 s window once saw no op finish in it.
    let short = [
        "--duration",
        "2s",
        "--warmup",
        "200ms",
        "--clients",
        "4",
        "--connections",
        "2",
        "--keys",
        "20",
    ];
    for workload in ["put", "get", "stale-get"] {
        let mut args = vec!["bench", "--workload", workload, "--format", "json"];
        args.extend_from_slice(&short);
        let out = cli.with_token(&token, &args);
        let report: Value =
            serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert_eq!(report["workload"], workload, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
        let (p50, p99, p999) = (
            report["p50_ms"].as_f64().unwrap(),
            report["p99_ms"].as_f64().unwrap(),
            report["p999_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{report}");
    }
    let mut args = vec!["bench"];
    args.extend_from_slice(&short);
    let table = cli.with_token(&token, &args);
    assert!(table.ok().starts_with("workload"), "{table:?}");
    assert!(table.stdout.contains("put"), "{table:?}");

    let bad = cli.with_token("kst_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &args);
    bad.fails(1, "no operation succeeded");
}

/// `path` holding `text`, with file mode `mode`.
fn write_file(path: &std::path::Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The single node's status, as `operator status --format json` prints it.
fn status(cli: &Cli) -> Value {
    let out = cli.run(&["operator", "status", "--format", "json"], &[], None);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Unseal keys and gatekeeper tokens from files and stdin, with stdin a
/// pipe (no terminal anywhere).
///
/// Steps:
/// 1. start a server; init 3 keys, threshold 2, 2 gatekeeper tokens;
/// 2. `unseal --keys-file` refuses a file others can read, a file with too
///    few keys and a file with a mistyped key (naming its line, never the
///    key); none of them sent anything (progress 0/2);
/// 3. `unseal --keys-file FILE` (blank lines, spaces) unseals; no key is
///    printed;
/// 4. `seal --keys-file -` with the keys on stdin seals; `unseal
///    --keys-file -` from stdin unseals again;
/// 5. `gatekeeper-token list --keys-file FILE` lists both tokens, unused;
/// 6. `rotate --gatekeeper-token-file -` with a token on stdin rotates and
///    prints the replacement; `gatekeeper-token renew
///    --gatekeeper-token-file FILE` trades the other token;
/// 7. `operator raft peers` needs no credential and spends no token: the
///    token list is the same before and after;
/// 8. `gatekeeper-token revoke --gatekeeper-token-file -` revokes the token
///    on stdin; `revoke --id ID --keys-file FILE` revokes by id;
/// 9. no unseal key or gatekeeper token given as input was ever printed;
/// 10. `--keys-file -` with stdin a terminal (under `script`) is refused: it
///     would echo the keys as they are typed.
#[test]
fn keys_and_tokens_come_from_files_and_stdin() {
    eprintln!("--- step 1: server, init 3/2 with 2 gatekeeper tokens");
    let server = ServerProcess::start();
    let cli = Cli {
        address: server.url(),
        seen: Default::default(),
    };
    let out = cli.run(
        &[
            "operator",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--gatekeeper-tokens",
            "2",
            "--format",
            "json",
        ],
        &[],
        None,
    );
    let init: Value = serde_json::from_str(out.ok()).unwrap();
    let keys: Vec<String> = init["unseal_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let tokens: Vec<String> = init["gatekeeper_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    cli.seen.borrow_mut().clear();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        write_file(&path, text, mode);
        path.to_str().unwrap().to_string()
    };

    eprintln!("--- step 2: refused files send nothing");
    let all = format!("\n  {}\n\n\t{} \n{}\n", keys[0], keys[1], keys[2]);
    let open = file("open", &all, 0o644);
    cli.run(&["operator", "unseal", "--keys-file", &open], &[], None)
        .fails(1, "readable by others");
    let one = file("one", &format!("{}\n", keys[0]), 0o600);
    cli.run(&["operator", "unseal", "--keys-file", &one], &[], None)
        .fails(1, "holds 1 unseal key(s); the unseal needs 2 more key(s)");
    let mut typo = keys[1].clone();
    let bad = if typo.starts_with('A') { "B" } else { "A" };
    typo.replace_range(0..1, bad);
    let typo_file = file("typo", &format!("{}\n\n{typo}\n", keys[0]), 0o600);
    let out = cli.run(
        &["operator", "unseal", "--keys-file", &typo_file],
        &[],
        None,
    );
    out.fails(1, "line 3: invalid unseal key");
    assert!(!out.stderr.contains(&typo), "{out:?}");
    let st = status(&cli);
    assert_eq!(
        (st["sealed"].as_bool(), st["progress"].as_u64()),
        (Some(true), Some(0))
    );

    eprintln!("--- step 3: unseal from a file");
    let good = file("keys", &all, 0o600);
    let out = cli.run(
        &[
            "operator",
            "unseal",
            "--keys-file",
            &good,
            "--format",
            "json",
        ],
        &[],
        None,
    );
    let st: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(st["sealed"], false, "{out:?}");

    eprintln!("--- step 4: seal and unseal with the keys on stdin");
    let out = cli.run(&["operator", "seal", "--keys-file", "-"], &[], Some(&all));
    assert!(out.ok().contains("Sealed."), "{out:?}");
    assert_eq!(status(&cli)["sealed"], true);
    let out = cli.run(&["operator", "unseal", "--keys-file", "-"], &[], Some(&all));
    assert!(out.ok().contains("Sealed           false"), "{out:?}");

    eprintln!("--- step 5: list gatekeeper tokens with the keys file");
    let list = |cli: &Cli| {
        let out = cli.run(
            &[
                "operator",
                "gatekeeper-token",
                "list",
                "--keys-file",
                &good,
                "--format",
                "json",
            ],
            &[],
            None,
        );
        let list: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        list["tokens"].clone()
    };
    let before = list(&cli);
    assert_eq!(before.as_array().unwrap().len(), 2, "{before}");
    assert!(
        before
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["used_at"].is_null()),
        "{before}"
    );

    eprintln!("--- step 6: gatekeeper tokens from stdin and from a file");
    let out = cli.run(
        &[
            "operator",
            "rotate",
            "--gatekeeper-token-file",
            "-",
            "--format",
            "json",
        ],
        &[],
        Some(&format!("{}\n", tokens[0])),
    );
    let rotated: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(
        rotated["gatekeeper_token"]
            .as_str()
            .unwrap()
            .starts_with("ksg_"),
        "{out:?}"
    );
    let token_file = file("token", &format!("  {}\n", tokens[1]), 0o600);
    let out = cli.run(
        &[
            "operator",
            "gatekeeper-token",
            "renew",
            "--gatekeeper-token-file",
            &token_file,
        ],
        &[],
        None,
    );
    assert!(out.ok().contains("Renewed."), "{out:?}");

    eprintln!("--- step 7: raft peers needs no credential and spends none");
    let before = list(&cli);
    let out = cli.run(
        &["operator", "raft", "peers", "--format", "json"],
        &[],
        None,
    );
    let peers: Value = serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1, "{peers}");
    assert_eq!(list(&cli), before, "listing peers used no gatekeeper token");

    eprintln!("--- step 8: revoke a token from stdin, and one by id with the keys file");
    let replacement = rotated["gatekeeper_token"].as_str().unwrap();
    let out = cli.run(
        &[
            "operator",
            "gatekeeper-token",
            "revoke",
            "--gatekeeper-token-file",
            "-",
        ],
        &[],
        Some(replacement),
    );
    assert!(out.ok().contains("Revoked."), "{out:?}");
    let after = list(&cli);
    assert_eq!(
        after.as_array().unwrap().len() + 1,
        before.as_array().unwrap().len(),
        "{after}"
    );
    let id = after[0]["id"].as_str().unwrap().to_string();
    let out = cli.run(
        &[
            "operator",
            "gatekeeper-token",
            "revoke",
            "--id",
            &id,
            "--keys-file",
            &good,
        ],
        &[],
        None,
    );
    assert!(out.ok().contains("Revoked."), "{out:?}");
    assert!(
        list(&cli)
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != id.as_str()),
        "token {id} is gone"
    );

    eprintln!("--- step 9: nothing given as input was printed");
    {
        let seen = cli.seen.borrow();
        for secret in keys.iter().chain(&tokens) {
            assert!(
                !seen.contains(secret.as_str()),
                "an input secret was printed"
            );
        }
    }

    eprintln!("--- step 10: a terminal on stdin is refused");
    let line = format!(
        "'{BIN}' --address '{}' operator seal --keys-file - 2>&1",
        server.url()
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kstash under script did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stdin is a terminal"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(status(&cli)["sealed"], false, "nothing was sent");
}

/// Small frictions of a first session.
///
/// Steps:
/// 1. `completion bash|zsh|fish` print a script naming `kstash`, with no
///    server;
/// 2. a bare `host:port` address (flag or KSTASH_ADDR) is refused with the
///    hint to add the scheme;
/// 3. a server, init 1/1, unseal, admin token; `login --ttl 33d` is refused
///    naming the maximum as configured (`32d`, not humantime's months);
/// 4. `kv get` of a folder (`app/`, or `app` where `app/db` exists)
///    suggests `kv list app/`; a missing name without children does not;
/// 5. `--timeout 3s` bounds the whole command: two addresses that accept
///    and never answer fail within 3 s and a margin, saying so (before, each
///    took the whole timeout: 6 s); a blackhole then the live node answers
///    within the same bound.
#[test]
fn first_session_frictions() {
    eprintln!("--- step 1: completion scripts");
    let offline = Cli {
        address: "http://127.0.0.1:1".into(),
        seen: Default::default(),
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = offline.run(&["completion", shell], &[], None);
        let script = out.ok();
        assert!(
            script.len() > 500 && script.contains("kstash"),
            "{shell}: {out:?}"
        );
        assert!(
            script.contains("unseal") && script.contains("--keys-file"),
            "{shell}"
        );
    }
    offline
        .run(&["completion", "tcsh"], &[], None)
        .fails(2, "tcsh");

    eprintln!("--- step 2: a bare host:port address");
    let bare = Cli {
        address: "127.0.0.1:8200".into(),
        seen: Default::default(),
    };
    bare.run(&["operator", "status"], &[], None).fails(
        1,
        "add the scheme: http://127.0.0.1:8200 or https://127.0.0.1:8200",
    );
    offline
        .run(
            &["--address", "localhost:8200", "operator", "status"],
            &[],
            None,
        )
        .fails(
            1,
            "add the scheme: http://localhost:8200 or https://localhost:8200",
        );

    eprintln!("--- step 3: server; durations as configured");
    let server = ServerProcess::start();
    let cli = Cli {
        address: server.url(),
        seen: Default::default(),
    };
    let (access_key, admin) = cli.init_one_key("team-a");
    let access_key = access_key.as_str();
    let out = cli.run(
        &["login", "-n", "team-a", "-p", "admin", "--ttl", "33d"],
        &[("KSTASH_ACCESS_KEY", access_key)],
        None,
    );
    out.fails(1, "ttl 33d exceeds the maximum of 32d");
    let out = cli.with_token(&admin, &["token", "lookup"]);
    let ttl = out
        .ok()
        .lines()
        .find_map(|l| l.strip_prefix("TTL"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no TTL row: {out:?}"));
    assert!(
        ttl == "1h" || ttl.starts_with("59m"),
        "a 1h token's TTL as configured: {ttl:?}"
    );

    eprintln!("--- step 4: kv get of a folder suggests kv list");
    cli.with_token(&admin, &["kv", "put", "app/db", "x"]).ok();
    cli.with_token(&admin, &["kv", "get", "app/"])
        .fails(1, "`kstash kv list app/`");
    let out = cli.with_token(&admin, &["kv", "get", "app"]);
    out.fails(1, "HTTP 404");
    assert!(out.stderr.contains("`kstash kv list app/`"), "{out:?}");
    let out = cli.with_token(&admin, &["kv", "get", "nothing"]);
    out.fails(1, "HTTP 404");
    assert!(!out.stderr.contains("kv list"), "{out:?}");

    eprintln!("--- step 5: --timeout bounds the whole command");
    // Listeners that are never accepted from: the kernel completes each
    // connection, and no answer ever comes. Closed when dropped.
    let holes: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let hole = |i: usize| format!("http://{}", holes[i].local_addr().unwrap());
    let margin = Duration::from_secs(2);
    let budget = Duration::from_secs(3);
    let both = format!("{},{}", hole(0), hole(1));
    let t = Instant::now();
    let out = cli.run(
        &["--timeout", "3s", "--address", &both, "operator", "status"],
        &[],
        None,
    );
    let took = t.elapsed();
    out.fails(1, "no answer within --timeout 3s");
    assert!(
        took < budget + margin,
        "two blackholes took {took:?}: {out:?}"
    );
    let first_dead = format!("{},{}", hole(0), server.url());
    let t = Instant::now();
    let out = cli.with_token(
        &admin,
        &[
            "--timeout",
            "3s",
            "--address",
            &first_dead,
            "kv",
            "get",
            "app/db",
            "--field",
            "value",
        ],
    );
    let took = t.elapsed();
    assert_eq!(out.ok(), "x");
    assert!(
        took < budget + margin,
        "a blackhole then the node took {took:?}"
    );
    drop(holes);
}

/// Steps (no server needed: every case fails before a request):
/// 1. `login kubernetes` without `--jwt-file` reads the pod's token path,
///    which is missing here: exit 1 naming it and how to point elsewhere;
/// 2. KSTASH_JWT_FILE names a file that holds no JWT: exit 1 naming that
///    file, its text never printed;
/// 3. `--jwt-file` wins over KSTASH_JWT_FILE;
/// 4. `login` with neither form, or a mix of both, is a usage error (2)
///    that shows both forms.
#[test]
fn kubernetes_login_reads_its_jwt_file() {
    let offline = Cli {
        address: "http://127.0.0.1:1".into(),
        seen: Default::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let login = ["login", "kubernetes", "-n", "team-a", "-r", "web"];

    eprintln!("--- step 1: the default path");
    let out = offline.run(&login, &[], None);
    out.fails(1, "/var/run/secrets/kubernetes.io/serviceaccount/token");
    assert!(
        out.stderr.contains("--jwt-file") && out.stderr.contains("KSTASH_JWT_FILE"),
        "{out:?}"
    );

    eprintln!("--- step 2: KSTASH_JWT_FILE with no JWT in it");
    let secret = "not-a-jwt-but-a-secret";
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, format!("{secret}\n")).unwrap();
    let out = offline.run(
        &login,
        &[("KSTASH_JWT_FILE", wrong.to_str().unwrap())],
        None,
    );
    out.fails(1, "wrong-token does not hold a ServiceAccount token");
    assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));

    eprintln!("--- step 3: --jwt-file wins");
    let missing = dir.path().join("missing-token");
    let mut args = login.to_vec();
    args.extend(["--jwt-file", missing.to_str().unwrap()]);
    offline
        .run(&args, &[("KSTASH_JWT_FILE", wrong.to_str().unwrap())], None)
        .fails(1, "missing-token");

    eprintln!("--- step 4: usage errors");
    let out = offline.run(&["login"], &[], None);
    out.fails(2, "--namespace");
    assert!(out.stderr.contains("kstash login kubernetes"), "{out:?}");
    offline
        .run(
            &["login", "-n", "a", "kubernetes", "-n", "a", "-r", "r"],
            &[],
            None,
        )
        .fails(2, "error");
}

/// Steps (needs the role service, `src/service/kubernetes.rs`):
/// 1. a server, init 1/1, unseal, admin token for team-a;
/// 2. `role put` with two service accounts, a policy, `--ttl 10m`;
/// 3. `role get` in table and json; `role list` names it;
/// 4. `login kubernetes` with a JWT file on a node without Kubernetes
///    settings: exit 1 with HTTP 400, the JWT never printed;
/// 5. `role delete`, then `role get` exits 1 with HTTP 404.
#[test]
fn role_commands_and_kubernetes_login() {
    let server = ServerProcess::start();
    let cli = Cli {
        address: server.url(),
        seen: Default::default(),
    };
    eprintln!("--- step 1: init, unseal, admin");
    let (_, admin) = cli.init_one_key("team-a");

    eprintln!("--- step 2: role put");
    let out = cli.with_token(
        &admin,
        &[
            "role",
            "put",
            "team-a",
            "web",
            "--service-account",
            "shop/web",
            "--service-account",
            "batch/*",
            "--policy",
            "app-ro",
            "--ttl",
            "10m",
        ],
    );
    assert!(
        out.ok().contains("Wrote role web in namespace team-a"),
        "{out:?}"
    );

    eprintln!("--- step 3: role get and list");
    let out = cli.with_token(&admin, &["role", "get", "team-a", "web"]);
    let table = out.ok();
    assert!(
        table.contains("shop/web, batch/*") && table.contains("app-ro") && table.contains("10m"),
        "{table}"
    );
    let out = cli.with_token(
        &admin,
        &["role", "get", "team-a", "web", "--format", "json"],
    );
    let role: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(role["audience"], "kstash");
    assert_eq!(role["service_accounts"][1], "batch/*");
    let out = cli.with_token(&admin, &["role", "list", "team-a"]);
    assert_eq!(out.ok(), "web\n");

    eprintln!("--- step 4: login without Kubernetes settings");
    let dir = tempfile::tempdir().unwrap();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWNsYWltcw.c2VjcmV0LXNpZw";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{jwt}\n")).unwrap();
    let out = cli.run(
        &[
            "login",
            "kubernetes",
            "--namespace",
            "team-a",
            "--role",
            "web",
            "--jwt-file",
            file.to_str().unwrap(),
        ],
        &[],
        None,
    );
    out.fails(1, "HTTP 400");
    assert!(
        !cli.seen.borrow().contains("c2VjcmV0"),
        "the JWT is never printed"
    );

    eprintln!("--- step 5: role delete");
    let out = cli.with_token(&admin, &["role", "delete", "team-a", "web"]);
    assert!(out.ok().contains("Deleted role web"), "{out:?}");
    cli.with_token(&admin, &["role", "get", "team-a", "web"])
        .fails(1, "HTTP 404");
}

/// Steps:
/// 1. a server, init 1/1, unseal, admin token for team-a;
/// 2. `key create kek` prints its metadata (version 1); `key get --format
///    json` has the key id; `key list` names it;
/// 3. `key encrypt kek` from stdin prints one ciphertext line; `key decrypt
///    kek CIPHERTEXT` prints exactly the plaintext;
/// 4. binary bytes: `--plaintext-file` in, `key decrypt kek - --output
///    FILE` (ciphertext on stdin) out: the same bytes, mode 0600; the same
///    --output again is refused (exit 1), the file unchanged;
/// 5. `--base64` in and out;
/// 6. `key rotate` → version 2, the v1 ciphertext still decrypts; `key
///    config --min-decryption-version 2` retires it (exit 1, HTTP 400);
/// 7. a file over 64 KiB is refused before sending (exit 1), a missing
///    ciphertext on stdin too;
/// 8. no plaintext in any note or error, nor in the server's log.
#[test]
fn key_commands_round_trip() {
    let server = ServerProcess::start();
    let cli = Cli {
        address: server.url(),
        seen: Default::default(),
    };
    eprintln!("--- step 1: init, unseal, admin");
    let (_, admin) = cli.init_one_key("team-a");
    let mut stderr = String::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let out = cli.run(args, &[("KSTASH_TOKEN", &admin)], stdin);
        stderr.push_str(&out.stderr);
        out
    };

    eprintln!("--- step 2: create, get, list");
    let out = run(&["key", "create", "kek"], None);
    let table = out.ok();
    assert!(
        table.contains("Name                    kek")
            && table.contains("Latest version          1"),
        "{table}"
    );
    let out = run(&["key", "get", "kek", "--format", "json"], None);
    let info: Value = serde_json::from_str(out.ok()).unwrap();
    let key_id = info["key_id"].as_str().unwrap().to_string();
    assert!(key_id.starts_with("kstash:team-a/kek:") && key_id.ends_with(":v1"));
    assert_eq!(run(&["key", "list"], None).ok(), "kek\n");

    eprintln!("--- step 3: a text round trip through stdin and an argument");
    let text = "s3cret seed 9f2c\n";
    let out = run(&["key", "encrypt", "kek"], Some(text));
    let ciphertext = out.ok().trim_end().to_string();
    assert!(
        ciphertext.starts_with("kstash:v1:") && !ciphertext.contains('\n'),
        "{out:?}"
    );
    assert_eq!(
        run(&["key", "decrypt", "kek", &ciphertext], None).ok(),
        text
    );

    eprintln!("--- step 4: binary bytes through files");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("seed.bin");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(&input, &bytes).unwrap();
    let out = run(
        &[
            "key",
            "encrypt",
            "kek",
            "--plaintext-file",
            input.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    let c: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        (c["key_version"].as_u64(), c["key_id"].as_str()),
        (Some(1), Some(key_id.as_str()))
    );
    let binary_ct = c["ciphertext"].as_str().unwrap().to_string();
    let output = dir.path().join("out.bin");
    let out_arg = output.to_str().unwrap();
    let out = run(
        &["key", "decrypt", "kek", "-", "--output", out_arg],
        Some(&format!("{binary_ct}\n")),
    );
    assert_eq!(out.ok(), "", "the plaintext went to the file: {out:?}");
    assert!(out.stderr.contains("Wrote 256 bytes"), "{out:?}");
    assert_eq!(std::fs::read(&output).unwrap(), bytes);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&output).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    run(&["key", "decrypt", "kek", &binary_ct, "-o", out_arg], None).fails(1, "cannot create");
    assert_eq!(std::fs::read(&output).unwrap(), bytes, "not overwritten");

    eprintln!("--- step 5: base64 in and out");
    let out = run(&["key", "encrypt", "kek", "--base64"], Some("aGVs\nbG8=\n"));
    let c = out.ok().trim_end().to_string();
    assert_eq!(run(&["key", "decrypt", "kek", &c], None).ok(), "hello");
    assert_eq!(
        run(&["key", "decrypt", "kek", &c, "--base64"], None).ok(),
        "aGVsbG8=\n"
    );

    eprintln!("--- step 6: rotate, retire v1");
    let out = run(&["key", "rotate", "kek"], None);
    assert!(out.ok().contains("Latest version          2"), "{out:?}");
    let out = run(&["key", "encrypt", "kek"], Some(text));
    assert!(out.ok().starts_with("kstash:v2:"), "{out:?}");
    assert_eq!(
        run(&["key", "decrypt", "kek", &ciphertext], None).ok(),
        text
    );
    let out = run(
        &["key", "config", "kek", "--min-decryption-version", "2"],
        None,
    );
    assert!(out.ok().contains("Min decryption version  2"), "{out:?}");
    run(&["key", "decrypt", "kek", &ciphertext], None).fails(1, "HTTP 400");
    run(&["key", "decrypt", "kek", &ciphertext], None).fails(1, "retired");

    eprintln!("--- step 7: refused before sending");
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).unwrap();
    run(
        &[
            "key",
            "encrypt",
            "kek",
            "--plaintext-file",
            big.to_str().unwrap(),
        ],
        None,
    )
    .fails(1, "over 65536 bytes");
    run(&["key", "decrypt", "kek", "-"], Some("\n")).fails(1, "no ciphertext on stdin");

    eprintln!("--- step 8: no plaintext in notes, errors or the server log");
    for needle in ["s3cret seed", "aGVsbG8", "hello"] {
        assert!(!stderr.contains(needle), "{needle} in stderr: {stderr}");
        assert!(!server.log().contains(needle), "{needle} in the server log");
    }
}
