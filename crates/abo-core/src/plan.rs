//! From backlogs and config to a validated plan: a DAG of tasks, each with its backend and gates.
//! Every problem of a backlog (ids, dependencies, cycles, backends, gates, paths) is reported here,
//! located, before anything starts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backlog::{Backlog, BacklogTask, Section, TaskType};
use crate::config::Config;
use crate::diag::{InputError, InputErrors, nearest};
use crate::ids::{GateName, TaskId};

/// What produces a task's change, as the backlog chose it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum BackendChoice {
    /// `run:` in the task: a shell command.
    Run { command: String },
    /// `patch:` in the task: a unified diff file (absolute or relative to the working directory).
    Patch { file: String },
    /// A backend named in abo.yml (the task's `backend:` or `backends.default`).
    Named { name: String },
}

/// Whether a task will be run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Readiness {
    Runnable,
    /// A Markdown "Pending" task: it runs after a person approves it (action `plan`).
    NeedsPlanApproval,
    /// Never run, with the reason (Markdown "Not Ready", or "Pending" until approvals exist).
    Skipped {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanTask {
    pub id: TaskId,
    pub title: String,
    pub kind: TaskType,
    pub description: String,
    pub acceptance: Vec<String>,
    pub paths: Vec<String>,
    pub deps: Vec<TaskId>,
    pub backend: BackendChoice,
    pub gates: Vec<GateName>,
    pub labels: Vec<String>,
    pub max_attempts: u32,
    pub priority: i64,
    pub readiness: Readiness,
    /// The task's own `autonomy:` overrides (they may only lower the run's levels).
    pub autonomy: BTreeMap<String, String>,
    /// Where it was written, for later errors (`FILE:LINE:COL`).
    pub origin: String,
    /// The task names no backend (nor `run:` or `patch:`): the router chooses.
    pub routed: bool,
    /// The task's own `budget:`.
    pub budget: Option<crate::budget::Cap>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub title: String,
    pub profile: Option<String>,
    pub tasks: Vec<PlanTask>,
}

impl Plan {
    /// Validates the backlogs against the config. `file_exists` answers for `patch:` files
    /// (given as written, joined to the backlog's directory).
    pub fn build(
        backlogs: &[Backlog],
        config: &Config,
        file_exists: &dyn Fn(&Path) -> bool,
    ) -> Result<Plan, InputErrors> {
        let mut errors = Vec::new();
        let all: Vec<&BacklogTask> = backlogs.iter().flat_map(|b| &b.tasks).collect();
        let err = |t: &BacklogTask, field: &str, msg: String| {
            InputError::new(&t.file, format!("task `{}`: {msg}", t.id)).at(Some(t.pos_of(field)))
        };

        let mut ids: BTreeMap<&str, &BacklogTask> = BTreeMap::new();
        for t in &all {
            if !TaskId::is_valid(&t.id) {
                errors.push(
                    InputError::new(&t.file, format!("invalid task id `{}`", t.id))
                        .at(Some(t.pos_of("id")))
                        .hint("ids are lowercase letters, digits, `-` and `_`, starting with a letter or digit"),
                );
            }
            if let Some(first) = ids.insert(&t.id, t) {
                errors.push(err(t, "id", "duplicate id".into()).hint(format!(
                    "first defined at {}:{}:{}",
                    first.file, first.pos.0, first.pos.1
                )));
                ids.insert(&first.id, first);
            }
        }

        for t in &all {
            for (j, d) in t.deps.iter().enumerate() {
                let field = format!("deps[{j}]");
                if d == &t.id {
                    errors.push(err(t, &field, "depends on itself".into()));
                } else if !ids.contains_key(d.as_str()) {
                    let e = err(t, &field, format!("unknown dependency `{d}`"));
                    errors.push(match nearest(d, ids.keys().copied()) {
                        Some(n) => e.hint(format!("did you mean `{n}`?")),
                        None => e,
                    });
                }
            }
            let sources = [
                ("run", t.run.is_some()),
                ("patch", t.patch.is_some()),
                ("backend", t.backend.is_some()),
            ];
            let set: Vec<&str> = sources
                .iter()
                .filter(|(_, s)| *s)
                .map(|(n, _)| *n)
                .collect();
            if set.len() > 1 {
                errors.push(err(
                    t,
                    set[1],
                    format!("sets both `{}` and `{}`; choose one", set[0], set[1]),
                ));
            }
            if let Some(b) = &t.backend
                && !config.backends.named.contains_key(b)
            {
                let e = err(t, "backend", format!("unknown backend `{b}`"));
                let names = config.backends.named.keys().map(String::as_str);
                errors.push(match nearest(b, names) {
                    Some(n) => e.hint(format!("did you mean `{n}`?")),
                    None if config.backends.named.is_empty() => {
                        e.hint("no backends are configured in abo.yml")
                    }
                    None => e.hint(format!(
                        "configured: {}",
                        config
                            .backends
                            .named
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                });
            }
            for (j, g) in t.gates.iter().flatten().enumerate() {
                if config.gate(g).is_none() {
                    let e = err(t, &format!("gates[{j}]"), format!("unknown gate `{g}`"));
                    let names = config.gates.iter().map(|g| g.name.as_str());
                    errors.push(match nearest(g, names) {
                        Some(n) => e.hint(format!("did you mean `{n}`?")),
                        None => e,
                    });
                }
            }
            if let Some(p) = &t.patch
                && !file_exists(&patch_path(&t.file, p))
            {
                errors.push(
                    err(t, "patch", format!("patch file `{p}` does not exist")).hint(format!(
                        "a patch path is relative to the backlog's directory: {}",
                        patch_path(&t.file, p).display()
                    )),
                );
            }
            if t.max_attempts == Some(0) {
                errors.push(err(
                    t,
                    "max_attempts",
                    "`max_attempts` must be at least 1".into(),
                ));
            }
            let runnable = matches!(t.section, Section::Ready | Section::Pending);
            if runnable
                && t.run.is_none()
                && t.patch.is_none()
                && t.backend.is_none()
                && config.backends.default.is_none()
            {
                errors.push(err(t, "id", "has no backend".into()).hint(
                    "give the task `run:`, `patch:` or `backend:`, or set `backends.default` in abo.yml",
                ));
            }
        }

        if errors.is_empty()
            && let Some(cycle) = find_cycle(&all)
        {
            let first = all.iter().find(|t| t.id == cycle[0]).copied();
            let mut e = InputError::new(
                first.map_or("backlog", |t| t.file.as_str()),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
            if let Some(t) = first {
                e = e.at(Some(t.pos_of("deps")));
            }
            errors.push(e);
        }
        if all.is_empty() {
            let file = backlogs.first().map_or("backlog", |b| b.file.as_str());
            errors.push(InputError::new(file, "the backlog has no tasks"));
        }
        if !errors.is_empty() {
            return Err(InputErrors(errors));
        }

        let tasks = all.iter().map(|t| plan_task(t, config)).collect();
        let title = backlogs
            .iter()
            .find_map(|b| b.title.clone())
            .or_else(|| backlogs.first().map(|b| b.file.clone()))
            .unwrap_or_default();
        let profile = backlogs.iter().find_map(|b| b.profile.clone());
        Ok(Plan {
            title,
            profile,
            tasks,
        })
    }

    /// Number of tasks that will run.
    pub fn runnable(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| !matches!(t.readiness, Readiness::Skipped { .. }))
            .count()
    }
}

fn patch_path(backlog_file: &str, patch: &str) -> std::path::PathBuf {
    let dir = Path::new(backlog_file).parent().unwrap_or(Path::new(""));
    dir.join(patch)
}

fn plan_task(t: &BacklogTask, config: &Config) -> PlanTask {
    let backend = if let Some(run) = &t.run {
        BackendChoice::Run {
            command: run.clone(),
        }
    } else if let Some(p) = &t.patch {
        BackendChoice::Patch {
            file: patch_path(&t.file, p).to_string_lossy().into_owned(),
        }
    } else {
        let name = t
            .backend
            .clone()
            .or_else(|| config.backends.default.clone())
            .unwrap_or_default();
        BackendChoice::Named { name }
    };
    let readiness = match &t.section {
        Section::Ready => Readiness::Runnable,
        Section::Pending => Readiness::NeedsPlanApproval,
        Section::NotReady { reason } => Readiness::Skipped {
            reason: format!("not ready: {reason}"),
        },
    };
    let gates = match &t.gates {
        Some(g) => g.iter().map(GateName::new).collect(),
        None => config
            .gates
            .iter()
            .map(|g| GateName::new(&g.name))
            .collect(),
    };
    PlanTask {
        id: TaskId::new(&t.id),
        title: t.title.clone(),
        kind: t.kind,
        description: t.description.clone(),
        acceptance: t.acceptance.clone(),
        paths: t.paths.clone(),
        deps: t.deps.iter().map(TaskId::new).collect(),
        backend,
        gates,
        labels: t.labels.clone(),
        max_attempts: t.max_attempts.unwrap_or(config.attempts.max),
        priority: t.priority,
        readiness,
        autonomy: t.autonomy.clone(),
        origin: format!("{}:{}:{}", t.file, t.pos.0, t.pos.1),
        routed: t.run.is_none() && t.patch.is_none() && t.backend.is_none(),
        budget: t.budget.as_ref().map(|b| crate::budget::Cap {
            usd: b.usd,
            tokens: b.tokens,
        }),
    }
}

/// A dependency cycle as a list of ids, the first repeated at the end.
fn find_cycle(tasks: &[&BacklogTask]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = tasks
        .iter()
        .map(|t| (t.id.as_str(), t.deps.iter().map(String::as_str).collect()))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        id: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(id) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| *s == id).unwrap_or(0);
                let mut cycle: Vec<String> =
                    stack[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(id.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(id, Mark::Visiting);
        stack.push(id);
        for d in deps.get(id).into_iter().flatten() {
            if let Some(c) = visit(d, deps, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(id, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    // Visit in file order so the reported cycle starts where the user would look first.
    for t in tasks {
        if let Some(c) = visit(&t.id, &deps, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// Whether two path scopes may touch the same file. Conservative: two globs overlap when the literal
/// part of one (before its first wildcard) is a prefix of the other's, at a path boundary or inside a name.
pub fn scopes_overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.iter().any(|y| globs_overlap(x, y)))
}

fn globs_overlap(a: &str, b: &str) -> bool {
    let lit = |g: &str| -> (String, bool) {
        let g = g.trim_start_matches("./");
        match g.find(['*', '?', '[', '{']) {
            Some(i) => (g[..i].to_owned(), true),
            None => (g.trim_end_matches('/').to_owned(), false),
        }
    };
    let (la, wa) = lit(a);
    let (lb, wb) = lit(b);
    match (wa, wb) {
        (false, false) => la == lb || is_under(&la, &lb) || is_under(&lb, &la),
        (true, false) => lb.starts_with(&la) || is_under(la.trim_end_matches('/'), &lb),
        (false, true) => la.starts_with(&lb) || is_under(lb.trim_end_matches('/'), &la),
        (true, true) => la.starts_with(&lb) || lb.starts_with(&la),
    }
}

/// `child` is a path inside directory `dir`.
fn is_under(child: &str, dir: &str) -> bool {
    dir.is_empty() || child.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::parse_yaml;

    fn config() -> Config {
        Config::parse(
            "abo.yml",
            "version: 1\nbackends:\n  fmt: { kind: command, run: 'true' }\ngates:\n  - { name: test, run: 'true' }\n",
        )
        .unwrap()
    }

    fn build(text: &str) -> Result<Plan, String> {
        let b = parse_yaml("dir/b.yml", text).map_err(|e| e.to_string())?;
        Plan::build(&[b], &config(), &|p| p == Path::new("dir/patches/ok.diff"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_error_of_design_4_2() {
        let check = |text: &str, want: &str| assert_eq!(build(text).unwrap_err(), want, "{text}");
        check(
            "tasks:\n  - { id: a, title: A, run: x }\n  - { id: a, title: B, run: x }\n",
            "dir/b.yml:3:3: task `a`: duplicate id (hint: first defined at dir/b.yml:2:3)",
        );
        check(
            "tasks:\n  - id: user-model\n    title: A\n    run: x\n    deps: [user-modle]\n",
            "dir/b.yml:5:5: task `user-model`: unknown dependency `user-modle` (hint: did you mean `user-model`?)",
        );
        check(
            "tasks:\n  - id: a\n    title: A\n    run: x\n    deps:\n      - c\n  - { id: b, title: B, run: x }\n",
            "dir/b.yml:6:7: task `a`: unknown dependency `c`",
        );
        check(
            "tasks:\n  - id: a\n    title: A\n    run: x\n    deps: [c]\n  - id: b\n    title: B\n    run: x\n    deps: [a]\n  - id: c\n    title: C\n    run: x\n    deps: [b]\n",
            "dir/b.yml:5:5: dependency cycle: a -> c -> b -> a",
        );
        check(
            "tasks:\n  - id: a\n    title: A\n    patch: patches/missing.diff\n",
            "dir/b.yml:4:5: task `a`: patch file `patches/missing.diff` does not exist (hint: a patch path is relative to the backlog's directory: dir/patches/missing.diff)",
        );
        check(
            "tasks:\n  - id: a\n    title: A\n    backend: fnt\n",
            "dir/b.yml:4:5: task `a`: unknown backend `fnt` (hint: did you mean `fmt`?)",
        );
        check(
            "tasks:\n  - id: a\n    title: A\n    run: x\n    gates: [tset]\n",
            "dir/b.yml:5:5: task `a`: unknown gate `tset` (hint: did you mean `test`?)",
        );
        check(
            "tasks:\n  - id: a\n    title: A\n",
            "dir/b.yml:2:5: task `a`: has no backend (hint: give the task `run:`, `patch:` or `backend:`, or set `backends.default` in abo.yml)",
        );
        check(
            "tasks:\n  - id: A b\n    title: A\n    run: x\n",
            "dir/b.yml:2:5: invalid task id `A b` (hint: ids are lowercase letters, digits, `-` and `_`, starting with a letter or digit)",
        );
    }

    #[test]
    fn resolves_backends_and_gates() {
        let p = build(
            "tasks:\n  - { id: a, title: A, run: 'echo hi' }\n  - { id: b, title: B, patch: patches/ok.diff, deps: [a], gates: [] }\n  - { id: c, title: C, backend: fmt, max_attempts: 1 }\n",
        )
        .unwrap();
        assert_eq!(
            p.tasks[0].backend,
            BackendChoice::Run {
                command: "echo hi".into()
            }
        );
        assert_eq!(p.tasks[0].gates, [GateName::new("test")]);
        assert_eq!(
            p.tasks[1].backend,
            BackendChoice::Patch {
                file: "dir/patches/ok.diff".into()
            }
        );
        assert!(p.tasks[1].gates.is_empty());
        assert_eq!(
            p.tasks[2].backend,
            BackendChoice::Named { name: "fmt".into() }
        );
        assert_eq!((p.tasks[2].max_attempts, p.tasks[0].max_attempts), (1, 3));
    }

    #[test]
    fn overlap() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let check = |a: &[&str], b: &[&str], want: bool| {
            assert_eq!(scopes_overlap(&s(a), &s(b)), want, "{a:?} {b:?}");
            assert_eq!(scopes_overlap(&s(b), &s(a)), want, "{b:?} {a:?}");
        };
        check(&["src/**"], &["src/models/**"], true);
        check(&["src/models/**"], &["tests/**"], false);
        check(&["src/a.rs"], &["src/*.rs"], true);
        check(&["src/a.rs"], &["src/b.rs"], false);
        check(&["src"], &["src/a.rs"], true);
        check(&["docs/**"], &["doc/**"], false);
        check(&["**"], &["anything"], true);
        check(&[], &["src/**"], false);
    }
}
