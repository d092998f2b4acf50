//! The repository explains itself: no tracked file cites the product's design document by section,
//! since that document is not in the repository; the repository's own docs (docs/) say what a user
//! or contributor needs.

use std::path::Path;
use std::process::Command;

/// A citation of the design document's sections, spelt in two parts so that this file is not one.
const CITATION: &str = concat!("DESIGN", " §");

/// Tracked text files that cite the design document, with the line.
fn citations(root: &Path) -> Vec<String> {
    // `git grep` exits 1 when nothing matches, which the fixtures' git helper takes as a failure.
    #[allow(clippy::disallowed_methods, reason = "test fixtures run git directly")]
    let out = Command::new("git")
        .args(["grep", "-n", "-I", "-e", CITATION, "--", "."])
        .current_dir(root)
        .output()
        .expect("git grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_file_cites_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert_eq!(citations(&root), Vec::<String>::new());
    // The control: a tracked file with a citation is found.
    let repo = abo_test_support::TestRepo::new();
    repo.write("README.md", &format!("Budgets ({CITATION}9): caps.\n"));
    repo.commit_all("cite");
    assert_eq!(
        citations(&repo.path),
        [format!("README.md:1:Budgets ({CITATION}9): caps.")]
    );
}
