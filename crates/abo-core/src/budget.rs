//! Budgets: caps, the reservation an attempt takes before it starts, and the ledger of
//! what a run has charged. Every cap that applies to an attempt (run, task, backend, day, week)
//! must hold its reservation, so spend passes a cap only when a backend overspends its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{BackendName, TaskId, Timestamp};

/// The `source` of a charge for an attempt stopped before its backend reported: its reservation.
pub const INTERRUPTED: &str = "reservation";

/// Money and tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Amount {
    pub usd: f64,
    pub tokens: u64,
}

impl Amount {
    pub fn add(&mut self, o: Amount) {
        self.usd += o.usd;
        self.tokens += o.tokens;
    }

    fn of(self, unit: Unit) -> f64 {
        match unit {
            Unit::Usd => self.usd,
            #[allow(clippy::cast_precision_loss)]
            Unit::Tokens => self.tokens as f64,
            Unit::Wall => 0.0,
        }
    }
}

/// A limit in USD, in tokens, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

impl Cap {
    pub fn is_set(&self) -> bool {
        self.usd.is_some() || self.tokens.is_some()
    }

    fn limit(&self, unit: Unit) -> Option<f64> {
        match unit {
            Unit::Usd => self.usd,
            #[allow(clippy::cast_precision_loss)]
            Unit::Tokens => self.tokens.map(|t| t as f64),
            Unit::Wall => None,
        }
    }
}

/// The caps a run was created with (raised by `abo resume --usd/--tokens/--wall`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetSpec {
    #[serde(default)]
    pub run: Cap,
    /// Each task's default reservation and cap (a task's own `budget:` replaces it).
    #[serde(default)]
    pub task: Cap,
    #[serde(default)]
    pub daily: Cap,
    #[serde(default)]
    pub weekly: Cap,
    #[serde(default)]
    pub per_backend: BTreeMap<String, Cap>,
    /// The run's wall time: time spent running, pauses excluded.
    #[serde(default)]
    pub wall_ms: Option<u64>,
    /// `budget.alert` fires once per cap when spend reaches this fraction of it.
    pub alert_at: f64,
    /// IANA name of the zone whose days and weeks the daily and weekly caps count (default: local).
    #[serde(default)]
    pub timezone: Option<String>,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        Self {
            run: Cap::default(),
            task: Cap::default(),
            daily: Cap::default(),
            weekly: Cap::default(),
            per_backend: BTreeMap::new(),
            wall_ms: None,
            alert_at: 0.8,
            timezone: None,
        }
    }
}

impl BudgetSpec {
    /// Whether any money or token cap is set (the wall time aside).
    pub fn any_spend_cap(&self) -> bool {
        self.run.is_set()
            || self.task.is_set()
            || self.daily.is_set()
            || self.weekly.is_set()
            || self.per_backend.values().any(Cap::is_set)
    }

    pub fn windows_capped(&self) -> bool {
        self.daily.is_set() || self.weekly.is_set()
    }
}

/// New caps given to `abo resume` (or `abo run`): each replaces the run's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
}

impl CapChange {
    pub fn is_empty(&self) -> bool {
        self.usd.is_none() && self.tokens.is_none() && self.wall_ms.is_none()
    }

    pub fn apply(&self, b: &mut BudgetSpec) {
        if let Some(u) = self.usd {
            b.run.usd = Some(u);
        }
        if let Some(t) = self.tokens {
            b.run.tokens = Some(t);
        }
        if let Some(w) = self.wall_ms {
            b.wall_ms = Some(w);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Usd,
    Tokens,
    /// Milliseconds of the run's wall time.
    Wall,
}

/// What a cap limits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Run,
    Task(TaskId),
    Backend(BackendName),
    Daily,
    Weekly,
}

/// One cap: a scope and a unit. Printed and recorded as `run.usd`, `task.<id>.tokens`,
/// `backend.<name>.usd`, `daily.usd`, `weekly.tokens`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapId {
    pub scope: Scope,
    pub unit: Unit,
}

impl fmt::Display for CapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Run => f.write_str("run")?,
            Scope::Task(t) => write!(f, "task.{t}")?,
            Scope::Backend(b) => write!(f, "backend.{b}")?,
            Scope::Daily => f.write_str("daily")?,
            Scope::Weekly => f.write_str("weekly")?,
        }
        f.write_str(match self.unit {
            Unit::Usd => ".usd",
            Unit::Tokens => ".tokens",
            Unit::Wall => ".wall",
        })
    }
}

