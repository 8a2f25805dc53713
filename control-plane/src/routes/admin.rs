//! The admin API (bearer `admin_token`; disabled without one): the same imports as
//! `outpost control-plane import`, plus a view of the fleet.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer, parse_body, ErrorBody};
use crate::crypto::digest;
use crate::error::ApiError;
use crate::import::{self, Imported};
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

fn imported(i: Imported) -> Json<Value> {
    Json(match i {
        Imported::Policy(s) => json!({"imported": "policy", "summary": s}),
        Imported::Title(t) => json!({"imported": "title", "title": t}),
        Imported::Keys(t, n) => json!({"imported": "content_keys", "title": t, "keys": n}),
        Imported::Forecast(c, n) => json!({"imported": "forecast", "countries": c, "titles": n}),
    })
}

/// Imports a policy document (JSON, or TOML with `Content-Type: application/toml`).
#[utoipa::path(put, path = "/v1/admin/policy", tag = "admin",
    request_body(content = Object, description = "Policy: plans, accounts, device_classes, geo, windows, sites, clusters, appliances, api_keys"),
    responses((status = 200), (status = 400, description = "import_failed, naming the field", body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn put_policy(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "not UTF-8"))?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("toml"));
    let r = import::import_policy(st.repo.as_ref(), text, is_toml, "request body").await?;
    st.invalidate();
    st.fill_plans.clear().await;
    Ok(imported(r))
}

/// `PUT /v1/admin/titles/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleUpload {
    /// The catalog entry.
    pub catalog: Value,
    /// The MPD text.
    pub dash: String,
    /// The HLS master playlist text.
    pub hls: String,
}

/// Imports a title: catalog entry plus manifests.
#[utoipa::path(put, path = "/v1/admin/titles/{id}", tag = "admin",
    params(("id" = String, Path, description = "Title id")),
    request_body(content = Object, description = "{catalog, dash, hls}"),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn put_title(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    st.invalidate();
    st.fill_plans.clear().await;
    Ok(imported(Imported::Title(row.id)))
}

/// Imports a content-keys document (sealed under the master key on arrival).
#[utoipa::path(put, path = "/v1/admin/content-keys", tag = "admin",
    request_body(content = Object, description = "protocol::content_keys::ContentKeys"),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn put_keys(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&st, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "not UTF-8"))?;
    let r = import::import_keys(st.repo.as_ref(), &st.master, text, "request body").await?;
    st.invalidate();
    Ok(imported(r))
}

/// The fleet as steering sees it now.
#[utoipa::path(get, path = "/v1/admin/appliances", tag = "admin",
    responses((status = 200), (status = 401, body = ErrorBody)))]
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
