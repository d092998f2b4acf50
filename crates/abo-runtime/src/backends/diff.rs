//! The unified diff in a model's reply: found, checked for form, then applied by git.

/// Why a reply yields no usable diff.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("no diff in the reply")]
    NoDiff,
    #[error("the diff is malformed: {0}")]
    Malformed(String),
}

/// The diff in a reply: the ```diff (or ```patch) fenced blocks, else the text from the first
/// `diff --git` or `--- ` line. Checked for well-formed file headers and hunks.
pub fn extract(reply: &str) -> Result<String, DiffError> {
    let mut blocks = Vec::new();
    let mut inside: Option<Vec<&str>> = None;
    for line in reply.lines() {
        let t = line.trim_start();
        match &mut inside {
            None if t.starts_with("```diff")
                || t.starts_with("```patch")
                || t.starts_with("```udiff") =>
            {
                inside = Some(Vec::new())
            }
            Some(b) if t.starts_with("```") => {
                blocks.push(b.join("\n"));
                inside = None;
            }
            Some(b) => b.push(line),
            None => {}
        }
    }
    if let Some(b) = inside {
        blocks.push(b.join("\n"));
    }
    let diff = if blocks.is_empty() {
        let start = reply
            .lines()
            .position(|l| l.starts_with("diff --git ") || l.starts_with("--- "))
            .ok_or(DiffError::NoDiff)?;
        reply.lines().skip(start).collect::<Vec<_>>().join("\n")
    } else {
        blocks.join("\n")
    };
    validate(&diff)?;
    Ok(format!("{}\n", diff.trim_end()))
}

fn validate(diff: &str) -> Result<(), DiffError> {
    let lines: Vec<&str> = diff.lines().collect();
    let mut files = 0;
    let mut hunks = 0;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("--- ") {
            if !lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")) {
                return Err(DiffError::Malformed(format!(
                    "line {}: `---` without a `+++` line after it",
                    i + 1
                )));
            }
            files += 1;
            i += 2;
            continue;
        }
        if l.starts_with("@@") {
            if files == 0 {
                return Err(DiffError::Malformed(format!(
                    "line {}: a hunk before any file header",
                    i + 1
                )));
            }
            if !hunk_header_ok(l) {
                return Err(DiffError::Malformed(format!(
                    "line {}: bad hunk header `{l}`",
                    i + 1
                )));
            }
            hunks += 1;
        }
        i += 1;
    }
    if files == 0 {
        return Err(DiffError::Malformed(
            "no `--- a/PATH` / `+++ b/PATH` file headers".into(),
        ));
    }
    // A pure rename or mode change has no hunks; git headers say so.
    if hunks == 0
        && !diff.contains("rename from ")
        && !diff.contains("deleted file mode")
        && !diff.contains("new file mode")
    {
        return Err(DiffError::Malformed("no `@@` hunks".into()));
    }
    Ok(())
}

/// `@@ -a[,b] +c[,d] @@ ...`
fn hunk_header_ok(l: &str) -> bool {
    let mut parts = l.split_whitespace();
    let range = |p: Option<&str>, sign: char| {
        p.and_then(|s| s.strip_prefix(sign)).is_some_and(|r| {
            r.split(',')
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
    };
    parts.next() == Some("@@")
        && range(parts.next(), '-')
        && range(parts.next(), '+')
        && parts.next().is_some_and(|s| s.starts_with("@@"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str =
        "--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1,2 +1,2 @@\n fn a() {\n-    1\n+    2\n";

    #[test]
    fn finds_fenced_and_bare_diffs() {
        let fenced = format!("Here is the change:\n\n```diff\n{DIFF}```\n\nThat fixes it.");
        assert_eq!(extract(&fenced), Ok(DIFF.to_owned()));
        let bare = format!("Sure.\ndiff --git a/src/a.rs b/src/a.rs\n{DIFF}");
        assert_eq!(
            extract(&bare),
            Ok(format!("diff --git a/src/a.rs b/src/a.rs\n{DIFF}"))
        );
        let unterminated = format!("```diff\n{DIFF}");
        assert_eq!(extract(&unterminated), Ok(DIFF.to_owned()));
    }

    #[test]
    fn rejects_what_is_not_a_diff() {
        assert_eq!(extract("I cannot do that."), Err(DiffError::NoDiff));
        assert_eq!(extract("```python\nprint(1)\n```"), Err(DiffError::NoDiff));
        assert_eq!(
            extract("```diff\n--- a/x\n@@ -1 +1 @@\n-a\n+b\n```"),
            Err(DiffError::Malformed(
                "line 1: `---` without a `+++` line after it".into()
            ))
        );
        assert_eq!(
            extract("```diff\n--- a/x\n+++ b/x\n@@ one two @@\n-a\n```"),
            Err(DiffError::Malformed(
                "line 3: bad hunk header `@@ one two @@`".into()
            ))
        );
        assert_eq!(
            extract("```diff\n--- a/x\n+++ b/x\n```"),
            Err(DiffError::Malformed("no `@@` hunks".into()))
        );
    }
}
