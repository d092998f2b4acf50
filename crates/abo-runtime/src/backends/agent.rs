//! Agent CLIs as subprocesses: Claude Code, Codex, aider, goose. Each runs in the attempt's
//! worktree with stdin closed, the inherited variables of an enclosing agent session removed, and a
//! watchdog: silent for `timeouts.silence` or past `timeouts.attempt`, its process group is killed;
//! still running a few seconds after its final result, it is stopped and the result kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use abo_core::config::AgentKind;

use super::parse::{Parser, Report};
use crate::process::{self, Groups, Spec, Streamed};

/// How long an agent may keep running after printing its final result.
pub const AFTER_RESULT_GRACE: Duration = Duration::from_secs(5);

/// What an agent is asked to do, as built from its backend spec.
#[derive(Clone, Debug)]
pub struct Invocation<'a> {
    pub kind: AgentKind,
    pub command: &'a str,
    pub model: Option<&'a str>,
    pub max_turns: Option<u32>,
    pub permission_mode: Option<&'a str>,
    pub extra_args: &'a [String],
    pub prompt: &'a str,
    pub prompt_file: &'a Path,
    /// aider writes its analytics here.
    pub analytics_log: &'a Path,
    /// Claude Code's own spending cap: the attempt's USD reservation.
    pub max_budget_usd: Option<f64>,
    /// The tool's version, as its `--version` printed it (`None`: unknown).
    pub version: Option<Version>,
    /// abo's sandbox encloses the agent (`sandbox.mode` is not `off`).
    pub sandboxed: bool,
    /// codex and aider: the OpenAI-compatible endpoint (`base_url:`), and the variable that holds
    /// its key, if one is sent.
    pub base_url: Option<&'a str>,
    pub key_env: Option<&'a str>,
    /// A directory of the attempt the agent may write: aider's chat and input history go there,
    /// not into the worktree (where they would become part of the change).
    pub scratch: &'a Path,
    /// abo's MCP server for this attempt (its `check` tool), and Claude Code's configuration file
    /// naming it.
    pub mcp: Option<(&'a crate::check::Server, &'a Path)>,
}

/// The name Claude Code gives the `check` tool of the MCP server `abo`.
pub const CLAUDE_CHECK_TOOL: &str = "mcp__abo__check";

/// Whether the user's `args:` choose Codex's sandbox themselves (clap refuses a second `-s`).
fn codex_sandbox_chosen(args: &[String]) -> bool {
    args.iter().any(|a| {
        a == "-s"
            || a == "--sandbox"
            || a.starts_with("--sandbox=")
            || (a.starts_with("-s") && !a.starts_with("--"))
            || a == "--dangerously-bypass-approvals-and-sandbox"
            || a == "--full-auto"
    })
}

/// Whether the user's `args:` say themselves whether aider uses git.
fn aider_git_chosen(args: &[String]) -> bool {
    args.iter().any(|a| a == "--git" || a == "--no-git")
}

/// Codex's own sandbox for this invocation, as abo chose it (`None`: the user's `args:` did).
/// Inside abo's sandbox Codex's cannot work (it needs namespaces and seccomp of its own, which
/// abo's refuses), so it is off there and abo's sandbox is the boundary.
pub fn codex_sandbox(i: &Invocation<'_>) -> Option<&'static str> {
    if codex_sandbox_chosen(i.extra_args) {
        None
    } else if i.sandboxed {
        Some("danger-full-access")
    } else {
        Some("workspace-write")
    }
}

/// A TOML string (what `codex -c key=value` parses its value as).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A tool's version, the first `MAJOR.MINOR.PATCH` its `--version` prints (`2.1.332 (Claude
/// Code)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Option<Self> {
        text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .find_map(|word| {
                let mut n = word.trim_start_matches('v').split('.');
                let v = Self(
                    n.next()?.parse().ok()?,
                    n.next()?.parse().ok()?,
                    n.next()?.parse().ok()?,
                );
                n.next().is_none().then_some(v)
            })
    }
}

/// `ops/agents.lock`: the agent CLIs abo's tests run for real, at the versions they pin.
const AGENTS_LOCK: &str = include_str!("../../../../ops/agents.lock");

