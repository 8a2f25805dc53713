//! What the heartbeat says about BGP: per-peer sessions, the route deltas since the table the
//! control plane last acknowledged, and a SHA-256 digest of the whole table so that a lost
//! delta is detected (the control plane then asks for the full table).

use std::collections::BTreeMap;

use protocol::fleet::{bgp_digest, BgpReport, BgpRoute, BgpSession};

use super::wire::Prefix;
use super::{Route, Shared, State};

fn to_wire(p: &Prefix, r: &Route) -> BgpRoute {
    BgpRoute {
        prefix: p.to_string(),
        as_path_len: r.as_path_len,
        med: r.med,
        communities: r
            .communities
            .iter()
            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
            .collect(),
    }
}

/// Builds heartbeat reports relative to the last table the control plane acknowledged.
#[derive(Default)]
pub struct Reporter {
    /// The table the control plane has (after the last accepted heartbeat).
    acked: Option<BTreeMap<Prefix, Route>>,
    /// The table the report in flight leads to.
    pending: Option<BTreeMap<Prefix, Route>>,
    /// The control plane asked for the whole table.
    want_full: bool,
}

impl Reporter {
    /// The report for the next heartbeat.
    pub fn build(&mut self, shared: &Shared) -> BgpReport {
        let table = shared.table();
        let now = std::time::SystemTime::now();
        let sessions = shared
            .sessions()
            .into_iter()
            .map(|s| BgpSession {
                peer: s.peer,
                asn: s.asn,
                state: s.state.as_str().to_owned(),
                last_error: s.last_error,
                uptime_secs: match (s.state, s.established_at) {
                    (State::Established, Some(t)) => {
                        now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0)
                    }
                    _ => 0,
                },
                routes: s.routes,
                rib_complete: s.rib_complete,
            })
            .collect();
        let all: Vec<BgpRoute> = table.iter().map(|(p, r)| to_wire(p, r)).collect();
        let digest = bgp_digest(&all);
        let (full, announced, withdrawn) = match (&self.acked, self.want_full) {
            (Some(old), false) => {
                let announced = table
                    .iter()
                    .filter(|(p, r)| old.get(p) != Some(r))
                    .map(|(p, r)| to_wire(p, r))
                    .collect();
                let withdrawn = old
                    .keys()
                    .filter(|p| !table.contains_key(p))
                    .map(|p| p.to_string())
                    .collect();
                (false, announced, withdrawn)
            }
            _ => (true, all, Vec::new()),
        };
        let routes = table.len();
        self.pending = Some(table);
        BgpReport {
            sessions,
            full,
            announced,
            withdrawn,
            digest,
            routes,
            steerable: shared.steerable(),
        }
    }

    /// The heartbeat carrying the last report was accepted; `full_wanted` is the ack's
    /// `bgp_full_table`.
    pub fn accepted(&mut self, full_wanted: bool) {
        if let Some(p) = self.pending.take() {
            self.acked = Some(p);
        }
        self.want_full = full_wanted;
    }
}
