//! Several attempts of one task at once: `proposals:` (N candidates started together, the best
//! of those that pass lands) and `hedge:` (a duplicate started when an attempt runs long, the
//! first to pass lands). Both are policies over one mechanism: a task whose state is
//! `TaskState::Candidates` holds a [`Candidate`] per attempt, each with its own
//! [`CandidateState`]; `decide::proposals` moves them and picks the winner by [`rank`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{BackendName, Timestamp};
use crate::review::Outcome;
use crate::verdict::Verdict;

/// abo.yml's `proposals:` as frozen into a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalSpec {
    /// In order: the first whose `when:` holds gives a task its number of proposals.
    #[serde(default)]
    pub rules: Vec<ProposalRule>,
    /// The selection order (empty: [`Criterion::DEFAULT`]).
    #[serde(default)]
    pub select: Vec<Criterion>,
}

impl ProposalSpec {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.select.is_empty()
    }

    /// The selection order in force.
    pub fn order(&self) -> &[Criterion] {
        if self.select.is_empty() {
            &Criterion::DEFAULT
        } else {
            &self.select
        }
    }
}

/// `proposals.rules[]`: tasks for which `when:` holds (the router's expression language and
/// variables: `task.type`, `task.labels`, `task.id`, `risk`...) get `n` proposals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalRule {
    pub when: String,
    pub n: u32,
}

/// The most proposals a rule may ask for.
pub const MAX_PROPOSALS: u32 = 8;

/// What a candidate is compared on, in the order `proposals.select` gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// The reviewer's verdict: approve, then no review, then request_changes, then failed.
    Review,
    /// Fewer findings reported by the gates' reports (all candidates start from the same tree,
    /// so fewer findings is fewer new findings).
    Findings,
    /// Higher line coverage reported by the gates.
    Coverage,
    /// Fewer changed lines (added plus removed).
    Diff,
    /// Lower cost charged.
    Cost,
}

impl Criterion {
    pub const DEFAULT: [Criterion; 5] = [
        Criterion::Review,
        Criterion::Findings,
        Criterion::Coverage,
        Criterion::Diff,
        Criterion::Cost,
    ];
    pub const ALL: [&'static str; 5] = ["review", "findings", "coverage", "diff", "cost"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "review" => Self::Review,
            "findings" => Self::Findings,
            "coverage" => Self::Coverage,
            "diff" => Self::Diff,
            "cost" => Self::Cost,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Review => "review",
            Self::Findings => "findings",
            Self::Coverage => "coverage",
            Self::Diff => "diff",
            Self::Cost => "cost",
        }
    }
}

/// abo.yml's `hedge:` as frozen into a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HedgeSpec {
    pub after: HedgeAfter,
    /// Duplicates per task at most.
    pub max: u32,
}

/// When an attempt has run long enough to be hedged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeAfter {
    /// The 90th percentile of the wall time (started to landed) of the task type's landed
    /// attempts in the store; no history: no hedge.
    P90,
    /// A fixed duration.
    Ms(u64),
}

/// The 90th percentile (nearest rank) of durations; none of an empty list.
pub fn p90(durations: &[u64]) -> Option<u64> {
    if durations.is_empty() {
        return None;
    }
    let mut d = durations.to_vec();
    d.sort_unstable();
    // Nearest rank: ceil(0.9 * n), 1-based.
    let rank = (d.len() * 9).div_ceil(10).max(1);
    d.get(rank - 1).copied()
}

/// Why a task has several candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `proposals:`: every candidate runs to its end; the best that passed lands.
    Proposals,
    /// `hedge:`: the first candidate to pass lands; the others are stopped.
    Hedge,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposals => "proposals",
            Self::Hedge => "hedge",
        }
    }
}

/// One attempt of a task with several in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub backend: BackendName,
    pub started_at: Timestamp,
    /// Started by `hedge:` (not the first attempt).
    pub hedge: bool,
    pub state: CandidateState,
    /// What it is scored on, filled in as its steps report.
    pub score: Score,
}

/// Where one candidate is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateState {
    /// Its backend is producing the change.
    Running,
    /// Its gates are running; `passed` of them have passed (all: the review or policy next).
    Verifying {
        passed: usize,
    },
    /// Its gates and the policy passed: it may win (`verdict` allow, or needs approval for
    /// `reasons`, asked if it wins).
    Passed {
        verdict: Verdict,
        reasons: Vec<String>,
    },
    Failed {
        reason: String,
    },
    /// Stopped: another candidate won first (hedge), or the run stopped it.
    Stopped {
        reason: String,
    },
}

