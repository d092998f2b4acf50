//! The helper: applies a [`Profile`] to this (single-threaded, just started) process, then execs
//! the program. Also the host probe for `abo doctor`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::{
    Layer, Limits, Mode, Network, Profile, SETUP_FAILED, caps, cgroup, fs, net, relay, seccomp,
};

#[allow(
    clippy::print_stderr,
    reason = "the helper's only channel is the program's stderr"
)]
pub(crate) fn main(args: &[String]) -> i32 {
    // Whatever descriptors abo inherited from its own parent (a shell's `9<secret`, a CI
    // runner's pipes) are not the sandbox's: only stdin, stdout and stderr go in.
    close_inherited();
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
    match run(&profile, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("abo sandbox: {e}");
            SETUP_FAILED
        }
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

/// The three processes of a sandbox: this helper (abo's child, outside every namespace, doing
/// nothing but wait), the init of a new PID namespace (pid 1: restricted like the program, it
/// reaps orphans and exits with the program's status), and the program (pid 2). When the helper
/// dies (abo killed its process group on a timeout or a kill), init gets SIGKILL, and the kernel
/// kills everything in the namespace with it: nothing the program started survives.
#[allow(
    clippy::print_stderr,
    reason = "the helper's only channel is the program's stderr"
)]
fn run(p: &Profile, argv: &[String]) -> Result<i32, String> {
    let mut warnings = Vec::new();
    for dir in &p.cgroups {
        let joined = std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cgroup {}: {e}", dir.display()));
        layer(p.mode, &mut warnings, joined)?;
    }
    // Read in the host's network namespace, before leaving it: the sockets to mask.
    let sockets = host_unix_sockets(p);
    // An agent's listener comes out of its network namespace over this channel, to a relay that
    // stays in the host's PID and network namespaces.
    let channel = match p.network {
        Network::Proxy { port } => {
            let (inside, outside) = relay::channel()?;
            start_relay(outside, &inside, port)?;
            Some(inside)
        }
        _ => None,
    };
    let isolated = match unshare() {
        Ok(()) => true,
        Err(e) => {
            layer(p.mode, &mut warnings, Err(e))?;
            false
        }
    };
    if !isolated {
        // best-effort without namespaces: the restrictions that need none, then the program.
        restrict(p, &mut warnings)?;
        for w in warnings {
            eprintln!("abo sandbox: warning: {w}");
        }
        let err = exec(argv);
        return Err(format!("could not run `{}`: {err}", argv[0]));
    }
    let alive = pipe()?;
    let status = pipe()?;
    // SAFETY: this process is single-threaded (the helper runs before anything else starts), so
    // the child may do anything; both sides only use the pipes and their own memory.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            close(alive.1);
            close(status.0);
            let code = match init(p, argv, &sockets, alive.0, status.1, channel, warnings) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("abo sandbox: {e}");
                    let _ = write_status(status.1, &Ended::Setup);
                    SETUP_FAILED
                }
            };
            // SAFETY: ends the child at once, without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        child => {
            close(alive.0);
            close(status.1);
            drop(channel);
            let ended = wait_for(child, status.0);
            Ok(match ended {
                Ended::Exit(c) => c,
                Ended::Setup => SETUP_FAILED,
                Ended::Signal(s) => die_by(s),
            })
        }
    }
}

/// Forks the relay of an agent's connections: it dies with the helper (and, before it has a
/// listener, when init's end of the channel closes).
fn start_relay(
    outside: std::os::fd::OwnedFd,
    inside: &std::os::fd::OwnedFd,
    port: u16,
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: this process is single-threaded; the child only relays and exits.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // Init's end is init's alone: when init dies without sending, the relay sees the end.
            close(inside.as_raw_fd());
            // SAFETY: prctl with integer arguments; SIGKILL when the helper dies.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let _ = relay::receive_and_relay(&outside, port);
            // SAFETY: ends the relay without running the helper's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        _ => Ok(()),
    }
}

/// How the program ended, as init reports it to the helper.
enum Ended {
    Exit(i32),
    Signal(i32),
    /// The sandbox could not be set up: the program never ran.
    Setup,
}

fn write_status(fd: i32, e: &Ended) -> Result<(), String> {
    let word: i32 = match e {
        Ended::Exit(c) => *c & 0xff,
        Ended::Signal(s) => 0x100 | (*s & 0xff),
        Ended::Setup => 0x200,
    };
    let bytes = word.to_ne_bytes();
    // SAFETY: writes 4 bytes from a live buffer to a pipe this process owns.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n == 4 {
        Ok(())
    } else {
        Err(format!("status pipe: {}", std::io::Error::last_os_error()))
    }
}

