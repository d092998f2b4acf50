//! The reports a gate leaves in the worktree (`gates[].reports`), read as the policy's evidence.
//!
//! A report is a file an agent could have written too. So: before the gate runs, abo removes the
//! untracked files its report paths match (a report the agent left cannot stand in for the gate's);
//! after it, each is read with [`crate::confined::read`] (no symbolic link followed, nothing the
//! sandbox denies, bounded in size), parsed defensively, stored as an artifact, and removed again
//! when untracked, so that it is no part of the change. What abo saw itself wins over a report:
//! a gate that fails fails whatever its report says, and a gate that exits 0 with failed tests in
//! its report is reported as a problem to the policy.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use abo_core::config::Reports;
use abo_core::event::{GateFigures, TestCounts};
use abo_core::ids::{ArtifactId, AttemptId, GateName};
use abo_policy::measure::Measured;
use abo_policy::reports::{self, Counts};

use crate::confined;
use crate::git::Git;

/// The most bytes read from one report.
pub const MAX_REPORT_BYTES: u64 = 32 << 20;

/// The most files one report glob may match.
const MAX_MATCHES: usize = 64;

/// The most directory entries looked at while expanding one glob.
const MAX_VISITED: usize = 20_000;

/// What each gate of each attempt measured, kept for the attempt's policy.
#[derive(Debug, Default)]
pub struct Latest(Mutex<HashMap<AttemptId, BTreeMap<GateName, Measured>>>);

