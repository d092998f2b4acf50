//! Secret detection on what a change adds, in the spirit of gitleaks: cloud access keys, private
//! keys, tokens of common services, and high-entropy values assigned to secret-sounding names.
//! A finding names the file, line and rule; its value stays in memory, only for redaction.

use regex::Regex;

#[derive(Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub line: usize,
    pub rule: &'static str,
    /// The secret itself: used to redact, never serialized or printed.
    pub value: String,
}

impl std::fmt::Debug for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Finding({}:{} {})", self.path, self.line, self.rule)
    }
}

impl Finding {
    /// The shape the policy input takes (DESIGN §8): no value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path, "line": self.line, "rule": self.rule })
    }
}

const RULES: &[(&str, &str)] = &[
    ("private-key", r"-----BEGIN[A-Z ]*PRIVATE KEY-----"),
    (
        "aws-access-key",
        r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16})\b",
    ),
    (
        "aws-secret-key",
        r#"(?i)aws_?secret_?access_?key\s*[:=]\s*["']?([A-Za-z0-9/+]{40})\b"#,
    ),
    ("github-token", r"\b(gh[pousr]_[A-Za-z0-9]{36,})\b"),
    ("github-pat", r"\b(github_pat_[A-Za-z0-9_]{40,})\b"),
    ("gitlab-token", r"\b(glpat-[A-Za-z0-9_\-]{20,})\b"),
    ("slack-token", r"\b(xox[abprs]-[A-Za-z0-9\-]{10,})"),
    ("stripe-key", r"\b((?:sk|rk)_live_[A-Za-z0-9]{20,})\b"),
    ("google-api-key", r"\b(AIza[0-9A-Za-z_\-]{35})\b"),
    ("anthropic-key", r"\b(sk-ant-[A-Za-z0-9_\-]{20,})"),
    ("openai-key", r"\b(sk-(?:proj-)?[A-Za-z0-9_\-]{32,})"),
    (
        "jwt",
        r"\b(eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})",
    ),
];

/// `password = "..."`-like assignments with a random-looking value.
const ASSIGNMENT: &str = r#"(?i)\b[a-z0-9_\-]*(?:secret|token|passw(?:or)?d|api_?key|access_?key|private_?key|credential)[a-z0-9_\-]*\b\s*[:=]\s*["']([A-Za-z0-9/+_\-=.]{16,})["']"#;

pub struct Scanner {
    rules: Vec<(&'static str, Regex)>,
    assignment: Option<Regex>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            rules: RULES
                .iter()
                .filter_map(|(n, r)| Regex::new(r).ok().map(|re| (*n, re)))
                .collect(),
            assignment: Regex::new(ASSIGNMENT).ok(),
        }
    }
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&c| c as f64 / n)
        .map(|p| -p * p.log2())
        .sum()
}

impl Scanner {
    /// Findings in the lines a change adds to `path`, as (line number, text).
    pub fn scan(&self, path: &str, added: &[(usize, String)]) -> Vec<Finding> {
        let mut out = Vec::new();
        for (line, text) in added {
            let mut found = false;
            for (rule, re) in &self.rules {
                for c in re.captures_iter(text) {
                    let value = c
                        .get(1)
                        .or_else(|| c.get(0))
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default();
                    out.push(Finding {
                        path: path.to_owned(),
                        line: *line,
                        rule,
                        value,
                    });
                    found = true;
                }
            }
            if found {
                continue;
            }
            if let Some(re) = &self.assignment {
                for c in re.captures_iter(text) {
                    let Some(v) = c.get(1) else { continue };
                    let v = v.as_str();
                    if entropy(v) >= 3.5
                        && v.chars().any(|c| c.is_ascii_digit())
                        && v.chars().any(|c| c.is_ascii_alphabetic())
                    {
                        out.push(Finding {
                            path: path.to_owned(),
                            line: *line,
                            rule: "generic-secret",
                            value: v.to_owned(),
                        });
                    }
                }
            }
        }
        out
    }
}
