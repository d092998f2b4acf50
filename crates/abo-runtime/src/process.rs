//! Running child processes: the one place that spawns them. Every child gets its own process
//! group, a closed stdin, an explicit cwd and environment, and an optional timeout; when it ends
//! (or times out, or abo is told to stop) the whole group is killed, so nothing it started outlives it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod lines;
pub use lines::{BoundedLines, CUT, MAX_LINE};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Variables set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// Inherited variables removed.
    pub env_remove: Vec<String>,
    pub timeout: Option<Duration>,
    /// Where stdout and stderr go, interleaved; `None` captures them in memory.
    pub log: Option<PathBuf>,
    /// Run inside this sandbox (through the helper); its environment replaces the inherited one.
    pub sandbox: Option<crate::sandbox::Sandboxed>,
    /// Written to the process's stdin, which is then closed (`None`: stdin is closed at once).
    pub input: Option<Vec<u8>>,
    /// The most of stdout captured in memory: past it the process is stopped and the run is an
    /// error (what a worktree holds decides how much git prints).
    pub max_stdout: Option<u64>,
}

impl Spec {
    pub fn new(program: impl Into<OsString>, cwd: &Path) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.to_owned(),
            env: Vec::new(),
            env_remove: Vec::new(),
            timeout: None,
            log: None,
            sandbox: None,
            input: None,
            max_stdout: None,
        }
    }

    /// `sh -c SCRIPT`.
    pub fn shell(script: &str, cwd: &Path) -> Self {
        Self::new("sh", cwd).args(["-c", script])
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.to_owned(), v.into()));
        self
    }
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub exit: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub killed: bool,
    pub duration: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit == Some(0) && !self.timed_out && !self.killed
    }

    /// "exited with 2", "timed out after 30s", "was killed by signal 9".
    pub fn describe(&self, timeout: Option<Duration>) -> String {
        if self.timed_out {
            let t = timeout
                .map(|d| abo_core::units::Dur(d).to_string())
                .unwrap_or_default();
            return format!("timed out after {t}");
        }
        if self.killed {
            return "was stopped by abo".into();
        }
        match (self.exit, self.signal) {
            (Some(c), _) => format!("exited with {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "ended without a status".into(),
        }
    }
}

/// The process groups alive now, so that all of them can be killed at once.
#[derive(Clone, Debug, Default)]
pub struct Groups(Arc<Mutex<BTreeSet<i32>>>);

impl Groups {
    fn insert(&self, pgid: i32) {
        if let Ok(mut g) = self.0.lock() {
            g.insert(pgid);
        }
    }

    fn remove(&self, pgid: i32) {
        if let Ok(mut g) = self.0.lock() {
            g.remove(&pgid);
        }
    }

