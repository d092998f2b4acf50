//! `landing.verify`: the run branch verified after its tasks landed, bisected and healed.

use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo, artifact, brief, config, events, run, s, status};

/// Each task passes its own gate; together they break the verify suite (`e2e`).
const CONFIG: &str = "version: 1\nautonomy: { overrides: { merge: A2 } }\nattempts: { max: 2, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: unit, run: 'test -n \"$(ls)\"' }\n  - { name: e2e, run: 'if test -f a.txt && test -f b.txt; then echo \"e2e: a and b clash\"; exit 1; fi' }\nlanding:\n  verify: [e2e]\n";

const BACKLOG: &str = r#"
tasks:
  - { id: a, title: Add a, run: "echo a > a.txt", priority: 2, gates: [unit] }
  - id: b
    title: Add b
    priority: 1
    gates: [unit]
    run: |
      if [ -n "$ABO_FEEDBACK_FILE" ] && grep -q "a and b clash" "$ABO_FEEDBACK_FILE"; then echo fixed > c.txt
      else echo b > b.txt; fi
"#;

fn kinds(evs: &[Value], kind: &str) -> Vec<Value> {
    evs.iter().filter(|e| e["kind"] == kind).cloned().collect()
}

#[test]
fn two_changes_that_break_verify_together_are_bisected_to_the_second_which_is_reverted() {
    let repo = TestRepo::new();
    config(&repo, CONFIG);
    let backlog = repo.write_outside("b.yml", BACKLOG);
    let (code, doc, stderr) = run(&repo, &backlog, &["--max-parallel", "1"]);
    assert_eq!(code, 1, "a reverted task did not land: {stderr}");
    assert_eq!(brief(&doc), s(&[("a", "landed", 1), ("b", "reverted", 1)]));
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let evs = events(&repo, &id);
    let verifies = kinds(&evs, "run.verify");
    assert_eq!(verifies.len(), 2, "{verifies:?}");
    assert_eq!(verifies[0]["data"]["passed"], false);
    assert_eq!(verifies[0]["data"]["failed_gate"], "e2e");
    assert!(artifact(&repo, &verifies[0]["data"]["log"]).contains("e2e: a and b clash"));
    assert_eq!(verifies[1]["data"]["passed"], true);
    // Two landed commits: one bisect step, on the first, which is good.
    let steps = kinds(&evs, "run.bisect");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        (&steps[0]["task"], &steps[0]["data"]["passed"]),
        (&Value::from("a"), &Value::from(true))
    );
    let reverted = kinds(&evs, "task.reverted");
    assert_eq!(reverted.len(), 1);
    assert_eq!(reverted[0]["task"], "b");
    let bad = reverted[0]["data"]["commit"].as_str().unwrap();
    let revert = reverted[0]["data"]["revert"].as_str().unwrap();

    // The run branch: a, b, and the revert of b carrying the run's trailers; a is kept.
    let branch = doc["run"]["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["rev-parse", branch]).trim(), revert);
    let message = repo.git(&["log", "-1", "--format=%B", revert]);
    assert!(message.starts_with("Revert \"Add b\""), "{message}");
    for trailer in [
        format!("Abo-Revert-Of: {bad}"),
        format!("Abo-Run: {id}"),
        "Abo-Task: b".to_owned(),
    ] {
        assert!(
            message.lines().any(|l| l == trailer),
            "{trailer} in {message}"
        );
    }
    let files = repo.git(&["ls-tree", "--name-only", branch]);
    assert!(
        files.lines().any(|f| f == "a.txt") && !files.lines().any(|f| f == "b.txt"),
        "{files}"
    );
    // The user's checkout was not touched.
    assert!(!repo.path.join("a.txt").exists());

    // The report measures it from the events.
    let out = abo(&repo, &["report", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["tasks_reverted"], 1);
    assert_eq!(r["change_failure_rate"], 0.5);
    assert_eq!(r["time_to_restore"]["count"], 1);
    assert!(r["time_to_restore"]["p50_s"].as_f64().unwrap() >= 0.0);

    // `abo retry` gives b a fresh attempt that knows why it was reverted.
    let out = abo(&repo, &["retry", "b", "--run", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let doc = status(&repo, Some(&id));
    assert_eq!(brief(&doc), s(&[("a", "landed", 1), ("b", "landed", 2)]));
    let files = repo.git(&["ls-tree", "--name-only", branch]);
    assert!(files.lines().any(|f| f == "c.txt"), "{files}");
    let evs = events(&repo, &id);
    let last = kinds(&evs, "run.verify").pop().unwrap();
    assert_eq!(last["data"]["passed"], true);
}
