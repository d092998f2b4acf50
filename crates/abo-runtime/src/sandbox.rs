//! The sandbox profile of each process abo runs for an attempt: what a gate, a command backend or
//! an agent CLI may read, write and reach, and the only environment it gets. `abo-sandbox`
//! enforces it (the abo binary re-executed as a helper); this module decides it.

use std::path::{Path, PathBuf};

use abo_core::config::{AgentKind, SandboxMode};
use abo_core::spec::SandboxSpec;
use abo_sandbox::{Limits, Mode, Network, Profile};

use crate::context::Ctx;

/// Who the process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A gate: no network unless `gate_network: allow`, a private HOME.
    Gate,
    /// A `command` backend: as a gate.
    Command,
    /// An agent CLI: a HOME of its own, seeded with copies of the CLI's login and settings from
    /// the user's (so nothing it writes there outlives the attempt or reaches the user's own
    /// sessions), and the network only through the egress proxy on `proxy_port`.
    Agent {
        kind: AgentKind,
        proxy_port: u16,
        keys: Keys,
    },
}

/// Whether an agent gets the key variables its CLI reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// Passed from abo's environment (`credentials: env`, or no key for the proxy to hold).
    Passed,
    /// The egress proxy holds the key: none of them is passed (the caller sets a placeholder).
    HeldByProxy,
}

/// How to run a process in its sandbox: the helper, the profile, the whole environment.
#[derive(Clone, Debug)]
pub struct Sandboxed {
    pub helper: PathBuf,
    pub profile: Profile,
    /// Where the profile is written for the helper.
    pub profile_file: PathBuf,
    /// Every variable the process gets (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// The process's own HOME, removed when it ends (an agent's holds copies of its login).
    pub home: PathBuf,
}

/// Variables every sandboxed process keeps.
const BASE_ENV: [&str; 5] = ["PATH", "HOME", "TMPDIR", "LANG", "TERM"];

/// The files of each agent CLI's state, relative to HOME, copied into the attempt's own HOME: the
/// user's settings for it and, where the CLI keeps its own key (`true`), its login. Nothing else of
/// the user's is copied, and nothing is copied back.
fn agent_state(kind: AgentKind) -> &'static [(&'static str, bool)] {
    match kind {
        AgentKind::ClaudeCode => &[
            (".claude.json", true),
            (".claude/.credentials.json", true),
            (".claude/settings.json", false),
        ],
        AgentKind::Codex => &[(".codex/auth.json", true), (".codex/config.toml", false)],
        AgentKind::Aider => &[
            // It may name keys (`openai-api-key:`).
            (".aider.conf.yml", true),
            (".aider.model.settings.yml", false),
            (".aider.model.metadata.json", false),
        ],
        AgentKind::Goose => &[
            (".config/goose/config.yaml", false),
            (".config/goose/secrets.yaml", true),
        ],
    }
}

/// Copies the CLI's state files (regular files only, at most 1 MiB each) from the user's HOME
/// into `home`; its login only when the agent holds its own key (when the egress proxy holds it,
/// the agent gets no credential at all). Codex's `CODEX_HOME`, when the user set one, is where its
/// files come from, and points at the copy afterwards.
fn seed_agent_home(
    kind: AgentKind,
    keys: Keys,
    user_home: Option<&Path>,
    home: &Path,
    env: &mut Vec<(String, String)>,
) {
    let codex_home = std::env::var_os("CODEX_HOME").map(PathBuf::from);
    for (rel, login) in agent_state(kind) {
        if *login && keys == Keys::HeldByProxy {
            continue;
        }
        let src = match (kind, &codex_home, rel.strip_prefix(".codex/")) {
            (AgentKind::Codex, Some(c), Some(name)) => c.join(name),
            _ => match user_home {
                Some(h) => h.join(rel),
                None => continue,
            },
        };
        let Ok(meta) = std::fs::metadata(&src) else {
            continue;
        };
        if !meta.is_file() || meta.len() > 1 << 20 {
            continue;
        }
        let dst = home.join(rel);
        if let Some(dir) = dst.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let _ = std::fs::copy(&src, &dst);
        }
    }
    if kind == AgentKind::Codex {
        let dir = home.join(".codex");
        let _ = std::fs::create_dir_all(&dir);
        env.push(("CODEX_HOME".into(), dir.to_string_lossy().into_owned()));
    }
    if kind == AgentKind::Aider {
        // aider fetches litellm's model list from raw.githubusercontent.com into a cache in HOME
        // unless the cache is less than a day old and not empty; a fresh HOME would fetch it at
        // every attempt, refused each time by the egress proxy (which then stops aider). A
        // stand-in cache makes aider use the list litellm ships, as LITELLM_LOCAL_MODEL_COST_MAP
        // makes litellm itself.
        let cache = home.join(".aider/caches/model_prices_and_context_window.json");
        if !cache.exists()
            && let Some(dir) = cache.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let _ = std::fs::write(&cache, AIDER_MODEL_CACHE);
        }
        env.push(("LITELLM_LOCAL_MODEL_COST_MAP".into(), "True".into()));
    }
}

