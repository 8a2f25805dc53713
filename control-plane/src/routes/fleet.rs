//! Fleet endpoints: appliance heartbeats and registration (authenticated by the appliance's
//! credential and its `Outpost-Appliance` header) and the published grant keys.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::catalog::CatalogEntry;
use protocol::fill::FillPlan;
use protocol::fleet::{Heartbeat, HeartbeatAck, PublishedKeys, Registration, APPLIANCE_HEADER};

use super::{bearer, parse_body, Body, ErrorBody, Path};
use crate::crypto::digest;
use crate::db::HeartbeatRow;
use crate::error::ApiError;
use crate::fill::edge;
use crate::prefix::Prefix;
use crate::state::AppState;

/// Authenticates an appliance request: the `Outpost-Appliance` header names the caller, whose
/// credential must be the bearer token (401 otherwise; digests compared, so the time does not
/// depend on the secret); a caller acting on another appliance's path gets 403.
pub(crate) async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(), ApiError> {
    let named = headers
        .get(APPLIANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::invalid(APPLIANCE_HEADER, "header is required"))?;
    let snap = st.snapshot().await?;
    if snap.fleet.appliance(id).is_none() {
        return Err(ApiError::UnknownAppliance(id.to_owned()));
    }
    let want = snap
        .appliance_credentials
        .get(named)
        .ok_or(ApiError::Unauthorized)?;
    match bearer(headers) {
        Some(t) if &digest(t) == want => {}
        _ => return Err(ApiError::Unauthorized),
    }
    if named != id {
        return Err(ApiError::Forbidden(format!(
            "appliance {named:?} may not act for appliance {id:?}"
        )));
    }
    Ok(())
}

fn canonical_prefixes(field: &str, list: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let p: Prefix = p.parse().map_err(|e: crate::prefix::PrefixError| {
            ApiError::invalid(format!("{field}[{i}]"), e.to_string())
        })?;
        out.push(p.to_string());
    }
    Ok(out)
}

/// Refuses a counter the database cannot hold (it stores signed 64-bit integers), naming it,
/// rather than storing a clamped value.
fn counters_fit(hb: &Heartbeat) -> Result<(), ApiError> {
    let mut named: Vec<(String, u64)> = vec![
        ("egress_bps".into(), hb.egress_bps),
        ("requests_served".into(), hb.requests_served),
        ("bytes_served".into(), hb.bytes_served),
    ];
    for (i, d) in hb.drives.iter().enumerate() {
        named.push((format!("drives[{i}].used_bytes"), d.used_bytes));
        named.push((format!("drives[{i}].capacity_bytes"), d.capacity_bytes));
    }
    if let Some(f) = &hb.fill {
        named.extend([
            ("fill.titles_pending".into(), f.titles_pending),
            ("fill.bytes_filled".into(), f.bytes_filled),
            ("fill.files_verified".into(), f.files_verified),
            ("fill.verify_failures".into(), f.verify_failures),
            ("fill.rate_bps".into(), f.rate_bps),
            (
                "fill.control_plane_unreachable_secs".into(),
                f.control_plane_unreachable_secs,
            ),
        ]);
    }
    match named.into_iter().find(|(_, v)| i64::try_from(*v).is_err()) {
        Some((field, _)) => Err(ApiError::invalid(field, "must be at most 2^63 - 1")),
        None => Ok(()),
    }
}

