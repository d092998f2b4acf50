//! The repository explains itself: no tracked file cites the product's design document, which is
//! not in the repository (its sections were cited as `DESIGN §N`); the repository's own docs say
//! what a user or contributor needs.

use std::path::Path;
use std::process::Command;

/// Tracked text files that mention `DESIGN §`, with the line.
fn citations(root: &Path) -> Vec<String> {
    // `git grep` exits 1 when nothing matches, which the fixtures' git helper takes as a failure.
    #[allow(clippy::disallowed_methods, reason = "test fixtures run git directly")]
    let out = Command::new("git")
        .args(["grep", "-n", "-I", "-e", "DESIGN §", "--", "."])
        .current_dir(root)
        .output()
        .expect("git grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // This file names the pattern it looks for.
        .filter(|l| !l.starts_with("crates/abo/tests/it/self_contained.rs:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_file_cites_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert_eq!(citations(&root), Vec::<String>::new());
    // The control: a tracked file with a citation is found.
    let repo = abo_test_support::TestRepo::new();
    repo.write("README.md", "Budgets (DESIGN §9): caps.\n");
    repo.commit_all("cite");
    assert_eq!(
        citations(&repo.path),
        ["README.md:1:Budgets (DESIGN §9): caps."]
    );
}
