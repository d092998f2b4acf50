//! The MCP tools: one table ([`TOOLS`]) of names, the role each needs, what it does and its input
//! and output JSON Schemas; `call` runs one. Every tool is a thin layer over what the REST API and
//! the CLI already do (`shapes`, [`Control`](crate::Control), the store), so the answers are the
//! same documents and the errors the same messages.

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use abo_core::ids::{RunId, TaskId, Timestamp};

use crate::auth::Role;
use crate::error::ApiError;
use crate::{CreateRun, State, shapes};

/// One tool: its name, the role it needs, a description, and its schemas.
pub struct Tool {
    pub name: &'static str,
    pub role: Role,
    pub description: &'static str,
    pub input: fn() -> Value,
    pub output: fn() -> Value,
}

/// An input's JSON Schema, as schemars writes it for the type the tool reads its arguments into,
/// with no `$ref`s (clients show the fields of a schema that holds them in place).
fn schema<T: JsonSchema>() -> Value {
    let root = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    let mut v = serde_json::to_value(root).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        // Clients want the object itself; the meta-schema line adds nothing for them.
        o.remove("$schema");
        o.entry("type").or_insert_with(|| json!("object"));
    }
    v
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

fn runs_out() -> Value {
    object(
        json!({ "runs": { "type": "array", "items": { "type": "object" } } }),
        &["runs"],
    )
}

fn run_out() -> Value {
    object(
        json!({ "run": { "type": "object" }, "tasks": { "type": "array", "items": { "type": "object" } } }),
        &["run", "tasks"],
    )
}

fn tasks_out() -> Value {
    object(
        json!({ "run": { "type": "string" }, "tasks": { "type": "array", "items": { "type": "object" } } }),
        &["run", "tasks"],
    )
}

fn task_out() -> Value {
    object(
        json!({ "run": { "type": "string" }, "task": { "type": "object" } }),
        &["run", "task"],
    )
}

fn approvals_out() -> Value {
    object(
        json!({ "approvals": { "type": "array", "items": { "type": "object" } } }),
        &["approvals"],
    )
}

fn decided_out() -> Value {
    object(
        json!({ "approval": { "type": "string" }, "decision": { "enum": ["approved", "rejected"] } }),
        &["approval", "decision"],
    )
}

fn validated_out() -> Value {
    object(
        json!({
            "valid": { "type": "boolean" },
            "tasks": { "type": "array", "items": { "type": "string" } },
            "errors": { "type": "array", "items": { "type": "string" },
                        "description": "Each error located as FILE:LINE:COL: message, as `abo run` prints it." },
        }),
        &["valid", "tasks", "errors"],
    )
}

fn status_out() -> Value {
    object(
        json!({ "run": { "type": "string" }, "status": { "type": "string" } }),
        &["run", "status"],
    )
}

fn retry_out() -> Value {
    object(
        json!({ "run": { "type": "string" }, "task": { "type": "string" }, "retry": { "const": "requested" } }),
        &["run", "task", "retry"],
    )
}

fn explain_out() -> Value {
    object(
        json!({
            "run": { "type": "string" },
            "task": { "type": "string" },
            "status": { "type": "string" },
            "attempts": { "type": "integer" },
            "reason": { "type": ["string", "null"] },
            "reasons": { "type": "array", "items": { "type": "string" } },
            "gate": { "type": ["object", "null"] },
            "policy": { "type": ["object", "null"] },
        }),
        &["run", "task", "status", "reasons", "gate", "policy"],
    )
}

fn policy_out() -> Value {
    object(
        json!({
            "verdict": { "enum": ["allow", "needs_approval", "deny"] },
            "deny": { "type": "array", "items": { "type": "string" } },
            "require_approval": { "type": "array", "items": { "type": "string" } },
            "risk": { "type": "string" },
        }),
        &["verdict", "deny", "require_approval", "risk"],
    )
}

fn summary_out() -> Value {
    object(
        json!({
            "since": { "type": "string" },
            "landed": { "type": "array", "items": { "type": "object" } },
            "waiting": { "type": "array", "items": { "type": "object" } },
            "failed": { "type": "array", "items": { "type": "object" } },
            "cost_usd": { "type": "number" },
            "tokens": { "type": "integer" },
        }),
        &["since", "landed", "waiting", "failed", "cost_usd", "tokens"],
    )
}

/// No arguments.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A run, by id.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArg {
    /// The run's id.
    pub run: String,
}

/// A run, by id; the latest when left out.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaybeRun {
    /// The run's id (default: the latest run).
    pub run: Option<String>,
}

