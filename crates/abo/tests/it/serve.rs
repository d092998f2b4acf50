//! `abo serve` and `abo token` through the binary: a run created over HTTP is executed and lands.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use abo_test_support::TestRepo;
use serde_json::{Value, json};

use crate::{abo, abo_cmd, config};

/// One HTTP/1.1 request; (status, body).
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(crate) fn token(repo: &TestRepo, role: &str) -> String {
    let out = abo(repo, &["token", "create", "--role", role, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// `abo serve` on an ephemeral loopback port: the process and its address.
pub(crate) fn start_server(repo: &TestRepo) -> (std::process::Child, String) {
    let mut server = abo_cmd(repo, &["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    (server, addr)
}

#[test]
fn a_run_created_over_the_api_is_executed_and_tokens_gate_it() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nautonomy: { overrides: { merge: A2 } }\n",
    );
    repo.write(
        "backlog.yml",
        "tasks:\n  - { id: hello, title: Hello, run: 'echo hi > hello.txt' }\n",
    );
    repo.commit_all("backlog");
    // Beyond loopback, no token: refused.
    let out = abo(&repo, &["serve", "--addr", "0.0.0.0:0"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("without an API token"),
        "{}",
        out.stderr
    );

    let admin = token(&repo, "admin");
    let viewer = token(&repo, "viewer");
    let out = abo(&repo, &["token", "list", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!out.stdout.contains(&admin), "secrets are never listed");

    let (mut server, addr) = start_server(&repo);

    assert_eq!(http(&addr, "GET", "/healthz", None, None).0, 200);
    assert_eq!(http(&addr, "GET", "/v1/runs", None, None).0, 401);
    let (s, _) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&viewer),
        Some(json!({"backlog": "backlog.yml"})),
    );
    assert_eq!(s, 403, "viewers do not create runs");
    let (s, body) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&admin),
        Some(json!({"backlog": "../etc/passwd"})),
    );
    assert_eq!(s, 400, "{body}");
    let (s, body) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&admin),
        Some(json!({"backlog": "backlog.yml"})),
    );
    assert_eq!(s, 201, "{body}");
    let run = serde_json::from_str::<Value>(&body).unwrap()["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let landed = abo_test_support::wait_for(30, || {
        let (_, b) = http(
            &addr,
            "GET",
            &format!("/v1/runs/{run}"),
            Some(&viewer),
            None,
        );
        serde_json::from_str::<Value>(&b).is_ok_and(|d| d["run"]["status"] == "finished")
    });
    let (_, b) = http(
        &addr,
        "GET",
        &format!("/v1/runs/{run}"),
        Some(&viewer),
        None,
    );
    assert!(landed, "{b}");
    let doc: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(doc["tasks"][0]["status"], "landed");
    // An event stream opened with the viewer token, before it is revoked.
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /v1/events/stream HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {viewer}\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: run.finished") {
        let n = stream.read(&mut buf).expect("events arrive");
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    // A revoked token is refused.
    let ids: Value =
        serde_json::from_str(&abo(&repo, &["token", "list", "--json"]).stdout).unwrap();
    let viewer_id = ids
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(abo(&repo, &["token", "revoke", &viewer_id]).code, 0);
    assert_eq!(http(&addr, "GET", "/v1/runs", Some(&viewer), None).0, 401);
    // ... and the stream it opened ends: the server closes it, polled with a deadline (keep-alive
    // comments would keep a stream that stayed open readable for ever).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut rest = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream of a revoked token is still open: {}",
            String::from_utf8_lossy(&rest)
        );
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"),
        "the last chunk: {}",
        String::from_utf8_lossy(&rest)
    );
    let _ = server.kill();
    let _ = server.wait();
}
