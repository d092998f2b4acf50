//! The "coming home" page: per task its cost, attempts, time and reason on one line, with the
//! actions that fit its state: view the diff, open the pull request, approve or skip, retry.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State as St;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use abo_core::home::{Section, figures, one_line};
use abo_core::human;
use abo_core::report::{Item, Key, SUMMARY_KINDS, Summary, Tally, summary_since};

use crate::State;
use crate::dashboard::{esc, page, viewer};
use crate::error::ApiError;

fn card(section: Section, i: &Item, prs: &BTreeMap<String, String>) -> String {
    let (run, task) = (esc(i.run.as_str()), esc(i.task.as_str()));
    let mut actions = format!("<a href=\"/runs/{run}/tasks/{task}\">view the diff</a>");
    match section {
        Section::Landed => {
            if let Some(pr) = prs.get(i.run.as_str()) {
                let _ = write!(
                    actions,
                    " <a href=\"{0}\" rel=noopener>open the pull request</a>",
                    esc(pr)
                );
            }
        }
        Section::Waiting => {
            let id = esc(i.approval.as_deref().unwrap_or(i.task.as_str()));
            let _ = write!(
                actions,
                "<textarea id=\"reason-{id}\" placeholder=\"your reason (required)\"></textarea><button data-decide=\"{id}\" data-approve=true>Approve</button><button data-decide=\"{id}\" data-approve=false>Skip</button>"
            );
        }
        Section::Failed => {
            let _ = write!(
                actions,
                " <button data-act=\"/v1/tasks/{task}/retry?run={run}\" data-confirm=\"Retry {task} with fresh attempts?\">Retry</button>"
            );
        }
    }
    format!(
        "<div class=card data-item=\"{run}/{task}\"><b>{task}</b> {title} <small>in <a href=\"/runs/{run}\">{run}</a></small><br><span class=figures>{fig}</span><br><span class=reason>{reason}</span><p class=actions>{actions}</p></div>",
        title = esc(&one_line(&i.title, 80)),
        fig = esc(&figures(i)),
        reason = esc(&one_line(&i.detail, 200)),
    )
}

/// Items per section the page lists (each with its figures); `abo summary` lists them all.
const SHOWN: usize = 50;

/// The summary of every run since `since`, read from the events of its window alone (index
/// `events_kind_ts`) and, for the first `each` items of each section, the task's figures from its
/// row and its first start: never the whole log, so a store holding a run of 10,000 tasks costs
/// what its window holds.
pub async fn load(
    store: &abo_store::Store,
    since: abo_core::ids::Timestamp,
    each: usize,
) -> Result<Summary, ApiError> {
    let events = store.events_since(&SUMMARY_KINDS, since).await?;
    let refs: Vec<&abo_core::event::StoredEvent> = events.iter().collect();
    let bare = summary_since(&refs, since, &BTreeMap::new());
    let mut tallies: BTreeMap<Key, Tally> = BTreeMap::new();
    let listed = bare.waiting.iter().take(each);
    let listed = listed.chain(bare.failed.iter().take(each));
    for i in listed.chain(bare.landed.iter().take(each)) {
        let key = (i.run.clone(), i.task.clone());
        if tallies.contains_key(&key) {
            continue;
        }
        let Some(row) = store.task(&i.run, &i.task).await? else {
            continue;
        };
        let first_start = store.first_started(&i.run, &i.task).await?;
        tallies.insert(
            key,
            Tally {
                title: row.title,
                cost_usd: row.cost_usd,
                attempts: row.attempts,
                first_start,
            },
        );
    }
    Ok(summary_since(&refs, since, &tallies))
}

pub async fn summary_page(St(st): St<State>, h: HeaderMap) -> Response {
    let session = match viewer(&st, &h).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let inner = async {
        let now = st.ctx.now();
        let since = abo_core::ids::Timestamp(now.0 - 24 * 3600 * 1000);
        let s = load(&st.ctx.store, since, SHOWN).await?;
        let prs: BTreeMap<String, String> = st
            .ctx
            .store
            .runs()
            .await?
            .into_iter()
            .filter_map(|r| Some((r.id.to_string(), r.pull_request?)))
            .collect();
        let mut o = format!(
            "<h1>Coming home (24h)</h1><p class=totals>{} landed, {} waiting for you, {} failed · {}, {} tokens</p>",
            s.landed.len(),
            s.waiting.len(),
            s.failed.len(),
            human::usd(s.cost_usd),
            human::tokens(s.tokens)
        );
        for (section, items) in [
            (Section::Waiting, &s.waiting),
            (Section::Failed, &s.failed),
            (Section::Landed, &s.landed),
        ] {
            let _ = write!(o, "<h2>{}</h2>", esc(section.heading()));
            if items.is_empty() {
                o.push_str("<p>None.</p>");
            }
            for i in items.iter().take(SHOWN) {
                o.push_str(&card(section, i, &prs));
            }
            if items.len() > SHOWN {
                let _ = write!(
                    o,
                    "<p class=more>and {} more: <code>abo summary</code> lists them all.</p>",
                    human::grouped((items.len() - SHOWN) as u64)
                );
            }
        }
        Ok::<_, ApiError>(o)
    };
    match inner.await {
        Ok(body) => page("summary", None, &session, &body).into_response(),
        Err(e) => e.into_response(),
    }
}
