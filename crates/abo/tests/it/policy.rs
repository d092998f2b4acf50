//! Policy, secrets and approvals through the binary.

use abo_test_support::{TestRepo, files_containing, wait_for};
use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::{abo, brief, config, events, finish, read_run_id, run, s, spawn, task};

const SAFETY: &str = "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\nsafety:\n  forbidden_paths: [\".env*\", \"**/*.pem\"]\n  forbidden_patterns: [\"DROP TABLE\"]\n  max_diff_lines: 50\n";

#[test]
fn denied_changes_never_land_and_cancel_their_dependents() {
    let repo = TestRepo::new();
    config(&repo, SAFETY);
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: env, title: E, run: 'echo X=1 > .env.local' }\n  - { id: after-env, title: A, deps: [env], run: 'echo a > a.txt' }\n  - { id: sql, title: S, run: 'echo \"DROP TABLE users;\" > drop.sql' }\n  - { id: big, title: B, run: 'seq 1 60 > big.txt' }\n  - { id: fine, title: F, run: 'echo ok > fine.txt' }\n",
    );
    let (code, doc, _) = run(&repo, &b, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        brief(&doc),
        s(&[
            ("env", "denied", 1),
            ("after-env", "cancelled", 0),
            ("sql", "denied", 1),
            ("big", "denied", 1),
            ("fine", "landed", 1)
        ])
    );
    assert_eq!(
        task(&doc, "env")["reason"],
        ".env.local is an environment file; .env.local matches safety.forbidden_paths .env*"
    );
    assert_eq!(
        task(&doc, "after-env")["reason"],
        "dependency `env` was denied"
    );
    assert_eq!(
        task(&doc, "sql")["reason"],
        "the change adds forbidden text \"DROP TABLE\" (safety.forbidden_patterns)"
    );
    assert_eq!(
        task(&doc, "big")["reason"],
        "the change has 60 changed lines, more than safety.max_diff_lines (50)"
    );
    let id = doc["run"]["id"].as_str().unwrap();
    let landed: Vec<String> = repo
        .commits(doc["run"]["base"].as_str().unwrap(), &format!("abo/{id}"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(landed, ["fine"], "a denied attempt is never committed");
    let policy: Vec<Value> = events(&repo, id)
        .into_iter()
        .filter(|e| e["kind"] == "task.policy")
        .collect();
    assert_eq!(policy.len(), 4);
    assert!(
        policy
            .iter()
            .all(|e| e["data"]["duration_us"].as_u64().is_some())
    );
    let fine = policy.iter().find(|e| e["task"] == "fine").unwrap();
    assert_eq!(
        (
            fine["data"]["verdict"].as_str(),
            fine["data"]["risk"].as_str()
        ),
        (Some("allow"), Some("low"))
    );
}

#[test]
fn the_policy_judges_the_worktree_as_the_gates_left_it() {
    // The change is read after the backend and again after each gate; the policy sees the last.
    let repo = TestRepo::new();
    config(
        &repo,
        &format!("{SAFETY}gates:\n  - {{ name: writes, run: 'echo X=1 > .env.gate' }}\n"),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: ok, title: O, run: 'echo ok > ok.txt' }\n",
    );
    let (code, doc, _) = run(&repo, &b, &[]);
    assert_eq!(code, 1);
    assert_eq!(brief(&doc), s(&[("ok", "denied", 1)]));
    assert_eq!(
        task(&doc, "ok")["reason"],
        ".env.gate is an environment file; .env.gate matches safety.forbidden_paths .env*"
    );
}

