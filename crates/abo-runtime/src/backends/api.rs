//! The model APIs abo calls itself: Anthropic Messages and OpenAI-compatible Chat Completions.
//! Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff
//! that honours `Retry-After`; what the provider says in an error is kept for the attempt's reason.

use std::time::Duration;

use serde_json::{Value, json};

use abo_core::config::ApiKind;
use abo_core::event::Usage;

/// One request's settings.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub api: ApiKind,
    pub base_url: &'a str,
    pub model: &'a str,
    pub key: Option<&'a str>,
    pub max_tokens: u32,
    pub system: &'a str,
    pub prompt: &'a str,
    pub timeout: Duration,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub text: String,
    pub usage: Usage,
    pub model: Option<String>,
    /// The response body as received.
    pub raw: String,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Worth trying again: 429, 408, 5xx, a timeout or a dropped connection.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Not worth trying again: a 4xx such as a bad key, or a reply that is not the documented shape.
    #[error("{message}")]
    Permanent { message: String },
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

fn endpoint(api: ApiKind, base: &str) -> String {
    let base = base.trim_end_matches('/');
    match api {
        ApiKind::Anthropic if base.ends_with("/v1") => format!("{base}/messages"),
        ApiKind::Anthropic => format!("{base}/v1/messages"),
        ApiKind::Openai => format!("{base}/chat/completions"),
    }
}

fn body(r: &Request<'_>) -> Value {
    match r.api {
        ApiKind::Anthropic => json!({
            "model": r.model,
            "max_tokens": r.max_tokens,
            "system": r.system,
            "messages": [{ "role": "user", "content": r.prompt }],
        }),
        ApiKind::Openai => json!({
            "model": r.model,
            "max_tokens": r.max_tokens,
            "messages": [
                { "role": "system", "content": r.system },
                { "role": "user", "content": r.prompt },
            ],
        }),
    }
}

/// One request, no retries.
pub async fn call(client: &reqwest::Client, r: &Request<'_>) -> Result<Reply, ApiError> {
    let mut req = client
        .post(endpoint(r.api, r.base_url))
        .timeout(r.timeout)
        .json(&body(r));
    match (r.api, r.key) {
        (ApiKind::Anthropic, key) => {
            req = req.header("anthropic-version", "2023-06-01");
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
        }
        (ApiKind::Openai, Some(k)) => req = req.bearer_auth(k),
        (ApiKind::Openai, None) => {}
    }
    let resp = req.send().await.map_err(|e| ApiError::Transient {
        message: if e.is_timeout() {
            "the request timed out".into()
        } else {
            format!("the request failed: {}", without_url(&e))
        },
        retry_after: None,
    })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let raw = resp.text().await.map_err(|e| ApiError::Transient {
        message: format!("reading the reply failed: {}", without_url(&e)),
        retry_after: None,
    })?;
    if !status.is_success() {
        let detail = error_message(&raw)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
        let message = format!("HTTP {}: {detail}", status.as_u16());
        let code = status.as_u16();
        return Err(if code == 429 || code == 408 || code >= 500 {
            ApiError::Transient {
                message,
                retry_after,
            }
        } else {
            ApiError::Permanent { message }
        });
    }
    parse(r.api, &raw).map(|(text, usage, model)| Reply {
        text,
        usage,
        model,
        raw,
    })
}

/// reqwest's messages name the URL, which may carry a key in its query: leave it out.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}

/// `Retry-After: 7` (seconds) or an HTTP date (then a conservative guess: dates need the clock).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    match v.parse::<f64>() {
        Ok(s) if s >= 0.0 => Some(Duration::from_millis((s * 1000.0) as u64)),
        _ => chrono::DateTime::parse_from_rfc2822(v)
            .ok()
            .map(|_| Duration::from_secs(30)),
    }
}

