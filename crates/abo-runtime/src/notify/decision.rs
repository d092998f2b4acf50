//! What a notification of a waiting approval adds: the link to the task's page on the dashboard
//! (`notify.dashboard_url`), and for an agent's question (a `decision`) the question and its
//! options, each with the link that opens the page with that option chosen. The links are pages
//! (GET changes nothing): the page asks the person, logged in, to confirm, and the answer is a POST
//! with the session's CSRF token.

use serde_json::{Value, json};

use abo_core::decide::question::{Question, from_reasons};
use abo_core::event::{EventBody, StoredEvent};
use abo_core::state::ApprovalAction;

/// A waiting approval as a notification shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub approval: String,
    /// The agent's question, for a `decision`.
    pub question: Option<Question>,
    /// The task's page, when the dashboard's address is configured.
    pub url: Option<String>,
}

/// A path segment, percent-encoded (RFC 3986: unreserved characters kept).
fn segment(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

impl Waiting {
    /// The approval `e` asks for, if it asks for one.
    pub fn of(e: &StoredEvent, dashboard: Option<&str>) -> Option<Self> {
        let EventBody::TaskApprovalRequested {
            approval,
            action,
            reasons,
            ..
        } = &e.event.body
        else {
            return None;
        };
        let url = match (dashboard, &e.event.task) {
            (Some(base), Some(task)) => Some(format!(
                "{}/runs/{}/tasks/{}",
                base.trim_end_matches('/'),
                segment(e.event.run.as_str()),
                segment(task.as_str())
            )),
            _ => None,
        };
        Some(Self {
            approval: approval.clone(),
            question: (*action == ApprovalAction::Decision).then(|| from_reasons(reasons)),
            url,
        })
    }

    /// The page with option `n` (from 1) chosen, waiting for the person's confirmation.
    pub fn choose_url(&self, n: usize) -> Option<String> {
        self.url.as_ref().map(|u| format!("{u}?choose={n}#decide"))
    }

    /// The fields a JSON webhook's body gains: `url`, and `decision` for a question.
    pub fn json(&self) -> Value {
        let mut o = json!({ "url": self.url });
        if let Some(q) = &self.question {
            o["decision"] = json!({
                "approval": self.approval,
                "question": q.text,
                "options": q.options.iter().enumerate().map(|(i, text)| json!({
                    "n": i + 1,
                    "text": text,
                    "url": self.choose_url(i + 1),
                })).collect::<Vec<_>>(),
            });
        }
        o
    }

    /// The lines a Slack-compatible text gains, the agent's words escaped as Slack's markup
    /// requires (an agent's `<https://elsewhere|Approve>` is shown, not made a link).
    pub fn slack_lines(&self) -> String {
        let mut o = String::new();
        if let Some(q) = &self.question {
            o.push_str(&format!("\n> {}", super::slack_text(&q.text)));
            for (i, text) in q.options.iter().enumerate() {
                o.push_str(&format!("\n{}. {}", i + 1, super::slack_text(text)));
                if let Some(u) = self.choose_url(i + 1) {
                    o.push_str(&format!(" <{u}|choose {}>", i + 1));
                }
            }
        }
        if let Some(u) = &self.url {
            o.push_str(&format!(
                "\nDecide on the dashboard: <{u}#decide|{}>",
                self.approval
            ));
        }
        o
    }

    /// The lines an email's body starts with.
    pub fn text_lines(&self) -> String {
        let mut o = String::new();
        if let Some(q) = &self.question {
            o.push_str(&format!("The agent asks: {}\n\n", q.text));
            for (i, text) in q.options.iter().enumerate() {
                o.push_str(&format!("  {}. {text}\n", i + 1));
                if let Some(u) = self.choose_url(i + 1) {
                    o.push_str(&format!("     choose it: {u}\n"));
                }
            }
            o.push('\n');
        }
        match &self.url {
            Some(u) => o.push_str(&format!("Decide on the dashboard: {u}#decide\n\n")),
            None => o.push_str(&format!(
                "Decide with `abo decide {}` (set notify.dashboard_url for a link)\n\n",
                self.approval
            )),
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abo_core::event::Event;
    use abo_core::ids::{RunId, TaskId, Timestamp};
    use pretty_assertions::assert_eq;

    fn asked(options: &[&str]) -> StoredEvent {
        let q = Question {
            text: "Which <https://evil.example|Approve> database?".into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        };
        StoredEvent {
            seq: 7,
            event: Event {
                run: RunId::new("r 1"),
                task: Some(TaskId::new("t/2")),
                at: Timestamp(0),
                body: EventBody::TaskApprovalRequested {
                    attempt: 1,
                    approval: "r 1/t/2#1".into(),
                    action: ApprovalAction::Decision,
                    reasons: abo_core::decide::question::reasons(&q),
                },
            },
        }
    }

    #[test]
    fn a_decision_links_to_its_task_page_with_each_option() {
        let w = Waiting::of(
            &asked(&["sqlite", "postgres"]),
            Some("https://abo.example/"),
        )
        .unwrap();
        assert_eq!(
            w.url.as_deref(),
            Some("https://abo.example/runs/r%201/tasks/t%2F2")
        );
        assert_eq!(
            w.json()["decision"]["options"][1],
            json!({ "n": 2, "text": "postgres", "url": "https://abo.example/runs/r%201/tasks/t%2F2?choose=2#decide" })
        );
        let text = w.slack_lines();
        assert!(text.contains("\n2. postgres <https://abo.example/runs/r%201/tasks/t%2F2?choose=2#decide|choose 2>"), "{text}");
        // The agent's markup is shown, not made a link; the control: unescaped, it would be one.
        assert!(
            text.contains("&lt;https://evil.example|Approve&gt;"),
            "{text}"
        );
        assert!(!text.contains("<https://evil.example"), "{text}");
        assert!(
            format!("> {}", "Which <https://evil.example|Approve> database?")
                .contains("<https://evil.example")
        );
    }

    #[test]
    fn without_a_dashboard_address_the_text_names_the_command() {
        let w = Waiting::of(&asked(&["a"]), None).unwrap();
        assert_eq!(w.url, None);
        assert_eq!(w.json()["decision"]["options"][0]["url"], Value::Null);
        assert!(
            w.text_lines().contains("abo decide r 1/t/2#1"),
            "{}",
            w.text_lines()
        );
    }
}
