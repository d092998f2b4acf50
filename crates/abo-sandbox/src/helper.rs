//! The helper: applies a [`Profile`] to this (single-threaded, just started) process, then execs
//! the program. Also the host probe for `abo doctor`.

use std::ffi::CString;
use std::path::Path;

use crate::{Layer, Limits, Mode, Network, Profile, SETUP_FAILED, cgroup, fs, net, seccomp};

#[allow(
    clippy::print_stderr,
    reason = "the helper's only channel is the program's stderr"
)]
pub(crate) fn main(args: &[String]) -> i32 {
    let (Some(path), Some("--")) = (args.first(), args.get(1).map(String::as_str)) else {
        eprintln!("abo sandbox: usage: abo __sandbox PROFILE.json -- PROGRAM [ARGS...]");
        return SETUP_FAILED;
    };
    let argv = &args[2..];
    if argv.is_empty() {
        eprintln!("abo sandbox: no program to run");
        return SETUP_FAILED;
    }
    let profile: Profile = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("abo sandbox: reading the profile {path}: {e}");
            return SETUP_FAILED;
        }
    };
    match setup(&profile) {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("abo sandbox: warning: {w}");
            }
        }
        Err(e) => {
            eprintln!("abo sandbox: {e}");
            return SETUP_FAILED;
        }
    }
    let err = exec(argv);
    eprintln!("abo sandbox: could not run `{}`: {err}", argv[0]);
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// A layer that could not be applied: an error under `required`, a warning under `best-effort`.
fn layer(mode: Mode, warnings: &mut Vec<String>, r: Result<(), String>) -> Result<(), String> {
    match (r, mode) {
        (Ok(()), _) => Ok(()),
        (Err(e), Mode::BestEffort) => {
            warnings.push(format!(
                "{e} (sandbox.mode: best-effort: running without it)"
            ));
            Ok(())
        }
        (Err(e), Mode::Required) => Err(e),
    }
}

fn setup(p: &Profile) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    layer(p.mode, &mut warnings, namespaces(p))?;
    for dir in &p.cgroups {
        let joined = std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cgroup {}: {e}", dir.display()));
        layer(p.mode, &mut warnings, joined)?;
    }
    limits(&p.limits)?;
    match fs::restrict(p) {
        Ok(None) => {}
        Ok(Some(w)) => warnings.push(w),
        Err(e) => layer(p.mode, &mut warnings, Err(format!("landlock: {e}")))?,
    }
    layer(
        p.mode,
        &mut warnings,
        seccomp::install().map_err(|e| format!("seccomp: {e}")),
    )?;
    Ok(warnings)
}

/// The mount namespace for the read-only `.git`, and the network namespace of gates and commands.
fn namespaces(p: &Profile) -> Result<(), String> {
    let isolate_net = p.network == Network::None;
    if p.read_only.is_empty() && !isolate_net {
        return Ok(());
    }
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut flags = libc::CLONE_NEWNS;
    if isolate_net {
        flags |= libc::CLONE_NEWNET;
    }
    if uid != 0 {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: unshare takes flags only; this process is single-threaded (just exec'd).
    if unsafe { libc::unshare(flags) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "namespaces: unshare: {e} (allow unprivileged user namespaces, e.g. `sysctl kernel.unprivileged_userns_clone=1`, or set sandbox.mode: best-effort)"
        ));
    }
    if uid != 0 {
        // The same ids inside: files keep their owner; capabilities stay inside the namespace.
        let w =
            |f: &str, s: String| std::fs::write(f, s).map_err(|e| format!("namespaces: {f}: {e}"));
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    let root = c("/")?;
    // SAFETY: valid C strings; making every mount private keeps what follows in this namespace.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        return Err(format!(
            "mount namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    for f in &p.read_only {
        read_only(f)?;
    }
    if isolate_net {
        net::loopback_up().map_err(|e| format!("network namespace: {e}"))?;
    }
    Ok(())
}

fn c(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|e| e.to_string())
}

