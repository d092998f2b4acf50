//! The sandbox: each denial proven by an action that succeeds with `sandbox.mode: off` and fails
//! under `required`, and ordinary work that still runs inside.

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::{abo, abo_env, artifact, config, events};

/// Runs one task whose gate is `gate` under `sandbox:` (YAML flow mapping); returns the task's
/// status and the gate's log.
fn gate_under(sandbox: &str, gate: &str, env: &[(&str, String)]) -> (String, String, TestRepo) {
    let repo = TestRepo::new();
    let gate = gate.replace("{OUT}", &repo.outside.display().to_string());
    let sandbox = sandbox.replace("{OUT}", &repo.outside.display().to_string());
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\ngates:\n  - name: probe\n    run: |\n{}\n",
            gate.lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: t, title: T, run: 'echo change > change.txt' }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], env);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    let run = doc["run"]["id"].as_str().unwrap().to_owned();
    let log = events(&repo, &run)
        .into_iter()
        .find(|e| e["kind"] == "task.gate")
        .map(|e| artifact(&repo, &e["data"]["log"]))
        .unwrap_or_default();
    let status = doc["tasks"][0]["status"].as_str().unwrap().to_owned();
    (status, log, repo)
}

/// The action works without the sandbox and is refused inside it; returns the refused log.
fn denied(sandbox: &str, action: &str, env: &[(&str, String)]) -> String {
    let (status, log, _) = gate_under("{ mode: off }", action, env);
    assert_eq!(status, "landed", "without the sandbox it works: {log}");
    let (status, log, _) = gate_under(sandbox, action, env);
    assert_eq!(status, "failed", "inside the sandbox it is refused: {log}");
    log
}

const REQUIRED: &str = "{ mode: required }";

#[test]
fn writing_outside_the_worktree_is_refused() {
    let log = denied(REQUIRED, "echo x > {OUT}/written", &[]);
    assert!(log.contains("Permission denied"), "{log}");
}

#[test]
fn the_git_metadata_is_read_only_and_commits_inside_fail() {
    let log = denied(
        REQUIRED,
        "echo x > \"$(git rev-parse --git-common-dir)/abo-evil\"",
        &[],
    );
    assert!(log.contains("Permission denied"), "{log}");
    denied(
        REQUIRED,
        "git -c user.email=t@t -c user.name=t commit -q --allow-empty -m evil",
        &[],
    );
    // The worktree's .git file cannot be pointed elsewhere (without the sandbox, the write
    // succeeds and breaks the worktree abo commits from).
    let tamper = "echo 'gitdir: /tmp' > .git && echo tampered";
    let (_, log, _) = gate_under("{ mode: off }", tamper, &[]);
    assert!(log.contains("tampered"), "{log}");
    let (status, log, _) = gate_under(REQUIRED, tamper, &[]);
    assert_eq!(status, "failed");
    assert!(log.contains("Read-only file system"), "{log}");
}

#[test]
fn denied_paths_cannot_be_read() {
    // A file planted under a denied path: readable without the sandbox, refused with it, also
    // through a link beside it (`peek -> secret`: a rule on the link would be on the secret).
    let planted = |sandbox: &str, read: &str| {
        let repo = TestRepo::new();
        let out_dir = repo.outside.display().to_string();
        std::fs::create_dir_all(repo.outside.join("secret")).unwrap();
        std::fs::write(repo.outside.join("secret/key"), "PLANTED").unwrap();
        std::os::unix::fs::symlink("secret", repo.outside.join("peek")).unwrap();
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {}\ngates:\n  - {{ name: probe, run: 'cat {out_dir}/{read}/key' }}\n",
                sandbox.replace("{OUT}", &out_dir)
            ),
        );
        let b = repo.write_outside(
            "b.yml",
            "tasks:\n  - { id: t, title: T, run: 'echo change > change.txt' }\n",
        );
        let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &[]);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        doc["tasks"][0]["status"].as_str().unwrap().to_owned()
    };
    let deny = "{ mode: required, deny_read: ['{OUT}/secret'] }";
    for read in ["secret", "peek"] {
        assert_eq!(planted("{ mode: off }", read), "landed", "{read}");
        assert_eq!(planted(deny, read), "failed", "{read}");
    }
}

#[test]
fn gates_reach_no_host_loopback_service() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let log = denied(
        REQUIRED,
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
        ),
        &[],
    );
    assert!(log.contains("ConnectionRefusedError"), "{log}");
    // `gate_network: allow` gives it back.
    let (status, log, _) = gate_under(
        "{ mode: required, gate_network: allow }",
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
        ),
        &[],
    );
    assert_eq!(status, "landed", "{log}");
}