#[test]
fn a_planted_secret_is_denied_and_its_value_appears_nowhere() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nattempts: { max: 1 }\ngates:\n  - { name: show, run: 'cat config.py' }\n",
    );
    let secret = "AKIAQWERTYUIOPASDFGH";
    // The backend copies the secret from outside the repository, as an agent might.
    let source = repo.write_outside("secret.txt", secret);
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: leak, title: L, run: 'printf \"aws_key = %s\\n\" \"$(cat {s})\" > config.py; echo wrote $(cat {s})' }}\n",
            s = source.display()
        ),
    );
    let out = abo(&repo, &["run", b.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(task(&doc, "leak")["status"], "denied");
    assert_eq!(
        task(&doc, "leak")["reason"],
        "config.py:1 adds a secret (aws-access-key)"
    );
    // Nowhere: anything under .abo/ (store, artifacts, worktrees, scratch), abo's output, any git object.
    assert_eq!(
        files_containing(&repo.path.join(".abo"), secret),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        task(&doc, "leak")["worktrees"],
        serde_json::json!([]),
        "a change holding a secret is not kept"
    );
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    let objects = repo.git(&["cat-file", "--batch-all-objects", "--batch"]);
    assert!(!objects.contains(secret), "no git object holds the secret");
    let evs = abo(&repo, &["events", "--json"]);
    assert!(!evs.stdout.contains(secret));
    // The backend's and the gate's logs held the value: stored redacted.
    let id = doc["run"]["id"].as_str().unwrap();
    let all = events(&repo, id);
    let backend = all
        .iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    assert_eq!(
        crate::artifact(&repo, &backend["data"]["log"]),
        "wrote [REDACTED:aws-access-key]\n"
    );
    let gate = all.iter().find(|e| e["kind"] == "task.gate").unwrap();
    assert_eq!(
        crate::artifact(&repo, &gate["data"]["log"]),
        "aws_key = [REDACTED:aws-access-key]\n"
    );
}

#[test]
fn changes_outside_scope_wait_for_approval_and_are_decided_with_a_reason() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\nattempts: { max: 1 }\n");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: scoped, title: S, paths: ['src/**'], run: 'mkdir -p src; echo a > src/a.txt; echo b > README.md' }\n  - { id: after, title: A, deps: [scoped], run: 'echo c > c.txt' }\n  - { id: other, title: O, paths: ['docs/**'], run: 'echo x > outside.txt' }\n",
    );
    let (code, doc, _) = run(&repo, &b, &[]);
    assert_eq!(code, 4, "only approvals are left: paused");
    assert_eq!(
        brief(&doc),
        s(&[
            ("scoped", "awaiting_approval", 1),
            ("after", "pending", 0),
            ("other", "awaiting_approval", 1)
        ])
    );
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let out = abo(&repo, &["approvals"]);
    assert!(
        out.stdout
            .contains(&format!("{id}/scoped/1  scoped (merge)"))
            && out
                .stdout
                .contains("- README.md is outside the task's paths"),
        "{}",
        out.stdout
    );
    let out = abo(
        &repo,
        &["reject", "other", "--reason", "not what was asked"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = abo(
        &repo,
        &[
            "approve",
            &format!("{id}/scoped/1"),
            "--reason",
            "README edit is fine",
        ],
    );
    assert_eq!(
        out.stdout.trim(),
        format!("approved {id}/scoped/1 (scoped); continue the run with: abo resume {id}")
    );
    let out = abo(&repo, &["resume", &id, "--json"]);
    assert_eq!(out.code, 1, "other was denied: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        brief(&doc),
        s(&[
            ("scoped", "landed", 1),
            ("after", "landed", 1),
            ("other", "denied", 1)
        ]),
        "{doc}"
    );
    assert_eq!(
        task(&doc, "other")["reason"],
        "rejected by a person: not what was asked"
    );
    let out = abo(&repo, &["approve", "scoped", "--reason", "again"]);
    assert_eq!(
        (out.code, out.stderr.trim()),
        (
            2,
            "error: no pending approval `scoped` (hint: `abo approvals` lists them)"
        )
    );
}

#[test]
fn approving_while_the_run_executes_lets_it_continue() {
    let repo = TestRepo::new();
    config(&repo, "version: 1\n");
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: ask, title: A, paths: ['x/**'], run: 'echo a > a.txt' }\n  - { id: slow, title: S, run: 'sleep 3; echo s > s.txt' }\n",
    );
    let mut child = spawn(&repo, &["run", b.to_str().unwrap()]);
    let id = read_run_id(&mut child);
    assert!(wait_for(20, || abo(&repo, &["approvals", "--json"])
        .stdout
        .contains("ask")));
    let out = abo(&repo, &["approve", "ask", "--reason", "ok"]);
    assert!(
        out.stdout.starts_with("approve of ")
            && out.stdout.contains("sent to the process executing run"),
        "{}",
        out.stdout
    );
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = crate::status(&repo, Some(&id));
    assert_eq!(
        brief(&doc),
        s(&[("ask", "landed", 1), ("slow", "landed", 1)])
    );
}

