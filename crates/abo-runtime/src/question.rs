//! An agent that asked instead of finishing: Claude Code's `AskUserQuestion` tool call, Codex's
//! `request_user_input` (`codex exec` answers that call itself and prints no function call: its
//! question arrives as the reply), or a final reply that is a question. Read from the attempt's
//! transcript (as stored, redacted) when the attempt made no change; the task then waits for a
//! person's answer.

use serde_json::Value;

use abo_core::decide::question::Question;

/// A question is kept to this many characters, each option to [`OPTION_CHARS`], and at most
/// [`OPTIONS`] options: the agent writes them, and they go into an event, the dashboard's buttons
/// and every notification.
pub const TEXT_CHARS: usize = 4_000;
pub const OPTION_CHARS: usize = 200;
pub const OPTIONS: usize = 12;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut o: String = s.chars().take(max - 1).collect();
    o.push('…');
    o
}

/// The question as kept: bounded.
fn bounded(q: Question) -> Question {
    Question {
        text: cut(&q.text, TEXT_CHARS),
        options: q
            .options
            .iter()
            .take(OPTIONS)
            .map(|o| cut(o, OPTION_CHARS))
            .collect(),
    }
}

/// The questions of a tool call's input: `{questions: [{question, options: [{label}] | [text]}]}`
/// or `{question, options}`.
fn from_input(input: &Value) -> Option<Question> {
    let q = match input.get("questions").and_then(Value::as_array) {
        Some(list) => list.first()?,
        None => input,
    };
    let text = q.get("question").and_then(Value::as_str)?.trim().to_owned();
    if text.is_empty() {
        return None;
    }
    let options = q
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| {
            o.as_str()
                .or_else(|| o.get("label").and_then(Value::as_str))
                .map(str::to_owned)
        })
        .collect();
    Some(Question { text, options })
}

/// A tool call asking the user, anywhere in one JSON value.
fn in_value(v: &Value) -> Option<Question> {
    match v {
        Value::Object(m) => {
            let name = m
                .get("name")
                .or_else(|| m.get("tool"))
                .and_then(Value::as_str);
            if matches!(name, Some("AskUserQuestion" | "request_user_input")) {
                let input = m.get("input").or_else(|| m.get("arguments"));
                let parsed = match input {
                    Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
                    Some(v) => Some(v.clone()),
                    None => None,
                };
                if let Some(q) = parsed.as_ref().and_then(from_input) {
                    return Some(q);
                }
            }
            m.values().find_map(in_value)
        }
        Value::Array(a) => a.iter().find_map(in_value),
        _ => None,
    }
}

/// The question an attempt ended on, if any: the last tool call asking the user in its transcript,
/// else its final message when that is a question.
pub fn find(transcript: &str, final_message: Option<&str>) -> Option<Question> {
    let asked = transcript
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find_map(|v| in_value(&v));
    asked
        .or_else(|| {
            let m = final_message?.trim();
            (m.ends_with('?') && m.len() > 1).then(|| Question {
                text: m.to_owned(),
                options: Vec::new(),
            })
        })
        .map(bounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_from_each_agent_and_from_a_reply() {
        let claude = r#"{"type":"system","subtype":"init"}
{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"AskUserQuestion","input":{"questions":[{"question":"Which roles first?","header":"Roles","multiSelect":false,"options":[{"label":"Admin","description":"a"},{"label":"Viewer","description":"b"}]}]}}]}}
{"type":"result","subtype":"success","result":"I need to know which roles to add first."}"#;
        assert_eq!(
            find(claude, Some("I need to know which roles to add first.")),
            Some(Question {
                text: "Which roles first?".into(),
                options: vec!["Admin".into(), "Viewer".into()]
            })
        );
        let codex = r#"{"type":"item.completed","item":{"type":"function_call","name":"request_user_input","arguments":"{\"questions\":[{\"question\":\"Keep the old API?\",\"options\":[\"yes\",\"no\"]}]}"}}"#;
        assert_eq!(
            find(codex, None),
            Some(Question {
                text: "Keep the old API?".into(),
                options: vec!["yes".into(), "no".into()]
            })
        );
        assert_eq!(
            find("plain output", Some("Should the table be partitioned?")),
            Some(Question {
                text: "Should the table be partitioned?".into(),
                options: vec![]
            })
        );
        assert_eq!(find("plain output", Some("Done.")), None);
        assert_eq!(find("", None), None);
    }

    /// The attack: a question of a megabyte with a thousand options, each of a kilobyte. What is
    /// kept is bounded; the control, the tool call's input as parsed, holds it all.
    #[test]
    fn a_question_is_kept_bounded() {
        let options: Vec<String> = (0..1000)
            .map(|i| format!("{i}{}", "o".repeat(1024)))
            .collect();
        let input = serde_json::json!({ "questions": [{ "question": "q".repeat(1 << 20), "options": options }] });
        let line = serde_json::json!({ "type": "assistant", "message": { "content": [{ "type": "tool_use", "name": "AskUserQuestion", "input": input }] } });
        let q = find(&line.to_string(), None).unwrap();
        assert_eq!(q.text.chars().count(), TEXT_CHARS);
        assert_eq!(q.options.len(), OPTIONS);
        assert!(q.options.iter().all(|o| o.chars().count() == OPTION_CHARS));
        assert!(q.options[0].starts_with('0') && q.text.ends_with('…'));

        let whole = from_input(&input).unwrap();
        assert_eq!((whole.text.len(), whole.options.len()), (1 << 20, 1000));
    }
}
