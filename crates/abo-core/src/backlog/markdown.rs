//! The Markdown plan: `→ **[id]** Title` items with indented `- Key: value` bullets,
//! sorted into "Ready", "Pending" and "Not Ready" sections by their headings.

use std::collections::BTreeMap;

use super::{Backlog, BacklogTask, Section, TaskType};
use crate::diag::{InputError, InputErrors};

/// The section a heading opens, if it names one.
fn classify(heading: &str) -> Option<Section> {
    let h = heading.to_ascii_lowercase();
    if h.contains("not ready") {
        Some(Section::NotReady {
            reason: String::new(),
        })
    } else if h.contains("pending") {
        Some(Section::Pending)
    } else if h.contains("ready") {
        Some(Section::Ready)
    } else {
        None
    }
}

/// `→ **[id]** rest`, `- **[id]** rest`, `* **[id]**`, `1. **[id]**`: the id, the title and the item's column.
fn task_item(line: &str) -> Option<(String, String, usize)> {
    let col = line.len() - line.trim_start().len();
    let t = line.trim_start();
    let after_marker = ["→ ", "-> ", "- ", "* ", "+ "]
        .iter()
        .find_map(|m| t.strip_prefix(m))
        .or_else(|| {
            let digits = t.find(|c: char| !c.is_ascii_digit())?;
            (digits > 0).then(|| t[digits..].strip_prefix(". "))?
        })?
        .trim_start();
    let rest = after_marker.strip_prefix("**[")?;
    let (id, rest) = rest.split_once("]**")?;
    Some((id.trim().to_owned(), rest.trim().to_owned(), col))
}

/// `- Key: value` bullet under an item.
fn bullet(line: &str) -> Option<(String, String)> {
    let t = line.trim_start();
    let body = t.strip_prefix("- ").or_else(|| t.strip_prefix("* "))?;
    let (k, v) = body.split_once(':')?;
    let k = k.trim();
    (!k.is_empty() && k.len() <= 40).then(|| (k.to_owned(), v.trim().to_owned()))
}

fn list(v: &str) -> Vec<String> {
    let v = v.trim();
    if v.is_empty() || ["none", "-", "—", "n/a"].contains(&v.to_ascii_lowercase().as_str()) {
        return Vec::new();
    }
    v.split([',', ' '])
        .map(|s| s.trim().trim_matches(|c| c == '`' || c == '[' || c == ']'))
        .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("and"))
        .map(str::to_owned)
        .collect()
}