#[test]
fn policy_eval_and_test_on_the_command_line() {
    let repo = TestRepo::new();
    config(&repo, SAFETY);
    let input = repo.write_outside(
        "input.json",
        r#"{"action": "merge", "task": {"id": "t", "type": "code", "title": "T", "labels": [], "paths": ["src/**"]},
            "change": {"files": [{"path": "src/auth/x.pem", "status": "added", "lines_added": 3, "lines_removed": 0, "binary": false}], "lines_added": 3, "lines_removed": 0, "added_text": "k"},
            "secrets": []}"#,
    );
    let out = abo(
        &repo,
        &[
            "policy",
            "eval",
            "--input",
            input.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"verdict": "deny", "deny": ["src/auth/x.pem matches safety.forbidden_paths **/*.pem"], "require_approval": [], "risk": "critical"})
    );

    repo.write(".abo/policy/team.rego", "package abo\n\nrequire_approval contains \"touches billing\" if {\n\tsome f in input.change.files\n\tstartswith(f.path, \"billing/\")\n}\n\ntest_billing if {\n\tcount(require_approval) == 1 with input as {\"change\": {\"files\": [{\"path\": \"billing/a.rs\", \"binary\": false}]}}\n}\n\ntest_broken if {\n\tcount(deny) == 99\n}\n");
    let out = abo(&repo, &["policy", "test"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    // One line per rule: the user's passing and failing rules by name, then the tally.
    let line = |status: &str, rule: &str| {
        out.stdout
            .lines()
            .any(|l| l.starts_with(status) && l.ends_with(&format!("team.rego {rule}")))
    };
    assert!(
        line("PASS ", "test_billing") && line("FAIL ", "test_broken"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.trim_end().ends_with("7 passed, 1 failed"),
        "{}",
        out.stdout
    );

    repo.write(
        ".abo/policy/broken.rego",
        "package abo\n\ndeny contains msg if {\n  msg := \n}\n",
    );
    let b = repo.write_outside("b.yml", "tasks:\n  - { id: a, title: A, run: 'true' }\n");
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("broken.rego:4:7: expecting `}` while parsing set"),
        "{}",
        out.stderr
    );
}

#[test]
fn landed_commits_carry_a_signed_proof_that_verify_checks() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\ngates:\n  - { name: test, run: 'true' }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: Add a, run: 'echo a > a.txt' }\n  - { id: b, title: Add b, run: 'printf \"b\\\\nb\\\\n\" > b.txt', deps: [a] }\n",
    );
    let (code, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    let commit = task(&doc, "b")["commit"].as_str().unwrap().to_owned();
    let out = abo(&repo, &["verify", &commit, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["change_id"].as_str()),
        (
            Some(true),
            Some(format!("{}/b/1", doc["run"]["id"].as_str().unwrap()).as_str())
        )
    );

    let note = repo.git(&["notes", "--ref", "abo-proof", "show", &commit]);
    let envelope: Value = serde_json::from_str(&note).unwrap();
    let proof = &envelope["proof"];
    assert_eq!(
        (
            proof["diff"]["lines_added"].as_u64(),
            proof["diff"]["files_modified"].clone()
        ),
        (Some(2), serde_json::json!(["b.txt"]))
    );
    assert_eq!(proof["tests"]["gates"][0]["name"], "test");
    assert_eq!(proof["validation"]["policy"]["verdict"], "allow");
    assert_eq!(proof["provenance"]["backend"], "command");

    // Tampered: the note says 99 lines; the signature no longer matches and neither does the diff.
    let mut forged = envelope.clone();
    forged["proof"]["diff"]["lines_added"] = serde_json::json!(99);
    repo.git(&[
        "notes",
        "--ref",
        "abo-proof",
        "add",
        "-f",
        "-m",
        &forged.to_string(),
        &commit,
    ]);
    let out = abo(&repo, &["verify", &commit]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("FAILED: the signature does not match the proof and the trusted key"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("FAILED: diff.lines_added is 99 in the proof but 2 in the commit"),
        "{}",
        out.stderr
    );

    // A genuine proof on another commit: refused.
    let a = task(&doc, "a")["commit"].as_str().unwrap().to_owned();
    let a_note = repo.git(&["notes", "--ref", "abo-proof", "show", &a]);
    repo.git(&[
        "notes",
        "--ref",
        "abo-proof",
        "add",
        "-f",
        "-m",
        a_note.trim(),
        &commit,
    ]);
    let out = abo(&repo, &["verify", &commit]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("FAILED: the proof is for commit {a}")),
        "{}",
        out.stderr
    );

    let out = abo(&repo, &["verify", doc["run"]["base"].as_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("has no proof of change"),
        "{}",
        out.stderr
    );
}

const OWN: &str = "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\nsafety:\n  policy_dir: rules\n";

/// Tasks rewriting abo's own files, each beside an ordinary one in the same run.
const REWRITES: &str = "tasks:\n  - { id: sandbox-off, title: C, run: 'printf \"version: 1\\nsandbox: { mode: off }\\n\" > abo.yml' }\n  - { id: allow-all, title: P, run: 'echo package abo > rules/allow.rego' }\n  - { id: more-tasks, title: B, run: 'echo \"  - { id: x, title: X, run: x }\" >> plans/backlog.yml' }\n  - { id: unignore, title: U, run: 'echo \"!/.abo/\" > .gitignore; mkdir -p .abo/policy; echo package abo > .abo/policy/p.rego' }\n  - { id: relink, title: L, run: 'ln -sfn elsewhere.yml plans/current.yml' }\n  - { id: fine, title: F, run: 'echo ok > fine.txt' }\n";

fn own_files_run(safety: &str) -> (TestRepo, i32, Value) {
    let repo = TestRepo::new();
    config(&repo, &format!("{OWN}{safety}"));
    repo.write("rules/team.rego", "package abo\n");
    repo.write("plans/backlog.yml", REWRITES);
    // The run is started through a symlink: the link and its target are both protected.
    std::os::unix::fs::symlink("backlog.yml", repo.path.join("plans/current.yml")).unwrap();
    repo.commit_all("rules and backlog");
    let (code, doc, _) = run(&repo, &repo.path.join("plans/current.yml"), &[]);
    (repo, code, doc)
}

fn own(path: &str) -> String {
    format!("{path} is abo's own configuration, policy or backlog (safety.protected)")
}

#[test]
fn a_change_to_abo_own_files_is_denied_and_an_ordinary_one_lands() {
    let (repo, code, doc) = own_files_run("");
    assert_eq!(code, 1, "{doc}");
    assert_eq!(
        brief(&doc),
        s(&[
            ("sandbox-off", "denied", 1),
            ("allow-all", "denied", 1),
            ("more-tasks", "denied", 1),
            ("unignore", "denied", 1),
            ("relink", "denied", 1),
            ("fine", "landed", 1)
        ])
    );
    for (t, path) in [
        ("sandbox-off", "abo.yml"),
        ("allow-all", "rules/allow.rego"),
        ("more-tasks", "plans/backlog.yml"),
        ("unignore", ".abo/policy/p.rego"),
        ("relink", "plans/current.yml"),
    ] {
        assert_eq!(task(&doc, t)["reason"], own(path), "{t}");
    }
    let id = doc["run"]["id"].as_str().unwrap();
    let base = doc["run"]["base"].as_str().unwrap();
    let landed: Vec<String> = repo
        .commits(base, &format!("abo/{id}"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(landed, ["fine"]);
    assert_eq!(
        repo.git(&["show", &format!("abo/{id}:abo.yml")]),
        format!("{OWN}")
    );
}

#[test]
fn with_safety_protected_needs_approval_a_change_to_abo_own_files_waits_for_a_person() {
    let (_repo, code, doc) = own_files_run("  protected: needs_approval\n");
    assert_eq!(code, 4, "only approvals are left: {doc}");
    assert_eq!(
        brief(&doc),
        s(&[
            ("sandbox-off", "awaiting_approval", 1),
            ("allow-all", "awaiting_approval", 1),
            ("more-tasks", "awaiting_approval", 1),
            ("unignore", "awaiting_approval", 1),
            ("relink", "awaiting_approval", 1),
            ("fine", "landed", 1)
        ])
    );
}

#[test]
fn what_the_diff_would_hide_reaches_the_policy() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\n",
    );
    // The secrets come from files outside the repository: a backlog holding one is refused.
    let key = ["AKIAQWER", "TYUIOPASDFGH"].concat();
    let out = |name: &str, bytes: &[u8]| {
        let p = repo.outside.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let plus = out("plus.c", format!("// c\n++ {key};\n").as_bytes());
    let k = out("k.txt", format!("{key}\n").as_bytes());
    let blob = out(
        "blob.bin",
        &[b"\0\x01".as_slice(), key.as_bytes(), b"\0"].concat(),
    );
    let b = repo.write_outside(
        "b.yml",
        &format!("tasks:\n  - {{ id: plus, title: P, run: 'cp {plus} a.c' }}\n  - {{ id: quoted, title: Q, run: 'mkdir -p .github/workflows; echo on: push > .github/workflows/ci-é.yml' }}\n  - {{ id: attrs, title: A, run: 'echo \"*.txt -diff\" > .gitattributes; cp {k} k.txt' }}\n  - {{ id: blob, title: B, run: 'cp {blob} blob.bin' }}\n  - {{ id: fine, title: F, run: 'printf \"// c\\n++ i;\\n\" > b.c' }}\n"),
    );
    let (code, doc, _) = run(&repo, &b, &[]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(
        brief(&doc),
        s(&[
            ("plus", "denied", 1),
            ("quoted", "denied", 1),
            ("attrs", "denied", 1),
            ("blob", "denied", 1),
            ("fine", "landed", 1)
        ])
    );
    assert_eq!(
        task(&doc, "plus")["reason"],
        "a.c:2 adds a secret (aws-access-key)"
    );
    assert_eq!(
        task(&doc, "quoted")["reason"],
        ".github/workflows/ci-é.yml is CI configuration"
    );
    assert_eq!(
        task(&doc, "attrs")["reason"],
        "k.txt:1 adds a secret (aws-access-key)"
    );
    // Code written as `++` lines is code, not comments: not low risk.
    let id = doc["run"]["id"].as_str().unwrap();
    let fine = events(&repo, id)
        .into_iter()
        .find(|e| e["kind"] == "task.policy" && e["task"] == "fine")
        .unwrap();
    assert_eq!(fine["data"]["risk"], "medium");
}

#[test]
fn credentials_a_command_and_a_gate_print_are_redacted_from_every_log() {
    let repo = TestRepo::new();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYm8tdGVzdCJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    // Outside the repository and the backlog (a backlog holding them is refused): what a tool
    // prints, as an agent or a test runner might.
    let creds = repo.write_outside("creds.txt", &format!("token {jwt}\nstripe {stripe}\n"));
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\ngates:\n  - {{ name: show, run: 'cat {}' }}\n",
            creds.display()
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: talk, title: T, run: 'echo ok > ok.txt; cat {} >&2' }}\n",
            creds.display()
        ),
    );
    let out = abo(&repo, &["run", b.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(task(&doc, "talk")["status"], "landed");
    let id = doc["run"]["id"].as_str().unwrap();
    let all = events(&repo, id);
    // Control: the backend's stderr and the gate's output held both values, where each
    // `[REDACTED:...]` now is.
    let redacted = "token [REDACTED:jwt]\nstripe [REDACTED:stripe-key]\n";
    let backend = all
        .iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    assert_eq!(crate::artifact(&repo, &backend["data"]["log"]), redacted);
    let gate = all.iter().find(|e| e["kind"] == "task.gate").unwrap();
    assert_eq!(crate::artifact(&repo, &gate["data"]["log"]), redacted);
    let evs = abo(&repo, &["events", "--json"]);
    for secret in [jwt, stripe] {
        assert_eq!(
            files_containing(&repo.path.join(".abo"), secret),
            Vec::<std::path::PathBuf>::new()
        );
        assert!(!evs.stdout.contains(secret));
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    }
}

/// Code that starts like a comment of another language (the red team's: Python starting with `*`,
/// a C `#define`) is code: not low risk, so never merged on its own at A3. The control: a real
/// comment-only change still is low risk.
#[test]
fn code_that_looks_like_a_comment_elsewhere_is_not_low_risk() {
    let repo = TestRepo::new();
    repo.write("src/app.py", "x = 1\n");
    repo.write("src/m.c", "int x;\n");
    repo.write("src/lib.py", "y = 2\n");
    config(
        &repo,
        "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\n",
    );
    let line = |name: &str, text: &str| repo.write_outside(name, text).display().to_string();
    let py = line(
        "py.txt",
        "*_, = [__import__(\"os\").system(\"id > /tmp/x\")]\n",
    );
    let c = line("c.txt", "#define printf(...) system(\"id\")\n");
    let note = line("note.txt", "# why y is 2\n");
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: py, title: P, run: 'cat {py} >> src/app.py' }}\n  - {{ id: c, title: C, run: 'cat {c} >> src/m.c' }}\n  - {{ id: note, title: N, run: 'cat {note} >> src/lib.py' }}\n"
        ),
    );
    let (_, doc, stderr) = run(&repo, &b, &[]);
    let id = doc["run"]["id"].as_str().unwrap();
    let mut risks: Vec<(String, String)> = events(&repo, id)
        .into_iter()
        .filter(|e| e["kind"] == "task.policy")
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_owned(),
                e["data"]["risk"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    risks.sort();
    assert_eq!(
        risks,
        [
            ("c".to_owned(), "medium".to_owned()),
            ("note".to_owned(), "low".to_owned()),
            ("py".to_owned(), "medium".to_owned()),
        ],
        "{stderr}"
    );
}

