//! What the policy knows of a change's tests, coverage and findings: the gates' measurements after
//! the change, the same gates' on the run's base (the baseline) when abo ran them, and what the
//! diff does to test files ([`crate::testdiff`]). [`evidence`] builds the input's `tests`,
//! `coverage`, `findings`, `metrics` and `baseline`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::reports::{Counts, Coverage, Finding, Outcome, TestCase, percent};
use crate::testdiff::{FileEdit, Kind};

/// The most names or lines listed in one field of the input.
const LISTED: usize = 200;

/// What the gates of one tree measured, merged over its gates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Test counts, from JUnit reports or runners' summary lines.
    pub tests: Option<Counts>,
    /// Test cases by name, when a JUnit report was read.
    pub cases: Option<Vec<TestCase>>,
    pub coverage: Option<Coverage>,
    pub findings: Option<Vec<Finding>>,
    pub metrics: BTreeMap<String, f64>,
    /// Failures of quarantined tests, retried and reported instead of failing the change.
    pub quarantined: Vec<String>,
    /// Declared reports that could not be read, and disagreements between what a report says and
    /// what abo saw (a gate that exited 0 with failed tests in its report).
    pub problems: Vec<String>,
}

impl Measured {
    /// Adds one gate's measurement.
    pub fn merge(&mut self, o: Measured) {
        if let Some(t) = o.tests {
            self.tests.get_or_insert_with(Counts::default).add(t);
        }
        if let Some(c) = o.cases {
            self.cases.get_or_insert_with(Vec::new).extend(c);
        }
        if let Some(c) = o.coverage {
            self.coverage.get_or_insert_with(Coverage::default).merge(c);
        }
        if let Some(f) = o.findings {
            self.findings.get_or_insert_with(Vec::new).extend(f);
        }
        self.metrics.extend(o.metrics);
        self.quarantined.extend(o.quarantined);
        self.problems.extend(o.problems);
    }

    /// A figure summary for the `task.gate` event.
    pub fn figures(&self) -> Value {
        json!({
            "tests": self.tests,
            "coverage": self.coverage.as_ref().and_then(Coverage::percent),
            "findings": self.findings.as_ref().map(Vec::len),
            "metrics": self.metrics,
            "quarantined": self.quarantined,
            "problems": self.problems,
        })
    }

    /// The tests its reports name as failed.
    pub fn failed_names(&self) -> Vec<String> {
        self.cases
            .iter()
            .flatten()
            .filter(|t| t.outcome == Outcome::Failed)
            .map(|t| t.name.clone())
            .collect()
    }

    fn names(&self, keep: impl Fn(Outcome) -> bool) -> Option<BTreeSet<&str>> {
        self.cases.as_ref().map(|c| {
            c.iter()
                .filter(|t| keep(t.outcome))
                .map(|t| t.name.as_str())
                .collect()
        })
    }
}

/// One changed file as [`evidence`] reads it.
#[derive(Clone, Debug)]
pub struct ChangedFile {
    pub path: String,
    pub status: String,
    pub kind: Kind,
    pub edit: FileEdit,
    /// The line numbers (in the new file) of the lines it adds.
    pub added_lines: Vec<u32>,
}

fn listed<T: Serialize>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    items.into_iter().take(LISTED).collect()
}

