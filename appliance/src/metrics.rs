//! Counters and gauges shared by the data-plane threads (lock-free atomics) and their rendering
//! in the Prometheus text format for the admin listener's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use protocol::grant::GrantError;

use crate::cache::Store;
use crate::http1::Status;

/// Upper bounds of the latency histogram buckets, microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// The appliance's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; Status::ALL.len()],
    bytes_sent: AtomicU64,
    active_connections: AtomicI64,
    accepted: AtomicU64,
    refused_connections: AtomicU64,
    timeouts: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    grant_refusals: [AtomicU64; GrantError::CODES.len()],
    grant_verifications: AtomicU64,
    grant_cache_hits: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts an answered request by status.
    pub fn request(&self, status: Status) {
        inc(&self.requests[status.index()]);
    }

    /// Requests answered with `status` so far.
    pub fn requests_with(&self, status: Status) -> u64 {
        self.requests[status.index()].load(Ordering::Relaxed)
    }

    /// Adds sent bytes (head and body).
    pub fn sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A connection was accepted.
    pub fn conn_opened(&self) {
        inc(&self.accepted);
        self.active_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed.
    pub fn conn_closed(&self) {
        self.active_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections.
    pub fn active_connections(&self) -> i64 {
        self.active_connections.load(Ordering::Relaxed)
    }

    /// A connection was refused at the connection limit.
    pub fn conn_refused(&self) {
        inc(&self.refused_connections);
    }

    /// A connection was closed by the header-read or idle timeout.
    pub fn timeout(&self) {
        inc(&self.timeouts);
    }

    /// A cache hit.
    pub fn hit(&self) {
        inc(&self.hits);
    }

    /// A cache miss.
    pub fn miss(&self) {
        inc(&self.misses);
    }

    /// A grant refusal.
    pub fn grant_refused(&self, code: &str) {
        if let Some(i) = GrantError::CODES.iter().position(|c| *c == code) {
            inc(&self.grant_refusals[i]);
        }
    }

    /// Refusals with reason `code` so far.
    pub fn grant_refusals(&self, code: &str) -> u64 {
        GrantError::CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.grant_refusals[i].load(Ordering::Relaxed))
    }

    /// A signature check was run (verified-token cache miss).
    pub fn grant_verified(&self) {
        inc(&self.grant_verifications);
    }

    /// Signature checks run so far.
    pub fn grant_verifications(&self) -> u64 {
        self.grant_verifications.load(Ordering::Relaxed)
    }

    /// A grant was found in the verified-token cache.
    pub fn grant_cache_hit(&self) {
        inc(&self.grant_cache_hits);
    }

    /// Records one request's latency (request parsed to last byte handed to the kernel).
    pub fn latency_us(&self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        inc(&self.latency_buckets[i]);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, store: &Store, backend: &str, draining: bool) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::with_capacity(4096);
        let _ = writeln!(o, "# HELP outpost_appliance_info Which I/O backend serves.");
        let _ = writeln!(o, "# TYPE outpost_appliance_info gauge");
        let _ = writeln!(o, "outpost_appliance_info{{backend=\"{backend}\"}} 1");
        let _ = writeln!(o, "# TYPE outpost_appliance_draining gauge");
        let _ = writeln!(o, "outpost_appliance_draining {}", u8::from(draining));
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_requests_total Requests answered, by status."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_requests_total counter");
        for s in Status::ALL {
            let _ = writeln!(
                o,
                "outpost_appliance_requests_total{{status=\"{}\"}} {}",
                s.code(),
                g(&self.requests[s.index()])
            );
        }
        let _ = writeln!(o, "# TYPE outpost_appliance_sent_bytes_total counter");
        let _ = writeln!(
            o,
            "outpost_appliance_sent_bytes_total {}",
            g(&self.bytes_sent)
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_active_connections gauge");
        let _ = writeln!(
            o,
            "outpost_appliance_active_connections {}",
            self.active_connections()
        );
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_accepted_connections_total counter"
        );
        let _ = writeln!(
            o,
            "outpost_appliance_accepted_connections_total {}",
            g(&self.accepted)
        );
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_refused_connections_total counter"
        );
        let _ = writeln!(
            o,
            "outpost_appliance_refused_connections_total {}",
            g(&self.refused_connections)
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_timeouts_total counter");
        let _ = writeln!(o, "outpost_appliance_timeouts_total {}", g(&self.timeouts));
        let _ = writeln!(o, "# TYPE outpost_appliance_cache_hits_total counter");
        let _ = writeln!(o, "outpost_appliance_cache_hits_total {}", g(&self.hits));
        let _ = writeln!(o, "# TYPE outpost_appliance_cache_misses_total counter");
        let _ = writeln!(
            o,
            "outpost_appliance_cache_misses_total {}",
            g(&self.misses)
        );
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_grant_refusals_total Grant refusals, by reason."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_grant_refusals_total counter");
        for (i, c) in GrantError::CODES.iter().enumerate() {
            let _ = writeln!(
                o,
                "outpost_appliance_grant_refusals_total{{reason=\"{c}\"}} {}",
                g(&self.grant_refusals[i])
            );
        }
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_grant_verifications_total counter"
        );
        let _ = writeln!(
            o,
            "outpost_appliance_grant_verifications_total {}",
            g(&self.grant_verifications)
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_grant_cache_hits_total counter");
        let _ = writeln!(
            o,
            "outpost_appliance_grant_cache_hits_total {}",
            g(&self.grant_cache_hits)
        );
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_drive_used_bytes Bytes used per cache drive."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_drive_used_bytes gauge");
        for d in store.drives() {
            let _ = writeln!(
                o,
                "outpost_appliance_drive_used_bytes{{drive=\"{}\"}} {}",
                d.root.display(),
                d.used()
            );
        }
        let _ = writeln!(o, "# TYPE outpost_appliance_drive_capacity_bytes gauge");
        for d in store.drives() {
            let _ = writeln!(
                o,
                "outpost_appliance_drive_capacity_bytes{{drive=\"{}\"}} {}",
                d.root.display(),
                d.capacity
            );
        }
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_drive_healthy 1 when the drive serves, 0 once failed."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_drive_healthy gauge");
        for d in store.drives() {
            let _ = writeln!(
                o,
                "outpost_appliance_drive_healthy{{drive=\"{}\"}} {}",
                d.root.display(),
                u8::from(!d.is_failed())
            );
        }
        let _ = writeln!(o, "# TYPE outpost_appliance_drive_io_errors_total counter");
        for d in store.drives() {
            let _ = writeln!(
                o,
                "outpost_appliance_drive_io_errors_total{{drive=\"{}\"}} {}",
                d.root.display(),
                d.io_errors()
            );
        }
        let _ = writeln!(o, "# HELP outpost_appliance_request_duration_seconds From request parsed to last byte handed to the kernel.");
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_request_duration_seconds histogram"
        );
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
            cum += g(&self.latency_buckets[i]);
            let _ = writeln!(
                o,
                "outpost_appliance_request_duration_seconds_bucket{{le=\"{}\"}} {cum}",
                *b as f64 / 1e6
            );
        }
        cum += g(&self.latency_buckets[LATENCY_BUCKETS_US.len()]);
        let _ = writeln!(
            o,
            "outpost_appliance_request_duration_seconds_bucket{{le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            o,
            "outpost_appliance_request_duration_seconds_sum {}",
            g(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(o, "outpost_appliance_request_duration_seconds_count {cum}");
        o
    }
}
