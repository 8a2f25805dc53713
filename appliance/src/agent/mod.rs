//! The fleet agent: the appliance's side of the control plane, on its own tokio runtime and
//! thread (never on a serving thread).
//!
//! - registers (`POST /v1/appliances/{id}/register`, retried until it succeeds);
//! - heartbeats every `interval_secs` of the last ack (health from the drives, load, request and
//!   byte counters from [`Metrics`](crate::metrics::Metrics), drives, titles held with their
//!   catalog version and files digest, [`FillStatus`]), reporting the length of an outage once
//!   when it comes back;
//! - fetches the grant public keys (`GET /v1/keys`) every `refresh_secs` or when an ack names an
//!   unknown key id, writes them into the key directory ([`keys::write`]) and swaps them into the
//!   running service; at start-up [`bootstrap_keys`] refreshes that cache, and when the control
//!   plane is unreachable the appliance starts and serves with the cached keys;
//! - fetches its fill plan every `refresh_secs` of the last plan, starting only after a first
//!   heartbeat was accepted (so the plan accounts for what the appliance holds), and runs the
//!   [`Filler`] on it (and every [`FILL_TICK`], so the window opening and failed titles are
//!   picked up).
//!
//! The control plane being unreachable never stops serving: calls are retried, the outage is
//! logged once past `grace`, and the last plan keeps being worked on.

pub mod client;
pub mod keys;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::fill::{FillPlan, FillStatus};
use protocol::fleet::{Drive, DriveState, Health, Heartbeat, Registration};
use tokio::sync::{watch, Notify};

use crate::fill::{FillConfig, Filler};
use crate::service::Service;
use client::ControlPlane;

/// How often the filler looks at the plan even when it has not changed.
pub const FILL_TICK: Duration = Duration::from_secs(2);
/// Nice value of every agent thread (fill hashing and writing included): background work, so
/// the kernel gives the serving threads (nice 0) about nine times its CPU share when both want
/// a core.
pub const AGENT_NICE: i32 = 10;
/// Heartbeat interval before the first ack.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Control-plane base URL, `http(s)://host:port`.
    pub control_plane: String,
    /// This appliance's id.
    pub id: String,
    /// The shared secret the policy lists for this appliance.
    pub credential: String,
    /// Address players reach this appliance at, announced at registration.
    pub advertise_address: Option<String>,
    /// Port announced at registration.
    pub advertise_port: Option<u16>,
    /// The key cache directory (the `--public-keys` directory).
    pub key_dir: PathBuf,
    /// How long the control plane may be unreachable before it is logged as an outage.
    pub grace: Duration,
    /// The connection limit (load = open connections / this).
    pub max_connections: usize,
    /// Fill settings.
    pub fill: FillConfig,
    // --- BGP (issue 14) ---
    /// The BGP speaker whose sessions and routes go into every heartbeat.
    pub bgp: Option<Arc<crate::bgp::Shared>>,
    // --- end BGP ---
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is wrong (the message names it).
    #[error("{0}")]
    Config(String),
    /// The thread or runtime could not start.
    #[error("starting the fleet agent: {0}")]
    Start(std::io::Error),
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops the agent (in-flight downloads are abandoned; their partial files stay for a
    /// resume) and waits for its thread.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Fetches the published keys once and writes them into the key cache (start-up). Returns the
/// key ids written; fails when the control plane is unreachable or answers badly, in which case
/// the caller starts with the keys already cached.
pub fn bootstrap_keys(cfg: &AgentConfig) -> Result<Vec<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let cp = ControlPlane::new(
        &cfg.control_plane,
        &cfg.id,
        &cfg.credential,
        cfg.grace,
        metrics,
    )?;
    rt.block_on(async {
        let published = cp.keys().await.map_err(|e| e.to_string())?;
        keys::write(&cfg.key_dir, &published).map_err(|e| e.to_string())?;
        Ok(published.keys.into_iter().map(|k| k.kid).collect())
    })
}

struct Agent {
    cfg: AgentConfig,
    svc: Arc<Service>,
    cp: Arc<ControlPlane>,
    filler: Filler,
    known_kids: Mutex<HashSet<String>>,
    keys_wanted: Notify,
    /// When the last heartbeat was built, with the request and byte counters then.
    last_counters: Mutex<(Instant, u64, u64)>,
    /// The plan being worked on.
    plan_id: Mutex<Option<String>>,
    /// Set once a heartbeat has been accepted: the control plane knows what this appliance
    /// holds, so a plan it sends reflects it (a plan computed before that could list none of
    /// the titles held and the filler would remove them).
    reported: watch::Sender<bool>,
    // --- BGP (issue 14) ---
    bgp_reporter: Mutex<crate::bgp::report::Reporter>,
    // --- end BGP ---
}

