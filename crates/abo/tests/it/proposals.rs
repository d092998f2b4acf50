//! `proposals:` and `hedge:` end to end: command backends as the stub backends, each writing its
//! own change in its own worktree and sandbox; the expected candidate lands, the others are
//! recorded with their scores, stopped, charged and cleaned up.

use abo_test_support::{TestRepo, wait_for};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo, brief, config, events, read_run_id, run, s, spawn, status, task};

/// (attempt, backend, outcome, diff lines, rank) of each `task.proposal`, in order.
fn proposals(evs: &[Value]) -> Vec<(u64, String, String, u64, Option<u64>)> {
    evs.iter()
        .filter(|e| e["kind"] == "task.proposal")
        .map(|e| {
            let d = &e["data"];
            (
                d["attempt"].as_u64().unwrap(),
                d["backend"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
                d["score"]["diff_lines"].as_u64().unwrap(),
                d["rank"].as_u64(),
            )
        })
        .collect()
}

/// Three command backends: `wide` writes ten lines, `narrow` one, `broken` one its gate refuses.
const THREE: &str = r#"version: 1
backends:
  wide: { kind: command, run: 'for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i" >> a.txt; done' }
  narrow: { kind: command, run: 'echo one > a.txt' }
  broken: { kind: command, run: 'echo broken > a.txt' }
router:
  learn: { code: [narrow, broken] }
gates:
  - { name: test, run: '! grep -q broken a.txt' }
proposals:
  rules: [{ when: "task.type == 'code'", n: 3 }]
"#;

#[test]
fn three_proposals_one_failing_its_gate_one_wider_the_expected_one_lands() {
    let repo = TestRepo::new();
    config(&repo, THREE);
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, type: code, backend: wide }\n",
    );
    let (code, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(task(&doc, "a")["status"], "landed", "{doc}");
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let started: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "task.proposals")
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["data"]["requested"], 3);
    let mut got = proposals(&evs);
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, "wide".into(), "lost".into(), 10, Some(2)),
            (2, "narrow".into(), "won".into(), 1, Some(1)),
            (3, "broken".into(), "failed".into(), 1, None),
        ]
    );
    let won = evs
        .iter()
        .find(|e| e["kind"] == "task.proposal" && e["data"]["outcome"] == "won")
        .unwrap();
    assert_eq!(
        won["data"]["reason"],
        "best on diff: 1 changed lines against 10 changed lines for attempt 1"
    );
    // The winner's change is the one on the run branch, landed once.
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["show", &format!("{branch}:a.txt")]), "one\n");
    let landed: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "task.landed").collect();
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0]["data"]["attempt"], 2);
    // The loser's worktree is gone; the failed one is kept for inspection.
    let wt = |n: u32| repo.path.join(format!(".abo/worktrees/{id}/a-{n}"));
    assert!(!wt(1).exists() && !wt(2).exists());
    assert!(wt(3).exists());
    // `abo status --json` shows the candidates and why one won.
    let st = status(&repo, Some(id));
    let shown = &task(&st, "a")["proposals"];
    assert_eq!(shown.as_array().map(Vec::len), Some(3), "{shown}");
    let first = &shown[0];
    assert_eq!(
        (&first["attempt"], &first["outcome"], &first["backend"]),
        (&Value::from(2), &Value::from("won"), &Value::from("narrow"))
    );
    let text = abo(&repo, &["status", id]);
    assert!(
        text.stdout
            .contains("proposals #2 narrow won: best on diff"),
        "{}",
        text.stdout
    );
    // The API's task shape and the dashboard's task page show them too.
    use crate::serve::{http, start_server, token};
    let admin = token(&repo, "admin");
    let (mut server, addr) = start_server(&repo);
    let (code, api) = http(&addr, "GET", &format!("/v1/runs/{id}"), Some(&admin), None);
    let (pcode, page) = http(
        &addr,
        "GET",
        &format!("/runs/{id}/tasks/a"),
        Some(&admin),
        None,
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 200, "{api}");
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(task(&api, "a")["proposals"], task(&st, "a")["proposals"]);
    assert_eq!(pcode, 200, "{page}");
    assert!(
        page.contains("<section id=candidates><h2>Candidates</h2>"),
        "{page}"
    );
    assert!(
        page.contains(
            "<tr class=\"candidate won\"><td>2</td><td>narrow</td><td>won</td><td>1</td>"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "<tr class=\"candidate failed\"><td>3</td><td>broken</td><td>failed</td><td>-</td>"
        ),
        "{page}"
    );
}

