//! The admin listener (tokio + hyper, its own port): `/metrics` (Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (accepting traffic: not draining and at least one healthy
//! cache drive). It runs on a small tokio runtime beside the data-plane threads, which is also
//! where signals are handled; the fleet agent and the filler have their own ([`crate::agent`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::io::Shared;

/// What the admin handlers read.
#[derive(Debug)]
pub struct AdminState {
    /// The data plane's shared state.
    pub shared: Arc<Shared>,
    /// The backend name (`io_uring` or `epoll`).
    pub backend: &'static str,
}

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answers one admin request.
pub fn handle(state: &AdminState, method: &hyper::Method, path: &str) -> Response<Full<Bytes>> {
    let svc = &state.shared.svc;
    // QoE: `/qoe/sessions` and `/qoe/load-override` (see `crate::qoe`).
    if let Some(r) = qoe_route(state, method, path) {
        return r;
    }
    match path {
        "/metrics" => {
            let mut text =
                svc.metrics()
                    .render(svc.store(), state.backend, state.shared.is_shutting_down());
            // QoE: CMCD / CMSD / session / access-log counters.
            if let Some(q) = svc.qoe() {
                text.push_str(&q.render_metrics());
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if state.shared.is_shutting_down() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "draining\n".into(),
                )
            } else if !svc.store().any_healthy() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no healthy cache drive\n".into(),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// QoE admin routes: `GET /qoe/sessions` (JSON summaries, most recent first), `PUT
/// /qoe/load-override` (report overload: CMSD `mb` on every object response) and `DELETE
/// /qoe/load-override` (back to the connection threshold).
fn qoe_route(
    state: &AdminState,
    method: &hyper::Method,
    path: &str,
) -> Option<Response<Full<Bytes>>> {
    use crate::qoe::LoadOverride;
    if !path.starts_with("/qoe/") {
        return None;
    }
    let Some(q) = state.shared.svc.qoe() else {
        return Some(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "QoE is not enabled on this appliance\n".into(),
        ));
    };
    let text = |s: &str| reply(StatusCode::OK, "text/plain", format!("{s}\n"));
    Some(match (method, path) {
        (&hyper::Method::GET, "/qoe/sessions") => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&q.sessions()).unwrap_or_else(|_| "[]".into()),
        ),
        (&hyper::Method::PUT, "/qoe/load-override") => {
            q.set_override(LoadOverride::Overloaded);
            text("overloaded")
        }
        (&hyper::Method::DELETE, "/qoe/load-override") => {
            q.set_override(LoadOverride::None);
            text("cleared")
        }
        (_, "/qoe/sessions" | "/qoe/load-override") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /qoe/sessions; PUT or DELETE /qoe/load-override\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

/// Serves the admin listener until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req.method(), req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
