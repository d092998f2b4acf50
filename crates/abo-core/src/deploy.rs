//! Deployments (abo.yml's `deploy:`), pure: the environments as configured, what autonomy and
//! policy let a deployment do by itself, how an SLO check's samples are judged over the canary's
//! window, and the deploy events. `abo-runtime::deploy` executes them; `abo-store` holds each
//! environment's lock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::autonomy::Level;
use crate::ids::{ArtifactId, CommitSha};
use crate::units::Dur;
use crate::verdict::Verdict;

/// `deploy:`: the environments by name.
pub type Environments = BTreeMap<String, Environment>;

/// One environment: its commands, run in a clean worktree of the landed base branch.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// When it deploys by itself: after a run's merge into the base branch, or only on
    /// `abo deploy ENV`.
    #[serde(default)]
    pub when: When,
    /// The network its commands get: `none` (default) or `host`.
    #[serde(default)]
    pub network: DeployNetwork,
    /// Shows what would change (e.g. `terraform plan`); its output goes with an approval.
    #[serde(default)]
    pub plan: Option<String>,
    pub canary: String,
    pub check: Check,
    pub promote: String,
    pub rollback: String,
    /// Each command's time limit.
    #[serde(default = "d_timeout")]
    pub timeout: Dur,
    /// How long the environment's lock outlives its holder's last heartbeat (a crashed abo's
    /// lock is free after it).
    #[serde(default = "d_lock_ttl")]
    pub lock_ttl: Dur,
    /// How long a deployment waits for a person's approval before it gives up (a canary
    /// waiting for promotion is rolled back).
    #[serde(default = "d_approval_timeout")]
    pub approval_timeout: Dur,
}

fn d_timeout() -> Dur {
    Dur::secs(10 * 60)
}
fn d_lock_ttl() -> Dur {
    Dur::secs(30)
}
fn d_approval_timeout() -> Dur {
    Dur::secs(3600)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// After a run's merge into the base branch.
    Merge,
    /// Only on `abo deploy ENV`.
    #[default]
    Manual,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployNetwork {
    #[default]
    None,
    Host,
}

/// The SLO check over the canary's window: a command (exit 0 = healthy) or a Prometheus query.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    Command {
        run: String,
        window: Window,
    },
    Prometheus {
        url: String,
        query: String,
        bound: Bound,
        window: Window,
    },
}

impl Check {
    pub fn window(&self) -> Window {
        match self {
            Self::Command { window, .. } | Self::Prometheus { window, .. } => *window,
        }
    }
}

/// How long the canary is watched (`for`) and how often it is sampled (`every`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub length: Dur,
    pub every: Dur,
}

impl Window {
    /// Samples in the window: one at its start, then one each `every` up to its end.
    pub fn samples(&self) -> u32 {
        let every = self.every.as_millis().max(1);
        u32::try_from(self.length.as_millis() / every + 1).unwrap_or(u32::MAX)
    }
}

/// The healthy side of a query's value: at most `max`, or at least `min`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Max(f64),
    Min(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    prometheus: Option<RawPrometheus>,
    #[serde(default, rename = "for")]
    length: Option<Dur>,
    #[serde(default)]
    every: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: String,
    query: String,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default, rename = "for")]
    length: Option<Dur>,
    #[serde(default)]
    every: Option<Dur>,
}

const DEFAULT_FOR: Dur = Dur::secs(5 * 60);
const DEFAULT_EVERY: Dur = Dur::secs(30);

fn window(length: Option<Dur>, every: Option<Dur>) -> Result<Window, String> {
    let w = Window {
        length: length.unwrap_or(DEFAULT_FOR),
        every: every.unwrap_or(DEFAULT_EVERY),
    };
    if w.every.as_millis() == 0 {
        return Err("`every` must be more than 0".into());
    }
    if w.every > w.length && w.length.as_millis() > 0 {
        return Err(format!(
            "`every: {}` is longer than the window `for: {}`",
            w.every, w.length
        ));
    }
    Ok(w)
}

impl TryFrom<RawCheck> for Check {
    type Error = String;

