//! Success patterns and failure modes from the event log: each landed task (its statement and
//! the files its commit touched) and each failed attempt (its statement, the reasons and the
//! feedback it got) becomes a past change, searchable by similarity to a new task. The log is
//! read from where the last reading stopped (a cursor in the store); runs whose base commit is not
//! in this repository are left out (a shared store may hold other repositories' runs).

use std::collections::{BTreeMap, HashMap};

use abo_core::event::EventBody;
use abo_core::ids::{CommitSha, RunId};
use abo_core::spec::{RunSpec, TaskSpec};
use abo_knowledge::rank::DocKind;
use abo_knowledge::terms;
use abo_store::{KnowledgeDoc, Store};

use super::KnowledgeError;
use crate::git::Git;
use crate::redact::Redactor;

const CURSOR: &str = "events";
const PAGE: u32 = 2_000;
/// Text kept of a failure's reasons.
const REASON_CHARS: usize = 600;

/// A task's statement: title, description, acceptance.
pub fn statement(t: &TaskSpec) -> String {
    let mut s = t.title.clone();
    if !t.description.trim().is_empty() {
        s.push_str("\n\n");
        s.push_str(t.description.trim());
    }
    for a in &t.acceptance {
        s.push_str("\n- ");
        s.push_str(a);
    }
    s
}