    /// Kills every group; each waiting [`run`] then returns with `killed`.
    pub fn kill_all(&self) {
        let groups: Vec<i32> = self
            .0
            .lock()
            .map(|mut g| std::mem::take(&mut *g).into_iter().collect())
            .unwrap_or_default();
        for g in groups {
            kill_group(g);
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|g| g.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SIGKILL to a whole process group; a group already gone is fine.
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| nix::sys::signal::kill(Pid::from_raw(p), None).is_ok())
}

/// The command for a spec: its own process group, stdin closed, cwd and environment as given.
/// A sandboxed spec runs through the helper (`abo __sandbox PROFILE -- PROGRAM ARGS`) with only
/// the sandbox's environment.
fn command(spec: &Spec) -> std::io::Result<tokio::process::Command> {
    let (program, args): (&OsString, Vec<OsString>) = match &spec.sandbox {
        Some(sb) => {
            let json = serde_json::to_vec(&sb.profile).map_err(std::io::Error::other)?;
            std::fs::write(&sb.profile_file, json)?;
            let mut a: Vec<OsString> = vec![
                abo_sandbox::HELPER_ARG.into(),
                sb.profile_file.clone().into(),
                "--".into(),
                spec.program.clone(),
            ];
            a.extend(spec.args.iter().cloned());
            (&spec.program, a)
        }
        None => (&spec.program, spec.args.clone()),
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "this module is the one place that spawns processes"
    )]
    let mut cmd = match &spec.sandbox {
        Some(sb) => tokio::process::Command::new(&sb.helper),
        None => tokio::process::Command::new(program),
    };
    cmd.args(&args)
        .current_dir(&spec.cwd)
        .stdin(if spec.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(true);
    match &spec.sandbox {
        Some(sb) => {
            cmd.env_clear();
            for (k, v) in &sb.env {
                cmd.env(k, v);
            }
        }
        None => {
            for k in &spec.env_remove {
                cmd.env_remove(k);
            }
            for (k, v) in &spec.env {
                cmd.env(k, v);
            }
        }
    }
    Ok(cmd)
}

/// After a sandboxed process: whatever it left in its cgroups (even outside its process group)
/// is killed, and the groups removed.
fn release(spec: &Spec) {
    if let Some(sb) = &spec.sandbox {
        let dirs = &sb.profile.cgroups;
        for _ in 0..50 {
            let left = abo_sandbox::cgroup::members(dirs);
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        abo_sandbox::cgroup::remove(dirs);
        let _ = std::fs::remove_file(&sb.profile_file);
        let _ = std::fs::remove_dir_all(&sb.home);
    }
}

/// Runs a process to its end, its timeout, or until its group is killed through `groups`.
pub async fn run(spec: &Spec, groups: &Groups) -> std::io::Result<Outcome> {
    let mut cmd = command(spec)?;
    match &spec.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    groups.insert(pgid);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut stdin = child.stdin.take();
    let write_in = async {
        if let (Some(s), Some(bytes)) = (stdin.as_mut(), spec.input.as_deref()) {
            let _ = tokio::io::AsyncWriteExt::write_all(s, bytes).await;
        }
        drop(stdin.take());
    };
    let read_out = async {
        let mut buf = Vec::new();
        let mut over = false;
        if let Some(s) = stdout.as_mut() {
            let max = spec.max_stdout.unwrap_or(u64::MAX);
            let _ = tokio::io::AsyncReadExt::read_to_end(
                &mut tokio::io::AsyncReadExt::take(s, max.saturating_add(1)),
                &mut buf,
            )
            .await;
            if buf.len() as u64 > max {
                // Stopped here: the rest is never read, and the child would wait on its pipe.
                over = true;
                buf = Vec::new();
                kill_group(pgid);
            }
        }
        (buf, over)
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = tokio::io::AsyncReadExt::read_to_end(s, &mut buf).await;
        }
        buf
    };
    let wait = async {
        let (status, out, err, ()) = tokio::join!(child.wait(), read_out, read_err, write_in);
        (status, out, err)
    };
    let result = match spec.timeout {
        Some(t) => tokio::time::timeout(t, wait).await.ok(),
        None => Some(wait.await),
    };
    // Whatever the child left running in its group goes with it.
    kill_group(pgid);
    release(spec);
    let was_tracked = groups.0.lock().map(|g| g.contains(&pgid)).unwrap_or(true);
    groups.remove(pgid);
    let duration = started.elapsed();
    match result {
        Some((_, (_, true), _)) => Err(std::io::Error::other(format!(
            "its output passed {} MiB, so it was stopped",
            spec.max_stdout.unwrap_or_default() >> 20
        ))),
        Some((status, (stdout, false), stderr)) => {
            let status = status?;
            use std::os::unix::process::ExitStatusExt;
            Ok(Outcome {
                exit: status.code(),
                signal: status.signal(),
                timed_out: false,
                killed: !was_tracked,
                duration,
                stdout,
                stderr,
            })
        }
        None => {
            let _ = child.wait().await;
            Ok(Outcome {
                exit: None,
                signal: Some(9),
                timed_out: true,
                killed: false,
                duration,
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
        }
    }
}

/// Kills what a crashed abo left behind: every process whose environment carries `marker`
/// (`ABO_RUN_ID=<run>`, set on everything abo runs for a run). Returns how many it killed.
pub fn kill_leftovers(marker: &str) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// Stops one attempt: every process whose environment carries `marker` (`ABO_WORKTREE=<path>`,
/// set on everything run for the attempt) and the whole process group of each, so that a child
/// that dropped its environment (`env -i`) but not its group goes too. abo's own group is never
/// signalled. Returns how many groups it killed.
pub fn kill_marked(marker: &str) -> usize {
    let mine = nix::unistd::getpgrp().as_raw();
    let mut groups = BTreeSet::new();
    let me = std::process::id();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if !environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
                continue;
            }
            // `/proc/PID/stat`: the fifth field, after the command in parentheses, is the group.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let pgid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<i32>().ok());
            if let Some(g) = pgid.filter(|g| *g > 1 && *g != mine) {
                groups.insert(g);
            }
        }
    }
    for g in &groups {
        kill_group(*g);
    }
    kill_leftovers(marker);
    groups.len()
}

/// What a line of an agent's output means to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    More,
    /// The final result was read: the process gets `grace` to exit, then its group is killed.
    Final,
    /// Stop the process now (it passed its budget): its group is killed.
    Stop,
}

