//! Many machines against the machine's real PostgreSQL server: a control plane
//! (`abo serve --store postgres://...`), `abo worker`s with their own clones of a shared bare
//! remote, and runs put in with `abo run --detach`. Each test has a throwaway database.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use abo_test_support::pg::ScratchDb;
use abo_test_support::{TestRepo, git_in, wait_for};
use serde_json::Value;

use crate::{abo, abo_cmd, config};

/// A control plane's repository, a bare remote, a database, and the processes started on them
/// (killed when the cluster is dropped).
struct Cluster {
    db: ScratchDb,
    repo: TestRepo,
    origin: PathBuf,
    dir: tempfile::TempDir,
    procs: Vec<(String, Child)>,
    /// Set on every abo this cluster starts (fake agents on PATH).
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    fn new(yaml: &str) -> Self {
        let repo = TestRepo::new();
        config(&repo, yaml);
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin.git");
        git_in(dir.path(), &["init", "--quiet", "--bare", "origin.git"]);
        repo.git(&["remote", "add", "origin", origin.to_str().unwrap()]);
        repo.git(&["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
        Self {
            db: ScratchDb::new(),
            repo,
            origin,
            dir,
            procs: Vec::new(),
            env: Vec::new(),
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn start(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let child = abo_cmd(&self.repo, args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.procs.push((name.to_owned(), child));
    }

    fn serve(&mut self, name: &str) {
        let url = self.db.url.clone();
        self.start(name, &["serve", "--store", &url, "--addr", "127.0.0.1:0"]);
    }

    /// A worker on `store` (the database's URL unless given, e.g. through a proxy), whose leases
    /// last 10 s without a heartbeat.
    fn worker(&mut self, name: &str, slots: u32, store: Option<&str>) {
        self.worker_ttl(name, slots, store, "10s");
    }

    fn worker_ttl(&mut self, name: &str, slots: u32, store: Option<&str>, ttl: &str) {
        let url = store.map_or_else(|| self.db.url.clone(), str::to_owned);
        let workdir = self.dir.path().join(format!("work-{name}"));
        let (origin, workdir) = (
            self.origin.to_str().unwrap().to_owned(),
            workdir.to_str().unwrap().to_owned(),
        );
        let slots = slots.to_string();
        self.start(
            name,
            &[
                "worker",
                "--store",
                &url,
                "--repo",
                &origin,
                "--workdir",
                &workdir,
                "--name",
                name,
                "--slots",
                &slots,
                "--lease-ttl",
                ttl,
            ],
        );
    }

    fn kill(&mut self, name: &str) {
        for (n, c) in &mut self.procs {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Puts a backlog into the shared store; returns the run id.
    fn detach(&self, backlog: &str) -> String {
        let path = self.repo.outside.join("backlog.yml");
        std::fs::write(&path, backlog).unwrap();
        let url = self.db.url.clone();
        let out = crate::abo_env(
            &self.repo,
            &["run", path.to_str().unwrap(), "--store", &url, "--detach"],
            &self.env,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        let id = out.stdout.trim().to_owned();
        assert!(!id.is_empty() && !id.contains(' '), "{}", out.stdout);
        id
    }

    fn status(&self, run: &str) -> Value {
        let url = self.db.url.clone();
        let out = abo(&self.repo, &["status", "--json", "--store", &url, run]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }

    fn wait_finished(&self, run: &str, secs: u64) -> Value {
        let done = wait_for(secs, || {
            let s = self.status(run);
            matches!(s["run"]["status"].as_str(), Some("finished" | "killed"))
        });
        let s = self.status(run);
        assert!(
            done,
            "run {run} did not finish: {s:#}\n{}",
            self.procs
                .iter()
                .map(|(n, _)| format!("--- {n}\n{}", self.log(n)))
                .collect::<String>()
        );
        s
    }

    /// The task of each commit on the run branch, oldest first.
    fn landed_tasks(&self, run: &str) -> Vec<String> {
        let out = self.repo.git(&[
            "log",
            "--reverse",
            "--format=%(trailers:key=Abo-Task,valueonly)",
            &format!("refs/heads/abo/{run}"),
        ]);
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const CONFIG: &str = "version: 1\nattempts: { max: 2, stop_after_consecutive_failures: 0 }\ngates:\n  - { name: listed, run: 'ls f*.txt slow.txt 2>/dev/null | grep -q .' }\n";

fn backlog(n: usize, sleep: &str) -> String {
    let mut b = String::from("tasks:\n");
    for i in 0..n {
        b.push_str(&format!(
            "  - {{ id: t{i}, title: Task {i}, run: 'sleep {sleep}; echo {i} > f{i}.txt' }}\n"
        ));
    }
    b
}

fn all_landed(status: &Value, n: usize) {
    assert_eq!(status["run"]["status"], "finished", "{status:#}");
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), n);
    for t in tasks {
        assert_eq!(t["status"], "landed", "{t:#}");
    }
}

#[test]
fn three_workers_over_a_shared_remote_run_a_30_task_backlog() {
    let mut c = Cluster::new(CONFIG);
    c.serve("serve");
    for w in ["w1", "w2", "w3"] {
        c.worker(w, 2, None);
    }
    let run = c.detach(&backlog(30, "0.3"));
    let status = c.wait_finished(&run, 240);
    all_landed(&status, 30);
    // Each task landed exactly once, on the run branch the control plane pushed to the remote.
    let mut landed = c.landed_tasks(&run);
    landed.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(landed, want);
    let remote = git_in(&c.origin, &["rev-parse", &format!("refs/heads/abo/{run}")]);
    let local = c.repo.git(&["rev-parse", &format!("refs/heads/abo/{run}")]);
    assert_eq!(remote.trim(), local.trim());
    // The attempts' refs went once landed.
    assert_eq!(git_in(&c.origin, &["for-each-ref", "refs/abo/"]).trim(), "");
    // Every worker took part, and logged its claims and releases.
    for w in ["w1", "w2", "w3"] {
        let log = c.log(w);
        assert!(log.contains("claimed start"), "{w}:\n{log}");
        assert!(log.contains("claimed gate"), "{w}:\n{log}");
        assert!(log.contains("released"), "{w}:\n{log}");
    }
    // 30 attempts claimed, none refused or lost.
    let claims =
        c.db.query("SELECT SUM(claims), SUM(refused), SUM(lost) FROM workers");
    assert_eq!(claims.trim(), "30|0|0");
    // The control plane's /metrics has each worker's figures.
    let url = c.db.url.clone();
    let out = abo(
        &c.repo,
        &[
            "token", "create", "--role", "viewer", "--json", "--store", &url,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token: Value = serde_json::from_str(&out.stdout).unwrap();
    let serve_log = c.log("serve");
    let addr = serve_log
        .lines()
        .find_map(|l| l.split("listening on http://").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    let (code, metrics) =
        crate::serve::http(&addr, "GET", "/metrics", token["token"].as_str(), None);
    assert_eq!(code, 200, "{metrics}");
    for w in ["w1", "w2", "w3"] {
        assert!(
            metrics.contains(&format!("abo_worker_claims_total{{worker=\"{w}\"")),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("abo_worker_results_refused_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("abo_worker_queue_depth 0"), "{metrics}");
}

#[test]
fn a_worker_killed_mid_attempt_has_its_task_completed_by_another_exactly_once() {
    let mut c = Cluster::new(CONFIG);
    c.serve("serve");
    c.worker_ttl("doomed", 1, None, "2s");
    let run =
        c.detach("tasks:\n  - { id: slow, title: Slow, run: 'sleep 3; echo done > slow.txt' }\n");
    assert!(
        wait_for(60, || c.log("doomed").contains("claimed start")),
        "{}",
        c.log("doomed")
    );
    // While the worker runs the attempt, it dies (no heartbeat, no result).
    let status = c.status(&run);
    assert_eq!(status["tasks"][0]["worker"], "doomed", "{status:#}");
    let text = abo(&c.repo, &["status", "--store", &c.db.url.clone(), &run]);
    assert!(text.stdout.contains("on worker doomed"), "{}", text.stdout);
    c.kill("doomed");
    c.worker("rescuer", 1, None);
    let status = c.wait_finished(&run, 90);
    all_landed(&status, 1);
    assert_eq!(c.landed_tasks(&run), ["slow"]);
    // The same attempt ran again (attempt numbers count failures, not lost workers).
    assert_eq!(status["tasks"][0]["attempts"], 1);
    assert!(
        c.log("serve").contains("reaped slow#1: worker doomed"),
        "{}",
        c.log("serve")
    );
    assert!(
        c.log("rescuer").contains("claimed start"),
        "{}",
        c.log("rescuer")
    );
    let url = c.db.url.clone();
    let events = abo(&c.repo, &["events", "--json", "--store", &url, &run]);
    assert!(
        events.stdout.contains("\"cause\":\"interrupted\""),
        "{}",
        events.stdout
    );
}

/// A TCP proxy to PostgreSQL that can cut every connection through it (a network partition).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, open2, upstream) = (Arc::clone(&cut), Arc::clone(&open), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                if let Ok(mut o) = open2.lock() {
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, cut, open }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_worker_cut_off_from_the_store_loses_its_lease_and_its_late_result_is_refused() {
    let mut c = Cluster::new(CONFIG);
    let server = abo_test_support::pg::server();
    let hostport = server.rsplit('@').next().unwrap().to_owned();
    let proxy = Proxy::start(&hostport);
    let via_proxy = format!("postgres://root@127.0.0.1:{}/{}", proxy.port, c.db.name);
    c.serve("serve");
    c.worker_ttl("cut", 1, Some(&via_proxy), "2s");
    let run =
        c.detach("tasks:\n  - { id: slow, title: Slow, run: 'sleep 3; echo done > slow.txt' }\n");
    assert!(
        wait_for(60, || c.log("cut").contains("claimed start")),
        "{}",
        c.log("cut")
    );
    proxy.set_cut(true);
    c.worker("other", 1, None);
    let status = c.wait_finished(&run, 90);
    all_landed(&status, 1);
    // The partitioned worker finished its attempt meanwhile, and could not say so.
    assert!(
        wait_for(30, || c.log("cut").contains("sending the result")),
        "{}",
        c.log("cut")
    );
    proxy.set_cut(false);
    // Back in touch, its result is refused under its old fencing token; nothing lands twice.
    assert!(
        wait_for(60, || c.log("cut").contains("refused")),
        "{}",
        c.log("cut")
    );
    assert_eq!(c.landed_tasks(&run), ["slow"]);
    assert!(
        c.log("other").contains("claimed start"),
        "{}",
        c.log("other")
    );
    let counts =
        c.db.query("SELECT name, refused, lost FROM workers ORDER BY name");
    assert!(counts.contains("cut|1|1"), "{counts}");
}

#[test]
fn a_foreground_run_without_workers_says_so_and_goes_on_when_one_comes() {
    let mut c = Cluster::new(CONFIG);
    let path = c.repo.outside.join("backlog.yml");
    std::fs::write(&path, backlog(2, "0")).unwrap();
    let url = c.db.url.clone();
    c.start("fg", &["run", path.to_str().unwrap(), "--store", &url]);
    assert!(
        wait_for(30, || c
            .log("fg")
            .contains("note: no `abo worker` has been heard from")),
        "{}",
        c.log("fg")
    );
    c.worker("w1", 2, None);
    let fg = c.procs.iter_mut().find(|(n, _)| n == "fg").unwrap();
    let mut code = None;
    assert!(wait_for(60, || {
        code = fg.1.try_wait().unwrap().and_then(|s| s.code());
        code.is_some()
    }));
    assert_eq!(code, Some(0), "{}", c.log("fg"));
}

#[test]
fn two_control_planes_started_at_once_never_both_land_a_task() {
    let mut c = Cluster::new(CONFIG);
    let run = c.detach(&backlog(8, "0.2"));
    c.serve("cp1");
    c.serve("cp2");
    c.worker("w1", 2, None);
    c.worker("w2", 2, None);
    let status = c.wait_finished(&run, 120);
    all_landed(&status, 8);
    let mut landed = c.landed_tasks(&run);
    landed.sort();
    let mut want: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(landed, want, "each task landed once");
    // One of them drove the run; the other never appended a thing for it.
    let drove: Vec<&str> = ["cp1", "cp2"]
        .into_iter()
        .filter(|n| c.log(n).contains("run finished"))
        .collect();
    assert_eq!(drove.len(), 1, "{}\n{}", c.log("cp1"), c.log("cp2"));
    let url = c.db.url.clone();
    let events = abo(&c.repo, &["events", "--json", "--store", &url, &run]);
    assert_eq!(events.stdout.matches("\"kind\":\"task.landed\"").count(), 8);
}

#[test]
fn concurrent_workers_never_reserve_past_a_cap_together() {
    // Claude Code (a fake, reporting $0.25 an attempt) on three workers with two slots each: six
    // attempts could run at once, but the run's $1 cap holds three $0.30 reservations at most.
    let mut c = Cluster::new(
        "version: 1\nparallelism: { max_parallel: 6 }\nbudgets: { run_usd: 1.0, task_usd: 0.3 }\nsandbox: { mode: off }\nbackends:\n  claude: { kind: claude-code, model: sonnet }\n",
    );
    let bin = abo_test_support::agents::install(&c.repo.outside);
    let log = c.repo.outside.join("agent-log");
    std::fs::create_dir_all(&log).unwrap();
    c.env = vec![
        (
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        ("FAKE_AGENT_LOG", log.display().to_string()),
        ("FAKE_AGENT_COST", "0.25".into()),
    ];
    c.serve("serve");
    for w in ["w1", "w2", "w3"] {
        c.worker(w, 2, None);
    }
    let mut b = String::from("tasks:\n");
    for i in 0..8 {
        b.push_str(&format!(
            "  - {{ id: c{i}, title: Do c{i}, backend: claude, paths: ['claude-c{i}.txt'] }}\n"
        ));
    }
    let run = c.detach(&b);
    assert!(
        wait_for(120, || c.status(&run)["run"]["status"] == "paused"),
        "{:#}\n{}",
        c.status(&run),
        c.log("serve")
    );
    let status = c.status(&run);
    assert!(
        status["run"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("budget: run.usd cap $1.00 reached"),
        "{status:#}"
    );
    // At every point of the log, what was charged plus what was held stayed within the cap.
    let url = c.db.url.clone();
    let out = abo(&c.repo, &["events", "--json", "--store", &url, &run]);
    let (mut held, mut charged) = (std::collections::BTreeMap::new(), 0.0f64);
    let mut peak = 0.0f64;
    for line in out.stdout.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let key = (e["task"].to_string(), e["data"]["attempt"].to_string());
        match e["kind"].as_str() {
            Some("task.started") => {
                held.insert(key, e["data"]["reserved"]["usd"].as_f64().unwrap_or(0.0));
            }
            Some("budget.charged") => {
                held.remove(&key);
                charged += e["data"]["usd"].as_f64().unwrap();
            }
            _ => {}
        }
        let committed = charged + held.values().sum::<f64>();
        peak = peak.max(committed);
        assert!(committed <= 1.0 + 1e-9, "{committed} at {line}");
    }
    assert!(peak > 0.6, "reservations overlapped: peak {peak}");
    let landed = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "landed")
        .count();
    assert_eq!(
        landed, 3,
        "three $0.30 reservations fit in $1, not a fourth: {status:#}"
    );
}

#[test]
fn an_approval_on_the_shared_store_lands_the_change_from_the_worker_that_holds_it() {
    let mut c = Cluster::new(CONFIG);
    c.serve("serve");
    c.worker("w1", 1, None);
    let run = c.detach(
        "tasks:\n  - { id: deps, title: Pin deps, run: 'echo pinned > Cargo.lock; echo 1 > f1.txt' }\n",
    );
    // A lockfile needs a person: the run waits, the worker keeps the attempt's worktree.
    assert!(
        wait_for(60, || c.status(&run)["tasks"][0]["status"]
            == "awaiting_approval"),
        "{:#}",
        c.status(&run)
    );
    assert!(
        wait_for(30, || c.status(&run)["run"]["status"] == "paused"),
        "{:#}",
        c.status(&run)
    );
    let url = c.db.url.clone();
    let out = abo(&c.repo, &["approvals", "--store", &url]);
    assert!(
        out.stdout.contains("Cargo.lock changes dependencies"),
        "{}",
        out.stdout
    );
    let out = abo(
        &c.repo,
        &[
            "approve",
            "deps",
            "--reason",
            "pinned on purpose",
            "--store",
            &url,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The control plane goes on by itself; the commit comes from the worker's worktree.
    let status = c.wait_finished(&run, 60);
    all_landed(&status, 1);
    assert_eq!(c.landed_tasks(&run), ["deps"]);
    assert!(c.log("w1").contains("claimed commit"), "{}", c.log("w1"));
    let lock = c
        .repo
        .git(&["show", &format!("refs/heads/abo/{run}:Cargo.lock")]);
    assert_eq!(lock.trim(), "pinned");
}

/// Gates run on workers: a baseline one worker measured is in the shared store, and a later run
/// on the same tree, on another worker with its own clone, reads it instead of running the base's
/// gate again; its policy still compares with the base.
#[test]
fn a_baseline_one_worker_measured_is_read_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("base-runs");
    std::fs::write(&marker, "").unwrap();
    let mut c = Cluster::new(&format!(
        "version: 1\nsandbox: {{ mode: off }}\nattempts: {{ max: 1, stop_after_consecutive_failures: 0 }}\ngates:\n  - name: test\n    run: case \"$(pwd -P)\" in */baseline-*) echo ran >> {} ;; esac; python3 -m unittest -v\n",
        marker.display()
    ));
    c.repo.write(
        "calc.py",
        "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
    );
    c.repo.write(
        "test_calc.py",
        "import unittest\n\nimport calc\n\n\nclass T(unittest.TestCase):\n    def test_low(self):\n        self.assertEqual(calc.clamp(-1, 0, 3), 0)\n\n    def test_high(self):\n        self.assertEqual(calc.clamp(5, 0, 3), 3)\n",
    );
    c.repo.write(".gitignore", "__pycache__/\n");
    c.repo.commit_all("calc");
    c.repo
        .git(&["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
    let backlog = "tasks:\n  - { id: delete, title: Drop a test, run: \"python3 - <<'EOF'\\ns = open('test_calc.py').read()\\nopen('test_calc.py', 'w').write(s[:s.index('    def test_high')])\\nEOF\" }\n";
    c.serve("serve");
    for (w, other) in [("w1", None), ("w2", Some("w1"))] {
        if let Some(o) = other {
            c.kill(o);
        }
        c.worker(w, 1, None);
        let run = c.detach(backlog);
        let status = c.wait_finished(&run, 120);
        let t = &status["tasks"][0];
        assert_eq!(t["status"], "denied", "{status:#}");
        let reason = t["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("1 tests ran, 2 on the base"),
            "{w}: the policy saw the base: {reason:?}"
        );
        assert!(c.log(w).contains("claimed"), "{w}: {}", c.log(w));
        let runs = std::fs::read_to_string(&marker).unwrap().lines().count();
        assert_eq!(runs, 1, "{w}: the base gate ran once in all");
    }
}

/// `review:` with workers: the reviewer reads the attempt's change where its worktree is, on the
/// worker. The reviewer here approves whatever it is shown and says how many of the task's lines
/// it saw: asked on the control plane, where the attempt has no worktree, it would be shown an
/// empty diff and approve a change nobody reviewed.
#[test]
fn on_workers_the_reviewer_reads_the_attempts_whole_change() {
    let reviewer = r#"n=$(grep -c "^+written by the task" "$ABO_REVIEW_FILE"); echo "{\"verdict\":\"approve\",\"findings\":[{\"file\":\"f0.txt\",\"line\":1,\"severity\":\"low\",\"text\":\"saw $n\"}]}""#;
    let mut c = Cluster::new(&format!(
        "{CONFIG}backends:\n  rev: {{ kind: command, run: '{}' }}\nreview: {{ backends: [rev] }}\n",
        reviewer.replace('\'', "''")
    ));
    c.serve("serve");
    c.worker("w1", 1, None);
    let run = c.detach(
        "tasks:\n  - { id: a, title: Write f0, run: 'echo written by the task > f0.txt' }\n",
    );
    let status = c.wait_finished(&run, 90);
    all_landed(&status, 1);
    let url = c.db.url.clone();
    let out = abo(&c.repo, &["events", "--json", "--store", &url, &run]);
    let reviews: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "task.review")
        .collect();
    assert_eq!(reviews.len(), 1, "{}", out.stdout);
    let r = &reviews[0]["data"];
    assert_eq!(
        (&r["verdict"], &r["findings"][0]["text"]),
        (&Value::from("approve"), &Value::from("saw 1")),
        "{r:#}"
    );
    // It was the worker's job, and its reply, stored there, is readable on the control plane.
    assert!(c.log("w1").contains("claimed review"), "{}", c.log("w1"));
    let log = r["log"].as_str().expect("the review's log");
    let reply =
        std::fs::read_to_string(c.repo.path.join(".abo/artifacts").join(log)).unwrap_or_default();
    assert!(reply.contains("saw 1"), "{reply:?}");
}