/// A command names a file after a token. The name is scanned as text: the task is denied, and
/// the token is nowhere: not under `.abo/`, in `abo events --json`, `abo status --json` or abo's
/// output (the reasons quote the path, redacted). The control: the same reason unredacted held it.
#[test]
fn a_secret_in_a_file_name_is_denied_and_appears_nowhere() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\n",
    );
    let token = ["ghp_abcdefghijklmnop", "qrstuvwxyz0123456789"].concat();
    // From a file outside the repository: a backlog holding the token is refused.
    let source = repo.write_outside("token.txt", &token);
    let b = repo.write_outside(
        "b.yml",
        &format!(
            "tasks:\n  - {{ id: name, title: N, run: 'echo hi > \"notes-$(cat {s}).md\"; ls' }}\n  - {{ id: fine, title: F, run: 'echo ok > notes.md' }}\n",
            s = source.display()
        ),
    );
    let out = abo(&repo, &["run", b.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        brief(&doc),
        s(&[("name", "denied", 1), ("fine", "landed", 1)])
    );
    let reason = task(&doc, "name")["reason"].as_str().unwrap().to_owned();
    assert_eq!(
        reason,
        "notes-[REDACTED:github-token].md:0 adds a secret (github-token)"
    );
    // The control: the backend's `ls` printed the name, stored redacted.
    let id = doc["run"]["id"].as_str().unwrap();
    let backend = events(&repo, id)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished" && e["task"] == "name")
        .unwrap();
    assert!(
        crate::artifact(&repo, &backend["data"]["log"])
            .contains("notes-[REDACTED:github-token].md")
    );
    assert_eq!(
        files_containing(&repo.path.join(".abo"), &token),
        Vec::<std::path::PathBuf>::new()
    );
    let names = repo.git(&["ls-files", "--others", "--cached"]);
    assert!(!names.contains(&token), "{names}");
    let evs = abo(&repo, &["events", "--json"]);
    let status = abo(&repo, &["status", "--json"]);
    for (what, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("events", &evs.stdout),
        ("status", &status.stdout),
    ] {
        assert!(!text.contains(&token), "the token in {what}: {text}");
    }
    // No file or directory under `.abo/` is named after it either.
    let mut stack = vec![repo.path.join(".abo")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            assert!(
                !e.file_name().to_string_lossy().contains(&token),
                "{:?}",
                e.path()
            );
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
}

/// One long line is one changed line: `safety.max_diff_bytes` bounds what a change adds in bytes
/// (the red team's 3 MB line, here over a bound of 1000). The control: `max_diff_lines` alone lets
/// it through, and a change under the bound lands.
#[test]
fn one_long_line_is_bounded_by_bytes() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\nsafety: { max_diff_lines: 50, max_diff_bytes: 1000 }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: long, title: L, run: 'head -c 3000 /dev/zero | tr \"\\\\0\" a > long.txt; echo >> long.txt' }\n  - { id: short, title: S, run: 'head -c 900 /dev/zero | tr \"\\\\0\" a > short.txt; echo >> short.txt' }\n",
    );
    let (_, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(
        brief(&doc),
        s(&[("long", "denied", 1), ("short", "landed", 1)]),
        "{stderr}"
    );
    assert_eq!(
        task(&doc, "long")["reason"],
        "the change adds 3001 bytes, more than safety.max_diff_bytes (1000)"
    );
}

