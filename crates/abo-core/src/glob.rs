//! Path globs as written in a task's `paths:` (relative to the repository root): `*` and `?` stay
//! within one path segment, `**` spans any number of them.

/// Whether `path` matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches("./");
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    segments(&p, &s)
}

fn segments(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => (0..=s.len()).any(|i| segments(rest, &s[i..])),
        Some((first, rest)) => s.split_first().is_some_and(|(seg, srest)| {
            segment(first.as_bytes(), seg.as_bytes()) && segments(rest, srest)
        }),
    }
}

fn segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && segment(rest, &s[1..]),
    }
}

/// Whether `path` matches any of `patterns`.
pub fn any(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| matches(p, path))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        let check = |p: &str, s: &str, want: bool| assert_eq!(matches(p, s), want, "{p} ~ {s}");
        check("src/**", "src/a.rs", true);
        check("src/**", "src/a/b/c.rs", true);
        check("src/**", "srcx/a.rs", false);
        check("**", "anything/at/all", true);
        check("**/*.rs", "a.rs", true);
        check("**/*.rs", "x/y/a.rs", true);
        check("*.md", "README.md", true);
        check("*.md", "docs/a.md", false);
        check("src/*.rs", "src/a.rs", true);
        check("src/*.rs", "src/x/a.rs", false);
        check("tests/test_?.py", "tests/test_a.py", true);
        check("README.md", "README.md", true);
        check(".env*", ".env.local", true);
        check("./src/**", "src/main.rs", true);
    }
}