/// aider's model cache in an agent's HOME: not empty (aider fetches an empty one again), naming no
/// model (aider then asks litellm, which answers from the list it ships).
const AIDER_MODEL_CACHE: &str =
    "{\"abo\": {\"note\": \"aider's models come from the list litellm ships\"}}\n";

/// The file listing every `.abo/` directory abo has used on this machine, so that no sandbox
/// reads another repository's store, artifacts or proof key.
fn known_dirs_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local/state")))?;
    Some(state.join("abo/known-dirs"))
}

/// The `.abo/` directories abo has used on this machine (that still exist).
pub fn known_state_dirs() -> Vec<PathBuf> {
    known_dirs_file()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect()
}

/// Adds a repository's `.abo/` directory to the machine's list (dropping entries that are gone).
pub fn remember_state_dir(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let Some(file) = known_dirs_file() else {
        return Ok(());
    };
    let dir = dir.canonicalize()?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    if text.lines().any(|l| Path::new(l) == dir) {
        return Ok(());
    }
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // One line appended at once: abo processes registering together all stay on the list.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)?;
    f.write_all(format!("{}\n", dir.display()).as_bytes())?;
    // Now and then the directories that are gone leave the list (written whole and renamed, so a
    // reader never sees half of it; an entry appended meanwhile comes back at its next run).
    if text.lines().count() > 1000 {
        let kept: String = known_state_dirs()
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, kept)?;
        std::fs::rename(&tmp, &file)?;
    }
    Ok(())
}

/// The variables an agent CLI reads to log in: passed to it when set and its key is not held by
/// the egress proxy, and to nothing else.
pub(crate) fn agent_keys(kind: AgentKind) -> &'static [&'static str] {
    match kind {
        AgentKind::ClaudeCode => &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ],
        AgentKind::Codex => &["OPENAI_API_KEY", "CODEX_API_KEY"],
        AgentKind::Aider => &["OPENAI_API_KEY", "ANTHROPIC_API_KEY"],
        AgentKind::Goose => &["ANTHROPIC_API_KEY", "OPENAI_API_KEY"],
    }
}

/// The variables that say where an agent CLI finds its provider: passed to it when set.
fn agent_settings(kind: AgentKind) -> &'static [&'static str] {
    match kind {
        AgentKind::ClaudeCode => &[
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
        ],
        AgentKind::Codex | AgentKind::Aider => &[],
        AgentKind::Goose => &["GOOSE_PROVIDER", "GOOSE_MODEL"],
    }
}

/// CA bundles a user sets for TLS through a corporate proxy or a private gateway: passed to every
/// agent CLI (Node reads `NODE_EXTRA_CA_CERTS`, Python `SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE`,
/// Codex `CODEX_CA_CERTIFICATE`), and trusted by the egress proxy upstream.
pub const CA_VARS: [&str; 4] = [
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CODEX_CA_CERTIFICATE",
];

/// A directory of certificates OpenSSL and rustls read, passed as the bundles are.
const CA_DIR_VAR: &str = "SSL_CERT_DIR";

