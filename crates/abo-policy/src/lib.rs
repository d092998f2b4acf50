//! abo's policy: Rego v1 (regorus) over every change. The default bundle enforces the
//! `safety` section of abo.yml; files in `safety.policy_dir` add rules to package `abo`. The engine
//! is built once per run and reused; each evaluation is timed.

pub mod classes;
pub mod measure;
pub mod reports;
pub mod secrets;
pub mod testdiff;

use std::time::{Duration, Instant};

use serde_json::Value;

use abo_core::verdict::Verdict;

/// The default bundle, compiled into the binary.
pub const DEFAULT_BUNDLE: &[(&str, &str)] = &[
    ("abo/default.rego", include_str!("bundle/default.rego")),
    (
        "abo/default_test.rego",
        include_str!("bundle/default_test.rego"),
    ),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A policy file does not parse (exit 2: it is configuration).
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("policy evaluation failed: {0}")]
    Eval(String),
}

/// What the policy decided about one input.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub deny: Vec<String>,
    pub require_approval: Vec<String>,
    pub risk: String,
    pub duration: Duration,
}

impl Decision {
    /// The JSON of `abo policy eval --json`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "verdict": self.verdict.as_str(),
            "deny": self.deny,
            "require_approval": self.require_approval,
            "risk": self.risk,
        })
    }

    /// Every reason, denials first.
    pub fn reasons(&self) -> Vec<String> {
        self.deny
            .iter()
            .chain(&self.require_approval)
            .cloned()
            .collect()
    }
}

/// One `test_*` rule's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub file: String,
    pub passed: bool,
    pub error: Option<String>,
}