/// Formats an amount of a unit: `$1.23` or `4,000 tokens`.
pub fn show(unit: Unit, v: f64) -> String {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "token counts and milliseconds, clamped at zero"
    )]
    let whole = v.max(0.0) as u64;
    match unit {
        Unit::Usd => crate::human::usd(v),
        Unit::Tokens => format!("{} tokens", crate::human::tokens(whole)),
        Unit::Wall => crate::human::duration_ms(whole),
    }
}

/// A day or a week of the budget's time zone, and what other runs of the store spent or hold in it.
/// The runtime computes it (time zones and the store are IO); the engine only compares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Charged by other runs in the window, plus their open reservations.
    pub others: Amount,
    /// Caps (`daily.usd`...) an alert was already sent for in this window, by any run.
    pub alerted: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Windows {
    pub day: Window,
    pub week: Window,
}

/// An attempt's reservation: `None` in a unit no cap limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

impl Reservation {
    pub fn amount(&self) -> Amount {
        Amount {
            usd: self.usd.unwrap_or(0.0),
            tokens: self.tokens.unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.usd.is_none() && self.tokens.is_none()
    }
}

/// What a run has spent and holds, folded from its events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    pub spent: Amount,
    pub by_task: BTreeMap<TaskId, Amount>,
    pub by_backend: BTreeMap<BackendName, Amount>,
    /// Open reservations: (task, attempt) -> (backend, reserved).
    pub open: BTreeMap<(TaskId, u32), (BackendName, Amount)>,
    /// Each charge, for the daily and weekly windows.
    pub charges: Vec<(Timestamp, Amount)>,
    /// What reviews cost (`review.charged`), part of `spent`.
    pub reviews: Amount,
    /// Caps this run sent an alert for (daily and weekly ones with their window's start).
    pub alerted: BTreeSet<String>,
    /// Caps that blocked work since the run last resumed.
    pub exhausted: BTreeSet<String>,
    /// Running time before the current stretch, and when the current stretch began.
    pub ran_ms: u64,
    pub running_since: Option<Timestamp>,
}

/// A cap's state: its limit, what is charged against it, what is reserved.
#[derive(Clone, Debug, PartialEq)]
pub struct CapUse {
    pub cap: CapId,
    pub limit: f64,
    pub spent: f64,
    pub reserved: f64,
}

impl CapUse {
    pub fn remaining(&self) -> f64 {
        (self.limit - self.spent - self.reserved).max(0.0)
    }
}

/// Why an attempt may not start.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub cap: CapId,
    pub limit: f64,
    pub spent: f64,
    pub reserved: f64,
    pub needed: f64,
    /// The task's own cap is spent: waiting will not help.
    pub final_: bool,
}

impl Blocked {
    pub fn describe(&self) -> String {
        let u = self.cap.unit;
        if u == Unit::Wall {
            return format!(
                "{} cap {} reached: the run has run {}",
                self.cap,
                show(u, self.limit),
                show(u, self.spent)
            );
        }
        format!(
            "{} cap {} reached: {} spent, {} reserved by attempts in flight, {} needed",
            self.cap,
            show(u, self.limit),
            show(u, self.spent),
            show(u, self.reserved),
            show(u, self.needed)
        )
    }
}

impl Ledger {
    pub fn reserve(&mut self, task: &TaskId, attempt: u32, backend: &BackendName, r: Amount) {
        self.open
            .insert((task.clone(), attempt), (backend.clone(), r));
    }

    /// Charges an attempt's cost and releases its reservation.
    ///
    /// A charge `for_task` counts against the task's own cap too; an interrupted attempt's (its
    /// reservation, its cost unknown) counts only against the shared caps, so a crash does not use
    /// up the task's budget.
    pub fn charge(
        &mut self,
        task: &TaskId,
        attempt: u32,
        backend: &BackendName,
        a: Amount,
        at: Timestamp,
        for_task: bool,
    ) {
        self.open.remove(&(task.clone(), attempt));
        self.spent.add(a);
        if for_task {
            self.by_task.entry(task.clone()).or_default().add(a);
        }
        self.by_backend.entry(backend.clone()).or_default().add(a);
        self.charges.push((at, a));
    }

    pub fn reserved(&self) -> Amount {
        let mut r = Amount::default();
        for (_, a) in self.open.values() {
            r.add(*a);
        }
        r
    }

    fn spent_since(&self, start: Timestamp) -> Amount {
        let mut s = Amount::default();
        for (at, a) in &self.charges {
            if *at >= start {
                s.add(*a);
            }
        }
        s
    }

