//! Counters and gauges shared by the data-plane threads (lock-free atomics) and their rendering
//! in the Prometheus text format for the admin listener's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

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
    /// File chunks sent with an inline `sendfile` (range resident in the page cache).
    body_sendfile: AtomicU64,
    /// File chunks sent through io-wq (`SPLICE` file → pipe → socket: range not resident).
    body_splice: AtomicU64,
    body_mapped: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    /// Fill and fleet-agent counters.
    pub fill: FillMetrics,
    // --- BGP (issue 14) ---
    /// The BGP speaker, when one runs (its sessions and routes are rendered).
    bgp: std::sync::OnceLock<std::sync::Arc<crate::bgp::Shared>>,
    // --- end BGP ---
}

/// Counters of the fleet agent and the filler (written on the tokio side, never on a serving
/// thread, except `bytes_out`).
#[derive(Debug, Default)]
pub struct FillMetrics {
    /// Whether a fleet agent runs (the agent metrics are rendered only then).
    pub agent_enabled: AtomicBool,
    /// Bytes downloaded by fill (verified or not).
    pub bytes_in: AtomicU64,
    /// File bytes of responses planned for fill-scope grants (this appliance as a fill
    /// source; heads excluded).
    pub bytes_out: AtomicU64,
    /// Fill download rate over the last second, bits per second.
    pub rate_bps: AtomicU64,
    /// Files fetched and verified.
    pub files_verified: AtomicU64,
    /// Size or SHA-256 mismatches, by source label.
    pub verify_failures: Mutex<BTreeMap<String, u64>>,
    /// Plans received whose `plan_id` differed from the previous one.
    pub plan_changes: AtomicU64,
    /// Titles of the current plan not held yet.
    pub titles_pending: AtomicU64,
    /// Titles removed because the plan listed them as removable (after the grace period).
    pub titles_removed: AtomicU64,
    /// Held titles kept although the plan left them out (not listed as removable, still in
    /// their grace period, or the plan was suspect), as of the last pass.
    pub titles_kept_unplanned: AtomicU64,
    /// Plans whose removals were refused as suspect (too large a share of what is held).
    pub plans_suspect: AtomicU64,
    /// 1 when the last control-plane call succeeded.
    pub control_plane_reachable: AtomicBool,
    /// Whether the fill window is open now.
    pub in_window: AtomicBool,
}

impl FillMetrics {
    /// Counts a verification failure from `source`.
    pub fn verify_failed(&self, source: &str) {
        *self
            .verify_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(source.to_owned())
            .or_insert(0) += 1;
    }