impl Latest {
    pub fn put(&self, attempt: &AttemptId, gate: &GateName, m: Measured) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(attempt.clone())
                .or_default()
                .insert(gate.clone(), m);
        }
    }

    /// Every gate's measurement of the attempt, merged.
    pub fn merged(&self, attempt: &AttemptId) -> Measured {
        let mut out = Measured::default();
        if let Ok(map) = self.0.lock()
            && let Some(gates) = map.get(attempt)
        {
            for m in gates.values() {
                out.merge(m.clone());
            }
        }
        out
    }

    /// The attempt's gates that measured something (tests, coverage, findings or figures).
    pub fn measuring(&self, attempt: &AttemptId) -> Vec<GateName> {
        let Ok(map) = self.0.lock() else {
            return Vec::new();
        };
        map.get(attempt)
            .into_iter()
            .flatten()
            .filter(|(_, m)| {
                m.tests.is_some()
                    || m.coverage.is_some()
                    || m.findings.is_some()
                    || !m.metrics.is_empty()
            })
            .map(|(g, _)| g.clone())
            .collect()
    }

    pub fn forget(&self, attempt: &AttemptId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(attempt);
        }
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// The files under `dir` a report path or glob matches, relative to `dir`: no symbolic link is
/// followed, `.git` and `.abo` are never entered, and the walk is bounded.
pub fn expand(dir: &Path, pattern: &str) -> Vec<String> {
    let pattern = pattern.trim_start_matches("./");
    if pattern.starts_with('/') || pattern.split('/').any(|c| c == "..") {
        return Vec::new();
    }
    if !is_glob(pattern) {
        return match std::fs::symlink_metadata(dir.join(pattern)) {
            Ok(m) if m.file_type().is_file() => vec![pattern.to_owned()],
            _ => Vec::new(),
        };
    }
    // Walk from the pattern's literal directories.
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts.iter().take_while(|p| !is_glob(p)).count();
    let base = parts[..literal.min(parts.len().saturating_sub(1))].join("/");
    let mut out = Vec::new();
    let mut visited = 0usize;
    let mut stack = vec![base];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            dir.to_owned()
        } else {
            dir.join(&rel)
        };
        let Ok(entries) = std::fs::read_dir(&abs) else {
            continue;
        };
        for e in entries.flatten() {
            visited += 1;
            if visited > MAX_VISITED || out.len() >= MAX_MATCHES {
                return out;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" || (rel.is_empty() && name == ".abo") {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() && abo_core::glob::matches(pattern, &path) => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn all_paths(dir: &Path, r: &Reports) -> Vec<String> {
    let mut out: Vec<String> = [&r.junit, &r.coverage, &r.sarif, &r.metrics]
        .into_iter()
        .flatten()
        .flat_map(|p| expand(dir, p))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Removes the report files that git does not track (before a gate: what an agent left; after
/// it: what the gate wrote, already read).
pub async fn clear(git: &Git, dir: &Path, r: &Reports) {
    let paths = all_paths(dir, r);
    if paths.is_empty() {
        return;
    }
    let mut args = vec!["ls-files", "-z", "--"];
    args.extend(paths.iter().map(String::as_str));
    let Ok(tracked) = git.run_in(dir, &args).await else {
        return;
    };
    let tracked: Vec<&str> = tracked.split('\0').collect();
    for p in paths.iter().filter(|p| !tracked.contains(&p.as_str())) {
        let _ = std::fs::remove_file(dir.join(p));
    }
}

/// The reports of one gate run, read and parsed, with their texts (to be stored, redacted, as
/// artifacts). `output`: the gate's last run's output, for runners' summary lines when no JUnit
/// report is declared; `passed`: the gate's exit was 0.
pub fn collect(
    dir: &Path,
    r: &Reports,
    rules: &confined::Rules,
    output: &str,
    passed: bool,
) -> (Measured, Vec<String>) {
    let mut m = Measured::default();
    let mut stored = Vec::new();
    let root = dir.to_string_lossy().into_owned();
    let mut read = |path: &str, m: &mut Measured| -> Option<String> {
        match confined::read(dir, path, rules, MAX_REPORT_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                stored.push(text.clone());
                Some(text)
            }
            Err(e) => {
                m.problems.push(format!("report {path} not read: {e}"));
                None
            }
        }
    };
    let declared = |list: &[String], m: &mut Measured| -> Vec<String> {
        let mut found = Vec::new();
        for p in list {
            let hits = expand(dir, p);
            if hits.is_empty() {
                m.problems.push(format!("no report matches {p}"));
            }
            found.extend(hits);
        }
        found
    };
    for path in declared(&r.junit, &mut m) {
        let Some(text) = read(&path, &mut m) else {
            continue;
        };
        match reports::junit(&text) {
            Ok(cases) => {
                let c = Counts::of(&cases);
                m.tests.get_or_insert_with(Counts::default).add(c);
                m.cases.get_or_insert_with(Vec::new).extend(cases);
            }
            Err(e) => m.problems.push(format!("{path}: {e}")),
        }
    }
    for path in declared(&r.coverage, &mut m) {
        let Some(text) = read(&path, &mut m) else {
            continue;
        };
        let parsed = if text.trim_start().starts_with('<') {
            reports::cobertura(&text, &root)
        } else {
            reports::lcov(&text, &root)
        };
        match parsed {
            Ok(c) => m.coverage.get_or_insert_with(Default::default).merge(c),
            Err(e) => m.problems.push(format!("{path}: {e}")),
        }
    }
    for path in declared(&r.sarif, &mut m) {
        let Some(text) = read(&path, &mut m) else {
            continue;
        };
        match reports::sarif(&text, &root) {
            Ok(f) => m.findings.get_or_insert_with(Vec::new).extend(f),
            Err(e) => m.problems.push(format!("{path}: {e}")),
        }
    }
    for path in declared(&r.metrics, &mut m) {
        let Some(text) = read(&path, &mut m) else {
            continue;
        };
        match reports::metrics(&text) {
            Ok(x) => m.metrics.extend(x),
            Err(e) => m.problems.push(format!("{path}: {e}")),
        }
    }
    if r.junit.is_empty() {
        m.tests = reports::summary(output);
    }
    if passed && let Some(t) = m.tests.filter(|t| t.failed > 0) {
        m.problems.push(format!(
            "the gate exited 0 but {} of its tests failed",
            t.failed
        ));
    }
    (m, stored)
}

/// The figures of a `task.gate` event.
pub fn figures(m: &Measured, reports: Vec<ArtifactId>) -> Option<GateFigures> {
    let f = GateFigures {
        tests: m.tests.map(|t| TestCounts {
            run: t.run,
            passed: t.passed,
            failed: t.failed,
            skipped: t.skipped,
        }),
        coverage: m.coverage.as_ref().and_then(|c| c.percent()),
        findings: m.findings.as_ref().map(|f| f.len() as u64),
        metrics: m.metrics.clone(),
        reports,
        flaky: None,
        quarantined: m.quarantined.clone(),
        problems: m.problems.clone(),
    };
    (f != GateFigures::default()).then_some(f)
}

/// The output of a gate's last run in its log (runs are separated by abo's `--- abo: run N`
/// lines).
pub fn last_run(log: &str) -> &str {
    match log.rfind("\n--- abo: run ") {
        Some(i) => &log[i..],
        None => log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(junit: &str) -> Reports {
        Reports {
            junit: vec![junit.to_owned()],
            ..Default::default()
        }
    }

    const FAILED: &str = r#"<testsuite><testcase classname="m" name="ok"/><testcase classname="m" name="bad"><failure/></testcase></testsuite>"#;

    #[test]
    fn reports_are_read_confined_and_distrusted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("out/deep")).unwrap();
        std::fs::write(d.join("out/deep/a.xml"), FAILED).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.xml"), FAILED).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.xml"), d.join("out/link.xml")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join(".git/c.xml"), FAILED).unwrap();
        // The glob finds the file, not the link, nor anything in .git.
        assert_eq!(expand(d, "**/*.xml"), ["out/deep/a.xml"]);
        assert_eq!(expand(d, "../x.xml"), Vec::<String>::new());
        let rules = confined::Rules::default();
        // A gate that exited 0 with a failed test in its report: the failure is believed.
        let (m, texts) = collect(d, &reports("out/**/*.xml"), &rules, "", true);
        assert_eq!(m.failed_names(), ["m::bad"]);
        assert_eq!(m.problems, ["the gate exited 0 but 1 of its tests failed"]);
        assert_eq!(texts.len(), 1);
        // A report named through a link is refused, a missing one is a problem, not a pass.
        let (m, _) = collect(d, &reports("out/link.xml"), &rules, "", true);
        assert_eq!((m.tests, m.problems.len()), (None, 1), "{:?}", m.problems);
        let (m, _) = collect(d, &reports("nothing.xml"), &rules, "", true);
        assert_eq!(m.problems, ["no report matches nothing.xml"]);
        // Without a JUnit report, the runner's closing lines count.
        let (m, _) = collect(
            d,
            &Reports::default(),
            &rules,
            "Ran 3 tests in 0.1s\n\nOK (skipped=1)\n",
            true,
        );
        assert_eq!(m.tests.map(|t| (t.run, t.skipped)), Some((2, 1)));
    }
}
