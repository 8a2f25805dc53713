//! The W3C EME Clear Key licence server: `POST /v1/license/clearkey` takes the CDM's request
//! (`{"kids": [...], "type": "temporary"}`, kids in base64url without padding), authorized by the
//! session token, and answers a JWK set holding only the requested keys the session's tier allows.
//! Keys are opened from their sealed form only here, and never logged.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{bearer, parse_body, Body, ErrorBody, Query};
use crate::crypto::digest;
use crate::error::ApiError;
use crate::state::AppState;
use protocol::hex::encode as hex;

/// Most key ids in one request.
pub const MAX_KIDS: usize = 64;

/// The CDM's licence request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ClearKeyRequest {
    /// Key ids, base64url without padding (16 bytes each).
    #[schema(min_items = 1, max_items = 64, inline, value_type = Vec<KidSchema>)]
    pub kids: Vec<String>,
    /// `temporary` (or `persistent-license`, answered as temporary).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A key id in a licence request: 16 bytes in base64url without padding (optionally padded).
#[derive(Debug)]
pub struct KidSchema;

impl utoipa::PartialSchema for KidSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            // 21 free characters and a last one whose 4 trailing bits are zero: 16 bytes exactly.
            .pattern(Some("^[A-Za-z0-9_-]{21}[AQgw](==)?$"))
            .description(Some("A key id: 16 bytes in base64url."))
            .into()
    }
}

impl ToSchema for KidSchema {}

/// One key as a JWK.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Jwk {
    /// Always `oct`.
    pub kty: String,
    /// Key id, base64url.
    pub kid: String,
    /// Key, base64url.
    pub k: String,
}

/// The licence: a JWK set.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ClearKeyLicense {
    /// The keys granted.
    pub keys: Vec<Jwk>,
    /// `temporary`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `?token=` for players that cannot set headers (the `session_token_query` security scheme).
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Issues a Clear Key licence.
#[utoipa::path(post, path = "/v1/license/clearkey", tag = "license",
    request_body = ClearKeyRequest,
    security(("session_token" = []), ("session_token_query" = [])),
    responses(
        (status = 200, description = "A JWK set of the requested keys this session may use", body = ClearKeyLicense),
        (status = 400, description = "invalid_request (the body, naming the field, or the query)", body = ErrorBody),
        (status = 401, description = "unauthorized: no token, or not a session's token", body = ErrorBody),
        (status = 403, description = "no_keys: none of the requested keys is allowed", body = ErrorBody),
        (status = 410, description = "session_ended", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn clearkey(
    State(st): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)
        .map(str::to_owned)
        .or(q.token)
        .ok_or(ApiError::Unauthorized)?;
    let req: ClearKeyRequest = parse_body(&body)?;
    if req.kids.is_empty() || req.kids.len() > MAX_KIDS {
        return Err(ApiError::invalid(
            "kids",
            format!("must list 1..={MAX_KIDS} key ids"),
        ));
    }
    let mut wanted = Vec::with_capacity(req.kids.len());
    for (i, k) in req.kids.iter().enumerate() {
        let raw = URL_SAFE_NO_PAD
            .decode(k.trim_end_matches('='))
            .ok()
            .filter(|b| b.len() == 16)
            .ok_or_else(|| {
                ApiError::invalid(format!("kids[{i}]"), "must be 16 bytes in base64url")
            })?;
        wanted.push(hex(&raw));
    }
    let s = st
        .repo
        .session_by_license(&digest(&token))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !s.is_live(st.now() as i64) {
        return Err(ApiError::SessionEnded);
    }
    let allowed: HashSet<&str> = s.key_ids.iter().map(String::as_str).collect();
    let snap = st.snapshot().await?;
    let tier = s.tier;
    let stored = snap.keys.get(&s.title).map(Vec::as_slice).unwrap_or(&[]);
    let mut keys = Vec::new();
    for kid in &wanted {
        let Some(meta) = stored.iter().find(|k| &k.kid == kid) else {
            continue;
        };
        if !allowed.contains(kid.as_str()) || !meta.allowed_at(tier) {
            continue;
        }
        let key = st
            .master
            .open(&meta.sealed, &format!("{}/{}", s.title, kid))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        keys.push(Jwk {
            kty: "oct".into(),
            kid: URL_SAFE_NO_PAD.encode(protocol::content_keys::hex16(kid).unwrap_or([0; 16])),
            k: URL_SAFE_NO_PAD.encode(key),
        });
    }
    if keys.is_empty() {
        return Err(ApiError::NoKeys(format!(
            "none of the {} requested keys is allowed for this session (tier {})",
            wanted.len(),
            s.tier
        )));
    }
    st.metrics
        .licenses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(ClearKeyLicense {
            keys,
            kind: "temporary".into(),
        }),
    )
        .into_response())
}
