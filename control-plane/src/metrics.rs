//! Prometheus metrics, kept as atomics and rendered in the text exposition format at
//! `GET /metrics`. Labels are fixed sets (refusal codes, miss classes, fill actions), never
//! appliance or session ids, so the series count is bounded; the one exception is the cluster id
//! on `outpost_cp_fill_titles_planned`, a set the policy bounds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::ApiError;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// The counters.
#[derive(Debug)]
pub struct Metrics {
    /// Sessions started.
    pub sessions_started: AtomicU64,
    /// Refusals by code, indexed like [`ApiError::CODES`].
    pub refusals: [AtomicU64; ApiError::CODES.len()],
    /// Session heartbeats.
    pub session_heartbeats: AtomicU64,
    /// Sessions ended by DELETE.
    pub sessions_ended: AtomicU64,
    /// Licences issued.
    pub licenses: AtomicU64,
    /// Steering decisions whose best local choice was skipped: content misses.
    pub content_misses: AtomicU64,
    /// ... health misses.
    pub health_misses: AtomicU64,
    /// Appliance heartbeats.
    pub appliance_heartbeats: AtomicU64,
    /// `Idempotency-Key` claims taken over from a request that never answered (migration 0007).
    pub idempotency_takeovers: AtomicU64,
    // QoE (issue 16)
    /// Session QoE reports stored.
    pub qoe_reports: AtomicU64,
    /// ... of which reported starvation.
    pub qoe_starved_reports: AtomicU64,
    /// Steering moves for bad QoE, by reason (each counted once, `routes::qoe::move_changes`).
    pub qoe_moves: Mutex<BTreeMap<String, u64>>,
    /// HTTP requests.
    pub requests: AtomicU64,
    /// Fill plans served to appliances.
    pub fill_plans_served: AtomicU64,
    /// Catalog entries served to filling appliances.
    pub fill_catalogs_served: AtomicU64,
    /// Placement changes published: adds.
    pub plan_adds: AtomicU64,
    /// Placement changes published: removes.
    pub plan_removes: AtomicU64,
    /// Stored values that did not decode when the current snapshot was built (a gauge).
    pub snapshot_bad_rows: AtomicU64,
    /// Cluster → titles in its last published placement (distinct titles).
    pub titles_planned: Mutex<BTreeMap<String, u64>>,
    fill_last: Mutex<HashMap<String, (u64, u64, u64)>>,
    fill_bytes: AtomicU64,
    fill_files_verified: AtomicU64,
    fill_verify_failures: AtomicU64,
    start_buckets: [AtomicU64; BUCKETS.len()],
    start_count: AtomicU64,
    start_sum_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sessions_started: AtomicU64::new(0),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            session_heartbeats: AtomicU64::new(0),
            sessions_ended: AtomicU64::new(0),
            licenses: AtomicU64::new(0),
            content_misses: AtomicU64::new(0),
            health_misses: AtomicU64::new(0),
            appliance_heartbeats: AtomicU64::new(0),
            idempotency_takeovers: AtomicU64::new(0),
            qoe_reports: AtomicU64::new(0),
            qoe_starved_reports: AtomicU64::new(0),
            qoe_moves: Mutex::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            fill_plans_served: AtomicU64::new(0),
            fill_catalogs_served: AtomicU64::new(0),
            plan_adds: AtomicU64::new(0),
            plan_removes: AtomicU64::new(0),
            snapshot_bad_rows: AtomicU64::new(0),
            titles_planned: Mutex::new(BTreeMap::new()),
            fill_last: Mutex::new(HashMap::new()),
            fill_bytes: AtomicU64::new(0),
            fill_files_verified: AtomicU64::new(0),
            fill_verify_failures: AtomicU64::new(0),
            start_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            start_count: AtomicU64::new(0),
            start_sum_us: AtomicU64::new(0),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// QoE (issue 16): counts `sessions` stored reports, `starved` of them with starvation.
    pub fn record_qoe(&self, sessions: u64, starved: u64) {
        self.qoe_reports.fetch_add(sessions, Ordering::Relaxed);
        self.qoe_starved_reports
            .fetch_add(starved, Ordering::Relaxed);
    }