/// Toolchain managers that find their toolchains through HOME when their variable is unset, with
/// the directory they would use: rustup's proxies (`cargo`, `rustc` on PATH) find no toolchain in
/// a private HOME. Each is passed as an absolute path, read-only like the rest of the host, when
/// the variable is set or its directory exists (credential files in them stay denied by
/// `deny_read`).
const TOOLCHAIN_HOMES: [(&str, &str); 2] = [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")];

fn toolchain_homes(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    home: Option<&Path>,
) -> Vec<(String, String)> {
    TOOLCHAIN_HOMES
        .iter()
        .filter_map(|(name, rel)| {
            let dir = match var(name) {
                Some(v) => PathBuf::from(v),
                None => home?.join(rel),
            };
            (dir.is_absolute() && dir.is_dir())
                .then(|| ((*name).to_owned(), dir.to_string_lossy().into_owned()))
        })
        .collect()
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `~/x` as an absolute path.
pub fn expand(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => h.join(rest),
        _ => PathBuf::from(p),
    }
}

/// What a sandboxed process may not read: `sandbox.deny_read`, abo's own files, any other
/// repository's `.abo/` that abo knows of, and that list itself. abo reads a worktree's files on
/// an agent's behalf (`confined::read`) under the same rules.
pub fn confined_rules(ctx: &Ctx, s: &SandboxSpec) -> crate::confined::Rules {
    let mut deny_read: Vec<PathBuf> = s.deny_read.iter().map(|p| expand(p)).collect();
    deny_read.push(ctx.root.join(".abo"));
    deny_read.extend(known_state_dirs());
    deny_read.extend(known_dirs_file().and_then(|f| f.parent().map(Path::to_path_buf)));
    crate::confined::Rules::new(deny_read)
}

/// The sandbox of one process of an attempt, or `None` when `sandbox.mode` is `off`.
/// `name` makes its cgroup unique; `extra` are the ABO_* variables (and an agent's proxy).
pub fn wrap(
    ctx: &Ctx,
    s: &SandboxSpec,
    role: Role,
    wt: &Path,
    scratch: &Path,
    name: &str,
    extra: Vec<(String, String)>,
) -> Result<Option<Sandboxed>, String> {
    let mode = match s.mode {
        SandboxMode::Off => return Ok(None),
        SandboxMode::BestEffort => Mode::BestEffort,
        SandboxMode::Required => Mode::Required,
    };
    let Some(helper) = ctx.sandbox_helper.clone() else {
        return Err("the sandbox helper (the abo binary) is unknown in this process".into());
    };
    let tmp = scratch.join(format!("{name}.tmp"));
    let private_home = scratch.join(format!("{name}.home"));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut write = vec![wt.to_owned(), tmp.clone()];
    let mut env: Vec<(String, String)> = Vec::new();
    let pass = |k: &str, env: &mut Vec<(String, String)>| {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_owned(), v));
        }
    };
    for k in ["PATH", "LANG", "TERM"] {
        pass(k, &mut env);
    }
    for k in &s.env_pass {
        if !BASE_ENV.contains(&k.as_str()) {
            pass(k, &mut env);
        }
    }
    env.push(("TMPDIR".into(), tmp.to_string_lossy().into_owned()));
    for (k, v) in toolchain_homes(|k| std::env::var_os(k), home().as_deref()) {
        if !s.env_pass.contains(&k) {
            env.push((k, v));
        }
    }
    let network = match role {
        Role::Gate | Role::Command => {
            std::fs::create_dir_all(&private_home)
                .map_err(|e| format!("{}: {e}", private_home.display()))?;
            write.push(private_home.clone());
            env.push(("HOME".into(), private_home.to_string_lossy().into_owned()));
            if s.gate_network {
                Network::Host
            } else {
                Network::None
            }
        }
        Role::Agent {
            kind,
            proxy_port,
            keys,
        } => {
            let _ = std::fs::remove_dir_all(&private_home);
            std::fs::create_dir_all(&private_home)
                .map_err(|e| format!("{}: {e}", private_home.display()))?;
            seed_agent_home(kind, keys, home().as_deref(), &private_home, &mut env);
            write.push(private_home.clone());
            env.push(("HOME".into(), private_home.to_string_lossy().into_owned()));
            let keys_passed: &[&str] = if keys == Keys::Passed {
                agent_keys(kind)
            } else {
                &[]
            };
            let settings = agent_settings(kind).iter();
            for k in keys_passed
                .iter()
                .chain(settings)
                .chain(&CA_VARS)
                .chain(&[CA_DIR_VAR])
            {
                if !s.env_pass.iter().any(|p| p == k) {
                    pass(k, &mut env);
                }
            }
            Network::Proxy { port: proxy_port }
        }
    };
    // What the caller sets replaces what was passed (a placeholder for a held key, the proxy's
    // CA bundle).
    env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    env.extend(extra);
    // abo's own files (the store, artifacts, the proof key, other attempts) are not readable;
    // this attempt's worktree and scratch are.
    let deny_read = confined_rules(ctx, s).deny_read;
    let git_file = wt.join(".git");
    let limits = Limits {
        memory_bytes: s.memory_bytes,
        // Without a cgroup, RLIMIT_NPROC (per user) is the only process limit.
        processes: None,
        cpu_seconds: s.cpu_seconds,
        file_size_bytes: s.file_size_bytes,
        open_files: s.open_files,
    };
    let cg_limits = Limits {
        processes: s.processes,
        ..limits
    };
    // Where no cgroup can be made, the rlimits below stand in.
    let cgroups =
        abo_sandbox::cgroup::prepare(&format!("{}-{name}", scratch_name(scratch)), &cg_limits)
            .unwrap_or_default();
    let limits = Limits {
        processes: if cgroups.is_empty() {
            s.processes
        } else {
            None
        },
        ..limits
    };
    // git inside reads the repository's config: it sees a copy without the credentials CI clones
    // and credential helpers leave there (`http.*.extraheader`, `credential.*`, user:password@).
    let mut masks = Vec::new();
    let config = ctx.root.join(".git/config");
    if let Ok(text) = std::fs::read_to_string(&config) {
        let copy = scratch.join(format!("{name}.gitconfig"));
        std::fs::write(&copy, without_credentials(&text))
            .map_err(|e| format!("{}: {e}", copy.display()))?;
        masks.push((copy, config));
    }
    let profile = Profile {
        mode,
        masks,
        sockets: ctx.sockets.get(std::time::Duration::from_secs(2)),
        deny_read,
        allow_read: vec![wt.to_owned(), scratch.to_owned()],
        write,
        read_only: if git_file.is_file() {
            vec![git_file]
        } else {
            Vec::new()
        },
        network,
        limits,
        cgroups,
    };
    Ok(Some(Sandboxed {
        helper,
        profile,
        profile_file: scratch.join(format!("{name}.sandbox.json")),
        env,
        home: private_home,
    }))
}

