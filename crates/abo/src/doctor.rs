//! `abo doctor`: what this machine offers abo. Git, the repository and its store, each agent CLI
//! (found or not, its version), the API-key variables (set or not; never their values), and whether
//! every backend the config names can run here.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use abo_core::config::{AgentKind, ApiKind, BackendConfig, SandboxMode};
use abo_runtime::process::{self, Groups, Spec};

use crate::cli::Cli;
use crate::exit;
use crate::load;
use crate::out::{say, say_json};

#[derive(Default)]
struct Check {
    what: String,
    ok: bool,
    detail: String,
    /// Missing but not needed by this configuration: shown, not a failure.
    absent: bool,
}

/// The version of an agent CLI abo is certified with (`ops/agents.lock`), if it is.
fn certified(kind: AgentKind) -> Option<&'static str> {
    abo_runtime::backends::agent::certified(kind).map(|(_, v)| v)
}

/// The first line `COMMAND --version` prints, within a few seconds.
async fn version(command: &Path) -> String {
    let mut spec = Spec::new(command.as_os_str(), Path::new("/")).args(["--version"]);
    spec.timeout = Some(Duration::from_secs(5));
    match process::run(&spec, &Groups::default()).await {
        Ok(o) if o.success() => {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .into_owned();
            text.lines().next().unwrap_or("").trim().to_owned()
        }
        Ok(o) => format!("--version {}", o.describe(spec.timeout)),
        Err(e) => format!("--version failed: {e}"),
    }
}

