//! `abo plan`: a free-text ticket becomes a YAML backlog. The backend is asked for JSON matching
//! [`SCHEMA`]; what it answers is checked like any backlog (ids, types, dependencies, cycles)
//! before the user ever sees it.

use serde::{Deserialize, Serialize};

use crate::backlog::{TaskType, parse_yaml};
use crate::config::Config;
use crate::plan::Plan;

/// The JSON schema the backend's answer must follow.
pub const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["title", "tasks"],
  "properties": {
    "title": { "type": "string" },
    "tasks": {
      "type": "array",
      "items": {
        "type": "object",
        "required": ["id", "title", "type"],
        "properties": {
          "id": { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$" },
          "title": { "type": "string" },
          "type": { "enum": ["spec", "code", "test", "docs", "refactor", "review", "lint", "perf", "security", "dep_update", "chore"] },
          "description": { "type": "string" },
          "acceptance": { "type": "array", "items": { "type": "string" } },
          "paths": { "type": "array", "items": { "type": "string" } },
          "deps": { "type": "array", "items": { "type": "string" } }
        }
      }
    }
  }
}"#;

pub const SYSTEM: &str = "You are a senior engineer who splits tickets into small, independently testable coding tasks. You answer with one JSON object and nothing else.";

/// The question put to the backend.
pub fn prompt(ticket: &str, files: &[String]) -> String {
    let mut p = String::from(
        "Split this ticket into a backlog of small tasks (each a change of at most a few hundred lines), ordered by dependency.\n\n## Ticket\n\n",
    );
    p.push_str(ticket.trim());
    p.push_str("\n\n## Files in the repository\n\n");
    for f in files.iter().take(400) {
        p.push_str(&format!("- {f}\n"));
    }
    if files.len() > 400 {
        p.push_str(&format!("- ... and {} more\n", files.len() - 400));
    }
    p.push_str("\n## Answer\n\nOne JSON object matching this schema, with no other text. `paths` are globs relative to the repository root, the scope each task may change; `deps` name the ids of tasks that must land first.\n\n```json\n");
    p.push_str(SCHEMA);
    p.push_str("\n```\n");
    p
}

#[derive(Debug, Deserialize, Serialize)]
struct Doc {
    #[serde(default)]
    title: Option<String>,
    tasks: Vec<Item>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Item {
    id: String,
    title: String,
    #[serde(rename = "type")]
    kind: TaskType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    acceptance: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deps: Vec<String>,
}

#[derive(Serialize)]
struct Header {
    title: String,
}

#[derive(Serialize)]
struct Out<'a> {
    run: Header,
    tasks: &'a [Item],
}

/// The backlog YAML for an answer, or why the answer is rejected.
pub fn backlog(answer: &str, config: &Config) -> Result<String, String> {
    backlog_with(answer, config, &std::collections::BTreeMap::new())
}

/// [`prompt`], with the files abo's index ranks for the ticket, each with why.
pub fn prompt_with(ticket: &str, files: &[String], relevant: &[(String, String)]) -> String {
    let p = prompt(ticket, files);
    if relevant.is_empty() {
        return p;
    }
    let mut section = String::from(
        "## Files most relevant to the ticket (abo's index of the repository), and why\n\n",
    );
    for (f, why) in relevant {
        section.push_str(&format!("- {f}: {why}\n"));
    }
    section.push('\n');
    match p.find("## Answer") {
        Some(i) => format!("{}{section}{}", &p[..i], &p[i..]),
        None => p + &section,
    }
}

/// Each task of an answer that names no `paths`: its id and statement (title, description,
/// acceptance), for the index to suggest them.
pub fn unscoped(answer: &str) -> Vec<(String, String)> {
    let Some(doc) = extract_json(answer).and_then(|j| serde_json::from_str::<Doc>(j).ok()) else {
        return Vec::new();
    };
    doc.tasks
        .iter()
        .filter(|t| t.paths.is_empty())
        .map(|t| {
            let mut s = t.title.clone();
            if !t.description.is_empty() {
                s.push('\n');
                s.push_str(&t.description);
            }
            for a in &t.acceptance {
                s.push('\n');
                s.push_str(a);
            }
            (t.id.clone(), s)
        })
        .collect()
}

