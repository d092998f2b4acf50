//! Numbers as a person reads them: money `$18.42`, tokens `12,340` or `1.2M`, durations `1h 05m`,
//! ages `12 min ago`. One place for the dashboard, `abo status`, `abo summary` and notifications;
//! JSON keeps the raw numbers. Pure: the time "now" is passed in.

use crate::ids::Timestamp;

/// Dollars: `$18.42`, `$1,204.50`; amounts under a cent keep their figures (`$0.0042`) rather
/// than showing as `$0.00`.
pub fn usd(v: f64) -> String {
    if !v.is_finite() {
        return "$?".to_owned();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a > 0.0 && a < 0.01 {
        return format!("{sign}${a:.4}");
    }
    let cents = (a * 100.0).round();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative finite amount of cents, rounded"
    )]
    let cents = cents as u64;
    format!("{sign}${}.{:02}", grouped(cents / 100), cents % 100)
}

/// Tokens: exact with thousands separators under a million (`12,340`), then `1.2M`, `3.4B`.
pub fn tokens(n: u64) -> String {
    #[allow(
        clippy::cast_precision_loss,
        reason = "one decimal of millions is shown"
    )]
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.1}B", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1}M", f / 1e6)
    } else {
        grouped(n)
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in milliseconds: `850 ms`, `42s`, `12m 05s`, `1h 05m`, `2d 03h`.
pub fn duration_ms(ms: u64) -> String {
    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    if ms < S {
        format!("{ms} ms")
    } else if ms < M {
        format!("{}s", ms / S)
    } else if ms < H {
        format!("{}m {:02}s", ms / M, ms % M / S)
    } else if ms < D {
        format!("{}h {:02}m", ms / H, ms % H / M)
    } else {
        format!("{}d {:02}h", ms / D, ms % D / H)
    }
}

/// How long ago `then` was at `now`: `just now`, `12 min ago`, `3 h ago`, `2 days ago`; a time
/// ahead of `now` reads `in 5 min`.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let d = now.0 - then.0;
    let (ahead, ms) = (d < 0, d.unsigned_abs());
    let span = if ms < 45_000 {
        return "just now".to_owned();
    } else if ms < 3_600_000 {
        format!("{} min", (ms + 30_000) / 60_000)
    } else if ms < 86_400_000 {
        format!("{} h", (ms + 1_800_000) / 3_600_000)
    } else {
        let days = (ms + 43_200_000) / 86_400_000;
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    };
    if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A share of a limit as a whole percentage, capped at 100 for bars (`None`: no limit).
pub fn percent(spent: f64, limit: f64) -> Option<u32> {
    if limit.is_nan() || limit <= 0.0 || !spent.is_finite() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to 0..=100"
    )]
    Some((spent / limit * 100.0).round().clamp(0.0, 100.0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money() {
        for (v, want) in [
            (18.4213, "$18.42"),
            (0.0, "$0.00"),
            (0.0042, "$0.0042"),
            (0.005, "$0.0050"),
            (1204.5, "$1,204.50"),
            (1_000_000.0, "$1,000,000.00"),
            (-2.5, "-$2.50"),
            (0.999, "$1.00"),
            (f64::NAN, "$?"),
        ] {
            assert_eq!(usd(v), want, "{v}");
        }
    }

    #[test]
    fn token_counts() {
        for (n, want) in [
            (0, "0"),
            (999, "999"),
            (12_340, "12,340"),
            (332, "332"),
            (100_000, "100,000"),
            (999_999, "999,999"),
            (1_200_000, "1.2M"),
            (28_800_000, "28.8M"),
            (3_400_000_000, "3.4B"),
        ] {
            assert_eq!(tokens(n), want, "{n}");
        }
    }

    #[test]
    fn durations() {
        for (ms, want) in [
            (0, "0 ms"),
            (850, "850 ms"),
            (1008, "1s"),
            (42_000, "42s"),
            (725_000, "12m 05s"),
            (3_900_000, "1h 05m"),
            (28_800_000, "8h 00m"),
            (183_600_000, "2d 03h"),
        ] {
            assert_eq!(duration_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn ages() {
        let now = Timestamp(10_000_000_000);
        for (back, want) in [
            (0, "just now"),
            (44_000, "just now"),
            (12 * 60_000, "12 min ago"),
            (3 * 3_600_000, "3 h ago"),
            (86_400_000, "1 day ago"),
            (3 * 86_400_000, "3 days ago"),
            (-5 * 60_000, "in 5 min"),
        ] {
            assert_eq!(age(now, Timestamp(now.0 - back)), want, "{back}");
        }
    }

    #[test]
    fn percents() {
        assert_eq!(percent(5.0, 50.0), Some(10));
        assert_eq!(percent(80.0, 50.0), Some(100));
        assert_eq!(percent(1.0, 0.0), None);
    }
}
