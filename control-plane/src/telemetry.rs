//! Request rates per appliance over the last minutes, derived from the cumulative counters in
//! successive heartbeats. Kept in memory: it is a view for operators (the fleet page), not
//! ground truth, so each replica keeps its own and a restart starts it afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How far back the history reaches, seconds.
pub const HISTORY_SECS: u64 = 300;

#[derive(Debug, Default)]
struct Series {
    last: Option<(u64, u64, u64)>,
    points: VecDeque<Point>,
}

/// One sample: requests and payload bytes per second over the interval ending at `t`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Unix seconds at the end of the interval.
    pub t: u64,
    /// Requests per second.
    pub rps: f64,
    /// Payload bits per second.
    pub bps: f64,
}

/// Per-appliance rate history.
#[derive(Debug, Default)]
pub struct Telemetry {
    series: Mutex<HashMap<String, Series>>,
}

impl Telemetry {
    /// Records the counters of a heartbeat received at `now`. A counter that went down (the
    /// appliance restarted) starts a new interval instead of producing a negative rate.
    pub fn record(&self, appliance: &str, now: u64, requests: u64, bytes: u64) {
        let Ok(mut map) = self.series.lock() else {
            return;
        };
        let s = map.entry(appliance.to_owned()).or_default();
        if let Some((t0, r0, b0)) = s.last {
            if now > t0 && requests >= r0 && bytes >= b0 {
                let dt = (now - t0) as f64;
                s.points.push_back(Point {
                    t: now,
                    rps: (requests - r0) as f64 / dt,
                    bps: (bytes - b0) as f64 * 8.0 / dt,
                });
            }
        }
        if s.last.is_none_or(|(t0, _, _)| now > t0) {
            s.last = Some((now, requests, bytes));
        }
        while s.points.front().is_some_and(|p| p.t + HISTORY_SECS < now) {
            s.points.pop_front();
        }
    }

    /// The samples of the last [`HISTORY_SECS`] for one appliance, oldest first.
    pub fn history(&self, appliance: &str, now: u64) -> Vec<Point> {
        let Ok(map) = self.series.lock() else {
            return Vec::new();
        };
        map.get(appliance)
            .map(|s| {
                s.points
                    .iter()
                    .filter(|p| p.t + HISTORY_SECS >= now)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_counters_and_restarts() {
        let t = Telemetry::default();
        t.record("a", 100, 0, 0);
        t.record("a", 102, 20, 2000);
        t.record("a", 104, 30, 3000);
        let h = t.history("a", 104);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].rps, 10.0);
        assert_eq!(h[1].rps, 5.0);
        assert_eq!(h[1].bps, 4000.0);
        // The appliance restarted: counters went down; no negative rate, a new baseline.
        t.record("a", 106, 4, 400);
        t.record("a", 108, 8, 800);
        let h = t.history("a", 108);
        assert_eq!(h.len(), 3);
        assert_eq!(h[2].rps, 2.0);
        // Old samples fall out of the window.
        assert!(t.history("a", 108 + HISTORY_SECS + 10).is_empty());
        assert!(t.history("b", 108).is_empty());
    }
}