/// Starts the agent for `svc` on its own thread.
pub fn start(cfg: AgentConfig, svc: Arc<Service>) -> Result<AgentHandle, AgentError> {
    let metrics = svc.metrics().clone();
    metrics.fill.agent_enabled.store(true, Ordering::Relaxed);
    let cp = Arc::new(
        ControlPlane::new(
            &cfg.control_plane,
            &cfg.id,
            &cfg.credential,
            cfg.grace,
            metrics.clone(),
        )
        .map_err(|e| AgentError::Config(format!("--control-plane: {e}")))?,
    );
    let filler = Filler::new(svc.store().clone(), metrics, cp.clone(), cfg.fill.clone())
        .map_err(AgentError::Config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("outpost-agent")
        .on_thread_start(|| {
            if let Err(e) = crate::io::sys::set_thread_nice(AGENT_NICE) {
                tracing::warn!(error = %e, "cannot lower the agent thread's priority");
            }
        })
        .enable_all()
        .build()
        .map_err(AgentError::Start)?;
    let known = crate::keys::load_dir(&cfg.key_dir)
        .map(|r| r.kids().map(str::to_owned).collect())
        .unwrap_or_default();
    let agent = Arc::new(Agent {
        cfg,
        svc,
        cp,
        filler,
        known_kids: Mutex::new(known),
        keys_wanted: Notify::new(),
        last_counters: Mutex::new((Instant::now(), 0, 0)),
        plan_id: Mutex::new(None),
        reported: watch::channel(false).0,
        bgp_reporter: Mutex::default(),
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("outpost-agent-main".into())
        .spawn(move || {
            let _ = crate::io::sys::set_thread_nice(AGENT_NICE);
            rt.block_on(async move {
                let (plan_tx, plan_rx) = watch::channel::<Option<Arc<FillPlan>>>(None);
                let tasks = vec![
                    tokio::spawn(agent.clone().register_loop()),
                    tokio::spawn(agent.clone().heartbeat_loop()),
                    tokio::spawn(agent.clone().keys_loop()),
                    tokio::spawn(agent.clone().plan_loop(plan_tx)),
                    tokio::spawn(agent.clone().fill_loop(plan_rx)),
                    tokio::spawn(agent.clone().rate_loop()),
                ];
                let _ = rx.await;
                for t in tasks {
                    t.abort();
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(AgentError::Start)?;
    Ok(AgentHandle {
        stop: Some(tx),
        thread: Some(thread),
    })
}

fn clamp_secs(s: u64, min: u64, max: u64) -> Duration {
    Duration::from_secs(s.clamp(min, max))
}

impl Agent {
    async fn register_loop(self: Arc<Self>) {
        let reg = Registration {
            address: self.cfg.advertise_address.clone(),
            port: self.cfg.advertise_port,
            prefixes: None,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        };
        let mut wait = Duration::from_secs(1);
        loop {
            match self.cp.register(&reg).await {
                Ok(()) => {
                    tracing::info!(id = self.cfg.id, "registered with the control plane");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_secs = wait.as_secs(), "registration failed")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        let m = self.svc.metrics();
        let store = self.svc.store();
        let drives: Vec<Drive> = store
            .drives()
            .iter()
            .map(|d| Drive {
                path: d.root.display().to_string(),
                state: if d.is_failed() {
                    DriveState::Failed
                } else {
                    DriveState::Ok
                },
                used_bytes: d.used(),
                capacity_bytes: d.capacity,
            })
            .collect();
        let failed = drives
            .iter()
            .filter(|d| d.state == DriveState::Failed)
            .count();
        let health = if failed == drives.len() {
            Health::Error
        } else if failed > 0 {
            Health::Warning
        } else {
            Health::Ok
        };
        let (requests, bytes) = (m.requests_total(), m.bytes_sent());
        let egress_bps = {
            let mut last = self.last_counters.lock().unwrap_or_else(|p| p.into_inner());
            let secs = last.0.elapsed().as_secs_f64().max(0.001);
            let bps = (bytes.saturating_sub(last.2) as f64 * 8.0 / secs) as u64;
            *last = (Instant::now(), requests, bytes);
            bps
        };
        let held = store.held();
        let f = &m.fill;
        Heartbeat {
            health,
            load: m.active_connections().max(0) as f64 / self.cfg.max_connections.max(1) as f64,
            egress_bps,
            requests_served: requests,
            bytes_served: bytes,
            drives,
            titles: held.iter().map(|h| h.title.clone()).collect(),
            held,
            fill: Some(FillStatus {
                plan_id: None,
                in_window: f.in_window.load(Ordering::Relaxed),
                titles_pending: f.titles_pending.load(Ordering::Relaxed),
                bytes_filled: f.bytes_in.load(Ordering::Relaxed),
                files_verified: f.files_verified.load(Ordering::Relaxed),
                verify_failures: f.verify_failures_total(),
                rate_bps: f.rate_bps.load(Ordering::Relaxed),
                control_plane_unreachable_secs: self.cp.outage_report(),
            }),
            prefixes: None,
            // QoE: sessions seen since the previous heartbeat.
            qoe: self
                .svc
                .qoe()
                .map(|q| q.take_report(std::time::SystemTime::now()))
                .unwrap_or_default(),
            // --- BGP (issue 14) ---
            bgp: self.cfg.bgp.as_ref().map(|b| {
                self.bgp_reporter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .build(b)
            }),
            // --- end BGP ---
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut interval = DEFAULT_HEARTBEAT;
        loop {
            let mut hb = self.heartbeat();
            if let Some(f) = &mut hb.fill {
                f.plan_id = self.current_plan_id();
            }
            match self.cp.heartbeat(&hb).await {
                Ok(ack) => {
                    self.reported.send_replace(true);
                    // --- BGP (issue 14) ---
                    if hb.bgp.is_some() {
                        self.bgp_reporter
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .accepted(ack.bgp_full_table);
                    }
                    // --- end BGP ---
                    self.cp.outage_reported(
                        hb.fill
                            .as_ref()
                            .map_or(0, |f| f.control_plane_unreachable_secs),
                    );
                    interval = clamp_secs(ack.interval_secs, 1, 300);
                    let known = self.known_kids.lock().unwrap_or_else(|p| p.into_inner());
                    if ack.key_ids.iter().any(|k| !known.contains(k)) {
                        self.keys_wanted.notify_one();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn current_plan_id(&self) -> Option<String> {
        self.plan_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn keys_loop(self: Arc<Self>) {
        loop {
            let refresh;
            match self.cp.keys().await {
                Ok(published) => {
                    refresh = clamp_secs(published.refresh_secs, 5, 3600);
                    match keys::write(&self.cfg.key_dir, &published) {
                        Ok(changed) => {
                            *self.known_kids.lock().unwrap_or_else(|p| p.into_inner()) =
                                published.keys.iter().map(|k| k.kid.clone()).collect();
                            if changed {
                                match crate::keys::load_dir(&self.cfg.key_dir) {
                                    Ok(ring) => {
                                        tracing::info!(keys = ?ring.kids().collect::<Vec<_>>(), "grant public keys updated from the control plane");
                                        self.svc.set_keys(ring);
                                    }
                                    Err(e) => {
                                        tracing::error!(error = %e, "key cache unreadable after update; keeping the previous keys")
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "published keys refused; keeping the cached keys")
                        }
                    }
                }
                Err(e) => {
                    refresh = Duration::from_secs(5);
                    tracing::debug!(error = %e, "key fetch failed; serving with the cached keys");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(refresh) => {}
                _ = self.keys_wanted.notified() => {}
            }
        }
    }

    async fn plan_loop(self: Arc<Self>, tx: watch::Sender<Option<Arc<FillPlan>>>) {
        // No plan before the control plane has this appliance's holdings.
        let mut reported = self.reported.subscribe();
        if reported.wait_for(|r| *r).await.is_err() {
            return;
        }
        loop {
            let refresh;
            match self.cp.fill_plan().await {
                Ok(plan) => {
                    refresh = clamp_secs(plan.refresh_secs, 1, 3600);
                    let new_id = tx
                        .borrow()
                        .as_ref()
                        .is_none_or(|p| p.plan_id != plan.plan_id);
                    if new_id {
                        self.svc
                            .metrics()
                            .fill
                            .plan_changes
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            plan = plan.plan_id,
                            titles = plan.titles.len(),
                            "new fill plan"
                        );
                        *self.plan_id.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(plan.plan_id.clone());
                    }
                    // Sources and grants can change under the same plan id (a peer reporting a
                    // title held): the filler always works on the latest plan.
                    tx.send_if_modified(|cur| {
                        if cur.as_ref().is_some_and(|p| **p == plan) {
                            false
                        } else {
                            *cur = Some(Arc::new(plan));
                            true
                        }
                    });
                }
                Err(e) => {
                    // Soon again: a control plane still loading its catalog answers 503 for a
                    // moment (the last plan, if any, stays in force meanwhile).
                    refresh = Duration::from_secs(2);
                    tracing::warn!(error = %e, "fill plan fetch failed; keeping the last plan");
                }
            }
            tokio::time::sleep(refresh).await;
        }
    }

    async fn fill_loop(self: Arc<Self>, mut rx: watch::Receiver<Option<Arc<FillPlan>>>) {
        loop {
            let plan = rx.borrow_and_update().clone();
            if let Some(plan) = plan {
                let minute = crate::fill::window::local_minute_now();
                let r = self.filler.pass(&plan, minute).await;
                if !r.filled.is_empty() || !r.removed.is_empty() {
                    tracing::info!(filled = ?r.filled, removed = ?r.removed, pending = r.pending.len(), "fill pass");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FILL_TICK) => {}
                _ = rx.changed() => {}
            }
        }
    }

    async fn rate_loop(self: Arc<Self>) {
        let f = &self.svc.metrics().fill;
        let mut last = f.bytes_in.load(Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = f.bytes_in.load(Ordering::Relaxed);
            f.rate_bps
                .store(now.saturating_sub(last) * 8, Ordering::Relaxed);
            last = now;
        }
    }
}
