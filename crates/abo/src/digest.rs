//! The "coming home" digest: the summary of the last 24 hours sent to `notify:`'s webhooks and
//! email, daily at `notify.digest` by `abo daemon`, or now by `abo summary --notify`.

use abo_core::report::Summary;
use abo_core::schedule::Cron;
use abo_core::spec::NotifySpec;
use abo_runtime::Ctx;

use crate::exit::Usage;
use crate::out::{note, say};

/// `notify.digest`'s `HH:MM` as the cron expression of that minute, every day.
pub(crate) fn cron(at: &str) -> anyhow::Result<Cron> {
    let bad = || {
        Usage::new(format!(
            "abo.yml: notify.digest: `{at}` is not a time of day"
        ))
        .hint("write it HH:MM, as \"07:30\"")
    };
    let (h, m) = at.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad().into());
    }
    Ok(Cron::parse(&format!("{m} {h} * * *")).map_err(|_| bad())?)
}

/// Sends the summary to every channel; says how each went and returns how many failed.
pub(crate) async fn send(ctx: &Ctx, spec: &NotifySpec, s: &Summary) -> usize {
    let subject = format!(
        "abo: {} landed, {} waiting for you, {} failed; {}",
        s.landed.len(),
        s.waiting.len(),
        s.failed.len(),
        abo_core::human::usd(s.cost_usd)
    );
    let text = abo_core::home::text(s, None);
    let summary = serde_json::to_value(s).unwrap_or_default();
    let sent = abo_runtime::notify::digest(ctx, spec, &subject, &text, &summary).await;
    if sent.is_empty() {
        note!("notify: no webhook or email is configured: nothing sent");
    }
    let mut failed = 0;
    for (to, r) in sent {
        match r {
            Ok(()) => say!("digest sent to {to}"),
            Err(e) => {
                failed += 1;
                note!("digest to {to} failed: {e}");
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_time_is_a_minute_of_every_day() {
        assert!(cron("07:30").is_ok());
        assert!(cron("23:59").is_ok());
        for bad in ["7h30", "24:00", "07:60", "", "noon"] {
            let e = cron(bad).unwrap_err().to_string();
            assert!(e.contains("notify.digest"), "{bad}: {e}");
        }
    }
}