/// The input's `tests`, `coverage`, `findings`, `metrics` and `baseline` objects, as one object
/// (merged into the input by the caller). `gate_scripts`: the files the gates' commands name.
pub fn evidence(
    after: &Measured,
    before: Option<&Measured>,
    files: &[ChangedFile],
    gate_scripts: &[String],
) -> Value {
    // Tests the diff removes (a name removed in one file and added in another moved).
    let added: BTreeSet<&String> = files.iter().flat_map(|f| &f.edit.tests_added).collect();
    // Tests live in source files too (Rust's `#[cfg(test)]` modules): removals and skips count
    // there; assertions are counted in test files only (source asserts invariants).
    let mut removed: BTreeSet<String> = files
        .iter()
        .filter(|f| matches!(f.kind, Kind::Test | Kind::Source))
        .flat_map(|f| f.edit.tests_removed.iter())
        .filter(|n| !added.contains(n))
        .cloned()
        .collect();
    let mut skipped: Vec<String> = files
        .iter()
        .filter(|f| f.kind != Kind::Other)
        .flat_map(|f| {
            f.edit
                .skips_added
                .iter()
                .map(|s| format!("{}: {s}", f.path))
        })
        .collect();
    // Tests the reports no longer show, or show skipped, by name.
    if let (Some(b), Some(_)) = (before, &after.cases) {
        let was_run = b.names(|o| o != Outcome::Skipped).unwrap_or_default();
        let now_all = after.names(|_| true).unwrap_or_default();
        let now_skipped = after.names(|o| o == Outcome::Skipped).unwrap_or_default();
        for n in &was_run {
            if !now_all.contains(n) {
                removed.insert((*n).to_owned());
            } else if now_skipped.contains(n) {
                skipped.push(format!("{n} (skipped in the reports, run on the base)"));
            }
        }
    }
    // Tests that failed on the base and pass now: the change is what they were waiting for.
    let mut fixed: Vec<String> = Vec::new();
    if let Some(b) = before {
        match (
            b.names(|o| o == Outcome::Failed),
            after.names(|o| o == Outcome::Passed),
        ) {
            (Some(was), Some(now)) => fixed.extend(was.intersection(&now).map(|n| (*n).to_owned())),
            _ => {
                if let (Some(bt), Some(at)) = (b.tests, after.tests)
                    && at.failed < bt.failed
                    && at.run >= bt.run
                {
                    fixed.push(format!(
                        "{} of the base's failing tests",
                        bt.failed - at.failed
                    ));
                }
            }
        }
    }
    let deleted_test_files: Vec<&str> = files
        .iter()
        .filter(|f| f.kind == Kind::Test && f.status == "deleted")
        .map(|f| f.path.as_str())
        .collect();
    let weakened: Vec<Value> = files
        .iter()
        .filter(|f| f.kind == Kind::Test && f.edit.weakened())
        .map(|f| {
            json!({
                "path": f.path,
                "assertions_removed": f.edit.assertions_removed,
                "assertions_added": f.edit.assertions_added,
                "stubbed": f.edit.stubbed,
                "vacuous": f.edit.vacuous,
            })
        })
        .collect();
    let config_changed: Vec<&str> = files
        .iter()
        .filter(|f| f.kind == Kind::TestConfig || gate_scripts.contains(&f.path))
        .map(|f| f.path.as_str())
        .collect();
    let of_kind = |k: Kind| -> Vec<&str> {
        files
            .iter()
            .filter(|f| f.kind == k)
            .map(|f| f.path.as_str())
            .collect()
    };
    let failed_names: Vec<&str> = after
        .cases
        .iter()
        .flatten()
        .filter(|t| t.outcome == Outcome::Failed)
        .map(|t| t.name.as_str())
        .collect();
    let tests = json!({
        "measured": after.tests.is_some(),
        "run": after.tests.map(|t| t.run),
        "passed": after.tests.map(|t| t.passed),
        "failed": after.tests.map(|t| t.failed),
        "skipped": after.tests.map(|t| t.skipped),
        "failed_names": listed(failed_names),
        "fixed": listed(fixed),
        "removed": listed(removed),
        "newly_skipped": listed(skipped),
        "deleted_files": deleted_test_files,
        "weakened": weakened,
        "config_changed": config_changed,
        "test_files_changed": of_kind(Kind::Test),
        "source_files_changed": of_kind(Kind::Source),
        "quarantined": listed(after.quarantined.iter()),
        "problems": listed(after.problems.iter()),
    });
    // The overall coverage is a figure too, unless a gate gave its own.
    let mut metrics = after.metrics.clone();
    if let Some(pct) = after.coverage.as_ref().and_then(Coverage::percent) {
        metrics.entry("coverage".into()).or_insert(pct);
    }
    let findings = findings(after, before, files);
    let vulnerabilities: Vec<Value> = findings
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["security"].is_string())
        .map(|f| {
            json!({
                "severity": f["security"], "rule": f["rule"], "path": f["path"],
                "line": f["line"], "new": f["new"],
            })
        })
        .collect();
    json!({
        "tests": tests,
        "vulnerabilities": vulnerabilities,
        "coverage": coverage(after.coverage.as_ref(), before.and_then(|b| b.coverage.as_ref()), files),
        "findings": findings,
        "metrics": metrics,
        "baseline": before.map(|b| json!({
            "tests": b.tests,
            "coverage": b.coverage.as_ref().and_then(Coverage::percent),
            "findings": b.findings.as_ref().map(Vec::len),
            "metrics": b.metrics,
        })),
    })
}

