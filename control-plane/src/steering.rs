//! Steering: pure ranking of appliances for one client and one title. A [`Fleet`] snapshot goes
//! in, an ordered [`Decision`] comes out; no I/O, no clock (`now` is an argument).
//!
//! 1. Client IP → longest-prefix match over the prefixes appliances announce (configured or
//!    reported) → the clusters of the appliances announcing it, embedded before exchange.
//! 2. Candidate clusters: those, then their configured fallbacks in order (transitively), then
//!    every origin cluster. A client no prefix covers goes to the origin clusters only.
//! 3. Inside each cluster, appliances are ordered by rendezvous (highest-random-weight) hash of
//!    `(title, appliance id)` (in a matched cluster, only among the appliances announcing the
//!    matched prefix), so a title lands on the same appliance for every client and only
//!    the titles of a removed appliance move.
//! 4. Appliances that are offline, in error, over the load threshold or not holding the title are
//!    dropped.
//! 5. The list takes the best appliance of each cluster in cluster order, then the second of each,
//!    and so on, up to `max` entries: diverse across clusters so one site failing leaves a
//!    fallback.
//!
//! The *best local choice* is the top-hashed appliance of the first candidate cluster before any
//! appliance is dropped. When the chosen first entry differs, the decision carries a miss class:
//! a **content miss** when that appliance was healthy but did not hold the title, a **health
//! miss** when it was offline, in error or overloaded.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use utoipa::ToSchema;

use protocol::fleet::Health;
use serde::{Deserialize, Serialize};

use crate::prefix::{Prefix, PrefixTable};

/// Cluster kinds, in preference order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    /// Inside an ISP's network.
    Embedded,
    /// At an internet exchange.
    Exchange,
    /// The origin: holds everything, last resort.
    Origin,
}

impl ClusterKind {
    /// `embedded`, `exchange` or `origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterKind::Embedded => "embedded",
            ClusterKind::Exchange => "exchange",
            ClusterKind::Origin => "origin",
        }
    }
}

/// How the operator overrides what an appliance reports (Traffic Control's admin states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Steerable while its heartbeats say so.
    Reported,
    /// Always taken as online, holding the configured titles (or every title).
    Online,
    /// Never steered to.
    Offline,
}

impl AdminState {
    /// `reported`, `online` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Reported => "reported",
            AdminState::Online => "online",
            AdminState::Offline => "offline",
        }
    }
}

/// One cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Cluster id (the grant audience).
    pub id: String,
    /// Kind.
    pub kind: ClusterKind,
    /// Fallback clusters, in order.
    pub fallbacks: Vec<String>,
}

/// One appliance as steering sees it.
#[derive(Debug, Clone)]
pub struct Appliance {
    /// Appliance id (also the HLS pathway / DASH service location).
    pub id: String,
    /// Its cluster.
    pub cluster: String,
    /// Host players connect to.
    pub address: String,
    /// HTTP port.
    pub port: u16,
    /// Operator override.
    pub admin_state: AdminState,
    /// Last reported health (`None` before the first heartbeat).
    pub health: Option<Health>,
    /// Last reported load (fraction of capacity).
    pub load: f64,
    /// Unix seconds of the last heartbeat.
    pub last_heartbeat: Option<u64>,
    /// Titles held; `None` = every title (an `online` appliance without a configured list).
    pub titles: Option<HashSet<String>>,
    /// Prefixes announced (reported ones replace configured ones).
    pub prefixes: Vec<Prefix>,
}

/// Steering thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// An appliance without a heartbeat for this long is offline.
    pub offline_after_secs: u64,
    /// Appliances whose load is above this are skipped.
    pub load_threshold: f64,
    /// Longest list returned.
    pub max: usize,
}

/// Why an appliance cannot serve now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// Admin state offline, no heartbeat yet, or heartbeats stopped.
    Offline,
    /// Reported health `error`.
    Error,
    /// Load over the threshold.
    Overloaded,
    /// Does not hold the title.
    NotHoldingTitle,
}

