//! Reading what agent CLIs print, exactly as each documents it, into one [`Report`].

use std::time::Duration;

use serde_json::Value;

use abo_core::config::AgentKind;
use abo_core::event::Usage;
use abo_core::ids::Timestamp;

use crate::process::Line;

/// What an agent said about its run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The agent printed its final result (Claude Code `result`, Codex `turn.completed` or
    /// `turn.failed`, goose `complete`).
    pub finished: bool,
    /// The agent reported an error, even if it exited 0.
    pub error: Option<String>,
    pub usage: Option<Usage>,
    /// USD the tool itself reported.
    pub cost_usd: Option<f64>,
    pub model: Option<String>,
    /// Its final message: the rationale for the change.
    pub message: Option<String>,
    /// Usage reported while the agent works (Claude Code's per-message `usage`), before its total.
    pub running: Usage,
    /// The agent hit a usage or rate limit, and said when it resets.
    pub limit: Option<Reset>,
}

/// When a usage or rate limit resets, as a tool or an API said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reset {
    /// At this instant (Claude Code's `resetsAt`, `anthropic-ratelimit-*-reset`).
    At(Timestamp),
    /// This long after it was said (Codex's "try again in 2 hours 5 minutes", `Retry-After: 7`).
    In(Duration),
    /// A wall-clock time in `zone`, else in this machine's (where the CLI ran): Codex's "Try again
    /// at 3:15 PM." or "at Dec 29th, 2025 10:15 PM.", Claude Code's "resets 2pm (Asia/Shanghai)".
    /// Without a date it is the next such time; without a year, the next such day.
    Wall {
        date: Option<WallDate>,
        hour: i8,
        minute: i8,
        zone: Option<String>,
    },
}

/// The date of a [`Reset::Wall`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallDate {
    pub year: Option<i16>,
    pub month: i8,
    pub day: i8,
}

/// A wall-clock reset that names no valid time (or an unknown zone) holds this long: long
/// enough not to spin on a limit, short enough not to lose the day.
const UNRESOLVED_WALL: Duration = Duration::from_secs(3600);

impl Reset {
    /// The instant, for a report received at `now`.
    pub fn until(&self, now: Timestamp) -> Timestamp {
        let after = |d: Duration| {
            Timestamp(
                now.0
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            )
        };
        match self {
            Self::At(t) => *t,
            Self::In(d) => after(*d),
            Self::Wall {
                date,
                hour,
                minute,
                zone,
            } => wall_until(*date, *hour, *minute, zone.as_deref(), now)
                .unwrap_or_else(|| after(UNRESOLVED_WALL)),
        }
    }

    /// How long from `now` until the reset (zero when it is past).
    pub fn after(&self, now: Timestamp) -> Duration {
        self.until(now).saturating_sub(now)
    }
}

fn wall_until(
    date: Option<WallDate>,
    hour: i8,
    minute: i8,
    zone: Option<&str>,
    now: Timestamp,
) -> Option<Timestamp> {
    use jiff::civil::Date;
    let tz = match zone {
        Some(z) => jiff::tz::TimeZone::get(z).ok()?,
        None => jiff::tz::TimeZone::system(),
    };
    let here = jiff::Timestamp::from_millisecond(now.0)
        .ok()?
        .to_zoned(tz.clone());
    let at = |d: Date| {
        d.at(hour, minute, 0, 0)
            .to_zoned(tz.clone())
            .ok()
            .map(|z| z.timestamp().as_millisecond())
    };
    let ms = match date {
        // The next such time: today's, or tomorrow's once today's is more than a minute past.
        None => match at(here.date())? {
            t if t > now.0 - 60_000 => t,
            _ => at(here.date().tomorrow().ok()?)?,
        },
        Some(WallDate {
            year: Some(y),
            month,
            day,
        }) => at(Date::new(y, month, day).ok()?)?,
        Some(WallDate {
            year: None,
            month,
            day,
        }) => match at(Date::new(here.year(), month, day).ok()?)? {
            t if t > now.0 - 86_400_000 => t,
            _ => at(Date::new(here.year() + 1, month, day).ok()?)?,
        },
    };
    Some(Timestamp(ms))
}

/// `dec 29th, 2025 10:15 pm`, `feb 7, 11am`, `3:15 pm`, `2pm` (lowercase): the date, if any, and
/// the hour and minute.
fn wall_words(s: &str) -> Option<(Option<WallDate>, i8, i8)> {
    let toks: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|t| t.trim_end_matches('.'))
        .filter(|t| !t.is_empty())
        .take(6)
        .collect();
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| toks.first().is_some_and(|t| t.starts_with(m)));
    let (date, rest) = match month {
        Some(m) => {
            let day = toks.get(1)?;
            let day: i8 = day[..day.find(|c: char| !c.is_ascii_digit()).unwrap_or(day.len())]
                .parse()
                .ok()?;
            let year = toks
                .get(2)
                .filter(|t| t.len() == 4)
                .and_then(|t| t.parse::<i16>().ok());
            let rest = &toks[if year.is_some() { 3 } else { 2 }..];
            let month = i8::try_from(m + 1).ok()?;
            (Some(WallDate { year, month, day }), rest)
        }
        None => (None, &toks[..]),
    };
    let t = rest.first()?;
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let suffix = match (suffix, rest.get(1)) {
        ("", Some(&n)) if n == "am" || n == "pm" => n,
        (s, _) => s,
    };
    let (h, m) = match num.split_once(':') {
        Some((h, m)) => (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?),
        None => (num.parse::<i8>().ok()?, 0),
    };
    let h = match (suffix, h) {
        ("am", 12) => 0,
        ("pm", 12) | ("", _) => h,
        ("pm", _) => h + 12,
        ("am", _) => h,
        _ => return None,
    };
    (h < 24 && m < 60).then_some((date, h, m))
}