/// Records an appliance heartbeat.
#[utoipa::path(post, path = "/v1/appliances/{id}/heartbeat", tag = "fleet",
    params(("id" = String, Path, description = "Appliance id"), ("Outpost-Appliance" = String, Header, description = "The calling appliance's id: must equal the path's `id`")),
    request_body = Heartbeat,
    security(("appliance_credential" = [])),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatAck),
        (status = 400, description = "invalid_request: the Outpost-Appliance header is missing (or the body is invalid, naming the field)", body = ErrorBody),
        (status = 401, description = "unauthorized: the bearer token is not the named appliance's credential", body = ErrorBody),
        (status = 403, description = "forbidden: the named appliance acts for another", body = ErrorBody),
        (status = 404, description = "unknown_appliance", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn heartbeat(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<HeartbeatAck>, ApiError> {
    authenticate(&st, &headers, &id).await?;
    let hb: Heartbeat = parse_body(&body)?;
    hb.validate().map_err(|e| match e {
        protocol::fleet::FleetError::Invalid { field, reason } => ApiError::invalid(field, reason),
    })?;
    counters_fit(&hb)?;
    let hex64 =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    for (i, h) in hb.held.iter().enumerate() {
        if !hex64(&h.catalog_sha256) {
            return Err(ApiError::invalid(
                format!("held[{i}].catalog_sha256"),
                "must be 64 lowercase hex digits",
            ));
        }
        if !hex64(&h.files_digest) {
            return Err(ApiError::invalid(
                format!("held[{i}].files_digest"),
                "must be 64 lowercase hex digits",
            ));
        }
    }
    let prefixes = match &hb.prefixes {
        Some(p) => Some(canonical_prefixes("prefixes", p)?),
        None => None,
    };
    let now = st.now();
    let row = HeartbeatRow {
        health: hb.health,
        load: hb.load,
        egress_bps: i64::try_from(hb.egress_bps).unwrap_or(i64::MAX),
        drives: hb.drives.clone(),
        titles: hb.titles.clone(),
        prefixes,
        requests_served: i64::try_from(hb.requests_served).unwrap_or(i64::MAX),
        bytes_served: i64::try_from(hb.bytes_served).unwrap_or(i64::MAX),
        held: (!hb.held.is_empty()).then(|| hb.held.clone()),
        fill: hb.fill.clone(),
    };
    if !st.repo.record_heartbeat(&id, &row, now as i64).await? {
        return Err(ApiError::UnknownAppliance(id));
    }
    // QoE (issue 16): the session summaries folded from CMCD.
    super::qoe::record(&st, &id, &hb.qoe, now).await?;
    // --- BGP (issue 14) ---
    let bgp_full_table = match &hb.bgp {
        Some(b) => {
            let agreed = st.repo.apply_bgp(&id, b, now as i64).await?;
            if !agreed {
                tracing::info!(appliance = %id, "bgp digest differs: asking for the full table");
            }
            !agreed
        }
        // No BGP speaker (any more: restarted without one): what it reported before must not
        // keep steering, nor show as its sessions. Written only when there is something to drop.
        None => {
            if st.snapshot().await?.bgp.appliances.contains_key(&id) {
                st.repo.clear_bgp(&id).await?;
            }
            false
        }
    };
    // --- end BGP ---
    st.telemetry
        .record(&id, now, hb.requests_served, hb.bytes_served);
    if let Some(f) = &hb.fill {
        st.metrics.record_fill(&id, f);
    }
    st.refresh().await;
    st.metrics
        .appliance_heartbeats
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(appliance = %id, health = hb.health.as_str(), load = hb.load, titles = hb.titles.len(), "appliance heartbeat");
    Ok(Json(HeartbeatAck {
        received_at: now,
        interval_secs: st.config.appliance_heartbeat_secs,
        offline_after_secs: st.config.appliance_offline_after_secs,
        key_ids: st.keys.kids(),
        bgp_full_table,
    }))
}

/// Records an appliance's registration (address, port, prefixes, version).
#[utoipa::path(post, path = "/v1/appliances/{id}/register", tag = "fleet",
    params(("id" = String, Path, description = "Appliance id"), ("Outpost-Appliance" = String, Header, description = "The calling appliance's id: must equal the path's `id`")),
    request_body = Registration,
    security(("appliance_credential" = [])),
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "invalid_request: the Outpost-Appliance header is missing (or the body is invalid, naming the field)", body = ErrorBody),
        (status = 401, description = "unauthorized: the bearer token is not the named appliance's credential", body = ErrorBody),
        (status = 403, description = "forbidden: the named appliance acts for another", body = ErrorBody),
        (status = 404, description = "unknown_appliance", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn register(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<axum::http::StatusCode, ApiError> {
    authenticate(&st, &headers, &id).await?;
    let reg: Registration = parse_body(&body)?;
    let prefixes = match &reg.prefixes {
        Some(p) => Some(canonical_prefixes("prefixes", p)?),
        None => None,
    };
    if let Some(a) = &reg.address {
        if a.is_empty()
            || a.len() > 253
            || !a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(ApiError::invalid(
                "address",
                "must be a host name or IP address",
            ));
        }
    }
    if reg.port == Some(0) {
        return Err(ApiError::invalid("port", "must be 1..=65535"));
    }
    st.repo
        .register_appliance(
            &id,
            reg.address.as_deref(),
            reg.port.map(i64::from),
            prefixes.as_deref(),
            reg.version.as_deref(),
        )
        .await?;
    st.refresh().await;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The grant public keys appliances verify with.
#[utoipa::path(get, path = "/v1/keys", tag = "fleet",
    responses((status = 200, description = "Every grant public key in use: kid, alg Ed25519, raw key base64url, SPKI PEM", body = PublishedKeys)))]
pub async fn keys(State(st): State<AppState>) -> Response {
    let now = st.now();
    let refresh = (st.config.key_prepublish_secs / 2).clamp(1, 300);
    (
        [(header::CACHE_CONTROL, format!("public, max-age={refresh}"))],
        Json(PublishedKeys {
            keys: st.keys.published(now),
            refresh_secs: refresh,
        }),
    )
        .into_response()
}

/// The fleet as operators see it: every appliance by cluster with its health, whether steering
/// may use it now, load, counters, drives, titles held and its request rate over the last
/// minutes. Needs the admin token unless `fleet_view_public` is set.
#[utoipa::path(get, path = "/v1/fleet", tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every appliance with its state (not needing the token when `fleet_view_public` is set)", body = Object),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "admin_disabled: no admin token is configured (and the view is not public)", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn view(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !st.config.fleet_view_public {
        super::admin::require_admin(&st, &headers)?;
    }
    let rows = st.repo.load_snapshot().await?;
    let snap = st.snapshot().await?;
    let now = st.now();
    let t = st.thresholds();
    let kind_of = |cluster: &str| {
        rows.clusters
            .iter()
            .find(|c| c.id == cluster)
            .map(|c| (c.kind.as_str(), c.site_id.clone()))
            .unwrap_or_default()
    };
    let list: Vec<serde_json::Value> = rows
        .appliances
        .iter()
        .map(|a| {
            let (kind, site) = kind_of(&a.cluster_id);
            let unavailable = snap.fleet.appliance(&a.id).and_then(|s| {
                crate::steering::Fleet::unavailable(s, "", now, &t)
                    .filter(|u| *u != crate::steering::Unavailable::NotHoldingTitle)
            });
            serde_json::json!({
                "id": a.id,
                "cluster": a.cluster_id,
                "cluster_kind": kind,
                "site": site,
                "address": a.address,
                "port": a.port,
                "admin_state": a.admin_state,
                "health": a.health.map_or("unknown", |h| h.as_str()),
                "online": unavailable.is_none(),
                "unavailable": unavailable,
                "load": a.load,
                "egress_bps": a.egress_bps,
                "requests_served": a.requests_served,
                "bytes_served": a.bytes_served,
                "drives": a.drives.as_deref().unwrap_or_default(),
                "titles": a.titles.as_deref().unwrap_or_default(),
                "held": a.held.as_deref().unwrap_or_default(),
                "fill": a.fill_status,
                "stale_titles": edge::holdings(&snap, &a.id).1,
                "last_heartbeat": a.last_heartbeat,
                // --- BGP (issue 14) ---
                "bgp": snap.bgp.appliances.get(&a.id).map(|b| serde_json::json!({
                    "sessions": b.sessions,
                    "steerable": b.steerable,
                    "routes": b.routes.len(),
                })),
                // --- end BGP ---
                "rps_history": st
                    .telemetry
                    .history(&a.id, now)
                    .iter()
                    .map(|p| serde_json::json!([p.t, p.rps]))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "now": now,
            "appliances": list,
            // --- BGP (issue 14) ---
            "bgp_sites": snap.bgp.sites.iter().map(|s| serde_json::json!({
                "cluster": s.cluster,
                "appliances": s.appliances,
                "routes": s.common_routes,
                "inconsistent": s.inconsistent(),
                "partial": s.partial,
            })).collect::<Vec<_>>(),
            // --- end BGP ---
        })),
    )
        .into_response())
}