    fn try_from(r: RawCheck) -> Result<Self, String> {
        match (r.run, r.prometheus) {
            (Some(run), None) => Ok(Self::Command {
                run,
                window: window(r.length, r.every)?,
            }),
            (None, Some(p)) => {
                if r.length.is_some() || r.every.is_some() {
                    return Err(
                        "`for` and `every` of a Prometheus check go inside `prometheus:`".into(),
                    );
                }
                let bound = match (p.max, p.min) {
                    (Some(m), None) => Bound::Max(m),
                    (None, Some(m)) => Bound::Min(m),
                    _ => {
                        return Err(
                            "`prometheus` needs exactly one of `max` or `min` (the healthy side)"
                                .into(),
                        );
                    }
                };
                if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                    return Err(format!(
                        "`prometheus.url` `{}` must start with http:// or https://",
                        p.url
                    ));
                }
                Ok(Self::Prometheus {
                    url: p.url,
                    query: p.query,
                    bound,
                    window: window(p.length, p.every)?,
                })
            }
            _ => Err("`check` needs exactly one of `run` (a command) or `prometheus`".into()),
        }
    }
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: the YAML parser then locates an error at the
        // check itself.
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Check;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a command, or `{ run: CMD }` or `{ prometheus: { url, query, max | min, for, every } }`")
            }

            // `check: CMD` runs once.
            fn visit_str<E: serde::de::Error>(self, run: &str) -> Result<Check, E> {
                Ok(Check::Command {
                    run: run.to_owned(),
                    window: Window {
                        length: Dur::secs(0),
                        every: Dur::secs(1),
                    },
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Check, A::Error> {
                let raw = RawCheck::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Check::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// What needs a person before it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Starting the deployment (its canary).
    Start,
    /// Promoting a healthy canary.
    Promote,
}

/// Who decides each step: abo by itself, or a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decider {
    Abo,
    Person,
}

/// What a deployment may do by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub start: Decider,
    pub promote: Decider,
}

/// The flow of a deployment at the `deploy` level, under the policy's verdict. The stricter wins:
/// A3 and below wait for a person before the canary and before promotion; A4 runs the canary
/// (and rolls it back) by itself and waits for a person to promote; A5 promotes by itself. A
/// policy asking for approval makes the start wait at any level; a denial refuses it (`None`).
pub fn flow(level: Level, policy: Verdict) -> Option<Flow> {
    let by_level = match level {
        Level::A5 => Flow {
            start: Decider::Abo,
            promote: Decider::Abo,
        },
        Level::A4 => Flow {
            start: Decider::Abo,
            promote: Decider::Person,
        },
        _ => Flow {
            start: Decider::Person,
            promote: Decider::Person,
        },
    };
    match policy {
        Verdict::Allow => Some(by_level),
        Verdict::NeedsApproval => Some(Flow {
            start: Decider::Person,
            ..by_level
        }),
        Verdict::Deny => None,
    }
}

/// One sample of the check.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// The query's value.
    Value(f64),
    /// The query answered with no series: nothing shows the canary healthy.
    NoData,
    /// Prometheus could not be reached or refused the query.
    Unreachable(String),
    /// The check command's exit (`None`: killed or timed out).
    Exit(Option<i32>),
}

/// A sample judged: whether it is healthy, and what it was, for the event.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub healthy: bool,
    pub value: Option<f64>,
    pub detail: String,
}

/// Judges one sample against the bound (for a Prometheus check; `None` for a command).
pub fn judge(sample: &Sample, bound: Option<Bound>) -> Judged {
    match sample {
        Sample::Value(v) => {
            let (healthy, detail) = match bound {
                Some(Bound::Max(m)) => (
                    *v <= m,
                    format!("{v} {} max {m}", if *v <= m { "<=" } else { ">" }),
                ),
                Some(Bound::Min(m)) => (
                    *v >= m,
                    format!("{v} {} min {m}", if *v >= m { ">=" } else { "<" }),
                ),
                None => (false, format!("{v} (no bound)")),
            };
            // NaN (0/0 in PromQL) is healthy on no side.
            Judged {
                healthy: healthy && !v.is_nan(),
                value: Some(*v),
                detail,
            }
        }
        Sample::NoData => Judged {
            healthy: false,
            value: None,
            detail: "the query returned no series".into(),
        },
        Sample::Unreachable(why) => Judged {
            healthy: false,
            value: None,
            detail: format!("prometheus unreachable: {why}"),
        },
        Sample::Exit(code) => Judged {
            healthy: *code == Some(0),
            value: None,
            detail: match code {
                Some(c) => format!("check exited {c}"),
                None => "check was killed or timed out".into(),
            },
        },
    }
}

