//! The dashboard in a real headless Chromium (playwright-core), against `abo serve`: live updates
//! and approvals under its Content-Security-Policy, and a page on another port of the same host
//! that forges a kill and frames the dashboard (see `tests/browser/dashboard.mjs`).

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::config;
use crate::serve::{http, start_server, token};

/// The browser scripts' folder (its npm package installed) and Chromium's path.
pub(crate) fn browser_deps() -> (&'static str, String) {
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
    (dir, chromium)
}

#[test]
fn the_dashboard_shows_live_state_and_approves_with_a_reason_and_resists_another_origin() {
    let (dir, chromium) = browser_deps();
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
    // A run for the attacks: its task waits until the run is killed.
    repo.write(
        "victim.yml",
        &format!(
            "tasks:\n  - {{ id: wait, title: Wait, paths: [wait.txt], run: 'while [ ! -e {never} ]; do sleep 0.2; done' }}\n",
            never = repo.outside.join("never").display()
        ),
    );
    repo.commit_all("backlog");
    let (admin, approver) = (token(&repo, "admin"), token(&repo, "approver"));
    let (mut server, addr) = start_server(&repo);
    let url = format!("http://{addr}");
    let (_, created) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&admin),
        Some(serde_json::json!({"backlog": "backlog.yml"})),
    );
    let run = serde_json::from_str::<Value>(&created).unwrap()["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, created) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&admin),
        Some(serde_json::json!({"backlog": "victim.yml"})),
    );
    assert_eq!(s, 201, "{created}");
    let victim = serde_json::from_str::<Value>(&created).unwrap()["run"]["id"]
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
        .env("ABO_ADMIN", &admin)
        .env("ABO_VICTIM", &victim)
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
    // The forged form did not kill the victim run; its own Kill button did.
    let doc = crate::status(&repo, Some(&victim));
    assert_eq!(doc["run"]["status"], "killed");
}
