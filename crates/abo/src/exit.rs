//! Exit codes and the one place errors become them.

use std::process::ExitCode;

use abo_core::diag::InputErrors;
use abo_core::state::{RunState, RunStatus};

use crate::out::note;

pub(crate) const OK: u8 = 0;
pub(crate) const TASKS_FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;
pub(crate) const INTERNAL: u8 = 3;
pub(crate) const PAUSED: u8 = 4;

/// Bad usage, config or input: exit 2, nothing was started.
#[derive(Debug)]
pub(crate) struct Usage {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Usage {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Usage {}

/// The exit code for a run as it stands.
pub(crate) fn for_run(state: &RunState) -> u8 {
    match &state.status {
        RunStatus::Finished if state.all_landed() => OK,
        RunStatus::Finished | RunStatus::Killed { .. } => TASKS_FAILED,
        RunStatus::Paused { .. } | RunStatus::Planned | RunStatus::Running => PAUSED,
    }
}

/// Whether an error is the user's input (exit 2; HTTP 400), not abo's own failure.
pub(crate) fn is_input(err: &anyhow::Error) -> bool {
    err.downcast_ref::<InputErrors>().is_some()
        || err.downcast_ref::<Usage>().is_some()
        || err.downcast_ref::<abo_core::decide::Rejected>().is_some()
        || err
            .downcast_ref::<abo_runtime::create::CreateError>()
            .is_some_and(|e| e.is_input())
        || matches!(
            err.downcast_ref::<abo_runtime::engine::EngineError>(),
            Some(
                abo_runtime::engine::EngineError::Rejected(_)
                    | abo_runtime::engine::EngineError::Busy { .. }
                    | abo_runtime::engine::EngineError::NoRun(_)
                    | abo_runtime::engine::EngineError::RunBranchLost { .. }
            )
        )
}

/// Prints an error as `error: ...` lines and returns its exit code.
pub(crate) fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(e) = err.downcast_ref::<InputErrors>() {
        for e in &e.0 {
            note!("error: {e}");
        }
        return ExitCode::from(USAGE);
    }
    let input = is_input(err);
    note!("error: {err:#}");
    ExitCode::from(if input { USAGE } else { INTERNAL })
}