/// Where the canary's window stands after the samples seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Healthy so far: sample again.
    Watching,
    /// Every sample of the window was healthy.
    Held,
    /// A sample was unhealthy: roll back now.
    Broken,
}

/// The window's state after `healthy` (each sample's health, in order) out of `window.samples()`.
pub fn observe(window: Window, healthy: &[bool]) -> Observation {
    if healthy.iter().any(|h| !h) {
        Observation::Broken
    } else if u32::try_from(healthy.len()).unwrap_or(u32::MAX) >= window.samples() {
        Observation::Held
    } else {
        Observation::Watching
    }
}

/// What started a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A run's merge into the base branch.
    Merge,
    /// `abo deploy ENV`.
    Manual,
}

/// The deploy events. Each names its deployment and environment; the event's run is the run
/// whose merge started it, or the deployment's own id for `abo deploy ENV`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum DeployEvent {
    /// The environment's lock is held and the deployment begins.
    #[serde(rename = "deploy.started")]
    Started {
        deployment: String,
        environment: String,
        commit: CommitSha,
        trigger: Trigger,
        /// The `deploy` level it ran at, and the policy's verdict.
        level: String,
        verdict: Verdict,
        start: Decider,
        promote: Decider,
    },
    /// A person must approve a step; `plan` is the plan command's output (redacted, shortened).
    #[serde(rename = "deploy.approval_requested")]
    ApprovalRequested {
        deployment: String,
        environment: String,
        step: Step,
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan_log: Option<ArtifactId>,
    },
    #[serde(rename = "deploy.approved")]
    Approved {
        deployment: String,
        step: Step,
        reason: String,
    },
    #[serde(rename = "deploy.rejected")]
    Rejected {
        deployment: String,
        step: Step,
        reason: String,
    },
    /// The policy denied the deployment: nothing ran.
    #[serde(rename = "deploy.denied")]
    Denied {
        deployment: String,
        environment: String,
        reasons: Vec<String>,
    },
    /// One sample of the check.
    #[serde(rename = "deploy.checked")]
    Checked {
        deployment: String,
        environment: String,
        sample: u32,
        of: u32,
        healthy: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        detail: String,
    },
    #[serde(rename = "deploy.promoted")]
    Promoted {
        deployment: String,
        environment: String,
        /// From `deploy.started` to the promote command's end.
        duration_ms: u64,
    },
    /// The canary was rolled back (its check failed, a command failed, or promotion was refused).
    #[serde(rename = "deploy.rolled_back")]
    RolledBack {
        deployment: String,
        environment: String,
        reason: String,
        /// Whether the rollback command succeeded.
        ok: bool,
        /// The rollback command's own duration.
        duration_ms: u64,
        /// From the failure seen (the failing sample, the failed command) to the rollback's end.
        restore_ms: u64,
    },
    /// The deployment ended without a canary to roll back (the plan or a person stopped it).
    #[serde(rename = "deploy.abandoned")]
    Abandoned {
        deployment: String,
        environment: String,
        reason: String,
    },
}

impl DeployEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Started { .. } => "deploy.started",
            Self::ApprovalRequested { .. } => "deploy.approval_requested",
            Self::Approved { .. } => "deploy.approved",
            Self::Rejected { .. } => "deploy.rejected",
            Self::Denied { .. } => "deploy.denied",
            Self::Checked { .. } => "deploy.checked",
            Self::Promoted { .. } => "deploy.promoted",
            Self::RolledBack { .. } => "deploy.rolled_back",
            Self::Abandoned { .. } => "deploy.abandoned",
        }
    }

    /// The deployment it belongs to.
    pub fn deployment(&self) -> &str {
        match self {
            Self::Started { deployment, .. }
            | Self::ApprovalRequested { deployment, .. }
            | Self::Approved { deployment, .. }
            | Self::Rejected { deployment, .. }
            | Self::Denied { deployment, .. }
            | Self::Checked { deployment, .. }
            | Self::Promoted { deployment, .. }
            | Self::RolledBack { deployment, .. }
            | Self::Abandoned { deployment, .. } => deployment,
        }
    }
}

