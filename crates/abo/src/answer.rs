//! `abo decide ID --choose N | --answer TEXT`: a person answers an agent's question (a `decision`
//! approval); the next attempt gets the answer as its feedback. The API's `answer` goes the same way.

use abo_core::decide::Command;
use abo_runtime::{Ctx, engine};
use abo_store::ApprovalRow;

use crate::cli::Cli;
use crate::commands::{env, executing};
use crate::exit::{self, Usage};
use crate::out::say;

/// The question and the options of a `decision` approval.
pub(crate) fn question_of(a: &ApprovalRow) -> (String, Vec<String>) {
    let q = abo_core::decide::question::from_reasons(&a.reasons);
    (q.text, q.options)
}

/// The answer as the next attempt reads it: the question, then the option chosen or the words.
pub(crate) fn answer_text(
    a: &ApprovalRow,
    choose: Option<usize>,
    answer: Option<&str>,
) -> anyhow::Result<String> {
    let (question, options) = question_of(a);
    let said = match (choose, answer.map(str::trim)) {
        (Some(n), _) => options.get(n.wrapping_sub(1)).cloned().ok_or_else(|| {
            Usage::new(format!(
                "--choose {n}: the question `{}` has {} option(s)",
                a.id,
                options.len()
            ))
            .hint(if options.is_empty() {
                "it offered none: answer with --answer TEXT".to_owned()
            } else {
                format!(
                    "choose 1 to {}, or answer with --answer TEXT",
                    options.len()
                )
            })
        })?,
        (None, Some(t)) if !t.is_empty() => t.to_owned(),
        _ => {
            return Err(Usage::new("an answer is required")
                .hint("give --choose N or --answer TEXT")
                .into());
        }
    };
    Ok(format!("{question} Answer: {said}"))
}

/// Answers a pending decision (by its id, or a task id with one pending): through the process
/// executing its run (`true`), or directly.
pub(crate) async fn request_answer(
    ctx: &Ctx,
    id: &str,
    choose: Option<usize>,
    answer: Option<&str>,
) -> anyhow::Result<(ApprovalRow, bool)> {
    let pending = ctx.store.pending_approvals().await?;
    let matching: Vec<&ApprovalRow> = pending
        .iter()
        .filter(|a| a.action == "decision" && (a.id == id || a.task.as_str() == id))
        .collect();
    let a = match matching.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(
                Usage::new(format!("no agent's question `{id}` waits for an answer"))
                    .hint("`abo approvals` lists them (action `decision`)")
                    .into(),
            );
        }
        _ => {
            return Err(Usage::new(format!("`{id}` names several questions"))
                .hint("give the approval's id")
                .into());
        }
    };
    let text = answer_text(&a, choose, answer)?;
    if executing(&ctx.store, &a.run, ctx.now()).await? {
        let arg = serde_json::json!({ "approval": a.id, "answer": text }).to_string();
        ctx.store
            .push_request(&a.run, "answer", &arg, ctx.now())
            .await?;
        return Ok((a, true));
    }
    engine::decide_offline(
        ctx,
        &a.run,
        Command::Answer {
            approval: a.id.clone(),
            answer: text,
        },
    )
    .await?;
    Ok((a, false))
}

pub(crate) async fn decide(
    cli: &Cli,
    id: &str,
    choose: Option<usize>,
    answer: Option<&str>,
) -> anyhow::Result<u8> {
    let env = env(cli).await?;
    let (a, sent) = request_answer(&env.ctx, id, choose, answer).await?;
    if sent {
        say!(
            "the answer to {} was sent to the process executing run {}",
            a.id,
            a.run
        );
    } else {
        say!(
            "answered {} ({}); continue the run with: abo resume {}",
            a.id,
            a.task,
            a.run
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abo_core::ids::{RunId, TaskId, Timestamp};

    #[test]
    fn an_answer_by_number_or_in_words() {
        let a = ApprovalRow {
            id: "r/t/1".into(),
            run: RunId::new("r"),
            task: TaskId::new("t"),
            action: "decision".into(),
            reasons: vec![
                "the agent asks: Which roles first?".into(),
                "option 1: Admin".into(),
                "option 2: Viewer: read only".into(),
            ],
            created_at: Timestamp(0),
            status: "pending".into(),
        };
        assert_eq!(
            question_of(&a),
            (
                "Which roles first?".to_owned(),
                vec!["Admin".to_owned(), "Viewer: read only".to_owned()]
            )
        );
        assert_eq!(
            answer_text(&a, Some(2), None).unwrap(),
            "Which roles first? Answer: Viewer: read only"
        );
        assert_eq!(
            answer_text(&a, None, Some(" both ")).unwrap(),
            "Which roles first? Answer: both"
        );
        assert!(
            answer_text(&a, Some(3), None)
                .unwrap_err()
                .to_string()
                .contains("2 option(s)")
        );
        assert!(answer_text(&a, Some(0), None).is_err());
        assert!(answer_text(&a, None, Some("  ")).is_err());
    }
}