/// How a streamed process ended, beyond [`Outcome`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    pub outcome: Outcome,
    /// Killed for printing nothing for the silence timeout.
    pub silent: bool,
    /// Killed after its final result because it did not exit.
    pub stopped_after_result: bool,
    /// Killed because `on_line` said [`Line::Stop`].
    pub stopped: bool,
    /// Killed because `stop` ended, with what it said.
    pub stopped_for: Option<String>,
}

/// An agent's stream as written to its transcript file, bounded: its first lines up to
/// [`TRANSCRIPT_HEAD`] bytes, then only the last [`TRANSCRIPT_TAIL`] bytes of lines (held in
/// memory, written at the end after a line saying what was cut). An agent printing without end
/// fills neither the disk nor abo's memory, and the transcript still ends with its result.
struct Transcript {
    file: std::fs::File,
    head: u64,
    tail_max: u64,
    written: u64,
    full: bool,
    tail: std::collections::VecDeque<String>,
    tail_bytes: u64,
    cut_lines: u64,
}

/// The start of a transcript that is kept.
pub const TRANSCRIPT_HEAD: u64 = 12 << 20;
/// The end of a cut transcript that is kept.
pub const TRANSCRIPT_TAIL: u64 = 4 << 20;

impl Transcript {
    fn open(path: &Path) -> std::io::Result<Self> {
        Self::bounded(path, TRANSCRIPT_HEAD, TRANSCRIPT_TAIL)
    }

    fn bounded(path: &Path, head: u64, tail_max: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok(Self {
            file,
            head,
            tail_max,
            written,
            full: false,
            tail: std::collections::VecDeque::new(),
            tail_bytes: 0,
            cut_lines: 0,
        })
    }

    fn line(&mut self, l: &str) {
        use std::io::Write;
        let n = l.len() as u64 + 1;
        if !self.full && self.written + n <= self.head {
            self.written += n;
            let _ = writeln!(self.file, "{l}");
            return;
        }
        self.full = true;
        self.tail.push_back(l.to_owned());
        self.tail_bytes += n;
        while self.tail_bytes > self.tail_max
            && let Some(old) = self.tail.pop_front()
        {
            self.tail_bytes -= old.len() as u64 + 1;
            self.cut_lines += 1;
        }
    }

    fn finish(&mut self) {
        use std::io::Write;
        if self.cut_lines > 0 {
            let _ = writeln!(
                self.file,
                "[abo: {} lines of this transcript cut here]",
                self.cut_lines
            );
        }
        for l in self.tail.drain(..) {
            let _ = writeln!(self.file, "{l}");
        }
        self.tail_bytes = 0;
    }
}

