//! Quality of experience at the edge: CMCD in, CMSD out, per-session summaries and the
//! structured access log.
//!
//! - [`cmcd`]: the strict, bounded CMCD v1 parser (query argument and headers); a bad member is
//!   ignored and counted, never an error for the request.
//! - [`cmsd`]: the `CMSD-Static` / `CMSD-Dynamic` response headers.
//! - [`session`]: bounded per-session summaries keyed by `sid` (admin `GET /qoe/sessions`, and
//!   the fleet agent's heartbeats).
//! - [`access_log`]: JSON lines through a bounded channel to a writer thread, size-rotated.
//!
//! The data plane calls two functions per request, both cheap and never blocking on I/O:
//! [`Qoe::begin`] once the response is planned (parses CMCD, appends the CMSD headers to the
//! head) and [`Qoe::finish`] once it is sent (folds the session, samples the access log). The
//! CMCD query argument never reaches path matching: the parser keeps the query apart from the
//! path, so it changes neither the file served nor the grant check.

pub mod access_log;
pub mod cmcd;
pub mod cmsd;
pub mod session;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::qoe::SessionQoe;

use crate::http1::Status;
use crate::service::{Chunk, Response};
use access_log::AccessLog;
use cmcd::Cmcd;
use session::{Observed, SessionTable};

/// Default number of sessions summarised (about 400 bytes each).
pub const DEFAULT_SESSIONS: usize = 16_384;

/// Smallest response whose send rate is taken as the connection's throughput estimate (`etp`):
/// smaller ones fit in socket buffers and would measure memory copies, not the path.
pub const ETP_MIN_BYTES: u64 = 64 * 1024;

/// Upper bounds of the buckets of players' measured throughput (CMCD `mtp`), bytes per second:
/// 250 kbit/s to 64 Mbit/s, doubling.
const MTP_BUCKETS: [u64; 9] = [
    31_250, 62_500, 125_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000,
];

/// Settings.
#[derive(Debug, Clone)]
pub struct QoeConfig {
    /// The name in `CMSD-Dynamic` (the appliance id).
    pub name: String,
    /// Overloaded (send `mb`) at or above this many active connections.
    pub overload_connections: Option<u64>,
    /// The `mb` value sent when overloaded, kbps; no `mb` without it.
    pub max_bitrate_kbps: Option<u64>,
    /// Access-log sampling fraction, 0.0 to 1.0.
    pub access_log_sample: f64,
    /// Sessions summarised at most.
    pub sessions: usize,
}

/// The admin override of the load decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOverride {
    /// No override: the connection threshold decides.
    None,
    /// Overloaded regardless of load.
    Overloaded,
}

/// What [`Qoe::begin`] hands to [`Qoe::finish`]: boxed, so a connection holds a pointer rather
/// than the ~0.9 KiB of inline CMCD fields (10 000 idle connections would hold 5.6 MB more),
/// and the boxes are recycled per thread ([`Qoe::finish`] gives them back), so a request
/// allocates none once the thread is warm.
pub type Pending = Box<PendingRequest>;