#[test]
fn a_fork_bomb_and_a_memory_hog_hit_their_limits() {
    let fork = "python3 -c '\nimport os, time\nfor i in range(300):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n'";
    let started = std::time::Instant::now();
    let log = denied("{ mode: required, limits: { processes: 64 } }", fork, &[]);
    assert!(
        log.contains("Resource temporarily unavailable") || log.contains("BlockingIOError"),
        "{log}"
    );
    // Nothing it started outlives the gate.
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    let hog = "python3 -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))'";
    let log = denied("{ mode: required, limits: { memory: 256MiB } }", hog, &[]);
    assert!(log.contains("MemoryError"), "{log}");
}

#[test]
fn system_calls_no_build_needs_are_refused() {
    // seccomp: no new namespaces (nor ptrace, mount, bpf, keyctl, module loading...).
    let log = denied(REQUIRED, "unshare -U true", &[]);
    assert!(log.contains("Operation not permitted"), "{log}");
}

#[test]
fn gates_see_no_secret_from_the_environment() {
    let env = [("ABO_TEST_SECRET", "s3cr3t-value-123".to_owned())];
    let log = denied(
        REQUIRED,
        "test -n \"$ABO_TEST_SECRET\" && echo \"saw $ABO_TEST_SECRET\"",
        &env,
    );
    assert!(!log.contains("s3cr3t-value-123"), "{log}");
    // Variables named in env_pass do get through.
    let (status, log, _) = gate_under(
        "{ mode: required, env_pass: [ABO_TEST_SECRET] }",
        "test -n \"$ABO_TEST_SECRET\"",
        &env,
    );
    assert_eq!(status, "landed", "{log}");
}

#[test]
fn ordinary_work_runs_inside_rust_python_and_git() {
    let work = "set -e\npython3 -c 'print(sum(range(10)))'\ngit status --short\ngit diff --stat HEAD\nc=\"$TMPDIR/crate\"\nmkdir -p \"$c/src\"\nprintf '[package]\\nname = \"probe\"\\nversion = \"0.1.0\"\\nedition = \"2021\"\\n' > \"$c/Cargo.toml\"\nprintf '#[test]\\nfn adds() { assert_eq!(1 + 1, 2); }\\n' > \"$c/src/lib.rs\"\ncd \"$c\" && cargo test --offline -q 2>&1";
    let home = std::env::var("HOME").unwrap_or_default();
    let env = [
        (
            "CARGO_HOME",
            std::env::var("CARGO_HOME").unwrap_or(format!("{home}/.cargo")),
        ),
        (
            "RUSTUP_HOME",
            std::env::var("RUSTUP_HOME").unwrap_or(format!("{home}/.rustup")),
        ),
    ];
    let (status, log, _) = gate_under(
        "{ mode: required, env_pass: [CARGO_HOME, RUSTUP_HOME] }",
        work,
        &env,
    );
    assert_eq!(status, "landed", "{log}");
    assert!(log.contains("45"), "{log}");
    assert!(log.contains("change.txt"), "git status: {log}");
    assert!(
        log.contains("1 passed") || log.contains("test result: ok"),
        "{log}"
    );
}

#[test]
fn agents_reach_only_allowlisted_hosts_through_the_egress_proxy() {
    let repo = TestRepo::new();
    let bin = abo_test_support::agents::install(&repo.outside);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    config(
        &repo,
        "version: 1\nattempts: { max: 1 }\nautonomy: { overrides: { merge: A2 } }\nsandbox: { mode: required, agent_hosts: [localhost, 169.254.169.254] }\nbackends:\n  claude: { kind: claude-code }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: netprobe, title: Probe, backend: claude }\n",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path), ("PROBE_PORT", port.to_string())];
    // PROBE_PORT is not passed to agents unless named: env_pass adds it.
    let yml = std::fs::read_to_string(repo.path.join("abo.yml"))
        .unwrap()
        .replace("agent_hosts:", "env_pass: [PROBE_PORT], agent_hosts:");
    config(&repo, &yml);
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    assert_eq!(doc["tasks"][0]["status"], "landed", "{}", out.stderr);
    let branch = doc["run"]["branch"].as_str().unwrap();
    let seen = repo.git(&["show", &format!("{branch}:claude-netprobe.txt")]);
    assert!(seen.contains("direct: refused PermissionError"), "{seen}");
    assert!(seen.contains("proxy: set"), "{seen}");
    assert!(
        seen.contains("via proxy: HTTP/1.1 200 Connection Established"),
        "{seen}"
    );
    assert!(
        seen.contains("metadata via proxy: HTTP/1.1 403 Forbidden"),
        "{seen}"
    );
    // Each connection is in the agent's log.
    let run = doc["run"]["id"].as_str().unwrap();
    let finished = events(&repo, run)
        .into_iter()
        .find(|e| e["kind"] == "task.backend_finished")
        .unwrap();
    let log = artifact(&repo, &finished["data"]["log"]);
    assert!(log.contains("--- abo: egress proxy ---"), "{log}");
    assert!(log.contains("a cloud metadata address"), "{log}");
}

