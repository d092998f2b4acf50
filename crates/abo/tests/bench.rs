//! `abo bench --quick --json`: one object with every figure of BENCHMARKS.md's targets, each a number or
//! percentiles, measured on this machine. A test binary of its own, so that its 200 concurrent
//! attempts do not run alongside the other end-to-end tests.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use serde_json::Value;

#[test]
fn the_quick_benchmark_reports_every_figure() {
    // On a RAM file system where there is one: the 50,000-file checkouts of a debug build take
    // minutes on a disk, and this test checks what is reported, not how fast.
    let mut args = vec!["bench", "--quick", "--json"];
    if std::path::Path::new("/dev/shm").is_dir() {
        args.extend(["--dir", "/dev/shm"]);
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs the binary under test"
    )]
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abo"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["dispatch_latency_ms", "append_latency_ms", "policy_eval_ms"] {
        let d = &doc[k];
        for q in ["p50", "p95", "p99"] {
            assert!(d[q].as_f64().is_some_and(|v| v > 0.0), "{k}.{q}: {d}");
        }
        assert!(d["p50"].as_f64() <= d["p99"].as_f64(), "{k}: {d}");
    }
    for k in [
        "noop_tasks_per_s",
        "git_overhead_ratio",
        "git_processes_per_task",
        "two_slot_speedup",
        "run_rss_mb",
        "decide_tasks_per_s",
        "concurrent_200_s",
        "peak_rss_mb",
    ] {
        assert!(doc[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {}", doc[k]);
    }
    // 200 one-second sleeps at once finish far sooner than one after the other.
    assert!(doc["concurrent_200_s"].as_f64().unwrap() < 150.0, "{doc}");
    // Two slots against one on 50 and 50,000 files, the least of them the figure.
    let speedup = &doc["detail"]["two_slot_speedup"];
    for files in ["50", "50000"] {
        assert!(
            speedup[files].as_f64().is_some_and(|x| x > 0.0),
            "{speedup}"
        );
    }
    assert!(
        doc["detail"]["git_50000_2_slots"]["ratio"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{doc}"
    );
    // The shell loop's git calls are counted beside abo's, on the 50-file repository.
    let git = &doc["detail"]["git_50"];
    assert!(
        git["shell_git_processes_per_task"]
            .as_f64()
            .is_some_and(|x| x >= 5.0),
        "{git}"
    );
    assert_eq!(
        doc["git_processes_per_task"],
        git["abo_git_processes_per_task"]
    );
    assert_eq!(doc["machine"]["cores"].as_u64().map(|c| c > 0), Some(true));
}
