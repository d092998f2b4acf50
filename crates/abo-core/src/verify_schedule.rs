//! `landing.verify_schedule`: `abo daemon` runs `landing.verify` on the base branch's head on a
//! schedule, the pure half. Each verification is recorded in a log of its own per base branch
//! ([`log_id`]); [`Scheduled`] is folded from it, so one interrupted by a crash resumes where it
//! was. When the head fails, its first-parent commits since the last head that verified are
//! bisected as `crate::verify` bisects a run's (the same [`Verification`]); the first bad commit is
//! reverted when abo made it (a task's landing), and reported, never reverted, when a person did.
//! Under `landing.mode: pull-request` the revert is proposed instead ([`Proposed`]): the branch
//! still holds the bad commit, so its head is not verified again until it moves, and the task is
//! reverted once the revert is found on the branch.

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

/// A revert proposed as a pull request (`verify.proposed`), not yet found on the branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposed {
    pub commit: CommitSha,
    pub revert: CommitSha,
    /// The base branch's head the revert was made on: it reaches the branch after it.
    pub on: CommitSha,
    pub url: String,
    pub run: RunId,
    pub task: TaskId,
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
    /// The revert proposed last, until it is found on the branch (`verify.reverted`).
    pub proposed: Option<Proposed>,
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
        self.current.is_none()
            && self.good.as_ref() != Some(head)
            && self.seen.as_ref() != Some(head)
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
                commit,
                revert,
                by_task,
                ..
            } => match &mut self.current {
                // Made on the branch by this verification: the revert is verified next.
                Some(c) => {
                    c.verification.reverted(by_task, revert);
                    self.seen = Some(revert.clone());
                }
                // A proposed revert found on the branch (its pull request was merged): the head
                // it is on is new, and verified as any.
                None => {
                    if self.proposed.as_ref().is_some_and(|p| p.commit == *commit) {
                        self.proposed = None;
                    }
                }
            },
            // The branch's head still holds the bad commit: it is not taken for verified (`good`
            // stays), and being `seen`, it is not verified (nor proposed) again until it moves.
            EventBody::VerifyProposed {
                commit,
                revert,
                on,
                url,
                by_run,
                by_task,
                ..
            } => {
                self.current = None;
                self.proposed = Some(Proposed {
                    commit: commit.clone(),
                    revert: revert.clone(),
                    on: on.clone(),
                    url: url.clone(),
                    run: by_run.clone(),
                    task: by_task.clone(),
                });
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
                commit: c
                    .verification
                    .head()
                    .cloned()
                    .unwrap_or_else(|| CommitSha::new("")),
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

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::event::Event;
    use crate::ids::Timestamp;

    fn c(s: &str) -> CommitSha {
        CommitSha::new(s)
    }

    fn stored(bodies: Vec<EventBody>) -> Vec<StoredEvent> {
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| StoredEvent {
                seq: i as u64 + 1,
                event: Event {
                    run: log_id("main"),
                    task: None,
                    at: Timestamp(0),
                    body,
                },
            })
            .collect()
    }

    fn scheduled(head: &str, good: Option<&str>, commits: &[(&str, Option<&str>)]) -> EventBody {
        EventBody::VerifyScheduled {
            branch: "main".into(),
            head: c(head),
            good: good.map(c),
            commits: commits
                .iter()
                .map(|(sha, task)| BaseCommit {
                    commit: c(sha),
                    run: task.map(|_| RunId::new("r1")),
                    task: task.map(TaskId::new),
                })
                .collect(),
        }
    }

    fn verified(commit: &str, passed: bool) -> EventBody {
        EventBody::RunVerify {
            commit: c(commit),
            branch: Some("main".into()),
            passed,
            failed_gate: None,
            duration_ms: 1,
            log: None,
            reason: Some("gate `e2e` failed".into()),
        }
    }

    fn probed(commit: &str, passed: bool) -> EventBody {
        EventBody::RunBisect {
            step: 1,
            commit: c(commit),
            branch: Some("main".into()),
            passed,
            failed_gate: None,
            duration_ms: 1,
            log: None,
        }
    }

    #[test]
    fn the_first_look_verifies_the_head_and_a_failure_there_is_reported() {
        let s = Scheduled::fold("main", &[]);
        assert!(s.due(&c("m0")));
        let log = stored(vec![scheduled("m0", None, &[]), verified("m0", true)]);
        let s = Scheduled::fold("main", &log);
        assert_eq!((s.good.clone(), s.next()), (Some(c("m0")), Next::Idle));
        assert!(
            !s.due(&c("m0")),
            "a head that verified is not verified again"
        );
        // Failing on the first look: nothing verified before it, so reported.
        let log = stored(vec![scheduled("m0", None, &[]), verified("m0", false)]);
        let s = Scheduled::fold("main", &log);
        assert!(matches!(s.next(), Next::Report { commit, reason, .. }
            if commit == c("m0") && reason.contains("nothing verified before it")));
        let mut s = s;
        s.apply(&EventBody::VerifyReported {
            commit: c("m0"),
            reason: String::new(),
            log: None,
        });
        assert_eq!((s.next(), s.due(&c("m0"))), (Next::Idle, false));
        assert!(s.due(&c("m1")), "a new head is");
    }

    #[test]
    fn a_failure_is_bisected_back_to_the_last_good_head_and_abos_commit_reverted() {
        // m0 verified; then a person's p1, the task t's landing t2, a person's p3.
        let commits = [("p1", None), ("t2", Some("t")), ("p3", None)];
        let mut log = vec![
            scheduled("m0", None, &[]),
            verified("m0", true),
            scheduled("p3", Some("m0"), &commits),
            verified("p3", false),
        ];
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!(
            s.next(),
            Next::Verify {
                commit: c("p1"),
                bisect: true
            }
        );
        log.push(probed("p1", true));
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!(
            s.next(),
            Next::Verify {
                commit: c("t2"),
                bisect: true
            }
        );
        log.push(probed("t2", false));
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!(
            s.next(),
            Next::Revert {
                run: RunId::new("r1"),
                task: TaskId::new("t"),
                commit: c("t2"),
                head: c("p3"),
                reason: "gate `e2e` failed".into(),
                log: None,
            }
        );
        // A crash here: the fold from the log says the same (the revert is found made already).
        log.push(EventBody::VerifyReverted {
            commit: c("t2"),
            revert: c("r"),
            by_run: RunId::new("r1"),
            by_task: TaskId::new("t"),
        });
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!(
            s.next(),
            Next::Verify {
                commit: c("r"),
                bisect: false
            }
        );
        log.push(verified("r", true));
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!((s.good.clone(), s.next()), (Some(c("r")), Next::Idle));

        // The same bisect landing on a person's commit: reported, not reverted.
        let mut log = vec![
            scheduled("m0", None, &[]),
            verified("m0", true),
            scheduled("p3", Some("m0"), &commits),
            verified("p3", false),
            probed("p1", true),
            probed("t2", true),
        ];
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert!(matches!(s.next(), Next::Report { commit, .. } if commit == c("p3")));
        // Still failing after a revert: broken, not bisected again; the last good head stays.
        log.truncate(3);
        log.extend([
            verified("p3", false),
            probed("p1", true),
            probed("t2", false),
            EventBody::VerifyReverted {
                commit: c("t2"),
                revert: c("r"),
                by_run: RunId::new("r1"),
                by_task: TaskId::new("t"),
            },
            verified("r", false),
        ]);
        let s = Scheduled::fold("main", &stored(log));
        assert_eq!((s.good.clone(), s.next()), (Some(c("m0")), Next::Idle));
        assert!(!s.due(&c("r")));
    }

    /// Under pull requests: the revert is proposed, the head (still bad) is neither taken for
    /// verified nor looked at again; once the revert is found on the branch, the new head is
    /// verified and bisects, should it fail, from the last good head.
    #[test]
    fn a_proposed_revert_leaves_the_head_bad_until_it_is_found_on_the_branch() {
        let commits = [("p1", None), ("t2", Some("t"))];
        let proposed = EventBody::VerifyProposed {
            commit: c("t2"),
            revert: c("r"),
            revert_branch: "abo-revert/t2".into(),
            on: c("t2"),
            url: "https://forge/pull/1".into(),
            number: Some(1),
            by_run: RunId::new("r1"),
            by_task: TaskId::new("t"),
        };
        let mut log = vec![
            scheduled("m0", None, &[]),
            verified("m0", true),
            scheduled("t2", Some("m0"), &commits),
            verified("t2", false),
            probed("p1", true),
        ];
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert!(matches!(s.next(), Next::Revert { commit, .. } if commit == c("t2")));
        log.push(proposed);
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!(s.next(), Next::Idle);
        assert_eq!(s.good, Some(c("m0")), "the bad head is not verified");
        assert!(!s.due(&c("t2")), "nor looked at (or proposed) again");
        assert_eq!(
            s.proposed.as_ref().map(|p| &p.url),
            Some(&"https://forge/pull/1".to_owned())
        );
        // The pull request merged: main's head is the revert (a fast-forward), found there.
        assert!(s.due(&c("r")));
        log.push(EventBody::VerifyReverted {
            commit: c("t2"),
            revert: c("r"),
            by_run: RunId::new("r1"),
            by_task: TaskId::new("t"),
        });
        let s = Scheduled::fold("main", &stored(log.clone()));
        assert_eq!((s.proposed.clone(), s.next()), (None, Next::Idle));
        assert!(s.due(&c("r")), "the head holding the revert is verified");
        log.extend([
            scheduled(
                "r",
                Some("m0"),
                &[("p1", None), ("t2", Some("t")), ("r", None)],
            ),
            verified("r", true),
        ]);
        let s = Scheduled::fold("main", &stored(log));
        assert_eq!((s.good.clone(), s.next()), (Some(c("r")), Next::Idle));
    }

    #[test]
    fn another_branchs_events_are_not_folded() {
        let log = stored(vec![scheduled("m0", None, &[]), verified("m0", true)]);
        assert_eq!(Scheduled::fold("release", &log).good, None);
    }

    #[test]
    fn an_interval_or_a_cron_expression() {
        use crate::schedule::Every;
        assert_eq!(Every::parse("1s"), Ok(Every::Interval(1000)));
        assert!(matches!(Every::parse("0 3 * * *"), Ok(Every::Cron(_))));
        assert!(Every::parse("0s").is_err());
        assert!(Every::parse("soon").is_err());
        assert!(Every::parse("0 3 * *").is_err());
    }

    #[test]
    fn a_bad_schedule_in_abo_yml_is_located() {
        let parse = |landing: &str| {
            let text =
                format!("version: 1\ngates: [{{ name: e2e, run: 'true' }}]\nlanding: {landing}\n");
            crate::config::Config::parse("abo.yml", &text).map(|_| ())
        };
        assert!(parse("{ verify: [e2e], verify_schedule: 30m }").is_ok());
        for (landing, says) in [
            (
                "{ verify: [e2e], verify_schedule: soon }",
                "invalid duration `soon`",
            ),
            (
                "{ verify_schedule: 30m }",
                "needs gates in `landing.verify`",
            ),
        ] {
            let e = parse(landing).unwrap_err().to_string();
            assert!(
                e.contains("landing.verify_schedule") && e.contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn the_report_measures_the_time_to_restore_from_the_scheduled_failure() {
        let at = |run: &str, task: Option<&str>, ms: i64, body: EventBody| StoredEvent {
            seq: 0,
            event: Event {
                run: RunId::new(run),
                task: task.map(TaskId::new),
                at: Timestamp(ms),
                body,
            },
        };
        let events = [
            at("verify-main", None, 1_000, verified("t2", false)),
            at(
                "r1",
                Some("t"),
                4_000,
                EventBody::TaskReverted {
                    commit: c("t2"),
                    revert: c("r"),
                    branch: Some("main".into()),
                    reason: String::new(),
                    log: None,
                },
            ),
            at(
                "verify-main",
                None,
                4_000,
                EventBody::VerifyReverted {
                    commit: c("t2"),
                    revert: c("r"),
                    by_run: RunId::new("r1"),
                    by_task: TaskId::new("t"),
                },
            ),
        ];
        let r = crate::report::report(&events, Timestamp(0), Timestamp(10_000));
        assert_eq!(r.tasks_reverted, 1);
        assert_eq!(r.time_to_restore.count, 1);
    }
}