/// The reset a limit message names, in the texts the tools print:
/// - Claude Code's `Claude AI usage limit reached|1759968000` (Unix seconds), and its `You've hit
///   your limit · resets 2pm (Asia/Shanghai)` (or `resets Feb 7, 11am (Asia/Seoul)`);
/// - Codex's `You've hit your usage limit. ... try again in 2 hours 5 minutes.` (or `in 1 day 3
///   hours`, `in less than a minute`), its newer `... or try again at 3:15 PM.` (or `at Dec 29th,
///   2025 10:15 PM.`, local time), and `Model ... is at capacity. ... Try again in 45s.`
///
/// A limit without a reset (`Try again later.`) is none: nothing says when to come back.
pub fn limit_in_text(text: &str) -> Option<Reset> {
    if let Some((_, rest)) = text.split_once("limit reached|") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(secs) = digits.parse::<i64>() {
            return Some(Reset::At(Timestamp(secs.saturating_mul(1000))));
        }
    }
    let lower = text.to_ascii_lowercase();
    let limited = ["usage limit", "rate limit", "at capacity", "hit your limit"]
        .iter()
        .any(|p| lower.contains(p));
    if !limited {
        return None;
    }
    if let Some((_, after)) = lower.split_once("try again at ") {
        let (date, hour, minute) = wall_words(after)?;
        return Some(Reset::Wall {
            date,
            hour,
            minute,
            zone: None,
        });
    }
    if let Some(i) = ["resets ", "reset at "]
        .iter()
        .find_map(|p| lower.find(p).map(|i| i + p.len()))
    {
        let after = &lower[i..];
        let (date, hour, minute) = wall_words(after.split('(').next().unwrap_or(after))?;
        // The zone as written (zone names are case-sensitive on disk); ASCII lowercasing kept
        // every byte where it was.
        let zone = text[i..]
            .split_once('(')
            .and_then(|(_, z)| z.split_once(')'))
            .map(|(z, _)| z.trim().to_owned());
        return Some(Reset::Wall {
            date,
            hour,
            minute,
            zone,
        });
    }
    let (_, after) = lower.split_once("try again in ")?;
    if after.starts_with("less than a minute") {
        return Some(Reset::In(Duration::from_secs(60)));
    }
    let mut secs = 0u64;
    let mut number: Option<u64> = None;
    for w in after
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
    {
        // `2 hours` (a number, then its unit) or `45s` (both in one word).
        let (digits, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
        let n = match (digits.parse::<u64>().ok(), number.take()) {
            (Some(n), None) if unit.is_empty() => {
                number = Some(n);
                continue;
            }
            (Some(n), None) | (None, Some(n)) => n,
            _ => break,
        };
        let per = match unit {
            "day" | "days" | "d" => 86_400,
            "hour" | "hours" | "h" => 3_600,
            "minute" | "minutes" | "min" | "m" => 60,
            "second" | "seconds" | "sec" | "s" => 1,
            _ => break,
        };
        secs += n * per;
    }
    (secs > 0).then(|| Reset::In(Duration::from_secs(secs)))
}

impl Report {
    /// The most the agent is known to have used so far: its total once given, else the running sum.
    pub fn used_so_far(&self) -> Usage {
        match self.usage {
            Some(u) if u.total() >= self.running.total() => u,
            _ => self.running,
        }
    }
}

impl Report {
    /// Whether the error looks like the provider's (overloaded, rate-limited, a 5xx), not the task's.
    pub fn transient(&self) -> bool {
        self.error.as_deref().is_some_and(looks_transient)
    }
}

