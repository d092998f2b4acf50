//! A real Prometheus server (Debian's `prometheus`) on a free port of 127.0.0.1, with a temporary
//! configuration and storage, scraping an [`Exporter`]: a small service the test "deploys" to
//! (`/deploy/canary`, `/deploy/promote`, `/deploy/rollback`, as a deploy hook would with curl)
//! whose canary's error rate the test sets.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;

#[derive(Debug, Default)]
struct Service {
    /// Which version serves: `stable`, or `canary` after `/deploy/canary`.
    version: String,
    /// The canary's share of failed requests.
    canary_errors: f64,
    requests: f64,
    errors: f64,
    /// The deploy calls received, in order.
    calls: Vec<String>,
}

/// The service: each scrape counts 100 more requests, failed at the serving version's rate.
pub struct Exporter {
    pub url: String,
    pub port: u16,
    state: Arc<Mutex<Service>>,
    _thread: std::thread::JoinHandle<()>,
}

async fn metrics(State(s): State<Arc<Mutex<Service>>>) -> String {
    let mut s = s.lock().unwrap();
    let rate = if s.version == "canary" {
        s.canary_errors
    } else {
        0.0
    };
    s.requests += 100.0;
    s.errors += 100.0 * rate;
    format!(
        "# TYPE app_requests_total counter\napp_requests_total {}\n\
         # TYPE app_errors_total counter\napp_errors_total {}\n",
        s.requests, s.errors
    )
}

async fn deploy(State(s): State<Arc<Mutex<Service>>>, Path(step): Path<String>) -> String {
    let mut s = s.lock().unwrap();
    match step.as_str() {
        "canary" => s.version = "canary".into(),
        "promote" => {}
        _ => s.version = "stable".into(),
    }
    s.calls.push(step.clone());
    format!("{step} ok\n")
}

impl Exporter {
    /// Starts the service; its canary fails `canary_errors` of its requests.
    pub fn start(canary_errors: f64) -> Self {
        let state = Arc::new(Mutex::new(Service {
            version: "stable".into(),
            canary_errors,
            ..Service::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let app_state = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/metrics", get(metrics))
                    .route("/deploy/{step}", get(deploy))
                    .with_state(app_state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            state,
            _thread: thread,
        }
    }

    /// The deploy calls received, in order (`canary`, `promote`, `rollback`).
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The version serving now.
    pub fn version(&self) -> String {
        self.state.lock().unwrap().version.clone()
    }

    /// Deploy hooks that call the service with curl.
    pub fn hook(&self, step: &str) -> String {
        format!("curl -fsS {}/deploy/{step}", self.url)
    }
}

/// A Prometheus server scraping one target every second; killed when dropped.
pub struct Prometheus {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The error ratio over the last few seconds: a burn-rate style SLO query.
pub const ERROR_RATIO: &str = "sum(rate(app_errors_total[3s])) / sum(rate(app_requests_total[3s]))";

/// A port of 127.0.0.1 free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// The Prometheus binary: Debian's package installs it at /usr/bin/prometheus.
    pub fn binary() -> PathBuf {
        PathBuf::from("/usr/bin/prometheus")
    }

    /// Starts Prometheus scraping `target` (host:port) every second, and waits until it has a
    /// value for [`ERROR_RATIO`].
    pub fn start(target: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        #[allow(
            clippy::disallowed_methods,
            reason = "the test runs a real Prometheus server"
        )]
        let child = Command::new(Self::binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let p = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.query(ERROR_RATIO).is_none() {
            assert!(
                Instant::now() < deadline,
                "prometheus at {} had no data in 60 s",
                p.url
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        p
    }

    /// The query's first value now, if Prometheus answers with one.
    pub fn query(&self, query: &str) -> Option<f64> {
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let q: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        use std::io::{Read, Write};
        write!(
            s,
            "GET /api/v1/query?query={q} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let json = body.split("\r\n\r\n").nth(1)?;
        // Chunked or not, the JSON document is one line in the body.
        let line = json.lines().find(|l| l.starts_with('{'))?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