/// Waits for init; its report says how the program ended (init itself, as pid 1, cannot be
/// killed by a signal from inside, so its own status says less).
fn wait_for(child: libc::pid_t, status_fd: i32) -> Ended {
    let mut word = [0u8; 4];
    // SAFETY: reads at most 4 bytes into a live buffer from a pipe this process owns.
    let n = unsafe { libc::read(status_fd, word.as_mut_ptr().cast(), 4) };
    let mut st = 0;
    // SAFETY: waits for this process's own child; `st` is a valid out pointer.
    while unsafe { libc::waitpid(child, &mut st, 0) } == -1
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    if n == 4 {
        let w = i32::from_ne_bytes(word);
        return match w >> 8 {
            0 => Ended::Exit(w & 0xff),
            1 => Ended::Signal(w & 0xff),
            _ => Ended::Setup,
        };
    }
    if libc::WIFSIGNALED(st) {
        Ended::Signal(libc::WTERMSIG(st))
    } else {
        Ended::Exit(libc::WEXITSTATUS(st))
    }
}

/// Ends this process by the signal that ended the program, so abo sees the same status.
fn die_by(sig: i32) -> i32 {
    // SAFETY: restoring the default action of a signal and sending it to this process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
    }
    128 + sig
}

/// Closes every descriptor from 3 up.
fn close_inherited() {
    // SAFETY: close_range takes integers only; it closes descriptors this process owns and nothing
    // of this process uses them (the helper has opened nothing yet).
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r != 0 {
        // Kernels before 5.9: one at a time, as far as the descriptor table goes.
        // SAFETY: sysconf takes an integer only.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(3, 1 << 20);
        for fd in 3..max {
            close(i32::try_from(fd).unwrap_or(i32::MAX));
        }
    }
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: i32) {
    // SAFETY: closes a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}

/// Pid 1 of the sandbox's PID namespace: dies with the helper, leaves abo's session and terminal,
/// builds the view of the filesystem, restricts itself, then starts the program and reaps.
#[allow(
    clippy::print_stderr,
    reason = "the helper's only channel is the program's stderr"
)]
fn init(
    p: &Profile,
    argv: &[String],
    sockets: &[PathBuf],
    alive: i32,
    status: i32,
    channel: Option<std::os::fd::OwnedFd>,
    mut warnings: Vec<String>,
) -> Result<i32, String> {
    // SAFETY: prctl with integer arguments; SIGKILL when the helper (our parent) dies.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The helper may have died before that: its end of the pipe is then closed.
    let mut fd = libc::pollfd {
        fd: alive,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one valid pollfd without waiting.
    if unsafe { libc::poll(&mut fd, 1, 0) } != 0 {
        return Err("the sandbox helper ended before the program started".into());
    }
    // A session of its own: no controlling terminal (`/dev/tty` opens nothing), and nothing in
    // the sandbox can type into abo's terminal.
    // SAFETY: setsid takes no arguments; this process is not a group leader (just forked).
    if unsafe { libc::setsid() } == -1 {
        return Err(format!("setsid: {}", std::io::Error::last_os_error()));
    }
    layer(p.mode, &mut warnings, network(p, channel.as_ref()))?;
    drop(channel);
    layer(p.mode, &mut warnings, filesystem(p, sockets))?;
    restrict(p, &mut warnings)?;
    for w in warnings {
        eprintln!("abo sandbox: warning: {w}");
    }
    // SAFETY: as above: single-threaded; the child only execs.
    let program = match unsafe { libc::fork() } {
        -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            let err = exec(argv);
            eprintln!("abo sandbox: could not run `{}`: {err}", argv[0]);
            let code = if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            // SAFETY: ends the child that failed to exec.
            unsafe { libc::_exit(code) }
        }
        pid => pid,
    };
    loop {
        let mut st = 0;
        // SAFETY: reaps any child of this process (orphans in the namespace come to pid 1).
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid == program {
            let ended = if libc::WIFSIGNALED(st) {
                Ended::Signal(libc::WTERMSIG(st))
            } else {
                Ended::Exit(libc::WEXITSTATUS(st))
            };
            write_status(status, &ended)?;
            // Returning ends pid 1, and with it every process left in the namespace.
            return Ok(match ended {
                Ended::Exit(c) => c,
                _ => 1,
            });
        }
        if pid == -1 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
}

/// Rlimits, capabilities, Landlock and seccomp, in that order.
fn restrict(p: &Profile, warnings: &mut Vec<String>) -> Result<(), String> {
    limits(&p.limits)?;
    layer(p.mode, warnings, caps::drop_all())?;
    match fs::restrict(p) {
        Ok(None) => {}
        Ok(Some(w)) => warnings.push(w),
        Err(e) => layer(p.mode, warnings, Err(format!("landlock: {e}")))?,
    }
    layer(
        p.mode,
        warnings,
        seccomp::install(p.network).map_err(|e| format!("seccomp: {e}")),
    )
}

/// A network namespace of its own for gates, commands and agents (not with `gate_network:
/// allow`), its loopback up; an agent's has one listener, on the egress proxy's port, handed to
/// the helper outside, which relays it to the proxy.
fn network(p: &Profile, channel: Option<&std::os::fd::OwnedFd>) -> Result<(), String> {
    if p.network == Network::Host {
        return Ok(());
    }
    // SAFETY: unshare takes flags only; init is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "network namespace: unshare: {}",
            std::io::Error::last_os_error()
        ));
    }
    net::loopback_up().map_err(|e| format!("network namespace: {e}"))?;
    if let (Network::Proxy { port }, Some(to)) = (p.network, channel) {
        relay::listen_and_send(port, to)?;
    }
    Ok(())
}

