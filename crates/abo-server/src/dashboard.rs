//! The dashboard (docs/api.md): server-rendered pages, live through the event stream, readable on a
//! phone. It logs in with an API token once (kept in an HttpOnly, SameSite=Strict cookie) and
//! every action goes through the same `/v1` API and roles, with the session's CSRF token (checked
//! in `guard`). Its script and styles are files under `/static/`: nothing inline.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::Form;
use axum::extract::State as St;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use abo_core::ids::TaskId;
use abo_core::state::RunState;

use crate::State;
use crate::auth::{Credential, Role, require};
use crate::error::ApiError;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The dashboard's script and styles, served from `/static/` (the Content-Security-Policy allows
/// no inline script, handler or style).
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLESHEET: &str = include_str!("assets/dashboard.css");

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

const HEAD: &str = "<meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><link rel=stylesheet href=/static/dashboard.css>";

/// A page of a session: `csrf` is its token, for the script's actions and the logout form.
/// A viewer's session: the CSRF token for its actions, and the last event when the page was read
/// (its live stream starts after it: a page replays nothing it already shows).
pub(crate) struct Session {
    pub csrf: String,
    pub after: u64,
}

pub(crate) fn page(title: &str, run: Option<&str>, session: &Session, body: &str) -> Html<String> {
    let csrf = &session.csrf;
    let mut data = run
        .map(|r| format!(" data-run=\"{}\"", esc(r)))
        .unwrap_or_default();
    let _ = write!(data, " data-after={}", session.after);
    Html(format!(
        "<!doctype html><html lang=en><head>{HEAD}<meta name=abo-csrf content=\"{c}\"><title>{t} · abo</title></head><body><header><b>abo</b><a href=\"/\">home</a><a href=\"/approvals\">approvals</a><a href=\"/summary\">summary</a><span id=result></span><form method=post action=/logout><input type=hidden name={field} value=\"{c}\"><button type=submit>log out</button></form></header><main{data}>{body}</main><script src=/static/dashboard.js defer></script></body></html>",
        t = esc(title),
        c = esc(csrf),
        field = crate::guard::CSRF_FIELD,
    ))
}

/// A page that needs a viewer: the CSRF token of its session; without one, the login form.
pub(crate) async fn viewer(st: &State, h: &HeaderMap) -> Result<Session, Response> {
    viewer_at(st, h, "/").await
}

/// [`viewer`] for a page at `here`: the login form brings the person back to it.
pub(crate) async fn viewer_at(st: &State, h: &HeaderMap, here: &str) -> Result<Session, Response> {
    match require(&st.ctx.store, h, Role::Viewer).await {
        Ok(_) => Ok(Session {
            csrf: Credential::of(h)
                .map(|c| st.sessions.csrf(c.token()))
                .unwrap_or_default(),
            // Read before the page: an event appended while it renders is streamed, not lost.
            after: st
                .ctx
                .store
                .last_seq()
                .await
                .map_err(|e| ApiError::from(e).into_response())?,
        }),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Err(login_page(None, here).into_response())
        }
        Err(e) => Err(e.into_response()),
    }
}

/// Where a login may send the person: a path of this server, else home (an open redirect to
/// another site, `//elsewhere` or `/\\elsewhere`, is refused).
fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok { next } else { "/" }
}

fn login_page(error: Option<&str>, next: &str) -> Html<String> {
    let err = error
        .map(|e| format!("<p class=s-failed>{}</p>", esc(e)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html lang=en><head>{HEAD}<title>abo · log in</title></head><body><header><b>abo</b></header><main><h1>Log in</h1>{err}<form method=post action=/login><input type=hidden name=next value=\"{next}\"><p><label>API token <input name=token type=password autocomplete=off required></label></p><button type=submit>Log in</button></form><p>Create one with <code>abo token create --role viewer</code>.</p></main></body></html>",
        next = esc(local_path(next))
    ))
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
    /// The page to go back to (a path of this server).
    #[serde(default)]
    next: Option<String>,
}

/// Checks the token once and keeps it in a session cookie.
pub async fn login(St(st): St<State>, h: HeaderMap, Form(f): Form<Login>) -> Response {
    let token = f.token.trim().to_owned();
    let mut check = HeaderMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        check.insert(header::AUTHORIZATION, v);
    }
    match require(&st.ctx.store, &check, Role::Viewer).await {
        Ok(_) => {
            let secure = h
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https");
            let cookie = format!(
                "abo_session={token}; HttpOnly; SameSite=Strict; Path=/{}",
                if secure { "; Secure" } else { "" }
            );
            let next = local_path(f.next.as_deref().unwrap_or("/"));
            ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
        }
        Err(e) => (
            StatusCode::UNAUTHORIZED,
            login_page(Some(&e.message), f.next.as_deref().unwrap_or("/")),
        )
            .into_response(),
    }
}

