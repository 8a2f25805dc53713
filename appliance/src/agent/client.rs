//! The control-plane client: every call carries `Authorization: Bearer <credential>` and the
//! `Outpost-Appliance` header, has a timeout, and records reachability (the outage clock the
//! heartbeat reports).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::fill::FillPlan;
use protocol::fleet::{Heartbeat, HeartbeatAck, PublishedKeys, Registration, APPLIANCE_HEADER};
use serde::de::DeserializeOwned;

use crate::metrics::Metrics;

/// Longest body read from the control plane (plans list up to 100 000 titles).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Timeout of one control-plane call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a control-plane call failed; each names the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Not reachable (connect, timeout, reset).
    #[error("{endpoint}: control plane unreachable: {source}")]
    Unreachable {
        /// Method and path.
        endpoint: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// It answered with an error status.
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// Method and path.
        endpoint: String,
        /// The status code.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The answer is not what the contract says.
    #[error("{endpoint}: invalid answer: {reason}")]
    Invalid {
        /// Method and path.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct Outage {
    /// When the current run of failures started.
    since: Option<Instant>,
    /// Whether the grace period has been logged for this outage.
    logged: bool,
    /// Length of the last finished outage, until a heartbeat has reported it.
    to_report: u64,
}

/// A client for one appliance's control-plane calls.
#[derive(Debug)]
pub struct ControlPlane {
    base: String,
    id: String,
    credential: String,
    http: reqwest::Client,
    grace: Duration,
    outage: Mutex<Outage>,
    metrics: std::sync::Arc<Metrics>,
}

impl ControlPlane {
    /// A client for `base` (`http(s)://host:port`) as appliance `id`.
    pub fn new(
        base: &str,
        id: &str,
        credential: &str,
        grace: Duration,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("{base:?} is not an http:// or https:// URL"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(ControlPlane {
            base,
            id: id.to_owned(),
            credential: credential.to_owned(),
            http,
            grace,
            outage: Mutex::new(Outage::default()),
            metrics,
        })
    }

    /// The appliance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seconds since the current outage started (0 when the last call succeeded).
    pub fn unreachable_secs(&self) -> u64 {
        self.outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .since
            .map_or(0, |s| s.elapsed().as_secs())
    }

    /// The outage length a heartbeat reports: the current outage, else the last finished one
    /// not yet reported.
    pub fn outage_report(&self) -> u64 {
        let o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        o.since
            .map_or(o.to_report, |s| s.elapsed().as_secs().max(o.to_report))
    }

    /// A heartbeat carrying `secs` was accepted: that outage has been reported.
    pub fn outage_reported(&self, secs: u64) {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if o.to_report <= secs {
            o.to_report = 0;
        }
    }

    fn reached(&self) {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = o.since.take() {
            let secs = since.elapsed().as_secs();
            o.to_report = o.to_report.max(secs);
            if o.logged {
                tracing::warn!(outage_secs = secs, "control plane reachable again");
            } else {
                tracing::info!(outage_secs = secs, "control plane reachable again");
            }
        }
        o.logged = false;
        self.metrics
            .fill
            .control_plane_reachable
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn unreachable(&self, err: &CallError) {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let since = *o.since.get_or_insert_with(Instant::now);
        self.metrics
            .fill
            .control_plane_reachable
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if !o.logged && since.elapsed() >= self.grace {
            o.logged = true;
            tracing::warn!(
                outage_secs = since.elapsed().as_secs(),
                grace_secs = self.grace.as_secs(),
                error = %err,
                "control plane unreachable past the grace period; serving what this appliance holds with its cached keys"
            );
        } else {
            tracing::debug!(error = %err, "control-plane call failed");
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CallError> {
        let endpoint = format!("{method} {path}");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.credential)
            .header(APPLIANCE_HEADER, &self.id);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let result = async {
            let mut resp = req.send().await.map_err(|source| CallError::Unreachable {
                endpoint: endpoint.clone(),
                source,
            })?;
            let status = resp.status().as_u16();
            let mut out = Vec::new();
            while let Some(c) = resp
                .chunk()
                .await
                .map_err(|source| CallError::Unreachable {
                    endpoint: endpoint.clone(),
                    source,
                })?
            {
                if out.len() + c.len() > MAX_BODY_BYTES {
                    return Err(CallError::Invalid {
                        endpoint: endpoint.clone(),
                        reason: format!("body larger than {MAX_BODY_BYTES} bytes"),
                    });
                }
                out.extend_from_slice(&c);
            }
            if !(200..300).contains(&status) {
                let text = String::from_utf8_lossy(&out[..out.len().min(300)]).into_owned();
                return Err(CallError::Status {
                    endpoint: endpoint.clone(),
                    status,
                    body: text,
                });
            }
            Ok(out)
        }
        .await;
        match &result {
            // An error status is an answer: the control plane is reachable.
            Ok(_) | Err(CallError::Status { .. }) | Err(CallError::Invalid { .. }) => {
                self.reached()
            }
            Err(e) => self.unreachable(e),
        }
        result
    }

    fn json<T: DeserializeOwned>(endpoint: &str, bytes: &[u8]) -> Result<T, CallError> {
        serde_json::from_slice(bytes).map_err(|e| CallError::Invalid {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })
    }

    /// `POST /v1/appliances/{id}/register`.
    pub async fn register(&self, reg: &Registration) -> Result<(), CallError> {
        let path = format!("/v1/appliances/{}/register", self.id);
        let body = serde_json::to_vec(reg).unwrap_or_default();
        self.call(reqwest::Method::POST, &path, Some(body)).await?;
        Ok(())
    }

    /// `POST /v1/appliances/{id}/heartbeat`.
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAck, CallError> {
        let path = format!("/v1/appliances/{}/heartbeat", self.id);
        let body = serde_json::to_vec(hb).unwrap_or_default();
        let out = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        Self::json(&path, &out)
    }

    /// `GET /v1/keys`.
    pub async fn keys(&self) -> Result<PublishedKeys, CallError> {
        let out = self.call(reqwest::Method::GET, "/v1/keys", None).await?;
        Self::json("/v1/keys", &out)
    }

    /// `GET /v1/appliances/{id}/fill-plan`, validated and checked to be this appliance's.
    pub async fn fill_plan(&self) -> Result<FillPlan, CallError> {
        let path = format!("/v1/appliances/{}/fill-plan", self.id);
        let out = self.call(reqwest::Method::GET, &path, None).await?;
        let plan: FillPlan = Self::json(&path, &out)?;
        plan.validate().map_err(|e| CallError::Invalid {
            endpoint: path.clone(),
            reason: e.to_string(),
        })?;
        if plan.appliance != self.id {
            return Err(CallError::Invalid {
                endpoint: path,
                reason: format!(
                    "field appliance is {:?}, not this appliance",
                    plan.appliance
                ),
            });
        }
        Ok(plan)
    }

    /// `GET /v1/appliances/{id}/catalog/{title}`: the entry's exact text.
    pub async fn catalog(&self, title: &str) -> Result<String, CallError> {
        let path = format!("/v1/appliances/{}/catalog/{title}", self.id);
        let out = self.call(reqwest::Method::GET, &path, None).await?;
        String::from_utf8(out).map_err(|_| CallError::Invalid {
            endpoint: path,
            reason: "not UTF-8".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn an_outage_is_reported_once_after_it_ends() {
        let m = std::sync::Arc::new(Metrics::default());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let cp = ControlPlane::new(
            &format!("http://{addr}/"),
            "a-1",
            "s",
            Duration::ZERO,
            m.clone(),
        )
        .unwrap();
        assert!(matches!(
            cp.keys().await,
            Err(CallError::Unreachable { .. })
        ));
        assert!(!m.fill.control_plane_reachable.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(cp.unreachable_secs() >= 1);
        // The control plane is back (an error status is an answer: reachable).
        let l = std::net::TcpListener::bind(addr).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy")
                .unwrap();
            head
        });
        let e = cp.keys().await.unwrap_err();
        assert!(matches!(e, CallError::Status { status: 503, .. }), "{e}");
        let head = server.join().unwrap();
        assert!(head.contains("authorization: bearer s\r\n"), "{head}");
        assert!(head.contains("outpost-appliance: a-1\r\n"), "{head}");
        assert!(m.fill.control_plane_reachable.load(Ordering::Relaxed));
        assert_eq!(cp.unreachable_secs(), 0);
        let reported = cp.outage_report();
        assert!(reported >= 1, "{reported}");
        cp.outage_reported(reported);
        assert_eq!(cp.outage_report(), 0, "reported more than once");
    }
}