    /// QoE (issue 16): counts one steering move off an appliance for `reason`.
    pub fn record_qoe_move(&self, reason: &str) {
        *self
            .qoe_moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// Counts a refusal.
    pub fn refused(&self, e: &ApiError) {
        if let Some(i) = ApiError::CODES.iter().position(|c| *c == e.code()) {
            inc(&self.refusals[i]);
        }
    }

    /// Adds what an appliance's fill counters grew by since its previous heartbeat (a counter
    /// that went down means the appliance restarted: its new value is all growth).
    pub fn record_fill(&self, appliance: &str, f: &protocol::fill::FillStatus) {
        let now = (f.bytes_filled, f.files_verified, f.verify_failures);
        let Ok(mut last) = self.fill_last.lock() else {
            return;
        };
        let prev = last.insert(appliance.to_owned(), now);
        let grow = |new: u64, old: Option<u64>| match old {
            Some(o) if new >= o => new - o,
            _ => new,
        };
        self.fill_bytes
            .fetch_add(grow(now.0, prev.map(|p| p.0)), Ordering::Relaxed);
        self.fill_files_verified
            .fetch_add(grow(now.1, prev.map(|p| p.1)), Ordering::Relaxed);
        self.fill_verify_failures
            .fetch_add(grow(now.2, prev.map(|p| p.2)), Ordering::Relaxed);
    }

    /// Records one session-start latency.
    pub fn observe_start(&self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                inc(&self.start_buckets[i]);
            }
        }
        inc(&self.start_count);
        self.start_sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "outpost_cp_sessions_started_total",
            "Playback sessions started.",
            g(&self.sessions_started),
        );
        counter(
            "outpost_cp_session_heartbeats_total",
            "Session heartbeats accepted.",
            g(&self.session_heartbeats),
        );
        counter(
            "outpost_cp_sessions_ended_total",
            "Sessions ended by the client.",
            g(&self.sessions_ended),
        );
        counter(
            "outpost_cp_licenses_total",
            "Clear Key licences issued.",
            g(&self.licenses),
        );
        counter(
            "outpost_cp_appliance_heartbeats_total",
            "Appliance heartbeats accepted.",
            g(&self.appliance_heartbeats),
        );
        // QoE (issue 16)
        counter(
            "outpost_cp_qoe_reports_total",
            "Session QoE reports stored from appliance heartbeats.",
            g(&self.qoe_reports),
        );
        counter(
            "outpost_cp_qoe_starved_reports_total",
            "Session QoE reports with at least one buffer starvation.",
            g(&self.qoe_starved_reports),
        );
        counter(
            "outpost_cp_http_requests_total",
            "HTTP requests served.",
            g(&self.requests),
        );
        counter(
            "outpost_cp_fill_plans_served_total",
            "Fill plans served to appliances.",
            g(&self.fill_plans_served),
        );
        counter(
            "outpost_cp_fill_catalogs_served_total",
            "Catalog entries served to filling appliances.",
            g(&self.fill_catalogs_served),
        );
        counter(
            "outpost_cp_fill_bytes_reported_total",
            "Bytes appliances report having fetched by fill.",
            g(&self.fill_bytes),
        );
        counter(
            "outpost_cp_fill_files_verified_total",
            "Files appliances report fetched and verified by fill.",
            g(&self.fill_files_verified),
        );
        counter(
            "outpost_cp_fill_verify_failures_total",
            "Files whose size or SHA-256 did not match, as appliances report.",
            g(&self.fill_verify_failures),
        );
        let _ = writeln!(s, "# HELP outpost_cp_fill_plan_changes_total Placement changes published (plan churn).\n# TYPE outpost_cp_fill_plan_changes_total counter");
        let _ = writeln!(
            s,
            "outpost_cp_fill_plan_changes_total{{action=\"add\"}} {}",
            g(&self.plan_adds)
        );
        let _ = writeln!(
            s,
            "outpost_cp_fill_plan_changes_total{{action=\"remove\"}} {}",
            g(&self.plan_removes)
        );
        // QoE (issue 16): steering moves for bad QoE, by reason (a fixed set of two).
        let _ = writeln!(s, "# HELP outpost_cp_qoe_steering_moves_total Sessions moved off an appliance for their QoE by steering, by reason: once per session and appliance, by the first steering manifest that demotes it (its reloads repeating the demotion are not counted).\n# TYPE outpost_cp_qoe_steering_moves_total counter");
        if let Ok(m) = self.qoe_moves.lock() {
            for (r, n) in m.iter() {
                let _ = writeln!(
                    s,
                    "outpost_cp_qoe_steering_moves_total{{reason=\"{r}\"}} {n}"
                );
            }
        }
        let _ = writeln!(s, "# HELP outpost_cp_fill_titles_planned Titles in each cluster's last published placement (cluster ids come from the policy, a bounded set).\n# TYPE outpost_cp_fill_titles_planned gauge");
        if let Ok(m) = self.titles_planned.lock() {
            for (c, n) in m.iter() {
                let _ = writeln!(s, "outpost_cp_fill_titles_planned{{cluster=\"{c}\"}} {n}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP outpost_cp_snapshot_bad_rows Stored values left out of the current snapshot because they no longer decode (each is logged with table, row and column).\n# TYPE outpost_cp_snapshot_bad_rows gauge\noutpost_cp_snapshot_bad_rows {}",
            g(&self.snapshot_bad_rows)
        );
        let _ = writeln!(s, "# HELP outpost_cp_steering_misses_total Steering decisions that skipped the best local appliance.\n# TYPE outpost_cp_steering_misses_total counter");
        let _ = writeln!(
            s,
            "outpost_cp_steering_misses_total{{class=\"content\"}} {}",
            g(&self.content_misses)
        );
        let _ = writeln!(
            s,
            "outpost_cp_steering_misses_total{{class=\"health\"}} {}",
            g(&self.health_misses)
        );
        let _ = writeln!(
            s,
            "# HELP outpost_cp_idempotency_takeovers_total Idempotency-Key claims taken over by a retry because the first request never answered (its replica died mid-start).\n# TYPE outpost_cp_idempotency_takeovers_total counter\noutpost_cp_idempotency_takeovers_total {}",
            g(&self.idempotency_takeovers)
        );
        let _ = writeln!(s, "# HELP outpost_cp_refusals_total API refusals by code.\n# TYPE outpost_cp_refusals_total counter");
        for (i, code) in ApiError::CODES.iter().enumerate() {
            let _ = writeln!(
                s,
                "outpost_cp_refusals_total{{code=\"{code}\"}} {}",
                g(&self.refusals[i])
            );
        }
        let _ = writeln!(s, "# HELP outpost_cp_session_start_seconds Session start latency.\n# TYPE outpost_cp_session_start_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "outpost_cp_session_start_seconds_bucket{{le=\"{b}\"}} {}",
                g(&self.start_buckets[i])
            );
        }
        let _ = writeln!(
            s,
            "outpost_cp_session_start_seconds_bucket{{le=\"+Inf\"}} {}",
            g(&self.start_count)
        );
        let _ = writeln!(
            s,
            "outpost_cp_session_start_seconds_sum {}",
            g(&self.start_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "outpost_cp_session_start_seconds_count {}",
            g(&self.start_count)
        );
        s
    }
}
