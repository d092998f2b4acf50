//! Schedules: the time windows in which attempts may start (`22:00-07:00`,
//! wrapping past midnight), and cron expressions (`minute hour day-of-month month day-of-week`)
//! on which `abo daemon` starts backlogs. Pure: the runtime supplies the local time.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A daily window, in minutes since midnight: `[start, end)`, wrapping when `end <= start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hm = |t: &str| -> Result<u16, String> {
            let (h, m) = t
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
            let h: u16 = h.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
            let m: u16 = m.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(format!("`{t}` is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a window like 22:00-07:00"))?;
        Ok(Self {
            start: hm(a)?,
            end: hm(b)?,
        })
    }

    /// Whether `minute` (since midnight) falls inside.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// One field of a cron expression: the values it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field(Vec<bool>);

impl Field {
    fn parse(s: &str, lo: u32, hi: u32, name: &str) -> Result<Self, String> {
        let mut allowed = vec![false; (hi + 1) as usize];
        for part in s.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (
                    r,
                    st.parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("{name}: bad step in `{part}`"))?,
                ),
                None => (part, 1),
            };
            let (a, b) = if range == "*" {
                (lo, hi)
            } else if let Some((a, b)) = range.split_once('-') {
                let p = |v: &str| {
                    v.parse::<u32>()
                        .map_err(|_| format!("{name}: `{part}` is not a number"))
                };
                (p(a)?, p(b)?)
            } else {
                let v = range
                    .parse::<u32>()
                    .map_err(|_| format!("{name}: `{part}` is not a number"))?;
                (v, if part.contains('/') { hi } else { v })
            };
            if a < lo || b > hi || a > b {
                return Err(format!("{name}: `{part}` is outside {lo}-{hi}"));
            }
            let mut v = a;
            while v <= b {
                allowed[v as usize] = true;
                v += step;
            }
        }
        Ok(Self(allowed))
    }

    fn has(&self, v: u32) -> bool {
        self.0.get(v as usize).copied().unwrap_or(false)
    }

    fn all(&self, lo: u32) -> bool {
        self.0.iter().skip(lo as usize).all(|b| *b)
    }
}

/// A five-field cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

/// A local date and time, as the runtime reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub month: u32,
    pub day: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    pub hour: u32,
    pub minute: u32,
}

impl Cron {
    pub fn parse(s: &str) -> Result<Self, String> {
        let f: Vec<&str> = s.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = f.as_slice() else {
            return Err(format!(
                "`{s}` has {} fields; a cron expression has five: minute hour day-of-month month day-of-week",
                f.len()
            ));
        };
        Ok(Self {
            minute: Field::parse(mi, 0, 59, "minute")?,
            hour: Field::parse(h, 0, 23, "hour")?,
            dom: Field::parse(dom, 1, 31, "day of month")?,
            month: Field::parse(mo, 1, 12, "month")?,
            // 7 is Sunday too.
            dow: {
                let mut d = Field::parse(dow, 0, 7, "day of week")?;
                if d.has(7) {
                    d.0[0] = true;
                }
                d
            },
        })
    }

    /// Whether the expression fires at this minute. As in cron, when both day fields are
    /// restricted, either may match.
    pub fn matches(&self, t: LocalTime) -> bool {
        let day = match (self.dom.all(1), self.dow.all(0)) {
            (true, true) => true,
            (true, false) => self.dow.has(t.weekday),
            (false, true) => self.dom.has(t.day),
            (false, false) => self.dom.has(t.day) || self.dow.has(t.weekday),
        };
        self.minute.has(t.minute) && self.hour.has(t.hour) && self.month.has(t.month) && day
    }
}

/// When something recurs: on a cron expression, or every interval (`landing.verify_schedule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Every {
    Cron(Cron),
    /// Milliseconds between two.
    Interval(u64),
}

impl Every {
    /// Parses a duration (`30m`, `1s`) or a cron expression (`0 3 * * *`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.split_whitespace().count() == 1 {
            let d = crate::units::Dur::parse(s)?;
            if d.as_millis() == 0 {
                return Err(format!("`{s}` is no interval: it must be longer than 0"));
            }
            return Ok(Self::Interval(d.as_millis()));
        }
        Cron::parse(s).map(Self::Cron)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(weekday: u32, hour: u32, minute: u32) -> LocalTime {
        LocalTime {
            month: 11,
            day: 22,
            weekday,
            hour,
            minute,
        }
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w = Window::parse("22:00-07:00").unwrap();
        assert!(w.contains(23 * 60) && w.contains(0) && w.contains(6 * 60 + 59));
        assert!(!w.contains(7 * 60) && !w.contains(12 * 60));
        let d = Window::parse("09:30-17:00").unwrap();
        assert!(d.contains(9 * 60 + 30) && !d.contains(17 * 60));
        assert_eq!(d.to_string(), "09:30-17:00");
        assert!(
            Window::parse("25:00-01:00")
                .unwrap_err()
                .contains("not a time")
        );
        assert!(Window::parse("22:00").unwrap_err().contains("not a window"));
    }

    #[test]
    fn cron_fields_lists_ranges_and_steps() {
        let c = Cron::parse("*/15 22 * * 1-5").unwrap();
        assert!(c.matches(at(1, 22, 45)));
        assert!(!c.matches(at(1, 22, 50)));
        assert!(!c.matches(at(0, 22, 0)), "not on Sunday");
        let c = Cron::parse("0 9,18 1 * 0").unwrap();
        assert!(
            !c.matches(at(3, 9, 0)),
            "a Wednesday the 22nd: neither day field"
        );
        assert!(c.matches(at(0, 9, 0)));
        assert!(c.matches(at(0, 18, 0)), "Sunday, either day field matches");
        assert!(Cron::parse("* * *").unwrap_err().contains("five"));
        assert!(Cron::parse("61 * * * *").unwrap_err().contains("minute"));
        assert!(Cron::parse("* * * * 7").unwrap().matches(at(0, 3, 3)));
    }
}