fn error_message(raw: &str) -> Option<String> {
    let v: Value = serde_json::from_str(raw).ok()?;
    // Anthropic: {"type":"error","error":{"type":"...","message":"..."}}; OpenAI: {"error":{"message":"..."}}.
    let e = v.get("error")?;
    e.get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| e.as_str().map(str::to_owned))
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The reply's text, usage and model, per each API's documented response.
pub fn parse(api: ApiKind, raw: &str) -> Result<(String, Usage, Option<String>), ApiError> {
    let malformed = |why: &str| ApiError::Permanent {
        message: format!("malformed reply: {why}"),
    };
    let v: Value = serde_json::from_str(raw).map_err(|e| malformed(&format!("not JSON ({e})")))?;
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    match api {
        ApiKind::Anthropic => {
            let content = v
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("no `content`"))?;
            let text: String = content
                .iter()
                .filter(|c| c["type"] == "text")
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let us = v.get("usage").ok_or_else(|| malformed("no `usage`"))?;
            let usage = Usage {
                input_tokens: u(us, "input_tokens"),
                output_tokens: u(us, "output_tokens"),
                cache_read_tokens: u(us, "cache_read_input_tokens"),
                cache_write_tokens: u(us, "cache_creation_input_tokens"),
                unsplit_tokens: 0,
            };
            Ok((text, usage, model))
        }
        ApiKind::Openai => {
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .ok_or_else(|| malformed("no `choices[0].message.content`"))?
                .to_owned();
            let us = &v["usage"];
            // cached_tokens are part of prompt_tokens.
            let prompt = u(us, "prompt_tokens");
            let cached = us["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0)
                .min(prompt);
            let usage = Usage {
                input_tokens: prompt - cached,
                output_tokens: u(us, "completion_tokens"),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
                unsplit_tokens: 0,
            };
            Ok((text, usage, model))
        }
    }
}

/// How long to wait before try `n` (1-based) after a transient failure.
pub fn backoff(n: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    if let Some(d) = retry_after {
        return d.min(Duration::from_secs(120));
    }
    let base = 1000.0 * 2f64.powi(i32::try_from(n.saturating_sub(1)).unwrap_or(10).min(10));
    Duration::from_millis((base.min(30_000.0) * (0.5 + jitter / 2.0)) as u64)
}

/// Calls with retries. Returns the reply or the last error, and every failed try's message.
pub async fn call_with_retries(
    client: &reqwest::Client,
    r: &Request<'_>,
    retries: u32,
) -> (Result<Reply, ApiError>, Vec<String>) {
    use std::hash::{BuildHasher, RandomState};
    let mut failures = Vec::new();
    let mut n = 0;
    loop {
        n += 1;
        match call(client, r).await {
            Ok(reply) => return (Ok(reply), failures),
            Err(e @ ApiError::Permanent { .. }) => return (Err(e), failures),
            Err(ApiError::Transient {
                message,
                retry_after,
            }) => {
                failures.push(message.clone());
                if n > retries {
                    return (
                        Err(ApiError::Transient {
                            message,
                            retry_after,
                        }),
                        failures,
                    );
                }
                let jitter = (RandomState::new().hash_one(n) % 1000) as f64 / 1000.0;
                tokio::time::sleep(backoff(n, retry_after, jitter)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn parses_the_documented_replies() {
        let anthropic = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"```diff\n...\n```"}],"stop_reason":"end_turn","usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":10,"cache_read_input_tokens":1000}}"#;
        assert_eq!(
            parse(ApiKind::Anthropic, anthropic),
            Ok((
                "```diff\n...\n```".to_owned(),
                Usage {
                    input_tokens: 2095,
                    output_tokens: 503,
                    cache_read_tokens: 1000,
                    cache_write_tokens: 10,
                    unsplit_tokens: 0
                },
                Some("claude-sonnet-4-5-20250929".to_owned())
            ))
        );
        let openai = r#"{"id":"c1","object":"chat.completion","model":"gpt-4.1-2025-04-14","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":30,"total_tokens":1230,"prompt_tokens_details":{"cached_tokens":1024}}}"#;
        let (text, usage, _) = parse(ApiKind::Openai, openai).unwrap();
        assert_eq!((text.as_str(), usage.total()), ("hi", 1230));
        assert_eq!((usage.input_tokens, usage.cache_read_tokens), (176, 1024));
        assert_eq!(
            parse(ApiKind::Openai, "<html>bad gateway</html>")
                .unwrap_err()
                .to_string()
                .split(" (")
                .next(),
            Some("malformed reply: not JSON")
        );
        assert_eq!(
            parse(ApiKind::Openai, r#"{"choices":[]}"#)
                .unwrap_err()
                .to_string(),
            "malformed reply: no `choices[0].message.content`"
        );
    }

    #[test]
    fn retry_after_and_backoff() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            backoff(3, Some(Duration::from_secs(2)), 0.9),
            Duration::from_secs(2)
        );
        assert_eq!(backoff(1, None, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(3, None, 0.0), Duration::from_millis(2000));
        assert_eq!(backoff(20, None, 1.0), Duration::from_millis(30_000));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint(ApiKind::Anthropic, "https://api.anthropic.com"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint(ApiKind::Anthropic, "http://127.0.0.1:9/v1/"),
            "http://127.0.0.1:9/v1/messages"
        );
        assert_eq!(
            endpoint(ApiKind::Openai, "http://127.0.0.1:11434/v1"),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
    }
}