/// A task, in a run or the latest run that has it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArg {
    /// The task's id.
    pub task: String,
    /// The run (default: the latest run with that task).
    pub run: Option<String>,
}

#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// A decision on a pending approval.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideArgs {
    /// The approval's id, or the id of a task with one pending.
    pub approval: String,
    pub decision: Decision,
    /// Why: required, and recorded with the decision.
    pub reason: String,
}

/// A backlog in the repository.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacklogArg {
    /// A YAML backlog, a Markdown plan, or a directory of them: a path inside the repository,
    /// relative to its root.
    pub backlog: String,
}

/// A run to create from a backlog, with its own caps.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// A backlog path inside the repository, relative to its root.
    pub backlog: String,
    /// The autonomy profile.
    pub profile: Option<String>,
    /// The run's spending cap in USD.
    pub usd: Option<f64>,
    /// The run's token cap.
    pub tokens: Option<u64>,
    /// The run's wall time, pauses excluded: `90s`, `30m`, `2h`.
    pub wall: Option<String>,
}

/// What the policy evaluates: a unified diff (as `git diff` writes it) applied to HEAD, for a
/// task scoped to `paths`; or a whole input document, the shape `abo policy eval --input` reads
/// (e.g. the `input` artifact of an attempt's `task.policy` event). One of `diff` and `input`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyArgs {
    /// A unified diff against HEAD.
    pub diff: Option<String>,
    /// With `diff`: the task's path scopes (globs); none means unscoped.
    #[serde(default)]
    pub paths: Vec<String>,
    /// A policy input document.
    pub input: Option<Map<String, Value>>,
}

/// How far back the summary looks.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinceArg {
    /// A duration: `24h` (the default), `7d`.
    pub since: Option<String>,
}

const V: Role = Role::Viewer;
const AP: Role = Role::Approver;
const AD: Role = Role::Admin;

const fn t(
    name: &'static str,
    role: Role,
    description: &'static str,
    input: fn() -> Value,
    output: fn() -> Value,
) -> Tool {
    Tool {
        name,
        role,
        description,
        input,
        output,
    }
}

pub const TOOLS: &[Tool] = &[
    t(
        "runs_list",
        V,
        "Runs, newest first: status, spend, reason.",
        schema::<NoArgs>,
        runs_out,
    ),
    t(
        "run_show",
        V,
        "A run and its tasks (status, cost, reasons): the document of `abo status --json`.",
        schema::<MaybeRun>,
        run_out,
    ),
    t(
        "tasks_list",
        V,
        "A run's tasks.",
        schema::<RunArg>,
        tasks_out,
    ),
    t(
        "task_show",
        V,
        "One task of a run: status, attempts, cost, reason.",
        schema::<TaskArg>,
        task_out,
    ),
    t(
        "approvals_list",
        V,
        "Approvals waiting for a decision, with what they ask.",
        schema::<NoArgs>,
        approvals_out,
    ),
    t(
        "approval_decide",
        AP,
        "Approve or reject a pending approval, with a reason (needs the approver role).",
        schema::<DecideArgs>,
        decided_out,
    ),
    t(
        "backlog_validate",
        V,
        "Check a backlog as `abo run` does before it records a run, creating nothing: its tasks, or every error located.",
        schema::<BacklogArg>,
        validated_out,
    ),
    t(
        "run_start",
        AD,
        "Create a run from a backlog in the repository and execute it (needs the admin role).",
        schema::<StartArgs>,
        status_out,
    ),
    t(
        "run_pause",
        AD,
        "Pause a run: nothing new starts (admin).",
        schema::<RunArg>,
        status_out,
    ),
    t(
        "run_resume",
        AD,
        "Resume a paused or interrupted run (admin).",
        schema::<RunArg>,
        status_out,
    ),
    t(
        "run_kill",
        AD,
        "Kill a run: its processes stop, nothing more lands (admin).",
        schema::<RunArg>,
        status_out,
    ),
    t(
        "task_retry",
        AD,
        "Fresh attempts for a failed, denied or cancelled task (admin).",
        schema::<TaskArg>,
        retry_out,
    ),
    t(
        "task_explain",
        V,
        "Why a task failed: its reasons, the tail of its last failing gate's log, the policy's findings.",
        schema::<TaskArg>,
        explain_out,
    ),
    t(
        "policy_evaluate",
        V,
        "Evaluate the repository's policy bundle on a diff against HEAD (for a task scoped to `paths`), or on a whole input document: the verdict, denials, approvals it would ask, risk.",
        schema::<PolicyArgs>,
        policy_out,
    ),
    t(
        "summary",
        V,
        "Coming home: what landed, what waits for you, what failed and why, what it cost.",
        schema::<SinceArg>,
        summary_out,
    ),
];