/// The npm package and exact version of `kind` that abo is tested with (`ops/agents.lock`).
pub fn certified(kind: AgentKind) -> Option<(&'static str, &'static str)> {
    AGENTS_LOCK
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == kind.as_str()).then_some(())?;
            Some((w.next()?, w.next()?))
        })
}

/// The versions of agent executables abo has asked, by file (path, modification time, size), so
/// that the check runs once per executable and process, and again when the file is replaced.
#[derive(Debug, Default)]
pub struct Versions(
    std::sync::Mutex<
        std::collections::HashMap<(PathBuf, std::time::SystemTime, u64), Option<Version>>,
    >,
);

impl Versions {
    /// The key of `command` as it resolves now, if it does.
    pub fn key(command: &str) -> Option<(PathBuf, std::time::SystemTime, u64)> {
        let path = process::find_executable(command)?.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        Some((path, meta.modified().ok()?, meta.len()))
    }

    pub fn get(&self, key: &(PathBuf, std::time::SystemTime, u64)) -> Option<Option<Version>> {
        self.0.lock().ok()?.get(key).copied()
    }

    pub fn insert(&self, key: (PathBuf, std::time::SystemTime, u64), v: Option<Version>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, v);
        }
    }
}

/// The first Claude Code with `--permission-prompts none`: what would ask for a permission is
/// denied instead (older ones deny in `-p` too, but may wait for an answer that never comes).
pub const CLAUDE_PERMISSION_PROMPTS: Version = Version(2, 1, 259);

/// The permission mode Claude Code gets unless the backend names one: it edits files in the
/// worktree without asking; anything else it would ask for is denied.
pub const CLAUDE_PERMISSION_MODE: &str = "acceptEdits";

