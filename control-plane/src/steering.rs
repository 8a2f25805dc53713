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

impl StoredDecision {
    /// The cluster a session's bytes are counted for in the fill planner's demand shares: the
    /// cluster of the first appliance ranked; `None` when it was steered nowhere.
    pub fn served_cluster(&self) -> Option<&str> {
        self.ranked.first().map(|c| c.cluster.as_str())
    }

    /// Whether the decision was a content miss (its best appliance lacked the title).
    pub fn content_miss(&self) -> bool {
        self.miss == Some(MissClass::ContentMiss)
    }
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

/// Routes one site learnt over BGP: every listed appliance announces every listed route (see
/// [`crate::bgp::BgpView::entries`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpRoutes {
    /// Indices into the fleet's appliances.
    pub appliances: Vec<usize>,
    /// `(prefix, AS-path length, MED)`.
    pub routes: Vec<(Prefix, u32, u32)>,
}

/// No cluster: an appliance whose cluster is not configured.
const NO_CLUSTER: u32 = u32::MAX;

/// One (prefix, appliance) entry of the steering table: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    /// Index into the fleet's appliances.
    appliance: u32,
    /// AS-path length (0 for a policy prefix: the static override).
    path: u32,
    /// MED (0 for a policy prefix).
    med: u32,
}

/// Where one prefix's entries and cluster ranking sit in [`RouteTable`]'s flat arrays.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    routes: u32,
    n_routes: u32,
    ranked: u32,
    n_ranked: u32,
}

/// The announced-prefix table in flat arrays, built once per fleet: per prefix the appliances
/// announcing it with their (AS-path length, MED) inline, and the ranking of their clusters
/// (best path, then MED, then kind, then id) as interned cluster indices, so a lookup copies a
/// precomputed list.
#[derive(Debug, Clone, Default)]
struct RouteTable {
    /// Prefix → index into `spans`.
    index: PrefixTable<u32>,
    spans: Vec<Span>,
    /// Grouped by prefix; inside a prefix, by appliance index.
    routes: Vec<Route>,
    /// Cluster indices, grouped by prefix, best first.
    ranked: Vec<u32>,
}

impl RouteTable {
    fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.routes.capacity() * std::mem::size_of::<Route>()
            + self.ranked.capacity() * std::mem::size_of::<u32>()
    }

    fn routes(&self, s: Span) -> &[Route] {
        &self.routes[s.routes as usize..(s.routes + s.n_routes) as usize]
    }

    fn ranked(&self, s: Span) -> &[u32] {
        &self.ranked[s.ranked as usize..(s.ranked + s.n_ranked) as usize]
    }
}

/// The hasher of the prefix interning map of [`Fleet::with_bgp`]: a multiply-xorshift over the
/// prefix's fields from a per-map random seed (the std SipHash took most of a rebuild; the seed
/// keeps a peer from choosing prefixes that collide).
#[derive(Clone)]
struct InternHasher(u64);

impl InternHasher {
    fn new() -> InternHasher {
        use std::hash::BuildHasher as _;
        InternHasher(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1)
    }
}

impl std::hash::BuildHasher for InternHasher {
    type Hasher = InternState;
    fn build_hasher(&self) -> InternState {
        InternState(self.0)
    }
}

/// The running state of an [`InternHasher`].
struct InternState(u64);

impl std::hash::Hasher for InternState {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// The fleet as steering sees it: clusters, appliances and the announced-prefix table.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Sorted by id; a cluster's position is its interned index.
    clusters: Vec<Cluster>,
    cluster_index: HashMap<String, u32>,
    /// Per cluster index: its fallbacks that exist, as indices, in configured order.
    fallbacks: Vec<Vec<u32>>,
    appliances: Vec<Appliance>,
    /// Per appliance: its cluster index, or [`NO_CLUSTER`].
    appliance_cluster: Vec<u32>,
    by_cluster: HashMap<String, Vec<usize>>,
    table: RouteTable,
    /// Origin cluster indices, by id.
    origins: Vec<u32>,
}

impl Fleet {
    /// Builds the indexes from policy prefixes alone.
    pub fn new(clusters: Vec<Cluster>, appliances: Vec<Appliance>) -> Fleet {
        Fleet::with_bgp(clusters, appliances, &[])
    }

