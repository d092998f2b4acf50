//! Redaction: secret values never leave abo. The values of the variables named in config (API keys)
//! and credentials recognised by pattern become `[REDACTED:<rule>]` in prompts, transcripts and logs.

use regex::Regex;

/// Credentials recognised by their shape.
const PATTERNS: &[(&str, &str)] = &[
    (
        "private-key",
        r"-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?-----END[A-Z ]*PRIVATE KEY-----",
    ),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github-token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("github-pat", r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    ("openai-key", r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}"),
    ("slack-token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
];

#[derive(Clone, Debug)]
pub struct Redactor {
    /// (value, rule) of the secret variables set in the environment.
    values: Vec<(String, String)>,
    patterns: Vec<(&'static str, Regex)>,
}

impl Redactor {
    /// A redactor for the values of `env_names` as they are set in `env` (name, value pairs).
    pub fn new<'a>(
        env_names: &[String],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let mut values: Vec<(String, String)> = env_names
            .iter()
            .filter_map(|n| {
                env.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| ((*v).to_owned(), format!("env:{n}")))
            })
            // Short values would redact ordinary words.
            .filter(|(v, _)| v.len() >= 8)
            .collect();
        values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let patterns = PATTERNS
            .iter()
            .filter_map(|(rule, re)| Regex::new(re).ok().map(|r| (*rule, r)))
            .collect();
        Self { values, patterns }
    }

    /// A redactor for variables of this process's environment.
    pub fn from_process_env(env_names: &[String]) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::new(env_names, env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Also redacts these (value, rule) pairs: secrets found in a change.
    pub fn with(mut self, extra: Vec<(String, String)>) -> Self {
        self.values
            .extend(extra.into_iter().filter(|(v, _)| v.len() >= 8));
        self.values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        self
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, rule) in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("[REDACTED:{rule}]"));
            }
        }
        for (rule, re) in &self.patterns {
            if re.is_match(&out) {
                out = re
                    .replace_all(&out, format!("[REDACTED:{rule}]").as_str())
                    .into_owned();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_named_values_and_patterns() {
        let r = Redactor::new(
            &["MY_KEY".to_owned(), "SHORT".to_owned()],
            [
                ("MY_KEY", "s3cr3t-value-123"),
                ("SHORT", "abc"),
                ("OTHER", "zzzzzzzzzz"),
            ],
        );
        let text = "key=s3cr3t-value-123 abc zzzzzzzzzz AKIAABCDEFGHIJKLMNOP sk-ant-api03-abcdefghijklmnopqrstuv ghp_abcdefghijklmnopqrstuvwxyz0123456789\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            r.redact(text),
            "key=[REDACTED:env:MY_KEY] abc zzzzzzzzzz [REDACTED:aws-access-key] [REDACTED:anthropic-key] [REDACTED:github-token]\n[REDACTED:private-key]"
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
