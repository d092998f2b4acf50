//! The "coming home" summary as text for a person: `abo summary` and the daily digest
//! (`notify.digest`). Each task with its cost, attempts and time, the reason in one line, and the
//! actions that fit its state, as commands and, when the dashboard's address is known, as links.

use crate::human;
use crate::report::{Item, Summary};

/// What a person can do about an item, by its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Landed,
    Waiting,
    Failed,
}

impl Section {
    pub fn heading(self) -> &'static str {
        match self {
            Self::Landed => "landed",
            Self::Waiting => "waiting for you",
            Self::Failed => "failed",
        }
    }
}

/// One line of figures: `$0.50 · 2 attempts · 3m 00s`.
pub fn figures(i: &Item) -> String {
    let attempts = match i.attempts {
        0 => "not started".to_owned(),
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let mut out = format!("{} · {attempts}", human::usd(i.cost_usd));
    if i.elapsed_ms > 0 {
        out.push_str(" · ");
        out.push_str(&human::duration_ms(i.elapsed_ms));
    }
    out
}

/// The reason (or commit, or question) on one line, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// The commands that fit an item.
pub fn actions(section: Section, i: &Item) -> Vec<String> {
    match section {
        Section::Landed => vec![format!(
            "view the diff: git show {}",
            i.commit.as_deref().unwrap_or(&i.detail)
        )],
        Section::Waiting => {
            let id = i.approval.as_deref().unwrap_or(i.task.as_str());
            vec![
                format!("approve: abo approve {id} --reason TEXT"),
                format!("skip: abo reject {id} --reason TEXT"),
            ]
        }
        Section::Failed => vec![format!("retry: abo retry {} --run {}", i.task, i.run)],
    }
}

/// The whole summary as plain text; `dashboard` (its base URL) adds a link to each task's page.
pub fn text(s: &Summary, dashboard: Option<&str>) -> String {
    let reviews = if s.review_cost_usd > 0.0 {
        format!(" (reviews {})", human::usd(s.review_cost_usd))
    } else {
        String::new()
    };
    let mut out = format!(
        "since {}: {} landed, {} waiting for you, {} failed; {}{reviews}, {} tokens\n",
        s.since,
        s.landed.len(),
        s.waiting.len(),
        s.failed.len(),
        human::usd(s.cost_usd),
        human::tokens(s.tokens)
    );
    for (section, items) in [
        (Section::Landed, &s.landed),
        (Section::Waiting, &s.waiting),
        (Section::Failed, &s.failed),
    ] {
        if items.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{}:\n", section.heading()));
        for i in items {
            out.push_str(&format!(
                "  {} {} ({}) · {}\n    {}\n",
                i.run,
                i.task,
                one_line(&i.title, 60),
                figures(i),
                one_line(&i.detail, 160)
            ));
            for a in actions(section, i) {
                out.push_str(&format!("    {a}\n"));
            }
            if let Some(base) = dashboard {
                out.push_str(&format!(
                    "    open: {}/runs/{}/tasks/{}\n",
                    base.trim_end_matches('/'),
                    i.run,
                    i.task
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RunId, TaskId};

    fn item(task: &str, detail: &str) -> Item {
        Item {
            run: RunId::new("r1"),
            task: TaskId::new(task),
            title: "A  title\nwith a break".into(),
            detail: detail.into(),
            cost_usd: 0.5,
            attempts: 2,
            elapsed_ms: 180_000,
            commit: None,
            approval: None,
        }
    }

    #[test]
    fn the_summary_reads_with_figures_reasons_and_actions() {
        let s = Summary {
            since: "2026-12-01T00:00:00Z".into(),
            landed: vec![Item {
                commit: Some("abcdef1234567890".into()),
                ..item("a", "abcdef1234")
            }],
            waiting: vec![Item {
                approval: Some("r1/d/1".into()),
                attempts: 1,
                elapsed_ms: 0,
                ..item("d", "r1/d/1 (merge): lockfile")
            }],
            failed: vec![item("c", "gate `test` failed:\n  3 tests failed")],
            cost_usd: 18.4213,
            review_cost_usd: 0.0,
            tokens: 1_234_567,
        };
        expect_test::expect![[r#"
            since 2026-12-01T00:00:00Z: 1 landed, 1 waiting for you, 1 failed; $18.42, 1.2M tokens

            landed:
              r1 a (A title with a break) · $0.50 · 2 attempts · 3m 00s
                abcdef1234
                view the diff: git show abcdef1234567890
                open: http://abo:3100/runs/r1/tasks/a

            waiting for you:
              r1 d (A title with a break) · $0.50 · 1 attempt
                r1/d/1 (merge): lockfile
                approve: abo approve r1/d/1 --reason TEXT
                skip: abo reject r1/d/1 --reason TEXT
                open: http://abo:3100/runs/r1/tasks/d

            failed:
              r1 c (A title with a break) · $0.50 · 2 attempts · 3m 00s
                gate `test` failed: 3 tests failed
                retry: abo retry c --run r1
                open: http://abo:3100/runs/r1/tasks/c
        "#]]
        .assert_eq(&text(&s, Some("http://abo:3100/")));
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
