//! A task while it runs, server-sent (`GET /v1/runs/{id}/tasks/{task}/live`): the tail of its
//! current attempt's agent transcript (each JSON line the CLI streams, as one line a person reads:
//! the agent's messages, its tool calls and their results), the backend's and the gates' logs as
//! they are written, all redacted, and the task's state when it changes. The stream starts at the
//! last lines of each file, not at its beginning: a page replays what it shows, nothing more.
//!
//! The files are abo's own, in the attempt's scratch directory (`.abo/tmp/<run>/<task>-<n>/`),
//! which no agent or gate writes directly (they write their stdout and stderr through abo); they
//! are still opened without following links and only when regular files. On a shared store, an
//! attempt run by a worker on another machine has no such files here: the stream then carries the
//! task's state only.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State as St};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use abo_core::ids::{AttemptId, RunId, TaskId};
use abo_runtime::redact::Redactor;

use crate::State;
use crate::auth::{Credential, Role, require};
use crate::error::ApiError;

/// How much of a file's end a new stream starts with.
const TAIL_BYTES: u64 = 16 * 1024;
/// At most this much of a file is read per poll (a flood is sent over several).
const READ_BYTES: usize = 256 * 1024;
/// How often the files and the task's row are looked at.
const POLL: Duration = Duration::from_millis(250);
/// A transcript line longer than this is cut for the page.
const LINE_CHARS: usize = 400;
/// The most of an unfinished line a stream keeps: a file written without newlines is shown as
/// one cut line, the rest of that line skipped, instead of growing the server's memory.
const PARTIAL_BYTES: usize = 64 * 1024;

