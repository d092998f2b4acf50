//! Landing attempts on the run branch, against a real repository.

use abo_core::ids::RunId;
use abo_test_support::TestRepo;
use pretty_assertions::assert_eq;

use super::*;

/// A repository whose run branch `abo/r` is at its first commit (checked out nowhere), a store,
/// and a run spec of tasks `x`, `y` and `z`.
async fn setup() -> (TestRepo, Ctx, tempfile::TempDir, RunSpec) {
    let repo = TestRepo::new();
    repo.write("a.txt", "a\n");
    repo.commit_all("Add a");
    repo.git(&["branch", "abo/r"]);
    let (ctx, dir) = crate::context::for_test(&repo.path).await;
    let task = |id: &str| {
        serde_json::json!({
            "id": id, "title": id.to_uppercase(), "type": "code", "description": "",
            "acceptance": [], "paths": [], "deps": [],
            "backend": { "kind": "command", "name": "command", "run": "true" },
            "gates": [], "labels": [], "max_attempts": 1, "priority": 0, "skipped": null, "origin": "t"
        })
    };
    let spec: RunSpec = serde_json::from_value(serde_json::json!({
        "title": "t", "profile": "exploration", "base": "0", "base_branch": null, "branch": "abo/r",
        "settings": { "max_parallel": 3, "stop_after_consecutive_failures": 0, "attempt_timeout_ms": 1000,
            "silence_timeout_ms": 1000, "run_timeout_ms": 60_000, "gates": [], "landing": {} },
        "tasks": [task("x"), task("y"), task("z")]
    }))
    .unwrap();
    (repo, ctx, dir, spec)
}

/// The attempt of `task`, its worktree made from the run branch, `file` written in it.
fn attempt(repo: &TestRepo, ctx: &Ctx, task: &str, file: &str, text: &str) -> AttemptId {
    let a = AttemptId {
        run: RunId::new("r"),
        task: abo_core::ids::TaskId::new(task),
        attempt: 1,
    };
    let wt = ctx.worktree(&a);
    std::fs::create_dir_all(wt.parent().unwrap()).unwrap();
    repo.git(&[
        "worktree",
        "add",
        "-q",
        "-B",
        &a.branch(),
        wt.to_str().unwrap(),
        "abo/r",
    ]);
    std::fs::write(wt.join(file), text).unwrap();
    a
}

fn landed(o: &LandOutcome) -> CommitSha {
    match o {
        LandOutcome::Landed { commit } => commit.clone(),
        other => panic!("not landed: {other:?}"),
    }
}

#[tokio::test]
async fn attempts_land_together_each_merged_onto_the_one_before_and_a_conflict_fails_alone() {
    let (repo, ctx, _dir, spec) = setup().await;
    let start = repo.git(&["rev-parse", "abo/r"]).trim().to_owned();
    let x = attempt(&repo, &ctx, "x", "x.txt", "x\n");
    let y = attempt(&repo, &ctx, "y", "y.txt", "y\n");
    // z writes x.txt too, otherwise than x: it conflicts with x once x has landed.
    let z = attempt(&repo, &ctx, "z", "x.txt", "z\n");
    let out = land_together(&ctx, &spec, &[x.clone(), y.clone(), z.clone()]).await;
    let tasks: Vec<&str> = out.iter().map(|(a, _)| a.task.as_str()).collect();
    assert_eq!(tasks, ["x", "y", "z"]);
    // x is its own commit (the branch was where it started); y is merged onto it.
    let cx = landed(&out[0].1);
    let cy = landed(&out[1].1);
    assert_eq!(repo.git(&["rev-parse", &format!("{cx}^")]).trim(), start);
    assert_eq!(
        repo.git(&["rev-parse", &format!("{cy}^")]).trim(),
        cx.as_str()
    );
    assert!(
        matches!(&out[2].1, LandOutcome::Failed { reason, .. } if reason.contains("conflicts") && reason.contains("x.txt")),
        "{:?}",
        out[2].1
    );
    // The branch and its keeper are at y's landing; x's and y's own branches are gone, z's
    // stays for its next attempt's feedback.
    assert_eq!(repo.git(&["rev-parse", "abo/r"]).trim(), cy.as_str());
    assert_eq!(
        repo.git(&["rev-parse", &keeper_ref(&x.run)]).trim(),
        cy.as_str()
    );
    let branches = repo.git(&[
        "branch",
        "--list",
        "abo-attempt/*",
        "--format=%(refname:short)",
    ]);
    assert_eq!(branches.trim(), z.branch());
    assert_eq!(repo.git(&["show", "abo/r:x.txt", "abo/r:y.txt"]), "x\ny\n");
    // y's landing keeps the message, trailers and author of y's own commit (its second parent's
    // place in a merge is taken by its diff: one parent).
    let message = repo.git(&["log", "-1", "--format=%an <%ae>%n%B", cy.as_str()]);
    let own = repo.git(&["log", "-1", "--format=%an <%ae>%n%B", cx.as_str()]);
    assert_eq!(message.lines().next(), own.lines().next());
    assert!(
        message.contains("Y\n\nAbo-Run: r\nAbo-Task: y\nAbo-Attempt: 1"),
        "{message}"
    );
}