fn shorten(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn make(
    kind: DocKind,
    key: String,
    at: i64,
    task: &TaskSpec,
    outcome: &str,
    files: Vec<String>,
    redactor: &Redactor,
) -> KnowledgeDoc {
    let body = redactor.redact(&format!("{}\n\n{outcome}", statement(task)));
    let bag = terms::bag(&redactor.redact(&statement(task)));
    KnowledgeDoc {
        kind: kind.as_str().into(),
        key,
        at: abo_core::ids::Timestamp(at),
        title: redactor.redact(&task.title),
        body,
        files,
        len: bag.values().map(|n| u64::from(*n)).sum(),
        terms: bag.into_iter().collect(),
    }
}

/// The kinds of the events an outcome is read from.
const OUTCOMES: &[&str] = &["task.landed", "task.retry", "task.failed", "task.denied"];

/// The runs whose outcomes were read, each with its spec when its base commit is in this
/// repository (`None`: another repository's run, whose outcomes are not this one's).
pub(super) type Specs = BTreeMap<RunId, Option<RunSpec>>;

/// Reads the log since the last reading; returns how many outcomes were recorded. `specs` holds
/// the runs' specs read before, and gets those read now.
pub async fn index_outcomes(
    git: &Git,
    store: &Store,
    redactor: &Redactor,
    repo: &str,
    specs: &mut Specs,
) -> Result<usize, KnowledgeError> {
    let mut after =
        u64::try_from(store.knowledge_cursor(repo, CURSOR).await?.unwrap_or(0)).unwrap_or(0);
    let mut recorded = 0;
    loop {
        let page = store.events_of_kinds(OUTCOMES, after, PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        let last = last.seq;
        let outcomes: Vec<&abo_core::event::Event> = page
            .iter()
            .map(|e| &e.event)
            .filter(|ev| ev.task.is_some())
            .collect();
        for ev in &outcomes {
            if !specs.contains_key(&ev.run) {
                let spec = run_spec(store, &ev.run).await?;
                let ours = match &spec {
                    Some(s) => git.has_commit(&s.base).await.unwrap_or(false),
                    None => false,
                };
                specs.insert(ev.run.clone(), spec.filter(|_| ours));
            }
        }
        // The files of the page's landed commits (of this repository's runs), in one `git show`.
        let landed: Vec<&CommitSha> = outcomes
            .iter()
            .filter(|ev| matches!(specs.get(&ev.run), Some(Some(_))))
            .filter_map(|ev| match &ev.body {
                EventBody::TaskLanded { commit, .. } => Some(commit),
                _ => None,
            })
            .collect();
        let files_of = changed(git, &landed).await;
        let mut docs = Vec::new();
        for ev in outcomes {
            let Some(task_id) = &ev.task else {
                continue;
            };
            let Some(Some(spec)) = specs.get(&ev.run) else {
                continue;
            };
            let Some(task) = spec.tasks.iter().find(|t| &t.id == task_id) else {
                continue;
            };
            let key = |n: u32| format!("{}/{}/{n}", ev.run, task_id);
            let doc = match &ev.body {
                EventBody::TaskLanded { attempt, commit } => {
                    let files = files_of.get(commit).cloned().unwrap_or_default();
                    let outcome = format!(
                        "Landed as {} changing {}.",
                        commit.as_str(),
                        files.join(", ")
                    );
                    make(
                        DocKind::Landed,
                        key(*attempt),
                        ev.at.0,
                        task,
                        &outcome,
                        files,
                        redactor,
                    )
                }
                EventBody::TaskRetry {
                    attempt, reason, ..
                } => {
                    let outcome = format!(
                        "Attempt {} failed: {}",
                        attempt.saturating_sub(1),
                        shorten(reason, REASON_CHARS)
                    );
                    make(
                        DocKind::Failed,
                        key(attempt.saturating_sub(1)),
                        ev.at.0,
                        task,
                        &outcome,
                        vec![],
                        redactor,
                    )
                }
                EventBody::TaskFailed {
                    attempts, reason, ..
                } => {
                    let outcome = format!(
                        "Failed after {attempts} attempts: {}",
                        shorten(reason, REASON_CHARS)
                    );
                    make(
                        DocKind::Failed,
                        key(*attempts),
                        ev.at.0,
                        task,
                        &outcome,
                        vec![],
                        redactor,
                    )
                }
                EventBody::TaskDenied {
                    attempt, reasons, ..
                } => {
                    let outcome = format!("Denied: {}", shorten(&reasons.join("; "), REASON_CHARS));
                    make(
                        DocKind::Failed,
                        format!("{}/denied", key(*attempt)),
                        ev.at.0,
                        task,
                        &outcome,
                        vec![],
                        redactor,
                    )
                }
                _ => continue,
            };
            docs.push(doc);
        }
        recorded += docs.len();
        store.knowledge_put_docs(repo, &docs).await?;
        store
            .knowledge_set_cursor(repo, CURSOR, i64::try_from(last).unwrap_or(i64::MAX))
            .await?;
        after = last;
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok(recorded)
}

async fn run_spec(store: &Store, run: &RunId) -> Result<Option<RunSpec>, KnowledgeError> {
    let first = store.events(Some(run), 0, 1).await?;
    Ok(first.into_iter().find_map(|e| match e.event.body {
        EventBody::RunCreated(spec) => Some(*spec),
        _ => None,
    }))
}

/// Files kept per landed commit.
const MAX_FILES: usize = 200;

/// Commits read per `git show`.
const SHOW_COMMITS: usize = 200;

/// The files each landed commit changed (at most [`MAX_FILES`]), read for all of them by one `git
/// show` (of [`SHOW_COMMITS`] at most); a commit the repository lacks fails the batch, which is
/// then read commit by commit.
pub(super) async fn changed(git: &Git, commits: &[&CommitSha]) -> HashMap<CommitSha, Vec<String>> {
    let mut files = HashMap::new();
    // `git show` shows a commit named twice once.
    let mut seen = std::collections::HashSet::new();
    let commits: Vec<&CommitSha> = commits
        .iter()
        .copied()
        .filter(|c| seen.insert(*c))
        .collect();
    for chunk in commits.chunks(SHOW_COMMITS) {
        match show_names(git, chunk).await {
            Some(lists) => files.extend(chunk.iter().map(|c| (*c).clone()).zip(lists)),
            None => {
                for c in chunk {
                    let one = show_names(git, std::slice::from_ref(c)).await;
                    let list = one.and_then(|l| l.into_iter().next()).unwrap_or_default();
                    files.insert((*c).clone(), list);
                }
            }
        }
    }
    files
}

/// `git show -z --name-only` of `commits`: each one's files, in their order. Each record starts
/// with a header (`RS nonce sha US NUL`) whose nonce is drawn for this call: a file of a change can
/// be named like a header it can know (a commit's sha), never like one it cannot, so no file
/// moves to another commit's list.
async fn show_names(git: &Git, commits: &[&CommitSha]) -> Option<Vec<Vec<String>>> {
    let nonce = crate::git::nonce();
    let format = format!("--format=%x1e{nonce}%H%x1f");
    let mut args = vec!["show", "-z", "--name-only", "--no-renames", &format];
    args.extend(commits.iter().map(|c| c.as_str()));
    let out = git.run(&args).await.ok()?;
    Some(parse_names(&out, commits, &nonce))
}

fn parse_names(out: &str, commits: &[&CommitSha], nonce: &str) -> Vec<Vec<String>> {
    let headers: Vec<String> = commits
        .iter()
        .map(|c| format!("\u{1e}{nonce}{c}\u{1f}"))
        .collect();
    let mut lists: Vec<Vec<String>> = vec![Vec::new(); commits.len()];
    let mut current: Option<usize> = None;
    let mut first = false;
    for entry in out.split('\0') {
        let next = current.map_or(0, |i| i + 1);
        if headers.get(next).is_some_and(|h| entry == h) {
            current = Some(next);
            first = true;
            continue;
        }
        let Some(i) = current else { continue };
        // The first name follows the header's newline.
        let name = if first {
            entry.strip_prefix('\n').unwrap_or(entry)
        } else {
            entry
        };
        first = false;
        if !name.is_empty() && lists[i].len() < MAX_FILES {
            lists[i].push(name.to_owned());
        }
    }
    lists
}
