//! Budgets, the router and the cache through the binary, with fake agents reporting known costs.

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo, abo_cmd, abo_env, config, events, status};

struct Setup {
    repo: TestRepo,
    env: Vec<(&'static str, String)>,
    log: std::path::PathBuf,
}

/// A repository with fake agents on PATH, `claude` reporting `cost` USD per attempt.
fn setup(abo_yml: &str, cost: &str) -> Setup {
    let repo = TestRepo::new();
    let bin = abo_test_support::agents::install(&repo.outside);
    let log = repo.outside.join("agent-log");
    std::fs::create_dir_all(&log).unwrap();
    config(&repo, abo_yml);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![
        ("PATH", path),
        ("FAKE_AGENT_LOG", log.display().to_string()),
        ("FAKE_AGENT_COST", cost.to_owned()),
    ];
    Setup { repo, env, log }
}

impl Setup {
    fn abo(&self, args: &[&str]) -> crate::Out {
        abo_env(&self.repo, args, &self.env)
    }

    fn run(&self, backlog: &str, extra: &[&str]) -> (i32, Value, String) {
        let b = self.repo.write_outside("b.yml", backlog);
        let mut args = vec!["run", b.to_str().unwrap(), "--json"];
        args.extend(extra);
        let out = self.abo(&args);
        let doc = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
        (out.code, doc, out.stderr)
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn kinds<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["kind"] == kind).collect()
}

fn cap<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["run"]["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cap"] == name)
        .unwrap_or_else(|| panic!("no cap {name} in {doc}"))
}

/// The fake agents record their calls outside the repository: no sandbox in these tests.
const AGENTS: &str = "sandbox: { mode: off }\nbackends:\n  claude: { kind: claude-code, model: sonnet }\n  nochange: { kind: command, run: 'true' }\n";

fn tasks(ids: &[&str]) -> String {
    let mut b = String::from("tasks:\n");
    for id in ids {
        b.push_str(&format!(
            "  - {{ id: {id}, title: Do {id}, backend: claude, paths: ['claude-{id}.txt'] }}\n"
        ));
    }
    b
}

#[test]
fn spend_never_passes_a_cap_alerts_once_pauses_and_resumes_with_a_raised_cap() {
    let s = setup(
        &format!(
            "version: 1\nparallelism: {{ max_parallel: 2 }}\nbudgets: {{ run_usd: 1.0, task_usd: 0.4, alert_at: 0.8 }}\n{AGENTS}"
        ),
        "0.45",
    );
    let (code, doc, stderr) = s.run(&tasks(&["a", "b", "c", "d"]), &[]);
    assert_eq!(code, 4, "paused for budget: {stderr}");
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    assert_eq!(doc["run"]["status"], "paused");
    let reason = doc["run"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("budget: run.usd cap $1.00 reached: $0.90 spent"),
        "{reason}"
    );
    assert_eq!(doc["run"]["spent_usd"], 0.9);
    assert_eq!(doc["run"]["budget_usd"], 1.0);
    assert_eq!(cap(&doc, "run.usd")["spent"], 0.9);
    assert_eq!(cap(&doc, "run.usd")["alert"], true);
    // Claude Code is capped at its reservation.
    let args = std::fs::read_to_string(s.log.join("claude-a-1.args")).unwrap();
    assert!(args.contains("--max-budget-usd\n0.4000\n"), "{args}");
    let evs = events(&s.repo, &run);
    assert_eq!(kinds(&evs, "budget.charged").len(), 2);
    assert_eq!(kinds(&evs, "budget.alert").len(), 1);
    assert_eq!(kinds(&evs, "budget.alert")[0]["data"]["cap"], "run.usd");
    let exhausted = kinds(&evs, "budget.exhausted");
    assert_eq!(exhausted.len(), 1, "once per cap: {exhausted:?}");
    assert_eq!(exhausted[0]["data"]["cap"], "run.usd");
    // What was charged never passed the cap at any point of the log.
    let mut spent = 0.0;
    for e in kinds(&evs, "budget.charged") {
        spent += e["data"]["usd"].as_f64().unwrap();
        assert!(spent <= 1.0 + 1e-9, "{spent}");
    }
    let human = abo(&s.repo, &["status", &run]).stdout;
    assert!(
        human.contains("budget   run.usd          $0.90 of $1.00  ALERT"),
        "{human}"
    );

    // Raised to $2, the run goes on; the alert is not sent again.
    let out = s.abo(&["resume", &run, "--usd", "2", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["run"]["status"], "finished");
    assert_eq!(doc["run"]["budget_usd"], 2.0);
    assert!((doc["run"]["spent_usd"].as_f64().unwrap() - 1.8).abs() < 1e-9);
    let evs = events(&s.repo, &run);
    assert_eq!(kinds(&evs, "budget.alert").len(), 1);
    assert_eq!(kinds(&evs, "run.resumed")[0]["data"]["caps"]["usd"], 2.0);
}

#[test]
fn an_agent_streaming_past_its_reservation_is_stopped() {
    let s = setup(
        &format!("version: 1\nattempts: {{ max: 1 }}\nbudgets: {{ task_tokens: 2500 }}\n{AGENTS}"),
        "0.01",
    );
    let started = std::time::Instant::now();
    let (code, doc, stderr) = s.run(&tasks(&["spendy"]), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let t = &doc["tasks"][0];
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason
            .contains("claude-code was stopped: it used 3000 tokens, past its reservation of 2500"),
        "{reason}"
    );
    // What it used before it was stopped is charged.
    assert_eq!(t["tokens"], 3000);
    assert_eq!(doc["run"]["spent_tokens"], 3000);
}

#[test]
fn a_daily_cap_pauses_the_run_and_the_daemon_resumes_it_the_next_day() {
    let s = setup(
        &format!(
            "version: 1\nparallelism: {{ max_parallel: 1 }}\nbudgets: {{ daily_usd: 1.0, task_usd: 0.6, timezone: UTC }}\n{AGENTS}"
        ),
        "0.5",
    );
    // abo's clock is shifted to noon (UTC) today, then to noon tomorrow.
    let clock = s.repo.outside.join("clock-offset");
    #[allow(
        clippy::disallowed_methods,
        reason = "the test sets abo's clock from the real one"
    )]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let noon = 43_200_000 - now.rem_euclid(86_400_000);
    std::fs::write(&clock, noon.to_string()).unwrap();
    let mut env = s.env.clone();
    env.push(("ABO_CLOCK_OFFSET_FILE", clock.display().to_string()));
    let b = s.repo.write_outside("b.yml", &tasks(&["a", "b"]));
    let out = abo_env(&s.repo, &["run", b.to_str().unwrap(), "--json"], &env);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    assert!(
        doc["run"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("budget: daily.usd cap $1.00 reached: $0.50 spent"),
        "{doc}"
    );
    // The daemon leaves it alone today...
    let mut c = abo_cmd(
        &s.repo,
        &["daemon", "--interval", "200ms", "--addr", "127.0.0.1:0"],
    );
    for (k, v) in &env {
        c.env(k, v);
    }
    let mut daemon = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(status(&s.repo, Some(&run))["run"]["status"], "paused");
    // ...and resumes it once the day rolls over.
    std::fs::write(&clock, (noon + 86_400_000).to_string()).unwrap();
    let done = abo_test_support::wait_for(30, || {
        status(&s.repo, Some(&run))["run"]["status"] == "finished"
    });
    let _ = daemon.kill();
    let out = daemon.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(done, "daemon said: {said}");
    assert!(
        said.contains(&format!("{run} resuming: a task fits its caps again")),
        "{said}"
    );
    let out = abo_env(&s.repo, &["status", &run, "--json"], &env);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["tasks"][1]["status"], "landed");
    assert_eq!(
        cap(&doc, "daily.usd")["spent"],
        0.5,
        "today's spend only: {doc}"
    );
}

