//! Steering from BGP (issue 14): turns the routes the fleet's appliances hear into entries of the
//! steering prefix table.
//!
//! Per cluster (= site), only appliances that are *BGP-healthy* count: not administratively
//! offline, not in error, reporting themselves steerable, with at least one established session
//! whose initial table is complete (`rib_complete`: End-of-RIB received, or the appliance's
//! settle time for a peer without graceful restart). An appliance whose sessions are established
//! but all still receiving their initial table does not count yet: its partial routes neither
//! steer nor make its site inconsistent ([`log_rib_changes`] notes when it starts counting).
//! The cluster is steered by the routes **all** of them hear (the intersection); when their route
//! sets differ the site is flagged inconsistent. Each steered route keeps its AS-path length and
//! MED (the worst among the site's appliances), which [`crate::steering::Fleet`] uses to order
//! the clusters that hear the same prefix: shorter AS path, then lower MED, then the usual order.
//! Policy prefixes are not touched: they stay in the table as a static override (AS path 0).
//! An inconsistent site is logged once per change of its state ([`log_site_changes`]), not on
//! every snapshot rebuild; the `outpost_cp_bgp_site_inconsistent` gauge shows it all along.

use std::collections::{BTreeMap, HashMap};

use protocol::fleet::{BgpSession, Health};

use crate::db::BgpRouteRow;
use crate::prefix::Prefix;
use crate::steering::{AdminState, Appliance, BgpRoutes};

/// One appliance's BGP state as last reported.
#[derive(Debug, Clone, Default)]
pub struct ApplianceBgp {
    /// Its sessions.
    pub sessions: Vec<BgpSession>,
    /// Whether it says it may be steered by BGP prefixes.
    pub steerable: bool,
    /// Its routes: prefix → (AS-path length, MED).
    pub routes: BTreeMap<Prefix, (u32, u32)>,
}

/// A site's consistency, for the fleet page and the metric.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SiteBgp {
    /// The cluster id.
    pub cluster: String,
    /// The BGP-healthy appliances whose routes count.
    pub appliances: Vec<String>,
    /// Routes all of them hear (steered).
    pub common_routes: usize,
    /// Prefixes only some of them hear (not steered), CIDR.
    pub partial: Vec<String>,
}

impl SiteBgp {
    /// Whether the healthy appliances hear different route sets.
    pub fn inconsistent(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// What the snapshot keeps: per-appliance state and per-site consistency.
#[derive(Debug, Clone, Default)]
pub struct BgpView {
    /// Appliance id → state.
    pub appliances: HashMap<String, ApplianceBgp>,
    /// Sites with BGP-healthy appliances, by cluster id.
    pub sites: Vec<SiteBgp>,
}

impl BgpView {
    /// Groups stored rows by appliance; bad prefixes go to `bad` as `(appliance, reason)`.
    pub fn from_rows(
        routes: Vec<BgpRouteRow>,
        status: Vec<(String, String, bool)>,
        bad: &mut Vec<(String, String)>,
    ) -> BgpView {
        let mut v = BgpView::default();
        for (id, sessions, steerable) in status {
            let sessions = match serde_json::from_str(&sessions) {
                Ok(s) => s,
                Err(e) => {
                    bad.push((id.clone(), format!("bgp_status.sessions: {e}")));
                    Vec::new()
                }
            };
            v.appliances.insert(
                id,
                ApplianceBgp {
                    sessions,
                    steerable,
                    routes: BTreeMap::new(),
                },
            );
        }
        for r in routes {
            let Some(a) = v.appliances.get_mut(&r.appliance_id) else {
                continue;
            };
            match r.prefix.parse::<Prefix>() {
                Ok(p) => {
                    let clamp = |x: i64| u32::try_from(x.max(0)).unwrap_or(u32::MAX);
                    a.routes.insert(p, (clamp(r.as_path_len), clamp(r.med)));
                }
                Err(e) => bad.push((r.appliance_id.clone(), format!("bgp_routes.prefix: {e}"))),
            }
        }
        v
    }

    /// Whether `a`'s BGP routes may steer clients to it.
    pub fn healthy(a: &Appliance, b: &ApplianceBgp) -> bool {
        a.admin_state != AdminState::Offline
            && a.health != Some(Health::Error)
            && b.steerable
            && b.sessions.iter().any(session_counts)
    }

    /// The steering routes of each site (its BGP-healthy appliances and the routes all of them
    /// hear, each with the worst AS-path length and MED among them) and fills
    /// [`BgpView::sites`]. One merge pass over the appliances' sorted route tables per site.
    pub fn entries(&mut self, appliances: &[Appliance]) -> Vec<BgpRoutes> {
        let mut by_cluster: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, a) in appliances.iter().enumerate() {
            if let Some(b) = self.appliances.get(&a.id) {
                if BgpView::healthy(a, b) {
                    by_cluster.entry(a.cluster.as_str()).or_default().push(i);
                }
            }
        }
        let mut out = Vec::with_capacity(by_cluster.len());
        self.sites.clear();
        for (cluster, idxs) in by_cluster {
            let mut heads: Vec<_> = idxs
                .iter()
                .map(|&i| self.appliances[&appliances[i].id].routes.iter().peekable())
                .collect();
            let mut routes = Vec::new();
            let mut partial = Vec::new();
            while let Some(p) = heads
                .iter_mut()
                .filter_map(|h| h.peek().map(|(p, _)| **p))
                .min()
            {
                let mut heard = 0;
                let mut worst = (0, 0);
                for h in &mut heads {
                    if let Some((_, attrs)) = h.next_if(|(q, _)| **q == p) {
                        heard += 1;
                        worst = worst.max(*attrs);
                    }
                }
                if heard == heads.len() {
                    routes.push((p, worst.0, worst.1));
                } else {
                    partial.push(p.to_string());
                }
            }
            self.sites.push(SiteBgp {
                cluster: cluster.to_owned(),
                appliances: idxs.iter().map(|&i| appliances[i].id.clone()).collect(),
                common_routes: routes.len(),
                partial,
            });
            out.push(BgpRoutes {
                appliances: idxs,
                routes,
            });
        }
        out
    }
}

/// An established session whose initial table has arrived.
fn session_counts(s: &BgpSession) -> bool {
    s.state == "established" && s.rib_complete
}

/// The sessions (appliance id, peer) whose initial table completed from `before` to `after`:
/// established but incomplete before, complete now.
pub fn rib_completions<'a>(
    before: &HashMap<String, ApplianceBgp>,
    after: &'a HashMap<String, ApplianceBgp>,
) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    for (id, a) in after {
        let Some(b) = before.get(id) else { continue };
        for s in a.sessions.iter().filter(|s| session_counts(s)) {
            if b.sessions
                .iter()
                .any(|o| o.peer == s.peer && o.state == "established" && !o.rib_complete)
            {
                out.push((id.as_str(), s.peer.as_str()));
            }
        }
    }
    out.sort();
    out
}