pub fn looks_transient(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    // An account out of quota answers 429 too, but waiting does not help.
    // (aider's explanation of every 429 says "check your quotas": that alone is no such answer.)
    if [
        "exceeded your current quota",
        "insufficient_quota",
        "quota exceeded",
        "billing details",
    ]
    .iter()
    .any(|p| t.contains(p))
    {
        return false;
    }
    [
        "overloaded",
        "rate limit",
        "rate_limit",
        "too many requests",
        " 429",
        " 529",
        " 500",
        " 502",
        " 503",
        " 504",
        "timed out",
        "timeout",
        "econnreset",
        "connection reset",
        // The provider down (Claude Code's `connection_failed`).
        "econnrefused",
        "connection refused",
        "connection_failed",
        "unreachable",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// Reads an agent's stdout line by line.
#[derive(Debug)]
pub struct Parser {
    kind: AgentKind,
    report: Report,
    /// aider: a reply came back from the model (a `Tokens:` line or a `message_send` event).
    aider_replied: bool,
    /// aider: the last error it printed (`litellm.RateLimitError: ...` and its explanation).
    aider_error: Vec<String>,
    aider_error_open: bool,
    /// Codex: how many times it said it waits for the network.
    codex_network_waits: u32,
}

/// Codex is stopped when it says this many times that it waits for the network (about 30 s).
const CODEX_NETWORK_WAITS: u32 = 3;

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl Parser {
    pub fn new(kind: AgentKind) -> Self {
        Self {
            kind,
            report: Report::default(),
            aider_replied: false,
            aider_error: Vec::new(),
            aider_error_open: false,
            codex_network_waits: 0,
        }
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn into_report(self) -> Report {
        self.report
    }

    /// One line of stdout. Lines that are not JSON (banners, garbage) are skipped.
    pub fn line(&mut self, line: &str) -> Line {
        let l = self.parse_line(line);
        // An error that names a limit's reset holds the backend until then.
        if self.report.limit.is_none()
            && let Some(e) = &self.report.error
        {
            self.report.limit = limit_in_text(e);
        }
        l
    }

    fn parse_line(&mut self, line: &str) -> Line {
        match self.kind {
            AgentKind::Aider => {
                self.aider_text_line(line);
                Line::More
            }
            _ => match serde_json::from_str::<Value>(line.trim()) {
                Ok(v) if v.is_object() => match self.kind {
                    AgentKind::ClaudeCode => self.claude(&v),
                    AgentKind::Codex => self.codex(&v),
                    AgentKind::Goose => self.goose(&v),
                    AgentKind::Aider => Line::More,
                },
                _ => Line::More,
            },
        }
    }

    /// Claude Code `--output-format stream-json --verbose` (or `json`: the `result` object alone).
    fn claude(&mut self, v: &Value) -> Line {
        let r = &mut self.report;
        match v.get("type").and_then(Value::as_str) {
            Some("system") => {
                if let Some(m) = v.get("model").and_then(Value::as_str) {
                    r.model = Some(m.to_owned());
                }
                Line::More
            }
            // Claude Code 2.1.45+: `{"type":"rate_limit_event","rate_limit_info":{"status":
            // "rejected","resetsAt":1778565600,"rateLimitType":"five_hour",...}}`. `allowed` and
            // `allowed_warning` only inform.
            Some("rate_limit_event") => {
                let info = &v["rate_limit_info"];
                if info["status"] == "rejected"
                    && let Some(secs) = info["resetsAt"].as_i64()
                {
                    r.limit = Some(Reset::At(Timestamp(secs.saturating_mul(1000))));
                }
                Line::More
            }
            Some("assistant") => {
                if let Some(t) = text_blocks(&v["message"]["content"]) {
                    r.message = Some(t);
                }
                let us = &v["message"]["usage"];
                if us.is_object() {
                    r.running.add(&Usage {
                        input_tokens: u(us, "input_tokens"),
                        output_tokens: u(us, "output_tokens"),
                        cache_read_tokens: u(us, "cache_read_input_tokens"),
                        cache_write_tokens: u(us, "cache_creation_input_tokens"),
                        unsplit_tokens: 0,
                    });
                }
                Line::More
            }
            Some("result") => {
                r.finished = true;
                let subtype = v
                    .get("subtype")
                    .and_then(Value::as_str)
                    .unwrap_or("success");
                let text = v.get("result").and_then(Value::as_str);
                if let Some(t) = text {
                    r.message = Some(t.to_owned());
                }
                let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                if is_error || subtype != "success" {
                    let resets_at = match &r.limit {
                        Some(Reset::At(t)) => Some(t.0 / 1000),
                        _ => None,
                    };
                    r.error = Some(claude_error(v, subtype, resets_at));
                }
                r.cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
                // modelUsage counts every model the run used (subagents too); usage only the main one.
                let mut total = Usage::default();
                let mut top: Option<(f64, String)> = None;
                if let Some(models) = v
                    .get("modelUsage")
                    .and_then(Value::as_object)
                    .filter(|m| !m.is_empty())
                {
                    for (name, m) in models {
                        total.add(&Usage {
                            input_tokens: u(m, "inputTokens"),
                            output_tokens: u(m, "outputTokens"),
                            cache_read_tokens: u(m, "cacheReadInputTokens"),
                            cache_write_tokens: u(m, "cacheCreationInputTokens"),
                            unsplit_tokens: 0,
                        });
                        let cost = m.get("costUSD").and_then(Value::as_f64).unwrap_or(0.0);
                        if top.as_ref().is_none_or(|(c, _)| cost > *c) {
                            top = Some((cost, name.clone()));
                        }
                    }
                    r.usage = Some(total);
                    if let Some((_, name)) = top {
                        r.model = Some(name);
                    }
                } else if let Some(us) = v.get("usage").filter(|x| x.is_object()) {
                    r.usage = Some(Usage {
                        input_tokens: u(us, "input_tokens"),
                        output_tokens: u(us, "output_tokens"),
                        cache_read_tokens: u(us, "cache_read_input_tokens"),
                        cache_write_tokens: u(us, "cache_creation_input_tokens"),
                        unsplit_tokens: 0,
                    });
                }
                Line::Final
            }
            _ => Line::More,
        }
    }

    /// Codex `exec --json`. `cached_input_tokens` is part of `input_tokens`, and `output_tokens`
    /// already includes reasoning: neither is counted twice. Each `turn.completed` carries the
    /// thread's usage so far, not the turn's: the last one is the total.
    fn codex(&mut self, v: &Value) -> Line {
        let r = &mut self.report;
        match v.get("type").and_then(Value::as_str) {
            Some("item.completed") if v["item"]["type"] == "agent_message" => {
                if let Some(t) = v["item"]["text"].as_str() {
                    r.message = Some(t.to_owned());
                }
                Line::More
            }
            Some("turn.completed") => {
                let us = &v["usage"];
                let input = u(us, "input_tokens");
                let cached = u(us, "cached_input_tokens").min(input);
                let written = u(us, "cache_write_input_tokens").min(input - cached);
                r.usage = Some(Usage {
                    input_tokens: input - cached - written,
                    output_tokens: u(us, "output_tokens"),
                    cache_read_tokens: cached,
                    cache_write_tokens: written,
                    unsplit_tokens: 0,
                });
                r.finished = true;
                r.error = None;
                Line::Final
            }
            Some("turn.failed") => {
                let msg = v["error"]["message"].as_str().unwrap_or("turn failed");
                r.error = Some(msg.to_owned());
                r.finished = true;
                Line::Final
            }
            Some("error") => {
                let msg = v["message"].as_str().unwrap_or("error");
                // A provider it cannot connect to, Codex waits for without end ("Reconnecting...
                // waiting for network", 10 s, 20 s, 40 s apart): after a few, it is stopped.
                if let Some(why) = msg.strip_prefix("Reconnecting... waiting for network") {
                    self.codex_network_waits += 1;
                    if self.codex_network_waits >= CODEX_NETWORK_WAITS {
                        let why = why.trim().trim_start_matches('(').trim_end_matches(')');
                        r.error = Some(format!("the model provider is unreachable: {why}"));
                        return Line::Stop;
                    }
                    return Line::More;
                }
                r.error = Some(msg.to_owned());
                Line::More
            }
            _ => Line::More,
        }
    }

    /// goose `run --output-format stream-json`.
    fn goose(&mut self, v: &Value) -> Line {
        let r = &mut self.report;
        match v.get("type").and_then(Value::as_str) {
            Some("message") if v["message"]["role"] == "assistant" => {
                if let Some(t) = text_blocks(&v["message"]["content"]) {
                    r.message = Some(t);
                }
                Line::More
            }
            Some("error") => {
                r.error = Some(v["error"].as_str().unwrap_or("error").to_owned());
                Line::More
            }
            Some("complete") => {
                r.finished = true;
                if let Some(t) = v.get("total_tokens").and_then(Value::as_u64) {
                    r.usage = Some(Usage {
                        unsplit_tokens: t,
                        ..Usage::default()
                    });
                }
                r.cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
                Line::Final
            }
            _ => Line::More,
        }
    }

    /// aider's `Tokens: 4.2k sent, 1.1k cache write, 2k cache hit, 150 received. Cost: $0.01 message, $0.03 session.`
    fn aider_text_line(&mut self, line: &str) {
        let t = line.trim();
        // An error from the provider: `litellm.<Class>: <message>`, then aider's explanation
        // ("The API provider's servers are down or overloaded."), then `Retrying in 2.0 seconds...`.
        if t.starts_with("litellm.") {
            self.aider_error = vec![t.to_owned()];
            self.aider_error_open = true;
            return;
        }
        if self.aider_error_open {
            if t.is_empty() || t.starts_with("Retrying") || t.starts_with("Tokens:") {
                self.aider_error_open = false;
            } else {
                self.aider_error.push(t.to_owned());
                return;
            }
        }
        let Some(rest) = t.strip_prefix("Tokens:") else {
            return;
        };
        self.aider_replied = true;
        let (tokens, cost) = rest.split_once("Cost:").unwrap_or((rest, ""));
        let mut usage = Usage::default();
        for part in tokens.split(", ") {
            let part = part.trim().trim_end_matches('.');
            let Some((n, what)) = part.split_once(' ') else {
                continue;
            };
            let n = parse_count(n);
            match what.trim() {
                "sent" => usage.input_tokens += n,
                "received" => usage.output_tokens += n,
                "cache write" => usage.cache_write_tokens += n,
                "cache hit" => usage.cache_read_tokens += n,
                _ => {}
            }
        }
        // "sent" counts cache writes and hits too.
        usage.input_tokens = usage
            .input_tokens
            .saturating_sub(usage.cache_read_tokens + usage.cache_write_tokens);
        let mut total = self.report.usage.unwrap_or_default();
        total.add(&usage);
        self.report.usage = Some(total);
        // The session figure is the running total.
        if let Some(session) = cost.split(", ").find(|p| p.contains("session")) {
            let usd = session
                .trim()
                .trim_start_matches('$')
                .split_whitespace()
                .next()
                .unwrap_or("");
            if let Ok(c) = usd.trim_start_matches('$').parse::<f64>() {
                self.report.cost_usd = Some(c);
            }
        }
    }

    /// aider's `--analytics-log` JSONL: its `message_send` events, preferred over the text lines.
    /// Returns how many replies (`message_send` events) it holds.
    pub fn aider_analytics(&mut self, jsonl: &str) -> usize {
        let mut usage = Usage::default();
        let mut cost = 0.0;
        let mut seen = false;
        let mut replies = 0;
        for line in jsonl.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["event"] != "message_send" {
                continue;
            }
            seen = true;
            replies += 1;
            let p = &v["properties"];
            usage.input_tokens += u(p, "prompt_tokens");
            usage.output_tokens += u(p, "completion_tokens");
            cost += p.get("cost").and_then(Value::as_f64).unwrap_or(0.0);
            // aider writes `openai/REDACTED` for a model it does not know by name.
            if let Some(m) = p
                .get("main_model")
                .and_then(Value::as_str)
                .filter(|m| !m.contains("REDACTED"))
            {
                self.report.model = Some(m.to_owned());
            }
        }
        if seen {
            self.aider_replied = true;
            self.report.usage = Some(usage);
            self.report.cost_usd = Some(cost);
        }
        replies
    }

    /// After aider exited: one that never got a reply from the model (it retries for about a
    /// minute, then exits 0 all the same) reported an error, the provider's it printed last.
    pub fn aider_finish(&mut self) {
        if self.aider_replied || self.report.error.is_some() {
            return;
        }
        self.report.error = Some(if self.aider_error.is_empty() {
            "aider got no reply from the model".to_owned()
        } else {
            format!(
                "aider got no reply from the model: {}",
                self.aider_error.join(" ")
            )
        });
    }
}

/// Why a Claude Code `result` is an error, in its own words: what went wrong (`api_error`, else
/// the subtype unless it is `success`), its `errors[]` and result text, and the provider's HTTP
/// status and error type, e.g. `error_max_budget_usd: Reached maximum budget ($0.5)` or
/// `API Error: Request rejected (429) · ... (HTTP 429 rate_limit_error)`.
fn claude_error(v: &Value, subtype: &str, resets_at: Option<i64>) -> String {
    let what = v
        .get("api_error")
        .and_then(Value::as_str)
        .or((subtype != "success").then_some(subtype));
    let mut said: Vec<&str> = v
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    said.extend(v.get("result").and_then(Value::as_str));
    said.retain(|t| !t.trim().is_empty());
    let mut out = match (what, said.is_empty()) {
        (Some(w), true) => w.to_owned(),
        (Some(w), false) => format!("{w}: {}", said.join("; ")),
        (None, false) => said.join("; "),
        (None, true) => "is_error without a reason".to_owned(),
    };
    let status = v.get("api_error_status").and_then(Value::as_u64);
    let kind = v.get("api_error_type").and_then(Value::as_str);
    let mut detail: Vec<String> = Vec::new();
    match (status, kind) {
        (Some(s), Some(k)) => detail.push(format!("HTTP {s} {k}")),
        (Some(s), None) => detail.push(format!("HTTP {s}")),
        (None, Some(k)) => detail.push(k.to_owned()),
        (None, None) => {}
    }
    if let Some(t) = resets_at {
        detail.push(format!("the limit resets at {t} (Unix time)"));
    }
    if !detail.is_empty() {
        out = format!("{out} ({})", detail.join("; "));
    }
    out
}

/// The text blocks of a message's content, joined (Claude Code and goose share this shape).
fn text_blocks(content: &Value) -> Option<String> {
    let texts: Vec<&str> = content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "text")
        .filter_map(|c| c["text"].as_str())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

/// `2.3k`, `12,345`, `1.2M`.
fn parse_count(s: &str) -> u64 {
    let s = s.replace(',', "");
    let (num, mult) = match s.chars().last() {
        Some('k') | Some('K') => (&s[..s.len() - 1], 1_000.0),
        Some('m') | Some('M') => (&s[..s.len() - 1], 1_000_000.0),
        _ => (s.as_str(), 1.0),
    };
    num.parse::<f64>()
        .map(|n| (n * mult).round() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn parse(kind: AgentKind, out: &str) -> (Report, Vec<Line>) {
        let mut p = Parser::new(kind);
        let lines = out.lines().map(|l| p.line(l)).collect();
        (p.into_report(), lines)
    }

    #[test]
    fn claude_stream_json() {
        let out = r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5-20250929","tools":["Edit"]}
not json: a banner
{"type":"assistant","message":{"model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"I'll edit it."}],"usage":{"input_tokens":12,"cache_read_input_tokens":15000,"output_tokens":40}}}
{"type":"result","subtype":"success","is_error":false,"duration_ms":1200,"num_turns":2,"result":"Added the function.","total_cost_usd":0.0421,"usage":{"input_tokens":12,"cache_creation_input_tokens":900,"cache_read_input_tokens":15000,"output_tokens":300},"modelUsage":{"claude-sonnet-4-5-20250929":{"inputTokens":12,"outputTokens":300,"cacheReadInputTokens":15000,"cacheCreationInputTokens":900,"costUSD":0.04},"claude-haiku-4-5-20251001":{"inputTokens":500,"outputTokens":20,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"costUSD":0.0021}}}"#;
        let (r, lines) = parse(AgentKind::ClaudeCode, out);
        assert_eq!(lines.last(), Some(&Line::Final));
        assert_eq!(
            r,
            Report {
                finished: true,
                error: None,
                usage: Some(Usage {
                    input_tokens: 512,
                    output_tokens: 320,
                    cache_read_tokens: 15000,
                    cache_write_tokens: 900,
                    unsplit_tokens: 0
                }),
                cost_usd: Some(0.0421),
                model: Some("claude-sonnet-4-5-20250929".into()),
                message: Some("Added the function.".into()),
                running: Usage {
                    input_tokens: 12,
                    output_tokens: 40,
                    cache_read_tokens: 15000,
                    ..Usage::default()
                },
                limit: None,
            }
        );
        // While the agent works, what it used so far is the running sum; then its total.
        assert_eq!(r.used_so_far(), r.usage.unwrap());
    }

    #[test]
    fn claude_error_inside_exit_zero() {
        let (r, _) = parse(
            AgentKind::ClaudeCode,
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":40,"total_cost_usd":1.5,"usage":{"input_tokens":1,"output_tokens":2}}"#,
        );
        assert_eq!(r.error.as_deref(), Some("error_max_turns"));
        assert_eq!(r.usage.map(|u| u.total()), Some(3));
        let (r, _) = parse(
            AgentKind::ClaudeCode,
            r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 overloaded"}"#,
        );
        assert_eq!(r.error.as_deref(), Some("API Error: 529 overloaded"));
        assert!(r.transient());
    }

    /// The errors of Claude Code 2.1.332, as it printed them against a local server.
    #[test]
    fn claude_errors_in_its_own_words() {
        let check = |out: &str, want: &str| {
            let (r, _) = parse(AgentKind::ClaudeCode, out);
            assert_eq!(r.error.as_deref(), Some(want), "{out}");
            r
        };
        check(
            r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"errors":["Reached maximum budget ($0.001)"],"total_cost_usd":0.00156,"terminal_reason":"budget_exhausted"}"#,
            "error_max_budget_usd: Reached maximum budget ($0.001)",
        );
        let r = check(
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","result":"API Error: Request rejected (429) · Number of request tokens has exceeded your per-minute rate limit","terminal_reason":"api_error"}"#,
            "API Error: Request rejected (429) · Number of request tokens has exceeded your per-minute rate limit (HTTP 429 rate_limit_error)",
        );
        assert!(r.transient());
        let r = check(
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":null,"api_error":"connection_failed","result":"API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"}"#,
            "connection_failed: API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)",
        );
        assert!(r.transient(), "the provider down is the provider's failure");
        let r = check(
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796124308,"rateLimitType":"five_hour","isUsingOverage":false}}
{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","api_error":"usage_limit_reached","result":"You've hit your 5-hour limit · resets 11:25am (UTC)"}"#,
            "usage_limit_reached: You've hit your 5-hour limit · resets 11:25am (UTC) (HTTP 429 rate_limit_error; the limit resets at 1796124308 (Unix time))",
        );
        assert_eq!(r.limit, Some(Reset::At(Timestamp(1_796_124_308_000))));
        check(
            r#"{"type":"result","subtype":"error_during_execution","is_error":true}"#,
            "error_during_execution",
        );
    }

    #[test]
    fn limits_name_their_reset() {
        use Reset::{At, In};
        let h = |h: u64, m: u64| In(Duration::from_secs(h * 3600 + m * 60));
        let wall =
            |date: Option<(Option<i16>, i8, i8)>, hour, minute, zone: Option<&str>| Reset::Wall {
                date: date.map(|(year, month, day)| WallDate { year, month, day }),
                hour,
                minute,
                zone: zone.map(str::to_owned),
            };
        let cases: &[(AgentKind, &str, Option<Reset>)] = &[
            // Claude Code 1.x: the reset in Unix seconds after a `|`.
            (
                AgentKind::ClaudeCode,
                r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":310,"num_turns":1,"result":"Claude AI usage limit reached|1759968000","session_id":"s1","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0}}"#,
                Some(At(Timestamp(1_759_968_000_000))),
            ),
            // Claude Code 2.1: a rejected `rate_limit_event` before the failing result.
            (
                AgentKind::ClaudeCode,
                r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5-20250929"}
{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1778565600,"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false},"uuid":"u1","session_id":"s1"}
{"type":"assistant","message":{"content":[{"type":"text","text":"You've hit your limit · resets 2pm (Asia/Shanghai)"}]}}
{"type":"result","subtype":"success","is_error":true,"result":"You've hit your limit · resets 2pm (Asia/Shanghai)","total_cost_usd":0}"#,
                Some(At(Timestamp(1_778_565_600_000))),
            ),
            // An `allowed` event only informs: the run goes on and lands.
            (
                AgentKind::ClaudeCode,
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","isUsingOverage":false}}
{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1778565600,"rateLimitType":"seven_day","utilization":0.9}}
{"type":"result","subtype":"success","is_error":false,"result":"Done."}"#,
                None,
            ),
            (
                AgentKind::ClaudeCode,
                r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}"#,
                None,
            ),
            // Codex: its UsageLimitReachedError, relative to now.
            (
                AgentKind::Codex,
                r#"{"type":"turn.started"}
{"type":"error","message":"You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 2 hours 5 minutes."}
{"type":"turn.failed","error":{"message":"You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 2 hours 5 minutes."}}"#,
                Some(h(2, 5)),
            ),
            (
                AgentKind::Codex,
                r#"{"type":"turn.failed","error":{"message":"You've hit your usage limit. Try again in 1 day 3 hours."}}"#,
                Some(h(27, 0)),
            ),
            (
                AgentKind::Codex,
                r#"{"type":"turn.failed","error":{"message":"You've hit your usage limit. Try again in less than a minute."}}"#,
                Some(In(Duration::from_secs(60))),
            ),
            (
                AgentKind::Codex,
                r#"{"type":"turn.failed","error":{"message":"Model gpt-5-codex is at capacity. Please try a different model. Try again in 45s."}}"#,
                Some(In(Duration::from_secs(45))),
            ),
            // Newer Codex: the reset in local time, today or dated.
            (
                AgentKind::Codex,
                r#"{"type":"turn.failed","error":{"message":"You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at 3:15 PM."}}"#,
                Some(wall(None, 15, 15, None)),
            ),
            (
                AgentKind::Codex,
                r#"{"type":"turn.failed","error":{"message":"You've hit your usage limit. Try again at Dec 29th, 2025 10:15 PM."}}"#,
                Some(wall(Some((Some(2025), 12, 29)), 22, 15, None)),
            ),
            // Claude Code's texts, when no rate_limit_event came first.
            (
                AgentKind::ClaudeCode,
                r#"{"type":"result","subtype":"success","is_error":true,"result":"You've hit your limit · resets Feb 7, 11am (Asia/Seoul)"}"#,
                Some(wall(Some((None, 2, 7)), 11, 0, Some("Asia/Seoul"))),
            ),
            (
                AgentKind::ClaudeCode,
                r#"{"type":"result","subtype":"success","is_error":true,"result":"Claude usage limit reached. Your limit will reset at 5pm (Europe/Warsaw)."}"#,
                Some(wall(None, 17, 0, Some("Europe/Warsaw"))),
            ),
            // A limit that says nothing of its reset is an ordinary failure.
            (
                AgentKind::Codex,
                r#"{"type":"turn.failed","error":{"message":"You've hit your usage limit. Limits reset every 5h and every week."}}"#,
                None,
            ),
        ];
        for (kind, out, want) in cases {
            let (r, _) = parse(*kind, out);
            assert_eq!(r.limit, *want, "{out}");
            if want.is_some() {
                assert!(r.error.is_some(), "a limit fails the attempt: {out}");
            }
        }
        let now = Timestamp(1_000_000);
        assert_eq!(h(0, 1).until(now), Timestamp(1_060_000));
        assert_eq!(At(Timestamp(5)).after(now), Duration::ZERO);
        // Wall-clock resets, in their zone: the next such time.
        let utc = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let two_pm = wall(None, 14, 0, Some("Asia/Shanghai"));
        for (now, want) in [
            ("2026-12-01T03:00:00Z", "2026-12-01T06:00:00Z"),
            ("2026-12-01T07:00:00Z", "2026-12-02T06:00:00Z"),
        ] {
            assert_eq!(two_pm.until(utc(now)), utc(want), "{now}");
        }
        assert_eq!(
            wall(Some((None, 2, 7)), 11, 0, Some("Asia/Seoul")).until(utc("2026-12-01T00:00:00Z")),
            utc("2027-02-07T02:00:00Z")
        );
        // A zone abo does not know holds an hour.
        assert_eq!(
            wall(None, 14, 0, Some("Mars/Olympus")).until(now),
            Timestamp(now.0 + 3_600_000)
        );
    }

    #[test]
    fn codex_exec_json() {
        let out = r#"{"type":"thread.started","thread_id":"t1"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"thinking"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"ls","status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"Done: added tests."}}
{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122,"reasoning_output_tokens":64}}"#;
        let (r, lines) = parse(AgentKind::Codex, out);
        assert_eq!(lines.last(), Some(&Line::Final));
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 315,
                output_tokens: 122,
                cache_read_tokens: 24448,
                cache_write_tokens: 0,
                unsplit_tokens: 0
            })
        );
        assert_eq!(
            r.usage.map(|u| u.total()),
            Some(24763 + 122),
            "cached and reasoning tokens are not counted twice"
        );
        assert_eq!(
            (r.message.as_deref(), r.error, r.cost_usd),
            (Some("Done: added tests."), None, None)
        );
        // Each turn.completed carries the thread's usage so far: the last one is the total.
        let (r, _) = parse(
            AgentKind::Codex,
            r#"{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":400,"output_tokens":50,"reasoning_output_tokens":8}}
{"type":"turn.completed","usage":{"input_tokens":3300,"cached_input_tokens":1200,"cache_write_input_tokens":0,"output_tokens":180,"reasoning_output_tokens":24}}"#,
        );
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 2100,
                output_tokens: 180,
                cache_read_tokens: 1200,
                cache_write_tokens: 0,
                unsplit_tokens: 0
            })
        );
        let (r, _) = parse(
            AgentKind::Codex,
            r#"{"type":"turn.failed","error":{"message":"stream error: 503 Service Unavailable"}}"#,
        );
        assert_eq!(
            r.error.as_deref(),
            Some("stream error: 503 Service Unavailable")
        );
        assert!(r.transient() && r.finished);
        // An unreachable provider: Codex waits for the network without end; abo stops it.
        let wait = r#"{"type":"error","message":"Reconnecting... waiting for network (Connection failed: error sending request)"}"#;
        let (r, lines) = parse(AgentKind::Codex, &[wait; 3].join("\n"));
        assert_eq!(lines, [Line::More, Line::More, Line::Stop]);
        assert_eq!(
            r.error.as_deref(),
            Some("the model provider is unreachable: Connection failed: error sending request")
        );
        assert!(r.transient());
        // Its own retries, then the provider's error.
        let (r, _) = parse(
            AgentKind::Codex,
            r#"{"type":"error","message":"exceeded retry limit, last status: 429 Too Many Requests"}
{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}"#,
        );
        assert!(r.transient(), "{:?}", r.error);
        let (r, _) = parse(
            AgentKind::Codex,
            r#"{"type":"turn.failed","error":{"message":"Quota exceeded. Check your plan and billing details."}}"#,
        );
        assert!(!r.transient(), "a usage limit is no transient failure");
    }

    #[test]
    fn goose_stream_json() {
        let out = r#"starting session | provider: anthropic model: claude-sonnet-4-5
{"type":"message","message":{"role":"assistant","created":0,"content":[{"type":"text","text":"Edited README."}]}}
{"type":"complete","total_tokens":4210}"#;
        let (r, lines) = parse(AgentKind::Goose, out);
        assert_eq!(lines, vec![Line::More, Line::More, Line::Final]);
        assert_eq!(
            r.usage,
            Some(Usage {
                unsplit_tokens: 4210,
                ..Usage::default()
            })
        );
        assert_eq!(
            (r.message.as_deref(), r.cost_usd),
            (Some("Edited README."), None)
        );
        let (r, _) = parse(
            AgentKind::Goose,
            r#"{"type":"error","error":"provider failed"}"#,
        );
        assert_eq!(
            (r.error.as_deref(), r.finished),
            (Some("provider failed"), false)
        );
    }

    #[test]
    fn aider_text_and_analytics() {
        let out = "Applied edit to src/a.py\nTokens: 4.2k sent, 1.1k cache write, 2k cache hit, 150 received. Cost: $0.01 message, $0.01 session.\nTokens: 12,345 sent, 567 received. Cost: $0.04 message, $0.05 session.";
        let (r, _) = parse(AgentKind::Aider, out);
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 1100 + 12345,
                output_tokens: 717,
                cache_read_tokens: 2000,
                cache_write_tokens: 1100,
                unsplit_tokens: 0
            })
        );
        assert_eq!(r.cost_usd, Some(0.05));
        let mut p = Parser::new(AgentKind::Aider);
        p.aider_analytics(
            r#"{"event":"launched","properties":{}}
{"event":"message_send","properties":{"main_model":"gpt-4.1","edit_format":"diff","prompt_tokens":1000,"completion_tokens":50,"total_tokens":1050,"cost":0.0024,"total_cost":0.0024}}
{"event":"message_send","properties":{"main_model":"gpt-4.1","prompt_tokens":2000,"completion_tokens":70,"cost":0.0046,"total_cost":0.007}}"#,
        );
        let r = p.into_report();
        assert_eq!(
            r.usage,
            Some(Usage {
                input_tokens: 3000,
                output_tokens: 120,
                ..Usage::default()
            })
        );
        assert_eq!(
            (r.cost_usd.map(|c| (c * 1e4).round()), r.model.as_deref()),
            (Some(70.0), Some("gpt-4.1"))
        );
    }

    #[test]
    fn aider_without_a_reply_from_the_model() {
        // aider 0.86 retries for about a minute, prints the provider's error, and exits 0.
        let out = "Aider v0.86.2\nlitellm.InternalServerError: InternalServerError: OpenAIException - Connection error.\nThe API provider's servers are down or overloaded.\nRetrying in 0.2 seconds...\nlitellm.InternalServerError: InternalServerError: OpenAIException - Connection error.\nThe API provider's servers are down or overloaded.\n";
        let mut p = Parser::new(AgentKind::Aider);
        for l in out.lines() {
            p.line(l);
        }
        p.aider_analytics(
            r#"{"event":"launched","properties":{}}
{"event":"message_send_starting","properties":{}}
{"event":"exit","properties":{"reason":"Completed --message-file"}}"#,
        );
        p.aider_finish();
        let r = p.into_report();
        assert_eq!(
            r.error.as_deref(),
            Some(
                "aider got no reply from the model: litellm.InternalServerError: InternalServerError: OpenAIException - Connection error. The API provider's servers are down or overloaded."
            )
        );
        assert!(r.transient(), "a provider that is down is transient");
        // The account's quota is not transient.
        let mut p = Parser::new(AgentKind::Aider);
        p.line("litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your current quota, please check your plan and billing details.");
        p.aider_finish();
        assert!(!p.report().transient(), "{:?}", p.report().error);
        // A reply came: no error, whatever was retried before it; aider's redacted model
        // name is no model name.
        let mut p = Parser::new(AgentKind::Aider);
        p.line("litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached");
        p.line("The API provider has rate limited you. Try again later or check your quotas.");
        assert!(
            looks_transient(&p.aider_error.join(" ")),
            "a rate limit is transient, whatever aider's explanation says of quotas"
        );
        p.line("Retrying in 0.2 seconds...");
        p.aider_analytics(
            r#"{"event":"message_send","properties":{"main_model":"openai/REDACTED","prompt_tokens":2336,"completion_tokens":60,"cost":0.0052}}"#,
        );
        p.aider_finish();
        let r = p.into_report();
        assert_eq!((r.error, r.model), (None, None));
    }
}
