//! Integration that heals, the pure half: `landing.verify` names gates that run on the whole run
//! branch once its tasks landed. When they fail, the run's commits are bisected (`git bisect run`
//! semantics: the last verified state is good, the head is bad, each probe halves the range), the
//! first bad commit is reverted on the run branch, and the branch is verified again.
//!
//! [`Verification`] is folded from events (`task.landed`, `run.verify`, `run.bisect`,
//! `task.reverted`, `run.revert_failed`), so a bisect interrupted by a crash resumes where it was;
//! [`Verification::next`] says what comes next. The git work (worktrees, gates, the revert commit)
//! is the runtime's.

use serde::{Deserialize, Serialize};

use crate::ids::{ArtifactId, CommitSha, GateName, TaskId};

/// One commit abo put on the run branch, in order: a task's landing, or the revert of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub task: TaskId,
    pub commit: CommitSha,
    pub revert: bool,
}

/// Where the run branch's verification is. Positions count the run branch's states: 0 is the
/// run's base, `p` the branch after its `p`-th commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// The branch moved since it was last verified (or was never verified).
    #[default]
    Unverified,
    /// The verify gates passed on the head.
    Passed,
    /// The verify gates failed on the head: the first bad state is after `lo` (good) and at or
    /// before `hi` (bad). `log` is the failing verify's log, the reverted task's feedback.
    Bisecting {
        lo: usize,
        hi: usize,
        log: Option<ArtifactId>,
        reason: String,
        /// Bisect steps made so far.
        steps: u32,
    },
    /// The branch fails its verify gates and abo does not heal it (it failed again after a
    /// revert, the first bad commit is itself a revert, or the revert could not be made).
    Broken { reason: String },
}

/// The run branch's history as abo made it, and its verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    pub history: Vec<Step>,
    /// The last position verified good (0: the base, taken as good as `git bisect` takes its
    /// good commit).
    pub good: usize,
    pub phase: Phase,
    /// A revert was made since the last landing: a failure now is not bisected again.
    pub reverted_since_landing: bool,
    /// The commit standing for the last state when it is not the last step's own: on the base
    /// branch, the merge commit that brought the run's commits in.
    pub tip: Option<CommitSha>,
}

/// `landing.verify` on the base branch after the run's end merged into it: the run's commits as
/// merged, bisected the same way. With a merge commit, the `k`-th state is the base as it was
/// (`onto`) with the run's first `k` commits merged in; the last state is the merge commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseHeal {
    /// The base branch.
    pub branch: String,
    /// The base branch's head before a merge commit (none after a fast-forward, where each of
    /// the run's commits is itself a state of the base branch).
    pub onto: Option<CommitSha>,
    pub verification: Verification,
}

impl BaseHeal {
    /// The base branch now at `merged`, which holds `run`'s history (the run branch's own).
    pub fn new(
        branch: &str,
        merged: &CommitSha,
        onto: Option<CommitSha>,
        run: &Verification,
    ) -> Self {
        let mut verification = Verification {
            history: run.history.clone(),
            ..Verification::default()
        };
        if verification.head() != Some(merged) {
            verification.tip = Some(merged.clone());
        }
        Self {
            branch: branch.to_owned(),
            onto,
            verification,
        }
    }

    /// Whether nothing is left to do on the base branch: it passed, or stays broken.
    pub fn settled(&self) -> bool {
        matches!(
            self.verification.next(true),
            Next::Done | Next::Broken { .. }
        )
    }
}

/// Where a verify, bisect step or revert of the base branch happens (none: the run branch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnBase {
    pub branch: String,
    /// A bisect step's commit is verified merged onto this commit (see [`BaseHeal`]).
    pub onto: Option<CommitSha>,
}

/// What the run's verification needs next, once nothing else is in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing to verify, or the head passed: the run may finish.
    Done,
    /// Run the verify gates on the head.
    Verify { commit: CommitSha },
    /// A bisect step: run the verify gates on this commit.
    Probe { task: TaskId, commit: CommitSha },
    /// The bisect found the first bad commit: revert it on the run branch.
    Revert {
        task: TaskId,
        commit: CommitSha,
        head: CommitSha,
        reason: String,
        log: Option<ArtifactId>,
    },
    /// The branch fails verify and stays so: the run finishes, its merge refused for this reason.
    Broken { reason: String },
}

