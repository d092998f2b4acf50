//! The part of a prompt that comes from the knowledge index: the files and symbols most relevant
//! to the task, similar tasks that landed (short examples) and failures to avoid, each with why it
//! was chosen, within its own share of the prompt's token budget (items that do not fit are left
//! out, the best first kept).

use crate::backends::prompt::Tokens;
use crate::knowledge::query::{Context, Example};

/// Files listed, at most.
const FILES: usize = 10;
/// Characters of a past task's text shown.
const EXAMPLE_CHARS: usize = 400;

fn short(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn shared(e: &Example) -> String {
    e.shared
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

const INTRO: &str = "\n## What abo's index of the repository says about this task\n\nChosen by full-text search over the code, docs and history, the symbols the task names, and the reference graph; each item says why.\n";

fn example(e: &Example) -> String {
    format!(
        "- \"{}\" (chosen as it shares {}):\n  {}\n",
        e.title,
        shared(e),
        short(&e.body, EXAMPLE_CHARS).replace('\n', "\n  ")
    )
}

/// The section, at most `budget` tokens; empty when the index knows nothing of the task or
/// nothing fits.
pub fn render(ctx: &Context, budget: usize, tokens: &dyn Tokens) -> String {
    let files: Vec<String> = ctx
        .files
        .iter()
        .take(FILES)
        .map(|r| {
            let why = r
                .why
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let mut item = format!("- `{}`: {why}.\n", r.path);
            if let Some(defs) = ctx.symbols.get(&r.path) {
                let d: Vec<String> = defs
                    .iter()
                    .map(|(name, kind, line)| format!("{kind} `{name}` (line {line})"))
                    .collect();
                item.push_str(&format!("  Defines: {}.\n", d.join(", ")));
            }
            item
        })
        .collect();
    let sections = [
        ("\n### Files most relevant to the task, and why\n\n", files),
        (
            "\n### Similar tasks that landed (examples)\n\n",
            ctx.landed.iter().map(example).collect(),
        ),
        (
            "\n### Failures to avoid (similar tasks that failed)\n\n",
            ctx.failed.iter().map(example).collect(),
        ),
    ];
    let mut out = String::from(INTRO);
    let mut used = tokens.count(INTRO);
    let mut any = false;
    for (head, items) in sections {
        let mut section = String::new();
        let mut cost = tokens.count(head);
        for item in items {
            let c = tokens.count(&item);
            // An item that does not fit is left out; a shorter later one may still fit.
            if used + cost + c <= budget {
                cost += c;
                section.push_str(&item);
            }
        }
        if !section.is_empty() {
            out.push_str(head);
            out.push_str(&section);
            used += cost;
            any = true;
        }
    }
    if any { out } else { String::new() }
}
