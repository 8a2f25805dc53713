//! The router: `app(state)` composes every endpoint with the request-id, CORS and body-limit
//! layers, so tests drive it with `oneshot` and the demo can mount it in-process. Also the
//! OpenAPI document (generated from the handlers' annotations), `/metrics` and `/healthz`.

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use tracing::Instrument as _;
use utoipa::OpenApi;

use crate::routes::{admin, fleet, license, playback, ErrorBody, MAX_BODY};
use crate::state::AppState;

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The OpenAPI document. Every operation's security names a scheme of
/// `components.securitySchemes` (see [`SecuritySchemes`]); every error answer is [`ErrorBody`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost control plane",
        description = "Entitlement, concurrency leases, Clear Key licences, steering and signed grants. \
            Every refusal is a JSON `ErrorBody` whose `code` is stable."
    ),
    modifiers(&SecuritySchemes),
    paths(
        playback::start_session,
        playback::session_heartbeat,
        playback::end_session,
        playback::hls_master,
        playback::dash_mpd,
        playback::steering_hls,
        playback::steering_dash,
        license::clearkey,
        fleet::heartbeat,
        fleet::register,
        fleet::keys,
        fleet::view,
        crate::routes::qoe::view,
        fleet::catalog,
        fleet::fill_plan,
        admin::put_policy,
        admin::put_title,
        admin::put_keys,
        admin::appliances,
        metrics,
        healthz,
    ),
    components(schemas(
        ErrorBody,
        playback::StartRequest,
        playback::StartResponse,
        playback::SessionHeartbeatResponse,
        playback::SteeringManifest,
        license::ClearKeyRequest,
        license::ClearKeyLicense,
        admin::TitleUpload,
        admin::ImportAnswer,
        HealthBody,
        crate::routes::qoe::QoeView,
        crate::routes::qoe::QoeGroup,
        crate::db::QoeRow,
        protocol::qoe::SessionQoe,
    ))
)]
pub struct ApiDoc;

/// Declares the bearer tokens the service checks (see [`crate::routes`]'s `SCHEME_*`).
#[derive(Debug)]
pub struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use crate::routes::{
            SCHEME_ADMIN, SCHEME_API_KEY, SCHEME_APPLIANCE, SCHEME_SESSION, SCHEME_SESSION_QUERY,
        };
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            SCHEME_API_KEY,
            bearer("A playback-service API key (policy `api_keys[].secret`)."),
        );
        c.add_security_scheme(
            SCHEME_SESSION,
            bearer("A session's token (`token` in the answer to a session start)."),
        );
        c.add_security_scheme(
            SCHEME_SESSION_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "A session's token as a query parameter, for players that cannot set headers.",
            ))),
        );
        c.add_security_scheme(
            SCHEME_APPLIANCE,
            bearer(
                "An appliance's credential (policy `appliances[].credential`); the \
                 `Outpost-Appliance` header names the appliance.",
            ),
        );
        c.add_security_scheme(
            SCHEME_ADMIN,
            bearer("The admin token (`--admin-token`); the admin API is disabled without one."),
        );
    }
}

/// `GET /healthz` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    /// Always `ok`.
    pub status: &'static str,
    /// The storage backend: `sqlite` or `postgres`.
    pub database: &'static str,
}

/// Builds the router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/playback/sessions", post(playback::start_session))
        .route("/v1/playback/sessions/{id}", delete(playback::end_session))
        .route(
            "/v1/playback/sessions/{id}/heartbeat",
            post(playback::session_heartbeat),
        )
        .route(
            "/v1/playback/sessions/{id}/master.m3u8",
            get(playback::hls_master),
        )
        .route(
            "/v1/playback/sessions/{id}/manifest.mpd",
            get(playback::dash_mpd),
        )
        .route("/v1/steering/{id}/hls", get(playback::steering_hls))
        .route("/v1/steering/{id}/dash", get(playback::steering_dash))
        .route("/v1/license/clearkey", post(license::clearkey))
        .route("/v1/appliances/{id}/heartbeat", post(fleet::heartbeat))
        .route("/v1/appliances/{id}/register", post(fleet::register))
        .route("/v1/appliances/{id}/catalog/{title}", get(fleet::catalog))
        .route("/v1/appliances/{id}/fill-plan", get(fleet::fill_plan))
        .route("/v1/keys", get(fleet::keys))
        .route("/v1/fleet", get(fleet::view))
        // QoE (issue 16)
        .route("/v1/qoe", get(crate::routes::qoe::view))
        .route("/v1/admin/policy", put(admin::put_policy))
        .route("/v1/admin/titles/{id}", put(admin::put_title))
        .route("/v1/admin/content-keys", put(admin::put_keys))
        .route("/v1/admin/appliances", get(admin::appliances))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), request_layer))
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"code": "not_found", "message": "no such endpoint"})),
    )
        .into_response()
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Request ids (kept from the client when sane, else generated), a tracing span per request
/// (method and path only: tokens travel in headers or the query, never logged), CORS for
/// browser players.
async fn request_layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    st.metrics
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| valid_request_id(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&crate::crypto::random_token(9))
                .unwrap_or(HeaderValue::from_static("-"))
        });
    let span = tracing::info_span!(
        "request",
        id = %id.to_str().unwrap_or("-"),
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-request-id"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        let r = next.run(req).instrument(span.clone()).await;
        span.in_scope(|| tracing::debug!(status = r.status().as_u16(), "response"));
        r
    };
    let h = resp.headers_mut();
    h.insert(HeaderName::from_static(REQUEST_ID), id);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-request-id, retry-after"),
    );
    resp
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_json().unwrap_or_default(),
    )
        .into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    #[allow(unused_mut)]
    let mut text = st.metrics.render();
    // --- BGP (issue 14) ---
    if let Ok(snap) = st.snapshot().await {
        text.push_str(&crate::bgp::render_metrics(&snap.bgp));
    }
    // --- end BGP ---
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Liveness: answers 200 when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses(
    (status = 200, description = "The database answers", body = HealthBody),
    (status = 500, description = "internal: the database answered with an error", body = ErrorBody),
    (status = 503, description = "database_unavailable: the database cannot be reached (Retry-After)", body = ErrorBody),
))]
pub async fn healthz(State(st): State<AppState>) -> Response {
    match st.repo.live_leases("-", 0).await {
        Ok(_) => (
            StatusCode::OK,
            Json(HealthBody {
                status: "ok",
                database: st.repo.backend(),
            }),
        )
            .into_response(),
        // A database that cannot be reached is `database_unavailable` (503, Retry-After).
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}
