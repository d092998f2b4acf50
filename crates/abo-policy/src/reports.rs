//! What gates measured, read from the reports tools already write: JUnit XML (pytest, cargo-nextest,
//! go-junit-report, jest-junit, node's test runner, Maven Surefire), coverage as LCOV or Cobertura
//! XML, SARIF 2.1 findings, a JSON object of figures (or cargo-mutants' `outcomes.json`), and, where
//! no report is declared, the counts of common runners' summary lines.
//!
//! Reports are written by a gate in a worktree an agent wrote too: every parser here takes the text
//! as hostile. XML is read without a DTD (no entity expansion) and with a bound on its nodes; every
//! list is bounded; a report that does not parse is an error, never a pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use abo_core::config::Severity;

/// The most entries read from one report (test cases, files, findings).
pub const MAX_ENTRIES: usize = 50_000;

/// The most XML nodes read from one report.
const MAX_NODES: u32 = 2_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a {format} report: {why}")]
    Format { format: &'static str, why: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// One test of a JUnit report, named `classname::name` (or `name` without a class).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TestCase {
    pub name: String,
    pub outcome: Outcome,
}

/// Tests counted: `run` is what ran (passed + failed), skipped ones apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub run: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn of(cases: &[TestCase]) -> Self {
        let mut c = Self::default();
        for t in cases {
            match t.outcome {
                Outcome::Passed => c.passed += 1,
                Outcome::Failed => c.failed += 1,
                Outcome::Skipped => c.skipped += 1,
            }
        }
        c.run = c.passed + c.failed;
        c
    }

    pub fn add(&mut self, o: Counts) {
        self.run += o.run;
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

/// An XML report. A document type declaration is read only without an internal subset (istanbul's
/// Cobertura names its DTD by `SYSTEM` URL, which is never fetched); one with `[...]` could declare
/// entities, and is refused.
fn xml(text: &str) -> Result<roxmltree::Document<'_>, ReportError> {
    let external_only = text.find("<!DOCTYPE").is_some_and(|at| {
        let decl = &text[at..];
        let end = decl.find('>').unwrap_or(decl.len());
        !decl[..end].contains('[')
    });
    let opts = roxmltree::ParsingOptions {
        allow_dtd: external_only,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, opts).map_err(|e| ReportError::Xml(e.to_string()))
}

/// The test cases of a JUnit XML report: `<testsuites>` or a lone `<testsuite>`, suites nested or
/// not. A case with `<failure>` or `<error>` failed, one with `<skipped>` was skipped.
pub fn junit(text: &str) -> Result<Vec<TestCase>, ReportError> {
    let doc = xml(text)?;
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        return Err(ReportError::Format {
            format: "JUnit",
            why: format!("the root element is <{}>", root.tag_name().name()),
        });
    }
    let mut cases = Vec::new();
    for c in root
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .take(MAX_ENTRIES)
    {
        let name = c.attribute("name").unwrap_or("");
        // jest-junit's default writes the same text in both.
        let name = match c
            .attribute("classname")
            .filter(|s| !s.is_empty() && *s != name)
        {
            Some(class) => format!("{class}::{name}"),
            None => name.to_owned(),
        };
        let child = |t: &str| c.children().any(|n| n.has_tag_name(t));
        let outcome = if child("failure") || child("error") {
            Outcome::Failed
        } else if child("skipped") {
            Outcome::Skipped
        } else {
            Outcome::Passed
        };
        cases.push(TestCase { name, outcome });
    }
    Ok(cases)
}

/// Lines of one file: those run and those not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLines {
    pub hit: BTreeSet<u32>,
    pub missed: BTreeSet<u32>,
}

/// Line coverage by file, paths relative to the worktree's root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub files: BTreeMap<String, FileLines>,
}

impl Coverage {
    /// (lines run, lines instrumented).
    pub fn totals(&self) -> (u64, u64) {
        self.files.values().fold((0, 0), |(h, t), f| {
            let hit = f.hit.len() as u64;
            (h + hit, t + hit + f.missed.len() as u64)
        })
    }

    /// Overall line coverage in percent, if any line is instrumented.
    pub fn percent(&self) -> Option<f64> {
        let (hit, total) = self.totals();
        (total > 0).then(|| percent(hit, total))
    }

