//! `abo mcp`: abo's MCP server (`abo_server::mcp`) over stdio, for the person who started it on
//! this machine (with the CLI's rights). It acts through the same [`Api`](crate::serve::Api) as
//! `abo serve`; runs it starts or resumes are executed by this process while it lives, and narrated
//! on stderr: stdout carries the protocol alone.

use abo_core::event::StoredEvent;
use abo_core::state::RunState;
use abo_runtime::Observer;
use abo_server::mcp::{Caller, Mcp};
use rmcp::ServiceExt;

use crate::cli::Cli;
use crate::exit;
use crate::out::note;
use crate::progress::describe;
use crate::serve::{Lines, api_with};

/// A run's events, one line each on stderr, prefixed with the run.
pub(crate) struct Notes;

impl Observer for Notes {
    fn on_events(&mut self, _: &RunState, events: &[StoredEvent]) {
        for e in events {
            if let Some(line) = describe(e) {
                note!("{} {line}", e.event.run);
            }
        }
    }

    fn warn(&mut self, message: &str) {
        note!("warning: {message}");
    }
}

pub(crate) async fn stdio(cli: &Cli) -> anyhow::Result<u8> {
    let api = api_with(cli, Lines::Stderr).await?;
    let state = abo_server::State {
        ctx: std::sync::Arc::clone(&api.ctx),
        control: api,
        sessions: abo_server::auth::SessionKey::generate()?,
    };
    let server = Mcp::new(state, Caller::Local)
        .serve(rmcp::transport::stdio())
        .await?;
    tokio::select! {
        r = server.waiting() => { r?; }
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(exit::OK)
}
