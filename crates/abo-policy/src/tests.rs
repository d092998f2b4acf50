use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::secrets::Scanner;

fn config() -> Value {
    json!({
        "allowed_paths": ["**"],
        "forbidden_paths": [".env*", "**/*.pem", ".github/workflows/**"],
        "forbidden_patterns": ["DROP TABLE", "exec("],
        "max_diff_lines": 400,
    })
}

fn file(path: &str) -> Value {
    json!({"path": path, "status": "modified", "lines_added": 1, "lines_removed": 0, "binary": false})
}

fn input(paths: &[&str], task_paths: &[&str], added: &str, lines: u64) -> Value {
    json!({
        "action": "merge",
        "task": {"id": "t", "type": "code", "title": "T", "labels": [], "paths": task_paths},
        "change": {"files": paths.iter().map(|p| file(p)).collect::<Vec<_>>(), "lines_added": lines, "lines_removed": 0, "added_text": added},
        "autonomy": {"profile": "prod-conservative", "level": "A3"},
        "gates": [{"name": "test", "passed": true}],
        "secrets": [],
    })
}

fn eval(i: Value) -> (Verdict, Vec<String>, String) {
    let mut p = Policy::load(&config(), &[]).unwrap();
    let d = p.evaluate(&i).unwrap();
    // The glob facts abo computes and the bundle's own glob.match fallback agree.
    let mut fallback = regorus::Engine::new();
    for (f, src) in DEFAULT_BUNDLE {
        fallback
            .add_policy((*f).to_owned(), (*src).to_owned())
            .unwrap();
    }
    let data = json!({"abo": {"config": config()}}).to_string();
    fallback
        .add_data(regorus::Value::from_json_str(&data).unwrap())
        .unwrap();
    fallback.set_input(regorus::Value::from_json_str(&i.to_string()).unwrap());
    let rule = |e: &mut regorus::Engine, r: &str| -> Vec<String> {
        let v: Value =
            serde_json::from_str(&e.eval_rule(r.into()).unwrap().to_json_str().unwrap()).unwrap();
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        rule(&mut fallback, "data.abo.deny"),
        d.deny,
        "facts and glob.match disagree on {i}"
    );
    assert_eq!(
        rule(&mut fallback, "data.abo.require_approval"),
        d.require_approval,
        "facts and glob.match disagree on {i}"
    );
    (d.verdict, d.reasons(), d.risk)
}

/// Each default rule: a change that triggers it, and one that does not.
#[test]
fn each_default_rule() {
    let check = |i: Value, want: (Verdict, &[&str], &str)| {
        let (v, reasons, risk) = eval(i.clone());
        let want_reasons: Vec<String> = want.1.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            (v, reasons, risk.as_str()),
            (want.0, want_reasons, want.2),
            "{i}"
        );
    };
    use Verdict::*;
    check(
        input(&["src/lib.rs"], &["src/**"], "fn a() {}", 10),
        (Allow, &[], "medium"),
    );
    check(
        input(&["config/server.pem"], &[], "", 1),
        (
            Deny,
            &["config/server.pem matches safety.forbidden_paths **/*.pem"],
            "medium",
        ),
    );
    check(
        input(&[".env.local"], &[], "", 1),
        (
            Deny,
            &[
                ".env.local is an environment file",
                ".env.local matches safety.forbidden_paths .env*",
            ],
            "medium",
        ),
    );
    check(
        input(&[".github/workflows/ci.yml"], &[], "", 1),
        (
            Deny,
            &[
                ".github/workflows/ci.yml is CI configuration",
                ".github/workflows/ci.yml matches safety.forbidden_paths .github/workflows/**",
            ],
            "medium",
        ),
    );
    check(
        input(&[".gitlab-ci.yml"], &[], "", 1),
        (Deny, &[".gitlab-ci.yml is CI configuration"], "medium"),
    );
    check(
        input(&["src/db.rs"], &[], "conn.run(\"DROP TABLE users\")", 1),
        (
            Deny,
            &["the change adds forbidden text \"DROP TABLE\" (safety.forbidden_patterns)"],
            "medium",
        ),
    );
    check(
        input(&["src/big.rs"], &[], "", 401),
        (
            Deny,
            &["the change has 401 changed lines, more than safety.max_diff_lines (400)"],
            "high",
        ),
    );
    check(input(&["src/big.rs"], &[], "", 400), (Allow, &[], "high"));
    check(
        input(&["README.md"], &["src/**"], "", 1),
        (
            NeedsApproval,
            &["README.md is outside the task's paths"],
            "low",
        ),
    );
    check(
        input(&["Cargo.lock", "src/a.rs"], &[], "", 2),
        (
            NeedsApproval,
            &["Cargo.lock changes dependencies"],
            "medium",
        ),
    );
    check(
        input(&["docs/guide.md", "tests/test_a.py"], &[], "", 5),
        (Allow, &[], "low"),
    );
    check(
        input(&["src/auth/login.rs"], &[], "", 5),
        (Allow, &[], "critical"),
    );
    // A file's stem names it sensitive, a word inside another does not.
    check(
        input(&["src/Session.rs"], &[], "", 5),
        (Allow, &[], "critical"),
    );
    check(
        input(&["src/possession.rs"], &[], "", 5),
        (Allow, &[], "medium"),
    );
    let mut binary = input(&["logo.png"], &[], "", 0);
    binary["change"]["files"][0]["binary"] = json!(true);
    check(
        binary,
        (NeedsApproval, &["logo.png is a binary file"], "medium"),
    );
    // A symbolic link out of the repository needs approval; one inside does not.
    let mut links = input(&["notes.md", "docs/same"], &[], "", 2);
    links["change"]["files"][0]["symlink_target"] = json!("/home/u/.ssh/id_rsa");
    links["change"]["files"][0]["escapes"] = json!(true);
    links["change"]["files"][1]["symlink_target"] = json!("x.md");
    links["change"]["files"][1]["escapes"] = json!(false);
    check(
        links,
        (
            NeedsApproval,
            &["notes.md is a symbolic link out of the repository (to /home/u/.ssh/id_rsa)"],
            "low",
        ),
    );
    let mut secret = input(&["src/a.rs"], &[], "", 1);
    secret["secrets"] = json!([{"path": "src/a.rs", "line": 3, "rule": "aws-access-key"}]);
    check(
        secret,
        (
            Deny,
            &["src/a.rs:3 adds a secret (aws-access-key)"],
            "medium",
        ),
    );
    let mut outside = Policy::load(&json!({"allowed_paths": ["src/**"]}), &[]).unwrap();
    assert_eq!(
        outside
            .evaluate(&input(&["docs/x.md"], &[], "", 1))
            .unwrap()
            .deny,
        ["docs/x.md is outside safety.allowed_paths"]
    );
}

