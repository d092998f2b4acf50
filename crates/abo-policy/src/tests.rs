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
    let risk = fallback.eval_rule("data.abo.risk".into()).unwrap();
    assert_eq!(
        risk.as_string().unwrap().as_ref(),
        d.risk,
        "the classes and the functions disagree on {i}"
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

/// abo's own files: each protected path denied, or held for approval when `safety.protected`
/// says so; the same names elsewhere (the control) pass.
#[test]
fn abo_own_files_are_protected() {
    let protected = |mode: &str| {
        let mut c = config();
        c["protected"] = json!(mode);
        c["protected_paths"] = json!([".abo/policy/", "ops/abo.yml", "plans/", "backlog.yml"]);
        Policy::load(&c, &[]).unwrap()
    };
    let reason =
        |p: &str| format!("{p} is abo's own configuration, policy or backlog (safety.protected)");
    let cases: &[(&str, bool)] = &[
        ("abo.yml", true),
        ("ops/abo.yml", true),
        (".abo/policy/allow_all.rego", true),
        (".abo/keys/proof.key", true),
        ("plans/next.md", true),
        ("backlog.yml", true),
        // The control: near names are ordinary files.
        ("src/abo.yml", false),
        ("abo.yml.bak", false),
        ("plans.md", false),
        ("docs/backlog.yml", false),
        (".abolish", false),
    ];
    for (path, is_protected) in cases {
        let i = input(&[path], &[], "x", 1);
        let d = protected("deny").evaluate(&i).unwrap();
        let want: Vec<String> = if *is_protected {
            vec![reason(path)]
        } else {
            vec![]
        };
        assert_eq!(d.deny, want, "{path}");
        let d = protected("needs_approval").evaluate(&i).unwrap();
        assert_eq!(
            (d.deny.clone(), d.require_approval),
            (vec![], want),
            "{path}"
        );
    }
    // Without `protected` (a run recorded before it existed) the default is to deny.
    let d = Policy::load(&config(), &[])
        .unwrap()
        .evaluate(&input(&["abo.yml"], &[], "x", 1))
        .unwrap();
    assert_eq!(d.deny, [reason("abo.yml")]);
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
            ("test_abo_config_is_protected".into(), true),
            ("test_protected_may_need_approval_instead".into(), true),
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

/// One case of `tests/data/secrets.tsv`: expected `RULE@LINE` or `-`, attack tag, input lines.
type Case = (String, String, Vec<(usize, String)>);

fn secret_cases() -> Vec<Case> {
    include_str!("../tests/data/secrets.tsv")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut cols = l.splitn(3, '\t');
            let (want, tag, input) = (
                cols.next().unwrap().to_owned(),
                cols.next().unwrap().to_owned(),
                cols.next().unwrap(),
            );
            let input = input
                .replace("\\\\", "\u{0}")
                .replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace('\u{0}', "\\");
            let lines = input
                .split('\n')
                .enumerate()
                .map(|(i, l)| (i + 1, l.to_owned()))
                .collect();
            (want, tag, lines)
        })
        .collect()
}

#[test]
fn secrets_are_found_by_rule_and_redacted_by_the_same_rules() {
    let s = Scanner::default();
    let cases = secret_cases();
    let mut rules_seen = std::collections::BTreeSet::new();
    for (want, _, lines) in &cases {
        let found: Vec<String> = s
            .scan("f", lines)
            .iter()
            .map(|f| format!("{}@{}", f.rule, f.line))
            .collect();
        let want_found: Vec<String> = (want != "-").then(|| want.clone()).into_iter().collect();
        assert_eq!(found, want_found, "{lines:?}");
        // Redaction hides what the scan finds, and only that.
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        let text = text.join("\n");
        let redacted = s.redact(&text);
        if let Some((rule, _)) = want.split_once('@') {
            rules_seen.insert(rule.split(' ').next().unwrap().to_owned());
            assert!(
                redacted.contains(&format!("[REDACTED:{rule}]")),
                "{text:?} -> {redacted:?}"
            );
            let again: Vec<(usize, String)> = redacted
                .split('\n')
                .enumerate()
                .map(|(i, l)| (i + 1, l.to_owned()))
                .collect();
            assert_eq!(s.scan("f", &again), vec![], "{redacted:?}");
        } else {
            assert_eq!(redacted, text.as_str());
        }
    }
    // Every rule has a case.
    let names: std::collections::BTreeSet<String> =
        s.rule_names().iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(rules_seen, names);
    assert_eq!(s.rule_names().len(), 14, "every rule compiles");
}

