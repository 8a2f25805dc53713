//! HTTP handlers, one module per area, and the helpers they share (credentials, strict JSON
//! bodies).

pub mod admin;
pub mod fleet;
pub mod license;
pub mod playback;

use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::crypto::digest;
use crate::error::ApiError;
use crate::state::Snapshot;

/// Largest request body accepted, bytes (policy imports through the admin API are the largest).
pub const MAX_BODY: usize = 8 << 20;

/// The JSON body of every error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `geo_blocked`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, for `invalid_request`.
    pub field: Option<String>,
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Checks a playback-service API key.
pub fn require_api_key(snap: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
    let t = bearer(headers).ok_or(ApiError::Unauthorized)?;
    if snap.api_keys.contains_key(&digest(t)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Parses a strict JSON body; the error names the field serde stopped at.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("body")
            .to_owned();
        ApiError::invalid(field, msg)
    })
}
