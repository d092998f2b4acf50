//! Redaction: secret values never leave abo. The values of the variables named in config (API keys)
//! and credentials recognised by shape become `[REDACTED:<rule>]` in prompts, transcripts and logs.
//! The shapes are the policy's own ([`Scanner`]): whatever the policy would deny in a change is
//! hidden in what abo stores or sends.

use abo_policy::secrets::Scanner;

#[derive(Clone, Debug)]
pub struct Redactor {
    /// (value, rule) of the secret variables set in the environment.
    values: Vec<(String, String)>,
    scanner: Scanner,
}

impl Redactor {
    /// A redactor for the values of `env_names` as they are set in `env` (name, value pairs).
    pub fn new<'a>(
        env_names: &[String],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Self::using(&Scanner::default(), env_names, env)
    }

    /// [`Redactor::new`] with an already compiled scanner (a run's: compiling one takes about a
    /// millisecond).
    pub fn using<'a>(
        scanner: &Scanner,
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
        Self {
            values,
            scanner: scanner.clone(),
        }
    }

    /// A redactor for variables of this process's environment.
    pub fn from_process_env(env_names: &[String]) -> Self {
        Self::from_process_env_using(&Scanner::default(), env_names)
    }

    /// [`Redactor::from_process_env`] with an already compiled scanner.
    pub fn from_process_env_using(scanner: &Scanner, env_names: &[String]) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::using(
            scanner,
            env_names,
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
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
        self.scanner.redact(&out).into_owned()
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

    /// Every case of the scanner's table that it finds is redacted here, and nothing else is: the
    /// redactor and the policy read the same table, so they cannot drift apart.
    #[test]
    fn redacts_every_case_the_scanner_finds() {
        let r = Redactor::new(&[], []);
        let scanner = Scanner::default();
        let cases = include_str!("../../abo-policy/tests/data/secrets.tsv");
        let mut checked = 0;
        for l in cases
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut cols = l.splitn(3, '\t');
            let (want, input) = (cols.next().unwrap(), cols.nth(1).unwrap());
            let input = input
                .replace("\\\\", "\u{0}")
                .replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace('\u{0}', "\\");
            let lines: Vec<(usize, String)> = input
                .split('\n')
                .enumerate()
                .map(|(i, l)| (i + 1, l.to_owned()))
                .collect();
            let found = scanner.scan("f", &lines);
            let out = r.redact(&input);
            match want.split_once('@') {
                Some((rule, _)) => {
                    assert!(
                        out.contains(&format!("[REDACTED:{rule}]")),
                        "{input:?} -> {out:?}"
                    );
                    for f in &found {
                        assert!(!out.contains(&f.value), "{input:?} -> {out:?}");
                    }
                    let again: Vec<(usize, String)> = out
                        .split('\n')
                        .enumerate()
                        .map(|(i, l)| (i + 1, l.to_owned()))
                        .collect();
                    assert_eq!(scanner.scan("f", &again), vec![], "{out:?}");
                    checked += 1;
                }
                None => assert_eq!(out, input, "nothing to hide"),
            }
        }
        assert!(checked >= 30, "{checked}");
    }
}