/// The title's catalog entry exactly as the control plane stores it: the appliance checks its
/// SHA-256 against the plan's `catalog_sha256`, then every file against the entry.
#[utoipa::path(get, path = "/v1/appliances/{id}/catalog/{title}", tag = "fleet",
    params(("id" = String, Path, description = "Appliance id"), ("title" = String, Path, description = "Title id"), ("Outpost-Appliance" = String, Header, description = "The calling appliance's id: must equal the path's `id`")),
    security(("appliance_credential" = [])),
    responses(
        (status = 200, description = "The catalog entry, byte for byte as stored", body = CatalogEntry),
        (status = 400, description = "invalid_request: the Outpost-Appliance header is missing (or the body is invalid, naming the field)", body = ErrorBody),
        (status = 401, description = "unauthorized: the bearer token is not the named appliance's credential", body = ErrorBody),
        (status = 403, description = "forbidden: the named appliance acts for another", body = ErrorBody),
        (status = 404, description = "unknown_appliance or unknown_title", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn catalog(
    State(st): State<AppState>,
    Path((id, title)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&st, &headers, &id).await?;
    let snap = st.snapshot().await?;
    let text = snap
        .catalog_text
        .get(&title)
        .cloned()
        .ok_or(ApiError::UnknownTitle(title))?;
    st.metrics
        .fill_catalogs_served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text.to_string(),
    )
        .into_response())
}

