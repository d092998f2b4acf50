//! The sets of tasks a decision looks for, kept up to date as events apply, so that a decision's
//! cost does not grow with the run: which pending tasks may become ready, which are ready (in the
//! order they start), which have an attempt in flight and which hold a worktree.
//!
//! Every set is a function of the tasks' states alone (never of what a decision did), so a state
//! replayed from the log and the live state it was folded into compare equal.

use std::collections::BTreeSet;

use super::TaskState;

/// A task's place in the plan's order.
pub type Position = usize;

/// A dependency the plan does not hold: such a task never becomes ready.
const UNKNOWN: Position = Position::MAX;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    /// Pending tasks whose dependencies have all landed: the next decision makes them ready.
    pub unblocked: BTreeSet<Position>,
    /// Ready tasks by (−priority, position): the order in which they start.
    pub ready: BTreeSet<(i64, Position)>,
    /// Tasks with an attempt in flight.
    pub in_flight: BTreeSet<Position>,
    /// Tasks whose state keeps a worktree alive (in flight, or waiting for a merge approval).
    pub holding: BTreeSet<Position>,
    /// Each task's dependencies.
    deps: Vec<Vec<Position>>,
    /// Each task's dependents.
    dependents: Vec<Vec<Position>>,
    /// Each task's priority.
    priority: Vec<i64>,
}

impl Index {
    /// The index of tasks given as (dependencies, priority) in plan order, their states in `states`.
    pub fn new(tasks: Vec<(Vec<Option<Position>>, i64)>, states: &[&TaskState]) -> Self {
        let n = tasks.len();
        let mut index = Self {
            dependents: vec![Vec::new(); n],
            ..Self::default()
        };
        for (pos, (deps, priority)) in tasks.into_iter().enumerate() {
            let deps: Vec<Position> = deps.into_iter().map(|d| d.unwrap_or(UNKNOWN)).collect();
            for d in &deps {
                if let Some(list) = index.dependents.get_mut(*d) {
                    list.push(pos);
                }
            }
            index.deps.push(deps);
            index.priority.push(priority);
        }
        let at = |p: Position| states.get(p).copied();
        for (pos, state) in states.iter().enumerate() {
            index.enter(pos, state, &at);
        }
        index
    }

    /// Task `pos` went from `old` to `new`; `at` reads any task's (new) state.
    pub fn moved<'a>(
        &mut self,
        pos: Position,
        old: &TaskState,
        new: &TaskState,
        at: &impl Fn(Position) -> Option<&'a TaskState>,
    ) {
        if std::mem::discriminant(old) == std::mem::discriminant(new)
            && old.in_flight().is_some() == new.in_flight().is_some()
            && old.holds_worktree().is_some() == new.holds_worktree().is_some()
        {
            return;
        }
        self.leave(pos, old, at);
        self.enter(pos, new, at);
    }

    fn enter<'a>(
        &mut self,
        pos: Position,
        state: &TaskState,
        at: &impl Fn(Position) -> Option<&'a TaskState>,
    ) {
        match state {
            TaskState::Pending if self.deps_landed(pos, at) => {
                self.unblocked.insert(pos);
            }
            TaskState::Ready => {
                self.ready.insert((self.key(pos), pos));
            }
            TaskState::Landed { .. } => {
                for d in self.dependents.get(pos).cloned().unwrap_or_default() {
                    if matches!(at(d), Some(TaskState::Pending)) && self.deps_landed(d, at) {
                        self.unblocked.insert(d);
                    }
                }
            }
            _ => {}
        }
        if state.in_flight().is_some() {
            self.in_flight.insert(pos);
        }
        if state.holds_worktree().is_some() {
            self.holding.insert(pos);
        }
    }

    fn leave<'a>(
        &mut self,
        pos: Position,
        state: &TaskState,
        _at: &impl Fn(Position) -> Option<&'a TaskState>,
    ) {
        match state {
            TaskState::Pending => {
                self.unblocked.remove(&pos);
            }
            TaskState::Ready => {
                self.ready.remove(&(self.key(pos), pos));
            }
            TaskState::Landed { .. } => {
                for d in self.dependents.get(pos).cloned().unwrap_or_default() {
                    self.unblocked.remove(&d);
                }
            }
            _ => {}
        }
        self.in_flight.remove(&pos);
        self.holding.remove(&pos);
    }

    fn key(&self, pos: Position) -> i64 {
        self.priority.get(pos).map_or(0, |p| p.saturating_neg())
    }

    fn deps_landed<'a>(
        &self,
        pos: Position,
        at: &impl Fn(Position) -> Option<&'a TaskState>,
    ) -> bool {
        self.deps.get(pos).is_none_or(|deps| {
            deps.iter()
                .all(|d| matches!(at(*d), Some(TaskState::Landed { .. })))
        })
    }
}
