//! API tokens and roles. A token is `abo_<id>_<secret>`, shown once; the store keeps only its
//! SHA-256. Viewers read; approvers also decide approvals; admins also create, pause, resume and
//! kill runs, retry tasks and manage tokens. The dashboard's session is the token in a cookie;
//! its state-changing requests also carry a CSRF token ([`SessionKey::csrf`], checked in `guard`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Approver,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role `{other}` (viewer, approver or admin)"
            )),
        }
    }
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new token: (id, the whole token to show once).
pub fn generate() -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let id = hex::encode(&bytes[..4]);
    let secret = hex::encode(&bytes[4..]);
    Ok((id.clone(), format!("abo_{id}_{secret}")))
}

/// What authenticates a request: an API client's `Authorization: Bearer` token, else the
/// dashboard's session cookie (HttpOnly, SameSite=Strict), which carries a token too. `require`
/// and the CSRF check both ask this, so they never disagree on which one a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    Session(&'a str),
}

impl<'a> Credential<'a> {
    pub fn of(headers: &'a HeaderMap) -> Option<Self> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match bearer {
            Some(t) => Some(Self::Bearer(t)),
            None => session_cookie(headers).map(Self::Session),
        }
    }

    pub fn token(self) -> &'a str {
        match self {
            Self::Bearer(t) | Self::Session(t) => t,
        }
    }
}

/// The caller's role, from its [`Credential`]: 401 without a live token, 403 when its role is
/// below `need`.
pub async fn require(
    store: &abo_store::Store,
    headers: &HeaderMap,
    need: Role,
) -> Result<Role, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let Some(cred) = Credential::of(headers) else {
        return Err(unauthorized(
            "an API token is needed: Authorization: Bearer <token>",
        ));
    };
    let Some(row) = store.token_by_hash(&hash(cred.token())).await? else {
        return Err(unauthorized("unknown or revoked token"));
    };
    let role: Role = row.role.parse().map_err(ApiError::internal)?;
    if role < need {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {need} role; the token is {role}"),
        ));
    }
    Ok(role)
}

/// Whether the token with this hash is still live: an open event stream asks it while open.
pub async fn live(store: &abo_store::Store, token_hash: &str) -> Result<bool, ApiError> {
    Ok(store.token_by_hash(token_hash).await?.is_some())
}

/// The dashboard's session cookie carries the token (HttpOnly, SameSite=Strict).
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("abo_session="))
}

/// The server's secret for CSRF tokens, drawn when it starts: a page rendered before a restart
/// gets a fresh token with its next live refresh (or reload).
#[derive(Clone)]
pub struct SessionKey(Arc<[u8; 32]>);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    pub fn generate() -> std::io::Result<Self> {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Self(Arc::new(bytes)))
    }

    /// The CSRF token of the session holding `token`: HMAC-SHA256 under the server's key of the
    /// token's hash. A page of another origin can neither read it nor compute it.
    pub fn csrf(&self, token: &str) -> String {
        let msg = format!("abo csrf v1 {}", hash(token));
        abo_runtime::notify::sign(self.0.as_slice(), msg.as_bytes())
    }

    /// Whether `given` is the CSRF token of the session holding `token` (in constant time).
    pub fn check(&self, token: &str, given: &str) -> bool {
        let want = self.csrf(token);
        want.len() == given.len()
            && want
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}
