//! The admin API (bearer `admin_token`; disabled without one): the same imports as
//! `outpost control-plane import`, plus a view of the fleet.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use protocol::catalog::CatalogEntry;
use protocol::content_keys::ContentKeys;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{bearer, parse_body, Body, ErrorBody, Path};
use crate::crypto::digest;
use crate::error::ApiError;
use crate::import::{self, Imported, Policy};
use crate::state::AppState;
use crate::steering::Fleet;

pub(crate) fn require_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let want = st
        .config
        .admin_token
        .as_ref()
        .ok_or(ApiError::AdminDisabled)?;
    match bearer(headers) {
        // Compare digests so the comparison time does not depend on the secret's bytes.
        Some(t) if digest(t) == digest(want.expose()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// The answer to an admin import.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportAnswer {
    /// What was imported: `policy`, `title`, `content_keys` or `forecast`.
    pub imported: &'static str,
    /// A policy's row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The title (titles and content keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Content keys imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
    /// Countries replaced (forecasts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub countries: Option<usize>,
    /// Titles listed (forecasts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub titles: Option<usize>,
}

fn imported(i: Imported) -> Json<ImportAnswer> {
    Json(match i {
        Imported::Policy(s) => ImportAnswer {
            imported: "policy",
            summary: Some(s),
            ..Default::default()
        },
        Imported::Title(t) => ImportAnswer {
            imported: "title",
            title: Some(t),
            ..Default::default()
        },
        Imported::Keys(t, n) => ImportAnswer {
            imported: "content_keys",
            title: Some(t),
            keys: Some(n),
            ..Default::default()
        },
        Imported::Forecast(c, n) => ImportAnswer {
            imported: "forecast",
            countries: Some(c),
            titles: Some(n),
            ..Default::default()
        },
    })
}

/// Imports a policy document (JSON, or TOML with `Content-Type: application/toml`).
#[utoipa::path(put, path = "/v1/admin/policy", tag = "admin",
    request_body(description = "The policy document: plans, accounts, device_classes, geo, windows, sites, clusters, appliances, api_keys",
        content((Policy = "application/json"), (String = "application/toml"))),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Imported", body = ImportAnswer),
        (status = 400, description = "import_failed naming the field, or invalid_request (not UTF-8)", body = ErrorBody),
        (status = 401, description = "unauthorized: not the admin token", body = ErrorBody),
        (status = 403, description = "admin_disabled: no admin token is configured", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn put_policy(
    State(st): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<ImportAnswer>, ApiError> {
    require_admin(&st, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "not UTF-8"))?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("toml"));
    let r = import::import_policy(st.repo.as_ref(), text, is_toml, "request body").await?;
    st.refresh().await;
    st.fill_plans.clear().await;
    Ok(imported(r))
}

/// `PUT /v1/admin/titles/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TitleUpload {
    /// The catalog entry (its `title` must be the path's id).
    #[schema(value_type = CatalogEntry)]
    pub catalog: Value,
    /// The MPD text.
    pub dash: String,
    /// The HLS master playlist text.
    pub hls: String,
}

/// Imports a title: catalog entry plus manifests.
#[utoipa::path(put, path = "/v1/admin/titles/{id}", tag = "admin",
    params(("id" = String, Path, description = "Title id")),
    request_body = TitleUpload,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Imported", body = ImportAnswer),
        (status = 400, description = "invalid_request or import_failed, naming the field", body = ErrorBody),
        (status = 401, description = "unauthorized: not the admin token", body = ErrorBody),
        (status = 403, description = "admin_disabled: no admin token is configured", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn put_title(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<ImportAnswer>, ApiError> {
    require_admin(&st, &headers)?;
    let up: TitleUpload = parse_body(&body)?;
    let row = import::title_row(
        &up.catalog.to_string(),
        up.dash,
        up.hls,
        "request body",
        st.now() as i64,
    )?;
    if row.id != id {
        return Err(ApiError::invalid(
            "catalog.title",
            format!("{:?} does not match the path's {id:?}", row.id),
        ));
    }
    st.repo.put_title(&row).await?;
    st.refresh().await;
    st.fill_plans.clear().await;
    Ok(imported(Imported::Title(row.id)))
}

/// Imports a content-keys document (sealed under the master key on arrival).
#[utoipa::path(put, path = "/v1/admin/content-keys", tag = "admin",
    request_body = ContentKeys,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Imported (sealed under the master key)", body = ImportAnswer),
        (status = 400, description = "import_failed naming the field, or invalid_request (not UTF-8)", body = ErrorBody),
        (status = 401, description = "unauthorized: not the admin token", body = ErrorBody),
        (status = 403, description = "admin_disabled: no admin token is configured", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn put_keys(
    State(st): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<ImportAnswer>, ApiError> {
    require_admin(&st, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "not UTF-8"))?;
    let r = import::import_keys(st.repo.as_ref(), &st.master, text, "request body").await?;
    st.refresh().await;
    Ok(imported(r))
}

/// The fleet as steering sees it now.
#[utoipa::path(get, path = "/v1/admin/appliances", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every appliance as steering sees it now", body = Object),
        (status = 401, description = "unauthorized: not the admin token", body = ErrorBody),
        (status = 403, description = "admin_disabled: no admin token is configured", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn appliances(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    let snap = st.snapshot().await?;
    let now = st.now();
    let t = st.thresholds();
    let list: Vec<Value> = snap
        .fleet
        .appliances()
        .iter()
        .map(|a| {
            let offline = Fleet::unavailable(a, "", now, &t)
                .filter(|u| *u != crate::steering::Unavailable::NotHoldingTitle);
            json!({
                "id": a.id, "cluster": a.cluster, "address": a.address, "port": a.port,
                "admin_state": a.admin_state.as_str(),
                "health": a.health.map(|h| h.as_str()),
                "load": a.load,
                "last_heartbeat": a.last_heartbeat,
                "serving": offline.is_none(),
                "unavailable": offline,
                "titles": a.titles.as_ref().map(|t| t.len()),
                "prefixes": a.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "appliances": list })))
}