#[test]
fn no_other_process_and_no_other_environment_is_visible() {
    // abo's own environment (API keys, tokens, database URLs) was readable through
    // /proc/$PPID/environ; the sandbox has a PID namespace and a /proc of its own.
    let env = [("ABO_PROBE_SECRET", "planted-in-abo".to_owned())];
    let scan = "for f in /proc/[0-9]*/environ /proc/$PPID/environ; do tr '\\0' '\\n' < \"$f\"; done 2>/dev/null | grep -q '^ABO_PROBE_SECRET=planted-in-abo$'";
    denied(REQUIRED, scan, &env);
    // Only the sandbox's own processes: its init, the shell, and what the shell runs (pids
    // from 1 up, where the host's run into the thousands).
    let (status, log, _) = gate_under(
        REQUIRED,
        "n=$(ls /proc | grep '^[0-9]*$' | sort -n | tail -n1); echo \"highest pid: $n\"; test \"$n\" -le 10",
        &[],
    );
    assert_eq!(status, "landed", "{log}");
}

#[test]
fn host_unix_sockets_are_out_of_reach() {
    // A service listening on a pathname UNIX socket outside the worktree (as PostgreSQL and
    // MariaDB do in /run): reachable without the sandbox, covered inside it.
    let repo = TestRepo::new();
    let sock = repo.outside.join("service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let connect = format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{}\")'",
        sock.display()
    );
    let log = denied(REQUIRED, &connect, &[]);
    assert!(log.contains("ConnectionRefusedError"), "{log}");
    // The machine's own PostgreSQL, through its socket, as the superuser the socket trusts.
    let psql = "psql -h /var/run/postgresql -XAtc 'select 1' postgres";
    denied(REQUIRED, psql, &[]);
}

#[test]
fn no_namespaces_device_nodes_or_raw_disks_from_inside() {
    // clone(CLONE_NEWUSER), clone(CLONE_NEWNET) and clone(CLONE_NEWNS) through the raw system
    // call (the C library's clone3 falls back to it); the child exits at once.
    for flag in ["0x10000000", "0x40000000", "0x00020000"] {
        let clone = format!(
            "python3 -c '\nimport ctypes, os, sys\nlibc = ctypes.CDLL(None, use_errno=True)\npid = libc.syscall(56, {flag} | 17, 0, 0, 0, 0)\nif pid == 0:\n    os._exit(0)\nprint(\"clone:\", pid, os.strerror(ctypes.get_errno()))\nsys.exit(0 if pid > 0 else 1)\n'"
        );
        let log = denied(REQUIRED, &clone, &[]);
        assert!(log.contains("Operation not permitted"), "{flag}: {log}");
    }
    // A block device node in the worktree (as root, a way to the disk).
    let mknod =
        "python3 -c 'import os; os.mknod(\"disk\", 0o600 | 0o060000, os.makedev(7, 0))' && rm disk";
    let log = denied(REQUIRED, mknod, &[]);
    assert!(log.contains("Operation not permitted"), "{log}");
    // Devices root may read: the kernel's log here (on most machines, the disk itself too).
    let kmsg = "dd if=/dev/kmsg bs=1k count=1 iflag=nonblock 2>/dev/null | grep -q .";
    denied(REQUIRED, kmsg, &[]);
}

#[test]
fn the_default_deny_list_covers_credential_stores_and_a_list_adds_to_it() {
    // A HOME with the usual credential files, and another repository whose `.abo/` abo knows.
    let repo = TestRepo::new();
    let home = repo.outside.join("home");
    let planted = [
        ".git-credentials",
        ".config/gh/hosts.yml",
        ".netrc",
        ".docker/config.json",
        ".kube/config",
        ".npmrc",
        ".ssh/id_ed25519",
    ];
    for f in planted {
        let p = home.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "PLANTED-CREDENTIAL").unwrap();
    }
    let other = TestRepo::new();
    let env = [("HOME", home.display().to_string())];
    let init = abo_env(&other, &["init"], &env);
    assert_eq!(init.code, 0, "{}", init.stderr);
    std::fs::write(other.path.join(".abo/proof.key"), "PLANTED-CREDENTIAL").unwrap();
    let mut targets: Vec<String> = planted
        .iter()
        .map(|f| home.join(f).display().to_string())
        .collect();
    targets.push(other.path.join(".abo/proof.key").display().to_string());
    targets.push("/etc/shadow".into());
    for t in &targets {
        // Each is readable without the sandbox...
        let read = format!("cat '{t}'");
        let (status, log, _) = gate_under("{ mode: off }", &read, &env);
        assert_eq!(
            status, "landed",
            "{t} is readable without the sandbox: {log}"
        );
        // ...and not with the default list, nor with a list of the user's own added to it.
        for sandbox in [
            REQUIRED,
            "{ mode: required, deny_read: ['{OUT}/elsewhere'] }",
        ] {
            let (status, log, _) = gate_under(sandbox, &read, &env);
            assert_eq!(status, "failed", "{t} under {sandbox}: {log}");
            assert!(!log.contains("PLANTED-CREDENTIAL"), "{log}");
        }
    }
    // A default comes off the list only by name.
    let npmrc = format!("cat '{}'", home.join(".npmrc").display());
    let (status, log, _) = gate_under(
        "{ mode: required, deny_read_except: ['~/.npmrc'] }",
        &npmrc,
        &env,
    );
    assert_eq!(status, "landed", "{log}");
}

