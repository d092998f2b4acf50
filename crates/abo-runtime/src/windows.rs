//! The day and the week the daily and weekly caps count, in the budget's time zone (local time
//! unless `budgets.timezone` names one), and what other runs of the store spent in them.

use abo_core::budget::{Amount, Window, Windows};
use abo_core::ids::{RunId, Timestamp};
use abo_store::Store;
use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};

/// The time zone of a budget: the IANA name given, or the system's.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        Some(n) => TimeZone::get(n).map_err(|e| format!("unknown time zone `{n}`: {e}")),
        None => Ok(TimeZone::system()),
    }
}

/// (start, end) of the day and of the week (Monday to Monday) holding `now`, in `tz`.
pub fn bounds(now: Timestamp, tz: &TimeZone) -> Result<[(Timestamp, Timestamp); 2], String> {
    let ts = jiff::Timestamp::from_millisecond(now.0).map_err(|e| e.to_string())?;
    let z = Zoned::new(ts, tz.clone());
    let day = z.start_of_day().map_err(|e| e.to_string())?;
    let next_day = day
        .tomorrow()
        .map_err(|e| e.to_string())?
        .start_of_day()
        .map_err(|e| e.to_string())?;
    let back = i64::from(day.weekday().to_monday_zero_offset());
    let week = day
        .checked_sub(back.days())
        .map_err(|e| e.to_string())?
        .start_of_day()
        .map_err(|e| e.to_string())?;
    let next_week = week
        .checked_add(7.days())
        .map_err(|e| e.to_string())?
        .start_of_day()
        .map_err(|e| e.to_string())?;
    let ms = |z: &Zoned| Timestamp(z.timestamp().as_millisecond());
    Ok([(ms(&day), ms(&next_day)), (ms(&week), ms(&next_week))])
}

/// The local date and time of `now` in `tz`, for cron expressions and schedule windows.
pub fn local(now: Timestamp, tz: &TimeZone) -> Result<abo_core::schedule::LocalTime, String> {
    let ts = jiff::Timestamp::from_millisecond(now.0).map_err(|e| e.to_string())?;
    let z = Zoned::new(ts, tz.clone());
    Ok(abo_core::schedule::LocalTime {
        month: u32::try_from(z.month()).unwrap_or(1),
        day: u32::try_from(z.day()).unwrap_or(1),
        weekday: u32::from(z.weekday().to_sunday_zero_offset().unsigned_abs()),
        hour: u32::try_from(z.hour()).unwrap_or(0),
        minute: u32::try_from(z.minute()).unwrap_or(0),
    })
}

/// Whether a cron expression fires at a minute in `(from, to]`, local time (at most a day back).
pub fn fired(
    cron: &abo_core::schedule::Cron,
    from: Timestamp,
    to: Timestamp,
    tz: &TimeZone,
) -> bool {
    const MINUTE: i64 = 60_000;
    let first = (from.0 / MINUTE + 1).max(to.0 / MINUTE - 24 * 60);
    (first..=to.0 / MINUTE).any(|m| local(Timestamp(m * MINUTE), tz).is_ok_and(|t| cron.matches(t)))
}

/// Why `now` is outside every window of the schedule (`None`: inside one, or no windows).
pub fn outside(s: &abo_core::spec::ScheduleSpec, now: Timestamp) -> Option<String> {
    if s.windows.is_empty() {
        return None;
    }
    let tz = zone(s.timezone.as_deref()).unwrap_or(TimeZone::UTC);
    let t = local(now, &tz).ok()?;
    let minute = u16::try_from(t.hour * 60 + t.minute).unwrap_or(0);
    if s.windows.iter().any(|w| w.contains(minute)) {
        return None;
    }
    let list: Vec<String> = s.windows.iter().map(ToString::to_string).collect();
    Some(format!(
        "outside the windows {} ({:02}:{:02} now)",
        list.join(", "),
        t.hour,
        t.minute
    ))
}

/// The windows of `now` with what other runs hold in them.
pub async fn load(
    store: &Store,
    run: &RunId,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Windows, String> {
    let [day, week] = bounds(now, tz)?;
    let mut out = [Window::default(), Window::default()];
    for (w, (start, end)) in out.iter_mut().zip([day, week]) {
        let (usd, tokens) = store
            .window_spend(run, start)
            .await
            .map_err(|e| e.to_string())?;
        w.start = start;
        w.end = end;
        w.others = Amount { usd, tokens };
        w.alerted = store.alerts_since(start).await.map_err(|e| e.to_string())?;
    }
    let [day, week] = out;
    Ok(Windows { day, week })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_weeks_follow_the_zone() {
        // 2026-11-22 is a Sunday; 23:30 in New York is 04:30 UTC the next day.
        let tz = zone(Some("America/New_York")).unwrap();
        let now = jiff::Timestamp::from_second(1_795_408_200).unwrap(); // 2026-11-23T04:30:00Z
        let [(d0, d1), (w0, w1)] = bounds(Timestamp(now.as_millisecond()), &tz).unwrap();
        let iso = |t: Timestamp| {
            jiff::Timestamp::from_millisecond(t.0)
                .unwrap()
                .to_zoned(tz.clone())
                .to_string()
        };
        assert_eq!(iso(d0), "2026-11-22T00:00:00-05:00[America/New_York]");
        assert_eq!(iso(d1), "2026-11-23T00:00:00-05:00[America/New_York]");
        assert_eq!(iso(w0), "2026-11-16T00:00:00-05:00[America/New_York]");
        assert_eq!(iso(w1), "2026-11-23T00:00:00-05:00[America/New_York]");
        assert!(
            zone(Some("Mars/Olympus"))
                .unwrap_err()
                .contains("Mars/Olympus")
        );
    }
}