/// Bind-mounts a file onto itself, read-only.
fn read_only(f: &Path) -> Result<(), String> {
    let p = c(&f.to_string_lossy())?;
    // SAFETY: valid C strings naming an existing file; a bind mount of it onto itself.
    let bound = unsafe {
        libc::mount(
            p.as_ptr(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    // SAFETY: as above; remounting that bind mount read-only.
    let ro = bound == 0
        && unsafe {
            libc::mount(
                std::ptr::null(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        } == 0;
    if ro {
        Ok(())
    } else {
        Err(format!(
            "read-only {}: {}",
            f.display(),
            std::io::Error::last_os_error()
        ))
    }
}

fn limits(l: &Limits) -> Result<(), String> {
    let set = |what: &str, resource, v: Option<u64>| -> Result<(), String> {
        let Some(v) = v else { return Ok(()) };
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: `lim` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(format!(
                "limits: {what}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    set("memory", libc::RLIMIT_AS, l.memory_bytes)?;
    set("processes", libc::RLIMIT_NPROC, l.processes)?;
    set("cpu_time", libc::RLIMIT_CPU, l.cpu_seconds)?;
    set("file_size", libc::RLIMIT_FSIZE, l.file_size_bytes)?;
    set("open_files", libc::RLIMIT_NOFILE, l.open_files)
}

/// Replaces this process with the program (searched on PATH), keeping the environment.
fn exec(argv: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    #[allow(
        clippy::disallowed_methods,
        reason = "the helper replaces itself with the program; nothing is spawned"
    )]
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).exec()
}

pub(crate) fn probe() -> Vec<Layer> {
    let mut out = Vec::new();
    let abi = fs::abi_version();
    out.push(Layer {
        name: "landlock",
        available: abi.is_ok(),
        detail: match &abi {
            Ok(v) => format!("ABI v{v}"),
            Err(e) => format!(
                "unavailable ({e}): needs Linux 5.13+ with Landlock enabled (lsm=landlock,... on the kernel command line)"
            ),
        },
    });
    out.push(Layer {
        name: "landlock network",
        available: abi.as_ref().is_ok_and(|v| *v >= 4),
        detail: match &abi {
            Ok(v) if *v >= 4 => "TCP connect rules (agents reach only the egress proxy)".into(),
            _ => "needs Landlock ABI v4 (Linux 6.7+)".into(),
        },
    });
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).ok();
    let userns = read("/proc/sys/user/max_user_namespaces").is_some_and(|v| v != "0")
        && read("/proc/sys/kernel/unprivileged_userns_clone").is_none_or(|v| v == "1")
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_none_or(|v| v == "0");
    out.push(Layer {
        name: "user namespace",
        available: root || userns,
        detail: if root {
            "not needed: abo runs as root".into()
        } else if userns {
            "unprivileged user namespaces allowed".into()
        } else {
            "unprivileged user namespaces are disabled: `sysctl kernel.unprivileged_userns_clone=1` (and kernel.apparmor_restrict_unprivileged_userns=0)".into()
        },
    });
    let netns = Path::new("/proc/self/ns/net").exists();
    out.push(Layer {
        name: "network namespace",
        available: netns && (root || userns),
        detail: if netns {
            "gates and commands get only their own loopback".into()
        } else {
            "the kernel has no network namespaces (CONFIG_NET_NS)".into()
        },
    });
    let seccomp =
        read("/proc/self/status").is_some_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    out.push(Layer {
        name: "seccomp",
        available: seccomp,
        detail: if seccomp {
            "filter mode".into()
        } else {
            "the kernel has no seccomp (CONFIG_SECCOMP_FILTER)".into()
        },
    });
    let cg = cgroup::available();
    out.push(Layer {
        name: "cgroup",
        available: cg.is_some(),
        detail: match cg {
            Some(v) => format!("{v} (pids and memory limits per attempt)"),
            None => {
                "no cgroup abo may create groups in: process and memory limits are rlimits only"
                    .into()
            }
        },
    });
    out
}
