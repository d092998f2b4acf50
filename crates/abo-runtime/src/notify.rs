//! Notifications (`notify`): webhooks (the event as JSON, or a Slack-compatible `{"text"}`),
//! HMAC-SHA256-signed when a key is named, and email over SMTP. Each delivery runs in its own
//! task, is retried with backoff, never blocks the run, and ends as a `notify.sent` event.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use abo_core::event::{Event, EventBody, StoredEvent};
use abo_core::spec::{EmailSpec, NotifySpec, WebhookSpec};

use crate::context::Ctx;
use crate::redact::Redactor;

pub mod decision;

/// Tries per delivery, and the first backoff (doubled each time).
const TRIES: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(300);

/// HMAC-SHA256 of `body` under `key` (RFC 2104), hex.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(body)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize(),
    )
}

/// Text for Slack's `text` field, where `<...>` is markup (`<!channel>` notifies everyone,
/// `<https://...|label>` is a link under any label) and `&` starts an entity: the three are
/// escaped as Slack asks, so that a path or an agent's question in a notification stays text.
pub fn slack_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line for people: the Slack text and the email subject.
fn headline(e: &StoredEvent) -> String {
    let run = &e.event.run;
    let task = e
        .event
        .task
        .as_ref()
        .map(|t| format!(" {t}"))
        .unwrap_or_default();
    let what = match &e.event.body {
        EventBody::RunFinished {
            landed,
            failed,
            cancelled,
            ..
        } => format!("finished: {landed} landed, {failed} failed, {cancelled} cancelled"),
        EventBody::TaskApprovalRequested {
            reasons, approval, ..
        } => {
            format!("waits for approval ({approval}): {}", reasons.join("; "))
        }
        EventBody::BudgetAlert {
            cap, spent, limit, ..
        } => {
            format!("budget alert: {cap} at {spent:.2} of {limit:.2}")
        }
        EventBody::RunPaused { reason } => format!("paused: {reason}"),
        EventBody::TaskReverted {
            commit,
            reason,
            branch,
            ..
        } => {
            let on = branch
                .as_ref()
                .map(|b| format!(" on {b}"))
                .unwrap_or_default();
            format!("reverted {commit}{on} (landing.verify failed: {reason})")
        }
        EventBody::RunRevertFailed {
            commit,
            reason,
            branch,
        } => {
            let on = branch
                .as_ref()
                .map(|b| format!(" on {b}"))
                .unwrap_or_default();
            format!("landing.verify fails{on} and {commit} could not be reverted: {reason}")
        }
        EventBody::VerifyProposed {
            commit, url, on, ..
        } => format!(
            "the base branch fails landing.verify at {on}; the revert of its first bad commit {commit} is proposed as a pull request: {url}"
        ),
        EventBody::VerifyReported { commit, reason, .. } => format!(
            "the base branch fails landing.verify and its first bad commit {commit} was not made by abo: reported, not reverted ({reason})"
        ),
        other => other.kind().to_owned(),
    };
    format!("abo run {run}{task}: {what}")
}

/// Delivers the events of `stored` that a channel wants, in the background; the handles let the
/// process wait for deliveries in flight before it exits.
pub fn dispatch(
    ctx: &Arc<Ctx>,
    spec: &NotifySpec,
    secret_env: &[String],
    stored: &[StoredEvent],
) -> Vec<tokio::task::JoinHandle<()>> {
    dispatch_unless(ctx, spec, secret_env, stored, |_, _, _| false)
}

/// Delivers what a finished run owes: the notifications of the events from its last
/// `run.finished` on that have no `notify.sent` (the process died before they were delivered).
pub fn dispatch_owed(
    ctx: &Arc<Ctx>,
    spec: &NotifySpec,
    secret_env: &[String],
    log: &[StoredEvent],
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(from) = log
        .iter()
        .rposition(|e| matches!(e.event.body, EventBody::RunFinished { .. }))
    else {
        return Vec::new();
    };
    let sent: std::collections::BTreeSet<(u64, String, String)> = log
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::NotifySent {
                channel,
                target,
                seq,
                ..
            } => Some((*seq, channel.clone(), target.clone())),
            _ => None,
        })
        .collect();
    dispatch_unless(
        ctx,
        spec,
        secret_env,
        &log[from..],
        |seq, channel, target| sent.contains(&(seq, channel.to_owned(), target.to_owned())),
    )
}

