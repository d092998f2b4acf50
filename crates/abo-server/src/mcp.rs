//! abo as an MCP server (the official Rust SDK, `rmcp`): the tools of [`tools::TOOLS`] and, as
//! resources, each run's summary (its `abo status --json` document) and event log. Served over
//! stdio by `abo mcp` (the caller is the person who started it, with the CLI's rights) and over
//! streamable HTTP at `/mcp` under `abo serve`, where every request needs a live API token
//! (`Authorization: Bearer`) and each tool the role the REST API asks for the same act.
//!
//! A tool that ran and failed (no such run, a role too low, an invalid backlog's located errors)
//! answers an MCP tool error whose text is the CLI's message; arguments that do not fit the
//! tool's schema, or an unknown tool, are JSON-RPC errors (invalid params).

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::State;
use crate::auth::{Credential, Role};
use crate::error::ApiError;

pub mod explain;
pub mod tools;

/// Who is calling, which decides the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// `abo mcp` over stdio: the person who started it on this machine, who may do what the CLI
    /// does (admin).
    Local,
    /// `/mcp`: the role of the request's token, which [`authenticate`] put in its extensions.
    Token,
}

/// The server: the API's state and who calls.
#[derive(Clone)]
pub struct Mcp {
    st: State,
    caller: Caller,
}

/// Requests larger than this are refused (413): a policy input document can be large.
pub const BODY_LIMIT: usize = 1024 * 1024;

impl Mcp {
    pub fn new(st: State, caller: Caller) -> Self {
        Self { st, caller }
    }

    /// The caller's role for this request.
    fn role(&self, cx: &RequestContext<RoleServer>) -> Option<Role> {
        match self.caller {
            Caller::Local => Some(Role::Admin),
            Caller::Token => cx
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<Role>())
                .copied(),
        }
    }
}

/// An API error as a tool error: the message the CLI prints, and the API's code.
fn tool_error(e: &ApiError) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(e.message.clone())]);
    r.meta = serde_json::from_value(json!({ "abo/code": e.code })).ok();
    r
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ErrorData> {
    serde_json::from_value(v).map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

/// The resources of a run: `abo://runs/ID/summary` and `abo://runs/ID/events`.
fn resource_uri(run: &str, what: &str) -> String {
    format!("abo://runs/{run}/{what}")
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("abo", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "abo turns a backlog of coding tasks into reviewed, tested, policy-checked commits. \
             Read runs and tasks, decide approvals (with a reason), validate backlogs, start and \
             control runs, and ask why a task failed.",
        )
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools: Vec<Value> = tools::TOOLS
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": format!("{} Needs the {} role.", t.description, t.role),
                    "inputSchema": (t.input)(),
                    "outputSchema": (t.output)(),
                })
            })
            .collect();
        from_json(json!({ "tools": tools }))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = tools::find(&req.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`", req.name),
                None,
            ));
        };
        let Some(role) = self.role(&cx) else {
            return Ok(tool_error(&ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an API token is needed: Authorization: Bearer <token>",
            ))
            .into());
        };
        if role < tool.role {
            return Ok(tool_error(&ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {} role; the token is {role}", tool.role),
            ))
            .into());
        }
        let args = req.arguments.unwrap_or_default();
        match tools::call(&self.st, tool, &args).await {
            tools::Outcome::Done(Ok(v)) => Ok(CallToolResult::structured(v).into()),
            tools::Outcome::Done(Err(e)) => Ok(tool_error(&e).into()),
            tools::Outcome::BadArgs(b) => Err(ErrorData::invalid_params(b.0, None)),
        }
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.role(&cx)
            .ok_or_else(|| ErrorData::invalid_request("an API token is needed", None))?;
        let mut runs = self.st.ctx.store.runs().await.map_err(internal)?;
        runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        let mut items = Vec::new();
        for r in &runs {
            items.push(json!({
                "uri": resource_uri(r.id.as_str(), "summary"),
                "name": format!("{} summary", r.id),
                "description": format!("Run {} ({}): its status and tasks, as `abo status --json`.", r.id, r.status),
                "mimeType": "application/json",
            }));
            items.push(json!({
                "uri": resource_uri(r.id.as_str(), "events"),
                "name": format!("{} events", r.id),
                "description": format!("Run {}'s event log, one JSON event a line, as `abo events --json`.", r.id),
                "mimeType": "application/x-ndjson",
            }));
        }
        from_json(json!({ "resources": items }))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.role(&cx)
            .ok_or_else(|| ErrorData::invalid_request("an API token is needed", None))?;
        let not_found =
            || ErrorData::resource_not_found(format!("no resource `{}`", req.uri), None);
        let rest = req.uri.strip_prefix("abo://runs/").ok_or_else(not_found)?;
        let (run, what) = rest.split_once('/').ok_or_else(not_found)?;
        let row = tools::run_row(&self.st, run)
            .await
            .map_err(|e| ErrorData::resource_not_found(e.message, None))?;
        let text = match what {
            "summary" => {
                let doc = tools::status_doc(&self.st, row)
                    .await
                    .map_err(api_internal)?;
                serde_json::to_string_pretty(&doc).map_err(internal)?
            }
            "events" => {
                let evs = explain::run_events(&self.st, &row.id)
                    .await
                    .map_err(api_internal)?;
                let mut out = String::new();
                for e in evs {
                    out.push_str(&e.to_json().to_string());
                    out.push('\n');
                }
                out
            }
            _ => return Err(not_found()),
        };
        let mime = if what == "events" {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let contents = ResourceContents::text(text, req.uri.clone()).with_mime_type(mime);
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorData {
    let _ = ApiError::internal(e);
    ErrorData::internal_error("internal error (see the server's log)", None)
}

fn api_internal(e: ApiError) -> ErrorData {
    ErrorData::internal_error(e.message, None)
}

/// `/mcp`: streamable HTTP, stateless (each request stands alone, so nothing is kept per client
/// and every request is authenticated again), answering JSON.
pub fn http_service(st: State) -> StreamableHttpService<Mcp, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(BODY_LIMIT)
        // Every request needs a bearer token (never the dashboard's cookie), which a page that
        // rebinds a name to this address does not have: the Host check adds nothing, and would
        // refuse `abo serve --addr` beyond loopback.
        .disable_allowed_hosts();
    config.sse_keep_alive = None;
    StreamableHttpService::new(
        move || Ok(Mcp::new(st.clone(), Caller::Token)),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Every `/mcp` request: a live bearer token, whose role goes in the request's extensions for
/// the tools to check; 401 without one.
pub async fn authenticate(
    axum::extract::State(st): axum::extract::State<State>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = matches!(Credential::of(req.headers()), Some(Credential::Bearer(_)));
    if !bearer {
        return ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API token is needed: Authorization: Bearer <token>",
        )
        .into_response();
    }
    match crate::auth::require(&st.ctx.store, req.headers(), Role::Viewer).await {
        Ok(role) => {
            req.extensions_mut().insert(role);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