/// Control: the attacks of the table got past the previous detector (its `\b`-anchored rules, each
/// line alone, nothing decoded), so the cases above test the protections and not just the rules.
#[test]
fn the_attack_cases_got_past_the_previous_detector() {
    const PREVIOUS: &[&str] = &[
        r"-----BEGIN[A-Z ]*PRIVATE KEY-----",
        r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16})\b",
        r#"(?i)aws_?secret_?access_?key\s*[:=]\s*["']?([A-Za-z0-9/+]{40})\b"#,
        r"\b(gh[pousr]_[A-Za-z0-9]{36,})\b",
        r"\b(github_pat_[A-Za-z0-9_]{40,})\b",
        r"\b(glpat-[A-Za-z0-9_\-]{20,})\b",
        r"\b(xox[abprs]-[A-Za-z0-9\-]{10,})",
        r"\b((?:sk|rk)_live_[A-Za-z0-9]{20,})\b",
        r"\b(AIza[0-9A-Za-z_\-]{35})\b",
        r"\b(sk-ant-[A-Za-z0-9_\-]{20,})",
        r"\b(sk-(?:proj-)?[A-Za-z0-9_\-]{32,})",
        r"\b(eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})",
    ];
    let previous: Vec<regex::Regex> = PREVIOUS
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    let attacks: Vec<_> = secret_cases()
        .into_iter()
        .filter(|(_, tag, _)| tag != "-")
        .collect();
    assert!(attacks.len() >= 12);
    for (want, tag, lines) in attacks {
        assert!(["anchor", "split", "base64", "hex"].contains(&tag.as_str()));
        assert_ne!(want, "-");
        for (_, l) in &lines {
            assert!(
                previous.iter().all(|re| !re.is_match(l)),
                "{tag}: {l:?} was found before"
            );
        }
    }
}

#[test]
fn findings_keep_their_value_to_themselves() {
    let s = Scanner::default();
    let lines = vec![
        (10, "let key = \"AKIAQWER\" +".to_owned()),
        (11, "    \"TYUIOPASDFGH\";".to_owned()),
        // Not adjacent to line 11: never joined with it.
        (20, "\"AKIAABCD\" +".to_owned()),
        (30, "\"EFGHIJKLMNOPQRST\"".to_owned()),
    ];
    let found = s.scan("src/a.rs", &lines);
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f.value, "AKIAQWERTYUIOPASDFGH", "a split key, joined");
    assert_eq!(
        format!("{f:?}"),
        "Finding(src/a.rs:10 aws-access-key)",
        "Debug never shows the value"
    );
    assert_eq!(
        f.to_json(),
        json!({"path": "src/a.rs", "line": 10, "rule": "aws-access-key"})
    );
    // Each piece of a split key is redacted where it is written.
    assert_eq!(
        s.redact("let key = \"AKIAQWER\" +\n    \"TYUIOPASDFGH\";"),
        "let key = \"[REDACTED:aws-access-key]\" +\n    \"[REDACTED:aws-access-key]\";"
    );
    // A key block is hidden whole: with its end, cut short, with its header split, or escaped.
    for (text, want) in [
        (
            "k:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx7Gq2pLw9Zt4Rv8Nk1\n-----END RSA PRIVATE KEY-----\nafter",
            "k:\n[REDACTED:private-key]\nafter",
        ),
        (
            "-----BEGIN EC PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx7Gq2pLw9Zt4Rv8Nk1\n  Zt4Rv8Nk1MIIEpAIBAAKCAQEAx7Gq2pLw9\nshort\n",
            "[REDACTED:private-key]\nshort\n",
        ),
        (
            "-----BEGIN RSA PRIV\nATE KEY-----\nMIIEpAIBAAKCAQEAx7Gq2pLw9Zt4Rv8Nk1\n# short",
            "[REDACTED:private-key]\n[REDACTED:private-key]\n[REDACTED:private-key]\n# short",
        ),
        (
            "KEY=\"-----BEGIN PRIVATE KEY-----\\nMIIEpAIBAAKCAQEAx7Gq2pLw9Zt4Rv8Nk1\\nZt4Rv8Nk1MIIEpAIBAAKCAQEAx7Gq2pLw9\"",
            "KEY=\"[REDACTED:private-key]\"",
        ),
    ] {
        assert_eq!(s.redact(text), want, "{text}");
    }
}

