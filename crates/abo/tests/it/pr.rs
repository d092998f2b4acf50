//! `landing.mode: pull-request` against local servers speaking GitHub's and GitLab's responses.

use abo_test_support::stub::{Canned, StubServer};
use abo_test_support::{TestRepo, git_in};
use serde_json::Value;

use crate::{abo_env, config, events};

fn with_remote() -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    let bare = repo.outside.join("remote.git");
    git_in(
        &repo.outside,
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    repo.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    (repo, bare)
}

fn run(repo: &TestRepo, token_var: &str) -> Value {
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: One, run: 'echo 1 > one.txt' }\n",
    );
    let out = abo_env(
        repo,
        &["run", b.to_str().unwrap(), "--json"],
        &[(token_var, "t0k-secret".to_owned())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn a_draft_pull_request_on_github() {
    let api = StubServer::start(vec![Canned::status(
        201,
        r#"{"html_url":"https://github.example/acme/app/pull/7","number":7}"#,
    )]);
    let (repo, bare) = with_remote();
    config(
        &repo,
        &format!(
            "version: 1\nlanding: {{ mode: pull-request, provider: github, api_url: '{}', repo: acme/app }}\n",
            api.url
        ),
    );
    let doc = run(&repo, "GITHUB_TOKEN");
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(
        doc["run"]["pull_request"],
        "https://github.example/acme/app/pull/7"
    );
    // The branch was pushed first.
    assert!(git_in(&bare, &["branch", "--list", branch]).contains(branch));
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/repos/acme/app/pulls")
    );
    assert_eq!(r.header("authorization"), Some("Bearer t0k-secret"));
    assert_eq!(r.body["head"], branch);
    assert_eq!(r.body["base"], "main");
    assert_eq!(r.body["draft"], true);
    assert!(
        r.body["body"].as_str().unwrap().contains("**one** One"),
        "{}",
        r.body
    );
    let run_id = doc["run"]["id"].as_str().unwrap();
    let pr: Vec<Value> = events(&repo, run_id)
        .into_iter()
        .filter(|e| e["kind"] == "run.pull_request")
        .collect();
    assert_eq!(pr[0]["data"]["number"], 7);
    let human = crate::abo(&repo, &["status", run_id]).stdout;
    assert!(
        human.contains("https://github.example/acme/app/pull/7"),
        "{human}"
    );
}

#[test]
fn a_draft_merge_request_on_gitlab_and_a_missing_token_refused() {
    let api = StubServer::start(vec![Canned::status(
        201,
        r#"{"web_url":"https://gitlab.example/acme/app/-/merge_requests/3","iid":3}"#,
    )]);
    let (repo, _) = with_remote();
    config(
        &repo,
        &format!(
            "version: 1\nlanding: {{ mode: pull-request, provider: gitlab, api_url: '{}', repo: acme/app }}\n",
            api.url
        ),
    );
    // Without the token nothing starts.
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: One, run: 'echo 1 > one.txt' }\n",
    );
    let out = crate::abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("GITLAB_TOKEN"), "{}", out.stderr);
    let doc = run(&repo, "GITLAB_TOKEN");
    assert_eq!(
        doc["run"]["pull_request"],
        "https://gitlab.example/acme/app/-/merge_requests/3"
    );
    let r = &api.requests()[0];
    assert_eq!(r.path, "/projects/acme%2Fapp/merge_requests");
    assert_eq!(r.header("private-token"), Some("t0k-secret"));
    assert!(r.body["title"].as_str().unwrap().starts_with("Draft: "));
    assert_eq!(r.body["target_branch"], "main");
}

/// abo opened the pull request, then stopped before `run.pull_request` was recorded: resuming
/// the owed end finds that one (GitHub answers 422 to a second) and records it, once.
#[test]
fn a_pull_request_opened_before_a_crash_is_found_not_opened_twice() {
    let api = StubServer::start(vec![
        Canned::status(
            201,
            r#"{"html_url":"https://github.example/acme/app/pull/7","number":7}"#,
        ),
        Canned::status(
            422,
            r#"{"message":"A pull request already exists for acme:abo/x."}"#,
        ),
        Canned::ok(r#"[{"html_url":"https://github.example/acme/app/pull/7","number":7}]"#),
    ]);
    let (repo, _bare) = with_remote();
    config(
        &repo,
        &format!(
            "version: 1\nlanding: {{ mode: pull-request, provider: github, api_url: '{}', repo: acme/app }}\n",
            api.url
        ),
    );
    let doc = run(&repo, "GITHUB_TOKEN");
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let seq = events(&repo, &id)
        .iter()
        .find(|e| e["kind"] == "run.pull_request")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    crate::crash::truncate_log(&repo.path, seq);
    let out = abo_env(
        &repo,
        &["resume", &id],
        &[("GITHUB_TOKEN", "t0k-secret".to_owned())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reqs = api.requests();
    assert_eq!(
        reqs.iter()
            .map(|r| (r.method.as_str(), r.path.split('?').next().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("POST", "/repos/acme/app/pulls"),
            ("POST", "/repos/acme/app/pulls"),
            ("GET", "/repos/acme/app/pulls")
        ]
    );
    let kinds: Vec<Value> = events(&repo, &id)
        .into_iter()
        .filter(|e| e["kind"] == "run.pull_request")
        .collect();
    assert_eq!(kinds.len(), 1);
    assert_eq!(
        kinds[0]["data"]["url"],
        "https://github.example/acme/app/pull/7"
    );
}