#[test]
fn the_selection_order_is_the_users() {
    // With the criteria in another order the wider change can win: by review, then the attempt
    // number when nothing else is compared.
    let repo = TestRepo::new();
    config(
        &repo,
        &THREE.replace("proposals:\n", "proposals:\n  select: [review]\n"),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, type: code, backend: wide }\n",
    );
    let (code, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    let id = doc["run"]["id"].as_str().unwrap();
    let mut got = proposals(&events(&repo, id));
    got.sort();
    assert_eq!(
        got.iter().map(|p| (p.0, p.2.as_str())).collect::<Vec<_>>(),
        vec![(1, "won"), (2, "lost"), (3, "failed")]
    );
}

#[test]
fn a_proposals_rule_that_does_not_compile_is_a_located_error() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nproposals:\n  rules: [{ when: \"tsk.type == 'code'\", n: 3 }]\n  select: [diff, size]\n",
    );
    let b = repo.write_outside("b.yml", "tasks:\n  - { id: a, title: A, run: 'true' }\n");
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("abo.yml:3:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown variable `tsk`"),
        "{}",
        out.stderr
    );
}

/// The names of the processes that carry `marker` in their environment.
fn running_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

#[test]
fn a_hedge_wins_over_a_hung_first_attempt_which_is_stopped_and_charged() {
    let repo = TestRepo::new();
    // The first backend hangs far longer than the test; the hedge's backend passes.
    config(
        &repo,
        "version: 1\nbackends:\n  hung: { kind: command, run: 'sleep 600; echo late > a.txt' }\n  quick: { kind: command, run: 'echo quick > a.txt' }\nrouter: { fallback: [quick] }\ngates:\n  - { name: test, run: 'test -f a.txt' }\nhedge: { after: 1s, max: 1 }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, type: code, backend: hung }\n",
    );
    let (code, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(task(&doc, "a")["status"], "landed", "{doc}");
    let id = doc["run"]["id"].as_str().unwrap();
    let evs = events(&repo, id);
    let hedge: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "task.hedge").collect();
    assert_eq!(hedge.len(), 1, "{hedge:?}");
    assert_eq!(
        (
            &hedge[0]["data"]["attempt"],
            &hedge[0]["data"]["hedge"],
            &hedge[0]["data"]["backend"]
        ),
        (&Value::from(1), &Value::from(2), &Value::from("quick"))
    );
    let mut got = proposals(&evs);
    got.sort();
    assert_eq!(
        got.iter()
            .map(|p| (p.0, p.1.as_str(), p.2.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "hung", "stopped"), (2, "quick", "won")]
    );
    // The hung attempt was charged as it was stopped.
    let charged: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "budget.charged" && e["data"]["attempt"] == 1)
        .collect();
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(charged[0]["data"]["source"], "stopped");
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["show", &format!("{branch}:a.txt")]), "quick\n");
    // Its processes are gone, and its worktree.
    let wt = repo.path.join(format!(".abo/worktrees/{id}/a-1"));
    let marker = format!("ABO_WORKTREE={}", wt.display());
    assert!(
        wait_for(20, || running_with(&marker).is_empty()),
        "{:?}",
        running_with(&marker)
    );
    assert!(!wt.exists());
    // `abo report` counts the hedge and its win.
    let report = abo(&repo, &["report", "--json"]);
    let r: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(
        (
            &r["hedges"]["started"],
            &r["hedges"]["won"],
            &r["hedges"]["win_rate"]
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1.0)),
        "{r}"
    );
    assert!(
        abo(&repo, &["report"])
            .stdout
            .contains("hedges                        1 started, 1 won (100%)")
    );
    // Control: without `hedge:` the same first attempt is still running when the test looks.
    let repo2 = TestRepo::new();
    config(
        &repo2,
        "version: 1\nbackends:\n  hung: { kind: command, run: 'sleep 600; echo late > a.txt' }\n  quick: { kind: command, run: 'echo quick > a.txt' }\nrouter: { fallback: [quick] }\n",
    );
    let b2 = repo2.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, type: code, backend: hung }\n",
    );
    let mut child = spawn(&repo2, &["run", b2.to_str().unwrap()]);
    let id2 = read_run_id(&mut child);
    let marker2 = format!("ABO_RUN_ID={id2}");
    assert!(wait_for(20, || running_with(&marker2)
        .iter()
        .any(|c| c == "sleep")));
    // Long past the hedge's second, nothing else started and the first is still there.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let evs2 = events(&repo2, &id2);
    assert!(evs2.iter().all(|e| e["kind"] != "task.hedge"));
    assert!(running_with(&marker2).iter().any(|c| c == "sleep"));
    crate::crash::sigkill(&mut child);
    let out = abo(&repo2, &["kill", &id2]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn killed_mid_proposals_resume_lands_exactly_one() {
    let repo = TestRepo::new();
    let started = repo.outside.join("started");
    // Each candidate marks that it runs, then waits for the test to let it finish.
    let go = repo.outside.join("go");
    let wait = format!(
        "touch {}/$ABO_ATTEMPT; while [ ! -f {} ]; do sleep 0.1; done",
        started.display(),
        go.display()
    );
    std::fs::create_dir_all(&started).unwrap();
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\nbackends:\n  one: {{ kind: command, run: '{wait}; echo one > a.txt' }}\n  two: {{ kind: command, run: '{wait}; echo two two > a.txt; echo more >> a.txt' }}\nrouter:\n  learn: {{ code: [two] }}\nproposals:\n  rules: [{{ when: 'true', n: 2 }}]\n"
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, type: code, backend: one }\n",
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(30, || started.join("1").exists()
        && started.join("2").exists()));
    crate::crash::sigkill(&mut child);
    std::fs::write(&go, "").unwrap();
    crate::crash::resume_and_check(&repo, &id, &["a"]);
    let evs = events(&repo, &id);
    let landed: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "task.landed").collect();
    assert_eq!(landed.len(), 1);
    let won: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "task.proposal" && e["data"]["outcome"] == "won")
        .collect();
    assert_eq!(won.len(), 1);
    assert_eq!(won[0]["data"]["attempt"], landed[0]["data"]["attempt"]);
    assert_eq!(won[0]["data"]["backend"], "one");
    let status_doc = status(&repo, Some(&id));
    assert_eq!(brief(&status_doc), s(&[("a", "landed", 2)]));
}

/// A hostile hung candidate starts a child that drops abo's environment (`env -i`), so that no
/// marker names it; stopping the candidate kills its process group too. Outside the sandbox
/// (`mode: off`), where no PID namespace would take the child down with its helper.
#[test]
fn a_stopped_candidate_s_child_that_dropped_its_environment_is_killed_with_its_group() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox: { mode: off }\nbackends:\n  hung: { kind: command, run: 'env -i /bin/sleep 6071 & sleep 600' }\n  quick: { kind: command, run: 'echo quick > a.txt' }\nrouter: { fallback: [quick] }\nhedge: { after: 1s, max: 1 }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, type: code, backend: hung }\n",
    );
    let (code, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(task(&doc, "a")["status"], "landed", "{doc}");
    let hidden = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| c.split(|b| *b == 0).any(|a| a == b"6071"))
            .count()
    };
    assert!(wait_for(20, || hidden() == 0), "the env -i child survived");
}
