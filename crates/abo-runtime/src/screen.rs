//! A backlog is checked like a change before a run is created from it. Every field of a task is
//! frozen into `run.created` (and its title and description into the landed commit's message), and
//! a `patch:` file is stored whole as an artifact: a secret in either is refused, located, with the
//! policy's own rules ([`Scanner`]). So is a patch file outside the repository and the backlog's
//! directory: a backlog must not make abo read and keep `/etc/passwd` or `../secret/id_rsa`.
//!
//! abo-core parses backlogs without IO and without the policy; this is where both are at hand.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use abo_core::backlog::{Backlog, BacklogTask};
use abo_core::diag::{InputError, PathSeg, locate};
use abo_policy::secrets::{Finding, Scanner};

const SECRET_HINT: &str =
    "put it in an environment variable the task reads, and name the variable instead";

/// The secrets written in a backlog (`text`, as read from `backlog.file`): one error a line, naming
/// the field that holds it. The text as written is scanned too, so a secret in a comment or in a
/// field abo does not know is refused as well.
pub fn secrets(scanner: &Scanner, backlog: &Backlog, text: &str) -> Vec<InputError> {
    let yaml = !is_markdown(&backlog.file);
    let raw: Vec<&str> = text.lines().collect();
    let mut reported = BTreeSet::new();
    let mut errors = Vec::new();
    let mut report = |line: usize, what: String, f: &Finding| {
        if reported.insert(line) {
            errors.push(InputError {
                file: backlog.file.clone(),
                line: Some(line),
                col: None,
                message: format!("{what}{}: a secret in the backlog", f.rule),
                hint: Some(SECRET_HINT.to_owned()),
            });
        }
    };
    // Each field as parsed, which is what would be stored: escapes and folded lines are resolved.
    let mut fields: Vec<(Vec<PathSeg>, &str, usize)> = Vec::new();
    if let Some(title) = &backlog.title {
        fields.push((
            vec![PathSeg::key("run"), PathSeg::key("title")],
            title.as_str(),
            1,
        ));
    }
    if let Some(profile) = &backlog.profile {
        fields.push((
            vec![PathSeg::key("run"), PathSeg::key("profile")],
            profile.as_str(),
            1,
        ));
    }
    for (i, t) in backlog.tasks.iter().enumerate() {
        for (path, value) in task_fields(t) {
            let path = [PathSeg::key("tasks"), PathSeg::Index(i)]
                .into_iter()
                .chain(path)
                .collect();
            fields.push((path, value, t.pos.0));
        }
    }
    for (path, value, fallback) in fields {
        let lines: Vec<(usize, String)> = value
            .split('\n')
            .enumerate()
            .map(|(k, l)| (k + 1, l.to_owned()))
            .collect();
        let found = scanner.scan(&backlog.file, &lines);
        if found.is_empty() {
            continue;
        }
        let key_line = yaml
            .then(|| locate(text, &path))
            .flatten()
            .map_or(fallback, |(l, _)| l);
        let name = abo_core::diag::path_to_string(&path);
        for f in found {
            // The line of the file where the value's line holding the secret is written.
            let written = lines
                .get(f.line.saturating_sub(1))
                .map_or("", |(_, l)| l.trim());
            let line = (key_line..=raw.len())
                .find(|&n| {
                    !written.is_empty()
                        && n.checked_sub(1)
                            .and_then(|i| raw.get(i))
                            .is_some_and(|r| r.contains(written))
                })
                .unwrap_or(key_line);
            report(line, format!("{name}: "), &f);
        }
    }
    let numbered: Vec<(usize, String)> = raw
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, (*l).to_owned()))
        .collect();
    for f in scanner.scan(&backlog.file, &numbered) {
        report(f.line, String::new(), &f);
    }
    errors.sort_by_key(|e| e.line);
    errors
}

/// Every text field of a task, with its path under the task.
fn task_fields(t: &BacklogTask) -> Vec<(Vec<PathSeg>, &str)> {
    let mut out: Vec<(Vec<PathSeg>, &str)> = vec![
        (vec![PathSeg::key("id")], t.id.as_str()),
        (vec![PathSeg::key("title")], t.title.as_str()),
        (vec![PathSeg::key("description")], t.description.as_str()),
    ];
    for (key, value) in [
        ("backend", &t.backend),
        ("run", &t.run),
        ("patch", &t.patch),
    ] {
        if let Some(v) = value {
            out.push((vec![PathSeg::key(key)], v.as_str()));
        }
    }
    let lists: [(&str, &[String]); 5] = [
        ("acceptance", &t.acceptance),
        ("paths", &t.paths),
        ("deps", &t.deps),
        ("gates", t.gates.as_deref().unwrap_or_default()),
        ("labels", &t.labels),
    ];
    for (key, values) in lists {
        for (j, v) in values.iter().enumerate() {
            out.push((vec![PathSeg::key(key), PathSeg::Index(j)], v.as_str()));
        }
    }
    for (k, v) in &t.autonomy {
        out.push((vec![PathSeg::key("autonomy"), PathSeg::key(k)], v.as_str()));
    }
    out
}

fn is_markdown(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    lower.ends_with(".md") || lower.ends_with(".markdown")
}