/// The miss class of a decision whose first choice is not the best local appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissClass {
    /// The best local appliance is healthy but does not hold the title.
    ContentMiss,
    /// The best local appliance is offline, in error or overloaded.
    HealthMiss,
}

impl MissClass {
    /// `content_miss` or `health_miss`: the one spelling, in the stored decision (serde), the
    /// session-start answer, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MissClass::ContentMiss => "content_miss",
            MissClass::HealthMiss => "health_miss",
        }
    }
}

/// One ranked appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Appliance id.
    pub appliance: String,
    /// Its cluster.
    pub cluster: String,
    /// Host.
    pub address: String,
    /// Port.
    pub port: u16,
}

/// A steering decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Ranked appliances, best first (empty when none can serve).
    pub ranked: Vec<Choice>,
    /// The matched client prefix, if any.
    pub prefix: Option<String>,
    /// Candidate clusters in order.
    pub clusters: Vec<String>,
    /// The best local choice before filtering.
    pub best_local: Option<String>,
    /// Set when the first choice is not the best local one.
    pub miss: Option<MissClass>,
    /// Human-readable reason.
    pub reason: String,
}

/// The part of a [`Decision`] a session keeps (stored as JSON in its row): the ranking its
/// heartbeats re-grant and its steering manifests re-order, why, and the miss class the fill
/// planner counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDecision {
    /// Ranked appliances, best first.
    pub ranked: Vec<Choice>,
    /// Human-readable reason.
    pub reason: String,
    /// The miss class, if any.
    pub miss: Option<MissClass>,
}

impl From<&Decision> for StoredDecision {
    fn from(d: &Decision) -> Self {
        StoredDecision {
            ranked: d.ranked.clone(),
            reason: d.reason.clone(),
            miss: d.miss,
        }
    }
}

/// The fleet as steering sees it: clusters, appliances and the announced-prefix table.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    clusters: HashMap<String, Cluster>,
    appliances: Vec<Appliance>,
    by_cluster: HashMap<String, Vec<usize>>,
    announced: PrefixTable<Vec<usize>>,
    origins: Vec<String>,
}

