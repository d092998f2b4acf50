//! `abo bench --only deploy`: the time from a failing SLO check to the rollback's end, through
//! the real binary (`abo deploy`), each step in its sandbox. Side by side in the same run: the
//! rollback command's own duration, so that what abo adds (recording the failing sample,
//! starting the rollback in its sandbox, recording `deploy.rolled_back`) is the difference.

use std::path::Path;

use serde_json::{Value, json};

use abo_runtime::process::{self, Spec};

use super::{dist, generated_repo, sh};

pub(super) async fn rollback(dir: &Path, n: usize) -> anyhow::Result<Value> {
    let repo = dir.join("deploy");
    generated_repo(&repo, 10).await?;
    // The canary's check fails at its first sample; the rollback does nothing but exit.
    std::fs::write(
        repo.join("abo.yml"),
        "version: 1\nsandbox: { mode: best-effort }\ndeploy:\n  bench:\n    canary: 'true'\n    \
         check: { run: 'exit 1', for: 1s, every: 1s }\n    promote: 'true'\n    rollback: 'true'\n",
    )?;
    sh("git add abo.yml && git commit -qm cfg", &repo).await?;
    let exe = std::env::current_exe()?;
    let (mut restore, mut command) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut spec =
            Spec::new(exe.as_os_str(), &repo).args(["deploy", "bench", "--profile", "exploration"]);
        spec.env_remove = vec!["ABO_CLOCK_OFFSET_FILE".into()];
        let out = process::run(&spec, &Default::default()).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(id) = stdout
            .lines()
            .find_map(|l| l.split_once(": ").map(|(id, _)| id.to_owned()))
            .filter(|id| id.starts_with("deploy-"))
        else {
            anyhow::bail!(
                "abo deploy (bench) printed no deployment: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let spec = Spec::new(exe.as_os_str(), &repo).args(["events", &id, "--json"]);
        let events = process::run(&spec, &Default::default()).await?;
        let rolled = String::from_utf8_lossy(&events.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["kind"] == "deploy.rolled_back")
            .ok_or_else(|| anyhow::anyhow!("deployment {id} was not rolled back"))?;
        #[allow(clippy::cast_precision_loss)]
        {
            restore.push(rolled["data"]["restore_ms"].as_u64().unwrap_or(0) as f64);
            command.push(rolled["data"]["duration_ms"].as_u64().unwrap_or(0) as f64);
        }
    }
    Ok(json!({
        "failing_check_to_rollback_end_ms": dist(restore),
        "rollback_command_alone_ms": dist(command),
        "deployments": n,
    }))
}
