//! A stand-in for the appliances' fleet agent: every two seconds, for each appliance process that
//! is running and answers `GET /healthz` on its admin port, it sends the control plane the
//! heartbeat the appliance would send (health, drives, titles held), over the control plane's
//! own fleet API. A stopped appliance stops heartbeating, so the control plane marks it offline
//! and steering re-ranks, as it would for a real failure.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protocol::fleet::{Drive, DriveState, Health, Heartbeat, APPLIANCE_HEADER};
use tower::ServiceExt as _;

use super::procs::Proc;
use super::topology::Topology;

/// Runs until aborted.
pub async fn run(cp: control_plane::AppState, topo: Topology, procs: Vec<Arc<Mutex<Proc>>>) {
    let client: Client<_, Empty<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        for (a, p) in topo.appliances.iter().zip(&procs) {
            let running = p.lock().map(|mut p| p.is_running()).unwrap_or(false);
            if !running {
                continue;
            }
            let uri = format!("http://127.0.0.1:{}/healthz", a.admin_port);
            let Ok(uri) = uri.parse() else { continue };
            let healthy = matches!(
                tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await,
                Ok(Ok(r)) if r.status().is_success()
            );
            if !healthy {
                continue;
            }
            let (requests_served, bytes_served) = counters(&client, a.admin_port).await;
            let hb = Heartbeat {
                health: Health::Ok,
                load: 0.0,
                egress_bps: 0,
                requests_served,
                bytes_served,
                drives: a.cache_dirs.iter().map(|d| drive(d)).collect(),
                titles: titles_held(&a.cache_dirs),
                prefixes: None,
                held: Vec::new(),
                fill: None,
            };
            let Ok(body) = serde_json::to_string(&hb) else {
                continue;
            };
            let req = Request::post(format!("/v1/appliances/{}/heartbeat", a.id))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {}", a.credential))
                .header(APPLIANCE_HEADER, &a.id)
                .body(Body::from(body));
            if let Ok(req) = req {
                match control_plane::app(cp.clone()).oneshot(req).await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        tracing::warn!(appliance = %a.id, status = %r.status(), "heartbeat refused")
                    }
                    Err(e) => match e {},
                }
            }
        }
    }
}

/// Requests answered and payload bytes sent, from the appliance's own Prometheus counters.
async fn counters(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<axum::body::Bytes>>,
    admin_port: u16,
) -> (u64, u64) {
    use http_body_util::BodyExt as _;
    let Ok(uri) = format!("http://127.0.0.1:{admin_port}/metrics").parse() else {
        return (0, 0);
    };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await else {
        return (0, 0);
    };
    let Ok(body) = resp.into_body().collect().await else {
        return (0, 0);
    };
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    (
        sum_metric(&text, "outpost_appliance_requests_total"),
        sum_metric(&text, "outpost_appliance_sent_bytes_total"),
    )
}

/// Sums every series of one metric in Prometheus text format.
fn sum_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn drive(d: &Path) -> Drive {
    Drive {
        path: d.display().to_string(),
        state: if d.is_dir() {
            DriveState::Ok
        } else {
            DriveState::Failed
        },
        used_bytes: dir_bytes(d),
        capacity_bytes: 1 << 30,
    }
}

fn titles_held(dirs: &[std::path::PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("catalog.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out
}