    /// Merges another report of the same tree (a line run in either is run).
    pub fn merge(&mut self, other: Coverage) {
        for (path, lines) in other.files {
            let f = self.files.entry(path).or_default();
            f.hit.extend(lines.hit);
            f.missed.extend(lines.missed);
        }
        for f in self.files.values_mut() {
            let hit = f.hit.clone();
            f.missed.retain(|l| !hit.contains(l));
        }
    }

    fn line(&mut self, path: &str, line: u32, hits: u64) {
        if self.files.len() >= MAX_ENTRIES && !self.files.contains_key(path) {
            return;
        }
        let f = self.files.entry(path.to_owned()).or_default();
        if hits > 0 {
            f.missed.remove(&line);
            f.hit.insert(line);
        } else if !f.hit.contains(&line) {
            f.missed.insert(line);
        }
    }
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    // Two decimals, so that figures compare as they are shown.
    ((part as f64) * 10_000.0 / (whole as f64)).round() / 100.0
}

/// A path as a report names it, relative to the worktree's root: `file://` dropped, an absolute
/// path under `root` made relative, `./` dropped. Anything else absolute is kept as is (it matches
/// no file of the change).
pub fn relative(path: &str, root: &str) -> String {
    let p = path.strip_prefix("file://").unwrap_or(path);
    let root = root.trim_end_matches('/');
    let p = match p.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
        Some(r) if !root.is_empty() => r,
        _ => p,
    };
    p.trim_start_matches("./").to_owned()
}

/// An LCOV tracefile (`SF:`, `DA:line,hits`, `end_of_record`), as coverage.py, node, c8/istanbul,
/// grcov and cargo-llvm-cov write it.
pub fn lcov(text: &str, root: &str) -> Result<Coverage, ReportError> {
    let mut cov = Coverage::default();
    let mut file: Option<String> = None;
    let mut seen = false;
    for l in text.lines() {
        let l = l.trim();
        if let Some(p) = l.strip_prefix("SF:") {
            file = Some(relative(p, root));
            seen = true;
        } else if let Some(da) = l.strip_prefix("DA:") {
            let (Some(f), mut parts) = (&file, da.split(',')) else {
                return Err(ReportError::Format {
                    format: "LCOV",
                    why: "a DA: record outside a file".into(),
                });
            };
            let line = parts.next().and_then(|s| s.trim().parse::<u32>().ok());
            let hits = parts.next().and_then(|s| s.trim().parse::<u64>().ok());
            if let (Some(line), Some(hits)) = (line, hits) {
                let f = f.clone();
                cov.line(&f, line, hits);
            }
        } else if l == "end_of_record" {
            file = None;
        }
    }
    if !seen {
        return Err(ReportError::Format {
            format: "LCOV",
            why: "no SF: record".into(),
        });
    }
    Ok(cov)
}

/// A Cobertura XML report (coverage.py's `coverage xml`, jest's `cobertura` reporter, tarpaulin):
/// `<class filename>` with its `<lines>` of `<line number hits>`, paths relative to one of `<sources>`.
pub fn cobertura(text: &str, root: &str) -> Result<Coverage, ReportError> {
    let doc = xml(text)?;
    let top = doc.root_element();
    if !top.has_tag_name("coverage") {
        return Err(ReportError::Format {
            format: "Cobertura",
            why: format!("the root element is <{}>", top.tag_name().name()),
        });
    }
    // The first source under the root names the directory the filenames are relative to.
    let prefix = top
        .descendants()
        .filter(|n| n.has_tag_name("source"))
        .filter_map(|n| n.text())
        .map(|s| relative(s.trim(), root))
        .find(|s| !s.starts_with('/'))
        .filter(|s| !s.is_empty() && s != ".");
    let mut cov = Coverage::default();
    for class in top.descendants().filter(|n| n.has_tag_name("class")) {
        let Some(name) = class.attribute("filename") else {
            continue;
        };
        let name = relative(name, root);
        let path = match &prefix {
            Some(p) if !name.starts_with('/') => format!("{}/{name}", p.trim_end_matches('/')),
            _ => name,
        };
        // The class's own `<lines>`: a `<method>`'s lines repeat some of them, or (istanbul) name
        // the line a function is declared on, which LCOV does not count.
        let lines = class
            .children()
            .filter(|n| n.has_tag_name("lines"))
            .flat_map(|l| l.children())
            .filter(|n| n.has_tag_name("line"));
        for line in lines {
            let number = line.attribute("number").and_then(|s| s.parse::<u32>().ok());
            let hits = line.attribute("hits").and_then(|s| s.parse::<u64>().ok());
            if let (Some(n), Some(h)) = (number, hits) {
                cov.line(&path, n, h);
            }
        }
    }
    Ok(cov)
}