pub(crate) async fn doctor(cli: &Cli) -> anyhow::Result<u8> {
    let mut checks = Vec::new();
    let git = process::find_executable("git");
    checks.push(match &git {
        Some(p) => Check {
            what: "git".into(),
            ok: true,
            detail: format!("{} ({})", version(p).await, p.display()),
            ..Default::default()
        },
        None => Check {
            what: "git".into(),
            ok: false,
            detail: "not found on PATH: abo needs git".into(),
            ..Default::default()
        },
    });
    let root = load::repo_root(cli.dir.as_deref()).await.ok();
    let mut config = None;
    match &root {
        Some(r) => {
            checks.push(Check {
                what: "repository".into(),
                ok: true,
                detail: r.display().to_string(),
                ..Default::default()
            });
            // What a killed git left behind stops abo's (and the user's) next git calls.
            let found = abo_runtime::git::Git::new(r.clone()).leftovers();
            if found.is_empty() {
                checks.push(Check {
                    what: "git state".into(),
                    ok: true,
                    detail: "no stale lock, no broken worktree registration".into(),
                    ..Default::default()
                });
            }
            for l in found {
                let fix = if l.removable() {
                    "abo gc (or abo resume) removes it"
                } else if l.age() < abo_runtime::git::repair::STALE {
                    "recent: a git may still be running"
                } else {
                    "locked by a person: git worktree unlock, then git worktree prune"
                };
                checks.push(Check {
                    what: "git state".into(),
                    // A young lock is most likely a git running now: shown, not a failure.
                    ok: l.age() < abo_runtime::git::repair::STALE,
                    detail: format!("{}; {fix}", l.describe()),
                    ..Default::default()
                });
            }
            match load::config(r, cli.config.as_deref()) {
                Ok((c, path)) => {
                    let shown = path.map_or("embedded defaults (no abo.yml)".to_owned(), |p| {
                        p.display().to_string()
                    });
                    checks.push(Check {
                        what: "config".into(),
                        ok: true,
                        detail: shown,
                        ..Default::default()
                    });
                    let store = if load::store_exists(r, cli.store.as_deref(), &c) {
                        match load::store(r, cli.store.as_deref(), &c).await {
                            Ok(s) => Check {
                                what: "store".into(),
                                ok: true,
                                detail: format!(
                                    "{} run(s)",
                                    s.runs().await.map(|r| r.len()).unwrap_or(0)
                                ),
                                ..Default::default()
                            },
                            Err(e) => Check {
                                what: "store".into(),
                                ok: false,
                                detail: format!("{e:#}"),
                                ..Default::default()
                            },
                        }
                    } else {
                        Check {
                            what: "store".into(),
                            ok: true,
                            detail: "not created yet (the first run creates it)".into(),
                            ..Default::default()
                        }
                    };
                    checks.push(store);
                    config = Some(c);
                }
                Err(e) => checks.push(Check {
                    what: "config".into(),
                    ok: false,
                    detail: format!("{e:#}"),
                    ..Default::default()
                }),
            }
        }
        None => checks.push(Check {
            what: "repository".into(),
            ok: true,
            detail: "not in a git repository (only the machine is checked)".into(),
            ..Default::default()
        }),
    }

    // The sandbox: each layer this host enforces; a missing one fails only under `required`.
    let mode = config
        .as_ref()
        .map_or_else(
            || abo_core::config::Sandbox::default().spec(),
            |c| c.sandbox.spec(),
        )
        .mode;
    for l in abo_sandbox::probe() {
        let required = mode == abo_core::config::SandboxMode::Required
            && !matches!(l.name, "cgroup" | "user namespace");
        checks.push(Check {
            what: format!("sandbox: {}", l.name),
            ok: l.available || !required,
            absent: !l.available && !required,
            detail: l.detail,
        });
    }

    // Agent CLIs: the usual names, and every command a configured backend names.
    let mut agents: Vec<(AgentKind, String, String)> = AgentKind::ALL
        .iter()
        .map(|k| (*k, k.as_str().to_owned(), k.default_command().to_owned()))
        .collect();
    let named = config
        .as_ref()
        .map(|c| c.backends.named.clone())
        .unwrap_or_default();
    for (name, b) in &named {
        if let Some((k, a)) = b.agent()
            && let Some(cmd) = &a.command
        {
            agents.push((k, format!("{} (backend {name})", k.as_str()), cmd.clone()));
        }
    }
    for (kind, label, cmd) in agents {
        let found = process::find_executable(&cmd);
        let used = named.iter().any(|(_, b)| {
            b.agent().is_some_and(|(k, a)| {
                a.command
                    .clone()
                    .unwrap_or_else(|| k.default_command().to_owned())
                    == cmd
            })
        });
        checks.push(match found {
            Some(p) => {
                let v = version(&p).await;
                let certified = match certified(kind) {
                    Some(pin)
                        if v.split_whitespace()
                            .any(|w| w.trim_start_matches('v') == pin) =>
                    {
                        "; the version abo is certified with".to_owned()
                    }
                    Some(pin) => format!("; abo is certified with {pin}"),
                    None => String::new(),
                };
                Check {
                    what: format!("agent {label}"),
                    ok: true,
                    detail: format!("{v} ({}){certified}", p.display()),
                    ..Default::default()
                }
            }
            // An agent no backend uses is information, not a problem.
            None => Check {
                what: format!("agent {label}"),
                ok: !used,
                detail: format!("`{cmd}` not found on PATH"),
                absent: !used,
            },
        });
    }

    // API keys: the usual variables and every one the config names. Values are never printed.
    let mut vars: Vec<String> = [ApiKind::Anthropic, ApiKind::Openai]
        .iter()
        .map(|k| k.default_key_env().to_owned())
        .collect();
    for b in named.values() {
        if let Some(v) = b.api().and_then(|(_, a)| a.api_key_env.clone())
            && !vars.contains(&v)
        {
            vars.push(v);
        }
    }
    for v in vars {
        let set = std::env::var(&v).is_ok_and(|s| !s.is_empty());
        let needed = named
            .values()
            .any(|b| b.secret_env().as_deref() == Some(v.as_str()) && needs_key(b));
        checks.push(Check {
            what: format!("key {v}"),
            ok: set || !needed,
            detail: if set { "set".into() } else { "not set".into() },
            absent: !set && !needed,
        });
    }
    if let (Some(c), Some(_)) = (&config, &root) {
        let sandbox = c.sandbox.spec().mode;
        for (name, b) in &c.backends.named {
            // Agents: where their key is while they run (never its value).
            let detail = match b.agent() {
                Some(_) => {
                    let spec = abo_runtime::create::resolve_backend(name, b);
                    let plan = abo_runtime::backends::keys::plan(&spec, sandbox, |k| {
                        std::env::var(k).ok()
                    });
                    let reach = match (&plan.endpoint, sandbox) {
                        (Some(e), SandboxMode::Off) => format!(
                            "; endpoint {}://{}:{} (no sandbox: reached directly)",
                            if e.https { "https" } else { "http" },
                            e.host,
                            e.port
                        ),
                        (Some(e), _) => format!(
                            "; endpoint {}://{}:{}, let through by the egress proxy{}",
                            if e.https { "https" } else { "http" },
                            e.host,
                            e.port,
                            if e.https && plan.held.is_some() {
                                " (the agent trusts its per-attempt CA through NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CODEX_CA_CERTIFICATE)"
                            } else {
                                ""
                            }
                        ),
                        (None, _) => String::new(),
                    };
                    let nested = match (b.agent().map(|(k, _)| k), sandbox) {
                        (Some(AgentKind::Codex), SandboxMode::Off) => {
                            "; Codex keeps its own sandbox (-s workspace-write)"
                        }
                        (Some(AgentKind::Codex), _) => {
                            "; Codex's own sandbox cannot start inside abo's (no namespaces there): abo turns it off and is the boundary"
                        }
                        (Some(AgentKind::Goose), _) => {
                            "; goose is not certified: its adapter follows goose's documented output (it cannot be installed here)"
                        }
                        _ => "",
                    };
                    format!(
                        "kind {}; {}{reach}{nested}",
                        b.kind(),
                        abo_runtime::backends::keys::describe(&plan)
                    )
                }
                None => format!("kind {}", b.kind()),
            };
            checks.push(Check {
                what: format!("backend {name}"),
                ok: true,
                detail,
                ..Default::default()
            });
        }
    }

    let healthy = checks.iter().all(|c| c.ok);
    if cli.json {
        let items: Vec<_> = checks
            .iter()
            .map(|c| json!({"check": c.what, "ok": c.ok, "absent": c.absent, "detail": c.detail}))
            .collect();
        say_json!(json!({ "ok": healthy, "checks": items }));
    } else {
        let width = checks.iter().map(|c| c.what.len()).max().unwrap_or(10);
        for c in &checks {
            let state = if !c.ok {
                "FAIL"
            } else if c.absent {
                "--"
            } else {
                "ok"
            };
            say!("{:<width$}  {:<4}  {}", c.what, state, c.detail);
        }
    }
    Ok(if healthy {
        exit::OK
    } else {
        exit::TASKS_FAILED
    })
}

fn needs_key(b: &BackendConfig) -> bool {
    b.api().is_some_and(|(k, a)| {
        let base = a.base_url.as_deref().unwrap_or(k.default_base_url());
        abo_runtime::backends::key_variable(k, base, a.api_key_env.as_deref()).1
    })
}
