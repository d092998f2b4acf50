//! The model APIs abo calls itself: Anthropic Messages and OpenAI-compatible Chat Completions.
//! Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff
//! that honours `Retry-After`; what the provider says in an error is kept for the attempt's reason.
//! A 429 whose reset is further than [`HOLD_AFTER`], or that names a quota or usage limit with its
//! reset, is not retried: it holds the backend until the reset.

use std::time::Duration;

use serde_json::{Value, json};

use abo_core::config::ApiKind;
use abo_core::event::Usage;
use abo_core::ids::Timestamp;

use super::parse::Reset;
use crate::context::Clock;

/// A 429 that resets later than this holds the backend instead of being retried.
pub const HOLD_AFTER: Duration = Duration::from_secs(60);

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
    /// The sampling seed, where the API takes one (OpenAI-compatible servers; Anthropic's has
    /// none): an attempt's number, so that an attempt asks the same way when run again and the
    /// candidates of a task (`proposals:`, `hedge:`) on one backend do not all ask alike.
    pub seed: Option<u32>,
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
    /// A usage or rate limit that resets later than a retry is worth waiting for (or a quota):
    /// nothing is worth trying on this backend until `reset`.
    #[error("{message}")]
    Held { message: String, reset: Reset },
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
        ApiKind::Openai => {
            let mut b = json!({
                "model": r.model,
                "max_tokens": r.max_tokens,
                "messages": [
                    { "role": "system", "content": r.system },
                    { "role": "user", "content": r.prompt },
                ],
            });
            if let Some(seed) = r.seed {
                b["seed"] = json!(seed);
            }
            b
        }
    }
}