fn dispatch_unless(
    ctx: &Arc<Ctx>,
    spec: &NotifySpec,
    secret_env: &[String],
    stored: &[StoredEvent],
    done: impl Fn(u64, &str, &str) -> bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for e in stored {
        let kind = e.event.body.kind();
        if kind == "notify.sent" {
            continue;
        }
        let dashboard = spec.dashboard_url.clone();
        for w in &spec.webhooks {
            if NotifySpec::wants(&w.events, kind) && !done(e.seq, "webhook", &w.url) {
                let (ctx, w, e) = (Arc::clone(ctx), w.clone(), e.clone());
                let redactor = Redactor::from_process_env(secret_env);
                let dashboard = dashboard.clone();
                handles.push(tokio::spawn(async move {
                    webhook(&ctx, &w, &e, dashboard.as_deref(), &redactor).await
                }));
            }
        }
        if let Some(m) = &spec.email
            && NotifySpec::wants(&m.events, kind)
            && !done(e.seq, "email", &m.to.join(", "))
        {
            let (ctx, m, e) = (Arc::clone(ctx), m.clone(), e.clone());
            handles.push(tokio::spawn(async move {
                email(&ctx, &m, &e, dashboard.as_deref()).await
            }));
        }
    }
    handles
}

async fn record(
    ctx: &Ctx,
    e: &StoredEvent,
    channel: &str,
    target: String,
    result: (bool, u32, String),
) {
    let (ok, tries, detail) = result;
    let ev = Event {
        run: e.event.run.clone(),
        task: e.event.task.clone(),
        at: ctx.now(),
        body: EventBody::NotifySent {
            channel: channel.into(),
            target,
            seq: e.seq,
            event: e.event.body.kind().into(),
            ok,
            tries,
            detail,
        },
    };
    let _ = ctx.store.append(&[ev]).await;
}

/// A webhook's body: Slack's `{"text"}` or the event as JSON; a waiting approval's carries the
/// link to its task's page, and a decision's its question and options (`decision`).
fn webhook_body(w: &WebhookSpec, e: &StoredEvent, dashboard: Option<&str>) -> String {
    let waiting = decision::Waiting::of(e, dashboard);
    match w.format.as_str() {
        "slack" => {
            let mut text = slack_text(&headline(e));
            if let Some(w) = &waiting {
                text.push_str(&w.slack_lines());
            }
            serde_json::json!({ "text": text }).to_string()
        }
        _ => {
            let mut doc = e.to_json();
            if let (Some(w), Some(o)) = (&waiting, doc.as_object_mut())
                && let serde_json::Value::Object(extra) = w.json()
            {
                o.extend(extra);
            }
            doc.to_string()
        }
    }
}

