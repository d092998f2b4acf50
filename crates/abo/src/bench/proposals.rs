//! `abo bench --only proposals`: the wall time of a task with three proposals (three command
//! backends, each taking a second, run in parallel in their own worktrees and sandboxes) against
//! the same task with one, paired in the same session: each pair runs one then the other on the
//! same machine, so that a loaded machine slows both.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use super::heal::abo;
use super::{generated_repo, ms, sh};

/// One run of the task in a fresh repository, with `n` proposals: its wall time in ms and the
/// candidates it recorded.
async fn one(dir: &Path, name: &str, n: u32) -> anyhow::Result<(f64, usize)> {
    let repo = dir.join(name);
    generated_repo(&repo, 50).await?;
    let proposals = if n > 1 {
        format!("proposals:\n  rules: [{{ when: 'true', n: {n} }}]\n")
    } else {
        String::new()
    };
    std::fs::write(
        repo.join("abo.yml"),
        format!(
            "version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\nbackends:\n  p1: {{ kind: command, run: 'sleep 1; echo one > a.txt' }}\n  p2: {{ kind: command, run: 'sleep 1; echo two > a.txt; echo more >> a.txt' }}\n  p3: {{ kind: command, run: 'sleep 1; echo three > a.txt; echo more >> a.txt; echo and more >> a.txt' }}\nrouter:\n  learn: {{ code: [p2, p3] }}\ngates:\n  - {{ name: test, run: 'test -f a.txt' }}\n{proposals}"
        ),
    )?;
    std::fs::write(
        repo.join("b.yml"),
        "tasks:\n  - { id: a, title: A, type: code, backend: p1 }\n",
    )?;
    sh("git add -A && git commit -qm cfg && sync", &repo).await?;
    let t0 = Instant::now();
    let doc: Value = serde_json::from_str(&abo(&repo, &["run", "b.yml", "--json"], &[0]).await?)?;
    let wall = ms(t0.elapsed());
    if doc["tasks"][0]["status"] != "landed" {
        anyhow::bail!("the bench task did not land: {doc}");
    }
    let run = doc["run"]["id"].as_str().unwrap_or_default().to_owned();
    let events = abo(&repo, &["events", &run, "--json"], &[0]).await?;
    let candidates = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "task.proposal")
        .count();
    Ok((wall, candidates))
}

/// `pairs` pairs of (one proposal, three proposals); the median of their wall times and of each
/// pair's ratio.
pub(super) async fn proposals(dir: &Path, pairs: usize) -> anyhow::Result<Value> {
    let (mut single, mut triple, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut each = Vec::new();
    let mut recorded = 0;
    for i in 0..pairs {
        let (a, _) = one(dir, &format!("one-{i}"), 1).await?;
        let (b, c) = one(dir, &format!("three-{i}"), 3).await?;
        recorded = c;
        each.push(json!({ "one_ms": a.round(), "three_ms": b.round() }));
        single.push(a);
        triple.push(b);
        ratios.push(b / a);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(json!({
        "pairs": pairs,
        "each": each,
        "one_proposal_ms": median(single),
        "three_proposals_ms": median(triple),
        "ratio": (median(ratios) * 100.0).round() / 100.0,
        "candidates_recorded": recorded,
    }))
}