/// The `patch:` files of a backlog, where `Plan::build` will look for them (relative to the
/// backlog's directory). A path written absolute, or that resolves (`..` and symlinks followed)
/// outside every one of `roots`, is refused; the others are read and scanned for secrets, since
/// the file is stored whole. Returns the errors and the refused paths as `Plan::build` joins them
/// (it need not also call them missing).
pub fn patches(
    scanner: &Scanner,
    backlog: &Backlog,
    roots: &[PathBuf],
) -> (Vec<InputError>, Vec<PathBuf>) {
    let dir = Path::new(&backlog.file).parent().unwrap_or(Path::new(""));
    let roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    let mut errors = Vec::new();
    let mut refused = Vec::new();
    for t in &backlog.tasks {
        let Some(p) = &t.patch else { continue };
        let joined = dir.join(p);
        let err = |msg: String| {
            InputError::new(&backlog.file, format!("task `{}`: {msg}", t.id))
                .at(Some(t.pos_of("patch")))
        };
        let resolved = match joined.canonicalize() {
            Ok(r) => Some(r),
            // A missing file is `Plan::build`'s to report, unless its path leaves the roots as
            // written: the parent that exists, resolved, and the rest without `..`.
            Err(_) => lexically_resolved(&joined),
        };
        let inside = resolved
            .as_ref()
            .is_some_and(|r| roots.iter().any(|root| r.starts_with(root)));
        if Path::new(p).is_absolute() || (resolved.is_some() && !inside) {
            errors.push(
                err(format!(
                    "patch file `{p}` is outside the repository and the backlog's directory"
                ))
                .hint("keep the patch in the repository or beside the backlog, and give its path relative to the backlog"),
            );
            refused.push(joined);
            continue;
        }
        let Ok(bytes) = std::fs::read(&joined) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<(usize, String)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_owned()))
            .collect();
        if let Some(f) = scanner.scan(p, &lines).first() {
            errors.push(
                err(format!(
                    "patch file `{p}`: line {}: {}: a secret in the patch",
                    f.line, f.rule
                ))
                .hint("abo stores a task's patch file whole: remove the secret from it"),
            );
            refused.push(joined);
        }
    }
    (errors, refused)
}

/// The nearest existing ancestor of `path`, resolved, with the rest of the path appended; `None`
/// when the rest climbs (`..`) out of what exists, or nothing of the path exists.
fn lexically_resolved(path: &Path) -> Option<PathBuf> {
    let mut base = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(b) = base.canonicalize() {
            let mut out = b;
            for c in rest.iter().rev() {
                match c {
                    Component::Normal(n) => out.push(n),
                    Component::ParentDir => {
                        out.pop();
                    }
                    _ => {}
                }
            }
            return Some(out);
        }
        let (Some(parent), Some(last)) = (base.parent(), base.components().next_back()) else {
            return None;
        };
        rest.push(last);
        base = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;

    fn check(text: &str, want: &[&str]) {
        let b = abo_core::backlog::parse_yaml("b.yml", text).unwrap();
        let got: Vec<String> = secrets(&Scanner::default(), &b, text)
            .iter()
            .map(|e| {
                let s = e.to_string();
                s.split(" (hint").next().unwrap().to_owned()
            })
            .collect();
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn secrets_are_located_by_field_and_line() {
        check(
            "tasks:\n  - id: a\n    title: A\n    description: uses AKIAQWERTYUIOPASDFGH\n    run: 'true'\n",
            &["b.yml:4: tasks[0].description: aws-access-key: a secret in the backlog"],
        );
        check(
            "tasks:\n  - id: a\n    title: A\n    description: |\n      first line\n      key: AKIAQWERTYUIOPASDFGH\n    run: 'true'\n",
            &["b.yml:6: tasks[0].description: aws-access-key: a secret in the backlog"],
        );
        check(
            "tasks:\n  - id: a\n    title: \"\\x41KIAQWERTYUIOPASDFGH\"\n    run: 'true'\n",
            &["b.yml:3: tasks[0].title: aws-access-key: a secret in the backlog"],
        );
        check(
            "run:\n  title: ghp_abcdefghijklmnopqrstuvwxyz0123456789\ntasks:\n  - { id: a, title: A, run: 'curl -H \"Authorization: Bearer sk_live_abcdefghijklmnopqrstuvwx\" x' }\n",
            &[
                "b.yml:2: run.title: github-token: a secret in the backlog",
                "b.yml:4: tasks[0].run: stripe-key: a secret in the backlog",
            ],
        );
        // A comment is not stored, but a backlog is checked like a change.
        check(
            "tasks:\n  # AKIAQWERTYUIOPASDFGH\n  - { id: a, title: A, run: 'true' }\n",
            &["b.yml:2: aws-access-key: a secret in the backlog"],
        );
        check("tasks:\n  - { id: a, title: A, run: 'true' }\n", &[]);
    }

    #[test]
    fn markdown_plans_are_scanned_too() {
        let text = "# Plan\n\n### Ready\n\n- **[a]** Add the model\n  - Notes: the key is\n    AKIAQWERTYUIOP\n    ASDFGH\n";
        let b = abo_core::backlog::parse_markdown("PLAN.md", text).unwrap();
        let got: Vec<String> = secrets(&Scanner::default(), &b, text)
            .iter()
            .map(|e| e.to_string().split(" (hint").next().unwrap().to_owned())
            .collect();
        assert_eq!(
            got,
            ["PLAN.md:7: tasks[0].description: aws-access-key: a secret in the backlog"]
        );
    }
}