/// The command line for each tool, as its documentation gives it for non-interactive use.
pub fn argv(i: &Invocation<'_>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &str| a.push(s.to_owned());
    match i.kind {
        AgentKind::ClaudeCode => {
            for s in ["-p", "--output-format", "stream-json", "--verbose"] {
                push(s);
            }
            // Both take several values: an option must follow them, never the prompt.
            if let Some((_, config)) = i.mcp {
                push("--mcp-config");
                push(&config.to_string_lossy());
                // Allowed ahead: nobody answers a permission prompt.
                push("--allowedTools");
                push(CLAUDE_CHECK_TOOL);
            }
            push("--permission-mode");
            push(i.permission_mode.unwrap_or(CLAUDE_PERMISSION_MODE));
            // Nobody answers a prompt in an unattended run: a would-be prompt is a denial.
            if i.version.is_some_and(|v| v >= CLAUDE_PERMISSION_PROMPTS) {
                push("--permission-prompts");
                push("none");
            }
            if let Some(t) = i.max_turns {
                push("--max-turns");
                push(&t.to_string());
            }
            if let Some(usd) = i.max_budget_usd {
                push("--max-budget-usd");
                push(&format!("{usd:.4}"));
            }
            if let Some(m) = i.model {
                push("--model");
                push(m);
            }
        }
        AgentKind::Codex => {
            push("exec");
            push("--json");
            if let Some(mode) = codex_sandbox(i) {
                push("-s");
                push(mode);
            }
            if let Some(url) = i.base_url {
                // A provider of its own, so that the user's `model_provider` and its settings
                // (another base URL, its auth) do not apply.
                let mut set = |k: &str, v: &str| {
                    a.push("-c".to_owned());
                    a.push(format!("{k}={}", toml_string(v)));
                };
                set("model_provider", "abo");
                set("model_providers.abo.name", "abo");
                set("model_providers.abo.base_url", url);
                set("model_providers.abo.wire_api", "responses");
                if let Some(k) = i.key_env {
                    set("model_providers.abo.env_key", k);
                }
            }
            if let Some((server, _)) = i.mcp {
                let env: Vec<String> = server
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={}", toml_string(v)))
                    .collect();
                a.push("-c".to_owned());
                a.push(format!(
                    "mcp_servers.abo.command={}",
                    toml_string(&server.command)
                ));
                a.push("-c".to_owned());
                a.push(format!(
                    "mcp_servers.abo.args=[{}]",
                    toml_string(crate::check::SERVER_ARG)
                ));
                a.push("-c".to_owned());
                a.push(format!("mcp_servers.abo.env={{{}}}", env.join(",")));
            }
            let mut push = |s: &str| a.push(s.to_owned());
            if let Some(m) = i.model {
                push("-m");
                push(m);
            }
        }
        AgentKind::Aider => {
            push("--message-file");
            push(&i.prompt_file.to_string_lossy());
            // Unattended: no questions, no update check, no release notes, no model warnings
            // (each of which asks to open a browser). Analytics are not sent, only logged. No
            // URL in the prompt is fetched: with `--yes-always` aider would say yes to adding it,
            // then to pip-installing Playwright to scrape it (into its own installation, from
            // PyPI: in the sandbox the proxy refuses that and the attempt fails).
            for s in [
                "--yes-always",
                "--no-auto-commits",
                "--no-pretty",
                "--no-check-update",
                "--no-show-release-notes",
                "--no-show-model-warnings",
                "--no-detect-urls",
                "--disable-playwright",
                "--no-analytics",
                "--analytics-log",
            ] {
                push(s);
            }
            push(&i.analytics_log.to_string_lossy());
            // aider runs `git add` on the files it creates, and the worktree's git directory is
            // read-only in the sandbox (a new file would stay empty): abo reads and commits the
            // change itself, as for every backend. Nor does aider add itself to `.gitignore`.
            if !aider_git_chosen(i.extra_args) {
                push("--no-git");
                push("--no-gitignore");
            }
            push("--chat-history-file");
            push(&i.scratch.join("aider.chat.history.md").to_string_lossy());
            push("--input-history-file");
            push(&i.scratch.join("aider.input.history").to_string_lossy());
            if let Some(url) = i.base_url {
                push("--openai-api-base");
                push(url);
            }
            if let Some(m) = i.model {
                push("--model");
                push(m);
            }
        }
        AgentKind::Goose => {
            push("run");
            push("-i");
            push(&i.prompt_file.to_string_lossy());
            for s in ["--output-format", "stream-json", "--no-session"] {
                push(s);
            }
            if let Some((server, _)) = i.mcp {
                let env: Vec<String> = server.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                push("--with-extension");
                push(&format!(
                    "{} {} {}",
                    env.join(" "),
                    server.command,
                    crate::check::SERVER_ARG
                ));
            }
            if let Some(m) = i.model {
                push("--model");
                push(m);
            }
        }
    }
    a.extend(i.extra_args.iter().cloned());
    // Claude Code and Codex take the prompt as their last argument.
    if matches!(i.kind, AgentKind::ClaudeCode | AgentKind::Codex) {
        a.push(i.prompt.to_owned());
    }
    a
}

/// The variables Claude Code sets in the processes it runs, marking them as inside its session.
/// Everything else named `CLAUDE_CODE_*` is the user's own setting (`CLAUDE_CODE_OAUTH_TOKEN`,
/// `CLAUDE_CODE_USE_BEDROCK`, `CLAUDE_CODE_MAX_RETRIES`, ...) and is kept.
const CLAUDE_SESSION_VARS: [&str; 8] = [
    "CLAUDECODE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_CODE_SSE_PORT",
    "CLAUDE_CODE_SESSION_ID",
    "CLAUDE_CODE_CHILD_SESSION",
    "CLAUDE_CODE_SESSION_ATTENDED",
    "CLAUDE_CODE_EXECPATH",
    "CLAUDE_PID",
];

/// Variables an enclosing agent session sets; a nested agent must not inherit them.
pub fn inherited_agent_vars(env: impl IntoIterator<Item = String>) -> Vec<String> {
    env.into_iter()
        .filter(|k| CLAUDE_SESSION_VARS.contains(&k.as_str()) || k.starts_with("CODEX_SANDBOX"))
        .collect()
}

/// Whether the tool prints a final result event whose absence means the run did not finish.
fn prints_result(kind: AgentKind) -> bool {
    !matches!(kind, AgentKind::Aider)
}