/// The appliance's fill plan: every title it should hold, most important first, with ordered
/// sources (peer, upstream, origin) and fill grants for those it lacks, and the held titles it
/// may delete because another copy exists. While the catalog holds no title the answer is 503
/// `catalog_empty`: a plan built from an empty catalog is never published.
#[utoipa::path(get, path = "/v1/appliances/{id}/fill-plan", tag = "fleet",
    params(("id" = String, Path, description = "Appliance id"), ("Outpost-Appliance" = String, Header, description = "The calling appliance's id: must equal the path's `id`")),
    security(("appliance_credential" = [])),
    responses(
        (status = 200, description = "The plan", body = FillPlan),
        (status = 400, description = "invalid_request: the Outpost-Appliance header is missing (or the body is invalid, naming the field)", body = ErrorBody),
        (status = 401, description = "unauthorized: the bearer token is not the named appliance's credential", body = ErrorBody),
        (status = 403, description = "forbidden: the named appliance acts for another", body = ErrorBody),
        (status = 404, description = "unknown_appliance", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
        (status = 503, description = "catalog_empty: the catalog holds no title yet", body = ErrorBody),
    ))]
pub async fn fill_plan(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&st, &headers, &id).await?;
    let snap = st.snapshot().await?;
    let now = st.now();
    let cluster = snap
        .fleet
        .appliance(&id)
        .map(|a| a.cluster.clone())
        .ok_or_else(|| ApiError::UnknownAppliance(id.clone()))?;
    if snap.title_meta.is_empty() {
        tracing::warn!(appliance = %id, "fill plan refused: the catalog holds no title");
        st.metrics.refused(&ApiError::CatalogEmpty);
        return Err(ApiError::CatalogEmpty);
    }
    let publisher = edge::Publisher {
        repo: st.repo.as_ref(),
        metrics: &st.metrics,
        cache: &st.fill_plans,
        cfg: &st.config.fill,
    };
    let plan = edge::cluster_plan(publisher, &snap, &cluster, &id, now).await?;
    let key = st.keys.signing(now);
    let writer = edge::PlanWriter {
        cfg: &st.config.fill,
        thresholds: st.thresholds(),
        issuer: &st.config.issuer,
        key: &key,
    };
    let out = edge::fill_plan(&writer, &snap, &plan, &id, now)?;
    st.metrics
        .fill_plans_served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(appliance = %id, plan = %out.plan_id, titles = out.titles.len(), "fill plan served");
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(out)).into_response())
}

impl From<edge::FillError> for ApiError {
    fn from(e: edge::FillError) -> Self {
        match e {
            edge::FillError::Store(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
