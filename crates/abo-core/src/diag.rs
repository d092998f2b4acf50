//! Input diagnostics: errors in abo.yml and backlogs, located by file, line and column.

use std::fmt;

/// A problem in a user's file, reported as `FILE:LINE:COL: message` (and a hint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl InputError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            col: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, pos: Option<(usize, usize)>) -> Self {
        if let Some((line, col)) = pos {
            self.line = Some(line);
            self.col = Some(col);
        }
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputError {}

/// All the problems found in one input; nothing starts while there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputErrors {}

impl From<InputError> for InputErrors {
    fn from(e: InputError) -> Self {
        Self(vec![e])
    }
}

/// Edit distance, for "did you mean" hints.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate nearest to `word`, if it is near enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 2).max(2) && *d < word.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

impl PathSeg {
    pub fn key(k: &str) -> Self {
        Self::Key(k.to_owned())
    }
}

/// Renders a path as `tasks[2].deps`.
pub fn path_to_string(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Finds where a path (`tasks[2].deps`) is written in block-style YAML, as (line, column), 1-based.
/// Returns the deepest part of the path it could find (a flow mapping `{ a: 1 }` stops the walk).
pub fn locate(text: &str, path: &[PathSeg]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut lo = 0;
    let mut hi = lines.len();
    let mut found = None;
    // Column of the parent's key: children are indented further, or are `- ` items at the same column.
    let mut parent_col: Option<usize> = None;
    for seg in path {
        match seg {
            PathSeg::Key(key) => {
                let child_col = first_key_col(&lines[lo..hi])?;
                let hit = (lo..hi).find(|&i| {
                    key_at(lines[i]).is_some_and(|(col, k)| col == child_col && k == key.as_str())
                });
                let Some(i) = hit else { return found };
                let col = key_at(lines[i]).map_or(0, |(c, _)| c);
                found = Some((i + 1, col + 1));
                let end = ((i + 1)..hi)
                    .find(|&j| {
                        let l = lines[j];
                        if is_blank(l) {
                            return false;
                        }
                        let ind = indent(l);
                        ind < col || (ind == col && !l.trim_start().starts_with("- "))
                    })
                    .unwrap_or(hi);
                lo = i;
                hi = end;
                parent_col = Some(col);
                // The value may start on the key's own line (`- id: a` items, or `key: [..]`).
                if (lo + 1..hi).all(|j| is_blank(lines[j])) {
                    return found;
                }
                lo = i + 1;
            }
            PathSeg::Index(n) => {
                let item_col = (lo..hi)
                    .filter(|&i| !is_blank(lines[i]))
                    .map(|i| lines[i])
                    .find(|l| l.trim_start().starts_with("- ") || l.trim() == "-")
                    .map(indent)?;
                if parent_col.is_some_and(|p| item_col < p) {
                    return found;
                }
                let starts: Vec<usize> = (lo..hi)
                    .filter(|&i| {
                        indent(lines[i]) == item_col
                            && (lines[i].trim_start().starts_with("- ") || lines[i].trim() == "-")
                    })
                    .collect();
                let Some(&start) = starts.get(*n) else {
                    return found;
                };
                let end = starts.get(n + 1).copied().unwrap_or(hi);
                found = Some((start + 1, item_col + 1));
                lo = start;
                hi = end;
                parent_col = Some(item_col);
            }
        }
    }
    found
}

fn is_blank(l: &str) -> bool {
    let t = l.trim();
    t.is_empty() || t.starts_with('#')
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// The column and name of a `key:` on this line, after any `- ` item markers.
fn key_at(l: &str) -> Option<(usize, &str)> {
    if is_blank(l) {
        return None;
    }
    let mut col = indent(l);
    let mut rest = &l[col..];
    while let Some(r) = rest.strip_prefix("- ") {
        let skipped = r.len() - r.trim_start_matches(' ').len();
        col += 2 + skipped;
        rest = &r[skipped..];
    }
    let colon = rest.find(':')?;
    let key = rest[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
    let after = &rest[colon + 1..];
    if key.is_empty() || key.contains(' ') || !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some((col, key))
}

fn first_key_col(lines: &[&str]) -> Option<usize> {
    lines.iter().find_map(|l| key_at(l)).map(|(c, _)| c)
}

/// Turns a serde_yaml error into an located input error, with the nearest known key for an unknown one.
pub fn from_yaml_error(file: &str, text: &str, err: &serde_yaml::Error) -> InputError {
    let pos = err.location().map(|l| (l.line(), l.column()));
    let raw = err.to_string();
    // serde_yaml writes " at line N column M" into its messages; the location is reported separately.
    let msg = strip_positions(&raw);
    let (path, body) = split_path(&msg);
    // serde_yaml names the mapping, not the key, for errors raised by a value's own parser
    // (`timeouts: invalid duration`): complete the path with the key written on that line.
    let mut path = path.to_owned();
    if let Some((line, _)) = pos
        && !body.starts_with("unknown field")
        && !body.starts_with("missing field")
        && let Some((_, key)) = text.lines().nth(line.saturating_sub(1)).and_then(key_at)
        && !path.is_empty()
        && !path.split(['.', '[']).any(|seg| seg == key)
    {
        path = format!("{path}.{key}");
    }
    let path = path.as_str();
    let e = InputError::new(file, String::new()).at(pos);
    if let Some(rest) = body.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let known = backticked(rest.split_once("expected").map_or("", |(_, r)| r));
        let full = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        let e = InputError {
            message: format!("unknown key `{full}`"),
            ..e
        };
        return match nearest(name, known.iter().map(String::as_str)) {
            Some(n) => e.hint(format!("did you mean `{n}`?")),
            None if !known.is_empty() => e.hint(format!("known keys: {}", known.join(", "))),
            None => e,
        };
    }
    if let Some(rest) = body.strip_prefix("unknown variant `") {
        let name = rest.split('`').next().unwrap_or_default();
        let known = backticked(rest.split_once("expected").map_or("", |(_, r)| r));
        let at = if path.is_empty() {
            String::new()
        } else {
            format!("`{path}`: ")
        };
        let e = InputError {
            message: format!("{at}unknown value `{name}`"),
            ..e
        };
        return match nearest(name, known.iter().map(String::as_str)) {
            Some(n) => e.hint(format!("did you mean `{n}`? one of: {}", known.join(", "))),
            None => e.hint(format!("one of: {}", known.join(", "))),
        };
    }
    let message = if path.is_empty() {
        body.to_owned()
    } else {
        format!("`{path}`: {body}")
    };
    InputError { message, ..e }
}

fn strip_positions(raw: &str) -> String {
    let mut out = raw.to_owned();
    while let Some(i) = out.find(" at line ") {
        let rest = &out[i + " at line ".len()..];
        let words: Vec<&str> = rest.splitn(4, ' ').collect();
        let is_pos = words.len() >= 3
            && words[0].chars().all(|c| c.is_ascii_digit())
            && words[1] == "column"
            && words[2]
                .trim_end_matches(',')
                .chars()
                .all(|c| c.is_ascii_digit());
        if !is_pos {
            break;
        }
        let len = " at line ".len()
            + words[0].len()
            + 1
            + words[1].len()
            + 1
            + words[2].trim_end_matches(',').len();
        out.replace_range(i..i + len, "");
    }
    out
}

/// serde_yaml prefixes messages with the path of the value (`tasks[1].deps: invalid type...`).
fn split_path(msg: &str) -> (&str, &str) {
    if let Some((p, rest)) = msg.split_once(": ") {
        let is_path = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c))
            && !p.contains("unknown");
        if is_path {
            return (p, rest);
        }
    }
    ("", msg)
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
timeouts: { attempt: 30m }
backends:
  default: fmt
  fmt:
    kind: command
    run: cargo fmt
tasks:
  - id: a
    title: A
    deps: []
  - id: b
    deps:
      - a
  -
    id: c
";

    fn at(path: &[PathSeg]) -> Option<(usize, usize)> {
        locate(DOC, path)
    }

    #[test]
    fn locates_paths() {
        use PathSeg::Index as I;
        let k = PathSeg::key;
        assert_eq!(at(&[k("version")]), Some((1, 1)));
        assert_eq!(at(&[k("timeouts"), k("attempt")]), Some((2, 1)));
        assert_eq!(at(&[k("backends"), k("fmt"), k("run")]), Some((7, 5)));
        assert_eq!(at(&[k("tasks"), I(0)]), Some((9, 3)));
        assert_eq!(at(&[k("tasks"), I(0), k("deps")]), Some((11, 5)));
        assert_eq!(at(&[k("tasks"), I(1), k("id")]), Some((12, 5)));
        assert_eq!(at(&[k("tasks"), I(1), k("deps")]), Some((13, 5)));
        assert_eq!(at(&[k("tasks"), I(1), k("deps"), I(0)]), Some((14, 7)));
        assert_eq!(at(&[k("tasks"), I(2), k("id")]), Some((16, 5)));
        assert_eq!(at(&[k("nope")]), None);
    }

    #[test]
    fn nearest_keys() {
        assert_eq!(nearest("titel", ["id", "title", "type"]), Some("title"));
        assert_eq!(nearest("zzzzzz", ["id", "title"]), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
