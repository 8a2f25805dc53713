//! The demo's own routes, merged into the control plane's router so the pages are same-origin
//! with its APIs:
//!
//! - `/demo`, `/fleet` and `/demo/assets/*`: the player and fleet pages and the player libraries
//!   (from the data directory's `node_modules`; nothing is loaded from the internet);
//! - `POST /demo/api/sessions`: plays the playback service. A browser never holds the playback
//!   API key, so this route calls `POST /v1/playback/sessions` with it, for the demo member and
//!   the browser's own address, exactly as a playback service would;
//! - `POST /demo/api/appliances/{id}/stop|restore`: stops or restarts an appliance process
//!   (with BIRD, a restore answers once BGP steers to the appliance again);
//! - `GET /demo/api/config`: titles, device classes and appliances with their process state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::assets::TITLES;
use super::bird::Bird;
use super::procs::Proc;
use super::topology::{Topology, ACCOUNT, MEMBERS};

/// Shared state of the demo routes.
#[derive(Clone)]
pub struct DemoState {
    cp: control_plane::AppState,
    topo: Topology,
    procs: Vec<Arc<Mutex<Proc>>>,
    api_secret: Arc<str>,
    modules: Option<PathBuf>,
    bird: Option<Arc<Bird>>,
}

impl DemoState {
    /// Bundles what the routes need.
    pub fn new(
        cp: control_plane::AppState,
        topo: Topology,
        procs: Vec<Arc<Mutex<Proc>>>,
        api_secret: String,
        modules: Option<PathBuf>,
        bird: Option<Arc<Bird>>,
    ) -> Self {
        DemoState {
            cp,
            topo,
            procs,
            api_secret: api_secret.into(),
            modules,
            bird,
        }
    }
}

/// The demo router.
pub fn router(state: DemoState) -> Router {
    Router::new()
        .route("/", get(|| async { redirect("/demo") }))
        .route("/demo", get(|| async { page(DEMO_HTML) }))
        .route("/fleet", get(|| async { page(FLEET_HTML) }))
        .route("/demo/assets/lib/{file}", get(library))
        .route("/demo/assets/{file}", get(asset))
        .route("/demo/api/config", get(config))
        .route("/demo/api/sessions", post(start_session))
        .route("/demo/api/appliances/{id}/{action}", post(appliance_action))
        .with_state(state)
}

const DEMO_HTML: &str = include_str!("../../../web/demo.html");
const FLEET_HTML: &str = include_str!("../../../web/fleet.html");
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/demo.js"),
    ),
    (
        "fleet.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/fleet.js"),
    ),
    (
        "outpost.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/outpost.css"),
    ),
];
const LIBRARIES: [(&str, &str); 3] = [
    (
        "shaka-player.compiled.js",
        "shaka-player/dist/shaka-player.compiled.js",
    ),
    ("hls.min.js", "hls.js/dist/hls.min.js"),
    ("dash.all.min.js", super::assets::DASHJS_DIST),
];

fn redirect(to: &'static str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ctype, body)) => ([(header::CONTENT_TYPE, *ctype)], *body).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset {file:?}"),
        ),
    }
}

async fn library(State(st): State<DemoState>, Path(file): Path<String>) -> Response {
    let Some((_, rel)) = LIBRARIES.iter().find(|(name, _)| *name == file) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no library {file:?}"),
        );
    };
    let Some(modules) = &st.modules else {
        return error(
            StatusCode::NOT_FOUND,
            "no_browser_assets",
            "the demo was started with --no-browser-assets: player libraries are not installed",
        );
    };
    match tokio::fs::read(modules.join(rel)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{}: {e}", modules.join(rel).display()),
        ),
    }
}

fn appliance_states(st: &DemoState) -> Vec<Value> {
    st.topo
        .appliances
        .iter()
        .zip(&st.procs)
        .map(|(a, p)| {
            let running = p.lock().map(|mut p| p.is_running()).unwrap_or(false);
            json!({
                "id": a.id,
                "cluster": a.cluster,
                "kind": a.kind.as_str(),
                "url": format!("http://127.0.0.1:{}", a.port),
                "state": if running { "ok" } else { "stopped" },
            })
        })
        .collect()
}

async fn config(State(st): State<DemoState>) -> Json<Value> {
    Json(json!({
        "titles": TITLES.iter().map(|t| json!({"id": t.id, "name": t.name})).collect::<Vec<_>>(),
        "devices": [
            {"id": "desktop-browser", "name": "Desktop browser (up to FHD)"},
            {"id": "sd-smart-tv", "name": "SD smart TV (SD only)"},
            {"id": "playready-tv", "name": "PlayReady-only TV (no Clear Key)"},
        ],
        "appliances": appliance_states(&st),
    }))
}

/// Calls the control plane's own router in-process (no socket, same handlers).
async fn call_control_plane(st: &DemoState, req: Request<Body>) -> (StatusCode, Value) {
    let resp = match control_plane::app(st.cp.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

#[derive(Debug, Deserialize)]
struct StartBody {
    title: String,
    device: String,
    /// One of the demo's accounts; the premium member by default.
    #[serde(default)]
    member: Option<String>,
}

async fn start_session(
    State(st): State<DemoState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<StartBody>,
) -> Response {
    let account = match body.member.as_deref() {
        None => ACCOUNT,
        Some(m) if MEMBERS.contains(&m) => m,
        Some(m) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unknown_member",
                format!("no demo member {m:?}"),
            )
        }
    };
    let req = json!({
        "account_id": account,
        "device_class": body.device,
        "title": body.title,
        "client_ip": peer.ip().to_string(),
    });
    let request = Request::post("/v1/playback/sessions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", st.api_secret))
        .body(Body::from(req.to_string()));
    let Ok(request) = request else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "building request",
        );
    };
    let (status, body) = call_control_plane(&st, request).await;
    (status, Json(body)).into_response()
}

async fn appliance_action(
    State(st): State<DemoState>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Some(i) = st.topo.appliances.iter().position(|a| a.id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_appliance",
            format!("no appliance {id:?}"),
        );
    };
    let proc = st.procs[i].clone();
    let restore = action == "restore";
    let since = crate::commands::unix_now();
    let result = tokio::task::spawn_blocking(move || {
        let mut p = proc.lock().map_err(|_| anyhow::anyhow!("poisoned lock"))?;
        match action.as_str() {
            "stop" => {
                p.stop(Duration::from_secs(5));
                Ok(())
            }
            "restore" => p.start(),
            other => anyhow::bail!("unknown action {other:?} (stop or restore)"),
        }
    })
    .await;
    // With BIRD, a restored appliance is back once BGP steers to it again, as a stopped one is
    // gone once its process exited: a session started from then on may use it.
    if let (Ok(Ok(())), true, Some(b)) = (&result, restore, &st.bird) {
        if b.running() && b.peers_with(&id) {
            if let Err(why) = b
                .wait_until_steered(&st.cp, &id, since, Duration::from_secs(20))
                .await
            {
                eprintln!(
                    "demo: warning: {id} restarted, but BGP does not steer to it yet ({why})"
                );
            }
        }
    }
    match result {
        Ok(Ok(())) => Json(json!({"appliances": appliance_states(&st)})).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, "bad_action", format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