/// Not a timing assertion: the scan of a 5,000-line change is correct (one finding, on its line);
/// `cargo test --release -p abo-policy scan_of_a_large_change -- --nocapture` prints its time.
#[test]
fn scan_of_a_large_change() {
    let s = Scanner::default();
    let mut lines: Vec<(usize, String)> = (1..=5_000)
        .map(|i| {
            (
                i,
                format!("    let value_{i} = compute(\"name-{i}\", {i}) + other_{i}; // a comment"),
            )
        })
        .collect();
    lines[4_321].1 = "    let key = \"AKIAQWERTYUIOPASDFGH\";".to_owned();
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    // The best of a few runs: the machine is shared.
    let best = |f: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let started = std::time::Instant::now();
                f();
                started.elapsed()
            })
            .min()
    };
    let scan = best(&|| drop(s.scan("src/big.rs", &lines))).unwrap_or_default();
    let redact = best(&|| drop(s.redact(&text))).unwrap_or_default();
    let found = s.scan("src/big.rs", &lines);
    let redacted = s.redact(&text);
    #[allow(clippy::print_stderr, reason = "the measurement for the report")]
    {
        eprintln!(
            "5,000 lines ({} bytes): scan {scan:?}, redact {redact:?}",
            text.len()
        );
    }
    assert_eq!(
        found.iter().map(|f| (f.line, f.rule)).collect::<Vec<_>>(),
        vec![(4_322, "aws-access-key")]
    );
    assert_eq!(redacted.matches("[REDACTED:aws-access-key]").count(), 1);
}

#[test]
fn a_known_value_is_a_secret_whatever_its_shape_or_encoding() {
    use crate::secrets::{KNOWN_SECRET, Scanner};
    let key = "plain-key-value-no-pattern-48151623";
    // base64 and hex of the key, inside longer text.
    let b64 = "cGxhaW4ta2V5LXZhbHVlLW5vLXBhdHRlcm4tNDgxNTE2MjM=";
    let hex = "706c61696e2d6b65792d76616c75652d6e6f2d7061747465726e2d3438313531363233";
    let lines: Vec<(usize, String)> = [
        format!("let k = \"{key}\";"),
        format!("blob: {b64}"),
        format!("x = 0x{hex}"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, l)| (i + 1, l))
    .collect();
    // Control: no rule knows its shape.
    assert!(Scanner::default().scan("f", &lines).is_empty());
    let found: Vec<(usize, &str)> = Scanner::default()
        .with_known([key.to_owned()])
        .scan("f", &lines)
        .iter()
        .map(|f| (f.line, f.rule))
        .collect();
    assert_eq!(
        found,
        [(1, KNOWN_SECRET), (2, KNOWN_SECRET), (3, KNOWN_SECRET)]
    );
    let redacted = Scanner::default()
        .with_known([key.to_owned()])
        .redact(&lines[1].1)
        .into_owned();
    assert!(!redacted.contains(b64), "{redacted}");
}

/// The bundle before the coverage fixes: the control of `coverage_gaps_are_closed`.
const BUNDLE_BEFORE: &str = include_str!("../tests/data/default-before.rego");

/// (deny, require_approval, risk) of `src` on `input`, with `config()` as the configuration.
fn eval_bundle(src: &str, input: &Value) -> (Vec<String>, Vec<String>, String) {
    let mut e = regorus::Engine::new();
    e.add_policy("abo/default.rego".to_owned(), src.to_owned())
        .unwrap();
    let data = json!({"abo": {"config": config()}}).to_string();
    e.add_data(regorus::Value::from_json_str(&data).unwrap())
        .unwrap();
    e.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    let mut get = |r: &str| -> Value {
        serde_json::from_str(&e.eval_rule(r.into()).unwrap().to_json_str().unwrap()).unwrap()
    };
    let strings = |v: Value| -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        out.sort();
        out
    };
    let deny = strings(get("data.abo.deny"));
    let approval = strings(get("data.abo.require_approval"));
    let risk = get("data.abo.risk").as_str().unwrap().to_owned();
    (deny, approval, risk)
}

