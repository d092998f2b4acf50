//! `abo policy eval --input FILE` and `abo policy test`: the policy bundle (the default one and the
//! files in `safety.policy_dir`) on an input, and its `test_*` rules.

use std::path::{Path, PathBuf};

use abo_core::config::Config;
use abo_core::diag::InputError;
use abo_policy::{Policy, PolicyError};

use crate::cli::Cli;
use crate::exit::{self, Usage};
use crate::load;
use crate::out::{say, say_json};

/// The `safety` section as the policy's `data.abo.config`, with abo's own files in it
/// (`protected_paths`, computed by abo: not a key of abo.yml).
pub(crate) fn safety_json(config: &Config, protected: &[String]) -> serde_json::Value {
    let s = &config.safety;
    let mut out = serde_json::json!({
        "allowed_paths": s.allowed_paths,
        "forbidden_paths": s.forbidden_paths,
        "forbidden_patterns": s.forbidden_patterns,
        "max_diff_lines": s.max_diff_lines.unwrap_or(0),
        "require_reason_for_access": s.require_reason_for_access.unwrap_or(true),
        "protected": s.protected.unwrap_or_default().as_str(),
        "protected_paths": protected,
        "rules": s.rules.iter().map(|(r, l)| (r.as_str(), l.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
        "quality": quality_json(&s.quality),
    });
    // Unset, the bundle's own default applies.
    if let Some(max) = s.max_diff_bytes {
        out["max_diff_bytes"] = max.into();
    }
    out
}

/// `safety.quality` as the policy reads it (`data.abo.config.quality`): the thresholds abo knows
/// with their defaults, and the user's own keys.
pub(crate) fn quality_json(q: &abo_core::config::Quality) -> serde_json::Value {
    let mut m: serde_json::Map<String, serde_json::Value> = q
        .other
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let require = q
        .require_tests
        .clone()
        .unwrap_or_else(|| vec!["code".into(), "refactor".into()]);
    m.insert(
        "changed_lines".into(),
        q.changed_lines.unwrap_or(80.0).into(),
    );
    m.insert("min_coverage".into(), q.min_coverage.unwrap_or(0.0).into());
    m.insert(
        "min_mutation_score".into(),
        q.min_mutation_score.unwrap_or(60.0).into(),
    );
    m.insert(
        "finding_severity".into(),
        q.finding_severity
            .unwrap_or(abo_core::config::Severity::Error)
            .as_str()
            .into(),
    );
    m.insert("require_tests".into(), require.into());
    serde_json::Value::Object(m)
}

/// abo's own files in the repository, relative to its root (a directory ends in `/`): the
/// configuration abo was started with, the policy directory, and the run's backlog (a file, or a
/// directory of them), each when inside the repository. The default bundle adds `abo.yml` and
/// `.abo/` itself. A change to any of them would rewrite the rules later runs go by.
pub(crate) fn protected_paths(
    root: &Path,
    config: &Config,
    config_path: Option<&Path>,
    backlog: Option<&Path>,
) -> Vec<String> {
    let policy_dir = root.join(config.safety.policy_dir.as_deref().unwrap_or(".abo/policy"));
    let mut out: Vec<String> = [(Some(policy_dir.as_path()), true)]
        .into_iter()
        .chain([config_path, backlog].map(|p| (p, p.is_some_and(Path::is_dir))))
        .flat_map(|(p, dir)| p.map(|p| inside(root, p, dir)).unwrap_or_default())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `path` relative to `root` (`/` after a directory), as named and, when it is a symlink, as
/// resolved: both the link and its target rule later runs. Nothing outside the repository.
fn inside(root: &Path, path: &Path, dir: bool) -> Vec<String> {
    let (Ok(root), Ok(path)) = (root.canonicalize(), std::path::absolute(path)) else {
        return Vec::new();
    };
    [named(&path), path.canonicalize().ok()]
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let rel: Vec<String> = p
                .strip_prefix(&root)
                .ok()?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            (!rel.is_empty()).then(|| rel.join("/") + if dir { "/" } else { "" })
        })
        .collect()
}

/// `path` with its directories resolved (symlinks, `..`) and its own name kept; what does not
/// exist yet (the policy directory) is kept as written.
fn named(path: &Path) -> Option<PathBuf> {
    let mut rest = vec![path.file_name()?.to_owned()];
    let mut base = path.parent()?;
    let resolved = loop {
        if let Ok(r) = base.canonicalize() {
            break r;
        }
        rest.push(base.file_name()?.to_owned());
        base = base.parent()?;
    };
    Some(rest.iter().rev().fold(resolved, |p, c| p.join(c)))
}

/// The user's policy files: every `.rego` file in `safety.policy_dir` (default `.abo/policy`),
/// sorted, as (path shown in errors, source).
pub(crate) fn user_policies(root: &Path, config: &Config) -> anyhow::Result<Vec<(String, String)>> {
    let dir = root.join(config.safety.policy_dir.as_deref().unwrap_or(".abo/policy"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rego"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Usage::new(format!("{}: {e}", f.display())))?;
            Ok((load::display_path(&f), text))
        })
        .collect()
}

/// The run's policy, or the located error of a file that does not parse (exit 2). `protected`:
/// abo's own files ([`protected_paths`]).
pub(crate) fn load_policy(
    root: &Path,
    config: &Config,
    protected: &[String],
) -> anyhow::Result<Policy> {
    let user = user_policies(root, config)?;
    Policy::load(&safety_json(config, protected), &user).map_err(|e| match e {
        PolicyError::Syntax {
            file,
            line,
            col,
            message,
        } => anyhow::Error::new(abo_core::diag::InputErrors::from(
            InputError::new(&file, message).at(Some((line, col))),
        )),
        other => anyhow::Error::new(other),
    })
}

/// The policy a run is created with: `safety`, abo's own files among them the run's
/// configuration and backlog, and the user's files, checked to parse (exit 2).
pub(crate) fn policy_spec(
    root: &Path,
    config: &Config,
    config_path: Option<&Path>,
    backlog: &Path,
) -> anyhow::Result<abo_core::spec::PolicySpec> {
    let protected = protected_paths(root, config, config_path, Some(backlog));
    load_policy(root, config, &protected)?;
    Ok(abo_core::spec::PolicySpec {
        safety: safety_json(config, &protected),
        files: user_policies(root, config)?,
    })
}

pub(crate) async fn eval(cli: &Cli, input: &Path, show_input: bool) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, path) = load::config(&root, cli.config.as_deref())?;
    let protected = protected_paths(&root, &config, path.as_deref(), None);
    let mut policy = load_policy(&root, &config, &protected)?;
    let text = std::fs::read_to_string(input)
        .map_err(|e| Usage::new(format!("{}: {e}", input.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| {
            InputError::new(&load::display_path(input), format!("invalid JSON: {e}"))
                .at(Some((e.line(), e.column())))
        })
        .map_err(abo_core::diag::InputErrors::from)?;
    let d = policy.evaluate(&value)?;
    if cli.json {
        let mut out = d.to_json();
        if show_input {
            out["input"] = policy.with_path_facts(&value);
        }
        say_json!(out);
    } else {
        if show_input {
            say!(
                "input    {}",
                serde_json::to_string_pretty(&policy.with_path_facts(&value))?
            );
        }
        say!("verdict  {}", d.verdict.as_str());
        say!("risk     {}", d.risk);
        for r in &d.deny {
            say!("deny     {r}");
        }
        for r in &d.require_approval {
            say!("approval {r}");
        }
        say!("time     {} µs", d.duration.as_micros());
    }
    Ok(exit::OK)
}

pub(crate) async fn test(cli: &Cli) -> anyhow::Result<u8> {
    let root = load::repo_root(cli.dir.as_deref()).await?;
    let (config, path) = load::config(&root, cli.config.as_deref())?;
    let protected = protected_paths(&root, &config, path.as_deref(), None);
    let mut policy = load_policy(&root, &config, &protected)?;
    let results = policy.run_tests();
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        let status = if r.passed { "PASS" } else { "FAIL" };
        let why = r
            .error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        say!("{status} {} {}{why}", r.file, r.name);
    }
    say!("{} passed, {failed} failed", results.len() - failed);
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::TASKS_FAILED
    })
}