pub fn parse_markdown(file: &str, text: &str) -> Result<Backlog, InputErrors> {
    let lines: Vec<&str> = text.lines().collect();
    let has_sections = lines
        .iter()
        .any(|l| l.trim_start().starts_with('#') && classify(l).is_some());
    let mut title = None;
    let mut section: Option<Section> = if has_sections {
        None
    } else {
        Some(Section::Ready)
    };
    let mut section_reason = String::new();
    let mut tasks: Vec<BacklogTask> = Vec::new();
    let mut errors = Vec::new();
    // The task whose bullets and paragraph are being read.
    let mut open: Option<(BacklogTask, usize, Option<String>)> = None;

    let close = |open: &mut Option<(BacklogTask, usize, Option<String>)>,
                 tasks: &mut Vec<BacklogTask>,
                 section_reason: &str| {
        if let Some((mut t, _, reason)) = open.take() {
            if let Section::NotReady { reason: r } = &mut t.section {
                *r = reason
                    .or_else(|| (!section_reason.is_empty()).then(|| section_reason.to_owned()))
                    .unwrap_or_else(|| "listed under Not Ready".to_owned());
            }
            t.description = t.description.trim().to_owned();
            tasks.push(t);
        }
    };

    for (i, line) in lines.iter().enumerate() {
        let lineno = i + 1;
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            close(&mut open, &mut tasks, &section_reason);
            let heading = trimmed.trim_start_matches('#').trim();
            if title.is_none() && trimmed.starts_with("# ") {
                title = Some(heading.to_owned());
            }
            if let Some(s) = classify(heading) {
                section = Some(s);
                section_reason.clear();
            } else if has_sections && trimmed.starts_with("###") {
                section = None;
            }
            continue;
        }
        if let Some((id, item_title, col)) = task_item(line) {
            close(&mut open, &mut tasks, &section_reason);
            let sec = section.clone().unwrap_or(Section::NotReady {
                reason: "not under a Ready, Pending or Not Ready heading".to_owned(),
            });
            let not_in_section = section.is_none();
            let mut field_pos = BTreeMap::new();
            field_pos.insert("id".to_owned(), (lineno, col + 1));
            let t = BacklogTask {
                id,
                title: item_title,
                kind: TaskType::Code,
                description: String::new(),
                acceptance: Vec::new(),
                paths: Vec::new(),
                deps: Vec::new(),
                backend: None,
                run: None,
                patch: None,
                gates: None,
                labels: Vec::new(),
                autonomy: BTreeMap::new(),
                budget: None,
                max_attempts: None,
                priority: 0,
                section: sec,
                file: file.to_owned(),
                pos: (lineno, col + 1),
                field_pos,
            };
            let reason = not_in_section
                .then(|| "not under a Ready, Pending or Not Ready heading".to_owned());
            open = Some((t, col, reason));
            continue;
        }
        let Some((task, item_col, reason)) = open.as_mut() else {
            // Text right under a section heading explains the section ("These tasks cannot ...").
            if !trimmed.is_empty() && matches!(section, Some(Section::NotReady { .. })) {
                if !section_reason.is_empty() {
                    section_reason.push(' ');
                }
                section_reason.push_str(trimmed.trim_end_matches(':'));
            }
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        if trimmed.is_empty() {
            task.description.push('\n');
            continue;
        }
        if indent <= *item_col && (trimmed.starts_with("- ") || trimmed.starts_with("* ")) {
            // A sibling list item that is not a task ends the task.
            close(&mut open, &mut tasks, &section_reason);
            continue;
        }
        let col = indent + 3;
        match bullet(line).filter(|_| indent > *item_col) {
            Some((key, value)) => match key.to_ascii_lowercase().as_str() {
                "depends on" | "deps" | "dependencies" => {
                    task.deps = list(&value);
                    task.field_pos.insert("deps".into(), (lineno, col));
                    for j in 0..task.deps.len() {
                        task.field_pos.insert(format!("deps[{j}]"), (lineno, col));
                    }
                }
                "paths" => task.paths = list(&value),
                "type" => match TaskType::parse(&value) {
                    Some(k) => task.kind = k,
                    None => errors.push(
                        InputError::new(
                            file,
                            format!("task `{}`: unknown type `{value}`", task.id),
                        )
                        .at(Some((lineno, col)))
                        .hint(format!(
                            "one of: {}",
                            TaskType::ALL.map(TaskType::as_str).join(", ")
                        )),
                    ),
                },
                "backend" => {
                    task.backend = Some(value.trim_matches('`').to_owned());
                    task.field_pos.insert("backend".into(), (lineno, col));
                }
                "labels" => task.labels = list(&value),
                "reason" => *reason = Some(value),
                "status" | "estimated lines" | "tests defined" | "alignment score" => {
                    task.description.push_str(&format!("{key}: {value}\n"));
                }
                _ => task.description.push_str(&format!("{}\n", trimmed)),
            },
            None => {
                task.description.push_str(trimmed);
                task.description.push('\n');
            }
        }
    }
    close(&mut open, &mut tasks, &section_reason);
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    if tasks.is_empty() {
        return Err(InputError::new(file, "no tasks found")
            .hint("tasks are list items like `- **[task-id]** Title`")
            .into());
    }
    Ok(Backlog {
        file: file.to_owned(),
        title,
        profile: None,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const PLAN: &str = "\
# Accounts plan

## Task Queue

### Ready for Autonomous Execution ✅
These tasks can be executed safely without supervision:

→ **[task_3]** Add User model with email and password fields
  - Alignment score: 95/100
  - Estimated lines: 10
  - Paths: src/models/**, tests/**
  - Type: code
  - Status: READY

  The model lives in src/models/user.py.

→ **[task_5]** Add password hashing function
  - Depends on: task_3
  - Backend: fmt
  - Labels: low-risk, auth

### Pending Approval ⏳

- **[task_4]** Implement login endpoint
  - Depends on: task_3, task_5

### Not Ready ❌
These tasks cannot be executed autonomously:

- **[task_6]** Design database schema
  - Reason: Requires user input and architectural decisions

- **[task_7]** Add Stripe integration
";

    #[test]
    fn sections_and_fields() {
        let b = parse_markdown("PLAN.md", PLAN).unwrap();
        assert_eq!(b.title.as_deref(), Some("Accounts plan"));
        let got: Vec<_> = b
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t.section.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("task_3", Section::Ready),
                ("task_5", Section::Ready),
                ("task_4", Section::Pending),
                (
                    "task_6",
                    Section::NotReady {
                        reason: "Requires user input and architectural decisions".into()
                    }
                ),
                (
                    "task_7",
                    Section::NotReady {
                        reason: "These tasks cannot be executed autonomously".into()
                    }
                ),
            ]
        );
        let t3 = &b.tasks[0];
        assert_eq!(t3.title, "Add User model with email and password fields");
        assert_eq!(t3.paths, ["src/models/**", "tests/**"]);
        assert_eq!(t3.pos, (8, 1));
        assert!(
            t3.description
                .contains("The model lives in src/models/user.py."),
            "{}",
            t3.description
        );
        let t5 = &b.tasks[1];
        assert_eq!(t5.deps, ["task_3"]);
        assert_eq!(t5.backend.as_deref(), Some("fmt"));
        assert_eq!(t5.labels, ["low-risk", "auth"]);
        assert_eq!(t5.pos_of("deps[0]"), (18, 5));
        assert_eq!(b.tasks[2].deps, ["task_3", "task_5"]);
    }

    #[test]
    fn plain_list_without_sections_is_ready() {
        let b = parse_markdown(
            "p.md",
            "- **[a]** Do a\n- **[b]** Do b\n  - Depends on: a\n",
        )
        .unwrap();
        assert!(b.tasks.iter().all(|t| t.section == Section::Ready));
        assert_eq!(b.tasks[1].deps, ["a"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_markdown("p.md", "# nothing here\n")
                .unwrap_err()
                .to_string(),
            "p.md: no tasks found (hint: tasks are list items like `- **[task-id]** Title`)"
        );
        let e = parse_markdown("p.md", "- **[a]** A\n  - Type: cod\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.md:2:5: task `a`: unknown type `cod`"),
            "{e}"
        );
    }
}