/// `: LINE`, the last line the agent wrote to stderr (at most 300 characters), or nothing: what a
/// CLI that gives up before its first event says, e.g. Claude Code refusing bypassPermissions as
/// root outside a sandbox.
fn last_words(stderr_log: &Path) -> String {
    let text = std::fs::read_to_string(stderr_log).unwrap_or_default();
    match text.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(l) => format!(": {}", l.chars().take(300).collect::<String>()),
        None => String::new(),
    }
}

pub struct Ran {
    pub report: Report,
    pub streamed: Option<Streamed>,
    /// Why the attempt failed, if it did.
    pub failure: Option<String>,
    /// The failure is a configuration error no other attempt would avoid.
    pub permanent: bool,
    pub transcript: PathBuf,
}

pub struct Limits<'a> {
    pub attempt: Duration,
    pub silence: Duration,
    pub meter: Option<Meter<'a>>,
    /// The sandbox the agent runs in (`None`: `sandbox.mode: off`).
    pub sandbox: Option<crate::sandbox::Sandboxed>,
    /// The egress proxy's refusals that a change of `sandbox.agent_hosts` would fix: the first
    /// stops the agent.
    pub refused: Option<tokio::sync::watch::Receiver<Option<crate::egress::Refusal>>>,
    /// `true` while abo answers the agent's `check`: its silence is not counted then.
    pub checking: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The attempt's reservation, enforced while the agent streams: past it, the agent is stopped.
pub struct Meter<'a> {
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
    pub prices: &'a abo_core::pricing::PriceTable,
    /// The configured model, when the agent has not named one yet.
    pub model: Option<&'a str>,
}

impl Meter<'_> {
    /// Why the agent must stop, if it spent past its reservation.
    pub fn over(&self, r: &Report) -> Option<String> {
        let used = r.used_so_far();
        if let Some(cap) = self.tokens
            && used.total() > cap
        {
            return Some(format!(
                "it used {} tokens, past its reservation of {cap}",
                used.total()
            ));
        }
        let spent = r.cost_usd.or_else(|| {
            let model = r.model.as_deref().or(self.model)?;
            self.prices.cost(model, &used)
        });
        match (self.usd, spent) {
            (Some(cap), Some(s)) if s > cap => Some(format!(
                "it spent ${s:.4}, past its reservation of ${cap:.4}"
            )),
            _ => None,
        }
    }
}