impl CandidateState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Verifying { .. } => "verifying",
            Self::Passed { .. } => "passed",
            Self::Failed { .. } => "failed",
            Self::Stopped { .. } => "stopped",
        }
    }

    /// Still producing or checking its change.
    pub fn in_flight(&self) -> bool {
        matches!(self, Self::Running | Self::Verifying { .. })
    }
}

/// A candidate's figures, as its `task.proposal` event records them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// The reviewer's verdict (none: no reviewer, or not reviewed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Outcome>,
    /// A high-severity finding in the review.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub high_finding: bool,
    /// Findings the gates' reports counted (none: no gate reports them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<u64>,
    /// Line coverage in hundredths of a percent (none: no gate reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_bp: Option<u32>,
    /// Lines added plus removed.
    pub diff_lines: u64,
    /// Cost charged, in micro-dollars.
    pub cost_micros: u64,
}

impl Score {
    /// Adds what a passing gate measured.
    pub fn gate(&mut self, figures: Option<&crate::event::GateFigures>) {
        let Some(f) = figures else { return };
        if let Some(n) = f.findings {
            self.findings = Some(self.findings.unwrap_or(0) + n);
        }
        if let Some(c) = f.coverage {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a percentage, clamped to 0..=100"
            )]
            let bp = (c.clamp(0.0, 100.0) * 100.0).round() as u32;
            self.coverage_bp = Some(self.coverage_bp.map_or(bp, |o| o.max(bp)));
        }
    }

    /// Adds a charge.
    pub fn charged(&mut self, usd: f64) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative amount in micro-dollars"
        )]
        let m = (usd.max(0.0) * 1e6).round() as u64;
        self.cost_micros = self.cost_micros.saturating_add(m);
    }

    /// Lower is better, per criterion (a value missing on either side does not separate them).
    fn key(&self, c: Criterion) -> Option<i64> {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        match c {
            Criterion::Review => Some(match self.review {
                Some(Outcome::Approve) => 0,
                None | Some(Outcome::NotStarted) => 1,
                Some(Outcome::RequestChanges) => 2,
                Some(Outcome::Failed) => 3,
            }),
            Criterion::Findings => self.findings.map(i),
            Criterion::Coverage => self.coverage_bp.map(|c| -i64::from(c)),
            Criterion::Diff => Some(i(self.diff_lines)),
            Criterion::Cost => Some(i(self.cost_micros)),
        }
    }

    fn describe(&self, c: Criterion) -> String {
        match c {
            Criterion::Review => match self.review {
                Some(o) => format!("review {}", o.as_str()),
                None => "no review".into(),
            },
            Criterion::Findings => format!("{} findings", self.findings.unwrap_or(0)),
            Criterion::Coverage => match self.coverage_bp {
                Some(bp) => format!("{}.{:02}% coverage", bp / 100, bp % 100),
                None => "no coverage".into(),
            },
            Criterion::Diff => format!("{} changed lines", self.diff_lines),
            Criterion::Cost => crate::human::usd(self.cost_micros as f64 / 1e6),
        }
    }
}

/// The candidates that passed, best first: by each criterion of `order` in turn, then by attempt
/// number (the earlier wins a tie). Returns (attempt, why it is where it is) in rank order; the
/// first's reason says what it won on against the runner-up.
pub fn rank(order: &[Criterion], passed: &[(u32, &Score)]) -> Vec<(u32, String)> {
    let mut sorted: Vec<(u32, &Score)> = passed.to_vec();
    sorted.sort_by(|(a, x), (b, y)| {
        for c in order {
            if let (Some(kx), Some(ky)) = (x.key(*c), y.key(*c)) {
                let o = kx.cmp(&ky);
                if o.is_ne() {
                    return o;
                }
            }
        }
        a.cmp(b)
    });
    let mut out = Vec::with_capacity(sorted.len());
    for (i, (attempt, s)) in sorted.iter().enumerate() {
        // Compared with its neighbour: the winner with the runner-up, each other with the one
        // ranked just above it.
        let other = if i == 0 {
            sorted.get(1)
        } else {
            sorted.get(i - 1)
        };
        let why = match other {
            None => "the only candidate that passed".to_owned(),
            Some((b, o)) => {
                let deciding = order
                    .iter()
                    .find(|c| matches!((s.key(**c), o.key(**c)), (Some(x), Some(y)) if x != y));
                match (i, deciding) {
                    (0, Some(c)) => format!(
                        "best on {}: {} against {} for attempt {b}",
                        c.as_str(),
                        s.describe(*c),
                        o.describe(*c)
                    ),
                    (0, None) => format!("tied with attempt {b}: the earlier attempt wins"),
                    (_, Some(c)) => format!(
                        "ranked {} on {}: {} against {} for attempt {b}",
                        i + 1,
                        c.as_str(),
                        s.describe(*c),
                        o.describe(*c)
                    ),
                    (_, None) => format!("ranked {}: tied with attempt {b}, started later", i + 1),
                }
            }
        };
        out.push((*attempt, why));
    }
    out
}

