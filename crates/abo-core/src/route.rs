//! The router: which backend an attempt runs on. A task that names its backend keeps it; else the
//! first `router.rules` entry whose `when:` holds and whose backend is healthy; else a learned
//! choice (Thompson sampling on landed-vs-failed per task type and backend) among `router.learn`'s
//! backends for the task's type; else `backends.default`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::RouteScore;
use crate::expr::{Expr, ExprError, Schema, Value};
use crate::ids::{BackendName, TaskId};
use crate::spec::BackendSpec;

/// The router as frozen into a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterSpec {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Task type -> the backends the learned router chooses among.
    #[serde(default)]
    pub learn: BTreeMap<String, Vec<BackendSpec>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub when: String,
    #[serde(rename = "use")]
    pub backend: BackendSpec,
}

/// The variables a `when:` expression may name, and their fields.
pub fn variables() -> BTreeMap<&'static str, Schema> {
    BTreeMap::from([
        (
            "task",
            Schema::fields(&["id", "title", "type", "labels", "paths", "priority", "deps"]),
        ),
        ("attempt", Schema::Leaf),
        (
            "budget",
            Schema::fields(&[
                "usd_remaining",
                "tokens_remaining",
                "usd_spent",
                "tokens_spent",
                "usd_limit",
                "tokens_limit",
            ]),
        ),
        ("context_tokens", Schema::Leaf),
        ("risk", Schema::Leaf),
    ])
}

/// Parses and checks a rule's expression.
pub fn compile(when: &str) -> Result<Expr, ExprError> {
    Expr::parse(when, &variables())
}

/// Landed and failed attempts of one (task type, backend), with their cost and time: the learned
/// router's memory, kept in the store across runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub landed: u64,
    pub failed: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    pub attempts: u64,
}

/// (task type, backend name) -> arm.
pub type Stats = BTreeMap<(String, String), Arm>;

/// A small, seedable generator (SplitMix64): the sampling is a pure function of the run, the
/// task and the attempt, so a decision replays the same.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(parts: &[&str]) -> Self {
        // FNV-1a over the parts.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in parts {
            for b in p.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Self(h)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    #[allow(clippy::cast_precision_loss)]
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang (shape >= 1 here: counts plus one).
    fn gamma(&mut self, shape: f64) -> f64 {
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }
}

/// Samples closer than this are a tie, broken by mean cost, then mean duration.
const TIE: f64 = 0.02;

/// Thompson sampling over `candidates` (already filtered to healthy ones): the highest sample of
/// Beta(landed + 1, failed + 1) wins; near-ties go to the cheaper, then the faster.
#[allow(clippy::cast_precision_loss)]
pub fn learned(
    kind: &str,
    candidates: &[&BackendSpec],
    stats: &Stats,
    rng: &mut Rng,
) -> Option<(usize, Vec<RouteScore>)> {
    let scores: Vec<RouteScore> = candidates
        .iter()
        .map(|b| {
            let arm = stats
                .get(&(kind.to_owned(), b.name().to_string()))
                .copied()
                .unwrap_or_default();
            let n = arm.attempts.max(1) as f64;
            RouteScore {
                backend: b.name().clone(),
                sample: rng.beta(arm.landed as f64 + 1.0, arm.failed as f64 + 1.0),
                landed: arm.landed,
                failed: arm.failed,
                mean_cost_usd: (arm.attempts > 0).then(|| arm.cost_usd / n),
                mean_duration_ms: (arm.attempts > 0).then(|| arm.duration_ms / arm.attempts),
            }
        })
        .collect();
    let best = scores
        .iter()
        .map(|s| s.sample)
        .fold(f64::NEG_INFINITY, f64::max);
    let pick = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sample >= best - TIE)
        .min_by(|(_, a), (_, b)| {
            let cost = |s: &RouteScore| s.mean_cost_usd.unwrap_or(0.0);
            let time = |s: &RouteScore| s.mean_duration_ms.unwrap_or(0);
            cost(a)
                .total_cmp(&cost(b))
                .then(time(a).cmp(&time(b)))
                .then(b.sample.total_cmp(&a.sample))
        })
        .map(|(i, _)| i)?;
    Some((pick, scores))
}