pub async fn run(
    i: &Invocation<'_>,
    cwd: &Path,
    env: Vec<(String, String)>,
    scratch: &Path,
    limits: &Limits<'_>,
    groups: &Groups,
) -> Ran {
    let transcript = scratch.join("transcript.jsonl");
    let mut spec = Spec::new(i.command, cwd).args(argv(i));
    spec.env = env;
    spec.env_remove = inherited_agent_vars(std::env::vars().map(|(k, _)| k));
    spec.env_remove
        .extend(crate::git::GIT_ENV_REMOVE.iter().map(|s| (*s).to_owned()));
    spec.timeout = Some(limits.attempt);
    spec.log = Some(scratch.join("agent.stderr.log"));
    spec.sandbox = limits.sandbox.clone();
    let mut parser = Parser::new(i.kind);
    let mut overspent = None;
    let result = process::run_streaming(
        &spec,
        groups,
        limits.silence,
        AFTER_RESULT_GRACE,
        &transcript,
        crate::egress::first_refusal(limits.refused.clone()),
        limits.checking.clone(),
        |l| {
            let line = parser.line(l);
            // Past the final result the work is done: what it cost is charged, not stopped.
            if line != process::Line::Final
                && let Some(m) = &limits.meter
                && let Some(why) = m.over(parser.report())
            {
                overspent = Some(why);
                return process::Line::Stop;
            }
            line
        },
    )
    .await;
    if i.kind == AgentKind::Aider {
        // The agent writes it: read bounded, like every log.
        let read =
            std::fs::metadata(i.analytics_log).map(|_| crate::artifacts::read_log(i.analytics_log));
        let note = match read {
            Ok(log) => format!(
                "abo: aider's analytics log has {} message_send events\n",
                parser.aider_analytics(&log)
            ),
            Err(e) => format!(
                "abo: aider wrote no analytics log at {}: {e}\n",
                i.analytics_log.display()
            ),
        };
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(scratch.join("agent.stderr.log"))
        {
            let _ = f.write_all(note.as_bytes());
        }
    }
    if i.kind == AgentKind::Aider {
        parser.aider_finish();
    }
    let report = parser.into_report();
    let name = i.kind.as_str();
    let streamed = match result {
        Ok(s) => s,
        Err(e) => {
            return Ran {
                report,
                streamed: None,
                failure: Some(format!("could not start `{}`: {e}", i.command)),
                permanent: false,
                transcript,
            };
        }
    };
    let o = &streamed.outcome;
    // A refusal ends the attempt as a configuration error, also when the agent gave up first.
    let refusal = streamed.stopped_for.clone().or_else(|| {
        limits
            .refused
            .as_ref()
            .and_then(|r| r.borrow().as_ref().map(crate::egress::Refusal::reason))
    });
    let failure = if let Some(why) = &streamed.stopped_for {
        Some(format!(
            "{name} was stopped: {}",
            crate::egress::refused_failure(why)
        ))
    } else if let Some(why) = overspent.filter(|_| streamed.stopped) {
        Some(format!("{name} was stopped: {why}"))
    } else if streamed.silent {
        Some(format!(
            "{name} printed nothing for {} (timeouts.silence)",
            abo_core::units::Dur(limits.silence)
        ))
    } else if o.timed_out {
        Some(format!(
            "{name} timed out after {} (timeouts.attempt)",
            abo_core::units::Dur(limits.attempt)
        ))
    } else if streamed.stopped
        && let Some(err) = &report.error
    {
        Some(format!("{name} was stopped: {err}"))
    } else if o.killed {
        Some(format!("{name} was stopped by abo"))
    } else if let Some(err) = &report.error {
        Some(format!("{name} reported an error: {err}"))
    } else if prints_result(i.kind) && !report.finished {
        let how = o
            .exit
            .map_or_else(|| o.describe(None), |c| format!("exited with {c}"));
        Some(format!(
            "{name} {how} without printing a result{}",
            last_words(&scratch.join("agent.stderr.log"))
        ))
    } else if !streamed.stopped_after_result && o.exit != Some(0) {
        Some(format!(
            "{name} {}{}",
            o.describe(None),
            last_words(&scratch.join("agent.stderr.log"))
        ))
    } else {
        None
    };
    let (failure, permanent) = match (failure, refusal) {
        (Some(f), Some(why)) if streamed.stopped_for.is_none() => (
            Some(format!("{f}; {}", crate::egress::refused_failure(&why))),
            true,
        ),
        (Some(f), Some(_)) => (Some(f), true),
        (f, _) => (f, false),
    };
    Ran {
        report,
        streamed: Some(streamed),
        failure,
        permanent,
        transcript,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_kept_per_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("claude");
        std::fs::write(&exe, "#!/bin/sh\necho 2.1.332\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cmd = exe.to_str().unwrap();
        let versions = Versions::default();
        let key = Versions::key(cmd).unwrap();
        assert_eq!(versions.get(&key), None);
        versions.insert(key.clone(), Some(Version(2, 1, 332)));
        assert_eq!(versions.get(&key), Some(Some(Version(2, 1, 332))));
        // Replaced (here: another size), it is asked again.
        std::fs::write(&exe, "#!/bin/sh\necho 2.1.333 (Claude Code)\n").unwrap();
        assert_eq!(versions.get(&Versions::key(cmd).unwrap()), None);
        assert_eq!(Versions::key("/nonexistent/claude"), None);
    }

    /// abo's in-attempt MCP server, as each tool is told of it.
    #[test]
    fn the_check_server_on_each_command_line() {
        let server = crate::check::Server {
            command: "/bin/abo".into(),
            env: vec![
                ("ABO_CHECK_TOKEN".into(), "t0k".into()),
                ("ABO_CHECK_PROXY".into(), "http://127.0.0.1:9".into()),
            ],
        };
        let config = Path::new("/s/abo-mcp.json");
        let i = Invocation {
            kind: AgentKind::ClaudeCode,
            command: "claude",
            model: None,
            max_turns: None,
            permission_mode: None,
            extra_args: &[],
            prompt: "do it",
            prompt_file: Path::new("/s/prompt.md"),
            analytics_log: Path::new("/s/aider.jsonl"),
            max_budget_usd: None,
            version: None,
            sandboxed: true,
            base_url: None,
            key_env: None,
            scratch: Path::new("/s"),
            mcp: Some((&server, config)),
        };
        assert_eq!(
            argv(&i).join(" "),
            "-p --output-format stream-json --verbose --mcp-config /s/abo-mcp.json --allowedTools mcp__abo__check --permission-mode acceptEdits do it"
        );
        assert_eq!(
            server.claude_config()["mcpServers"]["abo"],
            serde_json::json!({"type": "stdio", "command": "/bin/abo", "args": ["__mcp-check"],
                "env": {"ABO_CHECK_TOKEN": "t0k", "ABO_CHECK_PROXY": "http://127.0.0.1:9"}})
        );
        assert_eq!(
            argv(&Invocation {
                kind: AgentKind::Codex,
                ..i.clone()
            })
            .join(" "),
            "exec --json -s danger-full-access -c mcp_servers.abo.command=\"/bin/abo\" -c mcp_servers.abo.args=[\"__mcp-check\"] -c mcp_servers.abo.env={ABO_CHECK_TOKEN=\"t0k\",ABO_CHECK_PROXY=\"http://127.0.0.1:9\"} do it"
        );
        assert_eq!(
            argv(&Invocation {
                kind: AgentKind::Goose,
                ..i.clone()
            })
            .join(" "),
            "run -i /s/prompt.md --output-format stream-json --no-session --with-extension ABO_CHECK_TOKEN=t0k ABO_CHECK_PROXY=http://127.0.0.1:9 /bin/abo __mcp-check"
        );
    }

    #[test]
    fn command_lines() {
        let i = Invocation {
            kind: AgentKind::ClaudeCode,
            command: "claude",
            model: Some("sonnet"),
            max_turns: Some(40),
            permission_mode: None,
            extra_args: &[],
            prompt: "do it",
            prompt_file: Path::new("/s/prompt.md"),
            analytics_log: Path::new("/s/aider.jsonl"),
            max_budget_usd: Some(0.5),
            version: Version::parse("2.1.258 (Claude Code)"),
            sandboxed: false,
            base_url: None,
            key_env: None,
            scratch: Path::new("/s"),
            mcp: None,
        };
        assert_eq!(
            argv(&i).join(" "),
            "-p --output-format stream-json --verbose --permission-mode acceptEdits --max-turns 40 --max-budget-usd 0.5000 --model sonnet do it"
        );
        // From the version that has it on, a would-be permission prompt is a denial.
        let newer = Invocation {
            version: Version::parse("2.1.332 (Claude Code)"),
            permission_mode: Some("bypassPermissions"),
            max_turns: None,
            max_budget_usd: None,
            model: None,
            ..i.clone()
        };
        assert_eq!(
            argv(&newer).join(" "),
            "-p --output-format stream-json --verbose --permission-mode bypassPermissions --permission-prompts none do it"
        );
        assert_eq!(
            [
                "2.1.332 (Claude Code)",
                "claude 9.9.9 (fake)",
                "codex-cli 0.46.0",
                "v1.2.3",
                "1.2"
            ]
            .map(Version::parse),
            [
                Some(Version(2, 1, 332)),
                Some(Version(9, 9, 9)),
                Some(Version(0, 46, 0)),
                Some(Version(1, 2, 3)),
                None
            ]
        );
        assert_eq!(
            argv(&Invocation {
                kind: AgentKind::Codex,
                model: Some("gpt-5-codex"),
                ..i.clone()
            })
            .join(" "),
            "exec --json -s workspace-write -m gpt-5-codex do it"
        );
        // In abo's sandbox Codex's own is off; a local endpoint is a provider of its own.
        let codex = Invocation {
            kind: AgentKind::Codex,
            model: Some("gpt-5.5"),
            sandboxed: true,
            base_url: Some("http://127.0.0.1:8000/v1"),
            key_env: Some("GATEWAY_KEY"),
            ..i.clone()
        };
        assert_eq!(
            argv(&codex),
            [
                "exec",
                "--json",
                "-s",
                "danger-full-access",
                "-c",
                r#"model_provider="abo""#,
                "-c",
                r#"model_providers.abo.name="abo""#,
                "-c",
                r#"model_providers.abo.base_url="http://127.0.0.1:8000/v1""#,
                "-c",
                r#"model_providers.abo.wire_api="responses""#,
                "-c",
                r#"model_providers.abo.env_key="GATEWAY_KEY""#,
                "-m",
                "gpt-5.5",
                "do it"
            ]
        );
        assert_eq!(codex_sandbox(&codex), Some("danger-full-access"));
        // The user's args choose Codex's sandbox: abo passes no `-s` of its own.
        for user in [
            &["-s", "read-only"][..],
            &["--sandbox", "workspace-write"],
            &["--sandbox=read-only"],
            &["-sread-only"],
            &["--dangerously-bypass-approvals-and-sandbox"],
        ] {
            let args: Vec<String> = user.iter().map(|s| (*s).to_owned()).collect();
            let inv = Invocation {
                extra_args: &args,
                base_url: None,
                model: None,
                ..codex.clone()
            };
            assert_eq!(codex_sandbox(&inv), None, "{user:?}");
            assert_eq!(
                argv(&inv).join(" "),
                format!("exec --json {} do it", user.join(" "))
            );
        }
        assert_eq!(
            argv(&Invocation {
                kind: AgentKind::Aider,
                model: None,
                ..i.clone()
            })
            .join(" "),
            "--message-file /s/prompt.md --yes-always --no-auto-commits --no-pretty --no-check-update --no-show-release-notes --no-show-model-warnings --no-detect-urls --disable-playwright --no-analytics --analytics-log /s/aider.jsonl --no-git --no-gitignore --chat-history-file /s/aider.chat.history.md --input-history-file /s/aider.input.history"
        );
        let git = ["--git".to_owned()];
        assert_eq!(
            argv(&Invocation {
                kind: AgentKind::Aider,
                model: Some("openai/qwen2.5-coder"),
                base_url: Some("http://127.0.0.1:11434/v1"),
                extra_args: &git,
                ..i.clone()
            })
            .join(" "),
            "--message-file /s/prompt.md --yes-always --no-auto-commits --no-pretty --no-check-update --no-show-release-notes --no-show-model-warnings --no-detect-urls --disable-playwright --no-analytics --analytics-log /s/aider.jsonl --chat-history-file /s/aider.chat.history.md --input-history-file /s/aider.input.history --openai-api-base http://127.0.0.1:11434/v1 --model openai/qwen2.5-coder --git"
        );
        assert_eq!(
            argv(&Invocation {
                kind: AgentKind::Goose,
                model: None,
                ..i
            })
            .join(" "),
            "run -i /s/prompt.md --output-format stream-json --no-session"
        );
        let (package, version) = certified(AgentKind::ClaudeCode).unwrap();
        assert_eq!(package, "@anthropic-ai/claude-code");
        assert!(
            Version::parse(version).is_some_and(|v| v >= CLAUDE_PERMISSION_PROMPTS),
            "{version}"
        );
        assert_eq!(certified(AgentKind::Goose), None);
        let vars = inherited_agent_vars(
            [
                "PATH",
                "CLAUDECODE",
                "CLAUDE_CODE_ENTRYPOINT",
                "CLAUDE_CODE_SSE_PORT",
                "CLAUDE_CODE_OAUTH_TOKEN",
                "CLAUDE_CODE_USE_BEDROCK",
                "CLAUDE_CODE_MAX_RETRIES",
                "CODEX_SANDBOX_NETWORK_DISABLED",
                "CODEX_HOME",
            ]
            .map(String::from),
        );
        // The marks of an enclosing session go; the user's own settings and logins stay.
        assert_eq!(
            vars,
            [
                "CLAUDECODE",
                "CLAUDE_CODE_ENTRYPOINT",
                "CLAUDE_CODE_SSE_PORT",
                "CODEX_SANDBOX_NETWORK_DISABLED"
            ]
        );
    }
}
