//! `abo bench --only bisect`: what `landing.verify` costs when it heals a run branch. A run of 16
//! patch tasks whose 12th breaks the verify gate (bisected over the 16 landed commits, reverted,
//! verified again) side by side with the same run without `landing.verify`, in the same session.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use super::{generated_repo, ms, patch, sh};
use abo_runtime::process::{self, Spec};

/// Runs `abo ARGS` in `repo`; returns its stdout, failing on an exit code not in `ok`.
pub(super) async fn abo(repo: &Path, args: &[&str], ok: &[i32]) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let mut spec = Spec::new(exe.as_os_str(), repo).args(args.iter().map(std::ffi::OsStr::new));
    spec.env_remove = vec!["ABO_CLOCK_OFFSET_FILE".into()];
    let out = process::run(&spec, &Default::default()).await?;
    if !out.exit.is_some_and(|c| ok.contains(&c)) {
        anyhow::bail!(
            "abo {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One run of `n` patch tasks in a fresh repository, with or without `landing.verify`: its wall
/// time, the bisect steps and the time from the failing verify to the revert.
async fn one(dir: &Path, n: usize, bad: usize, verify: bool) -> anyhow::Result<Value> {
    let repo = dir.join(if verify { "verify" } else { "plain" });
    generated_repo(&repo, 50).await?;
    let patches = repo.join("patches");
    std::fs::create_dir_all(&patches)?;
    let mut backlog = String::from("tasks:\n");
    for i in 0..n {
        std::fs::write(patches.join(format!("p{i}.diff")), patch(i))?;
        backlog.push_str(&format!(
            "  - {{ id: t{i}, title: T{i}, paths: ['new/n{i}.txt'], patch: patches/p{i}.diff, gates: [] }}\n"
        ));
    }
    let landing = if verify {
        "landing: { verify: [e2e] }\n"
    } else {
        ""
    };
    std::fs::write(
        repo.join("abo.yml"),
        format!(
            "version: 1\nparallelism: {{ max_parallel: 1 }}\nautonomy: {{ overrides: {{ merge: A2 }} }}\ngates:\n  - {{ name: e2e, run: 'test ! -f new/n{bad}.txt' }}\n{landing}"
        ),
    )?;
    std::fs::write(repo.join("b.yml"), backlog)?;
    sh("git add -A && git commit -qm cfg && sync", &repo).await?;
    let t0 = Instant::now();
    let doc: Value =
        serde_json::from_str(&abo(&repo, &["run", "b.yml", "--json"], &[0, 1]).await?)?;
    let wall_ms = ms(t0.elapsed());
    let run = doc["run"]["id"].as_str().unwrap_or_default().to_owned();
    let events = abo(&repo, &["events", &run, "--json"], &[0]).await?;
    let count = |kind: &str| {
        events
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["kind"] == kind)
            .count()
    };
    let report: Value = serde_json::from_str(&abo(&repo, &["report", "--json"], &[0]).await?)?;
    Ok(json!({
        "wall_ms": wall_ms,
        "landed": count("task.landed"),
        "bisect_steps": count("run.bisect"),
        "verify_runs": count("run.verify"),
        "reverted": count("task.reverted"),
        "time_to_restore_s": report["time_to_restore"]["p50_s"],
    }))
}

/// The bisect over 16 landed commits, and its baseline.
pub(super) async fn bisect(dir: &Path) -> anyhow::Result<Value> {
    let (n, bad) = (16, 11);
    let plain = one(dir, n, bad, false).await?;
    let healed = one(dir, n, bad, true).await?;
    Ok(json!({
        "tasks": n,
        "first_bad": format!("t{bad}"),
        "without_verify": plain,
        "with_verify": healed,
    }))
}
