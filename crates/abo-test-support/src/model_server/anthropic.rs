//! The Anthropic Messages API as a scripted conversation: `POST /v1/messages`, streamed (`stream:
//! true`: `message_start`, `ping`, `content_block_start`/`_delta`/`_stop` for text and `tool_use`
//! blocks with `input_json_delta`, `message_delta` with the stop reason and usage, `message_stop`)
//! or not, `POST /v1/messages/count_tokens`, and `HEAD /api/hello`, which Claude Code sends first.
//!
//! The n-th reply is the script's n-th turn, n being the number of tool calls of this server the
//! conversation already holds with their results. A tool input may name `{cwd}`: the text of the
//! first tool call's result (the script starts with `pwd` for it, [`Script::in_worktree`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use super::{Reply, Request};

/// One content block of an assistant turn.
#[derive(Clone, Debug)]
pub enum Block {
    Text(String),
    ToolUse { name: String, input: Value },
}

impl Block {
    pub fn tool(name: &str, input: Value) -> Self {
        Self::ToolUse {
            name: name.to_owned(),
            input,
        }
    }
}

/// What every reply reports using, as the API counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }
}

/// How the provider fails, on demand.
#[derive(Clone, Debug)]
pub enum Fault {
    /// `429 rate_limit_error`, with `retry-after` (seconds) and the
    /// `anthropic-ratelimit-{requests,tokens}-reset` times.
    RateLimited { retry_after_secs: u64 },
    /// `529 overloaded_error`.
    Overloaded,
    /// A subscription's usage limit: `429` with `anthropic-ratelimit-unified-status: rejected`
    /// and `anthropic-ratelimit-unified-reset` (Unix seconds), which Claude Code reads when it is
    /// logged in with a subscription (`CLAUDE_CODE_OAUTH_TOKEN`).
    UsageLimit { resets_at: i64 },
}

/// A scripted conversation.
#[derive(Debug)]
pub struct Script {
    /// The assistant's turns, in order; the last one should be text only.
    pub turns: Vec<Vec<Block>>,
    /// What each reply reports using.
    pub usage: Usage,
    /// Every message request fails so, while `fault_times` lasts (`None`: always).
    pub fault: Option<Fault>,
    pub fault_times: Option<u32>,
    faulted: AtomicU32,
}

/// The id of the tool call in block `b` of turn `t`.
fn tool_id(t: usize, b: usize) -> String {
    format!("toolu_abo_{t:02}_{b:02}")
}

impl Script {
    pub fn new(turns: Vec<Vec<Block>>) -> Self {
        Self {
            turns,
            usage: Usage {
                input: 120,
                output: 45,
                cache_read: 2_000,
                cache_write: 300,
            },
            fault: None,
            fault_times: None,
            faulted: AtomicU32::new(0),
        }
    }

    /// A conversation in the agent's working directory: first `pwd` (its result is `{cwd}`),
    /// then `turns`.
    pub fn in_worktree(turns: Vec<Vec<Block>>) -> Self {
        let mut all = vec![vec![Block::tool(
            "Bash",
            json!({"command": "pwd", "description": "Print the working directory"}),
        )]];
        all.extend(turns);
        Self::new(all)
    }