#[test]
fn a_misspelt_default_to_take_off_the_deny_list_is_a_located_error() {
    let repo = TestRepo::new();
    config(
        &repo,
        "version: 1\nsandbox:\n  deny_read_except: ['~/.npmr']\n",
    );
    let b = repo.write_outside("b.yml", "tasks:\n  - { id: t, title: T, run: 'true' }\n");
    let out = abo(&repo, &["run", b.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("abo.yml:3"), "{}", out.stderr);
    assert!(
        out.stderr.contains("did you mean `~/.npmrc`?"),
        "{}",
        out.stderr
    );
}

/// Runs `gate` as a gate of a command task with abo itself on a terminal (a pty whose other end
/// this test reads); returns everything the terminal showed.
fn on_a_terminal(repo: &TestRepo, sandbox: &str, gate: &str) -> String {
    config(
        repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\ngates:\n  - {{ name: probe, run: {gate:?} }}\n"
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: t, title: T, run: 'echo c > c.txt' }\n",
    );
    let script = format!(
        "import os, pty, sys\npid, fd = pty.fork()\nif pid == 0:\n    os.execv({abo:?}, [{abo:?}, '-C', {root:?}, 'run', {b:?}])\nout = b''\nwhile True:\n    try:\n        chunk = os.read(fd, 4096)\n    except OSError:\n        break\n    if not chunk:\n        break\n    out += chunk\nos.waitpid(pid, 0)\nsys.stdout.write(out.decode(errors='replace'))\n",
        abo = env!("CARGO_BIN_EXE_abo"),
        root = repo.path.display().to_string(),
        b = b.display().to_string(),
    );
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs abo under a terminal"
    )]
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nothing_in_the_sandbox_types_into_abos_terminal() {
    // TIOCSTI pushes characters into the terminal's input: the user's shell would run them after
    // abo exits. The terminal echoes what was pushed, which is how the test sees it.
    let inject = "python3 -c 'import fcntl, termios; fd = open(\"/dev/tty\", \"wb\", buffering=0); [fcntl.ioctl(fd, termios.TIOCSTI, bytes([c])) for c in b\"echo INJECTED-\" + b\"BY-GATE\"]'";
    let repo = TestRepo::new();
    let shown = on_a_terminal(&repo, "{ mode: off }", inject);
    assert!(
        shown.contains("INJECTED-BY-GATE"),
        "without the sandbox: {shown}"
    );
    let repo = TestRepo::new();
    let shown = on_a_terminal(&repo, REQUIRED, inject);
    assert!(
        !shown.contains("INJECTED-BY-GATE"),
        "inside the sandbox: {shown}"
    );
}

/// What a hostile agent tries, one line of outcome each.
const HOSTILE_AGENT: &str = r#"
import os, socket, sys
def attempt(name, f):
    try:
        f()
        print(name + ": done")
    except OSError as e:
        print(name + ": refused " + type(e).__name__)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"exfiltrated", ("127.0.0.1", int(os.environ["PROBE_UDP"])))
def abstract():
    s = socket.socket(socket.AF_UNIX)
    s.connect("\0" + os.environ["PROBE_ABSTRACT"])
def pathname():
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["PROBE_SOCKET"])
def listen():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
def persist():
    d = os.path.join(os.environ["HOME"], ".claude")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "settings.json"), "w") as f:
        f.write('{"hooks": "PERSISTED-BY-AGENT"}')
for name, f in [("udp", udp), ("abstract", abstract), ("pathname", pathname), ("listen", listen), ("persist", persist)]:
    attempt(name, f)
"#;

