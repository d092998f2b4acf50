//! The knowledge layer on real git repositories and a real SQLite store.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

use abo_core::ids::{CommitSha, Timestamp};
use abo_store::Store;
use abo_test_support::{TestRepo, git_in};
use pretty_assertions::assert_eq;

use super::query::{self, Ask, context};
use super::*;
use crate::redact::Redactor;

async fn store(dir: &Path) -> Store {
    Store::open("sqlite:k.db", dir).await.unwrap()
}

fn head(dir: &Path) -> CommitSha {
    CommitSha::new(git_in(dir, &["rev-parse", "HEAD"]).trim())
}

#[tokio::test]
async fn a_commit_is_indexed_from_its_objects_incrementally_and_ranked_with_why() {
    let repo = TestRepo::new();
    repo.write(
        "src/prompt.rs",
        "pub fn build_prompt(budget: usize) -> String { count_tokens(\"x\"); String::new() }\n",
    );
    repo.write(
        "src/tokens.rs",
        "pub fn count_tokens(text: &str) -> usize { text.len() }\n",
    );
    repo.write("src/main.rs", "fn main() { build_prompt(3); }\n");
    repo.write(
        "web/view.ts",
        "export function renderView(): void { paint() }\n",
    );
    repo.write(
        "tools/sign.py",
        "def sign_value(value):\n    return value\n",
    );
    repo.write(
        "cmd/serve.go",
        "package main\nfunc ServeHTTP() { listen() }\n",
    );
    let token = format!("ghp_{}", "a1B2c3D4".repeat(5));
    repo.write("config/keys.txt", &format!("github token {token}\n"));
    repo.write("big.txt", &"prompt ".repeat(60_000));
    std::os::unix::fs::symlink("/etc/passwd", repo.path.join("link.rs")).unwrap();
    repo.commit_all("Prompt: the token budget");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let git = crate::git::Git::new(repo.path.clone());
    let red = Redactor::new(&[], std::iter::empty());
    let c1 = head(&repo.path);
    let id = repo_id(&git, &c1).await.unwrap();

    let first = index::index_commit(&git, &store, &red, &id, &c1, Timestamp(1))
        .await
        .unwrap();
    // README, five sources, the keys file and the large file; the link is no file.
    assert_eq!((first.files, first.read, first.cached), (9, 9, false));
    let again = index::index_commit(&git, &store, &red, &id, &c1, Timestamp(2))
        .await
        .unwrap();
    assert!(again.cached);
    let paths: Vec<String> = store
        .knowledge_tree(&id, c1.as_str())
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(!paths.contains(&"link.rs".to_owned()), "{paths:?}");
    // The secret reached no term; the large file is indexed by its path only.
    let secret_terms = abo_knowledge::terms::query(&token, 8);
    assert!(!secret_terms.is_empty());
    assert!(
        store
            .knowledge_file_hits(&id, c1.as_str(), &secret_terms, 100)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let (big, _) = store
        .knowledge_file_hits(&id, c1.as_str(), &["prompt".into()], 100)
        .await
        .unwrap();
    assert!(big.iter().all(|(p, ..)| p != "big.txt"), "{big:?}");
    // Symbols of each language.
    let defs = store
        .knowledge_defs_by_name(
            &id,
            c1.as_str(),
            &["renderView", "sign_value", "ServeHTTP", "build_prompt"].map(String::from),
        )
        .await
        .unwrap();
    let files: Vec<&str> = defs.iter().map(|(p, ..)| p.as_str()).collect();
    assert_eq!(
        files,
        [
            "cmd/serve.go",
            "src/prompt.rs",
            "tools/sign.py",
            "web/view.ts"
        ]
    );

    // One file changes: only it is read.
    repo.write("src/main.rs", "fn main() { build_prompt(4); }\n");
    repo.commit_all("main: four");
    let c2 = head(&repo.path);
    let second = index::index_commit(&git, &store, &red, &id, &c2, Timestamp(3))
        .await
        .unwrap();
    assert_eq!((second.files, second.read), (9, 1));
    assert_eq!(
        history::index_history(&git, &store, &red, &id, &c2)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        history::index_history(&git, &store, &red, &id, &c2)
            .await
            .unwrap(),
        0
    );

    assert_eq!(
        query::identifiers("Make `Plan` use build_prompt and countTokens, not budget"),
        ["build_prompt", "counttokens", "plan"]
    );
    let ctx = context(
        &store,
        &Ask {
            repo: &id,
            commit: c2.as_str(),
            text: "Give build_prompt a larger token budget",
            named: &[],
            before: Timestamp(i64::MAX),
            limit: 10,
            weights: Default::default(),
        },
    )
    .await
    .unwrap();
    let ranked: Vec<&str> = ctx.files.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(ranked[0], "src/prompt.rs", "{:#?}", ctx.files);
    let why: Vec<String> = ctx.files[0].why.iter().map(ToString::to_string).collect();
    assert!(
        why.iter().any(|w| w.starts_with("its text matches")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w == "defines `build_prompt`, named by the task"),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.starts_with("changed by the similar commit")),
        "{why:?}"
    );
    // The graph brings in what the best file uses and what uses it.
    assert!(
        ranked.contains(&"src/tokens.rs") && ranked.contains(&"src/main.rs"),
        "{ranked:?}"
    );
    assert_eq!(
        ctx.symbols.get("src/prompt.rs").unwrap()[0],
        ("build_prompt".to_owned(), "fn".to_owned(), 1)
    );
}