/// How the verify gates went on one commit (the head, or a bisect probe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    pub passed: bool,
    /// The first gate that failed (the rest do not run).
    pub failed_gate: Option<GateName>,
    pub duration_ms: u64,
    /// Every gate's output, redacted.
    pub log: Option<ArtifactId>,
    /// Why it failed, for people: the gate and how it ended, or what kept it from running.
    pub reason: Option<String>,
}

/// How a revert on the run branch went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevertOutcome {
    /// The run branch now ends with this revert commit.
    Reverted {
        revert: CommitSha,
    },
    Failed {
        reason: String,
    },
}

impl Verification {
    /// The commit the run branch ends with, if abo put any there.
    pub fn head(&self) -> Option<&CommitSha> {
        self.tip
            .as_ref()
            .or_else(|| self.history.last().map(|s| &s.commit))
    }

    /// A task landed: the branch must be verified again.
    pub fn landed(&mut self, task: &TaskId, commit: &CommitSha) {
        self.history.push(Step {
            task: task.clone(),
            commit: commit.clone(),
            revert: false,
        });
        self.tip = None;
        self.phase = Phase::Unverified;
        self.reverted_since_landing = false;
    }

    /// The verify gates ran on `commit` (ignored unless it is still the head).
    pub fn verified(
        &mut self,
        commit: &CommitSha,
        passed: bool,
        log: Option<ArtifactId>,
        reason: &str,
    ) {
        if self.head() != Some(commit) {
            return;
        }
        let at = self.history.len();
        self.phase = if passed {
            self.good = at;
            Phase::Passed
        } else if self.reverted_since_landing {
            Phase::Broken {
                reason: format!("landing.verify still fails after the revert: {reason}"),
            }
        } else {
            Phase::Bisecting {
                lo: self.good,
                hi: at,
                log,
                reason: reason.to_owned(),
                steps: 0,
            }
        };
    }

    /// A bisect step ran the verify gates on `commit` (ignored unless it is the current probe).
    pub fn probed(&mut self, commit: &CommitSha, passed: bool) {
        let Some(mid) = self.probe() else { return };
        if self.history.get(mid - 1).map(|s| &s.commit) != Some(commit) {
            return;
        }
        if let Phase::Bisecting { lo, hi, steps, .. } = &mut self.phase {
            *steps += 1;
            if passed {
                *lo = mid;
            } else {
                *hi = mid;
            }
        }
    }

    /// `commit` was reverted by `revert`, now the head.
    pub fn reverted(&mut self, task: &TaskId, revert: &CommitSha) {
        self.history.push(Step {
            task: task.clone(),
            commit: revert.clone(),
            revert: true,
        });
        self.tip = None;
        self.phase = Phase::Unverified;
        self.reverted_since_landing = true;
    }

    /// The revert could not be made.
    pub fn revert_failed(&mut self, reason: &str) {
        self.phase = Phase::Broken {
            reason: format!("landing.verify fails and the revert could not be made: {reason}"),
        };
    }

    /// The bisect steps made so far in the current bisect.
    pub fn steps(&self) -> u32 {
        match &self.phase {
            Phase::Bisecting { steps, .. } => *steps,
            _ => 0,
        }
    }

    /// The position probed next while bisecting, if the range still holds more than one state.
    fn probe(&self) -> Option<usize> {
        match &self.phase {
            Phase::Bisecting { lo, hi, .. } if hi - lo > 1 => Some(lo + (hi - lo) / 2),
            _ => None,
        }
    }

