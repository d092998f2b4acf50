//! Live progress: on a terminal, event lines above a redrawn footer (one line per running task,
//! totals); otherwise plain lines, one per event.

use std::io::{IsTerminal, Write};

use abo_core::event::{EventBody, RetryCause, StoredEvent};
use abo_core::state::{RunState, TaskStatus};
use abo_runtime::Observer;

pub(crate) struct Progress {
    out: Box<dyn Write + Send>,
    live: bool,
    footer_lines: usize,
    frame: usize,
}

impl Progress {
    /// Progress on stderr; live when stderr is a terminal.
    pub(crate) fn stderr() -> Self {
        let live = std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        Self {
            out: Box::new(std::io::stderr()),
            live,
            footer_lines: 0,
            frame: 0,
        }
    }

    /// A line of text: every line goes out here, its control characters shown escaped (the
    /// footer's own cursor movements are written by [`Progress::clear_footer`] alone).
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{}", crate::out::for_terminal(text));
    }

    fn clear_footer(&mut self) {
        if self.footer_lines > 0 {
            let _ = write!(self.out, "\x1b[{}A\x1b[J", self.footer_lines);
            self.footer_lines = 0;
        }
    }

    fn draw_footer(&mut self, state: &RunState) {
        if !self.live || state.status.is_terminal() || state.in_flight() == 0 {
            return;
        }

        const SPIN: [&str; 4] = ["|", "/", "-", "\\"];
        self.frame = self.frame.wrapping_add(1);
        let mut lines = Vec::new();
        for t in state.tasks_in_order() {
            let s = t.state.status();
            if matches!(s, TaskStatus::Running | TaskStatus::Verifying) {
                let backend = t.backend.as_ref().map(|b| b.as_str()).unwrap_or("-");
                lines.push(format!(
                    "  {} {:<24} {:<10} attempt {} ({backend})",
                    SPIN[self.frame % 4],
                    t.spec.id,
                    s,
                    t.attempt
                ));
            }
        }
        lines.push(format!(
            "  {} landed, {} running, {} waiting, {} failed, {} cancelled of {}",
            state.count(TaskStatus::Landed),
            state.in_flight(),
            state.count(TaskStatus::Pending) + state.count(TaskStatus::Ready),
            state.count(TaskStatus::Failed),
            state.count(TaskStatus::Cancelled),
            state.tasks.len(),
        ));
        for l in &lines {
            self.line(l);
        }
        self.footer_lines = lines.len();
    }
}

impl Observer for Progress {
    fn on_events(&mut self, state: &RunState, events: &[StoredEvent]) {
        self.clear_footer();
        for e in events {
            if let Some(line) = describe(e) {
                let time = e.event.at.to_datetime().format("%H:%M:%S");
                self.line(&format!("{time} {line}"));
            }
        }
        self.draw_footer(state);
        let _ = self.out.flush();
    }

    fn warn(&mut self, message: &str) {
        self.clear_footer();
        self.line(&format!("warning: {message}"));
    }

    fn tick(&mut self, state: &RunState) {
        if self.live {
            self.clear_footer();
            self.draw_footer(state);
            let _ = self.out.flush();
        }
    }
}