/// Clones the fixture bundle of a public project's history.
fn fixture(dir: &Path) -> std::path::PathBuf {
    let bundle =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/knowledge/itsdangerous.bundle");
    let to = dir.join("itsdangerous");
    git_in(
        dir,
        &[
            "clone",
            "--quiet",
            "--branch",
            "main",
            bundle.to_str().unwrap(),
            to.to_str().unwrap(),
        ],
    );
    to
}

async fn measure(repo: &Path, commits: usize) -> eval::Recall {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let git = crate::git::Git::new(repo.to_owned());
    let red = Redactor::new(&[], std::iter::empty());
    eval::evaluate(
        &git,
        &store,
        &red,
        &head(repo),
        commits,
        Timestamp(1),
        Default::default(),
    )
    .await
    .unwrap()
}

#[allow(clippy::print_stderr, reason = "the figures, for BENCHMARKS.md")]
fn beats(name: &str, r: &eval::Recall, min_commits: usize) {
    eprintln!(
        "{name}: {} commits, recall@5 {:.3} (baseline {:.3}), recall@10 {:.3} (baseline {:.3})",
        r.commits, r.at5, r.base_at5, r.at10, r.base_at10
    );
    assert!(r.commits >= min_commits, "{name}: {r:?}");
    assert!(r.at5 > r.base_at5 && r.at10 > r.base_at10, "{name}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_beats_the_file_name_baseline_on_a_public_projects_history() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fixture(dir.path());
    let r = measure(&repo, 150).await;
    beats("itsdangerous", &r, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_beats_the_file_name_baseline_on_this_repositorys_history() {
    let here = git_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["rev-parse", "--show-toplevel"],
    );
    let r = measure(Path::new(here.trim()), 80).await;
    beats("abo", &r, 50);
}

/// The files of many landed commits are read by one `git show`, each commit's own: an empty
/// commit has none, a name starting with a newline keeps it after the first, a file named like
/// the header of another commit (whose sha a hostile change can know) stays a file of its own
/// commit, before or after that one, and a commit asked twice keeps its files. A commit the
/// repository lacks leaves the others read, one by one.
#[tokio::test]
async fn landed_commits_files_are_read_at_once_each_its_own() {
    let repo = TestRepo::new();
    repo.write("a", "1\n");
    repo.commit_all("one");
    let one = head(&repo.path);
    git_in(
        &repo.path,
        &["commit", "-q", "--allow-empty", "-m", "empty"],
    );
    let empty = head(&repo.path);
    let forged = format!("\u{1e}{one}\u{1f}");
    repo.write(&forged, "x\n");
    repo.write("\nnewline-first", "x\n");
    repo.write("d/b", "x\n");
    repo.commit_all("three");
    let three = head(&repo.path);
    let git = Git::new(repo.path.clone());
    let missing = CommitSha::new("0123456789012345678901234567890123456789");
    let asked = [&one, &empty, &three];
    let files = outcomes::changed(&git, &asked).await;
    let mut want_three = vec![
        "\nnewline-first".to_owned(),
        "d/b".to_owned(),
        forged.clone(),
    ];
    want_three.sort();
    let mut got_three = files[&three].clone();
    got_three.sort();
    assert_eq!(
        (files[&one].clone(), files[&empty].clone(), got_three),
        (vec!["a".to_owned()], vec![], want_three.clone())
    );
    // The control: split at each record separator, as a reader not holding the commits asked
    // for would, the forged name makes a second record for `one` (with three's later files).
    let out = git_in(
        &repo.path,
        &[
            "show",
            "-z",
            "--name-only",
            "--no-renames",
            "--format=%x1e%H%x1f",
            one.as_str(),
            empty.as_str(),
            three.as_str(),
        ],
    );
    let records = out
        .split('\u{1e}')
        .filter(|r| r.starts_with(one.as_str()))
        .count();
    assert_eq!(records, 2, "the forged header is in git's output");
    // Asked in the other order, the forged header is that of the commit read next: it still
    // names a file of its own commit (the headers carry a nonce drawn for each call).
    let files = outcomes::changed(&git, &[&three, &one, &one]).await;
    let mut got = files[&three].clone();
    got.sort();
    assert_eq!(
        (got, files[&one].clone()),
        (want_three.clone(), vec!["a".to_owned()])
    );
    // One commit missing: the batch fails, each is read alone.
    let files = outcomes::changed(&git, &[&one, &missing, &three]).await;
    assert_eq!(files[&one], ["a"]);
    assert!(files[&missing].is_empty());
    let mut got = files[&three].clone();
    got.sort();
    assert_eq!(got, want_three);
}
