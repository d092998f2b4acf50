//! `abo __mcp-check`: the MCP server (stdio) that an agent CLI starts inside an attempt, with one
//! tool, `check`. It holds nothing itself: each call is `POST http://abo-check.invalid/check`
//! through the attempt's egress proxy ([`PROXY_ENV`]) with the attempt's token ([`TOKEN_ENV`]),
//! and abo, outside the sandbox, runs the task's gates and the policy on the worktree and answers
//! (see `abo_runtime::check`). The tool takes no arguments: what runs, and where, is abo's.

use abo_runtime::check::{HOST, PATH, PROXY_ENV, TOKEN_ENV, TOKEN_HEADER};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const DESCRIPTION: &str = "Run this task's gates and abo's policy on the worktree as it \
     is now, and get what abo would decide and why: the gates that fail with their log's tail, the \
     policy's findings and denied paths, the approvals it would ask. Calls are limited per \
     attempt; abo decides again after you finish.";

struct Check {
    proxy: String,
    token: String,
}

/// `http://127.0.0.1:PORT` as `127.0.0.1:PORT`.
fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

impl Check {
    /// The proxy's answer: its status and body.
    async fn ask(&self) -> std::io::Result<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(authority(&self.proxy)).await?;
        let req = format!(
            "POST http://{HOST}{PATH} HTTP/1.1\r\nHost: {HOST}\r\n{TOKEN_HEADER}: {}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.token
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // The proxy answers with Content-Length (hyper, one full body).
        Ok((status, body.to_owned()))
    }
}

impl ServerHandler for Check {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("abo", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Call `check` before you finish to see whether abo would accept the change.",
            )
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        serde_json::from_value(json!({ "tools": [{
            "name": "check",
            "description": DESCRIPTION,
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
        }]}))
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if req.name != "check" {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`: the only tool is `check`", req.name),
                None,
            ));
        }
        let (status, body) = self.ask().await.map_err(|e| {
            ErrorData::internal_error(format!("could not reach abo through the proxy: {e}"), None)
        })?;
        if status != 200 {
            return Err(ErrorData::internal_error(
                format!("abo refused the check ({status}): {}", body.trim()),
                None,
            ));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| ErrorData::internal_error(format!("abo's answer: {e}"), None))?;
        if let Some(why) = v.get("error").and_then(Value::as_str) {
            return Err(ErrorData::invalid_request(why.to_owned(), None));
        }
        Ok(CallToolResult::structured(v).into())
    }
}

pub(crate) async fn stdio() -> anyhow::Result<u8> {
    let var = |k: &str| {
        std::env::var(k).map_err(|_| {
            anyhow::anyhow!("{k} is not set: abo starts this server inside an attempt")
        })
    };
    let check = Check {
        proxy: var(PROXY_ENV)?,
        token: var(TOKEN_ENV)?,
    };
    let server = check.serve(rmcp::transport::stdio()).await?;
    server.waiting().await?;
    Ok(crate::exit::OK)
}