/// A git config without its credentials: `credential` sections, `extraheader` settings, and the
/// user and password of URLs.
pub(crate) fn without_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_credential = false;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(section) = t.strip_prefix('[') {
            let name = section.trim_start().to_ascii_lowercase();
            in_credential = name.starts_with("credential");
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let key = t
            .split(['=', ' ', '\t'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if in_credential || key == "extraheader" {
            continue;
        }
        out.push_str(&strip_userinfo(line));
        out.push('\n');
    }
    out
}

/// `scheme://user:password@host/...` without `user:password@`.
fn strip_userinfo(line: &str) -> String {
    let Some(i) = line.find("://") else {
        return line.to_owned();
    };
    let rest = &line[i + 3..];
    let end = rest.find(['/', ' ', '"']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}{}", &line[..i + 3], &rest[at + 1..]),
        None => line.to_owned(),
    }
}

fn scratch_name(scratch: &Path) -> String {
    let mut parts: Vec<String> = scratch
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.reverse();
    parts.join("-")
}

/// Why a run may not start under `mode: required` (a layer this host lacks), or warnings to
/// print under `best-effort` (one per missing layer).
pub fn check(s: &SandboxSpec) -> Result<Vec<String>, String> {
    if s.mode == SandboxMode::Off {
        return Ok(Vec::new());
    }
    let needed = |name: &str| match name {
        // cgroups are used where available; rlimits stand in otherwise.
        "cgroup" => false,
        _ => true,
    };
    let missing: Vec<abo_sandbox::Layer> = abo_sandbox::probe()
        .into_iter()
        .filter(|l| !l.available && needed(l.name))
        .collect();
    match (s.mode, missing.is_empty()) {
        (_, true) => Ok(Vec::new()),
        (SandboxMode::Required, false) => Err(missing
            .iter()
            .map(|l| format!("{}: {}", l.name, l.detail))
            .collect::<Vec<_>>()
            .join("; ")),
        _ => Ok(missing
            .iter()
            .map(|l| {
                format!(
                    "sandbox: {} is not enforced on this host: {}",
                    l.name, l.detail
                )
            })
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rustup's proxies look for `$HOME/.rustup` unless RUSTUP_HOME says where: in a private HOME
    /// `cargo` finds no toolchain. The user's directories are passed as they are, or as set.
    #[test]
    fn toolchain_homes_name_the_users_directories() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".rustup")).unwrap();
        let none = |_: &str| None;
        assert_eq!(
            toolchain_homes(none, Some(home.path())),
            [(
                "RUSTUP_HOME".to_owned(),
                home.path().join(".rustup").display().to_string()
            )]
        );
        let elsewhere = tempfile::tempdir().unwrap();
        let set = |k: &str| (k == "CARGO_HOME").then(|| elsewhere.path().as_os_str().to_owned());
        assert_eq!(
            toolchain_homes(set, Some(home.path())).len(),
            2,
            "CARGO_HOME as set"
        );
        // A relative or missing directory is not passed.
        let relative = |_: &str| Some(std::ffi::OsString::from("rel/dir"));
        assert!(toolchain_homes(relative, None).is_empty());
    }
}
