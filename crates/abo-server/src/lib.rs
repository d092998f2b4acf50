//! abo's control plane (docs/api.md): the REST API under `/v1`, server-sent events, `/metrics`,
//! `/healthz` and `/openapi.json`, behind API tokens and roles. What changes a run (create, pause,
//! resume, kill, retry, decide) goes through [`Control`], which the abo binary implements with the
//! same code paths as its commands. Every request passes [`guard`]: state-changing requests of the
//! dashboard's session need its CSRF token and the server's own origin, and every response
//! carries the security headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use abo_core::ids::{RunId, TaskId};

pub mod auth;
pub mod dashboard;
pub mod diffview;
pub mod error;
pub mod guard;
pub mod home;
pub mod live;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod run_page;
pub mod shapes;
pub mod summary_page;
pub mod task_page;

pub use error::ApiError;
pub use routes::app;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `POST /v1/runs`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// A backlog path inside the repository.
    pub backlog: String,
    pub profile: Option<String>,
    pub usd: Option<f64>,
    pub tokens: Option<u64>,
    /// A duration: `90s`, `30m`, `2h`.
    pub wall: Option<String>,
}

/// What the API may ask of runs; implemented by the abo binary.
pub trait Control: Send + Sync {
    /// Validates and records a run, starts executing it, and returns its id.
    fn create_run(&self, req: CreateRun) -> BoxFut<'_, Result<RunId, ApiError>>;
    /// `pause`, `resume` or `kill`; returns the run's status after it.
    fn control(&self, run: RunId, what: &'static str) -> BoxFut<'_, Result<String, ApiError>>;
    fn retry(&self, task: TaskId, run: Option<RunId>) -> BoxFut<'_, Result<RunId, ApiError>>;
    /// Approves or rejects an approval (by id, or a task id with one pending).
    fn decide(
        &self,
        approval: String,
        approve: bool,
        reason: String,
    ) -> BoxFut<'_, Result<(), ApiError>>;
    /// Answers an agent's question (a `decision` approval): an option by its number (from 1), or
    /// words (`abo decide`).
    fn answer(
        &self,
        approval: String,
        choose: Option<usize>,
        answer: Option<String>,
    ) -> BoxFut<'_, Result<(), ApiError>>;
    /// The policy bundle of the repository's config on an input (`abo policy eval`).
    fn evaluate_policy(&self, input: serde_json::Value) -> Result<serde_json::Value, ApiError>;
    /// Checks a backlog in the repository as `abo run` does before it records a run, creating
    /// nothing: `{"valid", "tasks", "errors"}`, each error located as the CLI prints it.
    fn validate(&self, backlog: String) -> Result<serde_json::Value, ApiError>;
    /// The policy input for a unified diff applied to HEAD, by a task scoped to `paths` (what the
    /// policy of an attempt making that change would be given).
    fn diff_input(
        &self,
        diff: String,
        paths: Vec<String>,
    ) -> BoxFut<'_, Result<serde_json::Value, ApiError>>;
}

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub ctx: Arc<abo_runtime::Ctx>,
    pub control: Arc<dyn Control>,
    /// Signs the dashboard's CSRF tokens.
    pub sessions: auth::SessionKey,
}
