//! `abo demo`: a sample repository and backlog, run end to end with offline backends.

use std::path::{Path, PathBuf};

use anyhow::Context;

use abo_core::state::RunStatus;
use abo_runtime::process::{self, Spec};

use crate::cli::Cli;
use crate::commands::open;
use crate::exit::{self, Usage};
use crate::out::{note, say, say_json, say_raw};
use crate::progress::Progress;
use crate::{load, status};

/// The sample project, as (path, content).
const FILES: &[(&str, &str)] = &[
    (
        "README.md",
        "# greeter\n\nA tiny shell project that abo works on in its demo.\n",
    ),
    (
        "src/greet.sh",
        "#!/bin/sh\n# Prints a greeting.\necho \"Hello, world\"\n",
    ),
    (
        "tests/test_greet.sh",
        "#!/bin/sh\nout=$(sh src/greet.sh)\n[ \"$out\" = \"Hello, world\" ] || { echo \"greet: expected 'Hello, world', got '$out'\"; exit 1; }\n",
    ),
    (
        "run_tests.sh",
        "#!/bin/sh\n# Runs every test in tests/.\nfail=0\nfor t in tests/test_*.sh; do\n  if sh \"$t\"; then echo \"ok   $t\"; else echo \"FAIL $t\"; fail=1; fi\ndone\nexit $fail\n",
    ),
    (
        "lint.sh",
        "#!/bin/sh\n# No trailing whitespace in the sources.\nif grep -rnE '[[:space:]]+$' src tests; then echo \"lint: trailing whitespace\"; exit 1; fi\n",
    ),
    (".abo-demo/backlog.yml", include_str!("../demo/backlog.yml")),
    (
        ".abo-demo/patches/farewell.diff",
        include_str!("../demo/patches/farewell.diff"),
    ),
];

fn demo_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .map(|mut e| e.next().is_some())
                    .unwrap_or(true)
            {
                return Err(
                    Usage::new(format!("{}: exists and is not empty", d.display()))
                        .hint("give a new or empty directory")
                        .into(),
                );
            }
            Ok(d.to_owned())
        }
        None => {
            use std::hash::{BuildHasher, RandomState};
            let n = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff;
            Ok(std::env::temp_dir().join(format!("abo-demo-{n:08x}")))
        }
    }
}

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut spec = Spec::new("git", dir).args(args.iter().copied());
    spec.env = vec![
        ("GIT_AUTHOR_NAME".into(), "abo demo".into()),
        ("GIT_AUTHOR_EMAIL".into(), "demo@abo.invalid".into()),
        ("GIT_COMMITTER_NAME".into(), "abo demo".into()),
        ("GIT_COMMITTER_EMAIL".into(), "demo@abo.invalid".into()),
    ];
    let out = process::run(&spec, &process::Groups::default())
        .await
        .context("running git (is it installed?)")?;
    if !out.success() {
        anyhow::bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) async fn demo(cli: &Cli, dir: Option<&Path>) -> anyhow::Result<u8> {
    let dir = demo_dir(dir)?;
    // The model task's stand-in server comes first: its address goes into the demo's abo.yml.
    let model_url = crate::stand_in::start().await?;
    let config_text = include_str!("../demo/abo.yml").replace("MODEL_URL", &model_url);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    git(&dir, &["init", "--quiet", "--initial-branch=main"]).await?;
    for (path, text) in FILES {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text)?;
    }
    std::fs::write(dir.join(".abo-demo/abo.yml"), &config_text)?;
    git(&dir, &["add", "-A"]).await?;
    git(
        &dir,
        &[
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            "A tiny shell project",
        ],
    )
    .await?;

    // With --json, stdout holds the status document alone.
    let note = |line: String| {
        if cli.json {
            note!("{line}")
        } else {
            say!("{line}")
        }
    };
    note(format!(
        "abo demo: a sample repository at {}",
        dir.display()
    ));
    note(
        "  backlog .abo-demo/backlog.yml: 9 tasks; gates `lint` and `test` (.abo-demo/abo.yml)\n"
            .into(),
    );
    let config_path = dir.join(".abo-demo/abo.yml");
    let (config, _) = load::config(&dir, Some(&config_path))?;
    let backlog = dir.join(".abo-demo/backlog.yml");
    let backlogs = load::backlogs(&backlog)?;
    let plan = load::plan(&dir, &backlogs, &config)?;
    let ctx = open(&dir, &config, cli.store.as_deref()).await?;
    let id = {
        let policy = crate::policy_cmd::policy_spec(&dir, &config, Some(&config_path), &backlog)?;
        let opts = abo_runtime::RunOptions {
            policy,
            ..Default::default()
        };
        abo_runtime::create_run(&ctx, &plan, &config, &opts).await?
    };
    note(format!("run {id}"));
    let mut progress = Progress::stderr();
    let state = abo_runtime::drive(&ctx, &id, abo_runtime::Start::New, &mut progress).await?;
    let view = status::view(&ctx, Some(id.as_str())).await?;
    if cli.json {
        say_json!(status::to_json(&view));
        return Ok(
            if matches!(state.status, RunStatus::Finished | RunStatus::Paused { .. }) {
                exit::OK
            } else {
                exit::for_run(&state)
            },
        );
    }
    say_raw!("\n{}", status::render(&view));
    let d = dir.display();
    say!(
        "\nWhat happened: tasks ran in parallel, each in its own worktree; `greet-name` failed its test,\n\
         got the gate's output as feedback and passed on attempt 2; `shout` failed lint twice, so\n\
         `shout-docs` was cancelled; `contributing` was written by a model API (a stand-in server\n\
         on 127.0.0.1) as a diff that abo applied and gated; `deploy-settings` wrote an access key,\n\
         so the policy denied it (the key is redacted from every log abo keeps); `lint-dependency`\n\
         changes a dependency manifest, so it waits for you; `changelog` waited for its dependencies.\n\
         Every landed commit carries a signed proof of change. Your checked-out branch was not\n\
         touched: the work is on branch {branch}.\n\n\
         Decide the waiting change, then let the run finish:\n\
         \x20 abo -C {d} approvals\n\
         \x20 abo -C {d} approve lint-dependency --reason \"shellcheck is fine\"\n\
         \x20 abo -C {d} resume {id}\n\n\
         Look at it:\n\
         \x20 git -C {d} log --oneline --graph {branch}   one commit per landed task\n\
         \x20 abo -C {d} status                            tasks, attempts, reasons\n\
         \x20 abo -C {d} events                            the event log\n\
         \x20 abo -C {d} verify {branch}                   the last commit's signed proof\n\
         \x20 abo -C {d} gc --older-than 0s                remove the failed attempts' worktrees",
        branch = state.spec.branch,
    );
    Ok(
        if matches!(state.status, RunStatus::Finished | RunStatus::Paused { .. }) {
            exit::OK
        } else {
            exit::for_run(&state)
        },
    )
}
