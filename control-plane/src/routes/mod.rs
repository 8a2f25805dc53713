//! HTTP handlers, one module per area, and the helpers they share (credentials, strict JSON
//! bodies).

pub mod admin;
pub mod fleet;
pub mod license;
pub mod playback;
// QoE (issue 16)
pub mod qoe;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::crypto::digest;
use crate::error::ApiError;
use crate::state::Snapshot;

/// Largest request body accepted, bytes (policy imports through the admin API are the largest).
pub const MAX_BODY: usize = 8 << 20;

/// Security scheme (OpenAPI `components.securitySchemes`) of the playback service's API key:
/// `Authorization: Bearer <secret>` of a policy `api_keys` entry.
pub const SCHEME_API_KEY: &str = "playback_api_key";
/// Security scheme of a session's token (the `token` of a session start) as a bearer token.
pub const SCHEME_SESSION: &str = "session_token";
/// Security scheme of a session's token as the `token` query parameter (licence requests from
/// players that cannot set headers).
pub const SCHEME_SESSION_QUERY: &str = "session_token_query";
/// Security scheme of an appliance's credential (policy `appliances[].credential`) as a bearer
/// token; the `Outpost-Appliance` header names the appliance.
pub const SCHEME_APPLIANCE: &str = "appliance_credential";
/// Security scheme of the admin token (`--admin-token`).
pub const SCHEME_ADMIN: &str = "admin_token";

/// The JSON body of every error.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, for `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Every stable error code ([`ApiError::CODES`]).
#[derive(Debug)]
pub struct ErrorCode;

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ApiError::CODES))
            .description(Some("Stable machine-readable error code."))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// `axum::extract::Path` whose rejection is an [`ApiError`] (JSON, `invalid_request`) rather
/// than axum's plain-text answer.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::invalid("path", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::invalid("query", e.body_text())
    }
}

/// The raw request body, at most [`MAX_BODY`] bytes; a larger one is refused with
/// `payload_too_large` (413), an unreadable one with `invalid_request`, both as JSON.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(MAX_BODY)
                } else {
                    ApiError::invalid("body", e.body_text())
                }
            })
    }
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

/// Parses a strict JSON body, which must be an object (serde would also take a struct from an
/// array of its fields); the error names the field serde stopped at.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
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