/// One request, no retries. `clock` tells how far a reset is.
pub async fn call(
    client: &reqwest::Client,
    r: &Request<'_>,
    clock: &dyn Clock,
) -> Result<Reply, ApiError> {
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
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reset = if status.as_u16() == 429 {
        limit_reset(header)
    } else {
        header("retry-after").as_deref().and_then(parse_retry_after)
    };
    let raw = resp.text().await.map_err(|e| ApiError::Transient {
        message: format!("reading the reply failed: {}", without_url(&e)),
        retry_after: None,
    })?;
    if !status.is_success() {
        let detail = error_message(&raw)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
        let message = format!("HTTP {}: {detail}", status.as_u16());
        let code = status.as_u16();
        let now = clock.now();
        if code == 429
            && let Some(reset) = &reset
            && (reset.after(now) > HOLD_AFTER || says_quota(&raw))
        {
            return Err(ApiError::Held {
                message,
                reset: reset.clone(),
            });
        }
        return Err(if code == 429 || code == 408 || code >= 500 {
            ApiError::Transient {
                message,
                retry_after: reset.map(|r| r.after(now)),
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

/// `Retry-After: 7` (seconds) or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Reset> {
    let v = v.trim();
    match v.parse::<f64>() {
        Ok(s) if s >= 0.0 => Some(Reset::In(Duration::from_millis((s * 1000.0) as u64))),
        _ => chrono::DateTime::parse_from_rfc2822(v)
            .ok()
            .map(|d| Reset::At(Timestamp(d.timestamp_millis()))),
    }
}

/// When a 429's limit resets: `Retry-After` when given; else the latest reset of the limits the
/// reply says are spent (`*-remaining: 0`), or of all it names: Anthropic's
/// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset` (RFC 3339 instants),
/// OpenAI's `x-ratelimit-reset-{requests,tokens}` (durations such as `6m0s`, `1s`, `20ms`).
pub fn limit_reset(header: impl Fn(&str) -> Option<String>) -> Option<Reset> {
    if let Some(r) = header("retry-after").as_deref().and_then(parse_retry_after) {
        return Some(r);
    }
    let mut found: Vec<(bool, Reset)> = Vec::new();
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let spent = |k: String| header(&k).is_some_and(|v| v.trim() == "0");
        if let Some(t) = header(&format!("anthropic-ratelimit-{kind}-reset"))
            .and_then(|v| Timestamp::parse_rfc3339(v.trim()))
        {
            found.push((
                spent(format!("anthropic-ratelimit-{kind}-remaining")),
                Reset::At(t),
            ));
        }
        if let Some(d) =
            header(&format!("x-ratelimit-reset-{kind}")).and_then(|v| go_duration(v.trim()))
        {
            found.push((spent(format!("x-ratelimit-remaining-{kind}")), Reset::In(d)));
        }
    }
    let any_spent = found.iter().any(|(s, _)| *s);
    // Ordered as if said at the epoch: a provider's headers are all instants or all durations.
    found
        .into_iter()
        .filter(|(s, _)| *s || !any_spent)
        .map(|(_, r)| r)
        .max_by_key(|r| r.until(Timestamp(0)))
}

/// A Go duration as OpenAI's headers print them: `1s`, `6m0s`, `1h2m3.5s`, `20ms`.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            _ => return None,
        };
        total += value * per;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Whether an error reply names a quota or usage limit rather than a momentary rate.
fn says_quota(raw: &str) -> bool {
    let t = raw.to_ascii_lowercase();
    t.contains("quota") || t.contains("usage limit")
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

/// Calls with retries. Returns the reply or the last error, and every failed try's message. A
/// hold is returned at once: retrying before its reset would only burn tries.
pub async fn call_with_retries(
    client: &reqwest::Client,
    r: &Request<'_>,
    retries: u32,
    clock: &dyn Clock,
) -> (Result<Reply, ApiError>, Vec<String>) {
    use std::hash::{BuildHasher, RandomState};
    let mut failures = Vec::new();
    let mut n = 0;
    loop {
        n += 1;
        match call(client, r, clock).await {
            Ok(reply) => return (Ok(reply), failures),
            Err(e @ (ApiError::Permanent { .. } | ApiError::Held { .. })) => {
                return (Err(e), failures);
            }
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
        assert_eq!(
            parse_retry_after("7"),
            Some(Reset::In(Duration::from_secs(7)))
        );
        assert_eq!(
            parse_retry_after("0.5"),
            Some(Reset::In(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Reset::At(Timestamp(1_445_412_480_000)))
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
    fn a_429_names_its_reset() {
        let t = |s: &str| Reset::At(Timestamp::parse_rfc3339(s).unwrap());
        let secs = |n: u64| Reset::In(Duration::from_secs(n));
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Headers<'_>, Option<Reset>)] = &[
            // Anthropic: Retry-After first.
            (
                &[
                    ("retry-after", "12"),
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    ("anthropic-ratelimit-requests-reset", "2026-12-01T12:00:30Z"),
                ],
                Some(secs(12)),
            ),
            // Without it, the reset of the limit that is spent, not of the one that is not.
            (
                &[
                    ("anthropic-ratelimit-requests-limit", "50"),
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    ("anthropic-ratelimit-requests-reset", "2026-12-01T12:00:30Z"),
                    ("anthropic-ratelimit-tokens-remaining", "40000"),
                    ("anthropic-ratelimit-tokens-reset", "2026-12-01T12:05:00Z"),
                ],
                Some(t("2026-12-01T12:00:30Z")),
            ),
            (
                &[
                    (
                        "anthropic-ratelimit-input-tokens-reset",
                        "2026-12-01T12:01:00Z",
                    ),
                    (
                        "anthropic-ratelimit-output-tokens-reset",
                        "2026-12-01T12:02:00Z",
                    ),
                ],
                Some(t("2026-12-01T12:02:00Z")),
            ),
            // OpenAI: Go durations.
            (
                &[
                    ("x-ratelimit-limit-requests", "500"),
                    ("x-ratelimit-remaining-requests", "499"),
                    ("x-ratelimit-reset-requests", "120ms"),
                    ("x-ratelimit-remaining-tokens", "0"),
                    ("x-ratelimit-reset-tokens", "6m0s"),
                ],
                Some(secs(360)),
            ),
            (
                &[
                    ("x-ratelimit-reset-requests", "1h2m3.5s"),
                    ("x-ratelimit-reset-tokens", "20ms"),
                ],
                Some(Reset::In(Duration::from_millis(3_723_500))),
            ),
            (
                &[("retry-after", "Tue, 01 Dec 2026 13:00:00 GMT")],
                Some(t("2026-12-01T13:00:00Z")),
            ),
            (&[("x-request-id", "req_1")], None),
        ];
        for (headers, want) in cases {
            let got = limit_reset(|k| {
                headers
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            });
            assert_eq!(got, *want, "{headers:?}");
        }
    }

    fn request(url: &str) -> Request<'_> {
        Request {
            api: ApiKind::Openai,
            base_url: url,
            model: "m",
            key: None,
            max_tokens: 10,
            system: "s",
            prompt: "p",
            timeout: Duration::from_secs(5),
            seed: None,
        }
    }

    /// Each attempt asks an OpenAI-compatible server with its own seed (three proposals on one
    /// backend are three samples, and an attempt run again asks as it did); Anthropic's API takes
    /// none, and a request without one sends none.
    #[test]
    fn an_attempts_number_seeds_the_apis_that_take_a_seed() {
        let seeded = |api, seed| {
            let r = Request {
                api,
                seed,
                ..request("http://x")
            };
            body(&r).get("seed").cloned()
        };
        assert_eq!(seeded(ApiKind::Openai, Some(2)), Some(serde_json::json!(2)));
        assert_eq!(seeded(ApiKind::Openai, None), None);
        assert_eq!(seeded(ApiKind::Anthropic, Some(2)), None);
    }

    #[tokio::test]
    async fn a_long_or_quota_429_holds_instead_of_burning_retries() {
        use abo_test_support::stub::{Canned, StubServer, openai_reply};
        let clock = crate::context::SystemClock;
        let client = reqwest::Client::new();
        let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#;
        let quota = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let ok = Canned::ok(openai_reply("m", "hi", 1, 1));
        for (first, held) in [
            // An hour away: held at once, its one request made.
            (
                Canned::status(429, limited).header("retry-after", "3600"),
                Some(Reset::In(Duration::from_secs(3600))),
            ),
            // A quota, with a reset however close: held too.
            (
                Canned::status(429, quota)
                    .header("x-ratelimit-remaining-requests", "0")
                    .header("x-ratelimit-reset-requests", "2s"),
                Some(Reset::In(Duration::from_secs(2))),
            ),
            // A momentary rate limit is retried, and the retry lands.
            (
                Canned::status(429, limited).header("retry-after", "0"),
                None,
            ),
        ] {
            let server = StubServer::start(vec![first, ok.clone()]);
            let url = format!("{}/v1", server.url);
            let (result, _) = call_with_retries(&client, &request(&url), 3, &clock).await;
            match held {
                Some(want) => {
                    assert!(
                        matches!(&result, Err(ApiError::Held { reset, .. }) if *reset == want),
                        "{result:?}"
                    );
                    assert_eq!(server.requests().len(), 1);
                }
                None => {
                    assert_eq!(result.map(|r| r.text).ok().as_deref(), Some("hi"));
                    assert_eq!(server.requests().len(), 2);
                }
            }
        }
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