/// [`backlog`], with `paths` given to the tasks the answer left without (by id).
pub fn backlog_with(
    answer: &str,
    config: &Config,
    paths: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<String, String> {
    let json = extract_json(answer).ok_or("the answer holds no JSON object")?;
    let mut doc: Doc = serde_json::from_str(json)
        .map_err(|e| format!("the answer does not match the schema: {e}"))?;
    for t in &mut doc.tasks {
        if t.paths.is_empty()
            && let Some(p) = paths.get(&t.id)
        {
            t.paths = p.clone();
        }
    }
    if doc.tasks.is_empty() {
        return Err("the answer has no tasks".into());
    }
    let title = doc
        .title
        .clone()
        .unwrap_or_else(|| "Planned backlog".into());
    let yaml = serde_yaml::to_string(&Out {
        run: Header { title },
        tasks: &doc.tasks,
    })
    .map_err(|e| e.to_string())?;
    let text = format!("# Planned by `abo plan`: review before `abo run`.\n{yaml}");
    // Checked as any backlog would be. Tasks name no backend: the config's default or the router picks.
    let parsed = parse_yaml("plan", &text).map_err(|e| e.to_string())?;
    let mut lenient = config.clone();
    if lenient.backends.default.is_none() {
        lenient.backends.default = lenient.backends.named.keys().next().cloned();
    }
    if lenient.backends.default.is_none() {
        lenient.backends.named.insert(
            "plan".into(),
            crate::config::BackendConfig::Command { run: String::new() },
        );
        lenient.backends.default = Some("plan".into());
    }
    Plan::build(&[parsed], &lenient, &|_| true).map_err(|e| {
        e.0.iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(text)
}

/// The JSON object in an answer: a ```json fence, else the text from the first `{` to the last `}`.
fn extract_json(answer: &str) -> Option<&str> {
    if let Some(start) = answer.find("```json") {
        let rest = &answer[start + 7..];
        let end = rest.find("```").unwrap_or(rest.len());
        return Some(rest[..end].trim());
    }
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    (end > start).then(|| &answer[start..=end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::embedded_default()
    }

    #[test]
    fn a_valid_answer_becomes_a_backlog() {
        let answer = r#"Here you go:
```json
{"title": "Accounts", "tasks": [
  {"id": "user-model", "title": "Add the User model", "type": "code", "paths": ["src/models/**"], "acceptance": ["tests pass"]},
  {"id": "hashing", "title": "Hash passwords", "type": "code", "deps": ["user-model"], "description": "bcrypt"}
]}
```"#;
        let yaml = backlog(answer, &config()).unwrap();
        assert!(yaml.starts_with("# Planned by `abo plan`"));
        let b = parse_yaml("b.yml", &yaml).unwrap();
        assert_eq!(b.title.as_deref(), Some("Accounts"));
        assert_eq!(b.tasks[1].deps, ["user-model"]);
        assert_eq!(b.tasks[0].paths, ["src/models/**"]);
    }

    #[test]
    fn bad_answers_are_rejected_with_the_reason() {
        let check = |answer: &str, want: &str| {
            assert_eq!(backlog(answer, &config()).unwrap_err(), want, "{answer}")
        };
        check(
            "I think you should start with tests.",
            "the answer holds no JSON object",
        );
        check(r#"{"tasks": []}"#, "the answer has no tasks");
        check(
            r#"{"tasks": [{"id": "a", "title": "A", "type": "wish"}]}"#,
            "the answer does not match the schema: unknown variant `wish`, expected one of `spec`, `code`, `test`, `docs`, `refactor`, `review`, `lint`, `perf`, `security`, `dep_update`, `chore` at line 1 column 51",
        );
        check(
            r#"{"tasks": [{"id": "a", "title": "A", "type": "code", "deps": ["b"]}, {"id": "b", "title": "B", "type": "code", "deps": ["a"]}]}"#,
            "dependency cycle: a -> b -> a",
        );
        check(
            r#"{"tasks": [{"id": "a", "title": "A", "type": "code", "deps": ["zzz"]}]}"#,
            "task `a`: unknown dependency `zzz`",
        );
        check(
            r#"{"tasks": [{"id": "Bad Id", "title": "A", "type": "code"}]}"#,
            "invalid task id `Bad Id`",
        );
    }
}
