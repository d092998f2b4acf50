//! `/metrics`: Prometheus text, computed from the store (docs/api.md): tasks by status, attempt and
//! gate durations, tokens and USD by backend, cache hits, queue depth, policy evaluation time.

use std::collections::BTreeMap;
use std::fmt::Write;

use abo_core::event::{EventBody, StoredEvent};
use abo_store::Store;

/// Every event of the store, in order.
pub async fn all_events(store: &Store) -> Result<Vec<StoredEvent>, abo_store::StoreError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.events(None, after, 5000).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        out.extend(batch);
    }
    Ok(out)
}

#[derive(Default)]
struct Sum {
    count: u64,
    sum: f64,
}

impl Sum {
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn render(store: &Store) -> Result<String, abo_store::StoreError> {
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for run in store.runs().await? {
        for t in store.tasks(&run.id).await? {
            *by_status.entry(t.status).or_default() += 1;
        }
    }
    let events = all_events(store).await?;
    let mut attempt = Sum::default();
    let mut gates: BTreeMap<String, Sum> = BTreeMap::new();
    let mut tokens: BTreeMap<String, u64> = BTreeMap::new();
    let mut usd: BTreeMap<String, f64> = BTreeMap::new();
    let mut policy = Sum::default();
    let mut cache_hits = 0u64;
    for e in &events {
        match &e.event.body {
            EventBody::TaskBackendFinished { duration_ms, .. } => {
                #[allow(clippy::cast_precision_loss)]
                attempt.add(*duration_ms as f64 / 1000.0);
            }
            EventBody::TaskGate {
                name, duration_ms, ..
            } => {
                #[allow(clippy::cast_precision_loss)]
                gates
                    .entry(name.to_string())
                    .or_default()
                    .add(*duration_ms as f64 / 1000.0);
            }
            EventBody::BudgetCharged {
                backend,
                usd: u,
                tokens: t,
                ..
            } => {
                *tokens.entry(backend.to_string()).or_default() += t;
                *usd.entry(backend.to_string()).or_default() += u;
            }
            EventBody::TaskPolicy { duration_us, .. } => {
                #[allow(clippy::cast_precision_loss)]
                policy.add(*duration_us as f64 / 1e6);
            }
            EventBody::CacheHit { .. } => cache_hits += 1,
            _ => {}
        }
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP abo_tasks Tasks by status, over every run in the store."
    );
    let _ = writeln!(o, "# TYPE abo_tasks gauge");
    for (s, n) in &by_status {
        let _ = writeln!(o, "abo_tasks{{status=\"{}\"}} {n}", label(s));
    }
    let _ = writeln!(
        o,
        "# HELP abo_queue_depth Tasks ready and waiting to start."
    );
    let _ = writeln!(o, "# TYPE abo_queue_depth gauge");
    let _ = writeln!(
        o,
        "abo_queue_depth {}",
        by_status.get("ready").copied().unwrap_or(0)
    );
    let _ = writeln!(
        o,
        "# HELP abo_attempt_duration_seconds Time backends took per attempt."
    );
    let _ = writeln!(o, "# TYPE abo_attempt_duration_seconds summary");
    let _ = writeln!(o, "abo_attempt_duration_seconds_sum {}", attempt.sum);
    let _ = writeln!(o, "abo_attempt_duration_seconds_count {}", attempt.count);
    let _ = writeln!(o, "# HELP abo_gate_duration_seconds Time each gate took.");
    let _ = writeln!(o, "# TYPE abo_gate_duration_seconds summary");
    for (g, s) in &gates {
        let g = label(g);
        let _ = writeln!(o, "abo_gate_duration_seconds_sum{{gate=\"{g}\"}} {}", s.sum);
        let _ = writeln!(
            o,
            "abo_gate_duration_seconds_count{{gate=\"{g}\"}} {}",
            s.count
        );
    }
    let _ = writeln!(o, "# HELP abo_tokens_total Tokens charged, by backend.");
    let _ = writeln!(o, "# TYPE abo_tokens_total counter");
    for (b, n) in &tokens {
        let _ = writeln!(o, "abo_tokens_total{{backend=\"{}\"}} {n}", label(b));
    }
    let _ = writeln!(o, "# HELP abo_cost_usd_total USD charged, by backend.");
    let _ = writeln!(o, "# TYPE abo_cost_usd_total counter");
    for (b, v) in &usd {
        let _ = writeln!(o, "abo_cost_usd_total{{backend=\"{}\"}} {v}", label(b));
    }
    let _ = writeln!(
        o,
        "# HELP abo_cache_hits_total Attempts that reused a cached result."
    );
    let _ = writeln!(o, "# TYPE abo_cache_hits_total counter");
    let _ = writeln!(o, "abo_cache_hits_total {cache_hits}");
    let _ = writeln!(
        o,
        "# HELP abo_policy_eval_seconds Policy evaluation time per change."
    );
    let _ = writeln!(o, "# TYPE abo_policy_eval_seconds summary");
    let _ = writeln!(o, "abo_policy_eval_seconds_sum {}", policy.sum);
    let _ = writeln!(o, "abo_policy_eval_seconds_count {}", policy.count);
    workers(store, &mut o).await?;
    Ok(o)
}

/// Per worker of a shared store: alive, slots, attempts held, claims, results taken and refused,
/// leases lost.
async fn workers(store: &Store, o: &mut String) -> Result<(), abo_store::StoreError> {
    let ws = store.workers().await?;
    if ws.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        o,
        "# HELP abo_worker_queue_depth Start jobs no worker has claimed yet."
    );
    let _ = writeln!(o, "# TYPE abo_worker_queue_depth gauge");
    let _ = writeln!(o, "abo_worker_queue_depth {}", store.queued_jobs().await?);
    type Read = fn(&abo_store::WorkerRow) -> u64;
    let gauges: [(&str, &str, Read); 7] = [
        ("abo_worker_slots", "gauge", |w| u64::from(w.slots)),
        ("abo_worker_busy", "gauge", |w| w.busy),
        ("abo_worker_heartbeat_ms", "gauge", |w| {
            u64::try_from(w.heartbeat.0).unwrap_or(0)
        }),
        ("abo_worker_claims_total", "counter", |w| w.claims),
        ("abo_worker_results_total", "counter", |w| w.done),
        ("abo_worker_results_refused_total", "counter", |w| w.refused),
        ("abo_worker_leases_lost_total", "counter", |w| w.lost),
    ];
    for (name, kind, value) in gauges {
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for w in &ws {
            let _ = writeln!(
                o,
                "{name}{{worker=\"{}\",host=\"{}\"}} {}",
                label(&w.name),
                label(&w.host),
                value(w)
            );
        }
    }
    Ok(())
}