/// Runs the hostile agent as Claude Code under `sandbox`; returns what it reported and the user's
/// Claude settings afterwards.
fn hostile_agent(sandbox: &str) -> (String, String) {
    let repo = TestRepo::new();
    let bin = abo_test_support::agents::install(&repo.outside);
    let home = repo.outside.join("home");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(home.join(".claude/settings.json"), "{}").unwrap();
    let script = repo.write_outside("hostile.py", HOSTILE_AGENT);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sock = repo.outside.join("service.sock");
    let pathname = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let name = format!("abo-test-{}", repo.outside.display());
    let abstract_ = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    std::thread::spawn(move || for _ in pathname.incoming() {});
    std::thread::spawn(move || for _ in abstract_.incoming() {});
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\nbackends:\n  claude: {{ kind: claude-code }}\n"
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: hostile, title: Attack, backend: claude }\n",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path),
        ("HOME", home.display().to_string()),
        ("HOSTILE_SCRIPT", script.display().to_string()),
        ("PROBE_UDP", udp.local_addr().unwrap().port().to_string()),
        ("PROBE_SOCKET", sock.display().to_string()),
        ("PROBE_ABSTRACT", name),
    ];
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    assert_eq!(doc["tasks"][0]["status"], "landed", "{}", out.stderr);
    let branch = doc["run"]["branch"].as_str().unwrap();
    let settings = std::fs::read_to_string(home.join(".claude/settings.json")).unwrap();
    (
        repo.git(&["show", &format!("{branch}:claude-hostile.txt")]),
        settings,
    )
}

#[test]
fn an_agent_sends_no_datagram_reaches_no_host_socket_listens_nowhere_and_persists_nothing() {
    let env_pass = "env_pass: [HOSTILE_SCRIPT, PROBE_UDP, PROBE_SOCKET, PROBE_ABSTRACT]";
    let (seen, settings) = hostile_agent(&format!("{{ mode: off, {env_pass} }}"));
    for probe in ["udp", "abstract", "pathname", "listen", "persist"] {
        assert!(
            seen.contains(&format!("{probe}: done")),
            "without the sandbox: {seen}"
        );
    }
    assert!(settings.contains("PERSISTED-BY-AGENT"), "{settings}");

    let (seen, settings) = hostile_agent(&format!("{{ mode: required, {env_pass} }}"));
    for probe in ["udp", "abstract", "pathname", "listen"] {
        assert!(
            seen.contains(&format!("{probe}: refused")),
            "inside the sandbox: {seen}"
        );
    }
    // The agent writes its settings into a HOME of its own, discarded with the attempt.
    assert!(seen.contains("persist: done"), "{seen}");
    assert_eq!(settings, "{}");
}

#[test]
fn links_out_of_the_worktree_and_abos_own_files_are_no_way_out() {
    // Writing through a symlink, or a hard link made to a file outside, changes nothing outside.
    for attack in [
        "ln -s {OUT}/target.txt link && echo owned > link; rm -f link",
        "ln {OUT}/target.txt hard && echo owned > hard; rm -f hard",
    ] {
        for (sandbox, changed) in [("{ mode: off }", true), (REQUIRED, false)] {
            let gate = format!(
                "test -f {{OUT}}/target.txt || echo original > {{OUT}}/target.txt; {attack}"
            );
            let (_, log, repo) = gate_under(sandbox, &gate, &[]);
            let now = std::fs::read_to_string(repo.outside.join("target.txt")).unwrap_or_default();
            assert_eq!(now == "owned\n", changed, "{attack} under {sandbox}: {log}");
        }
    }
    // This repository's store and proof key, read directly by path (the key exists once a
    // first change landed with its signed proof).
    let store = "f=\"$(git rev-parse --path-format=absolute --git-common-dir)/../.abo\"; cat \"$f/abo.db\" \"$f/proof.key\" > /dev/null";
    let repo = TestRepo::new();
    let b = repo.write_outside(
        "first.yml",
        "tasks:\n  - { id: first, title: F, run: 'echo 1 > first.txt' }\n",
    );
    for (sandbox, want) in [("{ mode: off }", "landed"), (REQUIRED, "failed")] {
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\n"
            ),
        );
        let out = abo(&repo, &["run", b.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(repo.path.join(".abo/proof.key").exists());
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\ngates:\n  - {{ name: steal, run: {store:?} }}\n"
            ),
        );
        let b2 = repo.write_outside(
            "b2.yml",
            "tasks:\n  - { id: t, title: T, run: 'echo 2 > t.txt' }\n",
        );
        let out = abo(&repo, &["run", b2.to_str().unwrap(), "--json"]);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(doc["tasks"][0]["status"], want, "{sandbox}: {}", out.stderr);
    }
}

/// Runs one claude task `task` under `yml` (the whole abo.yml) with the fake agents and `env`;
/// returns the status document, the repository and the agent log directory.
fn agent_task(
    yml: &str,
    task: &str,
    env: &[(&str, String)],
) -> (Value, TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    let bin = abo_test_support::agents::install(&repo.outside);
    let log = repo.outside.join("agent-log");
    std::fs::create_dir_all(&log).unwrap();
    config(&repo, yml);
    let b = repo.write_outside(
        "b.yml",
        &format!("tasks:\n  - {{ id: {task}, title: T, backend: claude }}\n"),
    );
    let mut env = env.to_vec();
    env.push((
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    ));
    env.push(("FAKE_AGENT_LOG", log.display().to_string()));
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &env);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    (doc, repo, log)
}