/// One line of an agent's JSON stream as a person reads it: `None` for bookkeeping lines.
/// Claude Code (`stream-json`), Codex (`exec --json`) and plain text (aider) are understood;
/// another JSON line shows its `type`.
pub fn render_line(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Some(cut(line));
    };
    let kind = v["type"].as_str().unwrap_or("");
    let out = match kind {
        "system" => format!(
            "· session started{}",
            v["model"]
                .as_str()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
        "assistant" | "user" => {
            let parts: Vec<String> = v["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(content_part)
                .collect();
            if parts.is_empty() {
                return None;
            }
            parts.join("\n")
        }
        "result" => format!(
            "■ result: {}",
            v["result"]
                .as_str()
                .or(v["subtype"].as_str())
                .unwrap_or("done")
        ),
        "item.started" | "item.completed" | "item.updated" => codex_item(kind, &v["item"])?,
        "turn.completed" | "thread.started" | "turn.started" | "stream_event" => return None,
        "error" | "turn.failed" => format!(
            "✗ {}",
            v["message"]
                .as_str()
                .or(v["error"]["message"].as_str())
                .unwrap_or("error")
        ),
        "" => return Some(cut(line)),
        other => format!("· {other}"),
    };
    Some(out.lines().map(cut).collect::<Vec<_>>().join("\n"))
}

/// A part of a Claude message: text, a tool call, or a tool's result.
fn content_part(p: &Value) -> Option<String> {
    match p["type"].as_str()? {
        "text" => p["text"].as_str().map(str::to_owned),
        "thinking" => None,
        "tool_use" => {
            let name = p["name"].as_str().unwrap_or("tool");
            let input = &p["input"];
            let arg = [
                "command",
                "file_path",
                "path",
                "pattern",
                "url",
                "description",
            ]
            .iter()
            .find_map(|k| input[*k].as_str())
            .map(str::to_owned)
            .or_else(|| {
                (name == "AskUserQuestion").then(|| {
                    input["questions"][0]["question"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
            })
            .unwrap_or_else(|| input.to_string());
            Some(format!("▸ {name}: {arg}"))
        }
        "tool_result" => {
            let text = match &p["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|x| x["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            let first = text.lines().next().unwrap_or("").to_owned();
            Some(format!("◂ {first}"))
        }
        _ => None,
    }
}

/// A Codex item: its message, a command it runs or ran, a file change.
fn codex_item(kind: &str, item: &Value) -> Option<String> {
    let done = kind == "item.completed";
    Some(match item["type"].as_str()? {
        "agent_message" if done => item["text"].as_str()?.to_owned(),
        "reasoning" => return None,
        "command_execution" if done => format!(
            "◂ {} (exit {})",
            item["command"].as_str().unwrap_or(""),
            item["exit_code"]
        ),
        "command_execution" => format!("▸ shell: {}", item["command"].as_str().unwrap_or("")),
        "file_change" if done => {
            let paths: Vec<&str> = item["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["path"].as_str())
                .collect();
            format!("▸ edit: {}", paths.join(", "))
        }
        "mcp_tool_call" => format!("▸ {}", item["tool"].as_str().unwrap_or("tool")),
        _ => return None,
    })
}

fn cut(s: &str) -> String {
    if s.chars().count() <= LINE_CHARS {
        return s.to_owned();
    }
    let mut o: String = s.chars().take(LINE_CHARS - 1).collect();
    o.push('…');
    o
}

/// A file followed from an offset; only whole lines are taken, and of a line longer than `keep`
/// bytes its start.
struct Follow {
    path: PathBuf,
    offset: Option<u64>,
    partial: Vec<u8>,
    keep: usize,
    /// A line too long was cut: the rest of it, up to its newline, is skipped.
    skipping: bool,
}

impl Follow {
    fn new(path: PathBuf) -> Self {
        Self::keeping(path, PARTIAL_BYTES)
    }

    fn keeping(path: PathBuf, keep: usize) -> Self {
        Self {
            path,
            offset: None,
            partial: Vec::new(),
            keep,
            skipping: false,
        }
    }

    /// New whole lines since the last call; the first call starts near the file's end.
    fn lines(&mut self) -> Vec<String> {
        let Ok(mut f) = open_plain(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = match self.offset {
            Some(o) if o <= len => o,
            // Truncated or replaced: start again from the end's tail.
            Some(_) | None => {
                self.partial.clear();
                self.skipping = false;
                len.saturating_sub(TAIL_BYTES)
            }
        };
        let first = self.offset.is_none() && start > 0;
        if f.seek(SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let _ = f.take(READ_BYTES as u64).read_to_end(&mut buf);
        self.offset = Some(start + buf.len() as u64);
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        if first {
            // The tail began mid-line: drop that piece.
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    data.drain(..=i);
                }
                None => data.clear(),
            }
        }
        if self.skipping {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    data.drain(..=i);
                    self.skipping = false;
                }
                None => data.clear(),
            }
        }
        let whole = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = data.split_off(whole);
        let mut lines: Vec<String> = String::from_utf8_lossy(&data)
            .lines()
            .map(str::to_owned)
            .collect();
        if self.partial.len() > self.keep {
            let start = std::mem::take(&mut self.partial);
            lines.push(String::from_utf8_lossy(&start[..self.keep]).into_owned());
            self.skipping = true;
        }
        lines
    }
}

/// Opens a regular file without following a link.
fn open_plain(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// What a stream follows for one attempt: its transcript and its logs, by name.
struct Attempt {
    n: u32,
    scratch: PathBuf,
    transcript: Follow,
    logs: BTreeMap<String, Follow>,
}

impl Attempt {
    fn new(ctx: &abo_runtime::Ctx, run: &RunId, task: &TaskId, n: u32) -> Self {
        let scratch = ctx.scratch(&AttemptId::new(run.clone(), task.clone(), n));
        Self {
            n,
            transcript: Follow::new(scratch.join("transcript.jsonl")),
            scratch,
            logs: BTreeMap::new(),
        }
    }

    /// The logs in the scratch directory now: the backend's, the agent's stderr, each gate's.
    fn discover(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.scratch) else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let wanted = name.ends_with(".log")
                && (name.starts_with("gate-")
                    || name == "backend.log"
                    || name == "agent.stderr.log");
            if wanted && !self.logs.contains_key(&name) {
                self.logs.insert(name, Follow::new(e.path()));
            }
        }
    }
}

/// The task's state as the page shows it (sent when it changes).
fn state_of(row: &abo_store::TaskRow) -> Value {
    json!({
        "status": row.status,
        "attempts": row.attempts,
        "cost_usd": row.cost_usd,
        "cost": abo_core::human::usd(row.cost_usd),
        "tokens": row.tokens,
        "reason": row.reason,
    })
}

pub async fn task_live(
    St(st): St<State>,
    h: HeaderMap,
    UrlPath((run, task)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    require(&st.ctx.store, &h, Role::Viewer).await?;
    let credential = Credential::of(&h)
        .map(|c| crate::auth::hash(c.token()))
        .unwrap_or_default();
    let (run, task) = (RunId::new(&run), TaskId::new(&task));
    let secret_env = crate::home::spec_head(&st, &run)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run `{run}`")))?
        .settings
        .secret_env;
    if st.ctx.store.task(&run, &task).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no task `{task}` in run `{run}`"
        )));
    }
    let redactor = Redactor::from_process_env(&secret_env);
    let ctx = st.ctx.clone();
    let s = futures_util::stream::unfold(
        (
            None::<Attempt>,
            None::<Value>,
            std::collections::VecDeque::<SseEvent>::new(),
        ),
        move |(mut attempt, mut last, mut queue)| {
            let (ctx, run, task, redactor, credential) = (
                ctx.clone(),
                run.clone(),
                task.clone(),
                redactor.clone(),
                credential.clone(),
            );
            async move {
                loop {
                    if let Some(e) = queue.pop_front() {
                        return Some((Ok::<_, Infallible>(e), (attempt, last, queue)));
                    }
                    if !crate::auth::live(&ctx.store, &credential)
                        .await
                        .unwrap_or(false)
                    {
                        return None;
                    }
                    let Ok(Some(row)) = ctx.store.task(&run, &task).await else {
                        return None;
                    };
                    let state = state_of(&row);
                    if last.as_ref() != Some(&state) {
                        queue.push_back(SseEvent::default().event("state").data(state.to_string()));
                        last = Some(state);
                    }
                    if row.attempts > 0 && attempt.as_ref().is_none_or(|a| a.n != row.attempts) {
                        attempt = Some(Attempt::new(&ctx, &run, &task, row.attempts));
                        queue.push_back(
                            SseEvent::default()
                                .event("attempt")
                                .data(json!({ "attempt": row.attempts }).to_string()),
                        );
                    }
                    if let Some(a) = attempt.as_mut() {
                        let lines: Vec<String> = a
                            .transcript
                            .lines()
                            .iter()
                            .filter_map(|l| render_line(&redactor.redact(l)))
                            .collect();
                        if !lines.is_empty() {
                            queue.push_back(
                                SseEvent::default()
                                    .event("transcript")
                                    .data(json!({ "lines": lines }).to_string()),
                            );
                        }
                        a.discover();
                        for (name, f) in &mut a.logs {
                            let lines: Vec<String> =
                                f.lines().iter().map(|l| cut(&redactor.redact(l))).collect();
                            if !lines.is_empty() {
                                queue.push_back(
                                    SseEvent::default()
                                        .event("log")
                                        .data(json!({ "file": name, "lines": lines }).to_string()),
                                );
                            }
                        }
                    }
                    if queue.is_empty() {
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(s).keep_alive(KeepAlive::default()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lines_read_as_messages_and_tool_calls() {
        let lines = [
            r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"I will add the file."},{"type":"tool_use","name":"Bash","input":{"command":"ls -la"}}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"total 8\nREADME.md"}]}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"AskUserQuestion","input":{"questions":[{"question":"Which roles first?"}]}}]}}"#,
            r#"{"type":"result","subtype":"success","result":"Done."}"#,
            r#"{"type":"item.started","item":{"type":"command_execution","command":"cargo test"}}"#,
            r#"{"type":"item.completed","item":{"type":"command_execution","command":"cargo test","exit_code":0}}"#,
            r#"{"type":"item.completed","item":{"type":"agent_message","text":"All tests pass."}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":10}}"#,
            "aider> Applied edit to hello.py",
            r#"{"type":"whatever"}"#,
        ];
        let shown: Vec<String> = lines.iter().filter_map(|l| render_line(l)).collect();
        assert_eq!(
            shown,
            [
                "· session started (claude-sonnet-4-5)",
                "I will add the file.\n▸ Bash: ls -la",
                "◂ total 8",
                "▸ AskUserQuestion: Which roles first?",
                "■ result: Done.",
                "▸ shell: cargo test",
                "◂ cargo test (exit 0)",
                "All tests pass.",
                "aider> Applied edit to hello.py",
                "· whatever",
            ]
        );
    }

    #[test]
    fn a_followed_file_yields_whole_lines_from_its_tail_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.log");
        let old = "x".repeat(TAIL_BYTES as usize);
        std::fs::write(&p, format!("{old}\nkept 1\nkept 2\npart")).unwrap();
        let mut f = Follow::new(p.clone());
        assert_eq!(f.lines(), ["kept 1", "kept 2"]);
        let mut more = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut more, b"ial\nnext\n").unwrap();
        assert_eq!(f.lines(), ["partial", "next"]);
        assert!(f.lines().is_empty());
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(Follow::new(link).lines().is_empty());
    }

    /// The attack: a log written without a newline, 4 MiB of it. The stream keeps at most
    /// `PARTIAL_BYTES` of the unfinished line, shows its start once, skips the rest and reads the
    /// next line whole; the control, the same follower keeping everything, holds the whole flood.
    #[test]
    fn a_line_without_end_is_shown_cut_and_never_held_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gate-test.log");
        std::fs::write(&p, "start\n").unwrap();
        let flood = 4 << 20;
        let mut f = Follow::new(p.clone());
        let mut unbounded = Follow::keeping(p.clone(), usize::MAX);
        assert_eq!(f.lines(), ["start"]);
        assert_eq!(unbounded.lines(), ["start"]);
        let mut more = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut more, &vec![b'x'; flood]).unwrap();
        let mut shown = Vec::new();
        let mut held = 0;
        for _ in 0..(flood / READ_BYTES + 1) {
            shown.extend(f.lines());
            held = held.max(f.partial.len());
            unbounded.lines();
        }
        std::io::Write::write_all(&mut more, b"\nnext\n").unwrap();
        shown.extend(f.lines());
        assert!(held <= PARTIAL_BYTES, "held {held} bytes");
        assert_eq!(shown.len(), 2, "one cut line, then the next");
        assert_eq!(shown[0], "x".repeat(PARTIAL_BYTES));
        assert_eq!(shown[1], "next");

        assert_eq!(unbounded.partial.len(), flood, "the control holds it all");
    }
}
