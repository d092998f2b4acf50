//! The dashboard in a real headless Chromium (playwright-core), against `abo serve`.

use std::io::{BufRead, BufReader};

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::{abo, abo_cmd, config};

#[test]
fn the_dashboard_shows_live_state_and_approves_with_a_reason() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "needs Chromium at {chromium} (apt-get install chromium; .ci/run installs it)"
    );
    if !std::path::Path::new(dir)
        .join("node_modules/playwright-core")
        .exists()
    {
        #[allow(
            clippy::disallowed_methods,
            reason = "the test installs its npm package"
        )]
        let npm = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            npm.status.success(),
            "npm ci: {}",
            String::from_utf8_lossy(&npm.stderr)
        );
    }
    let repo = TestRepo::new();
    // The slow task runs until the browser has seen it running and creates this file.
    let go = repo.outside.join("go");
    config(
        &repo,
        "version: 1\nautonomy: { overrides: { merge: A2 } }\n",
    );
    repo.write(
        "backlog.yml",
        &format!(
            "tasks:\n  - {{ id: slow, title: Slow, paths: [slow.txt], run: 'while [ ! -e {go} ]; do sleep 0.2; done; echo done > slow.txt' }}\n  - {{ id: manifest, title: Manifest, paths: [package.json], run: 'echo {{}} > package.json' }}\n",
            go = go.display()
        ),
    );
    repo.commit_all("backlog");
    let token = |role: &str| {
        let out = abo(&repo, &["token", "create", "--role", role, "--json"]);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };
    let (admin, approver) = (token("admin"), token("approver"));
    let mut server = abo_cmd(&repo, &["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!("http://{}", line.trim().rsplit("http://").next().unwrap());
    let created = ureq_post(&url, "/v1/runs", &admin, r#"{"backlog":"backlog.yml"}"#);
    let run = serde_json::from_str::<Value>(&created).unwrap()["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    #[allow(
        clippy::disallowed_methods,
        reason = "the test drives the browser script"
    )]
    let out = std::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(dir)
        .env("ABO_URL", &url)
        .env("ABO_TOKEN", &approver)
        .env("ABO_RUN", &run)
        .env("ABO_GO", &go)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("browser: ok"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = crate::status(&repo, Some(&run));
    assert_eq!(doc["tasks"][1]["status"], "landed");
}

/// A POST with a bearer token; the response body.
fn ureq_post(url: &str, path: &str, token: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