thread_local! {
    static PENDING_POOL: std::cell::RefCell<Vec<Pending>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most recycled [`Pending`] boxes a thread keeps.
const PENDING_POOL_MAX: usize = 256;

/// The parsed CMCD of one request and when it was taken.
#[derive(Debug)]
pub struct PendingRequest {
    cmcd: Cmcd,
    start: SystemTime,
}

/// The QoE state of one appliance.
#[derive(Debug)]
pub struct Qoe {
    cfg: QoeConfig,
    /// `cfg.name` as an sf-string, rendered once.
    sf_name: String,
    overload: AtomicU8,
    sessions: Mutex<SessionTable>,
    log: Option<AccessLog>,
    log_seq: AtomicU64,
    last_report_ms: AtomicU64,
    cmcd_requests: AtomicU64,
    cmcd_ignored: AtomicU64,
    cmsd_mb: AtomicU64,
    starvations: AtomicU64,
    /// Requests whose CMCD carried `mtp`, by bucket of [`MTP_BUCKETS`] (the last: above them).
    mtp_buckets: [AtomicU64; MTP_BUCKETS.len() + 1],
    /// The sum of their `mtp`, bytes per second.
    mtp_sum: AtomicU64,
    /// Bytes of responses of at least [`ETP_MIN_BYTES`], and the microseconds taken to send them.
    timed_bytes: AtomicU64,
    timed_us: AtomicU64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Qoe {
    /// QoE with an optional access log.
    pub fn new(cfg: QoeConfig, log: Option<AccessLog>) -> Self {
        Qoe {
            sessions: Mutex::new(SessionTable::new(cfg.sessions)),
            sf_name: cmsd::sf_name(&cfg.name),
            cfg,
            overload: AtomicU8::new(0),
            log,
            log_seq: AtomicU64::new(0),
            last_report_ms: AtomicU64::new(0),
            cmcd_requests: AtomicU64::new(0),
            cmcd_ignored: AtomicU64::new(0),
            cmsd_mb: AtomicU64::new(0),
            starvations: AtomicU64::new(0),
            mtp_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            mtp_sum: AtomicU64::new(0),
            timed_bytes: AtomicU64::new(0),
            timed_us: AtomicU64::new(0),
        }
    }

    /// Sets the admin load override.
    pub fn set_override(&self, o: LoadOverride) {
        let v = match o {
            LoadOverride::None => 0,
            LoadOverride::Overloaded => 1,
        };
        self.overload.store(v, Ordering::Relaxed);
    }

    /// The admin load override.
    pub fn load_override(&self) -> LoadOverride {
        match self.overload.load(Ordering::Relaxed) {
            1 => LoadOverride::Overloaded,
            _ => LoadOverride::None,
        }
    }

    /// Whether the appliance counts as overloaded with `active` connections.
    pub fn overloaded(&self, active: i64) -> bool {
        self.load_override() == LoadOverride::Overloaded
            || self
                .cfg
                .overload_connections
                .is_some_and(|n| active.max(0) as u64 >= n)
    }

    /// Called once the response to a request is planned: parses the request's CMCD (`query`:
    /// the target's query string; `headers`: the `CMCD-*` header values, each a dictionary) and
    /// appends the CMSD headers to a successful object response's head. `etp_kbps` is the
    /// connection's throughput estimate, `active` the active connection count. Allocates
    /// nothing: CMCD keys are parsed into fixed fields, the CMSD lines are written into the
    /// head's buffer.
    pub fn begin(
        &self,
        query: Option<&str>,
        headers: &[Option<std::borrow::Cow<'_, str>>],
        resp: &mut Response,
        etp_kbps: Option<u64>,
        active: i64,
        now: SystemTime,
    ) -> Pending {
        let mut cmcd = query.map(Cmcd::from_query).unwrap_or_default();
        for h in headers.iter().flatten() {
            cmcd.add(h);
        }
        if !cmcd.is_empty() {
            self.cmcd_requests.fetch_add(1, Ordering::Relaxed);
        }
        if cmcd.ignored > 0 {
            self.cmcd_ignored
                .fetch_add(u64::from(cmcd.ignored), Ordering::Relaxed);
        }
        let path = resp.log_path.as_ref().map(|p| p.as_str());
        if let (Status::Ok | Status::PartialContent, Some(path)) = (resp.status, path) {
            let mb = if self.overloaded(active) {
                self.cfg.max_bitrate_kbps
            } else {
                None
            };
            if mb.is_some() {
                self.cmsd_mb.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(Chunk::Mem(head)) = resp.chunks.first_mut() {
                // The head ends at the first blank line; the lines go before its final CRLF.
                if head.ends_with(b"\r\n\r\n") {
                    // The usual case (the body is a file range): written in place.
                    head.truncate(head.len() - 2);
                    cmsd::write_lines(head, path, &self.sf_name, etp_kbps, mb);
                    head.extend_from_slice(b"\r\n");
                } else if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let mut lines = Vec::new();
                    cmsd::write_lines(&mut lines, path, &self.sf_name, etp_kbps, mb);
                    let at = end + 2;
                    head.splice(at..at, lines);
                }
            }
        }
        match PENDING_POOL.with(|p| p.borrow_mut().pop()) {
            Some(mut b) => {
                b.cmcd = cmcd;
                b.start = now;
                b
            }
            None => Box::new(PendingRequest { cmcd, start: now }),
        }
    }

    /// Called once the response is sent: folds the session and samples the access log.
    /// `drive` is the cache drive the body came from.
    pub fn finish(
        &self,
        p: Pending,
        resp: &Response,
        bytes: u64,
        micros: u64,
        peer: Option<std::net::IpAddr>,
    ) {
        self.finish_request(&p, resp, bytes, micros, peer);
        PENDING_POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < PENDING_POOL_MAX {
                pool.push(p);
            }
        });
    }

    fn finish_request(
        &self,
        p: &PendingRequest,
        resp: &Response,
        bytes: u64,
        micros: u64,
        peer: Option<std::net::IpAddr>,
    ) {
        let start_ms = unix_ms(p.start);
        let end_ms = start_ms + micros / 1000;
        let title = resp
            .log_path
            .as_ref()
            .map(|p| p.title())
            .filter(|t| !t.is_empty());
        if p.cmcd.bs {
            self.starvations.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(mtp) = p.cmcd.mtp {
            // kbit/s to bytes per second.
            let bps = mtp.saturating_mul(125);
            let i = MTP_BUCKETS.partition_point(|b| *b < bps);
            self.mtp_buckets[i].fetch_add(1, Ordering::Relaxed);
            self.mtp_sum.fetch_add(bps, Ordering::Relaxed);
        }
        if bytes >= ETP_MIN_BYTES {
            self.timed_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.timed_us.fetch_add(micros, Ordering::Relaxed);
        }
        if p.cmcd.sid.is_some() {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .observe(Observed {
                    cmcd: &p.cmcd,
                    title,
                    start_ms,
                    end_ms,
                    bytes,
                    send_us: micros,
                });
        }
        let Some(log) = &self.log else {
            return;
        };
        if !self.sample() {
            return;
        }
        let line = serde_json::json!({
            "time_ms": start_ms,
            "status": resp.status.code(),
            "bytes": bytes,
            "us": micros,
            "peer": peer.map(|p| p.to_string()),
            "path": resp.log_path.as_ref().map(|p| p.as_str()),
            "sub": resp.claims.as_ref().map(|c| c.sub.as_str()),
            "title": title,
            "drive": resp.file.as_ref().map(|f| f.drive),
            "cmcd": p.cmcd,
        });
        log.send(line.to_string());
    }

    fn sample(&self) -> bool {
        let f = self.cfg.access_log_sample;
        if f >= 1.0 {
            return true;
        }
        if f <= 0.0 {
            return false;
        }
        // Deterministic: line n is written when floor((n+1)·f) > floor(n·f).
        let n = self.log_seq.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * f).floor() > (n * f).floor()
    }

    /// Every session summary, most recently seen first.
    pub fn sessions(&self) -> Vec<SessionQoe> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }

    /// The summaries to report in a heartbeat: sessions seen since the previous report.
    pub fn take_report(&self, now: SystemTime) -> Vec<SessionQoe> {
        let now_ms = unix_ms(now);
        let since = self.last_report_ms.swap(now_ms, Ordering::Relaxed);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(since, protocol::qoe::MAX_SESSIONS_PER_HEARTBEAT)
    }

    /// Prometheus text of the QoE counters.
    pub fn render_metrics(&self) -> String {
        let (held, evicted) = {
            let t = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            (t.len(), t.evicted())
        };
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "outpost_appliance_cmcd_requests_total",
            "Requests that carried CMCD.",
            r(&self.cmcd_requests),
        );
        counter(
            "outpost_appliance_cmcd_ignored_total",
            "CMCD members ignored: malformed, wrong type, over a size cap or unknown key.",
            r(&self.cmcd_ignored),
        );
        counter(
            "outpost_appliance_cmcd_starvation_total",
            "Requests whose CMCD reported buffer starvation (bs).",
            r(&self.starvations),
        );
        counter(
            "outpost_appliance_cmsd_max_bitrate_total",
            "Responses that carried a CMSD max suggested bitrate (mb).",
            r(&self.cmsd_mb),
        );
        counter(
            "outpost_appliance_timed_response_bytes_total",
            "Bytes of responses of at least 64 KiB (smaller ones fit in socket buffers): with \
             outpost_appliance_timed_response_seconds_total, the rate the appliance sends at.",
            r(&self.timed_bytes),
        );
        counter(
            "outpost_appliance_qoe_sessions_evicted_total",
            "Session summaries evicted to stay within the memory budget.",
            evicted,
        );
        if let Some(log) = &self.log {
            counter(
                "outpost_appliance_access_log_lines_total",
                "Access log lines written.",
                log.written(),
            );
            counter(
                "outpost_appliance_access_log_dropped_total",
                "Access log lines dropped because the writer was behind.",
                log.dropped(),
            );
            counter(
                "outpost_appliance_access_log_rotations_total",
                "Access log rotations.",
                log.rotations(),
            );
        }
        let _ = write!(
            s,
            "# HELP outpost_appliance_timed_response_seconds_total Time taken to send the responses of at least 64 KiB, from taking the request to handing the last byte to the kernel.\n\
             # TYPE outpost_appliance_timed_response_seconds_total counter\n\
             outpost_appliance_timed_response_seconds_total {}\n\
             # HELP outpost_appliance_cmcd_measured_throughput_bytes_per_second Players' measured throughput (CMCD mtp) on requests that carried it.\n\
             # TYPE outpost_appliance_cmcd_measured_throughput_bytes_per_second histogram\n",
            r(&self.timed_us) as f64 / 1e6
        );
        let mut cum = 0;
        for (i, b) in MTP_BUCKETS.iter().enumerate() {
            cum += r(&self.mtp_buckets[i]);
            let _ = writeln!(
                s,
                "outpost_appliance_cmcd_measured_throughput_bytes_per_second_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        cum += r(&self.mtp_buckets[MTP_BUCKETS.len()]);
        let _ = write!(
            s,
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_bucket{{le=\"+Inf\"}} {cum}\n\
             outpost_appliance_cmcd_measured_throughput_bytes_per_second_sum {}\n\
             outpost_appliance_cmcd_measured_throughput_bytes_per_second_count {cum}\n",
            r(&self.mtp_sum)
        );
        let _ = write!(
            s,
            "# HELP outpost_appliance_qoe_sessions Session summaries held.\n\
             # TYPE outpost_appliance_qoe_sessions gauge\noutpost_appliance_qoe_sessions {held}\n\
             # HELP outpost_appliance_cmsd_overloaded Whether CMSD reports overload (admin override).\n\
             # TYPE outpost_appliance_cmsd_overloaded gauge\noutpost_appliance_cmsd_overloaded {}\n",
            u8::from(self.load_override() == LoadOverride::Overloaded)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn observe(q: &Qoe, sid: &str, at: SystemTime) {
        let mut resp = Response {
            status: Status::Ok,
            chunks: vec![Chunk::Mem(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n".to_vec())],
            file: None,
            keep_alive: true,
            log_path: Some(
                protocol::grant::canonicalize("/t/video-1/seg-1.m4s")
                    .unwrap()
                    .into_owned(),
            ),
            claims: None,
        };
        let query = format!("CMCD=sid%3D%22{sid}%22%2Cot%3Dv%2Cbr%3D100");
        let p = q.begin(Some(&query), &[], &mut resp, Some(900), 0, at);
        let head = String::from_utf8(match &resp.chunks[0] {
            Chunk::Mem(b) => b.clone(),
            Chunk::File { .. } => unreachable!(),
        })
        .unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nA: b\r\nCMSD-Static: ot=v,st=v\r\nCMSD-Dynamic: \"n\";etp=900\r\n\r\n"
        );
        q.finish(p, &resp, 10, 1000, None);
    }

    /// QoE with room for 8 sessions, no access log, no overload or bitrate cap.
    fn plain_qoe() -> Qoe {
        Qoe::new(
            QoeConfig {
                name: "n".into(),
                overload_connections: None,
                max_bitrate_kbps: None,
                access_log_sample: 0.0,
                sessions: 8,
            },
            None,
        )
    }

    #[test]
    fn heartbeat_reports_sessions_seen_since_the_previous_report() {
        let q = plain_qoe();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        observe(&q, "a", t0);
        observe(&q, "b", t0 + Duration::from_secs(1));
        let first = q.take_report(t0 + Duration::from_secs(2));
        assert_eq!(first.len(), 2);
        observe(&q, "b", t0 + Duration::from_secs(3));
        let second = q.take_report(t0 + Duration::from_secs(4));
        assert_eq!(
            second.iter().map(|s| s.sid.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(second[0].requests, 2);
        assert!(q.take_report(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(q.sessions().len(), 2);
    }

    #[test]
    fn metrics_count_measured_throughput_and_the_send_rate_of_large_responses() {
        let q = plain_qoe();
        let at = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (mtp, bytes, us) in [(800u64, 100_000u64, 400_000u64), (100_000, 1_000, 10)] {
            let mut resp = Response {
                status: Status::Ok,
                chunks: vec![Chunk::Mem(b"HTTP/1.1 200 OK\r\n\r\n".to_vec())],
                file: None,
                keep_alive: true,
                log_path: None,
                claims: None,
            };
            let query = format!("CMCD=ot%3Dv%2Cmtp%3D{mtp}");
            let p = q.begin(Some(&query), &[], &mut resp, None, 0, at);
            q.finish(p, &resp, bytes, us, None);
        }
        let m = q.render_metrics();
        for line in [
            // 800 kbit/s is 100 000 B/s: the 125 000 bucket; 100 Mbit/s is above them all.
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_bucket{le=\"62500\"} 0",
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_bucket{le=\"125000\"} 1",
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_bucket{le=\"8000000\"} 1",
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_bucket{le=\"+Inf\"} 2",
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_sum 12600000",
            "outpost_appliance_cmcd_measured_throughput_bytes_per_second_count 2",
            // Only the 100 kB response is timed.
            "outpost_appliance_timed_response_bytes_total 100000",
            "outpost_appliance_timed_response_seconds_total 0.4",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing from\n{m}");
        }
    }
}
