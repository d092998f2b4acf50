//! The in-attempt `check` tool's door: the agent's MCP server (`abo __mcp-check`, run by the
//! agent CLI inside the attempt's sandbox) asks the attempt's own egress proxy for
//! `POST http://abo-check.invalid/check` with the attempt's token in [`TOKEN_HEADER`]. The proxy
//! answers that host itself (it is never resolved or forwarded), and only with that token: each
//! proxy knows its own attempt's token and nothing else, so an agent reaches no other attempt,
//! run or key. What runs is fixed by abo (the task's gates and the policy, on the attempt's
//! worktree); the request carries no parameters.
//!
//! The token is made from `/dev/urandom` per attempt and handed to the MCP server in its
//! environment only ([`TOKEN_ENV`]); it is redacted from the agent's log and transcript.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use abo_core::event::{CheckOutcome, CheckRecord};
use tokio::sync::{mpsc, oneshot};

/// The reserved host the proxy answers itself (`.invalid` never resolves).
pub const HOST: &str = "abo-check.invalid";
/// The path of the one request.
pub const PATH: &str = "/check";
/// The header that carries the attempt's token.
pub const TOKEN_HEADER: &str = "x-abo-check-token";
/// The MCP server's variables: the token, and the proxy to reach (`http://127.0.0.1:PORT`).
pub const TOKEN_ENV: &str = "ABO_CHECK_TOKEN";
pub const PROXY_ENV: &str = "ABO_CHECK_PROXY";
/// The hidden subcommand that is the agent's MCP server.
pub const SERVER_ARG: &str = "__mcp-check";

/// A fresh random token (32 bytes, hex).
pub fn token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Equal in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One call, sent from the proxy to the attempt, answered with the check's JSON.
pub struct Call {
    pub reply: oneshot::Sender<serde_json::Value>,
}

/// What the proxy holds: the attempt's token and where calls go.
#[derive(Clone)]
pub struct Door {
    token: Arc<str>,
    calls: mpsc::Sender<Call>,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door").field("token", &"<held>").finish()
    }
}

/// How the proxy answered a request for [`HOST`].
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 403: no token, or another one.
    Refused,
    /// 404: another path or method.
    NotFound,
    /// 503: the attempt is over.
    Gone,
    Checked(serde_json::Value),
}

impl Door {
    /// A door with `token`, and the receiving end of its calls.
    pub fn new(token: String) -> (Self, mpsc::Receiver<Call>) {
        let (tx, rx) = mpsc::channel(1);
        (
            Self {
                token: token.into(),
                calls: tx,
            },
            rx,
        )
    }

    /// A request for [`HOST`]: `POST /check` with the token runs a check.
    pub async fn answer(&self, method: &str, path: &str, token: Option<&[u8]>) -> Answer {
        if !token.is_some_and(|t| same(t, self.token.as_bytes())) {
            return Answer::Refused;
        }
        if method != "POST" || path != PATH {
            return Answer::NotFound;
        }
        let (reply, rx) = oneshot::channel();
        if self.calls.send(Call { reply }).await.is_err() {
            return Answer::Gone;
        }
        rx.await.map_or(Answer::Gone, Answer::Checked)
    }
}

/// The calls of one attempt: how many were made, what each found.
#[derive(Debug)]
pub struct Tally {
    pub max: u32,
    made: AtomicU32,
    pub records: std::sync::Mutex<Vec<CheckRecord>>,
}

impl Tally {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            made: AtomicU32::new(0),
            records: Default::default(),
        }
    }

    /// The next call's number, or `Err(n)` when it is past `max`.
    pub fn next(&self) -> Result<u32, u32> {
        let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.max { Err(n) } else { Ok(n) }
    }

    pub fn push(&self, r: CheckRecord) {
        if let Ok(mut v) = self.records.lock() {
            v.push(r);
        }
    }

    pub fn take(&self) -> Vec<CheckRecord> {
        self.records
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// What a refused call (past the limit) answers and records.
pub fn refused(n: u32, max: u32) -> (CheckRecord, serde_json::Value) {
    let message = format!(
        "check refused: this attempt may call check at most {max} times (mcp.max_checks); \
         finish, and abo runs the gates and the policy itself"
    );
    (
        CheckRecord {
            n,
            outcome: CheckOutcome::Refused,
            failed_gates: Vec::new(),
            deny: Vec::new(),
            require_approval: Vec::new(),
            duration_ms: 0,
        },
        serde_json::json!({ "error": message }),
    )
}

/// What the agent is told to start: the MCP server's command, arguments and environment.
#[derive(Clone, Debug)]
pub struct Server {
    pub command: String,
    pub env: Vec<(String, String)>,
}

impl Server {
    /// Claude Code's `--mcp-config` JSON.
    pub fn claude_config(&self) -> serde_json::Value {
        let env: serde_json::Map<String, serde_json::Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "mcpServers": {
                "abo": { "type": "stdio", "command": self.command, "args": [SERVER_ARG], "env": env }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_door_opens_to_its_own_token_only() {
        let (door, mut rx) = Door::new("a".repeat(64));
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let _ = c.reply.send(serde_json::json!({"verdict": "pass"}));
            }
        });
        assert_eq!(door.answer("POST", PATH, None).await, Answer::Refused);
        assert_eq!(
            door.answer("POST", PATH, Some("b".repeat(64).as_bytes()))
                .await,
            Answer::Refused
        );
        assert_eq!(
            door.answer("POST", PATH, Some(b"aaaa")).await,
            Answer::Refused
        );
        assert_eq!(
            door.answer("GET", "/other", Some("a".repeat(64).as_bytes()))
                .await,
            Answer::NotFound
        );
        assert_eq!(
            door.answer("POST", PATH, Some("a".repeat(64).as_bytes()))
                .await,
            Answer::Checked(serde_json::json!({"verdict": "pass"}))
        );
    }

    #[test]
    fn calls_past_the_limit_are_refused() {
        let t = Tally::new(2);
        assert_eq!(t.next(), Ok(1));
        assert_eq!(t.next(), Ok(2));
        assert_eq!(t.next(), Err(3));
        let (rec, answer) = refused(3, 2);
        assert_eq!(rec.outcome, CheckOutcome::Refused);
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("at most 2 times")
        );
    }

    #[test]
    fn tokens_are_fresh() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