async fn webhook(
    ctx: &Ctx,
    w: &WebhookSpec,
    e: &StoredEvent,
    dashboard: Option<&str>,
    redactor: &Redactor,
) {
    let body = webhook_body(w, e, dashboard);
    let body = redactor.redact(&body);
    let signature = w
        .secret_env
        .as_deref()
        .and_then(|v| std::env::var(v).ok())
        .map(|key| format!("sha256={}", sign(key.as_bytes(), body.as_bytes())));
    let mut last = String::new();
    let mut delay = BACKOFF;
    for attempt in 1..=TRIES {
        let mut req = ctx
            .http()
            .post(&w.url)
            .header("content-type", "application/json")
            .header("x-abo-event", e.event.body.kind())
            .header("x-abo-delivery", format!("{}-{}", e.seq, attempt))
            .timeout(Duration::from_secs(10))
            .body(body.clone());
        if let Some(s) = &signature {
            req = req.header("x-abo-signature", s);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                record(
                    ctx,
                    e,
                    "webhook",
                    w.url.clone(),
                    (true, attempt, format!("HTTP {}", r.status().as_u16())),
                )
                .await;
                return;
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(err) => last = err.to_string(),
        }
        if attempt < TRIES {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    record(ctx, e, "webhook", w.url.clone(), (false, TRIES, last)).await;
}

async fn email(ctx: &Ctx, m: &EmailSpec, e: &StoredEvent, dashboard: Option<&str>) {
    let subject = headline(e);
    let lead = decision::Waiting::of(e, dashboard)
        .map(|w| w.text_lines())
        .unwrap_or_default();
    let body = format!(
        "{lead}{}",
        serde_json::to_string_pretty(&e.to_json()).unwrap_or_default()
    );
    let mut last = String::new();
    let mut delay = BACKOFF;
    for attempt in 1..=TRIES {
        match smtp_send(&m.smtp, &m.from, &m.to, &subject, &body).await {
            Ok(()) => {
                record(
                    ctx,
                    e,
                    "email",
                    m.to.join(", "),
                    (true, attempt, "sent".into()),
                )
                .await;
                return;
            }
            Err(err) => last = err,
        }
        if attempt < TRIES {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    record(ctx, e, "email", m.to.join(", "), (false, TRIES, last)).await;
}

/// The daily digest (`notify.digest`, `abo summary --notify`): the summary's text to every webhook
/// (`{"text": ...}` for Slack-compatible ones, `{"kind": "digest", "text", "summary"}` otherwise,
/// signed as events are) and as an email, with the same retries as events. Returns each channel
/// with what happened.
pub async fn digest(
    ctx: &Ctx,
    spec: &abo_core::spec::NotifySpec,
    subject: &str,
    text: &str,
    summary: &serde_json::Value,
) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    for w in &spec.webhooks {
        let body = match w.format.as_str() {
            "slack" => serde_json::json!({ "text": slack_text(&format!("{subject}\n{text}")) }),
            _ => serde_json::json!({ "kind": "digest", "subject": subject, "text": text, "summary": summary }),
        }
        .to_string();
        let signature = w
            .secret_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .map(|key| format!("sha256={}", sign(key.as_bytes(), body.as_bytes())));
        let mut last = Err(String::new());
        let mut delay = BACKOFF;
        for attempt in 1..=TRIES {
            let mut req = ctx
                .http()
                .post(&w.url)
                .header("content-type", "application/json")
                .header("x-abo-event", "digest")
                .timeout(Duration::from_secs(10))
                .body(body.clone());
            if let Some(s) = &signature {
                req = req.header("x-abo-signature", s);
            }
            last = match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Err(e.to_string()),
            };
            if last.is_ok() {
                break;
            }
            if attempt < TRIES {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        out.push((w.url.clone(), last));
    }
    if let Some(m) = &spec.email {
        let mut last = Err(String::new());
        let mut delay = BACKOFF;
        for attempt in 1..=TRIES {
            last = smtp_send(&m.smtp, &m.from, &m.to, subject, text).await;
            if last.is_ok() {
                break;
            }
            if attempt < TRIES {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        out.push((m.to.join(", "), last));
    }
    out
}

/// A plain SMTP exchange (RFC 5321): EHLO, MAIL FROM, RCPT TO, DATA, QUIT.
pub async fn smtp_send(
    server: &str,
    from: &str,
    to: &[String],
    subject: &str,
    body: &str,
) -> Result<(), String> {
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(server),
    )
    .await
    .map_err(|_| format!("{server}: timed out"))?
    .map_err(|e| format!("{server}: {e}"))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn expect(
        r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        code: &str,
    ) -> Result<(), String> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err("the server closed the connection".into());
            }
            if !line.starts_with(code) {
                return Err(format!("expected {code}, got: {}", line.trim()));
            }
            // `250-...` continues; `250 ...` ends the reply.
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
    async fn send(w: &mut tokio::net::tcp::OwnedWriteHalf, s: String) -> Result<(), String> {
        w.write_all(s.as_bytes()).await.map_err(|e| e.to_string())
    }
    expect(&mut r, "220").await?;
    send(&mut w, "EHLO abo\r\n".into()).await?;
    expect(&mut r, "250").await?;
    send(&mut w, format!("MAIL FROM:<{from}>\r\n")).await?;
    expect(&mut r, "250").await?;
    for t in to {
        send(&mut w, format!("RCPT TO:<{t}>\r\n")).await?;
        expect(&mut r, "25").await?;
    }
    send(&mut w, "DATA\r\n".into()).await?;
    expect(&mut r, "354").await?;
    let text = data(body);
    send(&mut w, format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}.\r\n",
        to.join(", "),
        subject.replace(['\r', '\n'], " ")
    ))
    .await?;
    expect(&mut r, "250").await?;
    send(&mut w, "QUIT\r\n".into()).await?;
    Ok(())
}

/// A message's text as SMTP's DATA carries it: every line ended by CRLF, a line starting with a
/// dot doubled (dot-stuffing), and no carriage return anywhere else. A bare CR in the text (a path
/// or a reason holds whatever the agent named) would let `\r.\r\n` end the message early on a
/// server that reads a lone CR as a line end, and what follows pass for SMTP commands of
/// abo's session (SMTP smuggling): each is sent as a space.
fn data(body: &str) -> String {
    body.lines()
        .map(|l| {
            let l = l.replace('\r', " ");
            if l.starts_with('.') {
                format!(".{l}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attack: a reason whose text ends the message at a lone CR and goes on with SMTP
    /// commands. Every CR abo sends ends a line; the control, the text's lines as they are, keeps
    /// the `\r.\r\n` that ends DATA on such a server.
    #[test]
    fn a_bare_carriage_return_never_reaches_smtp() {
        let reason = "waits for approval: x\r.\r\nMAIL FROM:<ceo@example.test>\r\nRCPT TO:<all@example.test>\r\nDATA\r\n.starts with a dot";
        let sent = data(reason);
        let bytes = sent.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\r' {
                assert_eq!(bytes.get(i + 1), Some(&b'\n'), "a bare CR at {i}: {sent:?}");
            }
        }
        assert!(
            !sent.contains("\r\n.\r\n") && !sent.contains("\r.\r"),
            "{sent:?}"
        );
        assert!(sent.contains("\r\n..starts with a dot\r\n"), "{sent:?}");

        let naive: String = reason.lines().map(|l| format!("{l}\r\n")).collect();
        assert!(
            naive.contains("\r.\r\n"),
            "the control carries the early end"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