/// A Node project whose `mean` has a bug that its test catches: the base's gate fails.
const STATS: &str = "function sum(xs) {\n  let t = 0;\n  for (const x of xs) t += x;\n  return t;\n}\n\nfunction mean(xs) {\n  return sum(xs) / (xs.length + 1);\n}\n\nmodule.exports = { sum, mean };\n";

const STATS_TEST: &str = "const test = require('node:test');\nconst assert = require('node:assert');\nconst { sum, mean } = require('./stats.js');\n\ntest('sum adds', () => {\n  assert.strictEqual(sum([1, 2, 3]), 6);\n});\n\ntest('mean averages', () => {\n  assert.strictEqual(mean([2, 4]), 3);\n});\n";

/// The gate runs node's test runner with its JUnit reporter; abo reads the report.
const NODE_GATE: &str = "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\ngates:\n  - name: test\n    run: node --test --test-reporter=junit --test-reporter-destination=junit.xml\n    reports: { junit: junit.xml }\n";

#[test]
fn a_change_that_weakens_the_tests_catching_its_bug_does_not_land_and_the_honest_fix_does() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "delete-test",
            // The failing test removed (its three lines).
            "sed -i '/mean averages/,/^});/d' stats.test.js",
            "denied",
            &[
                "1 tests ran, 2 on the base",
                "the change removes the test mean averages",
                "the change removes the test test::mean averages",
            ],
        ),
        (
            "delete-file",
            "rm stats.test.js",
            "denied",
            &["the change deletes the test file stats.test.js"],
        ),
        (
            "skip",
            "sed -i \"s/^test('mean/test.skip('mean/\" stats.test.js",
            "denied",
            &["the change skips a test: stats.test.js: test.skip('mean averages', () => {"],
        ),
        (
            "neuter",
            "sed -i 's/assert.strictEqual(mean(\\[2, 4\\]), 3);/assert.ok(true);/' stats.test.js",
            "denied",
            &["stats.test.js asserts a constant: assert.ok(true);"],
        ),
        (
            "honest-fix",
            "sed -i 's/(xs.length + 1)/xs.length/' stats.js",
            "landed",
            &[],
        ),
    ];
    for (id, script, want, reasons) in cases {
        let repo = TestRepo::new();
        repo.write("stats.js", STATS);
        repo.write("stats.test.js", STATS_TEST);
        config(&repo, NODE_GATE);
        let b = repo.write_outside(
            "b.yml",
            &format!("tasks:\n  - {{ id: {id}, title: Fix mean, run: {script:?} }}\n"),
        );
        let (_, doc, stderr) = run(&repo, &b, &[]);
        assert_eq!(brief(&doc), s(&[(id, want, 1)]), "{id}: {stderr}");
        let reason = task(&doc, id)["reason"].as_str().unwrap_or("").to_owned();
        for r in *reasons {
            assert!(reason.contains(r), "{id}: {r:?} not in {reason:?}");
        }
        // The gate's figures are in its event, from the report (which is no part of the change).
        let rid = doc["run"]["id"].as_str().unwrap();
        let log = events(&repo, rid);
        let gate = log.iter().find(|e| e["kind"] == "task.gate").unwrap();
        // The input the policy saw is stored; `abo policy eval` shows it and decides the same.
        let policy = log.iter().find(|e| e["kind"] == "task.policy").unwrap();
        let stored = repo
            .path
            .join(".abo/artifacts")
            .join(policy["data"]["input"].as_str().unwrap());
        let out = abo(
            &repo,
            &[
                "policy",
                "eval",
                "--input",
                stored.to_str().unwrap(),
                "--show-input",
                "--json",
            ],
        );
        let eval: Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
        assert_eq!(
            eval["verdict"],
            if *want == "landed" { "allow" } else { "deny" },
            "{id}"
        );
        assert_eq!(eval["input"]["tests"]["measured"], true, "{id}");
        assert_eq!(
            eval["input"]["baseline"]["tests"]["failed"], 1,
            "{id}: the base's bug"
        );
        let tests = &gate["data"]["figures"]["tests"];
        assert!(tests["run"].as_u64().is_some(), "{id}: {gate}");
        if *want == "landed" {
            assert_eq!(
                tests,
                &serde_json::json!({"run": 2, "passed": 2, "failed": 0, "skipped": 0})
            );
            let files = repo.git(&["show", "--name-only", "--format=", &format!("abo/{rid}")]);
            assert_eq!(files.trim(), "stats.js", "the report is not committed");
        }
    }
}

