//! The YAML backlog.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Backlog, BacklogTask, Section, TaskBudget, TaskType};
use crate::diag::{InputError, PathSeg, from_yaml_error, locate};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    run: Option<RunHeader>,
    tasks: Vec<RawTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunHeader {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: String,
    title: String,
    #[serde(rename = "type", default)]
    kind: TaskType,
    #[serde(default)]
    description: String,
    #[serde(default)]
    acceptance: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    deps: Vec<String>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    gates: Option<Vec<String>>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    autonomy: BTreeMap<String, String>,
    #[serde(default)]
    budget: Option<TaskBudget>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    priority: i64,
}

pub fn parse_yaml(file: &str, text: &str) -> Result<Backlog, InputError> {
    let parsed: File = serde_yaml::from_str(text).map_err(|e| from_yaml_error(file, text, &e))?;
    let tasks = parsed
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let base = [PathSeg::key("tasks"), PathSeg::Index(i)];
            let at = |extra: &[PathSeg]| {
                let path: Vec<PathSeg> = base.iter().chain(extra).cloned().collect();
                locate(text, &path)
            };
            let pos = at(&[]).unwrap_or((1, 1));
            let mut field_pos = BTreeMap::new();
            for field in [
                "id",
                "deps",
                "backend",
                "run",
                "patch",
                "gates",
                "max_attempts",
            ] {
                if let Some(p) = at(&[PathSeg::key(field)]) {
                    field_pos.insert(field.to_owned(), p);
                }
            }
            for (list, len) in [
                ("deps", t.deps.len()),
                ("gates", t.gates.as_ref().map_or(0, Vec::len)),
            ] {
                for j in 0..len {
                    if let Some(p) = at(&[PathSeg::key(list), PathSeg::Index(j)]) {
                        field_pos.insert(format!("{list}[{j}]"), p);
                    }
                }
            }
            BacklogTask {
                id: t.id,
                title: t.title,
                kind: t.kind,
                description: t.description,
                acceptance: t.acceptance,
                paths: t.paths,
                deps: t.deps,
                backend: t.backend,
                run: t.run,
                patch: t.patch,
                gates: t.gates,
                labels: t.labels,
                autonomy: t.autonomy,
                budget: t.budget,
                max_attempts: t.max_attempts,
                priority: t.priority,
                section: Section::Ready,
                file: file.to_owned(),
                pos,
                field_pos,
            }
        })
        .collect();
    let (title, profile) = parsed.run.map_or((None, None), |r| (r.title, r.profile));
    Ok(Backlog {
        file: file.to_owned(),
        title,
        profile,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_yaml("b.yml", text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_design_example() {
        let b = parse_yaml("b.yml", include_str!("../../tests/data/design-backlog.yml")).unwrap();
        assert_eq!(b.title.as_deref(), Some("User accounts"));
        let t = &b.tasks[0];
        assert_eq!(t.id, "user-model");
        assert_eq!(t.kind, TaskType::Code);
        assert_eq!(t.paths, ["src/models/**", "tests/**"]);
        assert_eq!(
            t.gates.as_deref(),
            Some(&["fmt".to_owned(), "test".to_owned()][..])
        );
        assert_eq!(t.priority, 10);
        assert_eq!(t.pos, (3, 3));
        assert_eq!(t.pos_of("backend"), (11, 5));
        assert_eq!(t.pos_of("patch"), (13, 5));
    }

    #[test]
    fn errors_are_located() {
        assert_eq!(
            err("tasks:\n  - id: a\n    titel: A\n"),
            "b.yml:3:5: unknown key `tasks[0].titel` (hint: did you mean `title`?)"
        );
        assert_eq!(
            err("tasks:\n  - id: a\n    title: A\n    type: cod\n"),
            "b.yml:4:11: `tasks[0].type`: unknown value `cod` (hint: did you mean `code`? one of: spec, code, test, docs, refactor, review, lint, perf, security, dep_update, chore)"
        );
        assert_eq!(
            err("tasks:\n  - id: a\n    title: 'x\n"),
            "b.yml:4:1: found unexpected end of stream, while scanning a quoted scalar"
        );
        assert!(
            err("tasks:\n  - id: a\n").starts_with("b.yml:2:5: `tasks[0]`: missing field `title`")
        );
    }
}