    pub fn failing(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The usage of a whole conversation of `replies` replies.
    pub fn usage_of(&self, replies: u64) -> Usage {
        let u = self.usage;
        Usage {
            input: u.input * replies,
            output: u.output * replies,
            cache_read: u.cache_read * replies,
            cache_write: u.cache_write * replies,
        }
    }

    pub fn reply(&self, req: &Request) -> Reply {
        match (req.method.as_str(), req.path.as_str()) {
            ("HEAD" | "GET", "/api/hello") => Reply::json(200, json!({})),
            ("POST", "/v1/messages/count_tokens") => Reply::json(
                200,
                json!({"input_tokens": u64::try_from(req.raw.len() / 4).unwrap_or(0)}),
            ),
            ("POST", "/v1/messages") => self.message(req),
            _ => error(
                404,
                "not_found_error",
                &format!("{} {}", req.method, req.path),
            ),
        }
    }

    fn message(&self, req: &Request) -> Reply {
        if let Some(f) = &self.fault
            && self
                .fault_times
                .is_none_or(|n| self.faulted.fetch_add(1, Ordering::SeqCst) < n)
        {
            return fault(f);
        }
        let conv = Conversation::read(&req.body);
        let t = conv.turns_taken.min(self.turns.len().saturating_sub(1));
        // The first line of the first result: what `pwd` printed.
        let cwd = conv
            .results
            .get(&tool_id(0, 0))
            .and_then(|r| r.lines().next())
            .unwrap_or_default()
            .trim();
        let blocks: Vec<Block> = self.turns[t]
            .iter()
            .map(|b| match b {
                Block::ToolUse { name, input } => Block::ToolUse {
                    name: name.clone(),
                    input: substitute(input, cwd),
                },
                other => other.clone(),
            })
            .collect();
        let model = req.body["model"].as_str().unwrap_or("claude-sonnet-4-5");
        let stop = if blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
            "tool_use"
        } else {
            "end_turn"
        };
        let u = self.usage;
        let usage = json!({
            "input_tokens": u.input, "output_tokens": u.output,
            "cache_read_input_tokens": u.cache_read, "cache_creation_input_tokens": u.cache_write,
        });
        let id = format!("msg_abo_{t:02}");
        if req.body["stream"] != true {
            let content: Vec<Value> = blocks
                .iter()
                .enumerate()
                .map(|(b, block)| match block {
                    Block::Text(text) => json!({"type": "text", "text": text}),
                    Block::ToolUse { name, input } => {
                        json!({"type": "tool_use", "id": tool_id(t, b), "name": name, "input": input})
                    }
                })
                .collect();
            return Reply::json(
                200,
                json!({
                    "id": id, "type": "message", "role": "assistant", "model": model,
                    "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage,
                }),
            );
        }
        let mut ev: Vec<(String, Value)> = Vec::new();
        let mut push = |name: &str, data: Value| ev.push((name.to_owned(), data));
        push(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": u.input, "output_tokens": 1,
                          "cache_read_input_tokens": u.cache_read,
                          "cache_creation_input_tokens": u.cache_write},
            }}),
        );
        push("ping", json!({"type": "ping"}));
        for (b, block) in blocks.iter().enumerate() {
            let (start, deltas) = match block {
                Block::Text(text) => (
                    json!({"type": "text", "text": ""}),
                    halves(text)
                        .map(|p| json!({"type": "text_delta", "text": p}))
                        .to_vec(),
                ),
                Block::ToolUse { name, input } => (
                    json!({"type": "tool_use", "id": tool_id(t, b), "name": name, "input": {}}),
                    halves(&input.to_string())
                        .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                        .to_vec(),
                ),
            };
            push(
                "content_block_start",
                json!({"type": "content_block_start", "index": b, "content_block": start}),
            );
            for d in deltas {
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": b, "delta": d}),
                );
            }
            push(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": b}),
            );
        }
        push(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage}),
        );
        push("message_stop", json!({"type": "message_stop"}));
        Reply::events(ev).header("request-id", format!("req_abo_{t:02}"))
    }
}

impl super::Handler for Script {
    fn reply(&self, req: &Request) -> Reply {
        Script::reply(self, req)
    }
}

/// `input` with `{cwd}` in its strings replaced by `cwd`.
fn substitute(input: &Value, cwd: &str) -> Value {
    match input {
        Value::String(s) => Value::String(s.replace("{cwd}", cwd)),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, cwd)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), substitute(v, cwd)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `text` in two pieces, split at a character boundary (a stream sends a block in parts).
fn halves(text: &str) -> [String; 2] {
    let mid = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(text.chars().count() / 2)
        .unwrap_or(text.len());
    [text[..mid].to_owned(), text[mid..].to_owned()]
}

fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_abo_error"}),
    )
    .header("request-id", "req_abo_error")
}

fn fault(f: &Fault) -> Reply {
    match f {
        Fault::RateLimited { retry_after_secs } => {
            let reset = "2030-01-01T00:00:00Z";
            error(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute",
            )
            .header("retry-after", retry_after_secs.to_string())
            .header("anthropic-ratelimit-requests-limit", "50")
            .header("anthropic-ratelimit-requests-remaining", "0")
            .header("anthropic-ratelimit-requests-reset", reset)
            .header("anthropic-ratelimit-tokens-reset", reset)
        }
        Fault::Overloaded => error(529, "overloaded_error", "Overloaded"),
        Fault::UsageLimit { resets_at } => error(429, "rate_limit_error", "usage limit reached")
            .header("anthropic-ratelimit-unified-status", "rejected")
            .header("anthropic-ratelimit-unified-reset", resets_at.to_string())
            .header(
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
    }
}

/// What a request's messages say of the conversation so far.
#[derive(Debug, Default)]
pub struct Conversation {
    /// Assistant turns that called this server's tools.
    pub turns_taken: usize,
    /// The text of each tool result, by the id of the call it answers.
    pub results: HashMap<String, String>,
    /// The results the agent marked `is_error`, by id.
    pub errors: Vec<String>,
}

impl Conversation {
    pub fn read(body: &Value) -> Self {
        let mut c = Self::default();
        for m in body["messages"].as_array().into_iter().flatten() {
            let blocks = m["content"].as_array().cloned().unwrap_or_default();
            if m["role"] == "assistant"
                && blocks.iter().any(|b| {
                    b["type"] == "tool_use"
                        && b["id"]
                            .as_str()
                            .is_some_and(|i| i.starts_with("toolu_abo_"))
                })
            {
                c.turns_taken += 1;
            }
            for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                let id = b["tool_use_id"].as_str().unwrap_or_default().to_owned();
                let text = match &b["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => {
                        parts.iter().filter_map(|p| p["text"].as_str()).collect()
                    }
                    _ => String::new(),
                };
                if b["is_error"] == true {
                    c.errors.push(id.clone());
                }
                c.results.insert(id, text);
            }
        }
        c
    }
}

