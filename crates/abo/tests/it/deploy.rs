//! Deployments against a real Prometheus server scraping a service whose canary's error rate the
//! test sets: promotion at A5, approval of promotion at A4, rollback within the window, an
//! unreachable Prometheus, the environment's lock across processes (and a `kill -9`), policy, and
//! a deployment after a run's merge.

use std::time::Duration;

use abo_test_support::prometheus::{ERROR_RATIO, Exporter, Prometheus, free_port};
use abo_test_support::{TestRepo, wait_for};
use serde_json::Value;

use crate::crash::sigkill;
use crate::{abo, config, finish, spawn};

/// abo.yml with one environment `prod` whose hooks call the service and whose check is the
/// service's error ratio in Prometheus at `prom` (at most 5%, for 3s, every 1s).
fn deploy_config(exporter: &Exporter, prom: &str, extra: &str) -> String {
    format!(
        "version: 1\n{extra}deploy:\n  prod:\n    network: host\n    plan: \"echo 'plan: 1 service to change'\"\n    \
         canary: {}\n    promote: {}\n    rollback: {}\n    lock_ttl: 3s\n    \
         check:\n      prometheus: {{ url: '{prom}', query: '{ERROR_RATIO}', max: 0.05, for: 3s, every: 1s }}\n",
        exporter.hook("canary"),
        exporter.hook("promote"),
        exporter.hook("rollback"),
    )
}

fn setup(canary_errors: f64, prom: bool, extra: &str) -> (TestRepo, Exporter, Option<Prometheus>) {
    let repo = TestRepo::new();
    let exporter = Exporter::start(canary_errors);
    let p = prom.then(|| Prometheus::start(exporter.port));
    let url = p.as_ref().map_or_else(
        || format!("http://127.0.0.1:{}", free_port()),
        |p| p.url.clone(),
    );
    config(&repo, &deploy_config(&exporter, &url, extra));
    (repo, exporter, p)
}

/// The events of a deployment (`abo events deploy-...`) or a run, `deploy.*` only, as
/// (kind, data, seq).
fn deploy_events(repo: &TestRepo, id: &str) -> Vec<(String, Value)> {
    with_seq(repo, id)
        .into_iter()
        .map(|(k, d, _)| (k, d))
        .collect()
}