impl Fleet {
    /// Builds the indexes.
    pub fn new(clusters: Vec<Cluster>, appliances: Vec<Appliance>) -> Fleet {
        let mut announced: PrefixTable<Vec<usize>> = PrefixTable::new();
        let mut by_cluster: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, a) in appliances.iter().enumerate() {
            by_cluster.entry(a.cluster.clone()).or_default().push(i);
            for p in &a.prefixes {
                match announced.get_mut(p) {
                    Some(v) => v.push(i),
                    None => {
                        announced.insert(*p, vec![i]);
                    }
                }
            }
        }
        let mut origins: Vec<String> = clusters
            .iter()
            .filter(|c| c.kind == ClusterKind::Origin)
            .map(|c| c.id.clone())
            .collect();
        origins.sort();
        Fleet {
            clusters: clusters.into_iter().map(|c| (c.id.clone(), c)).collect(),
            appliances,
            by_cluster,
            announced,
            origins,
        }
    }

    /// Every appliance.
    pub fn appliances(&self) -> &[Appliance] {
        &self.appliances
    }

    /// A cluster by id.
    pub fn cluster(&self, id: &str) -> Option<&Cluster> {
        self.clusters.get(id)
    }

    /// Every cluster, sorted by id.
    pub fn clusters(&self) -> Vec<&Cluster> {
        let mut v: Vec<&Cluster> = self.clusters.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// An appliance by id.
    pub fn appliance(&self, id: &str) -> Option<&Appliance> {
        self.appliances.iter().find(|a| a.id == id)
    }

    /// Why `a` cannot serve `title` now, or `None` if it can.
    pub fn unavailable(
        a: &Appliance,
        title: &str,
        now: u64,
        t: &Thresholds,
    ) -> Option<Unavailable> {
        match a.admin_state {
            AdminState::Offline => return Some(Unavailable::Offline),
            AdminState::Online => {}
            AdminState::Reported => {
                let fresh = a
                    .last_heartbeat
                    .is_some_and(|h| now.saturating_sub(h) <= t.offline_after_secs);
                if !fresh {
                    return Some(Unavailable::Offline);
                }
            }
        }
        if a.health == Some(Health::Error) {
            return Some(Unavailable::Error);
        }
        if a.load > t.load_threshold {
            return Some(Unavailable::Overloaded);
        }
        if a.titles.as_ref().is_some_and(|s| !s.contains(title)) {
            return Some(Unavailable::NotHoldingTitle);
        }
        None
    }

    /// Candidate clusters for a client, in order, and the matched prefix.
    pub fn candidate_clusters(&self, client: IpAddr) -> (Option<Prefix>, Vec<String>) {
        let mut out: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let matched = self.announced.lookup(client);
        let prefix = matched.as_ref().map(|(p, _)| *p);
        if let Some((_, idxs)) = matched {
            let mut local: Vec<(ClusterKind, &str)> = idxs
                .iter()
                .filter_map(|&i| {
                    let c = &self.appliances[i].cluster;
                    self.clusters.get(c).map(|cl| (cl.kind, c.as_str()))
                })
                .collect();
            local.sort();
            local.dedup();
            for (_, c) in &local {
                if seen.insert((*c).to_owned()) {
                    out.push((*c).to_owned());
                }
            }
            // Fallbacks, breadth first, in configured order.
            let mut i = 0;
            while i < out.len() {
                if let Some(cl) = self.clusters.get(&out[i]) {
                    for f in &cl.fallbacks {
                        if self.clusters.contains_key(f) && seen.insert(f.clone()) {
                            out.push(f.clone());
                        }
                    }
                }
                i += 1;
            }
        }
        for o in &self.origins {
            if seen.insert(o.clone()) {
                out.push(o.clone());
            }
        }
        (prefix, out)
    }

    /// The appliances of `cluster` ordered by rendezvous hash on `title`.
    pub fn hrw_order(&self, cluster: &str, title: &str) -> Vec<&Appliance> {
        let mut list: Vec<&Appliance> = self
            .by_cluster
            .get(cluster)
            .map(|v| v.iter().map(|&i| &self.appliances[i]).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| {
            rendezvous_score(title, &b.id)
                .cmp(&rendezvous_score(title, &a.id))
                .then_with(|| a.id.cmp(&b.id))
        });
        list
    }

    /// Ranks appliances for `client` and `title`.
    pub fn rank(&self, client: IpAddr, title: &str, now: u64, t: &Thresholds) -> Decision {
        let (prefix, clusters) = self.candidate_clusters(client);
        // In the clusters the client's prefix matched, only the appliances announcing that prefix
        // serve it (BGP sends the client there and nowhere else); fallback and origin clusters
        // use all their appliances.
        let announcing: HashSet<&str> = self
            .announced
            .lookup(client)
            .map(|(_, idxs)| {
                idxs.iter()
                    .map(|&i| self.appliances[i].id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let mut per_cluster: Vec<Vec<&Appliance>> = Vec::with_capacity(clusters.len());
        let mut best_local: Option<(&Appliance, Option<Unavailable>)> = None;
        for (ci, c) in clusters.iter().enumerate() {
            let mut ordered = self.hrw_order(c, title);
            if ordered.iter().any(|a| announcing.contains(a.id.as_str())) {
                ordered.retain(|a| announcing.contains(a.id.as_str()));
            }
            if ci == 0 {
                best_local = ordered
                    .first()
                    .map(|a| (*a, Fleet::unavailable(a, title, now, t)));
            }
            per_cluster.push(
                ordered
                    .into_iter()
                    .filter(|a| Fleet::unavailable(a, title, now, t).is_none())
                    .collect(),
            );
        }
        // The client's own cluster first, up to LOCAL_FIRST appliances, so losing one local
        // appliance moves the player to another inside the same network, but never so many that
        // a fallback or origin cluster with candidates finds no slot; then round-robin across
        // the clusters (local, fallbacks, origin) so the list always reaches upstream.
        let max = t.max.max(1);
        let mut queues: Vec<std::collections::VecDeque<&Appliance>> =
            per_cluster.into_iter().map(Into::into).collect();
        let choice = |a: &Appliance| Choice {
            appliance: a.id.clone(),
            cluster: a.cluster.clone(),
            address: a.address.clone(),
            port: a.port,
        };
        let mut ranked: Vec<Choice> = Vec::new();
        if let (Some(_), Some((local, rest))) = (&prefix, queues.split_first_mut()) {
            let others = rest.iter().filter(|q| !q.is_empty()).count();
            let lead = LOCAL_FIRST.min(max.saturating_sub(others)).max(1);
            {
                while ranked.len() < lead {
                    match local.pop_front() {
                        Some(a) => ranked.push(choice(a)),
                        None => break,
                    }
                }
            }
        }
        // After the local lead, the round starts with the first upstream cluster.
        if !ranked.is_empty() {
            queues.rotate_left(1);
        }
        while ranked.len() < max {
            let mut any = false;
            for q in &mut queues {
                if let Some(a) = q.pop_front() {
                    any = true;
                    ranked.push(choice(a));
                    if ranked.len() == max {
                        break;
                    }
                }
            }
            if !any {
                break;
            }
        }
        let miss = match (&best_local, ranked.first()) {
            (Some((best, why)), first) if first.map(|f| f.appliance.as_str()) != Some(&best.id) => {
                match why {
                    Some(Unavailable::NotHoldingTitle) => Some(MissClass::ContentMiss),
                    Some(_) => Some(MissClass::HealthMiss),
                    None => None,
                }
            }
            _ => None,
        };
        let reason = match (&prefix, &best_local, ranked.first()) {
            (_, _, None) => format!(
                "no appliance can serve: clusters tried {}",
                clusters.join(",")
            ),
            (Some(p), Some((best, why)), Some(first)) => match why {
                None => format!(
                    "prefix {p} -> cluster {} -> appliance {}",
                    best.cluster, first.appliance
                ),
                Some(w) => format!(
                    "prefix {p} -> cluster {}: best local {} skipped ({}) -> appliance {} in {}",
                    best.cluster,
                    best.id,
                    serde_json::to_value(w)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    first.appliance,
                    first.cluster
                ),
            },
            (None, _, Some(first)) => format!(
                "no announced prefix covers the client -> origin {}",
                first.cluster
            ),
            (Some(p), None, Some(first)) => format!("prefix {p} -> {}", first.appliance),
        };
        Decision {
            ranked,
            prefix: prefix.map(|p| p.to_string()),
            clusters,
            best_local: best_local.map(|(a, _)| a.id.clone()),
            miss,
            reason,
        }
    }
}

/// How many appliances of the client's own cluster lead the ranked list, when it has them and
/// the list is long enough to keep one slot for every other cluster with a candidate.
pub const LOCAL_FIRST: usize = 2;

/// The rendezvous weight of `appliance` for `title`: a 64-bit FNV-1a over both ids, finished
/// with the SplitMix64 mixer so nearby ids spread. Stable across processes and versions.
pub fn rendezvous_score(title: &str, appliance: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in title
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(appliance.as_bytes())
    {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn appliance(id: &str, cluster: &str, prefixes: &[&str]) -> Appliance {
        Appliance {
            id: id.into(),
            cluster: cluster.into(),
            address: "127.0.0.1".into(),
            port: 1,
            admin_state: AdminState::Reported,
            health: Some(Health::Ok),
            load: 0.1,
            last_heartbeat: Some(1000),
            titles: Some(["t1".to_owned()].into_iter().collect()),
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn fleet(apps: Vec<Appliance>) -> Fleet {
        Fleet::new(
            vec![
                Cluster {
                    id: "isp".into(),
                    kind: ClusterKind::Embedded,
                    fallbacks: vec!["ix".into()],
                },
                Cluster {
                    id: "ix".into(),
                    kind: ClusterKind::Exchange,
                    fallbacks: vec![],
                },
                Cluster {
                    id: "origin".into(),
                    kind: ClusterKind::Origin,
                    fallbacks: vec![],
                },
            ],
            apps,
        )
    }

    const T: Thresholds = Thresholds {
        offline_after_secs: 30,
        load_threshold: 0.9,
        max: 3,
    };

    #[test]
    fn miss_classes_have_one_spelling() {
        for m in [MissClass::ContentMiss, MissClass::HealthMiss] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
            assert_eq!(
                serde_json::from_value::<MissClass>(m.as_str().into()).unwrap(),
                m
            );
        }
    }

    fn ids(d: &Decision) -> Vec<&str> {
        d.ranked.iter().map(|c| c.appliance.as_str()).collect()
    }

    #[test]
    fn embedded_then_fallback_then_origin_and_misses() {
        let mut apps = vec![
            appliance("isp-1", "isp", &["10.0.0.0/8"]),
            appliance("isp-2", "isp", &["10.0.0.0/8"]),
            appliance("ix-1", "ix", &["10.0.0.0/8", "0.0.0.0/0"]),
            appliance("org-1", "origin", &[]),
        ];
        let f = fleet(apps.clone());
        let d = f.rank("10.1.1.1".parse().unwrap(), "t1", 1000, &T);
        assert_eq!(d.clusters, ["isp", "ix", "origin"]);
        assert_eq!(d.ranked.len(), 3);
        assert_eq!(d.ranked[1].appliance, "ix-1");
        assert_eq!(d.ranked[2].appliance, "org-1");
        assert_eq!(d.miss, None);
        let best = d.best_local.clone().unwrap();
        assert_eq!(d.ranked[0].appliance, best);

        // A longer list keeps two local appliances first, then one per upstream cluster.
        let d = fleet(apps.clone()).rank(
            "10.1.1.1".parse().unwrap(),
            "t1",
            1000,
            &Thresholds { max: 4, ..T },
        );
        assert_eq!(
            d.ranked
                .iter()
                .map(|c| c.cluster.as_str())
                .collect::<Vec<_>>(),
            ["isp", "isp", "ix", "origin"]
        );

        // The best local appliance loses the title: content miss, the other isp appliance wins.
        let bi = apps.iter().position(|a| a.id == best).unwrap();
        apps[bi].titles = Some(HashSet::new());
        let d = fleet(apps.clone()).rank("10.1.1.1".parse().unwrap(), "t1", 1000, &T);
        assert_eq!(d.miss, Some(MissClass::ContentMiss));
        assert_ne!(d.ranked[0].appliance, best);
        assert_eq!(d.ranked[0].cluster, "isp");

        // Overloaded or silent: health miss.
        apps[bi].titles = None;
        apps[bi].load = 0.95;
        let d = fleet(apps.clone()).rank("10.1.1.1".parse().unwrap(), "t1", 1000, &T);
        assert_eq!(d.miss, Some(MissClass::HealthMiss));
        apps[bi].load = 0.1;
        let d = fleet(apps.clone()).rank("10.1.1.1".parse().unwrap(), "t1", 1031, &T);
        assert_eq!(d.miss, Some(MissClass::HealthMiss));
        // Everything reported is silent at 1031; only admin-online would remain.
        assert!(d.ranked.is_empty());

        // A client outside 10/8 matches the ix's default route, then origin.
        let d = fleet(apps.clone()).rank("192.0.2.1".parse().unwrap(), "t1", 1000, &T);
        assert_eq!(ids(&d), ["ix-1", "org-1"]);
        // With max 2 the list is cut.
        let d = fleet(apps).rank(
            "10.1.1.1".parse().unwrap(),
            "t1",
            1000,
            &Thresholds { max: 2, ..T },
        );
        assert_eq!(d.ranked.len(), 2);
    }

    #[test]
    fn no_prefix_goes_to_origin_and_admin_states_apply() {
        let mut o = appliance("org-1", "origin", &[]);
        o.admin_state = AdminState::Online;
        o.last_heartbeat = None;
        o.titles = None;
        let mut off = appliance("isp-1", "isp", &["10.0.0.0/8"]);
        off.admin_state = AdminState::Offline;
        let f = fleet(vec![o, off]);
        let d = f.rank("192.0.2.1".parse().unwrap(), "any", 5000, &T);
        assert_eq!(ids(&d), ["org-1"]);
        assert_eq!(d.prefix, None);
        let d = f.rank("10.0.0.1".parse().unwrap(), "any", 5000, &T);
        assert_eq!(ids(&d), ["org-1"]);
        assert_eq!(d.miss, Some(MissClass::HealthMiss));
    }

    proptest! {
        /// Removing one appliance moves only the titles whose top choice it was; every other
        /// title keeps its appliance (minimal disruption).
        #[test]
        fn rendezvous_minimal_disruption(n in 2usize..12, removed in 0usize..12, titles in proptest::collection::vec("[a-z0-9]{1,12}", 1..50)) {
            let removed = removed % n;
            let ids: Vec<String> = (0..n).map(|i| format!("oca-{i}")).collect();
            let top = |set: &[&String], t: &str| -> String {
                set.iter().max_by(|a, b| rendezvous_score(t, a).cmp(&rendezvous_score(t, b)).then_with(|| b.cmp(a))).unwrap().to_string()
            };
            let all: Vec<&String> = ids.iter().collect();
            let rest: Vec<&String> = ids.iter().enumerate().filter(|(i, _)| *i != removed).map(|(_, s)| s).collect();
            for t in &titles {
                let before = top(&all, t);
                let after = top(&rest, t);
                if before != ids[removed] {
                    prop_assert_eq!(before, after);
                }
            }
        }

        /// The fleet's HRW order is a deterministic permutation of the cluster and its head is
        /// the argmax of the score.
        #[test]
        fn hrw_order_is_argmax(n in 1usize..10, title in "[a-z0-9-]{1,20}") {
            let apps: Vec<Appliance> = (0..n).map(|i| appliance(&format!("a{i}"), "isp", &[])).collect();
            let f = fleet(apps);
            let order: Vec<String> = f.hrw_order("isp", &title).iter().map(|a| a.id.clone()).collect();
            prop_assert_eq!(order.len(), n);
            let best = (0..n).map(|i| format!("a{i}")).max_by_key(|id| rendezvous_score(&title, id)).unwrap();
            prop_assert_eq!(&order[0], &best);
            let again: Vec<String> = f.hrw_order("isp", &title).iter().map(|a| a.id.clone()).collect();
            prop_assert_eq!(order, again);
        }

        /// Titles spread over a cluster: with 4 appliances and 400 titles no appliance gets
        /// nothing (a broken hash that ignores the title would give one appliance everything).
        #[test]
        fn rendezvous_spreads(seed in "[a-z]{1,6}") {
            let mut counts = [0usize; 4];
            for i in 0..400 {
                let t = format!("{seed}-{i}");
                let best = (0..4).max_by_key(|k| rendezvous_score(&t, &format!("oca-{k}"))).unwrap();
                counts[best] += 1;
            }
            prop_assert!(counts.iter().all(|&c| c > 40), "{:?}", counts);
        }
    }
}
