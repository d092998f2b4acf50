//! What a change does to its tests, read from the lines it adds and removes: tests removed and
//! added (by name), skip markers added (`@pytest.mark.skip`, `unittest.skip`, `SkipTest`,
//! `#[ignore]`, `t.Skip`, `xit`/`it.skip`, ...), assertions removed and added, assertions stubbed
//! or monkeypatched and assertions that assert nothing (`assert True`); which changed files are
//! tests, test configuration (`conftest.py`, `pytest.ini`, `[tool.pytest]`, jest and vitest
//! configs, nextest's) or source.
//!
//! This is a reading of text, not a parser of each language: it errs towards reporting, and the
//! policy decides what a report gets.

use std::collections::BTreeSet;

use serde::Serialize;

/// What kind of file a changed path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Test,
    TestConfig,
    Source,
    Other,
}

const TEST_DIRS: &[&str] = &["test", "tests", "spec", "specs", "__tests__", "testing"];

const SOURCE_EXTS: &[&str] = &[
    "py", "rs", "js", "jsx", "ts", "tsx", "mjs", "cjs", "go", "java", "kt", "rb", "php", "c", "h",
    "cc", "cpp", "hpp", "cs", "swift", "scala", "ex", "exs",
];

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A test file by its name or directory.
pub fn is_test_file(path: &str) -> bool {
    let base = basename(path);
    let dirs: Vec<&str> = path.split('/').collect();
    let in_test_dir = dirs[..dirs.len().saturating_sub(1)]
        .iter()
        .any(|d| TEST_DIRS.contains(d));
    let ext_ok = base
        .rsplit_once('.')
        .is_some_and(|(_, e)| SOURCE_EXTS.contains(&e));
    ext_ok
        && (in_test_dir
            || base.starts_with("test_")
            || base.contains("_test.")
            || base.contains(".test.")
            || base.contains(".spec.")
            || base.ends_with("Test.java")
            || base.ends_with("Tests.java")
            || base == "tests.rs")
}

/// A file that configures how tests run (which run, which are skipped, how they are collected).
/// `pyproject.toml`, `setup.cfg`, `tox.ini` and `package.json` count when the changed lines touch
/// their test sections (`lines`: the changed lines).
pub fn is_test_config(path: &str, lines: &[&str]) -> bool {
    let base = basename(path);
    let named = matches!(
        base,
        "conftest.py"
            | "pytest.ini"
            | ".mocharc.js"
            | ".mocharc.json"
            | ".mocharc.yml"
            | "karma.conf.js"
            | "phpunit.xml"
            | "phpunit.xml.dist"
            | "nextest.toml"
            | ".coveragerc"
            | "jest.setup.js"
            | "jest.setup.ts"
    ) || [
        "jest.config.",
        "vitest.config.",
        "vitest.workspace.",
        "playwright.config.",
        "cypress.config.",
    ]
    .iter()
    .any(|p| base.starts_with(p));
    let sections = matches!(
        base,
        "pyproject.toml" | "setup.cfg" | "tox.ini" | "package.json"
    ) && lines.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        [
            "pytest",
            "addopts",
            "testpaths",
            "jest",
            "vitest",
            "\"test\"",
            "mocha",
            "coverage",
        ]
        .iter()
        .any(|w| l.contains(w))
    });
    named || sections
}

pub fn kind(path: &str, lines: &[&str]) -> Kind {
    if is_test_config(path, lines) {
        Kind::TestConfig
    } else if is_test_file(path) {
        Kind::Test
    } else if basename(path)
        .rsplit_once('.')
        .is_some_and(|(_, e)| SOURCE_EXTS.contains(&e))
    {
        Kind::Source
    } else {
        Kind::Other
    }
}

/// What one changed file does to tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileEdit {
    pub path: String,
    pub tests_removed: BTreeSet<String>,
    pub tests_added: BTreeSet<String>,
    /// Skip markers added, as written (trimmed, at most 120 characters).
    pub skips_added: Vec<String>,
    pub assertions_removed: u64,
    pub assertions_added: u64,
    /// Added lines that replace, stub or monkeypatch an assertion, as written.
    pub stubbed: Vec<String>,
    /// Added assertions of a constant (`assert True`, `expect(true).toBe(true)`).
    pub vacuous: Vec<String>,
}