/// The deployment figures of `abo report`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeployFigures {
    pub deployments: u32,
    pub promoted: u32,
    pub rolled_back: u32,
    /// Rolled-back deployments among those that ended promoted or rolled back.
    pub change_failure_rate: Option<f64>,
    /// Check failed (or command failed) to rollback finished, in seconds.
    pub time_to_restore: crate::report::Spread,
}

/// Folds the deploy events into the report's figures.
pub fn figures<'a>(events: impl Iterator<Item = &'a DeployEvent>) -> DeployFigures {
    let mut f = DeployFigures::default();
    let mut restore = Vec::new();
    for e in events {
        match e {
            DeployEvent::Started { .. } => f.deployments += 1,
            DeployEvent::Promoted { .. } => f.promoted += 1,
            DeployEvent::RolledBack { restore_ms, .. } => {
                f.rolled_back += 1;
                restore.push(i64::try_from(*restore_ms).unwrap_or(i64::MAX));
            }
            _ => {}
        }
    }
    let ended = f.promoted + f.rolled_back;
    if ended > 0 {
        f.change_failure_rate = Some(f64::from(f.rolled_back) / f64::from(ended));
    }
    f.time_to_restore = crate::report::spread_ms(restore);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(yaml: &str) -> Result<Environment, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn environments_parse_with_either_check() {
        let e = env("canary: ./c\npromote: ./p\nrollback: ./r\nwhen: merge\nnetwork: host\n\
             check: { prometheus: { url: 'http://127.0.0.1:9090', query: 'rate(x[1m])', max: 0.05, for: 3s, every: 1s } }\n")
        .unwrap();
        assert_eq!(e.when, When::Merge);
        assert_eq!(e.network, DeployNetwork::Host);
        assert_eq!(
            e.check,
            Check::Prometheus {
                url: "http://127.0.0.1:9090".into(),
                query: "rate(x[1m])".into(),
                bound: Bound::Max(0.05),
                window: Window {
                    length: Dur::secs(3),
                    every: Dur::secs(1)
                },
            }
        );
        assert_eq!(e.check.window().samples(), 4);
        let e = env("canary: c\npromote: p\nrollback: r\ncheck: ./healthy\n").unwrap();
        assert_eq!(e.when, When::Manual);
        assert_eq!(e.check.window().samples(), 1);
        let e =
            env("canary: c\npromote: p\nrollback: r\ncheck: { run: ./h, for: 10s, every: 5s }\n")
                .unwrap();
        assert_eq!(e.check.window().samples(), 3);
    }

    #[test]
    fn bad_checks_say_what_is_wrong() {
        let base = "canary: c\npromote: p\nrollback: r\n";
        for (check, expect) in [
            (
                "check: { prometheus: { url: 'http://p', query: q, max: 1, min: 0 } }",
                "exactly one of `max` or `min`",
            ),
            (
                "check: { prometheus: { url: 'p:9090', query: q, max: 1 } }",
                "must start with http://",
            ),
            (
                "check: { run: a, prometheus: { url: 'http://p', query: q, max: 1 } }",
                "exactly one of `run`",
            ),
            (
                "check: { run: a, for: 1s, every: 5s }",
                "longer than the window",
            ),
            (
                "check: { prometheus: { url: 'http://p', query: q, max: 1 }, for: 3s }",
                "go inside",
            ),
        ] {
            let err = env(&format!("{base}{check}\n")).unwrap_err();
            assert!(err.contains(expect), "{check}: {err}");
        }
        assert!(env("canary: c\npromote: p\nrollback: r\ncheck: x\ncanaryy: 1\n").is_err());
    }

    #[test]
    fn the_stricter_of_autonomy_and_policy_decides() {
        use Decider::*;
        let f = |l, v| flow(l, v).map(|f| (f.start, f.promote));
        assert_eq!(f(Level::A5, Verdict::Allow), Some((Abo, Abo)));
        assert_eq!(f(Level::A4, Verdict::Allow), Some((Abo, Person)));
        assert_eq!(f(Level::A3, Verdict::Allow), Some((Person, Person)));
        assert_eq!(f(Level::A0, Verdict::Allow), Some((Person, Person)));
        assert_eq!(f(Level::A5, Verdict::NeedsApproval), Some((Person, Abo)));
        assert_eq!(f(Level::A4, Verdict::NeedsApproval), Some((Person, Person)));
        assert_eq!(f(Level::A5, Verdict::Deny), None);
    }

    #[test]
    fn samples_are_judged_against_their_bound() {
        let j = |s, b| {
            let j = judge(&s, b);
            (j.healthy, j.detail)
        };
        assert_eq!(
            j(Sample::Value(0.01), Some(Bound::Max(0.05))),
            (true, "0.01 <= max 0.05".into())
        );
        assert_eq!(
            j(Sample::Value(0.5), Some(Bound::Max(0.05))),
            (false, "0.5 > max 0.05".into())
        );
        assert_eq!(
            j(Sample::Value(0.99), Some(Bound::Min(0.999))),
            (false, "0.99 < min 0.999".into())
        );
        assert!(!judge(&Sample::Value(f64::NAN), Some(Bound::Max(1.0))).healthy);
        assert!(!judge(&Sample::NoData, Some(Bound::Max(1.0))).healthy);
        assert_eq!(
            j(Sample::Unreachable("connection refused".into()), None),
            (false, "prometheus unreachable: connection refused".into())
        );
        assert!(judge(&Sample::Exit(Some(0)), None).healthy);
        assert!(!judge(&Sample::Exit(None), None).healthy);
    }

    #[test]
    fn one_bad_sample_breaks_the_window() {
        let w = Window {
            length: Dur::secs(3),
            every: Dur::secs(1),
        };
        assert_eq!(observe(w, &[]), Observation::Watching);
        assert_eq!(observe(w, &[true, true]), Observation::Watching);
        assert_eq!(observe(w, &[true, true, true, true]), Observation::Held);
        assert_eq!(observe(w, &[true, false]), Observation::Broken);
    }

    #[test]
    fn figures_count_rollbacks_as_failed_changes() {
        let s = |d: &str| DeployEvent::Started {
            deployment: d.into(),
            environment: "prod".into(),
            commit: CommitSha::new("c"),
            trigger: Trigger::Manual,
            level: "A5".into(),
            verdict: Verdict::Allow,
            start: Decider::Abo,
            promote: Decider::Abo,
        };
        let events = [
            s("a"),
            DeployEvent::Promoted {
                deployment: "a".into(),
                environment: "prod".into(),
                duration_ms: 10,
            },
            s("b"),
            DeployEvent::RolledBack {
                deployment: "b".into(),
                environment: "prod".into(),
                reason: "check".into(),
                ok: true,
                duration_ms: 100,
                restore_ms: 1500,
            },
            s("c"),
        ];
        let f = figures(events.iter());
        assert_eq!(
            (
                f.deployments,
                f.promoted,
                f.rolled_back,
                f.change_failure_rate
            ),
            (3, 1, 1, Some(0.5))
        );
        assert_eq!(f.time_to_restore.p50_s, Some(1.5));
    }

    #[test]
    fn events_round_trip_with_their_kind() {
        let e = DeployEvent::Checked {
            deployment: "d".into(),
            environment: "prod".into(),
            sample: 2,
            of: 4,
            healthy: false,
            value: Some(0.5),
            detail: "0.5 > max 0.05".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "deploy.checked");
        assert_eq!(v["kind"], e.kind());
        assert_eq!(serde_json::from_value::<DeployEvent>(v).unwrap(), e);
        // Through the event log's kind and data, as stored.
        let body = crate::event::EventBody::Deploy(e);
        assert_eq!(body.kind(), "deploy.checked");
        assert_eq!(body.data()["detail"], "0.5 > max 0.05");
        let back = crate::event::EventBody::from_parts(body.kind(), body.data()).unwrap();
        assert_eq!(back, body);
        // A tagged kind is still read as itself.
        let landed = crate::event::EventBody::from_parts(
            "task.landed",
            serde_json::json!({"attempt": 1, "commit": "abc"}),
        )
        .unwrap();
        assert_eq!(landed.kind(), "task.landed");
    }
}

#[cfg(test)]
mod located {
    #[test]
    fn a_bad_check_is_located_in_abo_yml() {
        let text = "version: 1\ndeploy:\n  prod:\n    canary: c\n    promote: p\n    rollback: r\n    check:\n      prometheus: { url: 'http://x', query: q, max: 1, min: 2 }\n";
        let e = crate::config::Config::parse("abo.yml", text).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("exactly one of `max` or `min`"), "{shown}");
        assert!(shown.starts_with("abo.yml:8:"), "{shown}");
    }
}