#[test]
fn an_agent_retrying_a_refused_host_fails_at_once_as_a_configuration_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let yml = |hosts: &str| {
        format!(
            "version: 1\nattempts: {{ max: 3 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {{ mode: required, env_pass: [REFUSE_TARGET], agent_hosts: [{hosts}] }}\nbackends:\n  claude: {{ kind: claude-code }}\n"
        )
    };
    let target = [("REFUSE_TARGET", format!("localhost:{port}"))];
    // The attack on the run's time: an agent retrying a host it may not reach, for 30 s a try.
    let (doc, repo, _) = agent_task(&yml("api.anthropic.com"), "refused", &target);
    let t = &doc["tasks"][0];
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{doc}"
    );
    let run = doc["run"]["id"].as_str().unwrap();
    let failed = events(&repo, run)
        .into_iter()
        .find(|e| e["kind"] == "task.failed")
        .unwrap();
    let reason = failed["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("localhost:{port} is not in sandbox.agent_hosts"))
            && reason.contains("a configuration error, not retried"),
        "{reason}"
    );
    // Stopped at its first refusals, not after its 300 tries.
    let kept = repo.path.join(t["worktrees"][0].as_str().unwrap());
    let tries: u32 = std::fs::read_to_string(kept.join("claude-refused.tries"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(tries < 50, "{tries} tries");
    // Control: the same agent, the host listed: it gets through and its task lands.
    let (doc, _, _) = agent_task(&yml(&format!("'localhost:{port}'")), "refused", &target);
    assert_eq!(doc["tasks"][0]["status"], "landed", "{doc}");
}

type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Reads one request head from `stream`, records it, answers `replied!`.
fn answer(stream: &mut (impl std::io::Read + std::io::Write), seen: &Seen) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(&mut *stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    drop(r);
    seen.lock().unwrap().push(head);
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nreplied!");
    let _ = stream.flush();
}

/// A plain-HTTP model gateway on 127.0.0.1: answers `replied!` to every request and records its head.
fn gateway() -> (u16, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let s = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            answer(&mut conn, &s);
        }
    });
    (port, seen)
}

/// The same over HTTPS, for `localhost`, with a certificate from a CA of the test's own, whose
/// PEM file is returned.
fn https_gateway(dir: &std::path::Path) -> (u16, Seen, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::new(params, key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_file = dir.join("gateway-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let s = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tls = rustls::ServerConnection::new(std::sync::Arc::clone(&config)).unwrap();
            let mut stream = rustls::StreamOwned::new(tls, conn);
            answer(&mut stream, &s);
        }
    });
    (port, seen, ca_file)
}

#[test]
fn the_proxy_holds_the_agents_key_and_the_agent_sees_a_placeholder() {
    // Shaped like no known credential, so that only its variable marks it secret.
    const KEY: &str = "gw-real-key-0123456789abcdef";
    let (port, seen) = gateway();
    let yml = |credentials: &str| {
        format!(
            "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {{ mode: required, env_pass: [KEY_UPSTREAM] }}\nbackends:\n  claude: {{ kind: claude-code, base_url: 'http://127.0.0.1:{port}', api_key_env: GATEWAY_KEY, credentials: {credentials} }}\n"
        )
    };
    let env = [
        ("GATEWAY_KEY", KEY.to_owned()),
        (
            "KEY_UPSTREAM",
            format!("http://127.0.0.1:{port}/v1/messages"),
        ),
    ];
    // The attack: an agent that reads its key from its environment (and could send it anywhere).
    let (doc, repo, _) = agent_task(&yml("proxy"), "keyprobe", &env);
    assert_eq!(doc["tasks"][0]["status"], "landed", "{doc}");
    let branch = doc["run"]["branch"].as_str().unwrap();
    // The gateway (not listed in agent_hosts: its base_url adds it) answered, and saw the key.
    let answer = repo.git(&["show", &format!("{branch}:claude-keyprobe.txt")]);
    assert!(answer.starts_with("replied!\n"), "{answer}");
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("post /v1/messages http/1.1"), "{head}");
    assert!(
        head.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())),
        "{head}"
    );
    // The agent held only the placeholder.
    let agent_env = answer;
    assert!(
        agent_env.contains("ANTHROPIC_API_KEY=abo-proxy-held"),
        "{agent_env}"
    );
    assert!(!agent_env.contains(KEY), "{agent_env}");
    // Nothing abo stored holds the key either.
    let leaks = grep_dir(&repo.path.join(".abo"), KEY);
    assert!(leaks.is_empty(), "{leaks:?}");
    // `abo doctor` says which mode the backend runs in.
    let out = abo_env(&repo, &["doctor"], &env);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("backend claude"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("credentials proxy: the egress proxy holds GATEWAY_KEY"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(KEY));

    // Control: `credentials: env` puts the key in the agent's environment: the agent writes it
    // into its change, which the policy then denies (it knows the key's value), and discards.
    let (doc, repo, _) = agent_task(&yml("env"), "keyprobe", &env);
    assert_eq!(doc["tasks"][0]["status"], "denied", "{doc}");
    assert!(
        doc["tasks"][0]["reason"]
            .as_str()
            .unwrap()
            .ends_with("adds a secret (known-secret)"),
        "{doc}"
    );
    assert!(grep_dir(&repo.path.join(".abo"), KEY).is_empty());
}