/// What a rule's expression sees of a task about to start.
pub struct Facts<'a> {
    pub task: &'a crate::spec::TaskSpec,
    pub attempt: u32,
    pub usd_remaining: f64,
    pub tokens_remaining: f64,
    pub usd_spent: f64,
    pub tokens_spent: u64,
    pub usd_limit: Option<f64>,
    pub tokens_limit: Option<u64>,
    pub risk: Option<&'a str>,
}

impl Facts<'_> {
    #[allow(clippy::cast_possible_truncation)]
    pub fn env(&self) -> BTreeMap<String, Value> {
        let s = |v: &str| Value::Str(v.to_owned());
        let list = |v: &[String]| Value::List(v.iter().map(|x| s(x)).collect());
        let t = self.task;
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let task = BTreeMap::from([
            ("id".to_owned(), s(t.id.as_str())),
            ("title".to_owned(), s(&t.title)),
            ("type".to_owned(), s(t.kind.as_str())),
            ("labels".to_owned(), list(&t.labels)),
            ("paths".to_owned(), list(&t.paths)),
            ("priority".to_owned(), Value::Int(t.priority)),
            (
                "deps".to_owned(),
                Value::List(t.deps.iter().map(|d| s(d.as_str())).collect()),
            ),
        ]);
        let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
        let tokens_remaining = if self.tokens_remaining.is_finite() {
            int(self.tokens_remaining.max(0.0) as u64)
        } else {
            Value::Int(i64::MAX)
        };
        let budget = BTreeMap::from([
            (
                "usd_remaining".to_owned(),
                Value::Double(self.usd_remaining),
            ),
            ("tokens_remaining".to_owned(), tokens_remaining),
            ("usd_spent".to_owned(), Value::Double(self.usd_spent)),
            ("tokens_spent".to_owned(), int(self.tokens_spent)),
            (
                "usd_limit".to_owned(),
                opt(self.usd_limit.map(Value::Double)),
            ),
            ("tokens_limit".to_owned(), opt(self.tokens_limit.map(int))),
        ]);
        BTreeMap::from([
            ("task".to_owned(), Value::Map(task)),
            ("attempt".to_owned(), Value::Int(i64::from(self.attempt))),
            ("budget".to_owned(), Value::Map(budget)),
            ("context_tokens".to_owned(), int(t.context_tokens)),
            ("risk".to_owned(), s(self.risk.unwrap_or("unknown"))),
        ])
    }
}

/// The first rule whose expression holds and whose backend `healthy` accepts: (its index, backend).
/// A rule whose expression fails to evaluate (a type error) does not match.
pub fn first_rule<'a>(
    rules: &'a [RuleSpec],
    compiled: &[Option<Expr>],
    env: &BTreeMap<String, Value>,
    healthy: impl Fn(&BackendSpec) -> bool,
) -> Option<(usize, &'a BackendSpec)> {
    rules.iter().enumerate().find_map(|(i, r)| {
        let holds = compiled
            .get(i)
            .and_then(Option::as_ref)
            .and_then(|e| e.eval(env).ok())
            .is_some_and(|v| v == Value::Bool(true));
        (holds && healthy(&r.backend)).then_some((i, &r.backend))
    })
}

/// The seed of an attempt's learned choice.
pub fn rng_for(run: &str, task: &TaskId, attempt: u32) -> Rng {
    Rng::seeded(&[run, task.as_str(), &attempt.to_string()])
}

/// A backend name as the stats key holds it.
pub fn key(kind: &str, b: &BackendName) -> (String, String) {
    (kind.to_owned(), b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_samples_have_the_right_mean() {
        let mut rng = Rng::seeded(&["t"]);
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| rng.beta(9.0, 3.0)).sum::<f64>() / f64::from(n);
        assert!((mean - 0.75).abs() < 0.01, "{mean}");
    }
}