/// New mount and PID namespaces (a user namespace first when abo does not run as root); init
/// makes the network namespace.
fn unshare() -> Result<(), String> {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID;
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
    Ok(())
}

/// The sandbox's view of the filesystem, in its mount namespace: a `/proc` of its own PID
/// namespace (no other process, so no other process's environment), the read-only files, every
/// host UNIX socket outside the writable directories covered by `/dev/null`, and loopback up.
fn filesystem(p: &Profile, sockets: &[PathBuf]) -> Result<(), String> {
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
    let (proc_, fstype) = (c("/proc")?, c("proc")?);
    // SAFETY: valid C strings; a fresh procfs of this PID namespace over /proc.
    let mounted = unsafe {
        libc::mount(
            fstype.as_ptr(),
            proc_.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if mounted != 0 {
        return Err(format!(
            "pid namespace: mounting its /proc: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Terminals of its own only: abo's terminal and the user's other ones are not in it.
    let (pts, devpts) = (c("/dev/pts")?, c("devpts")?);
    let opts = c("newinstance,ptmxmode=0666,mode=0620")?;
    // SAFETY: valid C strings; a new devpts instance over /dev/pts in this mount namespace.
    let ptys = unsafe {
        libc::mount(
            devpts.as_ptr(),
            pts.as_ptr(),
            devpts.as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            opts.as_ptr().cast(),
        )
    };
    if ptys != 0 {
        return Err(format!(
            "mounting a devpts of its own: {}",
            std::io::Error::last_os_error()
        ));
    }
    bind(Path::new("/dev/pts/ptmx"), Path::new("/dev/ptmx"), false)?;
    for f in &p.read_only {
        bind(f, f, true)?;
    }
    for (shown, at) in &p.masks {
        bind(shown, at, true)?;
    }
    for s in sockets {
        // A socket that went away, or lives in another mount namespace, is no way out either.
        let _ = bind(Path::new("/dev/null"), s, false);
    }
    Ok(())
}

/// The pathname UNIX sockets bound in the host's network namespace (read now), and those the
/// caller found in the others ([`Profile::sockets`]), that the profile does not let the process
/// write: PostgreSQL's, MariaDB's, Docker's, the session bus... Abstract sockets are scoped by
/// Landlock instead, and a network namespace has its own.
fn host_unix_sockets(p: &Profile) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut out: Vec<PathBuf> = crate::sockets::paths(&table)
        .chain(p.sockets.iter().cloned())
        .filter(|path| !p.write.iter().any(|w| path.starts_with(w)))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn c(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|e| e.to_string())
}

/// Bind-mounts `src` onto `dst` (read-only when asked).
fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<(), String> {
    let (s, d) = (c(&src.to_string_lossy())?, c(&dst.to_string_lossy())?);
    // SAFETY: valid C strings naming existing files; a bind mount of one onto the other.
    let bound = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    } == 0;
    // SAFETY: as above; remounting that bind mount read-only.
    let ro = !read_only
        || (bound
            && unsafe {
                libc::mount(
                    std::ptr::null(),
                    d.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                )
            } == 0);
    if bound && ro {
        Ok(())
    } else {
        Err(format!(
            "bind mount {}: {}",
            dst.display(),
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
    out.push(Layer {
        name: "landlock scopes",
        available: abi.as_ref().is_ok_and(|v| *v >= 6),
        detail: match &abi {
            Ok(v) if *v >= 6 => {
                "no signal to, and no abstract UNIX socket of, any process outside the sandbox"
                    .into()
            }
            _ => "needs Landlock ABI v6 (Linux 6.12+)".into(),
        },
    });
    let pidns = Path::new("/proc/self/ns/pid").exists();
    out.push(Layer {
        name: "pid namespace",
        available: pidns && (root || userns),
        detail: if pidns {
            "a sandboxed process sees no other process (nor its environment), has no terminal, and nothing it starts outlives it".into()
        } else {
            "the kernel has no PID namespaces (CONFIG_PID_NS)".into()
        },
    });
    out.push(Layer {
        name: "mount namespace",
        available: Path::new("/proc/self/ns/mnt").exists() && (root || userns),
        detail: "the worktree's .git read-only, the host's UNIX sockets (databases, Docker, session buses) covered, terminals of its own".into(),
    });
    out.push(Layer {
        name: "capabilities",
        available: true,
        detail: if root {
            "all dropped: root inside the sandbox has no privilege".into()
        } else {
            "all dropped, also those of its user namespace".into()
        },
    });
    let netns = Path::new("/proc/self/ns/net").exists();
    out.push(Layer {
        name: "network namespace",
        available: netns && (root || userns),
        detail: if netns {
            "gates, commands and agents get only their own loopback (an agent's holds one relay, to the egress proxy)".into()
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
            "filter mode: no new namespaces, mounts, ptrace, device nodes, terminal injection (TIOCSTI), io_uring; agents get no UDP or raw sockets".into()
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