/// Logs [`rib_completions`] at info: from now on that appliance's routes count.
pub fn log_rib_changes(
    before: &HashMap<String, ApplianceBgp>,
    after: &HashMap<String, ApplianceBgp>,
) {
    for (appliance, peer) in rib_completions(before, after) {
        tracing::info!(%appliance, %peer, "bgp: a session's initial table is complete; the appliance's routes count for its site");
    }
}

/// How a site's BGP consistency changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteChange<'a> {
    /// It became inconsistent, or the prefixes only some of its appliances hear changed.
    Inconsistent(&'a SiteBgp),
    /// It was inconsistent and is consistent again (or has no BGP-healthy appliance left).
    Consistent(&'a str),
}

/// The sites whose consistency changed from `before` to `after`: each change once, so the
/// warning is logged when a site's state changes, not on every snapshot rebuild.
pub fn site_changes<'a>(before: &'a [SiteBgp], after: &'a [SiteBgp]) -> Vec<SiteChange<'a>> {
    let old: HashMap<&str, &SiteBgp> = before.iter().map(|s| (s.cluster.as_str(), s)).collect();
    let new: HashMap<&str, &SiteBgp> = after.iter().map(|s| (s.cluster.as_str(), s)).collect();
    let mut out = Vec::new();
    for s in after {
        let was = old.get(s.cluster.as_str()).filter(|o| o.inconsistent());
        if s.inconsistent() {
            if was.is_none_or(|o| o.partial != s.partial || o.appliances != s.appliances) {
                out.push(SiteChange::Inconsistent(s));
            }
        } else if was.is_some() {
            out.push(SiteChange::Consistent(&s.cluster));
        }
    }
    for s in before {
        if s.inconsistent() && !new.contains_key(s.cluster.as_str()) {
            out.push(SiteChange::Consistent(&s.cluster));
        }
    }
    out
}

/// Logs [`site_changes`]: a warning when a site becomes (or stays, differently) inconsistent,
/// a note when it is consistent again.
pub fn log_site_changes(before: &[SiteBgp], after: &[SiteBgp]) {
    for c in site_changes(before, after) {
        match c {
            SiteChange::Inconsistent(site) => {
                tracing::warn!(cluster = %site.cluster, appliances = ?site.appliances, partial = ?site.partial, "bgp: the appliances of this site hear different routes; steering it only by the routes all of them hear")
            }
            SiteChange::Consistent(cluster) => {
                tracing::info!(%cluster, "bgp: the appliances of this site hear the same routes again")
            }
        }
    }
}

/// The BGP metrics of the control plane (Prometheus text format).
pub fn render_metrics(v: &BgpView) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "# HELP outpost_cp_bgp_site_inconsistent 1 when the BGP-healthy appliances of a site hear different routes.");
    let _ = writeln!(o, "# TYPE outpost_cp_bgp_site_inconsistent gauge");
    for s in &v.sites {
        let _ = writeln!(
            o,
            "outpost_cp_bgp_site_inconsistent{{cluster=\"{}\"}} {}",
            s.cluster,
            u8::from(s.inconsistent())
        );
    }
    let _ = writeln!(o, "# HELP outpost_cp_bgp_site_routes Routes that steer to a site (heard by all its BGP-healthy appliances).");
    let _ = writeln!(o, "# TYPE outpost_cp_bgp_site_routes gauge");
    for s in &v.sites {
        let _ = writeln!(
            o,
            "outpost_cp_bgp_site_routes{{cluster=\"{}\"}} {}",
            s.cluster, s.common_routes
        );
    }
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for a in v.appliances.values() {
        for s in &a.sessions {
            *states.entry(s.state.as_str()).or_default() += 1;
        }
    }
    let _ = writeln!(
        o,
        "# HELP outpost_cp_bgp_sessions BGP sessions the fleet reports, by state."
    );
    let _ = writeln!(o, "# TYPE outpost_cp_bgp_sessions gauge");
    for (st, n) in states {
        let _ = writeln!(o, "outpost_cp_bgp_sessions{{state=\"{st}\"}} {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(state: &str, rib_complete: bool) -> BgpSession {
        BgpSession {
            peer: "192.0.2.1:179".into(),
            asn: 64500,
            state: state.into(),
            last_error: None,
            uptime_secs: 1,
            routes: 0,
            rib_complete,
        }
    }

    fn appliance(id: &str) -> Appliance {
        Appliance {
            id: id.into(),
            cluster: "akl".into(),
            address: "127.0.0.1".into(),
            port: 8080,
            admin_state: AdminState::Reported,
            health: Some(Health::Ok),
            load: 0.1,
            last_heartbeat: Some(1),
            titles: None,
            prefixes: vec![],
        }
    }

    #[test]
    fn an_appliance_counts_once_its_initial_table_is_complete() {
        let mut v = BgpView::default();
        let full: BTreeMap<Prefix, (u32, u32)> = ["10.64.0.0/16", "10.67.0.0/16"]
            .iter()
            .map(|p| (p.parse().unwrap(), (3, 0)))
            .collect();
        let mut part = full.clone();
        part.pop_last();
        for (id, s, routes) in [
            ("akl-1", session("established", true), full.clone()),
            ("akl-2", session("established", false), part.clone()),
        ] {
            v.appliances.insert(
                id.into(),
                ApplianceBgp {
                    sessions: vec![s],
                    steerable: true,
                    routes,
                },
            );
        }
        let fleet = [appliance("akl-1"), appliance("akl-2")];
        let e = v.entries(&fleet);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].appliances, vec![0]);
        assert_eq!(e[0].routes.len(), 2);
        assert!(!v.sites[0].inconsistent());
        let before = v.appliances.clone();
        // End-of-RIB arrives: it counts, and the usual intersection applies.
        let a2 = v.appliances.get_mut("akl-2").unwrap();
        a2.sessions = vec![session("established", true)];
        assert_eq!(
            rib_completions(&before, &v.appliances),
            vec![("akl-2", "192.0.2.1:179")]
        );
        let e = v.entries(&fleet);
        assert_eq!(e[0].appliances, vec![0, 1]);
        assert_eq!(e[0].routes.len(), 1);
        assert!(v.sites[0].inconsistent());
        // Missing from the heartbeat (an older appliance): complete.
        let old: BgpSession = serde_json::from_value(serde_json::json!({
            "peer": "192.0.2.1:179", "asn": 64500, "state": "established"
        }))
        .unwrap();
        assert!(session_counts(&old));
    }

    fn site(cluster: &str, partial: &[&str]) -> SiteBgp {
        SiteBgp {
            cluster: cluster.into(),
            appliances: vec![format!("{cluster}-1"), format!("{cluster}-2")],
            common_routes: 3,
            partial: partial.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn a_site_change_is_reported_once() {
        let ok = [site("akl", &[]), site("syd", &[])];
        let bad = [site("akl", &["10.66.0.0/16"]), site("syd", &[])];
        let worse = [
            site("akl", &["10.66.0.0/16", "10.68.0.0/16"]),
            site("syd", &[]),
        ];
        assert_eq!(site_changes(&[], &ok), vec![]);
        assert_eq!(
            site_changes(&ok, &bad),
            vec![SiteChange::Inconsistent(&bad[0])]
        );
        // The same state on the next rebuild: nothing to log.
        assert_eq!(site_changes(&bad, &bad), vec![]);
        assert_eq!(
            site_changes(&bad, &worse),
            vec![SiteChange::Inconsistent(&worse[0])]
        );
        assert_eq!(
            site_changes(&worse, &ok),
            vec![SiteChange::Consistent("akl")]
        );
        // The site's BGP-healthy appliances all went: consistent again (nothing partial).
        assert_eq!(
            site_changes(&bad, &ok[1..]),
            vec![SiteChange::Consistent("akl")]
        );
        assert_eq!(
            site_changes(&[], &bad),
            vec![SiteChange::Inconsistent(&bad[0])]
        );
    }
}