/// The files under `dir` whose bytes contain `needle`.
fn grep_dir(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn over_https_the_agent_trusts_the_proxys_ca_and_the_key_stays_in_the_proxy() {
    const KEY: &str = "gw-tls-real-key-0123456789abcdef";
    let outside = TestRepo::new();
    let (port, seen, ca_file) = https_gateway(&outside.outside);
    let yml = format!(
        "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {{ mode: required, env_pass: [KEY_UPSTREAM] }}\nbackends:\n  claude: {{ kind: claude-code, base_url: 'https://localhost:{port}', api_key_env: GATEWAY_KEY }}\n"
    );
    // The user's own CA bundle (a corporate or gateway CA): the proxy verifies the gateway with it.
    let env = [
        ("GATEWAY_KEY", KEY.to_owned()),
        (
            "KEY_UPSTREAM",
            format!("https://localhost:{port}/v1/messages"),
        ),
        ("SSL_CERT_FILE", ca_file.display().to_string()),
    ];
    let (doc, repo, _) = agent_task(&yml, "keyprobe", &env);
    assert_eq!(doc["tasks"][0]["status"], "landed", "{doc}");
    let branch = doc["run"]["branch"].as_str().unwrap();
    let answer = repo.git(&["show", &format!("{branch}:claude-keyprobe.txt")]);
    assert!(answer.starts_with("replied!\n"), "{answer}");
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())),
        "{head}"
    );
    assert!(
        answer.contains("ANTHROPIC_API_KEY=abo-proxy-held"),
        "{answer}"
    );
    assert!(!answer.contains(KEY), "{answer}");
    // The agent's trust: a bundle of the user's CA and the proxy's, for Node, Python and Codex.
    for var in [
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CODEX_CA_CERTIFICATE",
    ] {
        assert!(answer.contains(&format!("{var}=")), "{var}: {answer}");
    }
    assert!(grep_dir(&repo.path.join(".abo"), KEY).is_empty());
}

#[test]
fn an_agent_reaches_the_proxys_port_on_no_other_address() {
    // Landlock's TCP rule names a port, not an address: an agent could reach any host listening
    // on the egress proxy's port (here 127.0.0.2). Its network namespace holds one listener, the
    // relay to the proxy, and nothing else.
    let script = r#"
import os, socket, time
port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
deadline = time.time() + 20
while not os.path.exists(os.environ["PROBE_READY"]) and time.time() < deadline:
    time.sleep(0.05)
for name, host in [("bypass", "127.0.0.2"), ("proxy", "127.0.0.1")]:
    try:
        socket.create_connection((host, port), 2).close()
        print(name + ": done")
    except OSError as e:
        print(name + ": refused " + type(e).__name__)
"#;
    let repo = TestRepo::new();
    let bin = abo_test_support::agents::install(&repo.outside);
    let hostile = repo.write_outside("bypass.py", script);
    let ready = repo.outside.join("ready");
    config(
        &repo,
        "version: 1\nattempts: { max: 1 }\nautonomy: { overrides: { merge: A2 } }\nsandbox: { mode: required, env_pass: [HOSTILE_SCRIPT, PROBE_READY] }\nbackends:\n  claude: { kind: claude-code }\n",
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: hostile, title: Bypass, backend: claude }\n",
    );
    let mut cmd = crate::abo_cmd(&repo, &["run", b.to_str().unwrap(), "--json"]);
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("HOSTILE_SCRIPT", &hostile)
    .env("PROBE_READY", &ready)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The proxy's port, from the agent's environment as the host sees it.
    let mut port = None;
    assert!(abo_test_support::wait_for(20, || {
        port = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let env = String::from_utf8_lossy(&env).into_owned();
            if !env.split('\0').any(|kv| kv == "ABO_TASK_ID=hostile") {
                return None;
            }
            env.split('\0')
                .find_map(|kv| kv.strip_prefix("HTTPS_PROXY=http://127.0.0.1:"))
                .and_then(|p| p.parse::<u16>().ok())
        });
        port.is_some()
    }));
    let listener = std::net::TcpListener::bind(("127.0.0.2", port.unwrap())).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::fs::write(&ready, "").unwrap();
    let out = crate::finish(child);
    let doc: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
    assert_eq!(doc["tasks"][0]["status"], "landed", "{}", out.stderr);
    let branch = doc["run"]["branch"].as_str().unwrap();
    let seen = repo.git(&["show", &format!("{branch}:claude-hostile.txt")]);
    // Control: the same port is reachable at the proxy's address.
    assert!(seen.contains("proxy: done"), "{seen}");
    assert!(seen.contains("bypass: refused"), "{seen}");
    assert!(
        listener.accept().is_err(),
        "nothing reached the other address"
    );
}

