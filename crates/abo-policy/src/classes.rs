//! What each changed file is, as the default bundle's functions define it: `sensitive` (auth and
//! security code, for the `critical` risk), `low` (docs or tests that no tool runs as code and
//! that are not a manifest, for the `low` risk) and `manifest` (a dependency manifest or
//! lockfile). abo computes these facts once per file in Rust and the bundle reads them: calling
//! the bundle's functions (`sensitive`, `low_file`, `manifest`) on every file was most of an
//! evaluation of a large change. The functions stay in the bundle, for inputs written by hand and
//! for user rules; `the_classes_computed_here_are_the_bundles_functions` holds the two to each
//! other on paths chosen at each definition's edges.

/// A file's classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classes {
    pub sensitive: bool,
    pub low: bool,
    pub manifest: bool,
}

/// The bundle's `sensitive_words`.
const SENSITIVE_WORDS: &[&str] = &[
    "auth",
    "authn",
    "authz",
    "security",
    "crypto",
    "secret",
    "secrets",
    "permission",
    "permissions",
    "login",
    "session",
];

/// The bundle's `manifests`.
const MANIFESTS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "go.mod",
    "go.sum",
    "requirements.txt",
    "pyproject.toml",
    "poetry.lock",
    "uv.lock",
    "Pipfile",
    "Pipfile.lock",
    "Gemfile",
    "Gemfile.lock",
    "composer.json",
    "composer.lock",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
];

const DOC_DIRS: &[&str] = &["doc", "docs"];
const DOC_EXTS: &[&str] = &["md", "rst", "txt", "adoc"];
const DOC_NAMES: &[&str] = &["README", "CHANGELOG", "LICENSE", "CONTRIBUTING"];
const TESTING_DIRS: &[&str] = &["test", "tests", "spec", "__tests__"];
const RUNS_AS_CODE: &[&str] = &["conftest.py", "conf.py"];

/// The classes of the file at `path` (a repository-relative path, `/`-separated).
pub fn of(path: &str) -> Classes {
    let manifest = manifest(path);
    let low = (doc_file(path) || test_file(path)) && !runs_as_code(path) && !manifest;
    Classes {
        sensitive: sensitive(path),
        low,
        manifest,
    }
}

/// The bundle's `basename`: what follows the last `/`.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The bundle's `split(p, "/")` without its last part: the directories.
fn dirs(path: &str) -> impl Iterator<Item = &str> {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    parts.into_iter()
}

/// The bundle's `extension`: the lower-cased part after the last `.` of the basename, when it has
/// one.
fn extension(path: &str) -> Option<String> {
    let (_, ext) = basename(path).rsplit_once('.')?;
    Some(ext.to_lowercase())
}

fn sensitive(path: &str) -> bool {
    let lower = path.to_lowercase();
    lower.split('/').any(|seg| {
        let before_dot = seg.split('.').next().unwrap_or(seg);
        let words: Vec<&str> = seg.split('_').collect();
        SENSITIVE_WORDS.contains(&before_dot)
            || (words.len() > 1 && SENSITIVE_WORDS.contains(&words[0]))
    })
}

fn manifest(path: &str) -> bool {
    let base = basename(path);
    let ext = extension(path);
    let ext = ext.as_deref();
    if MANIFESTS.contains(&base) || ext == Some("lock") {
        return true;
    }
    let lower = base.to_lowercase();
    (["requirements", "constraints"]
        .iter()
        .any(|p| lower.starts_with(p))
        && matches!(ext, Some("txt" | "in")))
        || (dirs(path).any(|d| d == "requirements") && ext == Some("txt"))
}

fn doc_file(path: &str) -> bool {
    extension(path).is_some_and(|e| DOC_EXTS.contains(&e.as_str()))
        || dirs(path).any(|d| DOC_DIRS.contains(&d))
        || DOC_NAMES.iter().any(|n| basename(path).starts_with(n))
}

fn test_file(path: &str) -> bool {
    let base = basename(path);
    dirs(path).any(|d| TESTING_DIRS.contains(&d))
        || base.starts_with("test_")
        || [".test.", "_test.", ".spec."]
            .iter()
            .any(|m| base.contains(m))
}

fn runs_as_code(path: &str) -> bool {
    RUNS_AS_CODE.contains(&basename(path))
}
