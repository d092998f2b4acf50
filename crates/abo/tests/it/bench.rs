//! `abo bench`: the figures it reports and their shapes (the figures themselves are measured in
//! release builds and written down in BENCHMARKS.md, not asserted here).

use abo_test_support::TestRepo;
use abo_test_support::pg::ScratchDb;
use serde_json::Value;

use crate::{abo, abo_env};

fn is_dist(v: &Value) -> bool {
    ["p50", "p95", "p99", "min", "max"]
        .iter()
        .all(|k| v[k].as_f64().is_some_and(|x| x > 0.0))
        && v["p50"].as_f64() <= v["p95"].as_f64()
        && v["p95"].as_f64() <= v["p99"].as_f64()
}

#[test]
fn the_state_machine_figures_are_measured_and_the_others_left_null() {
    let repo = TestRepo::new();
    let db = ScratchDb::new();
    let out = abo_env(
        &repo,
        &[
            "--json",
            "bench",
            "--quick",
            "--only",
            "append,noop,dispatch,policy",
        ],
        &[("ABO_BENCH_PG", db.url.clone())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    for k in [
        "append_latency_ms",
        "dispatch_latency_ms",
        "dispatch_latency_ms_postgres",
        "policy_eval_ms",
    ] {
        assert!(is_dist(&v[k]), "{k}: {}", v[k]);
    }
    assert_eq!(v["append_latency_ms"]["samples"], 500);
    assert!(v["noop_tasks_per_s"].as_f64().is_some_and(|x| x > 0.0));
    assert_eq!(v["detail"]["noop_tasks_per_s"]["runs"], 3);
    // The state machine alone, nothing stored, with the no-op figure.
    assert!(v["decide_tasks_per_s"].as_f64().is_some_and(|x| x > 0.0));
    assert_eq!(v["detail"]["decide_tasks_per_s"]["tasks"], 2000);
    for k in [
        "git_overhead_ratio",
        "git_processes_per_task",
        "two_slot_speedup",
        "run_rss_mb",
        "concurrent_200_s",
        "peak_rss_mb",
    ] {
        assert!(v[k].is_null(), "{k} was not asked for: {}", v[k]);
    }
    assert_eq!(v["machine"]["build"], "debug");
    assert!(v["machine"]["cores"].as_u64().is_some_and(|c| c > 0));
    // The Postgres figure ran on the database named, and added runs to it.
    let runs = db.query("SELECT COUNT(*) FROM runs");
    assert_ne!(runs.trim(), "0");
}

#[test]
fn a_figure_that_is_not_one_or_a_missing_dir_is_refused() {
    let repo = TestRepo::new();
    let out = abo(&repo, &["bench", "--only", "speed"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("speed"), "{}", out.stderr);
    let out = abo(
        &repo,
        &["bench", "--only", "policy", "--dir", "/nonexistent/abo"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--dir /nonexistent/abo"),
        "{}",
        out.stderr
    );
}
