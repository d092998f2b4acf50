//! `abo bench --only dashboard`: the dashboard's pages for a run of 10 tasks and a run of 10,000
//! (1,000 with `--quick`), side by side in the same process: each page's weight (the HTML, and the
//! stylesheet and script it loads) and the time the server takes to send it whole, which bounds
//! its first render (the pages are rendered on the server; the browser needs nothing else but the
//! two static files before it paints). Each run is driven to its end through the state machine
//! with instant effects, its events committed to a real SQLite store, and served by the real
//! `abo serve` router over loopback HTTP.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use abo_core::ids::{RunId, Timestamp};
use abo_store::{Store, TokenRow};

/// One GET with the session cookie: (status, body bytes, milliseconds to the last byte).
fn get(addr: &str, path: &str, token: &str) -> anyhow::Result<(u16, usize, f64)> {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: abo_session={token}\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    Ok((status, body, ms))
}

/// A run of `n` tasks, driven to its end, served on 127.0.0.1: its address, a token and its id.
async fn serve_run(
    dir: &Path,
    n: usize,
) -> anyhow::Result<(String, String, RunId, tokio::task::JoinHandle<()>)> {
    crate::bench::drive_noop(dir, n, false).await?;
    let store = Store::open("sqlite:bench.db", dir).await?;
    let run = store
        .latest_run()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench run is missing"))?
        .id;
    let (id, secret) = abo_server::auth::generate()?;
    let row = TokenRow {
        id,
        name: "bench".into(),
        role: "admin".into(),
        created_at: Timestamp(0),
        revoked_at: None,
    };
    store
        .token_create(&row, &abo_server::auth::hash(&secret))
        .await?;
    let ctx = Arc::new(abo_runtime::Ctx::new(
        dir.to_owned(),
        store,
        abo_runtime::git::Git::new(dir.to_owned()),
        Arc::new(abo_runtime::SystemClock),
    ));
    let api = Arc::new(crate::serve::Api {
        root: dir.to_owned(),
        config: None,
        ctx: Arc::clone(&ctx),
        lines: crate::serve::Lines::Stdout,
    });
    let state = abo_server::State {
        ctx,
        control: api,
        sessions: abo_server::auth::SessionKey::generate()?,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, abo_server::app(state)).await;
    });
    Ok((addr, secret, run, server))
}

/// Each page's bytes and its time to the last byte (median and max of `reps`).
async fn pages(addr: &str, token: &str, run: &RunId, reps: usize) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    let task = "t5";
    for (name, path) in [
        ("home", "/".to_owned()),
        ("task", format!("/runs/{run}/tasks/{task}")),
        ("run", format!("/runs/{run}")),
        ("run_failed", format!("/runs/{run}?status=failed")),
        (
            "run_landed_page_50",
            format!("/runs/{run}?status=landed&page=50"),
        ),
        ("api_run", format!("/v1/runs/{run}")),
        ("api_tasks_page", format!("/v1/runs/{run}/tasks?limit=100")),
        ("summary", "/summary".to_owned()),
        ("stylesheet", "/static/dashboard.css".to_owned()),
        ("script", "/static/dashboard.js".to_owned()),
    ] {
        let (addr, token) = (addr.to_owned(), token.to_owned());
        let samples = tokio::task::spawn_blocking(move || {
            (0..reps)
                .map(|_| get(&addr, &path, &token))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        let mut ms: Vec<f64> = samples.iter().map(|s| s.2).collect();
        ms.sort_by(f64::total_cmp);
        let status = samples.first().map_or(0, |s| s.0);
        let bytes = samples.first().map_or(0, |s| s.1);
        out.insert(
            name.to_owned(),
            json!({ "status": status, "bytes": bytes, "ms_median": ms[ms.len() / 2], "ms_max": ms[ms.len() - 1] }),
        );
    }
    Ok(Value::Object(out))
}

/// The browser harness of the dashboard's tests (playwright-core), where this source tree has it.
const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// Time to first render in headless Chromium (`tests/browser/paint.mjs`): per page the median of
/// `reps` navigations to first contentful paint and to the load event; a note saying why when the
/// harness (node, playwright-core, Chromium) is not installed here.
async fn first_render(addr: &str, token: &str, run: &RunId, reps: usize) -> Value {
    let harness = Path::new(HARNESS);
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !harness.join("node_modules/playwright-core").exists() || !Path::new(&chromium).exists() {
        return json!({ "skipped": "no browser harness here: npm ci in crates/abo/tests/browser and Chromium at $CHROMIUM or /usr/bin/chromium" });
    }
    let mut spec = abo_runtime::process::Spec::new("node", harness).args(["paint.mjs"]);
    spec.env = vec![
        ("ABO_URL".into(), format!("http://{addr}")),
        ("ABO_TOKEN".into(), token.to_owned()),
        (
            "ABO_PAGES".into(),
            format!("/ /runs/{run}/tasks/t5 /runs/{run} /summary"),
        ),
        ("ABO_REPS".into(), reps.to_string()),
        ("CHROMIUM".into(), chromium),
    ];
    spec.timeout = Some(std::time::Duration::from_secs(600));
    match abo_runtime::process::run(&spec, &Default::default()).await {
        Ok(out) if out.exit == Some(0) => serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| json!({ "error": e.to_string() })),
        Ok(out) => {
            json!({ "error": String::from_utf8_lossy(&out.stderr).chars().take(2000).collect::<String>() })
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// The figure: pages of a small and a large run, measured in the same run of the bench.
pub(crate) async fn dashboard(dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let large = if quick { 1000 } else { 10_000 };
    let reps = if quick { 3 } else { 7 };
    let mut out = json!({ "method": "each page fetched whole over loopback HTTP from the abo serve router, after its run was driven to its end; bytes of the HTML; ms to the last byte (median and max); the page paints once the HTML and the two static files arrived" });
    for n in [10, large] {
        let sub = dir.join(format!("dashboard{n}"));
        std::fs::create_dir_all(&sub)?;
        let (addr, token, run, server) = serve_run(&sub, n).await?;
        out[format!("tasks_{n}")] = pages(&addr, &token, &run, reps).await?;
        out[format!("tasks_{n}")]["first_render"] = first_render(&addr, &token, &run, reps).await;
        server.abort();
    }
    Ok(out)
}