pub struct Policy {
    engine: regorus::Engine,
    /// `safety.forbidden_paths` and `safety.allowed_paths`, for the per-file glob facts.
    forbidden: Vec<String>,
    allowed: Vec<String>,
    /// (file, source) of every policy loaded.
    sources: Vec<(String, String)>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field(
                "files",
                &self.sources.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Policy {
    /// The default bundle, `config` (abo.yml's `safety` as JSON) as `data.abo.config`, and the
    /// user's files (name, source).
    pub fn load(config: &Value, user: &[(String, String)]) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        let mut sources = Vec::new();
        let all = DEFAULT_BUNDLE
            .iter()
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned()))
            .chain(user.iter().cloned());
        for (file, source) in all {
            engine
                .add_policy(file.clone(), source.clone())
                .map_err(|e| syntax_error(&file, &e.to_string()))?;
            sources.push((file, source));
        }
        let data = serde_json::json!({ "abo": { "config": config } });
        let value = regorus::Value::from_json_str(&data.to_string())
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        engine
            .add_data(value)
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        let strings = |k: &str| -> Vec<String> {
            config[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        Ok(Self {
            engine,
            forbidden: strings("forbidden_paths"),
            allowed: strings("allowed_paths"),
            sources,
        })
    }

    /// Evaluates the policy on one input.
    pub fn evaluate(&mut self, input: &Value) -> Result<Decision, PolicyError> {
        let started = Instant::now();
        let input = self.with_path_facts(input);
        self.engine.set_input(to_rego(input)?);
        // One query for the three results: the rules they share are evaluated once.
        let results = self
            .engine
            .eval_query(
                r#"{"deny": data.abo.deny, "require_approval": data.abo.require_approval, "risk": data.abo.risk}"#.to_owned(),
                false,
            )
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        let value = results
            .result
            .first()
            .and_then(|r| r.expressions.first())
            .and_then(|e| e.value.to_json_str().ok())
            .and_then(|j| serde_json::from_str::<Value>(&j).ok())
            .ok_or_else(|| {
                PolicyError::Eval("the policy gave no result (is `package abo` intact?)".into())
            })?;
        let strings = |k: &str| -> Vec<String> {
            let mut v: Vec<String> = value[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect();
            v.sort();
            v
        };
        let (deny, require_approval) = (strings("deny"), strings("require_approval"));
        let risk = value["risk"].as_str().unwrap_or("medium").to_owned();
        let verdict = if !deny.is_empty() {
            Verdict::Deny
        } else if !require_approval.is_empty() {
            Verdict::NeedsApproval
        } else {
            Verdict::Allow
        };
        Ok(Decision {
            verdict,
            deny,
            require_approval,
            risk,
            duration: started.elapsed(),
        })
    }

    /// The input with each file's facts: the forbidden patterns it matches, whether it is in the
    /// allowed paths and in the task's scope, and its [`classes`]; `change.classified` says they
    /// are there. Matching globs and classifying paths here, once, is what keeps an evaluation
    /// fast: regorus would compile each glob for each file, and its calls of the bundle's functions
    /// on every file were most of a large change's evaluation. Facts already given stay.
    pub fn with_path_facts(&self, input: &Value) -> Value {
        let mut input = input.clone();
        let task_paths: Vec<String> = input["task"]["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if let Some(files) = input
            .pointer_mut("/change/files")
            .and_then(Value::as_array_mut)
        {
            for f in files.iter_mut() {
                let Some(path) = f["path"].as_str().map(str::to_owned) else {
                    continue;
                };
                let Some(obj) = f.as_object_mut() else {
                    continue;
                };
                if !obj.contains_key("forbidden") {
                    let hits: Vec<&String> = self
                        .forbidden
                        .iter()
                        .filter(|p| abo_core::glob::matches(p, &path))
                        .collect();
                    obj.insert("forbidden".into(), serde_json::json!(hits));
                }
                if !obj.contains_key("allowed") {
                    let allowed =
                        self.allowed.is_empty() || abo_core::glob::any(&self.allowed, &path);
                    obj.insert("allowed".into(), Value::Bool(allowed));
                }
                if !obj.contains_key("in_scope") {
                    let in_scope = task_paths.is_empty() || abo_core::glob::any(&task_paths, &path);
                    obj.insert("in_scope".into(), Value::Bool(in_scope));
                }
                let classes = classes::of(&path);
                for (key, value) in [
                    ("sensitive", classes.sensitive),
                    ("low", classes.low),
                    ("manifest", classes.manifest),
                ] {
                    obj.entry(key).or_insert(Value::Bool(value));
                }
            }
        }
        if let Some(change) = input.get_mut("change").and_then(Value::as_object_mut) {
            change.insert("classified".into(), Value::Bool(true));
        }
        input
    }

    /// The value of one rule (`data.quality_gates.allow`) on an input, as the policy's evaluation
    /// sees it (with the path facts); `None` when the rule is undefined for it.
    pub fn query(&mut self, input: &Value, rule: &str) -> Result<Option<Value>, PolicyError> {
        let input = self.with_path_facts(input);
        self.engine.set_input(to_rego(input)?);
        let v = self
            .engine
            .eval_rule(rule.to_owned())
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        if v == regorus::Value::Undefined {
            return Ok(None);
        }
        let json = v
            .to_json_str()
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| PolicyError::Eval(e.to_string()))
    }

    /// Runs every `test_*` rule of the loaded files.
    pub fn run_tests(&mut self) -> Vec<TestResult> {
        let tests: Vec<(String, String)> = self
            .sources
            .iter()
            .flat_map(|(file, src)| test_rules(src).into_iter().map(move |n| (file.clone(), n)))
            .collect();
        let mut results = Vec::new();
        for (file, name) in tests {
            self.engine.set_input(regorus::Value::new_object());
            let (passed, error) = match self.engine.eval_rule(format!("data.abo.{name}")) {
                Ok(v) => (v == regorus::Value::from(true), None),
                Err(e) => (false, Some(e.to_string())),
            };
            results.push(TestResult {
                name,
                file,
                passed,
                error,
            });
        }
        results
    }
}

/// The input as regorus's value, converted from the JSON tree itself: printing it as text and
/// parsing that again cost more than evaluating a large change's rules.
fn to_rego(input: Value) -> Result<regorus::Value, PolicyError> {
    serde_json::from_value(input).map_err(|e| PolicyError::Eval(e.to_string()))
}

/// Names of the `test_*` rules a source defines.
fn test_rules(src: &str) -> Vec<String> {
    let mut names: Vec<String> = src
        .lines()
        .filter_map(|l| {
            let name: String = l
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (name.starts_with("test_")
                && l[name.len()..]
                    .trim_start()
                    .starts_with(['i', '{', ':', '=']))
            .then_some(name)
        })
        .collect();
    names.dedup();
    names
}

/// regorus reports `--> file:line:col`, the source line, then `error: message`.
fn syntax_error(file: &str, message: &str) -> PolicyError {
    let location = message.lines().find_map(|l| l.trim().strip_prefix("--> "));
    let text = message
        .lines()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map_or_else(
            || message.trim().lines().last().unwrap_or(message).to_owned(),
            |m| m.trim().to_owned(),
        );
    let (line, col) = location
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let col = parts.next()?.trim().parse().ok()?;
            let line = parts.next()?.trim().parse().ok()?;
            Some((line, col))
        })
        .unwrap_or((1, 1));
    PolicyError::Syntax {
        file: file.to_owned(),
        line,
        col,
        message: text,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod quality_tests;