    /// Builds the indexes from the appliances' policy prefixes and the routes their sites learnt
    /// over BGP. A policy prefix is a static override: it ranks as an AS path of length 0 and
    /// wins over a BGP route of the same appliance for the same prefix.
    pub fn with_bgp(
        clusters: Vec<Cluster>,
        appliances: Vec<Appliance>,
        bgp: &[BgpRoutes],
    ) -> Fleet {
        let mut by_id: HashMap<String, Cluster> =
            clusters.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut ids: Vec<String> = by_id.keys().cloned().collect();
        ids.sort();
        let clusters: Vec<Cluster> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
        let cluster_index: HashMap<String, u32> = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i as u32))
            .collect();
        let fallbacks = clusters
            .iter()
            .map(|c| {
                c.fallbacks
                    .iter()
                    .filter_map(|f| cluster_index.get(f).copied())
                    .collect()
            })
            .collect();
        let origins = (0..clusters.len() as u32)
            .filter(|&i| clusters[i as usize].kind == ClusterKind::Origin)
            .collect();
        let mut by_cluster: HashMap<String, Vec<usize>> = HashMap::new();
        let mut appliance_cluster = Vec::with_capacity(appliances.len());
        for (i, a) in appliances.iter().enumerate() {
            by_cluster.entry(a.cluster.clone()).or_default().push(i);
            appliance_cluster.push(cluster_index.get(&a.cluster).copied().unwrap_or(NO_CLUSTER));
        }
        let mut f = Fleet {
            clusters,
            cluster_index,
            fallbacks,
            appliances,
            appliance_cluster,
            by_cluster,
            table: RouteTable::default(),
            origins,
        };
        f.table = f.build_table(bgp);
        f
    }

    /// The steering table: policy prefixes (path 0, MED 0) and `bgp`, grouped by prefix in one
    /// counting pass, each prefix's entries deduplicated per appliance (the best kept) and its
    /// clusters ranked.
    fn build_table(&self, bgp: &[BgpRoutes]) -> RouteTable {
        let n_app = self.appliances.len();
        let mut pid: HashMap<Prefix, u32, InternHasher> = HashMap::with_hasher(InternHasher::new());
        let mut prefixes: Vec<Prefix> = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        let mut intern = |p: Prefix, n: u32, counts: &mut Vec<u32>| -> u32 {
            let id = *pid.entry(p).or_insert_with(|| {
                prefixes.push(p);
                counts.push(0);
                (prefixes.len() - 1) as u32
            });
            counts[id as usize] += n;
            id
        };
        // Pass 1: intern prefixes and count entries per prefix.
        let mut policy_ids: Vec<u32> = Vec::new();
        for a in &self.appliances {
            for p in &a.prefixes {
                policy_ids.push(intern(*p, 1, &mut counts));
            }
        }
        let site_apps: Vec<Vec<u32>> = bgp
            .iter()
            .map(|s| {
                s.appliances
                    .iter()
                    .filter(|&&i| i < n_app)
                    .map(|&i| i as u32)
                    .collect()
            })
            .collect();
        let mut bgp_ids: Vec<u32> = Vec::with_capacity(bgp.iter().map(|s| s.routes.len()).sum());
        for (s, apps) in bgp.iter().zip(&site_apps) {
            if apps.is_empty() {
                continue;
            }
            for (p, _, _) in &s.routes {
                bgp_ids.push(intern(*p, apps.len() as u32, &mut counts));
            }
        }
        // Pass 2: place every entry at its prefix's slot.
        let mut start: Vec<u32> = Vec::with_capacity(counts.len() + 1);
        let mut total = 0u32;
        for &c in &counts {
            start.push(total);
            total += c;
        }
        start.push(total);
        let mut cursor = start.clone();
        let mut routes = vec![
            Route {
                appliance: 0,
                path: 0,
                med: 0
            };
            total as usize
        ];
        let mut ids = policy_ids.iter();
        for (i, a) in self.appliances.iter().enumerate() {
            for _ in &a.prefixes {
                if let Some(&id) = ids.next() {
                    let c = &mut cursor[id as usize];
                    routes[*c as usize] = Route {
                        appliance: i as u32,
                        path: 0,
                        med: 0,
                    };
                    *c += 1;
                }
            }
        }
        let mut ids = bgp_ids.iter();
        for (s, apps) in bgp.iter().zip(&site_apps) {
            if apps.is_empty() {
                continue;
            }
            for &(_, path, med) in &s.routes {
                let Some(&id) = ids.next() else { break };
                let c = &mut cursor[id as usize];
                for &a in apps {
                    routes[*c as usize] = Route {
                        appliance: a,
                        path,
                        med,
                    };
                    *c += 1;
                }
            }
        }
        // Pass 3: per prefix, dedup per appliance (best first), compact, rank clusters.
        let n_clusters = self.clusters.len();
        let mut best: Vec<(u32, u32)> = vec![(u32::MAX, u32::MAX); n_clusters];
        let mut touched: Vec<u32> = Vec::new();
        let mut spans: Vec<Span> = Vec::with_capacity(prefixes.len());
        let mut ranked: Vec<u32> = Vec::new();
        let mut w = 0usize;
        for id in 0..prefixes.len() {
            let (a, b) = (start[id] as usize, start[id + 1] as usize);
            routes[a..b].sort_unstable();
            let first = w;
            for r in a..b {
                let route = routes[r];
                if w > first && routes[w - 1].appliance == route.appliance {
                    continue;
                }
                routes[w] = route;
                w += 1;
            }
            touched.clear();
            for route in &routes[first..w] {
                let c = self.appliance_cluster[route.appliance as usize];
                if c == NO_CLUSTER {
                    continue;
                }
                let slot = &mut best[c as usize];
                if slot.0 == u32::MAX {
                    touched.push(c);
                }
                *slot = (*slot).min((route.path, route.med));
            }
            touched
                .sort_unstable_by_key(|&c| (best[c as usize], self.clusters[c as usize].kind, c));
            spans.push(Span {
                routes: first as u32,
                n_routes: (w - first) as u32,
                ranked: ranked.len() as u32,
                n_ranked: touched.len() as u32,
            });
            ranked.extend_from_slice(&touched);
            for &c in &touched {
                best[c as usize] = (u32::MAX, u32::MAX);
            }
        }
        routes.truncate(w);
        routes.shrink_to_fit();
        ranked.shrink_to_fit();
        let mut index = PrefixTable::new();
        for (id, p) in prefixes.into_iter().enumerate() {
            index.insert(p, id as u32);
        }
        RouteTable {
            index,
            spans,
            routes,
            ranked,
        }
    }

    /// Bytes the steering table holds on the heap (prefix index, per-prefix spans, the
    /// (prefix, appliance) entries and the cluster rankings), from the capacities.
    pub fn table_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    /// Number of (prefix, appliance) entries in the steering table.
    pub fn table_entries(&self) -> usize {
        self.table.routes.len()
    }

    /// Every appliance.
    pub fn appliances(&self) -> &[Appliance] {
        &self.appliances
    }

    /// A cluster by id.
    pub fn cluster(&self, id: &str) -> Option<&Cluster> {
        self.cluster_index
            .get(id)
            .map(|&i| &self.clusters[i as usize])
    }

    /// Every cluster, sorted by id.
    pub fn clusters(&self) -> Vec<&Cluster> {
        self.clusters.iter().collect()
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
    pub fn candidate_clusters(&self, client: IpAddr) -> (Option<Prefix>, Vec<&str>) {
        let (matched, order) = self.candidates(client);
        let names = order
            .iter()
            .map(|&c| self.clusters[c as usize].id.as_str())
            .collect();
        (matched.map(|(p, _)| p), names)
    }

    /// The matched prefix with its span, and the candidate cluster indices in order: the
    /// prefix's precomputed ranking (shorter AS path, then lower MED, policy prefixes as 0, 0;
    /// then kind, then id), their fallbacks breadth first in configured order, then the origins.
    fn candidates(&self, client: IpAddr) -> (Option<(Prefix, Span)>, Vec<u32>) {
        let matched = self
            .table
            .index
            .lookup(client)
            .map(|(p, &id)| (p, self.table.spans[id as usize]));
        let mut seen = vec![0u64; self.clusters.len().div_ceil(64)];
        let mut mark = |c: u32| {
            let (w, b) = (c as usize / 64, 1u64 << (c % 64));
            let new = seen[w] & b == 0;
            seen[w] |= b;
            new
        };
        let mut out: Vec<u32> = Vec::new();
        if let Some((_, span)) = matched {
            let local = self.table.ranked(span);
            out.reserve(local.len() + self.origins.len());
            for &c in local {
                if mark(c) {
                    out.push(c);
                }
            }
            // Fallbacks, breadth first, in configured order.
            let mut i = 0;
            while i < out.len() {
                for &f in &self.fallbacks[out[i] as usize] {
                    if mark(f) {
                        out.push(f);
                    }
                }
                i += 1;
            }
        }
        for &o in &self.origins {
            if mark(o) {
                out.push(o);
            }
        }
        (matched, out)
    }

    /// The appliances of `cluster` ordered by rendezvous hash on `title`.
    pub fn hrw_order(&self, cluster: &str, title: &str) -> Vec<&Appliance> {
        self.hrw_indices(cluster, title)
            .into_iter()
            .map(|i| &self.appliances[i])
            .collect()
    }

    /// [`Fleet::hrw_order`] as appliance indices.
    fn hrw_indices(&self, cluster: &str, title: &str) -> Vec<usize> {
        let mut list: Vec<(u64, usize)> = self
            .by_cluster
            .get(cluster)
            .map(|v| {
                v.iter()
                    .map(|&i| (rendezvous_score(title, &self.appliances[i].id), i))
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by(|(sa, a), (sb, b)| {
            sb.cmp(sa)
                .then_with(|| self.appliances[*a].id.cmp(&self.appliances[*b].id))
        });
        list.into_iter().map(|(_, i)| i).collect()
    }

    /// Ranks appliances for `client` and `title`.
    pub fn rank(&self, client: IpAddr, title: &str, now: u64, t: &Thresholds) -> Decision {
        let (matched, order) = self.candidates(client);
        let prefix = matched.map(|(p, _)| p);
        let clusters: Vec<String> = order
            .iter()
            .map(|&c| self.clusters[c as usize].id.clone())
            .collect();
        // In the clusters the client's prefix matched, only the appliances announcing that prefix
        // serve it (BGP sends the client there and nowhere else); fallback and origin clusters
        // use all their appliances. Entries are sorted by appliance index.
        let announcing: &[Route] = matched.map_or(&[], |(_, s)| self.table.routes(s));
        let announces = |i: &usize| {
            announcing
                .binary_search_by_key(&(*i as u32), |r| r.appliance)
                .is_ok()
        };
        let mut per_cluster: Vec<Vec<&Appliance>> = Vec::with_capacity(clusters.len());
        let mut best_local: Option<(&Appliance, Option<Unavailable>)> = None;
        for (ci, c) in clusters.iter().enumerate() {
            let mut idxs = self.hrw_indices(c, title);
            if idxs.iter().any(announces) {
                idxs.retain(announces);
            }
            let ordered: Vec<&Appliance> = idxs.iter().map(|&i| &self.appliances[i]).collect();
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

    #[test]
    fn bgp_routes_rank_by_path_then_med_and_policy_overrides() {
        let apps = vec![
            appliance("isp-1", "isp", &["10.0.0.0/8"]),
            appliance("isp-2", "isp", &[]),
            appliance("ix-1", "ix", &[]),
            appliance("org-1", "origin", &[]),
        ];
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let f = Fleet::with_bgp(
            fleet(vec![]).clusters.clone(),
            apps,
            &[
                BgpRoutes {
                    appliances: vec![0, 1],
                    routes: vec![(p("10.0.0.0/8"), 9, 0), (p("10.64.0.0/16"), 3, 50)],
                },
                BgpRoutes {
                    appliances: vec![2, 99],
                    routes: vec![(p("10.64.0.0/16"), 3, 0), (p("10.65.0.0/16"), 4, 0)],
                },
            ],
        );
        let c = |ip: &str| f.candidate_clusters(ip.parse().unwrap());
        // Same path, lower MED: the exchange first.
        assert_eq!(c("10.64.1.1").1, ["ix", "isp", "origin"]);
        assert_eq!(c("10.64.1.1").0, Some(p("10.64.0.0/16")));
        // isp-1's policy 10/8 ranks as path 0 although it also hears it with path 9.
        assert_eq!(c("10.1.1.1").1, ["isp", "ix", "origin"]);
        assert_eq!(c("10.65.0.1").1, ["ix", "origin"]);
        assert_eq!(c("192.0.2.1"), (None, vec!["origin"]));
        // In the matched cluster only the announcing appliances serve: isp-2 hears 10.64/16
        // over BGP, isp-1 too; for 10.1.1.1 (policy 10/8 of isp-1, BGP 10/8 of both) both.
        let d = f.rank(
            "10.64.1.1".parse().unwrap(),
            "t1",
            1000,
            &Thresholds { max: 4, ..T },
        );
        assert_eq!(d.ranked[0].appliance, "ix-1");
        assert_eq!(f.table_entries(), 2 + 2 + 1 + 1);
        assert!(f.table_bytes() > 0);
    }

    /// The steering order the table precomputes, recomputed the slow way from the inputs.
    fn reference(
        clusters: &[Cluster],
        apps: &[Appliance],
        bgp: &[BgpRoutes],
        ip: IpAddr,
    ) -> (Option<Prefix>, Vec<String>) {
        let mut entries: Vec<(Prefix, usize, (u32, u32))> = Vec::new();
        for (i, a) in apps.iter().enumerate() {
            entries.extend(a.prefixes.iter().map(|p| (*p, i, (0, 0))));
        }
        for s in bgp {
            for &i in s.appliances.iter().filter(|&&i| i < apps.len()) {
                entries.extend(s.routes.iter().map(|&(p, l, m)| (p, i, (l, m))));
            }
        }
        let by_id = |id: &str| clusters.iter().rev().find(|c| c.id == id);
        let best = entries
            .iter()
            .filter(|(p, _, _)| p.contains(ip))
            .map(|(p, _, _)| *p)
            .max_by_key(|p| p.len());
        let mut out: Vec<String> = Vec::new();
        if let Some(bp) = best {
            let mut rank: HashMap<&str, (u32, u32)> = HashMap::new();
            for (p, i, r) in &entries {
                if *p == bp && by_id(&apps[*i].cluster).is_some() {
                    let e = rank.entry(apps[*i].cluster.as_str()).or_insert(*r);
                    *e = (*e).min(*r);
                }
            }
            let mut local: Vec<((u32, u32), ClusterKind, &str)> = rank
                .into_iter()
                .map(|(c, r)| (r, by_id(c).unwrap().kind, c))
                .collect();
            local.sort();
            out = local.into_iter().map(|(_, _, c)| c.to_owned()).collect();
            let mut i = 0;
            while i < out.len() {
                for f in &by_id(&out[i]).unwrap().fallbacks {
                    if by_id(f).is_some() && !out.contains(f) {
                        out.push(f.clone());
                    }
                }
                i += 1;
            }
        }
        let mut origins: Vec<&str> = clusters
            .iter()
            .filter(|c| by_id(&c.id).unwrap().kind == ClusterKind::Origin)
            .map(|c| c.id.as_str())
            .collect();
        origins.sort();
        origins.dedup();
        for o in origins {
            if !out.iter().any(|c| c == o) {
                out.push(o.to_owned());
            }
        }
        (best, out)
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

        /// The precomputed table agrees with the ranking recomputed from its inputs for every
        /// client: longest prefix, then per cluster the best (path, MED) of its announcing
        /// appliances (policy as 0, 0), then kind, then id; fallbacks; origins.
        #[test]
        fn table_matches_reference(
            kinds in proptest::collection::vec((0u8..3, proptest::collection::vec(0usize..8, 0..3)), 1..8),
            apps in proptest::collection::vec((0usize..9, proptest::collection::vec((0u32..4, 6u8..12), 0..3)), 0..12),
            sites in proptest::collection::vec((proptest::collection::vec(0usize..13, 0..4), proptest::collection::vec((0u32..4, 6u8..12, 0u32..4, 0u32..3), 0..6)), 0..5),
            probes in proptest::collection::vec(0u32..4, 1..20),
        ) {
            let kind = |k: u8| [ClusterKind::Embedded, ClusterKind::Exchange, ClusterKind::Origin][k as usize];
            let clusters: Vec<Cluster> = kinds.iter().enumerate().map(|(i, (k, fb))| Cluster {
                id: format!("c{i}"),
                kind: kind(*k),
                fallbacks: fb.iter().map(|f| format!("c{f}")).collect(),
            }).collect();
            let pfx = |a: u32, len: u8| Prefix::containing(IpAddr::V4((0x0a00_0000 | (a << 22)).into()), len).unwrap();
            let apps: Vec<Appliance> = apps.iter().enumerate().map(|(i, (c, ps))| {
                let prefixes: Vec<&str> = vec![];
                let mut a = appliance(&format!("a{i}"), &format!("c{c}"), &prefixes);
                a.prefixes = ps.iter().map(|&(x, l)| pfx(x, l)).collect();
                a
            }).collect();
            let bgp: Vec<BgpRoutes> = sites.iter().map(|(idx, rs)| BgpRoutes {
                appliances: idx.clone(),
                routes: rs.iter().map(|&(x, l, path, med)| (pfx(x, l), path, med)).collect(),
            }).collect();
            let f = Fleet::with_bgp(clusters.clone(), apps.clone(), &bgp);
            for x in probes {
                let ip = IpAddr::V4((0x0a00_0000 | (x << 22) | 0x1234).into());
                let (p, got) = f.candidate_clusters(ip);
                let got: Vec<String> = got.into_iter().map(str::to_owned).collect();
                prop_assert_eq!((p, got), reference(&clusters, &apps, &bgp, ip));
            }
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