/// The scripted change every real-CLI test asks for: `Write` a new file, `Read` then `Edit` an
/// existing one, delete one with `Bash` `rm`, run a command with `Bash`, then a final message.
/// Expects `edit-me.txt` (containing `old line`) and `delete-me.txt` in the worktree.
pub fn change_script() -> Script {
    Script::in_worktree(vec![
        vec![Block::tool(
            "Write",
            json!({"file_path": "{cwd}/created.txt", "content": "written by the scripted model\n"}),
        )],
        vec![Block::tool(
            "Read",
            json!({"file_path": "{cwd}/edit-me.txt"}),
        )],
        vec![Block::tool(
            "Edit",
            json!({"file_path": "{cwd}/edit-me.txt", "old_string": "old line", "new_string": "new line"}),
        )],
        vec![Block::tool(
            "Bash",
            json!({"command": "rm delete-me.txt", "description": "Delete a file"}),
        )],
        vec![Block::tool(
            "Bash",
            json!({"command": "echo ran by bash > ran.txt && cat ran.txt", "description": "Run a command"}),
        )],
        vec![Block::Text(
            "Created, edited and deleted the files as asked.".into(),
        )],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: Value) -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/messages".into(),
            query: Some("beta=true".into()),
            headers: Vec::new(),
            raw: body.to_string(),
            body,
        }
    }

    #[test]
    fn follows_the_conversation_through_tool_results() {
        let s = change_script();
        let first = post(json!({"model": "m", "messages": [{"role": "user", "content": "go"}]}));
        let Reply::Json { body, .. } = s.reply(&first) else {
            panic!("not streamed: a JSON reply")
        };
        assert_eq!(body["content"][0]["input"]["command"], "pwd");
        let second = post(json!({"model": "m", "stream": true, "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_abo_00_00", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_abo_00_00", "content": "/w/t\n"}]},
        ]}));
        let Reply::Events { events, .. } = s.reply(&second) else {
            panic!("streamed: events")
        };
        let json: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        let input: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(input["file_path"], "/w/t/created.txt");
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[6].1["delta"]["stop_reason"], "tool_use");
        let count = Request {
            path: "/v1/messages/count_tokens".into(),
            ..second.clone()
        };
        let Reply::Json { status, body, .. } = s.reply(&count) else {
            panic!("count_tokens: JSON")
        };
        assert_eq!(status, 200);
        assert!(body["input_tokens"].as_u64().is_some_and(|n| n > 0));
        let Reply::Json { status, body, .. } = s.reply(&Request {
            path: "/v1/models".into(),
            method: "GET".into(),
            ..second
        }) else {
            panic!("unknown path: JSON")
        };
        assert_eq!(
            (status, &body["error"]["type"]),
            (404, &json!("not_found_error"))
        );
    }

    #[test]
    fn fails_on_demand_then_recovers() {
        let mut s = change_script().failing(Fault::RateLimited {
            retry_after_secs: 2,
        });
        s.fault_times = Some(1);
        let req = post(json!({"model": "m", "messages": []}));
        let Reply::Json {
            status, headers, ..
        } = s.reply(&req)
        else {
            panic!("a 429 is JSON")
        };
        assert_eq!(status, 429);
        assert!(headers.contains(&("retry-after".into(), "2".into())));
        assert!(matches!(s.reply(&req), Reply::Json { status: 200, .. }));
        let usage = change_script()
            .failing(Fault::UsageLimit { resets_at: 7 })
            .reply(&req);
        let Reply::Json { headers, .. } = usage else {
            panic!("a usage limit is JSON")
        };
        assert!(headers.contains(&("anthropic-ratelimit-unified-reset".into(), "7".into())));
    }
}