/// One line for an event, for people.
pub(crate) fn describe(e: &StoredEvent) -> Option<String> {
    let task = e.event.task.as_ref().map(|t| t.as_str()).unwrap_or("");
    let line = match &e.event.body {
        EventBody::RunCreated(spec) => format!(
            "run {} created: {} ({} tasks)",
            e.event.run,
            spec.title,
            spec.tasks.len()
        ),
        EventBody::RunStarted {} => format!("run {} started", e.event.run),
        EventBody::RunPaused { reason } => format!("run paused: {reason}"),
        EventBody::RunResumed { caps } if caps.is_empty() => "run resumed".into(),
        EventBody::RunResumed { caps } => {
            let mut raised = Vec::new();
            if let Some(u) = caps.usd {
                raised.push(format!("run.usd ${u:.2}"));
            }
            if let Some(t) = caps.tokens {
                raised.push(format!("run.tokens {t}"));
            }
            if let Some(w) = caps.wall_ms {
                raised.push(format!(
                    "run.wall {}",
                    abo_core::units::Dur(std::time::Duration::from_millis(w))
                ));
            }
            format!("run resumed with caps {}", raised.join(", "))
        }
        EventBody::RunFinished {
            landed,
            failed,
            cancelled,
            skipped,
        } => {
            format!(
                "run finished: {landed} landed, {failed} failed, {cancelled} cancelled, {skipped} skipped"
            )
        }
        EventBody::RunKilled { reason } => format!("run killed: {reason}"),
        EventBody::TaskReady {} => return None,
        EventBody::TaskStarted {
            attempt, backend, ..
        } => format!("{task}: attempt {attempt} started ({backend})"),
        EventBody::TaskBackendFinished {
            ok,
            files_changed,
            duration_ms,
            reason,
            usage,
            cost_usd,
            cost_source,
            ..
        } => {
            let mut spent = format!("{:.1}s", *duration_ms as f64 / 1000.0);
            if let Some(u) = usage {
                spent.push_str(&format!(", {} tokens", u.total()));
            }
            match (cost_usd, cost_source) {
                (Some(c), Some(src)) => spent.push_str(&format!(", ${c:.4} {src}")),
                (None, _) if usage.is_some() => spent.push_str(", cost unknown"),
                _ => {}
            }
            if *ok {
                format!("{task}: change ready ({files_changed} file(s), {spent})")
            } else {
                format!(
                    "{task}: backend failed ({spent}): {}",
                    reason.as_deref().unwrap_or("?")
                )
            }
        }
        EventBody::TaskCheck { attempt, check } => {
            let mut why: Vec<String> = check
                .failed_gates
                .iter()
                .map(|g| format!("gate {g} failed"))
                .collect();
            why.extend(check.deny.iter().cloned());
            why.extend(
                check
                    .require_approval
                    .iter()
                    .map(|r| format!("approval: {r}")),
            );
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join("; "))
            };
            format!(
                "{task}: attempt {attempt} check {}: {}{why}",
                check.n,
                check.outcome.as_str()
            )
        }
        EventBody::TaskGate {
            name,
            passed,
            stage,
            duration_ms,
            ..
        } => {
            let on = if *stage == abo_core::event::GateStage::Merged {
                " (merged)"
            } else {
                ""
            };
            let verdict = if *passed { "passed" } else { "FAILED" };
            format!(
                "{task}: gate {name}{on} {verdict} ({:.1}s)",
                *duration_ms as f64 / 1000.0
            )
        }
        EventBody::TaskLanded { commit, .. } => format!("{task}: landed {}", commit.short()),
        EventBody::TaskRetry {
            attempt,
            cause,
            reason,
            ..
        } => match cause {
            RetryCause::Failed => format!("{task}: retrying as attempt {attempt}: {reason}"),
            RetryCause::Interrupted => {
                format!("{task}: attempt {attempt} was interrupted; running it again")
            }
            RetryCause::Requested => format!("{task}: re-queued (attempt {attempt} next)"),
            RetryCause::Quota => format!("{task}: attempt {attempt} runs again: {reason}"),
            RetryCause::Answered => format!("{task}: answered; attempt {attempt} runs with it"),
        },
        EventBody::TaskQuestion {
            approval,
            question,
            options,
            ..
        } => {
            let choices: String = options
                .iter()
                .enumerate()
                .map(|(i, o)| format!(" [{}] {o}", i + 1))
                .collect();
            format!(
                "{task}: THE AGENT ASKS: {question}{choices}: abo decide {approval} --choose N | --answer TEXT"
            )
        }
        EventBody::TaskFailed { reason, .. } => format!("{task}: FAILED: {reason}"),
        EventBody::TaskCancelled { reason, .. } => format!("{task}: cancelled: {reason}"),
        EventBody::TaskPolicy {
            verdict,
            risk,
            deny,
            require_approval,
            duration_us,
            ..
        } => {
            let reasons: Vec<&String> = deny.iter().chain(require_approval).collect();
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    reasons
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            format!(
                "{task}: policy {} (risk {risk}, {duration_us} µs){why}",
                verdict.as_str()
            )
        }
        EventBody::TaskApprovalRequested {
            approval, action, ..
        } => {
            format!(
                "{task}: WAITING FOR APPROVAL ({}): abo approve {approval} --reason \"...\"",
                action.as_str()
            )
        }
        EventBody::RunMerge {
            into,
            outcome,
            reason,
            ..
        } => {
            let into = into.as_deref().unwrap_or("the base branch");
            match outcome.as_str() {
                "skipped" => format!("not merged into {into}: {reason}"),
                how => format!("merged into {into} ({how}): {reason}"),
            }
        }
        EventBody::TaskApproved { reason, .. } => format!("{task}: approved: {reason}"),
        EventBody::TaskRejected { reason, .. } => format!("{task}: rejected: {reason}"),
        EventBody::TaskDenied { reasons, .. } => format!("{task}: DENIED: {}", reasons.join("; ")),
        EventBody::RunVerify {
            commit,
            branch,
            passed: true,
            ..
        } => format!("landing.verify passed on {}{}", short(commit), on(branch)),
        EventBody::RunVerify {
            commit,
            branch,
            reason,
            ..
        } => format!(
            "landing.verify FAILED on {}{}: {}",
            short(commit),
            on(branch),
            reason.as_deref().unwrap_or("a gate failed")
        ),
        EventBody::RunBisect {
            step,
            commit,
            branch,
            passed,
            ..
        } => format!(
            "bisect step {step}{}: {} ({task}) {}",
            on(branch),
            short(commit),
            if *passed { "good" } else { "bad" }
        ),
        EventBody::TaskReverted {
            commit,
            revert,
            branch,
            reason,
            ..
        } => format!(
            "{task}: REVERTED {} as {}{} ({reason}); abo retry gives it a fresh attempt",
            short(commit),
            short(revert),
            on(branch)
        ),
        EventBody::TaskReview {
            attempt,
            reviewer,
            verdict,
            findings,
            error,
            ..
        } => match error {
            Some(e) => format!("{task}#{attempt}: review by {reviewer} FAILED: {e}"),
            None => format!(
                "{task}#{attempt}: review by {reviewer}: {verdict:?} ({} finding(s))",
                findings.len()
            ),
        },
        EventBody::TaskProposals {
            requested,
            attempts,
            short,
            ..
        } => {
            let list: Vec<String> = attempts
                .iter()
                .map(|a| format!("#{} on {}", a.attempt, a.backend))
                .collect();
            let mut line = format!(
                "{task}: {} of {requested} proposals started: {}",
                attempts.len(),
                list.join(", ")
            );
            if let Some(s) = short {
                line.push_str(&format!(" ({s})"));
            }
            line
        }
        EventBody::TaskHedge {
            hedge,
            backend,
            reason,
            ..
        } => format!("{task}: hedged with attempt {hedge} on {backend}: {reason}"),
        EventBody::TaskProposal {
            attempt,
            backend,
            outcome,
            reason,
            ..
        } => format!(
            "{task}#{attempt} ({backend}) {}: {reason}",
            outcome.as_str()
        ),
        EventBody::RunRevertFailed {
            commit,
            reason,
            branch,
        } => {
            format!(
                "{task}: the revert of {}{} failed: {reason}",
                short(commit),
                on(branch)
            )
        }
        EventBody::VerifyScheduled {
            branch,
            head,
            commits,
            ..
        } => format!(
            "landing.verify_schedule: verifying {branch} at {} ({} commit(s) since it last verified)",
            short(head),
            commits.len()
        ),
        EventBody::VerifyReverted {
            commit,
            revert,
            by_run,
            by_task,
        } => format!(
            "{} ({by_run} {by_task}) reverted on the base branch by {}",
            short(commit),
            short(revert)
        ),
        EventBody::VerifyProposed {
            commit,
            by_run,
            by_task,
            url,
            ..
        } => format!(
            "{} ({by_run} {by_task}) is the first bad commit: its revert is proposed as a pull request, {url}",
            short(commit)
        ),
        EventBody::VerifyReported { commit, reason, .. } => format!(
            "{} is the first bad commit and abo did not make it: reported, not reverted: {reason}",
            short(commit)
        ),
        EventBody::ReviewReserved {
            attempt,
            reviewer,
            reserved,
        } => format!(
            "{task}#{attempt}: review by {reviewer} reserved ${:.4}",
            reserved.usd.unwrap_or(0.0)
        ),
        EventBody::ReviewCharged {
            attempt,
            reviewer,
            usd,
            tokens,
            source,
            ..
        } => format!(
            "{task}#{attempt}: review by {reviewer} charged ${usd:.4}, {tokens} tokens ({source})"
        ),
        EventBody::RouterDecision { backend, rule, .. } => {
            format!("{task}: routed to {backend} ({rule})")
        }
        EventBody::BudgetCharged {
            attempt,
            usd,
            tokens,
            source,
            ..
        } => format!("{task}: attempt {attempt} charged ${usd:.4}, {tokens} tokens ({source})"),
        EventBody::BudgetAlert {
            cap, spent, limit, ..
        } => format!("BUDGET ALERT: {cap} at {spent:.2} of {limit:.2}"),
        EventBody::BudgetExhausted { cap, .. } => {
            format!("{task}: waits: the {cap} cap cannot hold its reservation")
        }
        EventBody::CacheHit {
            attempt, source, ..
        } => format!("{task}: attempt {attempt} reused the result of {source} (cache)"),
        EventBody::NotifySent {
            channel,
            target,
            event,
            ok,
            detail,
            ..
        } => format!(
            "notified {target} by {channel} of {event}: {}",
            if *ok {
                "delivered".to_owned()
            } else {
                format!("FAILED ({detail})")
            }
        ),
        EventBody::RunPullRequest { url, .. } => format!("pull request: {url}"),
        EventBody::BackendHeld {
            backend,
            until,
            reason,
        } => format!(
            "backend {backend} held until {}: {reason}",
            until.to_rfc3339()
        ),
        EventBody::BackendReleased { backend } => format!("backend {backend} released"),
        EventBody::Deploy(d) => crate::deploy::describe(d),
    };
    Some(line)
}

/// A commit's first 10 characters, as people read them.
/// ` (on BRANCH)` for `landing.verify` on the base branch after the merge; nothing on the run
/// branch.
fn on(branch: &Option<String>) -> String {
    branch
        .as_ref()
        .map(|b| format!(" (on {b})"))
        .unwrap_or_default()
}

fn short(c: &abo_core::ids::CommitSha) -> &str {
    c.as_str().get(..10).unwrap_or(c.as_str())
}