#[test]
fn user_policies_add_rules_and_syntax_errors_are_located() {
    let user = vec![(
        ".abo/policy/team.rego".to_owned(),
        "package abo\n\ndeny contains \"no TODOs\" if contains(input.change.added_text, \"TODO\")\n\nrequire_approval contains \"migrations need a DBA\" if {\n\tsome f in input.change.files\n\tstartswith(f.path, \"migrations/\")\n}\n\ntest_todo_denied if {\n\tcount(deny) > 0 with input as {\"change\": {\"added_text\": \"TODO: x\", \"files\": []}}\n}\n\ntest_wrong if {\n\tcount(deny) > 5 with input as {\"change\": {\"added_text\": \"\", \"files\": []}}\n}\n".to_owned(),
    )];
    let mut p = Policy::load(&config(), &user).unwrap();
    let d = p
        .evaluate(&input(&["migrations/001.sql"], &[], "// TODO later", 1))
        .unwrap();
    assert_eq!(
        (d.verdict, d.deny.clone(), d.require_approval.clone()),
        (
            Verdict::Deny,
            vec!["no TODOs".to_owned()],
            vec!["migrations need a DBA".to_owned()]
        )
    );
    let results: Vec<(String, bool)> = p
        .run_tests()
        .into_iter()
        .map(|r| (r.name, r.passed))
        .collect();
    assert_eq!(
        results,
        vec![
            ("test_forbidden_path_denied".into(), true),
            ("test_docs_are_low_risk".into(), true),
            ("test_auth_code_is_critical".into(), true),
            ("test_out_of_scope_needs_approval".into(), true),
            ("test_todo_denied".into(), true),
            ("test_wrong".into(), false),
        ]
    );
    let bad = vec![(
        "team.rego".to_owned(),
        "package abo\n\ndeny contains msg if {\n  msg := \n}\n".to_owned(),
    )];
    match Policy::load(&config(), &bad) {
        Err(PolicyError::Syntax {
            file,
            line,
            col,
            message,
        }) => {
            assert_eq!(
                (file.as_str(), line, col, message.as_str()),
                ("team.rego", 4, 7, "expecting `}` while parsing set")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn secrets_are_found_by_rule_and_entropy() {
    let s = Scanner::default();
    let lines: Vec<(usize, String)> = [
        "let key = \"AKIAABCDEFGHIJKLMNOP\";",
        "token = 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "db_password = \"x7Gq2pLw9Zt4Rv8Nk1\"",
        "password = \"password-password\"",
        "let name = \"just a normal string value\";",
    ]
    .iter()
    .enumerate()
    .map(|(i, l)| (i + 10, (*l).to_owned()))
    .collect();
    let found: Vec<(usize, &str)> = s
        .scan("src/a.rs", &lines)
        .iter()
        .map(|f| (f.line, f.rule))
        .collect();
    assert_eq!(
        found,
        vec![
            (10, "aws-access-key"),
            (11, "github-token"),
            (12, "private-key"),
            (13, "generic-secret")
        ]
    );
    let f = &s.scan("src/a.rs", &lines)[0];
    assert_eq!(f.value, "AKIAABCDEFGHIJKLMNOP");
    assert_eq!(
        format!("{f:?}"),
        "Finding(src/a.rs:10 aws-access-key)",
        "Debug never shows the value"
    );
    assert_eq!(
        f.to_json(),
        json!({"path": "src/a.rs", "line": 10, "rule": "aws-access-key"})
    );
}