    /// Verification failures over every source.
    pub fn verify_failures_total(&self) -> u64 {
        self.verify_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    fn render(&self, o: &mut String, titles_held: usize) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = |help: &str, kind: &str, name: &str, v: u64| {
            let _ = writeln!(o, "# HELP outpost_appliance_{name} {help}");
            let _ = writeln!(o, "# TYPE outpost_appliance_{name} {kind}");
            let _ = writeln!(o, "outpost_appliance_{name} {v}");
        };
        line(
            "Bytes downloaded by fill.",
            "counter",
            "fill_bytes_total",
            g(&self.bytes_in),
        );
        line(
            "Bytes of responses to fill-scope grants (served as a fill source).",
            "counter",
            "fill_bytes_out_total",
            g(&self.bytes_out),
        );
        line(
            "Fill download rate over the last second, bits per second.",
            "gauge",
            "fill_rate_bps",
            g(&self.rate_bps),
        );
        line(
            "Files fetched by fill and verified (size and SHA-256).",
            "counter",
            "fill_files_verified_total",
            g(&self.files_verified),
        );
        line(
            "Titles complete and served.",
            "gauge",
            "titles_held",
            titles_held as u64,
        );
        if self.agent_enabled.load(Ordering::Relaxed) {
            line(
                "Fill plans received that differ from the previous one.",
                "counter",
                "fill_plan_changes_total",
                g(&self.plan_changes),
            );
            line(
                "Titles of the plan not held yet.",
                "gauge",
                "fill_titles_pending",
                g(&self.titles_pending),
            );
            line(
                "Titles removed because the plan listed them as removable.",
                "counter",
                "fill_titles_removed_total",
                g(&self.titles_removed),
            );
            line(
                "Held titles kept although the plan left them out (not removable yet).",
                "gauge",
                "fill_titles_kept_unplanned",
                g(&self.titles_kept_unplanned),
            );
            line(
                "Plans whose removals were refused as suspect.",
                "counter",
                "fill_plans_suspect_total",
                g(&self.plans_suspect),
            );
            line(
                "Whether the fill window is open.",
                "gauge",
                "fill_in_window",
                u64::from(self.in_window.load(Ordering::Relaxed)),
            );
            line(
                "1 when the last control-plane call succeeded.",
                "gauge",
                "control_plane_reachable",
                u64::from(self.control_plane_reachable.load(Ordering::Relaxed)),
            );
        }
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_fill_verify_failures_total Fill downloads whose size or SHA-256 did not match, by source."
        );
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_fill_verify_failures_total counter"
        );
        for (src, n) in self
            .verify_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let src = src.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                o,
                "outpost_appliance_fill_verify_failures_total{{source=\"{src}\"}} {n}"
            );
        }
    }
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

    /// A file chunk went out with an inline `sendfile` (its range was resident).
    pub fn body_sendfile(&self) {
        inc(&self.body_sendfile);
    }

    /// A file chunk went through io-wq (its range was not resident).
    pub fn body_splice(&self) {
        inc(&self.body_splice);
    }

    /// A small file range went out with its head in one `sendmsg` from the file's mapping.
    pub fn body_mapped(&self) {
        inc(&self.body_mapped);
    }

    /// File chunks sent so far by path: `(inline from the ring thread, io-wq splice)`; inline
    /// counts both `sendfile` and head + range from the mapping.
    pub fn body_paths(&self) -> (u64, u64) {
        (
            self.body_sendfile.load(Ordering::Relaxed) + self.body_mapped.load(Ordering::Relaxed),
            self.body_splice.load(Ordering::Relaxed),
        )
    }

    /// Small ranges sent with their head from the file's mapping so far.
    pub fn body_mapped_total(&self) -> u64 {
        self.body_mapped.load(Ordering::Relaxed)
    }

    /// Requests answered so far, every status.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Bytes sent so far (heads and bodies).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
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

    // --- BGP (issue 14) ---
    /// Registers the BGP speaker whose state `/metrics` shows.
    pub fn set_bgp(&self, shared: std::sync::Arc<crate::bgp::Shared>) {
        let _ = self.bgp.set(shared);
    }
    // --- end BGP ---

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, store: &Store, backend: &str, draining: bool) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::with_capacity(4096);
        let _ = writeln!(o, "# HELP outpost_appliance_info Which I/O backend serves.");
        let _ = writeln!(o, "# TYPE outpost_appliance_info gauge");
        let _ = writeln!(o, "outpost_appliance_info{{backend=\"{backend}\"}} 1");
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_draining 1 while SIGTERM drains in-flight responses, else 0."
        );
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
        let _ = writeln!(o, "# HELP outpost_appliance_sent_bytes_total Response bytes handed to the kernel (heads and bodies).");
        let _ = writeln!(o, "# TYPE outpost_appliance_sent_bytes_total counter");
        let _ = writeln!(
            o,
            "outpost_appliance_sent_bytes_total {}",
            g(&self.bytes_sent)
        );
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_active_connections Client connections open now."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_active_connections gauge");
        let _ = writeln!(
            o,
            "outpost_appliance_active_connections {}",
            self.active_connections()
        );
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_accepted_connections_total Client connections accepted."
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
        let _ = writeln!(o, "# HELP outpost_appliance_refused_connections_total Client connections closed at once because max_connections was reached.");
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_refused_connections_total counter"
        );
        let _ = writeln!(
            o,
            "outpost_appliance_refused_connections_total {}",
            g(&self.refused_connections)
        );
        let _ = writeln!(o, "# HELP outpost_appliance_timeouts_total Connections closed by the header or idle timeout.");
        let _ = writeln!(o, "# TYPE outpost_appliance_timeouts_total counter");
        let _ = writeln!(o, "outpost_appliance_timeouts_total {}", g(&self.timeouts));
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_cache_hits_total Requests for a file the cache holds."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_cache_hits_total counter");
        let _ = writeln!(o, "outpost_appliance_cache_hits_total {}", g(&self.hits));
        let _ = writeln!(o, "# HELP outpost_appliance_cache_misses_total Requests for a file the cache does not hold.");
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
        let _ = writeln!(o, "# HELP outpost_appliance_grant_verifications_total Grant signature checks run (verified-token cache misses, whatever the outcome).");
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_grant_verifications_total counter"
        );
        let _ = writeln!(
            o,
            "outpost_appliance_grant_verifications_total {}",
            g(&self.grant_verifications)
        );
        let _ = writeln!(o, "# HELP outpost_appliance_grant_cache_hits_total Requests whose grant was already verified (token cache hits).");
        let _ = writeln!(o, "# TYPE outpost_appliance_grant_cache_hits_total counter");
        let _ = writeln!(
            o,
            "outpost_appliance_grant_cache_hits_total {}",
            g(&self.grant_cache_hits)
        );
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_body_chunks_total File chunks sent, by path: inline sendfile (range in the page cache), mapped (a small resident range sent with its head in one sendmsg) or splice through io-wq (read from disk off the serving thread)."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_body_chunks_total counter");
        let _ = writeln!(
            o,
            "outpost_appliance_body_chunks_total{{path=\"sendfile\"}} {}",
            g(&self.body_sendfile)
        );
        let _ = writeln!(
            o,
            "outpost_appliance_body_chunks_total{{path=\"splice\"}} {}",
            g(&self.body_splice)
        );
        let _ = writeln!(
            o,
            "outpost_appliance_body_chunks_total{{path=\"mapped\"}} {}",
            g(&self.body_mapped)
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
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_drive_capacity_bytes Capacity per cache drive, bytes."
        );
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
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_drive_io_errors_total I/O errors per cache drive."
        );
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
        self.fill.render(&mut o, store.held().len());
        // --- BGP (issue 14) ---
        if let Some(b) = self.bgp.get() {
            b.render_metrics(&mut o);
        }
        // --- end BGP ---
        o
    }
}