/// A test that fails the first time it runs in a worktree and passes after (it leaves a marker).
const FLAKY_TEST: &str = "const test = require('node:test');\nconst assert = require('node:assert');\nconst fs = require('node:fs');\n\ntest('flaky one', () => {\n  if (!fs.existsSync('flake.marker')) {\n    fs.writeFileSync('flake.marker', '1');\n    assert.fail('first run');\n  }\n});\n";

#[test]
fn a_gate_that_fails_then_passes_is_flaky_and_quarantine_reports_known_flaky_failures() {
    let repo = TestRepo::new();
    repo.write("flaky.test.js", FLAKY_TEST);
    repo.write(".gitignore", "flake.marker\n");
    let gate = |extra: &str| {
        format!(
            "version: 1\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\ngates:\n  - name: test\n    run: node --test --test-reporter=junit --test-reporter-destination=junit.xml\n    reports: {{ junit: junit.xml }}\n{extra}"
        )
    };
    config(&repo, &gate("    retries: 1\n"));
    let b = repo.write_outside(
        "a.yml",
        "tasks:\n  - { id: a, title: A, type: docs, run: 'echo a > a.md' }\n",
    );
    let (_, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(brief(&doc), s(&[("a", "landed", 1)]), "{stderr}");
    let rid = doc["run"]["id"].as_str().unwrap().to_owned();
    let g = events(&repo, &rid)
        .into_iter()
        .find(|e| e["kind"] == "task.gate")
        .unwrap();
    assert_eq!(g["data"]["runs"], 2);
    assert_eq!(
        g["data"]["figures"]["flaky"],
        serde_json::json!(["test::flaky one"])
    );
    let report = abo(&repo, &["report", "--json"]);
    let r: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(r["flaky_rate"], 1.0);
    assert_eq!(
        (
            r["flaky_record"][0]["test"].as_str(),
            r["flaky_record"][0]["count"].as_u64()
        ),
        (Some("test::flaky one"), Some(1))
    );
    let text = abo(&repo, &["report"]).stdout;
    assert!(
        text.contains("flaky gate runs               100%"),
        "{text}"
    );
    assert!(text.contains("1x  test: test::flaky one"), "{text}");

    // Quarantined, without retries: the known flaky test's failure is reported, not failed.
    config(&repo, &gate("    quarantine: true\n"));
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: b, title: B, type: docs, run: 'echo b > b.md' }\n",
    );
    let (_, doc, stderr) = run(&repo, &b, &[]);
    assert_eq!(brief(&doc), s(&[("b", "landed", 1)]), "{stderr}");
    let rid = doc["run"]["id"].as_str().unwrap().to_owned();
    let g = events(&repo, &rid)
        .into_iter()
        .find(|e| e["kind"] == "task.gate")
        .unwrap();
    assert_eq!(
        (g["data"]["passed"].as_bool(), g["data"]["exit"].as_i64()),
        (Some(true), Some(1))
    );
    assert_eq!(
        g["data"]["figures"]["quarantined"],
        serde_json::json!(["test::flaky one"])
    );

    // A failure that is not known flaky still fails, quarantine or not.
    let c = repo.write_outside(
        "c.yml",
        "tasks:\n  - { id: c, title: C, type: docs, run: \"printf 'require(\\\"node:test\\\")(\\\"broken\\\", () => { throw new Error(\\\"no\\\"); });\\\\n' > broken.test.js\" }\n",
    );
    let (_, doc, stderr) = run(&repo, &c, &[]);
    assert_eq!(brief(&doc), s(&[("c", "failed", 1)]), "{stderr}");
    let reason = task(&doc, "c")["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("gate `test` failed"), "{reason}");
}