/// The tool called `name`.
pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

/// Arguments that do not fit the tool's schema: the message names the field.
#[derive(Debug)]
pub struct BadArgs(pub String);

fn args<T: DeserializeOwned>(tool: &str, a: &Map<String, Value>) -> Result<T, BadArgs> {
    serde_json::from_value(Value::Object(a.clone())).map_err(|e| BadArgs(format!("{tool}: {e}")))
}

/// What a call ends in: a tool's answer or its failure, or arguments it cannot read.
pub enum Outcome {
    Done(Result<Value, ApiError>),
    BadArgs(BadArgs),
}

/// Runs a tool whose role the caller holds.
pub async fn call(st: &State, tool: &Tool, a: &Map<String, Value>) -> Outcome {
    match dispatch(st, tool.name, a).await {
        Ok(r) => Outcome::Done(r),
        Err(b) => Outcome::BadArgs(b),
    }
}

async fn dispatch(
    st: &State,
    name: &str,
    a: &Map<String, Value>,
) -> Result<Result<Value, ApiError>, BadArgs> {
    Ok(match name {
        "runs_list" => {
            args::<NoArgs>(name, a)?;
            runs(st).await
        }
        "run_show" => run_show(st, args::<MaybeRun>(name, a)?.run).await,
        "tasks_list" => tasks(st, &args::<RunArg>(name, a)?.run).await,
        "task_show" => task_show(st, args::<TaskArg>(name, a)?).await,
        "approvals_list" => {
            args::<NoArgs>(name, a)?;
            approvals(st).await
        }
        "approval_decide" => decide(st, args::<DecideArgs>(name, a)?).await,
        "backlog_validate" => st.control.validate(args::<BacklogArg>(name, a)?.backlog),
        "run_start" => start(st, args::<StartArgs>(name, a)?).await,
        "run_pause" => control(st, &args::<RunArg>(name, a)?.run, "pause").await,
        "run_resume" => control(st, &args::<RunArg>(name, a)?.run, "resume").await,
        "run_kill" => control(st, &args::<RunArg>(name, a)?.run, "kill").await,
        "task_retry" => retry(st, args::<TaskArg>(name, a)?).await,
        "task_explain" => {
            let a = args::<TaskArg>(name, a)?;
            super::explain::explain(st, &a.task, a.run.as_deref()).await
        }
        "policy_evaluate" => policy(st, args::<PolicyArgs>(name, a)?).await,
        "summary" => summary(st, args::<SinceArg>(name, a)?.since.as_deref()).await,
        other => return Err(BadArgs(format!("unknown tool `{other}`"))),
    })
}

pub(super) async fn run_row(st: &State, id: &str) -> Result<abo_store::RunRow, ApiError> {
    st.ctx
        .store
        .run(&RunId::new(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))
}

/// The run named, else the latest.
async fn run_or_latest(st: &State, run: Option<&str>) -> Result<abo_store::RunRow, ApiError> {
    match run {
        Some(id) => run_row(st, id).await,
        None => st
            .ctx
            .store
            .runs()
            .await?
            .into_iter()
            .max_by_key(|r| r.created_at)
            .ok_or_else(|| ApiError::not_found("no runs yet")),
    }
}

/// The run named, else the latest run that has `task`.
pub(super) async fn run_of_task(
    st: &State,
    task: &str,
    run: Option<&str>,
) -> Result<abo_store::RunRow, ApiError> {
    match run {
        Some(id) => run_row(st, id).await,
        None => {
            let id = st
                .ctx
                .store
                .runs_with_task(&TaskId::new(task))
                .await?
                .pop()
                .ok_or_else(|| ApiError::not_found(format!("no run has a task `{task}`")))?;
            run_row(st, id.as_str()).await
        }
    }
}

pub(super) async fn status_doc(st: &State, row: abo_store::RunRow) -> Result<Value, ApiError> {
    Ok(shapes::to_json(&shapes::view(&st.ctx, row).await?))
}

async fn runs(st: &State) -> Result<Value, ApiError> {
    let mut runs = st.ctx.store.runs().await?;
    runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(json!({ "runs": runs.iter().map(shapes::run_brief).collect::<Vec<_>>() }))
}

async fn run_show(st: &State, run: Option<String>) -> Result<Value, ApiError> {
    let row = run_or_latest(st, run.as_deref()).await?;
    status_doc(st, row).await
}

async fn tasks(st: &State, run: &str) -> Result<Value, ApiError> {
    let row = run_row(st, run).await?;
    let id = row.id.clone();
    let doc = status_doc(st, row).await?;
    Ok(json!({ "run": id, "tasks": doc["tasks"] }))
}