fn shown(l: &str) -> String {
    l.trim().chars().take(120).collect()
}

/// A test's name declared on a line: `def test_x`, `func TestX(`, `it("...")` / `test("...")`, or a
/// Rust `fn` (named when the file is a test file; in a Rust file, only after `#[test]`, which
/// [`analyze`] tracks).
fn declared_test(l: &str) -> Option<String> {
    let t = l.trim_start();
    if let Some(rest) = t
        .strip_prefix("def ")
        .or_else(|| t.strip_prefix("async def "))
        && rest.starts_with("test")
    {
        return Some(ident(rest));
    }
    if let Some(rest) = t.strip_prefix("func Test") {
        return Some(format!("Test{}", ident(rest)));
    }
    // A test skipped in place (`xit(`, `it.skip(`) is still declared: the skip is reported as one.
    for call in [
        "it(",
        "test(",
        "it.only(",
        "test.only(",
        "specify(",
        "xit(",
        "xtest(",
        "it.skip(",
        "test.skip(",
        "it.todo(",
        "test.todo(",
    ] {
        if let Some(rest) = t.strip_prefix(call) {
            return quoted(rest);
        }
    }
    None
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn quoted(s: &str) -> Option<String> {
    let s = s.trim_start();
    let q = s.chars().next().filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let body = &s[1..];
    body.find(q).map(|end| body[..end].to_owned())
}

/// A skip marker on a line, as the frameworks write them.
fn skip_marker(l: &str) -> bool {
    let t = l.trim_start();
    const MARKERS: &[&str] = &[
        "@pytest.mark.skip",
        "@pytest.mark.xfail",
        "@unittest.skip",
        "@skip(",
        "@skip\n",
        "@skipIf",
        "@skipUnless",
        "@unittest.expectedFailure",
        "raise SkipTest",
        "raise unittest.SkipTest",
        "self.skipTest(",
        "pytest.skip(",
        "#[ignore",
        "t.Skip(",
        "t.Skipf(",
        "t.SkipNow(",
        "xit(",
        "xdescribe(",
        "xtest(",
        "it.skip(",
        "test.skip(",
        "describe.skip(",
        "it.todo(",
        "test.todo(",
        "@Disabled",
        "@Ignore",
        "markTestSkipped(",
    ];
    t == "@skip"
        || MARKERS.iter().any(|m| t.starts_with(m))
        || t.contains("{ skip: true")
        || t.contains("{skip: true")
        || t.contains(", { skip:")
}

/// An assertion on a line (how many: `assert a; assert b` on one line counts twice).
fn assertions(l: &str) -> u64 {
    let t = l.trim_start();
    if t.starts_with('#') || t.starts_with("//") {
        return 0;
    }
    const CALLS: &[&str] = &[
        "assert!(",
        "assert_eq!(",
        "assert_ne!(",
        "assert_matches!(",
        "debug_assert",
        "expect(",
        "assert.",
        "assert(",
        "self.assert",
        "pytest.raises(",
        "t.Error",
        "t.Fatal",
        "require.",
        "assertThat(",
        "assertEquals(",
        "assertTrue(",
        "assertFalse(",
        "should.",
    ];
    let mut n = CALLS
        .iter()
        .map(|c| t.matches(c).count() as u64)
        .sum::<u64>();
    // Python's statement.
    if t.starts_with("assert ") {
        n += 1;
    }
    n
}

/// An added line that disarms assertions: assigns to one, patches one, or defines a macro or
/// function of an assertion's name.
fn stubs_assertion(l: &str) -> bool {
    let t = l.trim();
    let lower = t.to_ascii_lowercase();
    if !lower.contains("assert") && !lower.contains("expect") {
        return false;
    }
    let patched = [
        "setattr(",
        "patch(",
        "patch.object(",
        "mock(",
        "spyon(",
        "stub(",
    ]
    .iter()
    .any(|p| lower.contains(p));
    let defined = lower.starts_with("macro_rules! assert")
        || lower.starts_with("#define assert")
        || lower.starts_with("def assert")
        || lower.starts_with("function assert")
        || lower.starts_with("function expect")
        || lower.starts_with("fn assert");
    // `assert = ...`, `self.assertEqual = ...`, `unittest.TestCase.assertEqual = ...`, `global.expect =`.
    let assigned = t.split_once('=').is_some_and(|(lhs, rhs)| {
        let lhs = lhs.trim_end();
        !rhs.starts_with('=')
            && !lhs.ends_with(['!', '<', '>', '='])
            && lhs.rsplit(['.', ' ']).next().is_some_and(|name| {
                let rest = name.strip_prefix("assert");
                name == "expect"
                    || rest.is_some_and(|r| {
                        r.is_empty() || r.starts_with('_') || r.starts_with(char::is_uppercase)
                    })
            })
    });
    patched || defined || assigned
}

/// An assertion of a constant.
fn vacuous(l: &str) -> bool {
    let t: String = l.split_whitespace().collect::<Vec<_>>().join(" ");
    const FORMS: &[&str] = &[
        "assert True",
        "assert 1",
        "assert not False",
        "assert 1 == 1",
        "assert True == True",
        "self.assertTrue(True)",
        "self.assertEqual(1, 1)",
        "self.assertEqual(True, True)",
        "assert!(true)",
        "assert_eq!(1, 1)",
        "assert_eq!(true, true)",
        "expect(true).toBe(true)",
        "expect(1).toBe(1)",
        "expect(true).toBeTruthy()",
        "assert.ok(true)",
        "assert(true)",
        "assert.strictEqual(1, 1)",
        "assert.equal(1, 1)",
    ];
    FORMS.iter().any(|f| {
        t.starts_with(f)
            && t[f.len()..]
                .trim_start()
                .chars()
                .next()
                .is_none_or(|c| matches!(c, ';' | ')' | '#' | '/'))
    })
}

/// Reads one changed file's added and removed lines.
pub fn analyze(path: &str, added: &[&str], removed: &[&str]) -> FileEdit {
    let mut e = FileEdit {
        path: path.to_owned(),
        ..Default::default()
    };
    let rust = path.ends_with(".rs");
    let names = |lines: &[&str]| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut after_test_attr = false;
        for l in lines {
            let t = l.trim_start();
            if rust {
                if t.starts_with("#[test]")
                    || t.starts_with("#[tokio::test")
                    || t.starts_with("#[rstest")
                {
                    after_test_attr = true;
                    continue;
                }
                if after_test_attr {
                    if let Some(rest) = t
                        .strip_prefix("fn ")
                        .or_else(|| t.strip_prefix("async fn "))
                        .or_else(|| t.strip_prefix("pub fn "))
                    {
                        out.insert(ident(rest));
                        after_test_attr = false;
                    } else if !t.starts_with("#[") {
                        after_test_attr = false;
                    }
                }
            } else if let Some(n) = declared_test(l) {
                out.insert(n);
            }
        }
        out
    };
    let (gone, new) = (names(removed), names(added));
    e.tests_removed = gone.difference(&new).cloned().collect();
    e.tests_added = new.difference(&gone).cloned().collect();
    let removed_skips: Vec<String> = removed
        .iter()
        .filter(|l| skip_marker(l))
        .map(|l| shown(l))
        .collect();
    let mut removed_skips = removed_skips;
    for l in added.iter().filter(|l| skip_marker(l)) {
        // A marker moved (re-indented, reordered) is not a new one.
        let s = shown(l);
        if let Some(i) = removed_skips.iter().position(|r| *r == s) {
            removed_skips.remove(i);
        } else {
            e.skips_added.push(s);
        }
    }
    e.assertions_removed = removed.iter().map(|l| assertions(l)).sum();
    e.assertions_added = added
        .iter()
        .filter(|l| !vacuous(l))
        .map(|l| assertions(l))
        .sum();
    e.stubbed = added
        .iter()
        .filter(|l| stubs_assertion(l))
        .map(|l| shown(l))
        .collect();
    e.vacuous = added
        .iter()
        .filter(|l| vacuous(l))
        .map(|l| shown(l))
        .collect();
    e
}

impl FileEdit {
    /// The file lost assertions, or disarmed or faked some.
    pub fn weakened(&self) -> bool {
        self.assertions_removed > self.assertions_added
            || !self.stubbed.is_empty()
            || !self.vacuous.is_empty()
    }
}