/// The CI rule was written into the bundle: a dependency bump of a CI action could never land.
/// Now it is a default that `safety.rules` relaxes (or tightens), as every built-in rule.
#[test]
fn built_in_rules_are_defaults_that_safety_rules_relaxes() {
    let cases = [
        ("", "denied"),
        ("safety:\n  forbidden_paths: []\n", "denied"),
        (
            "safety:\n  rules: { ci_config: needs_approval }\n",
            "awaiting_approval",
        ),
        ("safety:\n  rules: { ci_config: off }\n", "landed"),
        (
            "safety:\n  rules: { ci_config: off, env_files: deny }\n",
            "landed",
        ),
    ];
    for (safety, want) in cases {
        let repo = TestRepo::new();
        repo.write(
            ".github/workflows/ci.yml",
            "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v3\n",
        );
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\n{safety}"
            ),
        );
        let b = repo.write_outside(
            "b.yml",
            "tasks:\n  - { id: bump, title: Bump checkout, type: dep_update, run: \"sed -i 's/checkout@v3/checkout@v4/' .github/workflows/ci.yml\" }\n",
        );
        let (_, doc, stderr) = run(&repo, &b, &["--profile", "exploration"]);
        assert_eq!(brief(&doc), s(&[("bump", want, 1)]), "{safety}: {stderr}");
        if want != "landed" {
            let reason = task(&doc, "bump")["reason"].as_str().unwrap().to_owned();
            assert!(
                reason.contains(".github/workflows/ci.yml is CI configuration"),
                "{reason}"
            );
        }
    }
    // A level that is not one is refused with its place.
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsafety:\n  rules: { ci_config: maybe }\n",
    );
    let b = repo.write_outside("b.yml", "tasks:\n  - { id: a, title: A, run: 'true' }\n");
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("abo.yml:3"), "{}", out.stderr);
}

/// The same through Python's unittest, which writes no report: abo counts its closing lines
/// (`Ran N tests`, `OK (skipped=K)`, `FAILED (failures=F)`) on the change and on its base.
#[test]
fn unittest_counts_from_its_summary_lines_catch_a_removed_or_skipped_test() {
    let calc = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return lo\n    return x\n";
    let tests = "import unittest\n\nimport calc\n\n\nclass T(unittest.TestCase):\n    def test_low(self):\n        self.assertEqual(calc.clamp(-1, 0, 3), 0)\n\n    def test_high(self):\n        self.assertEqual(calc.clamp(5, 0, 3), 3)\n";
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "delete",
            "python3 - <<'EOF'\nimport re\ns = open('test_calc.py').read()\nopen('test_calc.py', 'w').write(s[:s.index('    def test_high')])\nEOF",
            "denied",
            &[
                "1 tests ran, 2 on the base",
                "the change removes the test test_high",
            ],
        ),
        (
            "skip",
            "sed -i 's/    def test_high/    @unittest.skip(\"later\")\\n    def test_high/' test_calc.py",
            "denied",
            &[
                "1 tests ran, 2 on the base",
                "the change skips a test: test_calc.py: @unittest.skip(\"later\")",
            ],
        ),
        (
            "fix",
            "sed -i '5s/return lo/return hi/' calc.py",
            "landed",
            &[],
        ),
    ];
    for (id, script, want, reasons) in cases {
        let repo = TestRepo::new();
        repo.write("calc.py", calc);
        repo.write("test_calc.py", tests);
        repo.write(".gitignore", "__pycache__/\n");
        config(
            &repo,
            "version: 1\nattempts: { max: 1, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: test, run: python3 -m unittest -v }\n",
        );
        let b = repo.write_outside(
            "b.yml",
            &format!("tasks:\n  - {{ id: {id}, title: Fix clamp, run: {script:?} }}\n"),
        );
        let (_, doc, stderr) = run(&repo, &b, &[]);
        assert_eq!(brief(&doc), s(&[(id, want, 1)]), "{id}: {stderr}");
        let reason = task(&doc, id)["reason"].as_str().unwrap_or("").to_owned();
        for r in *reasons {
            assert!(reason.contains(r), "{id}: {r:?} not in {reason:?}");
        }
    }
}

