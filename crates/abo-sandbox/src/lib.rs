//! The sandbox around every attempt and gate.
//!
//! abo describes what a process may do as a [`Profile`]; the abo binary, re-executed as
//! `abo __sandbox PROFILE.json -- PROGRAM ARGS...`, applies it to itself and then execs the
//! program, so nothing extra is installed and the program's pid (and process group) stay the ones
//! abo started. The layers, in the order the helper applies them:
//!
//! 1. namespaces: a mount namespace where the worktree's `.git` file is bind-mounted read-only,
//!    and, for gates and commands, a network namespace with only its own loopback (a user
//!    namespace first when abo does not run as root);
//! 2. a cgroup (pids, memory) prepared by the caller, then rlimits;
//! 3. Landlock: reads everywhere but the denied paths, writes only to the listed directories, TCP
//!    connections only to the egress proxy's port (agents), no signals outside the sandbox;
//! 4. seccomp: the system calls no build or agent needs fail with `EPERM`;
//! 5. `execvp`.
//!
//! `mode: required` makes a missing layer an error; `best-effort` runs without it and says so.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
mod caps;
pub mod cgroup;
#[cfg(target_os = "linux")]
mod fs;
#[cfg(target_os = "linux")]
mod helper;
#[cfg(target_os = "linux")]
mod net;
#[cfg(target_os = "linux")]
mod relay;
#[cfg(target_os = "linux")]
mod seccomp;
pub mod sockets;

/// The hidden first argument that makes the abo binary the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox";

/// The exit status of the helper when it could not set the sandbox up (the program never ran).
pub const SETUP_FAILED: i32 = 125;

/// What to do when the host lacks a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Refuse to run.
    Required,
    /// Run without the layer, with one warning.
    BestEffort,
}

/// What the process may reach over the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Network {
    /// A network namespace of its own: only its own loopback.
    None,
    /// TCP connections only to this port of abo's egress proxy (on the host's loopback).
    Proxy { port: u16 },
    /// The host's network (`gate_network: allow`).
    Host,
}

/// Resource limits; `None` leaves the inherited one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub open_files: Option<u64>,
}

/// Everything the helper applies before it execs the program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub mode: Mode,
    /// Paths nothing in the sandbox may read (nor write).
    pub deny_read: Vec<PathBuf>,
    /// Paths readable although under a denied one (the worktree under `.abo/`).
    pub allow_read: Vec<PathBuf>,
    /// Directories (and files) the process may create, change and remove things in.
    pub write: Vec<PathBuf>,
    /// Files made read-only by a read-only bind mount (the worktree's `.git` file).
    pub read_only: Vec<PathBuf>,
    /// Files seen as another, read-only: (what is shown, where). The repository's git config is
    /// shown without its credentials.
    #[serde(default)]
    pub masks: Vec<(PathBuf, PathBuf)>,
    /// UNIX sockets bound in the host's other network namespaces ([`sockets::Scan`]): covered
    /// like those of the host's own, which the helper reads itself.
    #[serde(default)]
    pub sockets: Vec<PathBuf>,
    pub network: Network,
    pub limits: Limits,
    /// Cgroup directories the caller prepared ([`cgroup::prepare`]): the process joins them.
    pub cgroups: Vec<PathBuf>,
}

/// One layer of the sandbox, and whether this host can enforce it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layer {
    pub name: &'static str,
    pub available: bool,
    /// The version or detail when available; the fix when not.
    pub detail: String,
}

/// What this host enforces, for `abo doctor` and for refusing `mode: required` up front.
pub fn probe() -> Vec<Layer> {
    #[cfg(target_os = "linux")]
    {
        helper::probe()
    }
    #[cfg(not(target_os = "linux"))]
    {
        vec![Layer {
            name: "sandbox",
            available: false,
            detail: "only Linux is supported: attempts run with best-effort semantics (no sandbox)"
                .into(),
        }]
    }
}

/// The layers this host lacks among those a profile needs.
pub fn missing(profile: &Profile) -> Vec<Layer> {
    probe()
        .into_iter()
        .filter(|l| !l.available)
        .filter(|l| match l.name {
            "network namespace" => profile.network != Network::Host,
            "landlock network" => matches!(profile.network, Network::Proxy { .. }),
            "cgroup" => !profile.cgroups.is_empty(),
            _ => true,
        })
        .collect()
}

/// Runs as the helper: `args` are what follows [`HELPER_ARG`] (`PROFILE.json -- PROGRAM ARGS`).
/// Applies the profile and execs the program; returns only on failure, with the exit status.
pub fn helper_main(args: &[String]) -> i32 {
    #[cfg(target_os = "linux")]
    {
        helper::main(args)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        SETUP_FAILED
    }
}