/// One static-analysis result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    pub level: Severity,
    pub path: String,
    pub line: u32,
    pub message: String,
    /// A security finding's severity (`critical`, `high`, `medium`, `low`), from SARIF's
    /// `security-severity` property (CVSS-like, 0 to 10) of the result or its rule.
    pub security: Option<String>,
    /// What identifies it across changes: the report's fingerprint when it gives one, otherwise
    /// rule, path and the line's text-free location (`rule:path`: lines move when code is added
    /// above them, so the line is not part of it).
    pub fingerprint: String,
}

/// The results of a SARIF 2.1 log, every run's. A result's level is its own, or its rule's default
/// configuration, or `warning` (SARIF's default).
pub fn sarif(text: &str, root: &str) -> Result<Vec<Finding>, ReportError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ReportError::Json(e.to_string()))?;
    let Some(runs) = v["runs"].as_array() else {
        return Err(ReportError::Format {
            format: "SARIF",
            why: "no `runs` array".into(),
        });
    };
    let mut out = Vec::new();
    for run in runs {
        let mut rule_levels: BTreeMap<&str, &str> = BTreeMap::new();
        let mut rule_security: BTreeMap<&str, f64> = BTreeMap::new();
        for r in run["tool"]["driver"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(sev)) = (r["id"].as_str(), security_severity(&r["properties"])) {
                rule_security.insert(id, sev);
            }
            if let (Some(id), Some(l)) = (
                r["id"].as_str(),
                r["defaultConfiguration"]["level"].as_str(),
            ) {
                rule_levels.insert(id, l);
            }
        }
        for r in run["results"].as_array().into_iter().flatten() {
            if out.len() >= MAX_ENTRIES {
                return Ok(out);
            }
            let rule = r["ruleId"]
                .as_str()
                .or_else(|| r["rule"]["id"].as_str())
                .unwrap_or("")
                .to_owned();
            let level = r["level"]
                .as_str()
                .or_else(|| rule_levels.get(rule.as_str()).copied())
                .unwrap_or("warning");
            let level = match level {
                "error" => Severity::Error,
                "note" | "none" => Severity::Note,
                _ => Severity::Warning,
            };
            let loc = &r["locations"][0]["physicalLocation"];
            let path = relative(loc["artifactLocation"]["uri"].as_str().unwrap_or(""), root);
            let line = loc["region"]["startLine"]
                .as_u64()
                .and_then(|l| u32::try_from(l).ok())
                .unwrap_or(0);
            let given = ["partialFingerprints", "fingerprints"]
                .iter()
                .find_map(|k| {
                    r[*k].as_object().and_then(|m| {
                        m.iter()
                            .find_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                    })
                });
            let message: String = r["message"]["text"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            let fingerprint = given.unwrap_or_else(|| format!("{rule}:{path}:{message}"));
            let security = security_severity(&r["properties"])
                .or_else(|| rule_security.get(rule.as_str()).copied())
                .map(|s| {
                    match s {
                        s if s >= 9.0 => "critical",
                        s if s >= 7.0 => "high",
                        s if s >= 4.0 => "medium",
                        _ => "low",
                    }
                    .to_owned()
                });
            out.push(Finding {
                rule,
                level,
                path,
                line,
                message,
                security,
                fingerprint,
            });
        }
    }
    Ok(out)
}

/// SARIF's `security-severity` property: a number written as a string (CodeQL, semgrep) or not.
fn security_severity(props: &serde_json::Value) -> Option<f64> {
    let v = &props["security-severity"];
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|s: &f64| s.is_finite())
}