    /// What comes next (with `gates`: whether `landing.verify` names any).
    pub fn next(&self, gates: bool) -> Next {
        let Some(head) = self.head() else {
            return Next::Done;
        };
        if !gates {
            return Next::Done;
        }
        match &self.phase {
            Phase::Unverified => Next::Verify {
                commit: head.clone(),
            },
            Phase::Passed => Next::Done,
            Phase::Broken { reason } => Next::Broken {
                reason: reason.clone(),
            },
            Phase::Bisecting {
                hi, log, reason, ..
            } => {
                if let Some(mid) = self.probe() {
                    let s = &self.history[mid - 1];
                    return Next::Probe {
                        task: s.task.clone(),
                        commit: s.commit.clone(),
                    };
                }
                let bad = &self.history[hi - 1];
                if bad.revert {
                    return Next::Broken {
                        reason: format!(
                            "landing.verify fails and the first bad commit {} is a revert: {reason}",
                            bad.commit
                        ),
                    };
                }
                Next::Revert {
                    task: bad.task.clone(),
                    commit: bad.commit.clone(),
                    head: head.clone(),
                    reason: reason.clone(),
                    log: log.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(n: usize) -> Verification {
        let mut v = Verification::default();
        for i in 1..=n {
            v.landed(
                &TaskId::new(format!("t{i}")),
                &CommitSha::new(format!("c{i}")),
            );
        }
        v
    }

    /// Bisects `n` landed commits whose first bad one is `bad` (1-based): the probes made and
    /// the commit reverted.
    fn bisect(n: usize, bad: usize) -> (Vec<String>, Next) {
        let mut v = landed(n);
        let head = v.head().cloned().unwrap();
        assert_eq!(
            v.next(true),
            Next::Verify {
                commit: head.clone()
            }
        );
        v.verified(&head, false, None, "gate `e2e` failed");
        let mut probes = Vec::new();
        loop {
            match v.next(true) {
                Next::Probe { commit, .. } => {
                    let i: usize = commit.as_str()[1..].parse().unwrap();
                    probes.push(commit.to_string());
                    v.probed(&commit, i < bad);
                }
                other => return (probes, other),
            }
        }
    }

    #[test]
    fn bisects_to_the_first_bad_commit() {
        let (probes, next) = bisect(2, 2);
        assert_eq!(probes, vec!["c1"]);
        assert_eq!(
            next,
            Next::Revert {
                task: TaskId::new("t2"),
                commit: CommitSha::new("c2"),
                head: CommitSha::new("c2"),
                reason: "gate `e2e` failed".into(),
                log: None,
            }
        );
        for bad in 1..=16 {
            let (probes, next) = bisect(16, bad);
            assert!(probes.len() <= 4, "{bad}: {probes:?}");
            let Next::Revert { commit, .. } = next else {
                panic!("{bad}: {next:?}")
            };
            assert_eq!(commit.as_str(), format!("c{bad}"));
        }
        // One landed commit failing: no probe, it is the one.
        let (probes, next) = bisect(1, 1);
        assert!(probes.is_empty());
        assert!(matches!(next, Next::Revert { commit, .. } if commit.as_str() == "c1"));
    }

    #[test]
    fn a_revert_is_verified_and_a_second_failure_is_not_bisected() {
        let mut v = landed(2);
        v.verified(&CommitSha::new("c2"), false, None, "x");
        v.probed(&CommitSha::new("c1"), true);
        v.reverted(&TaskId::new("t2"), &CommitSha::new("r2"));
        assert_eq!(
            v.next(true),
            Next::Verify {
                commit: CommitSha::new("r2")
            }
        );
        // A stale result for the old head changes nothing.
        v.verified(&CommitSha::new("c2"), true, None, "");
        assert_eq!(v.phase, Phase::Unverified);
        v.verified(&CommitSha::new("r2"), false, None, "gate `e2e` failed");
        assert!(
            matches!(v.next(true), Next::Broken { reason } if reason.contains("after the revert"))
        );
        // A new landing (the retried task) is verified and bisected again from the last good.
        let mut v = landed(2);
        v.verified(&CommitSha::new("c2"), false, None, "x");
        v.probed(&CommitSha::new("c1"), true);
        v.reverted(&TaskId::new("t2"), &CommitSha::new("r2"));
        v.verified(&CommitSha::new("r2"), true, None, "");
        assert_eq!(v.good, 3);
        assert_eq!(v.next(true), Next::Done);
        v.landed(&TaskId::new("t2"), &CommitSha::new("c2b"));
        v.verified(&CommitSha::new("c2b"), false, None, "x");
        assert!(matches!(v.next(true), Next::Revert { commit, .. } if commit.as_str() == "c2b"));
    }

    #[test]
    fn nothing_to_verify_without_gates_or_landings() {
        assert_eq!(Verification::default().next(true), Next::Done);
        assert_eq!(landed(3).next(false), Next::Done);
    }
}