pub(super) fn task_of(doc: &Value, task: &str) -> Option<Value> {
    doc["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == task)
        .cloned()
}

async fn task_show(st: &State, a: TaskArg) -> Result<Value, ApiError> {
    let row = run_of_task(st, &a.task, a.run.as_deref()).await?;
    let id = row.id.clone();
    let doc = status_doc(st, row).await?;
    let task = task_of(&doc, &a.task)
        .ok_or_else(|| ApiError::not_found(format!("run {id} has no task `{}`", a.task)))?;
    Ok(json!({ "run": id, "task": task }))
}

async fn approvals(st: &State) -> Result<Value, ApiError> {
    Ok(json!({ "approvals": shapes::approvals(&st.ctx.store.pending_approvals().await?) }))
}

async fn decide(st: &State, a: DecideArgs) -> Result<Value, ApiError> {
    if a.reason.trim().is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    let approve = matches!(a.decision, Decision::Approve);
    st.control
        .decide(a.approval.clone(), approve, a.reason)
        .await?;
    Ok(json!({
        "approval": a.approval,
        "decision": if approve { "approved" } else { "rejected" },
    }))
}

async fn start(st: &State, a: StartArgs) -> Result<Value, ApiError> {
    let id = st
        .control
        .create_run(CreateRun {
            backlog: a.backlog,
            profile: a.profile,
            usd: a.usd,
            tokens: a.tokens,
            wall: a.wall,
        })
        .await?;
    let row = run_row(st, id.as_str()).await?;
    Ok(json!({ "run": id, "status": row.status }))
}

async fn control(st: &State, run: &str, what: &'static str) -> Result<Value, ApiError> {
    let row = run_row(st, run).await?;
    let status = st.control.control(row.id.clone(), what).await?;
    Ok(json!({ "run": row.id, "status": status }))
}

async fn retry(st: &State, a: TaskArg) -> Result<Value, ApiError> {
    let run = st
        .control
        .retry(TaskId::new(&a.task), a.run.map(RunId::new))
        .await?;
    Ok(json!({ "run": run, "task": a.task, "retry": "requested" }))
}

async fn policy(st: &State, a: PolicyArgs) -> Result<Value, ApiError> {
    let input = match (a.diff, a.input) {
        (Some(diff), None) => st.control.diff_input(diff, a.paths).await?,
        (None, Some(input)) => Value::Object(input),
        _ => return Err(ApiError::bad_request("give one of `diff` and `input`")),
    };
    st.control.evaluate_policy(input)
}

async fn summary(st: &State, since: Option<&str>) -> Result<Value, ApiError> {
    let since = since.unwrap_or("24h");
    let back = abo_core::units::Dur::parse(since)
        .map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
    let now = st.ctx.now();
    let from = Timestamp(now.0 - i64::try_from(back.as_millis()).unwrap_or(i64::MAX));
    let s = crate::summary_page::load(&st.ctx.store, from, usize::MAX).await?;
    serde_json::to_value(s).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    /// Over MCP as over REST, one act needs one role.
    #[test]
    fn each_tool_needs_the_role_the_rest_api_asks_for_the_same_act() {
        let same = [
            ("runs_list", "get", "/v1/runs"),
            ("run_show", "get", "/v1/runs/{id}"),
            ("tasks_list", "get", "/v1/runs/{id}/tasks"),
            ("approvals_list", "get", "/v1/approvals"),
            ("approval_decide", "post", "/v1/approvals/{id}/approve"),
            ("run_start", "post", "/v1/runs"),
            ("run_pause", "post", "/v1/runs/{id}/pause"),
            ("run_resume", "post", "/v1/runs/{id}/resume"),
            ("run_kill", "post", "/v1/runs/{id}/kill"),
            ("task_retry", "post", "/v1/tasks/{id}/retry"),
            ("policy_evaluate", "post", "/v1/policy/evaluate"),
            ("summary", "get", "/v1/report"),
        ];
        for (tool, method, path) in same {
            let route = ROUTES
                .iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap();
            assert_eq!(Some(find(tool).unwrap().role), route.role, "{tool}");
        }
    }

    #[test]
    fn every_schema_is_an_object_and_names_are_unique() {
        let mut names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TOOLS.len());
        for t in TOOLS {
            assert_eq!((t.input)()["type"], "object", "{}", t.name);
            assert_eq!((t.output)()["type"], "object", "{}", t.name);
        }
        assert_eq!(
            (find("approval_decide").unwrap().input)()["properties"]["decision"]["enum"],
            json!(["approve", "reject"])
        );
    }
}
