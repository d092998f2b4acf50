//! abo's domain, pure: no IO, no clock, no randomness (time and fresh ids are passed in).
//!
//! The data path through this crate: `config` and `backlog` parse the user's files, `plan` validates
//! them into a DAG, `spec` freezes it into the run's `run.created` event, and `state`/`decide` are the
//! run's state machine (`decide` turns commands into events and effects, `apply` folds events).

pub mod autonomy;
pub mod backlog;
pub mod budget;
pub mod config;
pub mod decide;
pub mod deploy;
pub mod diag;
pub mod event;
pub mod expr;
pub mod glob;
pub mod home;
pub mod human;
pub mod ids;
pub mod plan;
pub mod pricing;
pub mod proposal;
pub mod reference;
pub mod report;
pub mod review;
pub mod route;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod ticket;
pub mod units;
pub mod verdict;
pub mod verify;
pub mod verify_schedule;

#[cfg(test)]
mod tests;