/// Overall coverage, and of the lines the change adds to source files.
fn coverage(after: Option<&Coverage>, before: Option<&Coverage>, files: &[ChangedFile]) -> Value {
    let Some(cov) = after else {
        return json!({ "measured": false });
    };
    let (mut covered, mut total) = (0u64, 0u64);
    let mut uncovered = Vec::new();
    for f in files.iter().filter(|f| f.kind == Kind::Source) {
        let Some(lines) = cov.files.get(&f.path) else {
            continue;
        };
        for l in &f.added_lines {
            if lines.hit.contains(l) {
                covered += 1;
                total += 1;
            } else if lines.missed.contains(l) {
                total += 1;
                if uncovered.len() < LISTED {
                    uncovered.push(json!({ "path": f.path, "line": l }));
                }
            }
        }
    }
    json!({
        "measured": true,
        "lines": cov.percent(),
        "base_lines": before.and_then(Coverage::percent),
        "changed_lines": (total > 0).then(|| percent(covered, total)),
        "changed_lines_covered": covered,
        "changed_lines_total": total,
        "uncovered": uncovered,
    })
}

/// The findings after the change, each marked `new` unless the base had a finding of its rule, file
/// and fingerprint left to match it (or, without a baseline, when it is on a line the change adds).
/// Each finding of the base matches one finding after: a fingerprint that many findings share
/// (semgrep without a login writes `requires login` on every one) hides no more of the change's
/// findings than the base had. Those on lines the change did not add are matched first.
fn findings(after: &Measured, before: Option<&Measured>, files: &[ChangedFile]) -> Value {
    let Some(all) = &after.findings else {
        return json!([]);
    };
    let on_added = |f: &Finding| {
        files
            .iter()
            .any(|c| c.path == f.path && (c.status == "added" || c.added_lines.contains(&f.line)))
    };
    let key = |f: &Finding| (f.rule.clone(), f.path.clone(), f.fingerprint.clone());
    let listed = &all[..all.len().min(LISTED * 5)];
    let new: Vec<bool> = match before.and_then(|b| b.findings.as_ref()) {
        None => listed.iter().map(on_added).collect(),
        Some(old) => {
            let mut left: BTreeMap<_, usize> = BTreeMap::new();
            for f in old {
                *left.entry(key(f)).or_default() += 1;
            }
            let mut new = vec![true; listed.len()];
            let mut order: Vec<usize> = (0..listed.len()).collect();
            order.sort_by_key(|&i| on_added(&listed[i]));
            for i in order {
                if let Some(n) = left.get_mut(&key(&listed[i])).filter(|n| **n > 0) {
                    *n -= 1;
                    new[i] = false;
                }
            }
            new
        }
    };
    let list: Vec<Value> = listed
        .iter()
        .zip(new)
        .map(|(f, new)| {
            json!({
                "rule": f.rule, "level": f.level, "severity": f.level, "path": f.path,
                "line": f.line, "message": f.message, "fingerprint": f.fingerprint, "new": new,
                "security": f.security,
            })
        })
        .collect();
    Value::Array(list)
}
