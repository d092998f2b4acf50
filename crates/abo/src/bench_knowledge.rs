//! `abo bench --only knowledge`: the knowledge index on generated repositories of 500 and 50,000
//! files: its cold build (time, store size), an incremental update after one file changed, and the
//! time a prompt's context takes, beside the baseline the prompt had without it (the task's text
//! matched to the tracked files' names).

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use abo_core::ids::Timestamp;
use abo_runtime::git::Git;
use abo_runtime::knowledge::{self, query};
use abo_runtime::redact::Redactor;
use abo_store::Store;

const WORDS: &[&str] = &[
    "parse", "token", "budget", "prompt", "policy", "gate", "store", "event", "commit", "branch",
    "worker", "lease", "sandbox", "profile", "report", "metric", "cache", "retry", "merge",
    "backend", "agent", "model", "price", "window", "schedule", "approval", "secret", "redact",
];

/// A Rust file of the generated repository: a few functions calling others' by name.
fn source(i: usize) -> String {
    let w = |k: usize| WORDS[(i * 7 + k * 13) % WORDS.len()];
    let mut s = format!("//! The {} of {} and {}.\n\n", w(0), w(1), w(2));
    for f in 0..4 {
        s.push_str(&format!(
            "/// Computes the {} {} for the {}.\npub fn {}_{}_{i}_{f}(input: &str) -> usize {{\n    let n = input.len();\n    {}_{}_{}_0(input) + n\n}}\n\n",
            w(f),
            w(f + 1),
            w(f + 2),
            w(f),
            w(f + 3),
            w(f + 4),
            w(f + 5),
            (i + f + 1) % 50_000,
        ));
    }
    s
}

async fn generated(dir: &Path, files: usize) -> anyhow::Result<()> {
    for i in 0..files {
        let d = dir.join("src").join(format!("m{}", i / 200));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(format!("f{i}.rs")), source(i))?;
    }
    crate::bench::sh(
        "git init -q -b main && git config user.email b@b && git config user.name bench && git add -A && git commit -qm 'generated sources'",
        dir,
    )
    .await
}

fn size(dir: &Path) -> u64 {
    ["k.db", "k.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The figures for one repository size.
async fn one(dir: &Path, files: usize, reps: usize) -> anyhow::Result<Value> {
    let repo = dir.join(format!("kn{files}"));
    std::fs::create_dir_all(&repo)?;
    generated(&repo, files).await?;
    let git = Git::new(repo.clone());
    let store = Store::open("sqlite:k.db", &repo.join(".abo")).await?;
    let red = Redactor::new(&[], std::iter::empty());
    let head = git.rev_parse("HEAD").await?;
    let at = Timestamp(1);
    let t0 = Instant::now();
    knowledge::update(&git, &store, &red, &head, at, &Default::default()).await?;
    let build = t0.elapsed();
    let bytes = size(&repo.join(".abo"));
    // One file changes: only it is read again.
    std::fs::write(repo.join("src/m0/f0.rs"), source(1) + "// changed\n")?;
    crate::bench::sh("git commit -qam 'one change'", &repo).await?;
    let next = git.rev_parse("HEAD").await?;
    let t1 = Instant::now();
    knowledge::update(&git, &store, &red, &next, at, &Default::default()).await?;
    let incremental = t1.elapsed();
    let text = "Give the prompt budget a retry when the sandbox profile is denied";
    let tracked: Vec<String> = git
        .run(&["ls-files"])
        .await?
        .lines()
        .map(str::to_owned)
        .collect();
    let spec = crate::context_cmd::spec("bench", text, "", vec![], vec![]);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let named = abo_runtime::backends::prompt::relevant_files(&spec, &tracked);
        without.push(crate::bench::ms(t.elapsed()));
        let t = Instant::now();
        let repo_id = knowledge::update(&git, &store, &red, &next, at, &Default::default()).await?;
        query::context(
            &store,
            &query::Ask {
                repo: &repo_id,
                commit: next.as_str(),
                text,
                named: &named,
                before: Timestamp(i64::MAX),
                limit: knowledge::RANKED,
                weights: Default::default(),
            },
        )
        .await?;
        with.push(crate::bench::ms(t.elapsed()));
    }
    Ok(json!({
        "files": files,
        "build_s": build.as_secs_f64(),
        "store_mb": bytes as f64 / 1e6,
        "incremental_ms": crate::bench::ms(incremental),
        "prompt_context_ms": crate::bench::dist(with),
        "baseline_file_names_ms": crate::bench::dist(without),
    }))
}

/// The knowledge figures: 500 and 50,000 files (`quick`: 500 and 5,000).
pub(crate) async fn figures(dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let big = if quick { 5_000 } else { 50_000 };
    let mut m = serde_json::Map::new();
    m.insert("500".into(), one(dir, 500, 5).await?);
    m.insert(big.to_string(), one(dir, big, 5).await?);
    Ok(Value::Object(m))
}
