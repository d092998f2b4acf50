//! API tokens and roles. A token is `abo_<id>_<secret>`, shown once; the store keeps only its
//! SHA-256. Viewers read; approvers also decide approvals; admins also create, pause, resume and
//! kill runs, retry tasks and manage tokens.

use std::fmt;
use std::str::FromStr;

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

/// The caller's role, from `Authorization: Bearer ...`: 401 without a live token, 403 when its
/// role is below `need`.
pub async fn require(
    store: &abo_store::Store,
    headers: &HeaderMap,
    need: Role,
) -> Result<Role, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| session_cookie(headers));
    let Some(token) = token else {
        return Err(unauthorized(
            "an API token is needed: Authorization: Bearer <token>",
        ));
    };
    let Some(row) = store.token_by_hash(&hash(token)).await? else {
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

/// The dashboard's session cookie carries the token (HttpOnly, SameSite=Strict).
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("abo_session="))
}