/// (deny, require_approval, risk)
type Outcome = (Vec<String>, Vec<String>, &'static str);

/// What the red team landed: CI files outside the old list, dependency manifests read as docs, a
/// 3 MB one-line file, files tools run as code rated low. Each is caught now, and the bundle
/// before let it through (allowed, and low risk for the ones it read as docs or tests).
#[test]
fn coverage_gaps_are_closed() {
    let ci = |p: &str| (vec![format!("{p} is CI configuration")], vec![], "medium");
    let deps = |p: &str, risk| (vec![], vec![format!("{p} changes dependencies")], risk);
    // (path, bytes added, (deny, require_approval, risk) now, risk with the bundle before)
    let cases: Vec<(&str, u64, Outcome, &str)> = vec![
        (
            ".github/actions/setup/action.yml",
            1,
            ci(".github/actions/setup/action.yml"),
            "medium",
        ),
        (
            ".github/actions/setup/run.sh",
            1,
            ci(".github/actions/setup/run.sh"),
            "medium",
        ),
        ("action.yml", 1, ci("action.yml"), "medium"),
        (
            "azure-pipelines.yml",
            1,
            ci("azure-pipelines.yml"),
            "medium",
        ),
        (".travis.yml", 1, ci(".travis.yml"), "medium"),
        (
            "bitbucket-pipelines.yml",
            1,
            ci("bitbucket-pipelines.yml"),
            "medium",
        ),
        (".drone.yml", 1, ci(".drone.yml"), "medium"),
        ("appveyor.yml", 1, ci("appveyor.yml"), "medium"),
        (
            "requirements-dev.txt",
            1,
            deps("requirements-dev.txt", "medium"),
            "low",
        ),
        (
            "constraints.txt",
            1,
            deps("constraints.txt", "medium"),
            "low",
        ),
        (
            "requirements/dev.txt",
            1,
            deps("requirements/dev.txt", "medium"),
            "low",
        ),
        (
            "requirements.in",
            1,
            deps("requirements.in", "medium"),
            "medium",
        ),
        ("flake.lock", 1, deps("flake.lock", "medium"), "medium"),
        ("tests/conftest.py", 1, (vec![], vec![], "medium"), "low"),
        ("docs/conf.py", 1, (vec![], vec![], "medium"), "low"),
        (
            "data.txt",
            3_000_000,
            (
                vec![
                    "the change adds 3000000 bytes, more than safety.max_diff_bytes (1048576)"
                        .to_owned(),
                ],
                vec![],
                "low",
            ),
            "low",
        ),
    ];
    for (path, bytes, want, old_risk) in cases {
        let mut i = input(&[path], &[], "", 1);
        i["change"]["bytes_added"] = json!(bytes);
        let (deny, approval, risk) = eval_bundle(DEFAULT_BUNDLE[0].1, &i);
        assert_eq!(
            (deny, approval, risk.as_str()),
            (want.0, want.1, want.2),
            "{path}"
        );
        // The control: the bundle before allowed it.
        let (deny, approval, risk) = eval_bundle(BUNDLE_BEFORE, &i);
        assert_eq!(
            (deny.len(), approval.len(), risk.as_str()),
            (0, 0, old_risk),
            "{path}: the bundle before"
        );
    }
    // The controls of the new rules: what they must not catch.
    for (path, bytes, risk) in [
        ("docs/guide.md", 1_048_576, "low"),
        ("tests/test_a.py", 10, "low"),
        ("docs/confidential-plan.md", 10, "low"),
        (".github/ISSUE_TEMPLATE/bug.md", 10, "low"),
        ("src/actions/action.rs", 10, "medium"),
    ] {
        let mut i = input(&[path], &[], "", 1);
        i["change"]["bytes_added"] = json!(bytes);
        assert_eq!(
            eval_bundle(DEFAULT_BUNDLE[0].1, &i),
            (vec![], vec![], risk.to_owned()),
            "{path}"
        );
    }
    // `safety.max_diff_bytes` sets the bound; 0 turns it off.
    for (max, want) in [(10, 1), (0, 0)] {
        let mut p = Policy::load(&json!({"max_diff_bytes": max}), &[]).unwrap();
        let mut i = input(&["src/a.rs"], &[], "", 1);
        i["change"]["bytes_added"] = json!(11);
        assert_eq!(p.evaluate(&i).unwrap().deny.len(), want, "{max}");
    }
}

/// The strings `data.abo.{rule}` holds on `i`, sorted (none when it is undefined).
fn rule_strings(p: &mut Policy, i: &Value, rule: &str) -> Vec<String> {
    let mut v: Vec<String> = p
        .query(i, &format!("data.abo.{rule}"))
        .unwrap()
        .unwrap_or_default()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// The per-file rules test a cheap built-in first (a prefix, a suffix, a set lookup) and call the
/// bundle's functions only on what it leaves: on paths chosen to sit at each test's edges, the
/// paths each rule reports are exactly those the functions, called on every path, select (and, for
/// `sensitive`, those the word-by-word definition it replaced selects).
#[test]
fn the_fast_per_file_rules_select_what_the_functions_select() {
    let paths = [
        ".github/workflows/ci.yml",
        ".github/actions/a/action.yml",
        ".github/CODEOWNERS",
        ".circleci/config.yml",
        ".buildkite/pipeline.yml",
        "Jenkinsfile",
        "sub/Jenkinsfile",
        "action.yml",
        "sub/action.yml",
        ".gitlab-ci.yml",
        ".travis.yml",
        "src/main.rs",
        "requirements.txt",
        "REQUIREMENTS-dev.TXT",
        "constraints.in",
        "requirements/dev.txt",
        "x/requirements/y.TXT",
        "Requirements/y.txt",
        "notes.txt",
        "x.in",
        ".txt",
        "flake.lock",
        "a.LOCK",
        "lock",
        "Cargo.toml",
        "sub/package.json",
        "abo.yml",
        "docs/abo.yml",
        ".abo/policy/p.rego",
        "x/.abo/y",
        "vendor/lib/x.rs",
        ".env",
        "config/.env.prod",
        "my.env",
        "src/auth_token.rs",
        "src/AUTH_x/y.rs",
        "src/session.rs",
        "src/sessions_x.rs",
        "src/authx_y.rs",
        "src/_auth.rs",
        "src/secret__x.rs",
        "src/crypto_/k.rs",
    ];
    let check = ".abo/policy/check.rego".to_owned();
    let rules = "package abo\n\n\
        slow_ci := {p | some p in file_paths; ci_path(p)}\n\n\
        slow_dependencies := {p | some p in file_paths; manifest(p)}\n\n\
        slow_protected := {p | some p in file_paths; protected(p)}\n\n\
        sensitive_before(p) if {\n\tsome seg in lower_segments(p)\n\tsome w in sensitive_words\n\tstartswith(seg, concat(\"\", [w, \"_\"]))\n}\n\n\
        sensitive_now := {p | some p in file_paths; sensitive(p)}\n\n\
        sensitive_then := {p | some p in file_paths; sensitive_before(p)}\n\n\
        sensitive_then_words := {p | some p in file_paths; some seg in lower_segments(p); sensitive_words[split(seg, \".\")[0]]}\n"
        .to_owned();
    let config = serde_json::json!({ "protected_paths": ["vendor/", "docs/abo.yml"] });
    let mut p = Policy::load(&config, &[(check, rules)]).unwrap();
    let i = input(&paths, &[], "", 1);
    let mut q = |rule: &str| rule_strings(&mut p, &i, rule);
    let (ci, deps, prot) = (
        q("ci_changed"),
        q("dependencies_changed"),
        q("protected_changed"),
    );
    assert_eq!(ci, q("slow_ci"));
    assert_eq!(deps, q("slow_dependencies"));
    assert_eq!(prot, q("slow_protected"));
    let mut before = q("sensitive_then");
    before.extend(q("sensitive_then_words"));
    before.sort();
    before.dedup();
    assert_eq!(q("sensitive_now"), before);
    // The controls: each set is the one its rule is about.
    assert_eq!(ci.len(), 8, "{ci:?}");
    assert!(deps.contains(&"a.LOCK".to_owned()) && !deps.contains(&"notes.txt".to_owned()));
    assert_eq!(prot.len(), 4, "{prot:?}");
    assert!(
        before.contains(&"src/AUTH_x/y.rs".to_owned())
            && !before.contains(&"src/authx_y.rs".to_owned())
    );
}

/// Each file's classes as abo computes them (`classes::of`) are what the bundle's functions say of
/// its path, on paths at the edges of each definition; the rules read the facts (the control: a
/// fact given by hand changes the risk the functions would give).
#[test]
fn the_classes_computed_here_are_the_bundles_functions() {
    let paths = [
        "src/main.rs",
        "src/auth.rs",
        "src/AUTH/x.rs",
        "src/auth_token.rs",
        "src/authx_y.rs",
        "src/_auth.rs",
        "src/my_auth.rs",
        "src/session.rs.bak",
        "src/sessions.rs",
        "Crypto_/k.rs",
        "SECRET",
        "lib/Permissions.py",
        "login",
        "docs/guide.md",
        "doc/x.rs",
        "Docs/x.rs",
        "a/docs",
        "README",
        "README.rst",
        "readme.rs",
        "src/LICENSE-MIT",
        "CHANGELOG.md",
        "notes.TXT",
        "x.adoc",
        "x.md.rs",
        ".md",
        "md",
        "tests/a.rs",
        "a/tests/b/c.py",
        "tests",
        "spec/x_spec.rb",
        "src/__tests__/a.js",
        "test_a.py",
        "src/test_a.py",
        "a_test.go",
        "a.test.ts",
        "a.spec.ts",
        "a_test",
        "testing/a.rs",
        "tests/conftest.py",
        "docs/conf.py",
        "docs/Cargo.toml",
        "tests/requirements.txt",
        "docs/requirements/dev.txt",
        "Requirements-Dev.In",
        "constraints.txt",
        "constraintsfile.in",
        "requirements/x.TXT",
        "x/requirements/y.md",
        "docs/flake.lock",
        "a.LOCK",
        ".lock",
        "lock",
        "sub/package.json",
        "Package.json",
        "pnpm-lock.yaml",
        "build.gradle.kts",
        "Cargo.toml.orig",
        "ÄUTH/ü.md",
        "src/ÅUTH_x.rs",
        "tests/Straße.rs",
        "",
        "/",
        "a//b",
        "docs/",
    ];
    let check = ".abo/policy/check.rego".to_owned();
    let rules = "package abo\n\n\
        slow_sensitive := {f.path | some f in files; sensitive(f.path)}\n\n\
        fact_sensitive := {f.path | some f in files; f.sensitive == true}\n\n\
        slow_low := {f.path | some f in files; low_file(f)}\n\n\
        fact_low := {f.path | some f in files; f.low == true}\n\n\
        slow_manifest := {f.path | some f in files; manifest(f.path)}\n\n\
        fact_manifest := {f.path | some f in files; f.manifest == true}\n"
        .to_owned();
    let mut p = Policy::load(&json!({}), &[(check, rules)]).unwrap();
    let i = input(&paths, &[], "", 1);
    let mut q = |rule: &str| rule_strings(&mut p, &i, rule);
    for class in ["sensitive", "low", "manifest"] {
        let facts = q(&format!("fact_{class}"));
        assert_eq!(facts, q(&format!("slow_{class}")), "{class}");
        // Not a comparison of empty sets, nor of everything.
        assert!(
            facts.len() > 3 && facts.len() < paths.len() - 3,
            "{class}: {facts:?}"
        );
    }
    // Each path alone: the decision (and its risk) with the facts is the functions' one.
    for path in paths {
        eval(input(&[path], &[], "", 1));
    }
    // The rules read the facts: a fact given by hand stays and decides.
    let mut p = Policy::load(&json!({}), &[]).unwrap();
    let mut i = input(&["src/main.rs"], &[], "", 1);
    assert_eq!(p.evaluate(&i).unwrap().risk, "medium");
    i["change"]["files"][0]["sensitive"] = json!(true);
    assert_eq!(p.evaluate(&i).unwrap().risk, "critical");
}