    /// Milliseconds spent running, pauses excluded.
    pub fn ran(&self, now: Timestamp) -> u64 {
        self.ran_ms
            + self
                .running_since
                .map_or(0, |s| u64::try_from(now.0 - s.0).unwrap_or(0))
    }

    /// Every cap that applies to `task` on `backend`, with its use. The task's own cap counts its
    /// spend across attempts.
    pub fn caps_for(
        &self,
        b: &BudgetSpec,
        task: Option<(&TaskId, Cap)>,
        backend: Option<&BackendName>,
        windows: &Windows,
    ) -> Vec<CapUse> {
        let mut out = Vec::new();
        let reserved = self.reserved();
        let mut push = |scope: Scope, cap: Cap, spent: Amount, held: Amount| {
            for unit in [Unit::Usd, Unit::Tokens] {
                if let Some(limit) = cap.limit(unit) {
                    out.push(CapUse {
                        cap: CapId {
                            scope: scope.clone(),
                            unit,
                        },
                        limit,
                        spent: spent.of(unit),
                        reserved: held.of(unit),
                    });
                }
            }
        };
        push(Scope::Run, b.run, self.spent, reserved);
        if let Some((t, cap)) = task {
            let spent = self.by_task.get(t).copied().unwrap_or_default();
            let mut held = Amount::default();
            for ((ot, _), (_, a)) in &self.open {
                if ot == t {
                    held.add(*a);
                }
            }
            push(Scope::Task(t.clone()), cap, spent, held);
        }
        if let Some(name) = backend
            && let Some(cap) = b.per_backend.get(name.as_str())
        {
            let spent = self.by_backend.get(name).copied().unwrap_or_default();
            let mut held = Amount::default();
            for (ob, a) in self.open.values() {
                if ob == name {
                    held.add(*a);
                }
            }
            push(Scope::Backend(name.clone()), *cap, spent, held);
        }
        for (scope, cap, w) in [
            (Scope::Daily, b.daily, &windows.day),
            (Scope::Weekly, b.weekly, &windows.week),
        ] {
            let mut spent = self.spent_since(w.start);
            spent.add(w.others);
            push(scope, cap, spent, reserved);
        }
        out
    }

    /// The reservation an attempt of `task` on a priced backend takes: the task's cap (its own
    /// `budget:` or `budgets.task_*`) less what the task already spent; without a task cap, all
    /// that remains of the tightest cap. Err when a cap cannot hold it.
    pub fn reservation(
        &self,
        b: &BudgetSpec,
        task: &TaskId,
        task_cap: Cap,
        backend: &BackendName,
        windows: &Windows,
    ) -> Result<Reservation, Blocked> {
        let caps = self.caps_for(b, Some((task, task_cap)), Some(backend), windows);
        let mut r = Reservation::default();
        for unit in [Unit::Usd, Unit::Tokens] {
            let of_unit: Vec<&CapUse> = caps.iter().filter(|c| c.cap.unit == unit).collect();
            if of_unit.is_empty() {
                continue;
            }
            // The task's own cap, else the tightest: what the reservation is taken from.
            let source = of_unit
                .iter()
                .find(|c| matches!(c.cap.scope, Scope::Task(_)))
                .or_else(|| {
                    of_unit
                        .iter()
                        .min_by(|a, b| a.remaining().total_cmp(&b.remaining()))
                })
                .copied();
            let Some(source) = source else { continue };
            let mut want = source.remaining();
            if unit == Unit::Tokens {
                want = want.floor(); // whole tokens: less than one left is no room
            }
            let blocked = |c: &CapUse| Blocked {
                cap: c.cap.clone(),
                limit: c.limit,
                spent: c.spent,
                reserved: c.reserved,
                needed: want,
                final_: matches!(c.cap.scope, Scope::Task(_)),
            };
            if want <= 0.0 {
                return Err(blocked(source));
            }
            if let Some(c) = of_unit
                .iter()
                .find(|c| c.spent + c.reserved + want > c.limit + 1e-9)
            {
                return Err(blocked(c));
            }
            match unit {
                Unit::Usd => r.usd = Some(want),
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Unit::Tokens => r.tokens = Some(want as u64),
                Unit::Wall => {}
            }
        }
        Ok(r)
    }

    /// The key a cap's alert is remembered under (daily and weekly ones per window).
    pub fn alert_key(cap: &CapId, windows: &Windows) -> String {
        match cap.scope {
            Scope::Daily => format!("{cap}@{}", windows.day.start.0),
            Scope::Weekly => format!("{cap}@{}", windows.week.start.0),
            _ => cap.to_string(),
        }
    }
}