#[test]
fn a_second_identical_run_reuses_the_cached_results_and_runs_no_agent() {
    let yml = format!("version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\n{AGENTS}");
    let s = setup(&yml, "0.25");
    let backlog = tasks(&["one", "two"]);
    let (code, doc, stderr) = s.run(&backlog, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["run"]["spent_usd"], 0.5);
    assert_eq!(s.calls().len(), 2);

    let (code, doc, stderr) = s.run(&backlog, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(s.calls().len(), 2, "no agent ran: {:?}", s.calls());
    assert_eq!(doc["run"]["spent_usd"], 0.0);
    let run = doc["run"]["id"].as_str().unwrap();
    let evs = events(&s.repo, run);
    let hits = kinds(&evs, "cache.hit");
    assert_eq!(hits.len(), 2, "{evs:?}");
    assert!(kinds(&evs, "task.landed").len() == 2);
    // The reused change is the same as the first run's, and it went through the policy again.
    assert_eq!(kinds(&evs, "task.policy").len(), 2);
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(
        s.repo
            .git(&["show", &format!("{branch}:claude-one.txt")])
            .trim(),
        "edited by claude for one"
    );

    // --no-cache runs the backends again.
    let (code, _, stderr) = s.run(&backlog, &["--no-cache"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(s.calls().len(), 4);
    // `abo gc` prunes entries not used within its retention.
    let out = s.abo(&["gc", "--older-than", "0s", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let gc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(gc["cache_entries_removed"], 2, "{gc}");
    let (_, _, _) = s.run(&backlog, &[]);
    assert_eq!(s.calls().len(), 6, "pruned entries miss");
}

#[test]
fn the_learned_router_prefers_the_backend_that_lands_and_remembers_across_runs() {
    let yml = format!(
        "version: 1\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\nparallelism: {{ max_parallel: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nrouter: {{ learn: {{ code: [claude, nochange] }} }}\n{AGENTS}backends_default_placeholder"
    )
    .replace("backends_default_placeholder", "");
    let yml = yml.replace("backends:\n", "backends:\n  default: claude\n");
    let s = setup(&yml, "0.01");
    let mut backlog = String::from("tasks:\n");
    for i in 0..24 {
        backlog.push_str(&format!(
            "  - {{ id: t{i:02}, title: Task {i}, type: code }}\n"
        ));
    }
    let (_, doc, stderr) = s.run(&backlog, &["--no-cache"]);
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    let evs = events(&s.repo, &run);
    let chosen: Vec<String> = kinds(&evs, "router.decision")
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["rule"], "learned: task type `code`");
            e["data"]["backend"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(chosen.len(), 24, "{stderr}");
    let late = chosen[12..].iter().filter(|b| *b == "claude").count();
    assert!(late >= 10, "{chosen:?}");
    // `backend` in status is the one that ran.
    for t in doc["tasks"].as_array().unwrap() {
        let landed = t["status"] == "landed";
        assert_eq!(t["backend"] == "claude", landed, "{t}");
    }
    // A new run starts from what the store remembers.
    let (_, doc, _) = s.run(
        "tasks:\n  - { id: next, title: Next, type: code }\n",
        &["--no-cache"],
    );
    let evs = events(&s.repo, doc["run"]["id"].as_str().unwrap());
    let scores = &kinds(&evs, "router.decision")[0]["data"]["scores"];
    let claude = scores
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["backend"] == "claude")
        .unwrap();
    assert!(claude["landed"].as_u64().unwrap() >= 10, "{scores}");
}