#[tokio::test]
async fn attempts_landing_together_on_a_checked_out_branch_all_wait_and_the_branch_stays() {
    let (repo, ctx, _dir, spec) = setup().await;
    let x = attempt(&repo, &ctx, "x", "x.txt", "x\n");
    let y = attempt(&repo, &ctx, "y", "y.txt", "y\n");
    let start = repo.git(&["rev-parse", "abo/r"]).trim().to_owned();
    // Control: the branch checked out nowhere, the two land (above); here a person has it.
    repo.git(&["checkout", "-q", "abo/r"]);
    let out = land_together(&ctx, &spec, &[x, y]).await;
    for (a, o) in &out {
        assert!(
            matches!(o, LandOutcome::Blocked { reason } if reason.contains("checked out")),
            "{a}: {o:?}"
        );
    }
    assert_eq!(repo.git(&["rev-parse", "abo/r"]).trim(), start);
}

/// The tree `git merge-tree` gives for `wt`'s change (its index: the attempt's commit) merged
/// onto `onto`, from `base`.
fn merged_tree(repo: &TestRepo, base: &str, onto: &str, wt: &std::path::Path) -> String {
    let theirs = abo_test_support::git_in(wt, &["write-tree"]);
    repo.git(&[
        "merge-tree",
        "--write-tree",
        &format!("--merge-base={base}^{{tree}}"),
        &format!("{onto}^{{tree}}"),
        theirs.trim(),
    ])
    .trim()
    .to_owned()
}