/// Ends the session (a POST from the page's form, with its CSRF token).
pub async fn logout() -> Response {
    (
        [(
            header::SET_COOKIE,
            "abo_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0".to_owned(),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

pub(crate) fn status_span(s: &str) -> String {
    format!("<span class=\"s-{0}\">{0}</span>", esc(s))
}

/// The run's DAG as SVG: columns by depth, each task colored by its state.
pub fn dag_svg(state: &RunState) -> String {
    let mut depth: BTreeMap<&TaskId, usize> = BTreeMap::new();
    for id in &state.order {
        let d = state.tasks[id]
            .spec
            .deps
            .iter()
            .filter_map(|d| depth.get(d))
            .max()
            .map_or(0, |d| d + 1);
        depth.insert(id, d);
    }
    let mut rows_in: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: BTreeMap<&TaskId, (usize, usize)> = BTreeMap::new();
    for id in &state.order {
        let col = depth[id];
        let row = rows_in.entry(col).or_default();
        pos.insert(id, (col, *row));
        *row += 1;
    }
    let (w, h, gx, gy) = (150usize, 34usize, 40usize, 14usize);
    let cols = rows_in.len().max(1);
    let rows = rows_in.values().copied().max().unwrap_or(1);
    let (width, height) = (cols * (w + gx) + gx, rows * (h + gy) + gy);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" class=dag role=img aria-label=\"task graph\">"
    );
    let xy = |id: &TaskId| {
        let (c, r) = pos[id];
        (gx + c * (w + gx), gy + r * (h + gy))
    };
    for id in &state.order {
        let (x, y) = xy(id);
        for d in &state.tasks[id].spec.deps {
            if pos.contains_key(d) {
                let (dx, dy) = xy(d);
                let _ = write!(
                    s,
                    "<line x1=\"{}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#9aa3ad\"/>",
                    dx + w,
                    dy + h / 2,
                    y + h / 2
                );
            }
        }
    }
    for id in &state.order {
        let (x, y) = xy(id);
        let status = state.tasks[id].state.status();
        let fill = match status.as_str() {
            "landed" => "#d7f2e3",
            "failed" | "denied" | "reverted" => "#fbd9d9",
            "running" | "verifying" => "#d6e6fb",
            "awaiting_approval" | "paused" => "#fdebc8",
            _ => "#eceff1",
        };
        let _ = write!(
            s,
            "<g data-task=\"{id}\" data-status=\"{st}\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"5\" fill=\"{fill}\" stroke=\"#9aa3ad\"/><text x=\"{tx}\" y=\"{ty}\" font-size=\"12\">{id}</text><text x=\"{tx}\" y=\"{ty2}\" font-size=\"10\" fill=\"#555\">{st}</text></g>",
            id = esc(id.as_str()),
            st = status.as_str(),
            tx = x + 6,
            ty = y + 14,
            ty2 = y + 28
        );
    }
    s.push_str("</svg>");
    s
}

pub(crate) fn caps_html(doc: &serde_json::Value) -> String {
    let mut o = String::new();
    for c in doc["run"]["budgets"].as_array().into_iter().flatten() {
        let limit = c["limit"].as_f64().unwrap_or(0.0);
        let spent = c["spent"].as_f64().unwrap_or(0.0);
        let pct = if limit > 0.0 {
            (spent / limit * 100.0).min(100.0)
        } else {
            0.0
        };
        let alert = c["alert"].as_bool().unwrap_or(false);
        let cap = c["cap"].as_str().unwrap_or("");
        let unit = match cap.rsplit('.').next() {
            Some("usd") => Some(abo_core::budget::Unit::Usd),
            Some("tokens") => Some(abo_core::budget::Unit::Tokens),
            Some("wall") => Some(abo_core::budget::Unit::Wall),
            _ => None,
        };
        let shown = |v: f64| match unit {
            Some(u) => abo_core::budget::show(u, v),
            None => format!("{v:.2}"),
        };
        let (shown_spent, shown_limit) = (shown(spent), shown(limit));
        let _ = write!(
            o,
            "<tr><td>{cap}</td><td><svg class=\"bar{a}\" viewBox=\"0 0 100 1\" preserveAspectRatio=none role=img aria-label=\"{pct:.0}%\"><title>{shown_spent} of {shown_limit}</title><rect width=\"{pct:.0}\" height=\"1\"/></svg></td><td>{shown_spent} of {shown_limit}{mark}</td></tr>",
            cap = esc(c["cap"].as_str().unwrap_or("")),
            a = if alert { " alert" } else { "" },
            mark = if alert {
                " <b class=s-failed>alert</b>"
            } else {
                ""
            }
        );
    }
    if o.is_empty() {
        String::new()
    } else {
        format!("<h2>Budgets</h2><table>{o}</table>")
    }
}

pub async fn approvals_page(St(st): St<State>, h: HeaderMap) -> Response {
    let session = match viewer(&st, &h).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pending = match st.ctx.store.pending_approvals().await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut body = String::from("<h1>Waiting for you</h1>");
    if pending.is_empty() {
        body.push_str("<p>No approvals waiting.</p>");
    }
    let now = st.ctx.now();
    for a in &pending {
        body.push_str(&crate::home::approval_card(a, now));
    }
    page("approvals", None, &session, &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::local_path;

    /// The login form's `next` (from a notification's link) sends the person back only to a path
    /// of this server: each of these, followed as a browser follows a redirect's `Location`,
    /// would leave for `evil.example` (scheme-relative, backslash as slash, a tab or newline the
    /// URL parser drops, a full URL), and goes home instead.
    #[test]
    fn a_login_goes_back_only_to_a_path_of_this_server() {
        for attack in [
            "//evil.example/login",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "",
        ] {
            assert_eq!(local_path(attack), "/", "{attack:?}");
        }
        for kept in ["/", "/runs/r1/tasks/ask?choose=2#decide", "/approvals"] {
            assert_eq!(local_path(kept), kept);
        }
    }
}