/// Figures a gate reports for the policy's `metrics`: a flat JSON object of numbers (`{"complexity":
/// 7, "bundle_kb": 120.5}`), or cargo-mutants' `outcomes.json`, which gives `mutation_score` (caught
/// and timed-out mutants over all that were viable, in percent) and the counts behind it.
pub fn metrics(text: &str) -> Result<BTreeMap<String, f64>, ReportError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ReportError::Json(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(ReportError::Format {
            format: "metrics",
            why: "not a JSON object".into(),
        });
    };
    if obj.contains_key("outcomes") && obj.contains_key("caught") {
        let n = |k: &str| obj.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let (caught, missed, timeout, unviable) =
            (n("caught"), n("missed"), n("timeout"), n("unviable"));
        let viable = caught + missed + timeout;
        let mut m = BTreeMap::new();
        m.insert("mutants_caught".into(), caught as f64);
        m.insert("mutants_missed".into(), missed as f64);
        m.insert("mutants_timeout".into(), timeout as f64);
        m.insert("mutants_unviable".into(), unviable as f64);
        if viable > 0 {
            m.insert("mutation_score".into(), percent(caught + timeout, viable));
        }
        return Ok(m);
    }
    Ok(obj
        .iter()
        .take(1000)
        .filter_map(|(k, v)| Some((k.chars().take(100).collect(), v.as_f64()?)))
        .filter(|(_, v): &(String, f64)| v.is_finite())
        .collect())
}