fn with_seq(repo: &TestRepo, id: &str) -> Vec<(String, Value, u64)> {
    let out = abo(repo, &["events", id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"].as_str().unwrap().starts_with("deploy."))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["data"].clone(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The deployment id an `abo deploy` printed (`deploy-...: promoted to prod`).
fn deployment_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once(": ").map(|(id, _)| id))
        .filter(|id| id.starts_with("deploy-"))
        .unwrap_or_else(|| panic!("no deployment in {stdout}"))
        .to_owned()
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    let mut out: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    out.dedup();
    out
}

/// The deploy approvals waiting, as (deployment, step).
fn waiting(repo: &TestRepo) -> Vec<(String, String)> {
    let out = abo(repo, &["approvals", "--json"]);
    if out.code != 0 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "deploy")
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["step"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The environments `abo status --json` shows locked.
fn status_locks(repo: &TestRepo) -> Vec<String> {
    let out = abo(repo, &["status", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["deploy_locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["environment"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_healthy_canary_is_promoted_at_a5() {
    // The canary of this service fails no request.
    let (repo, exporter, _prom) = setup(0.0, true, "");
    let out = abo(&repo, &["deploy", "prod", "--profile", "exploration"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("promoted to prod"), "{}", out.stdout);
    assert_eq!(exporter.calls(), ["canary", "promote"]);
    let events = deploy_events(&repo, &deployment_of(&out.stdout));
    assert_eq!(
        kinds(&events),
        ["deploy.started", "deploy.checked", "deploy.promoted"]
    );
    // Every sample of the window is an event: 4 (at 0, 1, 2, 3 s), each healthy with its value.
    let checks: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "deploy.checked")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(checks.len(), 4);
    for c in &checks {
        assert_eq!(c["healthy"], true, "{c}");
        assert_eq!(c["value"].as_f64(), Some(0.0), "{c}");
    }
    assert_eq!(events[0].1["start"], "abo");
    assert_eq!(events[0].1["promote"], "abo");
    // The lock is released.
    assert_eq!(
        status_locks(&repo),
        Vec::<String>::new(),
        "no lock is left held"
    );
}

#[test]
fn a_healthy_canary_waits_for_approval_of_its_promotion_at_a4() {
    let (repo, exporter, _prom) = setup(0.0, true, "");
    let child = spawn(
        &repo,
        &["deploy", "prod", "--profile", "staging-aggressive"],
    );
    assert!(
        wait_for(60, || waiting(&repo).iter().any(|(_, s)| s == "promote")),
        "no promotion waits for approval"
    );
    // The canary ran and held; nothing is promoted until a person says so.
    assert_eq!(exporter.calls(), ["canary"]);
    assert_eq!(exporter.version(), "canary");
    // The environment's lock is visible while it waits.
    let locks = status_locks(&repo);
    assert_eq!(locks, ["prod"]);
    let (id, _) = waiting(&repo).remove(0);
    let ok = abo(&repo, &["approve", &id, "--reason", "dashboards look fine"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let out = finish(child);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(exporter.calls(), ["canary", "promote"]);
    let events = deploy_events(&repo, &id);
    assert_eq!(
        kinds(&events),
        [
            "deploy.started",
            "deploy.checked",
            "deploy.approval_requested",
            "deploy.approved",
            "deploy.promoted"
        ]
    );
    // The request shows the plan's output.
    let req = &events
        .iter()
        .find(|(k, _)| k == "deploy.approval_requested")
        .unwrap()
        .1;
    assert!(
        req["plan"]
            .as_str()
            .unwrap()
            .contains("plan: 1 service to change")
    );
    assert_eq!(req["step"], "promote");
}

#[test]
fn an_unhealthy_canary_is_rolled_back_within_its_window_at_a4_and_a5() {
    for profile in ["exploration", "staging-aggressive"] {
        let (repo, exporter, _prom) = setup(0.5, true, "");
        let out = abo(&repo, &["deploy", "prod", "--profile", profile]);
        assert_eq!(out.code, 1, "{profile}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("rolled back from prod"),
            "{}",
            out.stdout
        );
        assert_eq!(exporter.calls(), ["canary", "rollback"], "{profile}");
        assert_eq!(exporter.version(), "stable");
        let events = deploy_events(&repo, &deployment_of(&out.stdout));
        assert_eq!(
            kinds(&events),
            ["deploy.started", "deploy.checked", "deploy.rolled_back"],
            "{profile}"
        );
        let checks: Vec<&Value> = events
            .iter()
            .filter(|(k, _)| k == "deploy.checked")
            .map(|(_, d)| d)
            .collect();
        // The last sample seen is the unhealthy one, before the window's end (4 samples) or at it.
        let last = checks.last().unwrap();
        assert_eq!(last["healthy"], false, "{profile}: {last}");
        assert!(last["value"].as_f64().unwrap() > 0.05, "{last}");
        assert!(checks.len() <= 4);
        let rb = &events.last().unwrap().1;
        assert_eq!(rb["ok"], true);
        assert!(
            rb["reason"].as_str().unwrap().contains("> max 0.05"),
            "{rb}"
        );
        // Time to restore: from the failing sample to the rollback's end, within the window.
        assert!(rb["restore_ms"].as_u64().unwrap() < 3000, "{rb}");
        // Reported: one deployment, rolled back, a change failure rate of 100%.
        let report = abo(&repo, &["report", "--json"]);
        let r: Value = serde_json::from_str(&report.stdout).unwrap();
        assert_eq!(r["deploys"]["deployments"], 1);
        assert_eq!(r["deploys"]["rolled_back"], 1);
        assert_eq!(r["change_failure_rate"], 1.0);
        assert_eq!(r["deploys"]["time_to_restore"]["count"], 1);
        assert_eq!(r["runs"], 0, "a deployment is not a run");
    }
}

#[test]
fn an_unreachable_prometheus_rolls_back() {
    let (repo, exporter, _none) = setup(0.0, false, "");
    let out = abo(&repo, &["deploy", "prod", "--profile", "exploration"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(exporter.calls(), ["canary", "rollback"]);
    let events = deploy_events(&repo, &deployment_of(&out.stdout));
    let check = &events
        .iter()
        .find(|(k, _)| k == "deploy.checked")
        .unwrap()
        .1;
    assert_eq!(check["healthy"], false);
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .starts_with("prometheus unreachable"),
        "{check}"
    );
    assert_eq!(events.last().unwrap().0, "deploy.rolled_back");
}

#[test]
fn deployments_to_one_environment_take_turns_on_its_lock_also_when_one_is_killed() {
    let (repo, exporter, _prom) = setup(0.0, true, "");
    // The first holds the lock while its promotion waits for a person.
    let mut first = spawn(
        &repo,
        &["deploy", "prod", "--profile", "staging-aggressive"],
    );
    assert!(wait_for(60, || !waiting(&repo).is_empty()));
    let (first_id, _) = waiting(&repo).remove(0);
    // The second waits for the lock: it starts nothing meanwhile.
    let second = spawn(&repo, &["deploy", "prod", "--profile", "exploration"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(exporter.calls(), ["canary"]);
    assert_eq!(status_locks(&repo), ["prod"]);
    // The first abo is killed: its lock is free (its process is gone), and the second deploys.
    sigkill(&mut first);
    let _ = first.wait();
    let out = finish(second);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let second_id = deployment_of(&out.stdout);
    assert_ne!(first_id, second_id);
    // The first's canary was left live: the second rolled it back before deploying.
    assert_eq!(
        exporter.calls(),
        ["canary", "rollback", "canary", "promote"]
    );
    let orphan = deploy_events(&repo, &first_id);
    let (kind, data) = orphan.last().unwrap();
    assert_eq!(kind, "deploy.rolled_back");
    assert!(
        data["reason"].as_str().unwrap().contains(&second_id),
        "{data}"
    );
    assert_eq!(
        kinds(&deploy_events(&repo, &second_id)),
        ["deploy.started", "deploy.checked", "deploy.promoted"]
    );
    // Two at once, neither killed: one deploys from start to end, then the other.
    let a = spawn(&repo, &["deploy", "prod", "--profile", "exploration"]);
    let b = spawn(&repo, &["deploy", "prod", "--profile", "exploration"]);
    let (a, b) = (finish(a), finish(b));
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let span = |out: &crate::Out| {
        let ev = with_seq(&repo, &deployment_of(&out.stdout));
        (ev.first().unwrap().2, ev.last().unwrap().2)
    };
    let (sa, sb) = (span(&a), span(&b));
    assert!(
        sa.1 < sb.0 || sb.1 < sa.0,
        "overlapping deployments: {sa:?} {sb:?}"
    );
    // Nothing was left to roll back: each promoted in turn.
    assert_eq!(
        exporter.calls()[4..],
        ["canary", "promote", "canary", "promote"]
    );
    assert_eq!(status_locks(&repo), Vec::<String>::new());
}

#[test]
fn policy_can_ask_for_approval_of_a_deployment_and_a_rejection_deploys_nothing() {
    let (repo, exporter, _prom) = setup(0.0, true, "safety: { policy_dir: policy }\n");
    repo.write(
        "policy/deploy.rego",
        "package abo\n\nrequire_approval contains \"prod deploys need a person\" if {\n  input.action == \"deploy\"\n  input.environment.name == \"prod\"\n}\n",
    );
    repo.commit_all("policy");
    let child = spawn(&repo, &["deploy", "prod", "--profile", "exploration"]);
    assert!(wait_for(60, || waiting(&repo)
        .iter()
        .any(|(_, s)| s == "start")));
    // Nothing ran before the approval.
    assert!(exporter.calls().is_empty());
    let (id, _) = waiting(&repo).remove(0);
    let no = abo(&repo, &["reject", &id, "--reason", "not today"]);
    assert_eq!(no.code, 0, "{}", no.stderr);
    let out = finish(child);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(exporter.calls().is_empty());
    let events = deploy_events(&repo, &id);
    let req = &events
        .iter()
        .find(|(k, _)| k == "deploy.approval_requested")
        .unwrap()
        .1;
    assert_eq!(
        req["reasons"],
        serde_json::json!(["prod deploys need a person"])
    );
    assert_eq!(events.last().unwrap().0, "deploy.abandoned");
}

#[test]
fn a_run_merged_into_the_base_branch_deploys_when_merge() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nbase_branch: main\ndeploy:\n  staging:\n    when: merge\n    canary: 'test -f a.txt'\n    \
         check: 'test -f a.txt'\n    promote: 'true'\n    rollback: 'true'\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    let out = abo(
        &repo,
        &["run", b.to_str().unwrap(), "--profile", "exploration"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let run = crate::status(&repo, None)["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = deploy_events(&repo, &run);
    assert_eq!(
        kinds(&events),
        ["deploy.started", "deploy.checked", "deploy.promoted"],
        "{}",
        out.stderr
    );
    assert_eq!(events[0].1["trigger"], "merge");
    // The ended run is not resumed, and deploys nothing again.
    let again = abo(&repo, &["resume", &run]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_eq!(deploy_events(&repo, &run).len(), events.len());
    // The landed commit is what was deployed: the canary saw the task's file.
    assert_eq!(
        events[0].1["commit"].as_str().unwrap(),
        repo.git(&["rev-parse", "main"]).trim()
    );
}

#[test]
fn a_failing_plan_deploys_nothing_and_says_why() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\ndeploy:\n  staging:\n    plan: 'echo cannot reach the state bucket; exit 3'\n    \
         canary: 'echo canary >> ran.txt'\n    check: 'true'\n    promote: 'true'\n    rollback: 'true'\n",
    );
    let out = abo(&repo, &["deploy", "staging", "--profile", "exploration"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let events = deploy_events(&repo, &deployment_of(&out.stdout));
    assert_eq!(kinds(&events), ["deploy.started", "deploy.abandoned"]);
    assert!(
        events[1].1["reason"].as_str().unwrap()
            == "plan exited with 3: cannot reach the state bucket",
        "{}",
        events[1].1
    );
    // An unknown environment is named, with the known ones.
    let bad = abo(&repo, &["deploy", "stagin"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("no environment `stagin`"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("did you mean `staging`?"),
        "{}",
        bad.stderr
    );
}

#[test]
fn on_a_postgres_store_deployments_from_two_clones_take_turns() {
    let db = abo_test_support::pg::ScratchDb::new();
    // Two repositories (two machines' clones) share the store and the environment.
    let yaml = "version: 1\ndeploy:\n  prod:\n    canary: 'true'\n    check: { run: 'true', for: 1s, every: 1s }\n    promote: 'true'\n    rollback: 'true'\n";
    let (a, b) = (TestRepo::new(), TestRepo::new());
    config(&a, yaml);
    config(&b, yaml);
    let args = [
        "deploy",
        "prod",
        "--profile",
        "exploration",
        "--store",
        &db.url,
    ];
    let (pa, pb) = (spawn(&a, &args), spawn(&b, &args));
    let (oa, ob) = (finish(pa), finish(pb));
    assert_eq!((oa.code, ob.code), (0, 0), "{}\n{}", oa.stderr, ob.stderr);
    let span = |repo: &TestRepo, out: &crate::Out| {
        let out2 = abo(
            repo,
            &[
                "events",
                &deployment_of(&out.stdout),
                "--json",
                "--store",
                &db.url,
            ],
        );
        let seqs: Vec<u64> = out2
            .stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        (seqs[0], *seqs.last().unwrap())
    };
    let (sa, sb) = (span(&a, &oa), span(&b, &ob));
    assert!(
        sa.1 < sb.0 || sb.1 < sa.0,
        "overlapping deployments: {sa:?} {sb:?}"
    );
}

/// `when: merge` also for a run that `abo serve` executes (created over the API): the merge into
/// the base branch deploys, as after `abo run`.
#[test]
fn a_run_served_over_the_api_deploys_when_merge() {
    use crate::serve::{http, start_server, token};
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nbase_branch: main\ndeploy:\n  staging:\n    when: merge\n    canary: 'test -f a.txt'\n    \
         check: 'test -f a.txt'\n    promote: 'true'\n    rollback: 'true'\n",
    );
    repo.write(
        "backlog.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    repo.commit_all("backlog");
    let admin = token(&repo, "admin");
    let (mut server, addr) = start_server(&repo);
    let (s, body) = http(
        &addr,
        "POST",
        "/v1/runs",
        Some(&admin),
        Some(serde_json::json!({"backlog": "backlog.yml", "profile": "exploration"})),
    );
    assert_eq!(s, 201, "{body}");
    let run = serde_json::from_str::<Value>(&body).unwrap()["run"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let promoted = wait_for(60, || {
        kinds(&deploy_events(&repo, &run)).contains(&"deploy.promoted")
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(promoted, "{:?}", deploy_events(&repo, &run));
    let events = deploy_events(&repo, &run);
    assert_eq!(events[0].1["trigger"], "merge");
    assert_eq!(
        events[0].1["commit"].as_str().unwrap(),
        repo.git(&["rev-parse", "main"]).trim()
    );
}