/// Runs a process whose stdout is read line by line (an agent CLI's JSON stream). Every line is
/// handed to `on_line` and appended to `transcript`; stderr goes to `spec.log`. The watchdog kills
/// the process group after `silence` without a line, at `spec.timeout`, or `grace` after
/// `on_line` said [`Line::Final`]; and as soon as `stop` ends (the egress proxy refused a host),
/// whatever the process is doing. While `held` says `true` (abo is answering the agent's `check`),
/// silence is not counted; it counts afresh after.
#[allow(
    clippy::too_many_arguments,
    reason = "a stream's watchdog: its limits, its stop and its hold, all needed"
)]
pub async fn run_streaming(
    spec: &Spec,
    groups: &Groups,
    silence: Duration,
    grace: Duration,
    transcript: &Path,
    stop: impl std::future::Future<Output = String>,
    mut held: Option<tokio::sync::watch::Receiver<bool>>,
    mut on_line: impl FnMut(&str) -> Line,
) -> std::io::Result<Streamed> {
    let mut cmd = command(spec)?;
    cmd.stdout(Stdio::piped());
    match &spec.log {
        Some(path) => {
            cmd.stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    let mut transcript_file = Transcript::open(transcript)?;
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    groups.insert(pgid);
    let Some(stdout) = child.stdout.take() else {
        return Err(std::io::Error::other("no stdout"));
    };
    // A line is kept up to MAX_LINE: an agent printing without newlines cannot grow abo.
    let mut lines = BoundedLines::new(tokio::io::BufReader::new(stdout), MAX_LINE);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut final_at: Option<tokio::time::Instant> = None;
    let (mut silent, mut timed_out, mut stopped_after_result) = (false, false, false);
    let mut stopped = false;
    let mut stopped_for = None;
    tokio::pin!(stop);
    loop {
        // Before the result, silence is watched; after it, only the grace period.
        let holding = held.as_ref().is_some_and(|h| *h.borrow());
        let mut wake = match final_at {
            Some(f) => f + grace,
            // A year: no silence while abo answers a check (the deadline still holds).
            None if holding => tokio::time::Instant::now() + Duration::from_secs(365 * 86_400),
            None => tokio::time::Instant::now() + silence,
        };
        if let Some(d) = deadline {
            wake = wake.min(d);
        }

        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => {
                    transcript_file.line(&l);
                    match on_line(&l) {
                        Line::Final if final_at.is_none() => final_at = Some(tokio::time::Instant::now()),
                        Line::Stop => {
                            stopped = true;
                            break;
                        }
                        _ => {}
                    }
                }
                // End of output: the process closed stdout (it exits, or left children holding nothing).
                Ok(None) | Err(_) => break,
            },
            changed = async {
                match held.as_mut() {
                    Some(h) => h.changed().await,
                    None => std::future::pending().await,
                }
            }, if held.is_some() => {
                // The hold began or ended: the silence is counted again from now.
                if changed.is_err() {
                    held = None;
                }
            }
            why = &mut stop, if stopped_for.is_none() => {
                stopped_for = Some(why);
                stopped = true;
                break;
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if final_at.is_some_and(|f| now >= f + grace) {
                    stopped_after_result = true;
                } else if deadline.is_some_and(|d| now >= d) {
                    timed_out = true;
                } else {
                    silent = true;
                }
                break;
            }
        }
    }
    let exited = if silent || timed_out || stopped_after_result || stopped {
        None
    } else {
        // Output ended; the process should exit now. Give it the grace period.
        tokio::time::timeout(grace, child.wait()).await.ok()
    };
    kill_group(pgid);
    release(spec);
    transcript_file.finish();
    let was_tracked = groups.0.lock().map(|g| g.contains(&pgid)).unwrap_or(true);
    groups.remove(pgid);
    let status = match exited {
        Some(s) => Some(s?),
        None => {
            if !silent && !timed_out && !stopped {
                stopped_after_result = final_at.is_some() || stopped_after_result;
            }
            child.wait().await.ok()
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let killed_by_us = silent || timed_out || stopped_after_result || stopped;
    Ok(Streamed {
        outcome: Outcome {
            exit: if killed_by_us {
                None
            } else {
                status.and_then(|s| s.code())
            },
            signal: status.and_then(|s| s.signal()),
            timed_out: timed_out || silent,
            killed: !was_tracked,
            duration: started.elapsed(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        },
        silent,
        stopped_after_result,
        stopped,
        stopped_for,
    })
}

/// The executable a command names: itself when it has a slash, else the first match on PATH.
pub fn find_executable(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.is_file()
            && p.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::{Groups, Spec, Transcript, run};

    /// A process printing without end (git's `diff` of a gigabyte file an agent wrote) is stopped
    /// once its stdout passes the bound, and the run is an error; the control: without the bound,
    /// all of it is held in memory.
    #[tokio::test]
    async fn stdout_past_its_bound_stops_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::shell("head -c 8000000 /dev/zero", dir.path());
        let all = run(&spec, &Groups::default()).await.unwrap();
        assert_eq!(all.stdout.len(), 8_000_000);
        spec.max_stdout = Some(1 << 20);
        let err = run(&spec, &Groups::default()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "its output passed 1 MiB, so it was stopped"
        );
        // An endless one ends too: the bound stops it, not its end.
        let endless = Spec {
            max_stdout: Some(1 << 20),
            ..Spec::shell("yes", dir.path())
        };
        assert!(run(&endless, &Groups::default()).await.is_err());
    }

    /// An agent printing without end: the transcript keeps its first lines and its last ones, in
    /// order, says how many were cut, and stays within its bounds.
    #[test]
    fn a_transcript_past_its_bound_keeps_its_head_and_tail_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("transcript.jsonl");
        let mut t = Transcript::bounded(&p, 100, 50).unwrap();
        for i in 0..1000 {
            t.line(&format!("line {i:04}"));
        }
        t.finish();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // 10 bytes a line (with its newline): ten in the head, five in the tail.
        assert_eq!(
            lines[..10],
            (0..10).map(|i| format!("line {i:04}")).collect::<Vec<_>>()
        );
        assert_eq!(lines[10], "[abo: 985 lines of this transcript cut here]");
        assert_eq!(
            lines[11..],
            (995..1000)
                .map(|i| format!("line {i:04}"))
                .collect::<Vec<_>>()
        );
        // The control: under the bound nothing is cut.
        let q = dir.path().join("short.jsonl");
        let mut t = Transcript::bounded(&q, 100, 50).unwrap();
        t.line("a");
        t.line("b");
        t.finish();
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "a\nb\n");
    }
}
