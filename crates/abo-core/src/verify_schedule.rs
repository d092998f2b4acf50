//! `landing.verify_schedule`: `abo daemon` runs `landing.verify` on the base branch's head on a
//! schedule, the pure half. Each verification is recorded in a log of its own per base branch
//! ([`log_id`]); [`Scheduled`] is folded from it, so one interrupted by a crash resumes where it
//! was. When the head fails, its first-parent commits since the last head that verified are
//! bisected as `crate::verify` bisects a run's (the same [`Verification`]); the first bad commit is
//! reverted when abo made it (a task's landing), and reported, never reverted, when a person did.

use serde::{Deserialize, Serialize};

use crate::event::{EventBody, StoredEvent};
use crate::ids::{ArtifactId, CommitSha, RunId, TaskId};
use crate::verify::{self, Step, Verification};

/// One first-parent commit of the base branch, and the task whose landing it is (abo made it:
/// its `Abo-Run`/`Abo-Task` trailers name a task that landed as this very commit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseCommit {
    pub commit: CommitSha,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
}

/// The log of the scheduled verifications of `branch`.
pub fn log_id(branch: &str) -> RunId {
    RunId::new(format!("verify-{}", branch.replace('/', "-")))
}

/// The verification in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub commits: Vec<BaseCommit>,
    pub verification: Verification,
}

/// The scheduled verifications of one base branch, folded from their log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scheduled {
    pub branch: String,
    /// The last head that verified: where the next bisect starts.
    pub good: Option<CommitSha>,
    /// The last head looked at (verified, reverted, or reported): not verified again.
    pub seen: Option<CommitSha>,
    pub current: Option<Current>,
}

/// What the scheduled verification needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing in progress: start one when the head is neither `good` nor `seen`.
    Idle,
    /// Run the verify gates on the head (`bisect` false) or on a bisect step.
    Verify { commit: CommitSha, bisect: bool },
    /// The first bad commit is a task's landing: revert it on the base branch.
    Revert {
        run: RunId,
        task: TaskId,
        commit: CommitSha,
        head: CommitSha,
        reason: String,
        log: Option<ArtifactId>,
    },
    /// The first bad commit was not made by abo: report it.
    Report {
        commit: CommitSha,
        reason: String,
        log: Option<ArtifactId>,
    },
}

impl Scheduled {
    pub fn fold(branch: &str, log: &[StoredEvent]) -> Self {
        let mut s = Self {
            branch: branch.to_owned(),
            ..Self::default()
        };
        for e in log {
            s.apply(&e.event.body);
        }
        s
    }

    /// Whether a verification of `head` is due (none in progress, and `head` is new).
    pub fn due(&self, head: &CommitSha) -> bool {
        self.current.is_none() && self.good.as_ref() != Some(head) && self.seen.as_ref() != Some(head)
    }

    pub fn apply(&mut self, body: &EventBody) {
        match body {
            EventBody::VerifyScheduled {
                branch,
                head,
                commits,
                ..
            } if *branch == self.branch => {
                let mut verification = Verification {
                    history: commits
                        .iter()
                        .map(|c| Step {
                            task: c.task.clone().unwrap_or_else(|| TaskId::new("")),
                            commit: c.commit.clone(),
                            revert: false,
                        })
                        .collect(),
                    ..Verification::default()
                };
                if verification.head() != Some(head) {
                    verification.tip = Some(head.clone());
                }
                self.seen = Some(head.clone());
                self.current = Some(Current {
                    commits: commits.clone(),
                    verification,
                });
            }
            EventBody::RunVerify {
                commit,
                branch: Some(b),
                passed,
                log,
                reason,
                ..
            } if *b == self.branch => {
                let Some(c) = &mut self.current else { return };
                let why = reason.as_deref().unwrap_or("landing.verify failed");
                c.verification.verified(commit, *passed, log.clone(), why);
                match &c.verification.phase {
                    verify::Phase::Passed => {
                        self.good = Some(commit.clone());
                        self.current = None;
                    }
                    verify::Phase::Broken { .. } => self.current = None,
                    _ => {}
                }
            }
            EventBody::RunBisect {
                commit,
                branch: Some(b),
                passed,
                ..
            } if *b == self.branch => {
                if let Some(c) = &mut self.current {
                    c.verification.probed(commit, *passed);
                }
            }
            EventBody::VerifyReverted {
                revert, by_task, ..
            } => {
                if let Some(c) = &mut self.current {
                    c.verification.reverted(by_task, revert);
                }
                self.seen = Some(revert.clone());
            }
            EventBody::VerifyReported { .. } => self.current = None,
            EventBody::RunRevertFailed {
                branch: Some(b), ..
            } if *b == self.branch => self.current = None,
            _ => {}
        }
    }

    /// What comes next.
    pub fn next(&self) -> Next {
        let Some(c) = &self.current else {
            return Next::Idle;
        };
        // The head fails with nothing verified before it (the schedule's first look): there is
        // nothing to bisect, so it is reported.
        if let verify::Phase::Bisecting { reason, log, .. } = &c.verification.phase
            && c.verification.history.is_empty()
        {
            return Next::Report {
                commit: c.verification.head().cloned().unwrap_or_else(|| CommitSha::new("")),
                reason: format!("{reason} (nothing verified before it to bisect back to)"),
                log: log.clone(),
            };
        }
        match c.verification.next(true) {
            verify::Next::Done | verify::Next::Broken { .. } => Next::Idle,
            verify::Next::Verify { commit } => Next::Verify {
                commit,
                bisect: false,
            },
            verify::Next::Probe { commit, .. } => Next::Verify {
                commit,
                bisect: true,
            },
            verify::Next::Revert {
                commit,
                head,
                reason,
                log,
                ..
            } => {
                let by = c
                    .commits
                    .iter()
                    .find(|b| b.commit == commit)
                    .and_then(|b| Some((b.run.clone()?, b.task.clone()?)));
                match by {
                    Some((run, task)) => Next::Revert {
                        run,
                        task,
                        commit,
                        head,
                        reason,
                        log,
                    },
                    None => Next::Report {
                        commit,
                        reason,
                        log,
                    },
                }
            }
        }
    }
}
