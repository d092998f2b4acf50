//! `abo`, the Autonomous Build Operator: the CLI. Parses arguments, wires the store, runtime and
//! config together, and maps every outcome to an exit code here and nowhere else.

mod answer;
mod bench;
mod bench_dashboard;
mod bench_knowledge;
mod cli;
mod commands;
mod context_cmd;
mod daemon;
mod demo;
mod deploy;
mod digest;
mod doctor;
mod exit;
mod load;
mod mcp;
mod mcp_check;
mod out;
mod plan;
mod policy_cmd;
mod policy_diff;
mod progress;
mod serve;
mod stand_in;
mod status;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd, PolicyCmd};

fn main() -> ExitCode {
    // `abo __sandbox PROFILE -- PROGRAM ARGS`: the sandbox helper applies the profile and execs.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(abo_sandbox::HELPER_ARG) {
        let code = abo_sandbox::helper_main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // `abo __mcp-check`: the MCP server of an attempt's agent (its `check` tool), over stdio.
    if args.get(1).map(String::as_str) == Some(abo_runtime::check::SERVER_ARG) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        return match runtime.map(|r| r.block_on(mcp_check::stdio())) {
            Ok(Ok(code)) => ExitCode::from(code),
            Ok(Err(e)) => exit::report(&e),
            Err(e) => exit::report(&anyhow::Error::new(e).context("starting the async runtime")),
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return exit::report(&anyhow::Error::new(e).context("starting the async runtime"));
        }
    };
    match runtime.block_on(dispatch(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => exit::report(&e),
    }
}

async fn dispatch(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Cmd::Init { force } => commands::init(cli, *force).await,
        Cmd::Demo { dir } => demo::demo(cli, dir.as_deref()).await,
        Cmd::Run(args) => commands::run(cli, args).await,
        Cmd::Resume { run, caps } => commands::resume(cli, run, caps).await,
        Cmd::Status { run } => commands::status(cli, run.as_deref()).await,
        Cmd::Events { run, follow } => commands::events(cli, run.as_deref(), *follow).await,
        Cmd::Pause { run } => commands::control(cli, run, "pause").await,
        Cmd::Kill { run } => commands::control(cli, run, "kill").await,
        Cmd::Retry { task, run } => commands::retry(cli, task, run.as_deref()).await,
        Cmd::Gc { older_than } => commands::gc(cli, older_than).await,
        Cmd::Doctor => doctor::doctor(cli).await,
        Cmd::Daemon { interval, addr } => daemon::daemon(cli, interval, addr).await,
        Cmd::Serve { addr } => serve::serve(cli, addr).await,
        Cmd::Mcp => mcp::stdio(cli).await,
        Cmd::Worker {
            repo,
            slots,
            workdir,
            name,
            lease_ttl,
        } => {
            worker::worker(
                cli,
                repo,
                *slots,
                workdir.as_deref(),
                name.as_deref(),
                lease_ttl,
            )
            .await
        }
        Cmd::Context {
            task,
            backlog,
            budget,
        } => context_cmd::context(cli, task, backlog.as_deref(), *budget).await,
        Cmd::Bench { quick, only, dir } => bench::bench(cli, *quick, only, dir.as_deref()).await,
        Cmd::Token { cmd } => serve::token(cli, cmd).await,
        Cmd::Approvals => commands::approvals(cli).await,
        Cmd::Verify { commit } => commands::verify(cli, commit).await,
        Cmd::Deploy { env, profile } => deploy::deploy(cli, env, profile.as_deref()).await,
        Cmd::Report { since } => commands::report(cli, since).await,
        Cmd::Summary { since, notify } => commands::summary(cli, since, *notify).await,
        Cmd::Approve { id, reason } => commands::decide(cli, id, reason.as_deref(), true).await,
        Cmd::Reject { id, reason } => commands::decide(cli, id, reason.as_deref(), false).await,
        Cmd::Decide { id, choose, answer } => {
            answer::decide(cli, id, *choose, answer.as_deref()).await
        }
        Cmd::Policy {
            command: PolicyCmd::Eval { input, show_input },
        } => policy_cmd::eval(cli, input, *show_input).await,
        Cmd::Policy {
            command: PolicyCmd::Test,
        } => policy_cmd::test(cli).await,
        Cmd::Plan {
            ticket,
            backend,
            output,
            force,
        } => plan::plan(cli, ticket, backend.as_deref(), output.as_deref(), *force).await,
    }
}
