//! An agent's question: the task waits as a `decision` approval carrying the question and the
//! choices offered; a person's answer is the next attempt's feedback (it uses up none of the
//! task's attempts), and skipping it denies the task as a rejection does.

use serde::{Deserialize, Serialize};

use super::{Ctx, Rejected, rejected};
use crate::event::{EventBody, RetryCause};
use crate::ids::TaskId;
use crate::state::{ApprovalAction, TaskState};

/// What the agent asked, and the options it offered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub text: String,
    #[serde(default)]
    pub options: Vec<String>,
}

const ASKS: &str = "the agent asks: ";

/// The reasons a `decision` approval carries: the question, then each option.
pub fn reasons(q: &Question) -> Vec<String> {
    let mut out = vec![format!("{ASKS}{}", q.text)];
    out.extend(
        q.options
            .iter()
            .enumerate()
            .map(|(i, o)| format!("option {}: {o}", i + 1)),
    );
    out
}

/// The question back from a `decision` approval's reasons.
pub fn from_reasons(reasons: &[String]) -> Question {
    Question {
        text: reasons
            .first()
            .map(|r| r.strip_prefix(ASKS).unwrap_or(r).to_owned())
            .unwrap_or_default(),
        options: reasons
            .iter()
            .skip(1)
            .filter_map(|r| {
                r.strip_prefix("option ")?
                    .split_once(": ")
                    .map(|(_, o)| o.to_owned())
            })
            .collect(),
    }
}

/// The attempt ended with a question: the task waits for a person.
pub(super) fn ask(cx: &mut Ctx<'_>, task: &TaskId, attempt: u32, q: Question) {
    let approval = cx.attempt(task, attempt).to_string();
    cx.emit(
        Some(task),
        EventBody::TaskQuestion {
            attempt,
            approval: approval.clone(),
            question: q.text.clone(),
            options: q.options.clone(),
        },
    );
    let reasons = reasons(&q);
    cx.emit(
        Some(task),
        EventBody::TaskApprovalRequested {
            attempt,
            approval,
            action: ApprovalAction::Decision,
            reasons,
        },
    );
    cx.effect(super::Effect::Cleanup {
        attempt: cx.attempt(task, attempt),
        keep: false,
    });
}

/// A person answered: the task runs again with the answer as its feedback.
pub(super) fn answer(cx: &mut Ctx<'_>, approval: &str, answer: String) -> Result<(), Rejected> {
    let found = cx.state.tasks_in_order().find_map(|t| match &t.state {
        TaskState::AwaitingApproval {
            attempt,
            approval: id,
            action: ApprovalAction::Decision,
        } if id == approval || t.spec.id.as_str() == approval => {
            Some((t.spec.id.clone(), *attempt, id.clone()))
        }
        _ => None,
    });
    let Some((task, attempt, id)) = found else {
        return Err(Rejected::UnknownApproval {
            run: cx.state.id.to_string(),
            approval: approval.to_owned(),
        });
    };
    if cx.state.status.is_terminal() {
        return Err(rejected(cx.state, "answered"));
    }
    cx.emit(
        Some(&task),
        EventBody::TaskApproved {
            approval: id,
            reason: format!("answered: {answer}"),
        },
    );
    cx.emit(
        Some(&task),
        EventBody::TaskRetry {
            attempt: attempt + 1,
            cause: RetryCause::Answered,
            reason: format!("A person answered the question attempt {attempt} asked: {answer}"),
            log: None,
            kept_worktree: None,
        },
    );
    Ok(())
}