/// The test counts of a runner's closing lines in a gate's output, summed over every summary it
/// printed (cargo test prints one per test binary): Python's unittest (`Ran N tests` then `OK`,
/// `OK (skipped=K)` or `FAILED (failures=F, errors=E, skipped=K)`), pytest (`3 passed, 1 failed,
/// 2 skipped in 0.1s`), cargo test (`test result: ok. 2 passed; 0 failed; 1 ignored`), cargo-nextest
/// (`Summary [...] 2 tests run: 2 passed, 1 skipped`), go test (`--- FAIL`/`--- PASS`/`--- SKIP`
/// lines of `-v`), jest (`Tests: 1 failed, 1 skipped, 3 passed, 5 total`), Maven Surefire (`Tests
/// run: 4, Failures: 1, Errors: 0, Skipped: 1`) and node's test runner (`ℹ pass 2`, `ℹ fail 0`,
/// `ℹ skipped 1`).
pub fn summary(output: &str) -> Option<Counts> {
    let mut total = Counts::default();
    let mut found = false;
    let mut unittest_ran: Option<u64> = None;
    let mut node = (None, None, None);
    let mut go = Counts::default();
    for raw in output.lines() {
        let l = strip_ansi(raw);
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("Ran ") {
            unittest_ran = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|_| rest.contains(" test"));
            continue;
        }
        if let Some(ran) = unittest_ran
            && (l == "OK" || l.starts_with("OK (") || l.starts_with("FAILED ("))
        {
            let mut c = Counts::default();
            for (k, v) in paren_counts(l) {
                match k {
                    "failures" | "errors" => c.failed += v,
                    "skipped" => c.skipped += v,
                    _ => {}
                }
            }
            // unittest's `Ran N` counts skipped tests too.
            c.run = ran.saturating_sub(c.skipped);
            c.passed = c.run.saturating_sub(c.failed);
            total.add(c);
            found = true;
            unittest_ran = None;
            continue;
        }
        if let Some(rest) = l.strip_prefix("test result: ") {
            // `ok. 2 passed; 0 failed; 1 ignored; ...` or `FAILED. ...`
            let rest = rest.split_once(". ").map_or(rest, |(_, r)| r);
            let c = word_counts(rest, &[("passed", 0), ("failed", 1), ("ignored", 2)]);
            if let Some(c) = c {
                total.add(c);
                found = true;
            }
            continue;
        }
        if l.starts_with("Summary [") && l.contains(" tests run: ") {
            let rest = l.split(" tests run: ").nth(1).unwrap_or("");
            if let Some(c) = word_counts(rest, &[("passed", 0), ("failed", 1), ("skipped", 2)]) {
                total.add(c);
                found = true;
            }
            continue;
        }
        // Maven Surefire's totals, one per module: `[INFO] Tests run: 4, Failures: 1, Errors: 0,
        // Skipped: 1` (its per-class lines also say `Time elapsed`, and are in the totals).
        let maven = ["[INFO] ", "[ERROR] ", "[WARNING] "]
            .iter()
            .find_map(|p| l.strip_prefix(p))
            .unwrap_or(l);
        if maven.starts_with("Tests run: ") && !maven.contains("Time elapsed") {
            let mut c = Counts::default();
            let mut ran = 0;
            for part in maven.split(", ") {
                let Some((k, v)) = part.split_once(": ") else {
                    continue;
                };
                let Ok(v) = v.trim().parse::<u64>() else {
                    continue;
                };
                match k {
                    "Tests run" => ran = v,
                    "Failures" | "Errors" => c.failed += v,
                    "Skipped" => c.skipped += v,
                    _ => {}
                }
            }
            // Surefire's `Tests run` counts skipped tests too.
            c.run = ran.saturating_sub(c.skipped);
            c.passed = c.run.saturating_sub(c.failed);
            total.add(c);
            found = true;
            continue;
        }
        if let Some(rest) = l.strip_prefix("Tests:") {
            if let Some(c) = word_counts(rest, &[("passed", 0), ("failed", 1), ("skipped", 2)]) {
                total.add(c);
                found = true;
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("ℹ ").or_else(|| l.strip_prefix("# ")) {
            let mut parts = rest.split(' ');
            let (k, v) = (
                parts.next(),
                parts.next().and_then(|v| v.parse::<u64>().ok()),
            );
            match (k, v) {
                (Some("pass"), Some(v)) => node.0 = Some(v),
                (Some("fail"), Some(v)) => node.1 = Some(v),
                (Some("skipped"), Some(v)) => node.2 = Some(v),
                _ => {}
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("--- ") {
            match rest.split(':').next() {
                Some("PASS") => go.passed += 1,
                Some("FAIL") => go.failed += 1,
                Some("SKIP") => go.skipped += 1,
                _ => {}
            }
            continue;
        }
        // pytest's closing line: `== 1 failed, 3 passed, 1 skipped in 0.06s ==` (or without rules).
        let inner = l.trim_matches('=').trim();
        if inner.contains(" in ")
            && (inner.contains(" passed") || inner.contains(" failed") || inner.contains(" error"))
        {
            let counts = inner.rsplit_once(" in ").map_or(inner, |(a, _)| a);
            if let Some(c) = word_counts(
                counts,
                &[
                    ("passed", 0),
                    ("failed", 1),
                    ("error", 1),
                    ("errors", 1),
                    ("skipped", 2),
                ],
            ) {
                total.add(c);
                found = true;
            }
        }
    }
    if let (Some(p), Some(f)) = (node.0, node.1) {
        let s = node.2.unwrap_or(0);
        total.add(Counts {
            run: p + f,
            passed: p,
            failed: f,
            skipped: s,
        });
        found = true;
    }
    if go != Counts::default() {
        go.run = go.passed + go.failed;
        total.add(go);
        found = true;
    }
    found.then_some(total)
}

/// `key=N` pairs inside the parentheses of unittest's closing line.
fn paren_counts(l: &str) -> Vec<(&str, u64)> {
    let Some(inner) = l.split_once('(').and_then(|(_, r)| r.split_once(')')) else {
        return Vec::new();
    };
    inner
        .0
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Counts written as `N word` separated by `,` or `;`, each word mapped to passed (0), failed (1)
/// or skipped (2); at least one must be there.
fn word_counts(text: &str, words: &[(&str, usize)]) -> Option<Counts> {
    let mut slots = [0u64; 3];
    let mut any = false;
    for part in text.split([',', ';']) {
        let mut it = part.split_whitespace();
        let (Some(n), Some(w)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(n) = n
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse::<u64>()
        else {
            continue;
        };
        let w = w.trim_end_matches(['.', ';', ',']);
        if let Some((_, slot)) = words.iter().find(|(word, _)| *word == w) {
            slots[*slot] += n;
            any = true;
        }
    }
    any.then(|| Counts {
        run: slots[0] + slots[1],
        passed: slots[0],
        failed: slots[1],
        skipped: slots[2],
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