/// How a candidate ended, as its `task.proposal` event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalOutcome {
    /// It lands.
    Won,
    /// It passed, and another ranked higher (or passed first, when hedged).
    Lost,
    /// Its backend, a gate, the review or the policy failed it.
    Failed,
    /// Stopped before it finished: another candidate won first.
    Stopped,
}

impl ProposalOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::Lost => "lost",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// A task's candidates by attempt number.
pub type Candidates = BTreeMap<u32, Candidate>;

/// One candidate as `abo status`, the API and the dashboard show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub attempt: u32,
    pub backend: BackendName,
    pub mode: Mode,
    /// `won`, `lost`, `failed`, `stopped`, or while in flight `running`, `verifying`, `passed`.
    pub outcome: &'static str,
    pub rank: Option<u32>,
    pub reason: Option<String>,
    pub hedge: bool,
    pub score: Score,
}

/// A task's candidates: those its `task.proposal` events ended (a later record of the same
/// attempt, after a crash redid it, replaces the earlier), then those in flight in `state`. The
/// winner first, then by rank, then by attempt.
pub fn shown(
    task: &crate::ids::TaskId,
    events: &[crate::event::StoredEvent],
    state: Option<&crate::state::TaskState>,
) -> Vec<Shown> {
    let mut out: BTreeMap<u32, Shown> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.event.task.as_ref() == Some(task))
    {
        if let crate::event::EventBody::TaskProposal {
            attempt,
            backend,
            mode,
            outcome,
            score,
            rank,
            reason,
            hedge,
            ..
        } = &e.event.body
        {
            out.insert(
                *attempt,
                Shown {
                    attempt: *attempt,
                    backend: backend.clone(),
                    mode: *mode,
                    outcome: outcome.as_str(),
                    rank: *rank,
                    reason: Some(reason.clone()),
                    hedge: *hedge,
                    score: score.clone(),
                },
            );
        }
    }
    if let Some(crate::state::TaskState::Candidates { mode, candidates }) = state {
        for (a, c) in candidates {
            out.insert(
                *a,
                Shown {
                    attempt: *a,
                    backend: c.backend.clone(),
                    mode: *mode,
                    outcome: c.state.as_str(),
                    rank: None,
                    reason: match &c.state {
                        CandidateState::Failed { reason } | CandidateState::Stopped { reason } => {
                            Some(reason.clone())
                        }
                        _ => None,
                    },
                    hedge: c.hedge,
                    score: c.score.clone(),
                },
            );
        }
    }
    let mut v: Vec<Shown> = out.into_values().collect();
    v.sort_by_key(|s| (s.rank.unwrap_or(u32::MAX), s.attempt));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p90_is_the_nearest_rank() {
        assert_eq!(p90(&[]), None);
        assert_eq!(p90(&[5]), Some(5));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(p90(&ten), Some(9));
        let twenty: Vec<u64> = (1..=20).rev().collect();
        assert_eq!(p90(&twenty), Some(18));
    }

    #[test]
    fn rank_follows_the_order_then_the_attempt() {
        let s = |review, diff_lines, cost_micros| Score {
            review,
            diff_lines,
            cost_micros,
            ..Score::default()
        };
        let (a, b, c) = (
            s(Some(Outcome::Approve), 40, 1),
            s(Some(Outcome::Approve), 12, 5),
            s(Some(Outcome::RequestChanges), 1, 0),
        );
        let got = rank(&Criterion::DEFAULT, &[(1, &a), (2, &b), (3, &c)]);
        assert_eq!(
            got,
            vec![
                (
                    2,
                    "best on diff: 12 changed lines against 40 changed lines for attempt 1".into()
                ),
                (
                    1,
                    "ranked 2 on diff: 40 changed lines against 12 changed lines for attempt 2"
                        .into()
                ),
                (
                    3,
                    "ranked 3 on review: review request_changes against review approve for attempt 1"
                        .into()
                ),
            ]
        );
        // Cost first: the cheapest wins whatever its diff.
        let got = rank(&[Criterion::Cost], &[(1, &a), (2, &b), (3, &c)]);
        assert_eq!(got[0].0, 3);
        // A tie: the earlier attempt.
        let got = rank(&[Criterion::Review], &[(2, &a), (1, &b)]);
        assert_eq!(
            got[0],
            (1, "tied with attempt 2: the earlier attempt wins".into())
        );
    }
}
