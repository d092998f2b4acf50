//! What every request passes, in one place for every route (the `/v1` table and the dashboard's):
//! the CSRF check on state-changing requests, and the security headers on every response.
//!
//! A request is state-changing when its method is not GET, HEAD or OPTIONS: no route changes
//! anything on a safe method, so a route added later is covered without being listed here. The
//! session cookie is SameSite=Strict, which does not tell ports apart: a page on another port of
//! the same host is same-site and its forms carry the cookie. So a state-changing request
//! authenticated by the cookie must come from the server's own origin (`Origin`, else `Referer`)
//! and carry the session's CSRF token (`X-Abo-CSRF`, or the form field `_csrf`), which only the
//! dashboard's own pages hold. Requests with `Authorization: Bearer` (API clients) are not
//! authenticated by the cookie and need neither. `/login` has no session yet: it needs only the
//! origin, so another site cannot log a browser in with its token.

use axum::body::Body;
use axum::extract::{Request, State as St};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::State;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::routes::BODY_LIMIT;

/// The header the dashboard's script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-abo-csrf";
/// The form field a dashboard form sends it in.
pub const CSRF_FIELD: &str = "_csrf";

/// The policy the dashboard's pages work under: scripts and styles only from the server's own
/// files (`/static/...`), no inline script, style or handler, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn refused(message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", message).into_response()
}

fn text(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// Whether the request comes from a page of the server's own origin: the Host it was addressed
/// by (or `X-Forwarded-Host`/`-Proto` from a proxy in front; a page of another origin cannot set
/// those without a CORS preflight, which this server never grants).
fn same_origin(req: &Request) -> bool {
    let h = req.headers();
    let host = text(h, "x-forwarded-host")
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .or_else(|| text(h, header::HOST))
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    let scheme = match text(h, "x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let from = match text(h, header::ORIGIN) {
        Some(o) => Some(o),
        None => text(h, header::REFERER).and_then(origin_of),
    };
    from.is_some_and(|o| o.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
}

fn is_form(h: &HeaderMap) -> bool {
    text(h, header::CONTENT_TYPE).is_some_and(|c| {
        c.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// The CSRF check (see the module's comment), as a middleware over the whole router.
pub async fn csrf(St(st): St<State>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let session = match Credential::of(req.headers()) {
        Some(Credential::Session(t)) => Some(t.to_owned()),
        // An API client: its token is checked by the route.
        Some(Credential::Bearer(_)) => return next.run(req).await,
        None => None,
    };
    let login = req.uri().path() == "/login";
    if session.is_none() && !login {
        // No credential at all: the route answers 401.
        return next.run(req).await;
    }
    if !same_origin(&req) {
        return refused("a state-changing request from another origin is refused");
    }
    let Some(session) = session.filter(|_| !login) else {
        return next.run(req).await;
    };
    if let Some(given) = text(req.headers(), CSRF_HEADER) {
        if !st.sessions.check(&session, given) {
            return refused("the CSRF token does not match the session: reload the page");
        }
        return next.run(req).await;
    }
    if !is_form(req.headers()) {
        return refused("the session's CSRF token is missing (header X-Abo-CSRF)");
    }
    // A form: the token is its `_csrf` field; the body is read here and handed on unchanged.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is too large",
            )
            .into_response();
        }
    };
    let given = bytes
        .split(|b| *b == b'&')
        .find_map(|kv| kv.strip_prefix(format!("{CSRF_FIELD}=").as_bytes()));
    match given.and_then(|g| std::str::from_utf8(g).ok()) {
        Some(g) if st.sessions.check(&session, g) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Some(_) => refused("the CSRF token does not match the session: reload the page"),
        None => refused("the session's CSRF token is missing (form field _csrf)"),
    }
}

/// The security headers, on every response; `Cache-Control: no-store` on all but the dashboard's
/// static files (which hold no data).
pub async fn headers(req: Request, next: Next) -> Response {
    let public = req.uri().path().starts_with("/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if public { "no-cache" } else { "no-store" }),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn the_origin_of_a_referer() {
        assert_eq!(
            origin_of("http://127.0.0.1:3100/runs/r1?x=1"),
            Some("http://127.0.0.1:3100")
        );
        assert_eq!(
            origin_of("https://abo.example"),
            Some("https://abo.example")
        );
        assert_eq!(origin_of("http://a.b?q"), Some("http://a.b"));
        assert_eq!(origin_of("/relative"), None);
    }
}