/// The baseline is kept in the store: a second run on the same base, another process, reads it
/// instead of running the base's gates again, and its policy still compares with the base. A gate
/// configured differently is another baseline, measured anew.
#[test]
fn a_baseline_measured_once_is_reused_by_the_next_run_on_the_same_tree() {
    let repo = TestRepo::new();
    repo.write(
        "calc.py",
        "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
    );
    repo.write(
        "test_calc.py",
        "import unittest\n\nimport calc\n\n\nclass T(unittest.TestCase):\n    def test_low(self):\n        self.assertEqual(calc.clamp(-1, 0, 3), 0)\n\n    def test_high(self):\n        self.assertEqual(calc.clamp(5, 0, 3), 3)\n",
    );
    repo.write(".gitignore", "__pycache__/\n");
    repo.commit_all("calc");
    // Outside the repository (as is the config), so that every run starts from one tree; the gate
    // counts its runs on a base there.
    let marker = repo.write_outside("base-runs", "");
    let cfg = |unittest: &str| {
        let yaml = format!(
            "version: 1\nsandbox: {{ mode: off }}\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\ngates:\n  - name: test\n    run: case \"$(pwd -P)\" in */baseline-*) echo ran >> {} ;; esac; {unittest}\n",
            marker.display()
        );
        repo.write_outside("abo.yml", &yaml)
    };
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: delete, title: Drop a test, run: \"python3 - <<'EOF'\\ns = open('test_calc.py').read()\\nopen('test_calc.py', 'w').write(s[:s.index('    def test_high')])\\nEOF\" }\n",
    );
    let base_runs = || std::fs::read_to_string(&marker).unwrap().lines().count();
    let denied_against_the_base = |unittest: &str, runs: usize| {
        let c = cfg(unittest);
        let (_, doc, stderr) = run(&repo, &b, &["--config", c.to_str().unwrap()]);
        assert_eq!(brief(&doc), s(&[("delete", "denied", 1)]), "{stderr}");
        let reason = task(&doc, "delete")["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("1 tests ran, 2 on the base"),
            "the policy saw the base: {reason:?}"
        );
        assert_eq!(base_runs(), runs, "{unittest}: the base gate's runs");
    };
    denied_against_the_base("python3 -m unittest -v", 1);
    // Another run, another process: the base is read from the store.
    denied_against_the_base("python3 -m unittest -v", 1);
    // The control: another command is another key.
    denied_against_the_base("python3 -m unittest --verbose", 2);
    denied_against_the_base("python3 -m unittest --verbose", 2);
    // `abo gc` prunes baselines not read within its retention: the next run measures again.
    let out = abo(&repo, &["gc", "--older-than", "0s", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let gc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(gc["baselines_removed"], 2, "{gc}");
    denied_against_the_base("python3 -m unittest -v", 3);
}

/// A mutation gate as a Rust project writes it: cargo-mutants (installed by ops/test.sh) on the
/// change's lines only. cargo-mutants exits 2 when mutants were missed and 3 on timeouts, so the
/// gate lets the score decide.
const MUTANTS_GATE: &str = r#"version: 1
attempts: { max: 1, stop_after_consecutive_failures: 0 }
gates:
  - name: mutants
    run: cargo mutants --in-diff "$ABO_CHANGE_DIFF"; s=$?; [ $s -eq 0 ] || [ $s -eq 2 ] || [ $s -eq 3 ]
    reports: { metrics: mutants.out/outcomes.json }
    timeout: 5m
"#;

/// `max` changed from `>` to `>=`, with the test that was ignored turned on: weakly (it cannot
/// tell `max` from a constant) or well.
const MAX_WEAK: &str = "    fn max_picks_larger() {\n        assert!(max(1, 2) > 0);\n    }\n";
const MAX_STRONG: &str = "    fn max_picks_larger() {\n        assert_eq!(max(1, 2), 2);\n        assert_eq!(max(5, 3), 5);\n    }\n";

#[test]
fn a_mutation_gate_scores_the_changed_lines_of_a_real_rust_crate() {
    let lib = include_str!("../../../abo-policy/fixtures/rust/src/lib.rs");
    let old_test =
        "    #[ignore]\n    fn max_picks_larger() {\n        assert_eq!(max(1, 2), 2);\n    }\n";
    assert!(lib.contains(old_test));
    let mut outcomes = Vec::new();
    for (id, test) in [("weak", MAX_WEAK), ("strong", MAX_STRONG)] {
        let repo = TestRepo::new();
        repo.write(
            "Cargo.toml",
            include_str!("../../../abo-policy/fixtures/rust/Cargo.toml"),
        );
        repo.write("src/lib.rs", lib);
        repo.write(".gitignore", "target/\nmutants.out*/\n");
        config(&repo, MUTANTS_GATE);
        let changed = lib
            .replace("if a > b {", "if a >= b {")
            .replace(old_test, test);
        let new = repo.write_outside("lib.rs", &changed);
        let b = repo.write_outside(
            "b.yml",
            &format!(
                "tasks:\n  - {{ id: {id}, title: max keeps the first of equals, run: {:?} }}\n",
                format!("cp {} src/lib.rs", new.display())
            ),
        );
        let (_, doc, stderr) = run(&repo, &b, &[]);
        let rid = doc["run"]["id"].as_str().unwrap().to_owned();
        let log = events(&repo, &rid);
        let gate = log
            .iter()
            .find(|e| e["kind"] == "task.gate" && e["data"]["name"] == "mutants")
            .unwrap_or_else(|| panic!("{id}: no mutants gate in {log:?}\n{stderr}"));
        outcomes.push((
            id,
            task(&doc, id)["status"].as_str().unwrap().to_owned(),
            gate["data"]["figures"]["metrics"]["mutation_score"].clone(),
            task(&doc, id)["reason"].as_str().unwrap_or("").to_owned(),
        ));
    }
    assert_eq!(
        outcomes,
        [
            (
                "weak",
                "awaiting_approval".to_owned(),
                serde_json::json!(50.0),
                "waiting for approval (merge): the mutation score is 50%, under safety.quality.min_mutation_score (60%)".to_owned()
            ),
            ("strong", "landed".to_owned(), serde_json::json!(100.0), String::new()),
        ]
    );
}