#[test]
fn descriptors_abo_inherited_do_not_reach_the_sandbox() {
    // abo started with a secret open on fd 9 and a file outside open for writing on fd 8 (a
    // shell's redirections, a CI runner's pipes): the gate uses them.
    let attack = "cat <&9 > /dev/null && echo WRITTEN >&8";
    for (sandbox, reached) in [("{ mode: off }", true), (REQUIRED, false)] {
        let repo = TestRepo::new();
        let secret = repo.write_outside("secret", "PLANTED\n");
        let written = repo.outside.join("written");
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\ngates:\n  - {{ name: fds, run: {attack:?} }}\n"
            ),
        );
        let b = repo.write_outside(
            "b.yml",
            "tasks:\n  - { id: t, title: T, run: 'echo c > c.txt' }\n",
        );
        #[allow(
            clippy::disallowed_methods,
            reason = "a shell opens the descriptors abo inherits"
        )]
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {abo} -C {repo} run {b} --json 9<{secret} 8>>{written}",
                abo = env!("CARGO_BIN_EXE_abo"),
                repo = repo.path.display(),
                b = b.display(),
                secret = secret.display(),
                written = written.display()
            ))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let landed = doc["tasks"][0]["status"] == "landed";
        let wrote = std::fs::read_to_string(&written)
            .unwrap_or_default()
            .contains("WRITTEN");
        assert_eq!(
            (landed, wrote),
            (reached, reached),
            "{sandbox}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_repositorys_git_config_is_seen_without_its_credentials() {
    // What a CI clone or a credential helper leaves in .git/config.
    let creds = "[http \"https://example.test/\"]\n\textraheader = AUTHORIZATION: bearer plainheadervalue\n[credential]\n\thelper = store --file /plain/helper/path\n[remote \"mirror\"]\n\turl = https://someone:plainpasswordvalue@example.test/r.git\n";
    let show = "cat \"$(git rev-parse --path-format=absolute --git-common-dir)/config\"; git config --get remote.mirror.url";
    for (sandbox, seen) in [("{ mode: off }", true), (REQUIRED, false)] {
        let repo = TestRepo::new();
        let cfg = repo.path.join(".git/config");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(creds);
        std::fs::write(&cfg, text).unwrap();
        config(
            &repo,
            &format!(
                "version: 1\nattempts: {{ max: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\nsandbox: {sandbox}\ngates:\n  - {{ name: show, run: {show:?} }}\n"
            ),
        );
        let b = repo.write_outside(
            "b.yml",
            "tasks:\n  - { id: t, title: T, run: 'echo c > c.txt' }\n",
        );
        let out = abo(&repo, &["run", b.to_str().unwrap(), "--json"]);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(doc["tasks"][0]["status"], "landed", "{}", out.stderr);
        let run = doc["run"]["id"].as_str().unwrap();
        let log = events(&repo, run)
            .into_iter()
            .find(|e| e["kind"] == "task.gate")
            .map(|e| artifact(&repo, &e["data"]["log"]))
            .unwrap();
        for v in [
            "plainheadervalue",
            "plainpasswordvalue",
            "/plain/helper/path",
        ] {
            assert_eq!(log.contains(v), seen, "{v} under {sandbox}: {log}");
        }
        // The rest of the config is there: git works, the remote is known.
        assert!(log.contains("example.test/r.git"), "{log}");
    }
}

#[test]
fn unix_sockets_bound_in_another_network_namespace_are_covered_too() {
    // A service in a network namespace of its own (a container, a PrivateNetwork unit) whose
    // socket file is on the host's file system: the host's /proc/net/unix does not list it.
    let repo = TestRepo::new();
    let sock = repo.outside.join("netns.sock");
    let serve = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind({:?})\ns.listen()\nwhile True:\n    s.accept()[0].close()\n",
        sock.display().to_string()
    );
    #[allow(
        clippy::disallowed_methods,
        reason = "the test starts a service in a namespace"
    )]
    let mut service = std::process::Command::new("unshare")
        .args(["-n", "python3", "-c", &serve])
        .spawn()
        .unwrap();
    assert!(abo_test_support::wait_for(10, || sock.exists()));
    let connect = format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{}\")'",
        sock.display()
    );
    let log = denied(REQUIRED, &connect, &[]);
    let _ = service.kill();
    let _ = service.wait();
    assert!(log.contains("ConnectionRefusedError"), "{log}");
}