#[tokio::test]
async fn changes_replayed_path_by_path_give_the_trees_merge_tree_gives() {
    let (repo, ctx, _dir, mut spec) = setup().await;
    // Every kind of entry and path: nested directories, an executable, a symlink, a directory
    // that a file replaces, a directory emptied, and names with spaces, quotes, UTF-8 and a
    // newline.
    repo.write("dir/a.txt", "a\n");
    repo.write("run.sh", "echo\n");
    repo.write("old/only.txt", "old\n");
    repo.write("d2/x", "x\n");
    repo.write("shared.txt", "1\n2\n3\n4\n5\n6\n7\n8\n");
    repo.commit_all("more");
    repo.git(&["branch", "-f", "abo/r"]);
    let base = repo.git(&["rev-parse", "abo/r"]).trim().to_owned();
    // fast-import keeps what it writes in a pack however few the objects (merge-tree and
    // commit-tree write loose ones): the pack says the replay ran.
    repo.git(&["config", "fastimport.unpackLimit", "1"]);
    for id in ["w", "v"] {
        let mut t = spec.tasks[0].clone();
        t.id = abo_core::ids::TaskId::new(id);
        spec.tasks.push(t);
    }
    // x edits shared.txt's first line: landed first, as its own commit.
    let x = attempt(&repo, &ctx, "x", "shared.txt", "one\n2\n3\n4\n5\n6\n7\n8\n");
    // y: a file in a new directory with an awkward name, an executable bit, a symlink.
    let y = attempt(&repo, &ctx, "y", "dir/a.txt", "a2\n");
    let wy = ctx.worktree(&y);
    std::fs::create_dir_all(wy.join("new dir")).unwrap();
    std::fs::write(wy.join("new dir/\"q\" ü\nl.txt"), "q\n").unwrap();
    std::fs::set_permissions(
        wy.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("dir/a.txt", wy.join("link")).unwrap();
    // z: a directory emptied, a directory replaced by a file.
    let z = attempt(&repo, &ctx, "z", "d2.tmp", "");
    let wz = ctx.worktree(&z);
    std::fs::remove_file(wz.join("d2.tmp")).unwrap();
    std::fs::remove_dir_all(wz.join("old")).unwrap();
    std::fs::remove_dir_all(wz.join("d2")).unwrap();
    std::fs::write(wz.join("d2"), "now a file\n").unwrap();
    // w edits shared.txt's last line, as x did its first: not replayed (x's edit would be lost)
    // but merged, which keeps both.
    let w = attempt(
        &repo,
        &ctx,
        "w",
        "shared.txt",
        "1\n2\n3\n4\n5\n6\n7\neight\n",
    );
    // v, after w, is replayed on w's merge.
    let v = attempt(&repo, &ctx, "v", "v.txt", "v\n");
    let all = [x, y, z, w, v];
    let out = land_together(&ctx, &spec, &all).await;
    let mut onto = base.clone();
    for ((a, o), attempt) in out.iter().zip(&all) {
        let landed = landed(o);
        let want = merged_tree(&repo, &base, &onto, &ctx.worktree(attempt));
        let got = repo.git(&["rev-parse", &format!("{landed}^{{tree}}")]);
        assert_eq!(got.trim(), want, "{a}");
        assert_eq!(
            repo.git(&["rev-parse", &format!("{landed}^")]).trim(),
            onto,
            "{a} is on the one before"
        );
        let message = repo.git(&["log", "-1", "--format=%B", landed.as_str()]);
        assert!(
            message.contains(&format!("Abo-Task: {}", a.task)),
            "{message}"
        );
        onto = landed.as_str().to_owned();
    }
    assert_eq!(repo.git(&["rev-parse", "abo/r"]).trim(), onto);
    assert_eq!(
        repo.git(&["show", "abo/r:shared.txt"]),
        "one\n2\n3\n4\n5\n6\n7\neight\n"
    );
    assert_eq!(repo.git(&["show", "abo/r:d2"]), "now a file\n");
    let files = repo.git(&["ls-tree", "-r", "--name-only", "abo/r"]);
    assert!(!files.contains("old/"), "{files}");
    // The scratch ref fast-import moved is gone with the landing's transaction.
    assert_eq!(repo.git(&["for-each-ref", "refs/abo/landing"]), "");
    let objects = repo.git(&["count-objects", "-v"]);
    assert!(
        !objects.contains("\npacks: 0\n"),
        "nothing was replayed: {objects}"
    );
}

#[tokio::test]
async fn an_attempt_from_the_branchs_head_after_one_from_an_older_commit_goes_on_top_of_it() {
    let (repo, ctx, _dir, spec) = setup().await;
    // x started before the branch moved (a landing of an earlier batch), y after.
    let x = attempt(&repo, &ctx, "x", "x.txt", "x\n");
    let earlier = attempt(&repo, &ctx, "z", "z.txt", "z\n");
    let moved = landed(&land_together(&ctx, &spec, std::slice::from_ref(&earlier)).await[0].1);
    let y = attempt(&repo, &ctx, "y", "y.txt", "y\n");
    let out = land_together(&ctx, &spec, &[x, y]).await;
    let (cx, cy) = (landed(&out[0].1), landed(&out[1].1));
    assert_eq!(
        repo.git(&["rev-parse", &format!("{cx}^")]).trim(),
        moved.as_str()
    );
    assert_eq!(
        repo.git(&["rev-parse", &format!("{cy}^")]).trim(),
        cx.as_str()
    );
    assert_eq!(repo.git(&["rev-parse", "abo/r"]).trim(), cy.as_str());
    let files = repo.git(&["ls-tree", "--name-only", "abo/r"]);
    for f in ["x.txt", "y.txt", "z.txt"] {
        assert!(files.lines().any(|l| l == f), "{f} in {files}");
    }
}

/// Worktrees are pooled only where no process of a finished attempt can still write them: with
/// the sandbox off, none is kept; with it, one more than run at once (where the host has PID
/// namespaces, as this one does when the test runs as root).
#[tokio::test]
async fn worktrees_are_pooled_only_under_a_sandbox_with_pid_namespaces() {
    let (_repo, _ctx, _dir, mut spec) = setup().await;
    spec.settings.sandbox.mode = abo_core::config::SandboxMode::Required;
    let pid_namespaces = abo_sandbox::probe()
        .iter()
        .any(|l| l.name == "pid namespace" && l.available);
    assert_eq!(recycled(&spec), if pid_namespaces { 4 } else { 0 });
    // `best-effort` runs the program without namespaces when it cannot make them.
    spec.settings.sandbox.mode = abo_core::config::SandboxMode::BestEffort;
    assert_eq!(recycled(&spec), 0);
    spec.settings.sandbox.mode = abo_core::config::SandboxMode::Off;
    assert_eq!(recycled(&spec), 0);
}

#[test]
fn attempts_a_kill_of_the_run_ended_are_removed_not_pooled() {
    let attempt = |n| abo_core::ids::AttemptId {
        run: abo_core::ids::RunId::new("r"),
        task: abo_core::ids::TaskId::new("t"),
        attempt: n,
    };
    let cleanup = |n, keep| Effect::Cleanup {
        attempt: attempt(n),
        keep,
    };
    let mut alone = vec![cleanup(1, false)];
    super::not_pooled_after_a_kill(&mut alone);
    assert_eq!(alone, vec![cleanup(1, false)]);
    let mut killed = vec![Effect::KillAll, cleanup(1, false), cleanup(2, true)];
    super::not_pooled_after_a_kill(&mut killed);
    assert_eq!(
        killed,
        vec![
            Effect::KillAll,
            Effect::Stop {
                attempt: attempt(1)
            },
            cleanup(2, true)
        ]
    );
}
