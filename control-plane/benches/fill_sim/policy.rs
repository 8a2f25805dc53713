//! The placement policies compared, and the day loop that serves a [`Day`] under one of them.
//!
//! - [`Strategy::Planner`]: Outpost. At the start of each fill window, for every embedded cluster
//!   and for the exchange, the real [`control_plane::fill::plan_cluster`] runs on the input the
//!   control plane's database edge (`fill::edge::gather`) would build: popularity from the last
//!   day's sessions of the cluster's country through the real [`popularity::Usage::total`]
//!   (what the database sums) and [`popularity::views`], blended with the forecast feed by
//!   [`popularity::blend`]; the cluster's demand share (its share of the
//!   window's bytes, by [`popularity::cluster_shares`], which the edge calls too); new releases and titles with a content miss in
//!   the last `miss_urgent_secs` are urgent; the previous placement and what each appliance holds.
//!   Each appliance then fetches what it lacks in the plan's order, from the first source of the
//!   real [`ordered_sources`] (peer, exchange, origin), at the rate cap, inside the window. A
//!   title is steerable on an appliance only once all its bytes arrived.
//! - [`Strategy::Oracle`]: the same fill mechanics, but each cluster's placement is the day's
//!   demand in that cluster (country-wide for the exchange), most views first, one copy on the
//!   first appliance of the title's rendezvous order with room. Either the day's actual sessions
//!   (the brief's oracle: it even knows which tail titles the day's random draw picks), or the
//!   demand model's expected views (a perfect forecaster: the ceiling of any estimator).
//! - [`Strategy::Lru`]: pull-through caching, as Apache Traffic Control and nginx do. Steering is
//!   content-blind (every appliance "holds" every title, so the real ranking picks the
//!   rendezvous-top healthy appliance); the appliance serves hits from an LRU of the same usable
//!   capacity and fetches misses from its parent (the exchange appliance of the title's
//!   rendezvous order, itself an LRU), which fetches from origin. The cached object is one
//!   rendition of a title (what a pull-through cache keys on), counted at its full size once the
//!   first session touched it: generous to LRU (later sessions hit the parts nobody fetched yet).
//!
//! Steering is always the real [`Fleet::rank`], with each appliance's `titles` set to what it
//! holds. Its decisions are cached per (cluster, title) until the fleet changes (a fill completes
//! or an appliance goes down or comes back): the ranking is a pure function of the fleet.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use control_plane::config::FillConfig;
use control_plane::fill::popularity::{self, Usage};
use control_plane::fill::sources::ordered_sources;
use control_plane::fill::{
    plan_cluster, ApplianceInput, ClusterInput, ClusterPlacement, FillParams, TitleInput, Urgency,
};
use control_plane::steering::{
    self, rendezvous_score, AdminState, ClusterKind, Fleet, MissClass, Thresholds,
};
use protocol::fill::SourceTier;
use protocol::fleet::Health;

use crate::world::{title_index, Day, Rng, World, COUNTRY, EPOCH, RUNG_SHARE};

/// Fill rate cap per appliance (Open Connect's storage appliances: 1.2 Gb/s).
pub const FILL_RATE_BPS: u64 = 1_200_000_000;
/// The fill window: hours 0..12 of the simulated day (02:00-14:00).
pub const WINDOW_HOURS: usize = 12;
/// Bytes one appliance may fetch in one hour of the window.
pub const FILL_PER_HOUR: u64 = FILL_RATE_BPS / 8 * 3600;
/// Bytes one appliance may fetch in one window (1.2 Gb/s × 12 h = 6.48 TB).
pub const WINDOW_CAP: u64 = FILL_PER_HOUR * WINDOW_HOURS as u64;

/// Steering thresholds (every appliance heartbeats; load is not simulated).
const THRESHOLDS: Thresholds = Thresholds {
    offline_after_secs: 900,
    load_threshold: 0.9,
    max: 3,
};

/// How content gets onto appliances.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// Outpost's planner with this `[fill]` configuration.
    Planner {
        /// The `[fill]` settings.
        cfg: FillConfig,
        /// Popularity from the cluster's own sessions instead of its whole country's (what the
        /// control plane's edge does): a variant to measure what the estimator lacks.
        per_cluster: bool,
    },
    /// Perfect knowledge of the day's demand: the sessions themselves (`realized`), or only
    /// the demand model's expected views per cluster and title (a perfect forecaster, which
    /// cannot know which tail titles the day's random draw picks).
    Oracle {
        /// Sessions (true) or expected views (false).
        realized: bool,
    },
    /// Pull-through LRU caching.
    Lru {
        /// Cache objects are renditions (what a pull-through cache stores); `false` caches whole
        /// titles, as fill does, to show what the finer object buys LRU.
        per_rendition: bool,
    },
}

/// What a policy achieved over the measured days.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Days measured.
    pub days: u64,
    /// Sessions served.
    pub sessions: u64,
    /// Bytes served.
    pub bytes: u64,
    /// Bytes served from an embedded appliance's own storage.
    pub embedded: u64,
    /// Bytes that came from the exchange.
    pub exchange: u64,
    /// Bytes that came from origin.
    pub origin: u64,
    /// Sessions whose best local appliance was healthy but lacked the title (LRU: a miss of the
    /// appliance's cache).
    pub content_misses: u64,
    /// Sessions whose best local appliance was down.
    pub health_misses: u64,
    /// Bytes written into embedded appliances (fill, or LRU inserts).
    pub fill: u64,
    /// Of which inside the fill window.
    pub fill_in_window: u64,
    /// Of which fetched from the exchange or origin (not from a peer).
    pub fill_upstream: u64,
    /// Bytes the plans asked embedded appliances to fetch (fill stops at the window's end).
    pub fill_planned: u64,
    /// Bytes written into exchange appliances.
    pub exchange_fill: u64,
    /// Most bytes one embedded appliance fetched in one day.
    pub max_appliance_day_fill: u64,
    /// Bytes over the embedded clusters' upstream links (exchange + origin serving, and fill
    /// from upstream) per hour of the measured days.
    pub upstream_by_hour: Vec<u64>,
    /// The serving part of `upstream_by_hour`.
    pub serving_upstream_by_hour: Vec<u64>,
}

impl Stats {
    /// Share of bytes served from embedded appliances.
    pub fn offload(&self) -> f64 {
        self.embedded as f64 / self.bytes.max(1) as f64
    }
    /// Busiest hour of the upstream links, Gb/s: `(serving only, serving and fill)`.
    pub fn upstream_peak_gbps(&self) -> (f64, f64) {
        let peak = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 * 8.0 / 3600.0 / 1e9;
        (
            peak(&self.serving_upstream_by_hour),
            peak(&self.upstream_by_hour),
        )
    }
}

/// One title being fetched by one appliance.
#[derive(Debug, Clone, Copy)]
struct FillItem {
    title: u32,
    remaining: u64,
    upstream: bool,
}

/// Where a session's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Embedded,
    Exchange,
    Origin,
}

/// A steering decision, reduced to what the simulation needs.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    tier: Tier,
    appliance: usize,
    miss: Option<MissClass>,
    /// LRU only: the exchange appliance a miss is fetched from.
    parent: Option<usize>,
}

/// An LRU of objects with sizes, bounded in bytes.
#[derive(Debug, Default)]
struct Lru {
    capacity: u64,
    used: u64,
    tick: u64,
    entries: HashMap<u64, (u64, u64)>,
    order: BTreeMap<u64, u64>,
}

impl Lru {
    fn new(capacity: u64) -> Lru {
        Lru {
            capacity,
            ..Lru::default()
        }
    }
    /// Whether `key` is cached; a hit makes it the most recent.
    fn hit(&mut self, key: u64) -> bool {
        let Some(e) = self.entries.get_mut(&key) else {
            return false;
        };
        self.order.remove(&e.0);
        self.tick += 1;
        e.0 = self.tick;
        self.order.insert(self.tick, key);
        true
    }
    /// Caches `key`, evicting the least recently used objects to make room.
    fn insert(&mut self, key: u64, size: u64) {
        if size > self.capacity || self.entries.contains_key(&key) {
            return;
        }
        while self.used + size > self.capacity {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, s)) = self.entries.remove(&old) {
                self.used -= s;
            }
        }
        self.tick += 1;
        self.entries.insert(key, (self.tick, size));
        self.order.insert(self.tick, key);
        self.used += size;
    }
}

/// One policy's state across days.
#[derive(Debug)]
pub struct Policy {
    /// Row label.
    pub name: String,
    strategy: Strategy,
    /// Per appliance: complete titles it holds.
    held: Vec<HashSet<u32>>,
    /// Per cluster: the last placement (planned clusters only).
    placement: Vec<ClusterPlacement>,
    /// Per appliance: what it still has to fetch in this window, in order.
    queue: Vec<VecDeque<FillItem>>,
    /// Per appliance: bytes fetched today.
    day_fill: Vec<u64>,
    lru: Vec<Lru>,
    /// Titles with a content miss in the last `miss_urgent_secs` before the plan.
    recent_misses: HashSet<u32>,
    down: Vec<bool>,
    fleet: Option<(Fleet, u64)>,
    decisions: HashMap<(u16, u32), Outcome>,
    rng: Rng,
    /// Results.
    pub stats: Stats,
}

impl Policy {
    /// A policy with empty appliances.
    pub fn new(name: &str, strategy: Strategy, world: &World, seed: u64) -> Policy {
        let n = world.appliances.len();
        let usable = FillParams::default().capacity_fraction;
        Policy {
            name: name.to_owned(),
            strategy,
            held: vec![HashSet::new(); n],
            placement: vec![ClusterPlacement::default(); world.clusters.len()],
            queue: vec![VecDeque::new(); n],
            day_fill: vec![0; n],
            lru: world
                .appliances
                .iter()
                .map(|a| Lru::new((a.capacity as f64 * usable) as u64))
                .collect(),
            recent_misses: HashSet::new(),
            down: vec![false; n],
            fleet: None,
            decisions: HashMap::new(),
            rng: Rng::new(seed ^ 0xf111),
            stats: Stats::default(),
        }
    }

    /// Whether content is placed ahead of demand (planner, oracles) rather than pulled on a miss.
    pub fn is_proactive(&self) -> bool {
        self.proactive()
    }

    fn proactive(&self) -> bool {
        !matches!(self.strategy, Strategy::Lru { .. })
    }

    /// The clusters that get a plan: the embedded ones and the exchange.
    fn planned(world: &World) -> impl Iterator<Item = usize> {
        (0..world.embedded).chain(std::iter::once(world.exchange))
    }

    /// Runs one day: the plan at the window's start, then each hour's outages, fill and sessions.
    /// `history` holds the previous days, oldest first.
    pub fn run_day(&mut self, world: &World, day: &Day, history: &[Day]) {
        self.stats.days += 1;
        match self.strategy.clone() {
            Strategy::Planner { cfg, per_cluster } => {
                let plans = self.plan_with_planner(world, day, history, &cfg, per_cluster);
                self.apply(world, day, plans);
            }
            Strategy::Oracle { realized } => {
                let plans = self.plan_oracle(world, day, realized);
                self.apply(world, day, plans);
            }
            Strategy::Lru { .. } => {}
        }
        let miss_keep = match &self.strategy {
            Strategy::Planner { cfg, .. } => cfg.miss_urgent_secs as f64 / 3600.0,
            _ => 0.0,
        };
        for h in 0..24 {
            let now = day.unix(h);
            let mut dirty = self.fleet.is_none();
            for (a, down) in self.down.iter_mut().enumerate() {
                let d = day
                    .outages
                    .iter()
                    .any(|o| o.appliance == a && (o.from as usize..o.to as usize).contains(&h));
                dirty |= *down != d;
                *down = d;
            }
            let mut upstream = 0u64;
            let mut fill_upstream = 0u64;
            if h < WINDOW_HOURS && self.proactive() {
                let (changed, up) = self.fill_hour(world);
                dirty |= changed;
                fill_upstream = up;
            }
            if h == WINDOW_HOURS {
                self.queue.iter_mut().for_each(VecDeque::clear);
            }
            if dirty {
                let holdings = self.proactive().then_some(&self.held[..]);
                self.fleet = Some((build_fleet(world, holdings, &self.down, now), now));
                self.decisions.clear();
            }
            let (fleet, fleet_now) = self.fleet.as_ref().expect("fleet built above");
            for s in day.hour(h) {
                let o = *self
                    .decisions
                    .entry((s.cluster, s.title))
                    .or_insert_with(|| {
                        steer(
                            fleet,
                            world,
                            s.cluster as usize,
                            s.title,
                            *fleet_now,
                            &self.down,
                        )
                    });
                let st = &mut self.stats;
                st.sessions += 1;
                st.bytes += s.bytes;
                if o.miss == Some(MissClass::HealthMiss) {
                    st.health_misses += 1;
                }
                if let Strategy::Lru { per_rendition } = self.strategy {
                    let (key, share) = if per_rendition {
                        (
                            s.title as u64 * 4 + s.rung as u64,
                            RUNG_SHARE[s.rung as usize],
                        )
                    } else {
                        (s.title as u64 * 4, 1.0)
                    };
                    let size = (world.titles[s.title as usize].bytes as f64 * share) as u64;
                    let parent = match o.tier {
                        Tier::Embedded if self.lru[o.appliance].hit(key) => {
                            st.embedded += s.bytes;
                            continue;
                        }
                        Tier::Embedded => {
                            st.content_misses += 1;
                            st.fill += s.bytes;
                            st.fill_upstream += s.bytes;
                            if h < WINDOW_HOURS {
                                st.fill_in_window += s.bytes;
                            }
                            self.day_fill[o.appliance] += s.bytes;
                            self.lru[o.appliance].insert(key, size);
                            o.parent
                        }
                        Tier::Exchange => Some(o.appliance),
                        Tier::Origin => None,
                    };
                    upstream += s.bytes;
                    match parent {
                        Some(x) if self.lru[x].hit(key) => st.exchange += s.bytes,
                        Some(x) => {
                            st.origin += s.bytes;
                            st.exchange_fill += s.bytes;
                            self.lru[x].insert(key, size);
                        }
                        None => st.origin += s.bytes,
                    }
                    continue;
                }
                match o.tier {
                    Tier::Embedded => st.embedded += s.bytes,
                    Tier::Exchange => st.exchange += s.bytes,
                    Tier::Origin => st.origin += s.bytes,
                }
                if o.tier != Tier::Embedded {
                    upstream += s.bytes;
                }
                if o.miss == Some(MissClass::ContentMiss) {
                    st.content_misses += 1;
                    // The plan runs at 02:00 and sees the misses of the last `miss_urgent_secs`.
                    if h == 23 && self.rng.f64() < miss_keep {
                        self.recent_misses.insert(s.title);
                    }
                }
            }
            self.stats.serving_upstream_by_hour.push(upstream);
            self.stats.upstream_by_hour.push(upstream + fill_upstream);
        }
        for (a, f) in self.day_fill.iter_mut().enumerate() {
            if world.appliances[a].cluster < world.embedded {
                self.stats.max_appliance_day_fill = self.stats.max_appliance_day_fill.max(*f);
            }
            *f = 0;
        }
    }

    /// One hour of fill on every appliance that is up. Returns whether a title completed and the
    /// bytes the embedded clusters fetched from upstream.
    fn fill_hour(&mut self, world: &World) -> (bool, u64) {
        let mut changed = false;
        let mut upstream = 0;
        for a in 0..world.appliances.len() {
            if self.down[a] {
                continue;
            }
            let embedded = world.appliances[a].cluster < world.embedded;
            let mut budget = FILL_PER_HOUR;
            while budget > 0 {
                let Some(item) = self.queue[a].front_mut() else {
                    break;
                };
                let take = budget.min(item.remaining);
                budget -= take;
                item.remaining -= take;
                self.day_fill[a] += take;
                if embedded {
                    self.stats.fill += take;
                    self.stats.fill_in_window += take;
                    if item.upstream {
                        self.stats.fill_upstream += take;
                        upstream += take;
                    }
                } else {
                    self.stats.exchange_fill += take;
                }
                if item.remaining == 0 {
                    self.held[a].insert(item.title);
                    self.queue[a].pop_front();
                    changed = true;
                }
            }
        }
        (changed, upstream)
    }

    /// Outpost: the real planner on the input the control plane's edge would gather.
    fn plan_with_planner(
        &mut self,
        world: &World,
        day: &Day,
        history: &[Day],
        cfg: &FillConfig,
        per_cluster: bool,
    ) -> Vec<(usize, ClusterPlacement, Vec<Vec<u32>>)> {
        let now = day.unix(0);
        let countries = vec![COUNTRY.to_owned()];
        let window_start = now.saturating_sub(cfg.popularity_window_secs);
        // What the control plane records: every session of the country. One usage row per title
        // and day (per cluster too for the per-cluster variant), at the day's mean bitrate,
        // carries the same bytes as the sessions it sums; the window cuts rows pro rata.
        let mut per_day: HashMap<(usize, u32, u16), u64> = HashMap::new();
        // Bytes each embedded cluster served in the window, for its demand share (the edge
        // counts them by the serving cluster steering recorded; here by the client's cluster).
        let mut served: HashMap<String, f64> = HashMap::new();
        for (k, d) in history.iter().enumerate() {
            if d.unix(24) <= window_start {
                continue;
            }
            let part = (d.unix(24) - d.unix(0).max(window_start)) as f64 / 86_400.0;
            for s in &d.sessions {
                let c = if per_cluster { s.cluster } else { 0 };
                *per_day.entry((k, s.title, c)).or_default() += s.bytes;
                *served
                    .entry(world.clusters[s.cluster as usize].id.clone())
                    .or_default() += s.bytes as f64 * part;
            }
        }
        let region: Vec<String> = world.clusters[..world.embedded]
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let shares = popularity::cluster_shares(&served, &region);
        let slices = if per_cluster { world.embedded } else { 1 };
        let mut usage: Vec<Vec<Usage>> = vec![Vec::new(); slices];
        for ((k, t, c), bytes) in per_day {
            let start = history[k].unix(0);
            usage[c as usize].push(Usage {
                title: world.titles[t as usize].id.clone(),
                country: COUNTRY.to_owned(),
                bitrate_bps: bytes * 8 / 86_400,
                start,
                end: start + 86_400,
            });
        }
        let live: Vec<usize> = (0..world.titles.len())
            .filter(|&t| world.released(t, day.index))
            .collect();
        // Duration 0: the sessions are already cut to what was watched.
        let sizes: HashMap<String, u64> = live
            .iter()
            .map(|&t| (world.titles[t].id.clone(), world.titles[t].bytes))
            .collect();
        let observed: Vec<HashMap<String, f64>> = usage
            .iter()
            .map(|u| {
                let totals: Vec<_> = u
                    .iter()
                    .map(|s| s.total(0, None, false, window_start, now))
                    .collect();
                popularity::views(&totals, &sizes, &countries)
            })
            .collect();
        let forecast = popularity::forecast_views(
            day.forecast
                .iter()
                .map(|(t, v)| (COUNTRY, world.titles[*t as usize].id.as_str(), *v)),
            &countries,
        );
        let new_since = now.saturating_sub(cfg.new_release_secs);
        let subscribers: u64 = world.clusters[..world.embedded]
            .iter()
            .map(|c| c.subscribers)
            .sum();
        // The popularity of every live title seen from one slice (a cluster, or the country).
        let titles_for = |slice: Option<usize>| -> Vec<TitleInput> {
            let (observed, share) = match slice {
                Some(c) => (
                    &observed[c],
                    world.clusters[c].subscribers as f64 / subscribers as f64,
                ),
                None => (&observed[0], 1.0),
            };
            live.iter()
                .map(|&t| {
                    let title = &world.titles[t];
                    // Imported an hour before the window of its release day.
                    let imported_at =
                        (EPOCH as i64 + title.release_day * 86_400 - 3600).max(0) as u64;
                    TitleInput {
                        id: title.id.clone(),
                        bytes: title.bytes,
                        popularity: popularity::blend(
                            observed.get(&title.id).copied().unwrap_or(0.0),
                            forecast.get(&title.id).map(|f| f * share),
                            cfg.forecast_weight,
                        ),
                        urgent: if title.release_day >= 0 && imported_at >= new_since {
                            Some(Urgency::NewRelease)
                        } else if self.recent_misses.contains(&(t as u32)) {
                            Some(Urgency::ContentMiss)
                        } else {
                            None
                        },
                    }
                })
                .collect()
        };
        // Country-wide popularity, computed once when every cluster shares it.
        let mut shared = if per_cluster && world.embedded > 0 {
            Vec::new()
        } else {
            titles_for(None)
        };

        let mut plans = Vec::new();
        for c in Self::planned(world) {
            let cluster = &world.clusters[c];
            let input = ClusterInput {
                cluster: cluster.id.clone(),
                appliances: cluster
                    .appliances
                    .iter()
                    .map(|&a| ApplianceInput {
                        id: world.appliances[a].id.clone(),
                        capacity_bytes: world.appliances[a].capacity,
                    })
                    .collect(),
                titles: if per_cluster && c < world.embedded {
                    titles_for(Some(c))
                } else if shared.is_empty() {
                    titles_for(None)
                } else {
                    std::mem::take(&mut shared)
                },
                held: cluster
                    .appliances
                    .iter()
                    .map(|&a| {
                        let set: BTreeSet<String> = self.held[a]
                            .iter()
                            .map(|&t| world.titles[t as usize].id.clone())
                            .collect();
                        (world.appliances[a].id.clone(), set)
                    })
                    .collect(),
                stale: BTreeMap::new(),
                // Per-cluster popularity is the cluster's own demand already.
                demand_share: if per_cluster || c >= world.embedded {
                    None
                } else {
                    shares.get(&cluster.id).copied()
                },
            };
            let plan = plan_cluster(&input, &self.placement[c], &cfg.params());
            if !per_cluster {
                shared = input.titles;
            }
            let orders = cluster
                .appliances
                .iter()
                .map(|&a| {
                    plan.ordered_titles(&world.appliances[a].id)
                        .into_iter()
                        .filter_map(title_index)
                        .collect()
                })
                .collect();
            plans.push((c, plan.placement, orders));
        }
        self.recent_misses.clear();
        plans
    }

    /// The oracle: each cluster holds the day's most-viewed titles of that cluster.
    fn plan_oracle(
        &mut self,
        world: &World,
        day: &Day,
        realized: bool,
    ) -> Vec<(usize, ClusterPlacement, Vec<Vec<u32>>)> {
        // Views per cluster and title.
        let mut demand: Vec<HashMap<u32, f64>> = vec![HashMap::new(); world.clusters.len()];
        if realized {
            for s in &day.sessions {
                let v = s.bytes as f64 / world.titles[s.title as usize].bytes as f64;
                *demand[s.cluster as usize].entry(s.title).or_default() += v;
                *demand[world.exchange].entry(s.title).or_default() += v;
            }
        } else {
            for (c, views) in day.expected.iter().enumerate() {
                for (t, &v) in views.iter().enumerate() {
                    if v > 0.0 {
                        *demand[c].entry(t as u32).or_default() += v as f64;
                        *demand[world.exchange].entry(t as u32).or_default() += v as f64;
                    }
                }
            }
        }
        let usable = FillParams::default().capacity_fraction;
        let mut plans = Vec::new();
        for c in Self::planned(world) {
            let cluster = &world.clusters[c];
            let mut ranked: Vec<(u32, f64)> = demand[c].iter().map(|(&t, &v)| (t, v)).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut room: Vec<u64> = cluster
                .appliances
                .iter()
                .map(|&a| (world.appliances[a].capacity as f64 * usable) as u64)
                .collect();
            let mut orders: Vec<Vec<u32>> = vec![Vec::new(); cluster.appliances.len()];
            let mut pairs = Vec::new();
            for (t, _) in ranked {
                let title = &world.titles[t as usize];
                let mut by_hash: Vec<usize> = (0..cluster.appliances.len()).collect();
                by_hash.sort_by_key(|&k| {
                    std::cmp::Reverse(rendezvous_score(
                        &title.id,
                        &world.appliances[cluster.appliances[k]].id,
                    ))
                });
                if let Some(k) = by_hash.into_iter().find(|&k| room[k] >= title.bytes) {
                    room[k] -= title.bytes;
                    orders[k].push(t);
                    pairs.push((
                        world.appliances[cluster.appliances[k]].id.clone(),
                        title.id.clone(),
                    ));
                }
            }
            plans.push((c, ClusterPlacement::from_pairs(pairs), orders));
        }
        plans
    }

    /// Drops what left the plan, then queues what each appliance lacks, each from the first
    /// source of the real `ordered_sources`.
    fn apply(
        &mut self,
        world: &World,
        day: &Day,
        plans: Vec<(usize, ClusterPlacement, Vec<Vec<u32>>)>,
    ) {
        for (c, placement, _) in &plans {
            for &a in &world.clusters[*c].appliances {
                let keep: HashSet<u32> = placement
                    .titles_of(&world.appliances[a].id)
                    .map(|s| s.iter().filter_map(|t| title_index(t)).collect())
                    .unwrap_or_default();
                self.held[a].retain(|t| keep.contains(t));
            }
        }
        let now = day.unix(0);
        let fleet = build_fleet(world, Some(&self.held), &self.down, now);
        for (c, placement, orders) in plans {
            for (k, order) in orders.into_iter().enumerate() {
                let a = world.clusters[c].appliances[k];
                let id = &world.appliances[a].id;
                let embedded = c < world.embedded;
                self.queue[a] = order
                    .into_iter()
                    .filter(|t| !self.held[a].contains(t))
                    .map(|t| {
                        let title = &world.titles[t as usize];
                        if embedded {
                            self.stats.fill_planned += title.bytes;
                        }
                        let first =
                            ordered_sources(&fleet, id, &title.id, now, &THRESHOLDS, None, 2)
                                .first()
                                .map(|s| s.tier());
                        FillItem {
                            title: t,
                            remaining: title.bytes,
                            upstream: first != Some(SourceTier::Peer),
                        }
                    })
                    .collect();
            }
            self.placement[c] = placement;
        }
        self.fleet = None;
    }
}

/// The fleet as steering sees it: every appliance heartbeating at `now`, in health `error`
/// while down, holding `holdings[i]` (or every title when `holdings` is `None`); origin holds
/// everything.
fn build_fleet(world: &World, holdings: Option<&[HashSet<u32>]>, down: &[bool], now: u64) -> Fleet {
    let clusters = world
        .clusters
        .iter()
        .map(|c| steering::Cluster {
            id: c.id.clone(),
            kind: c.kind,
            fallbacks: if c.kind == ClusterKind::Embedded {
                vec![world.clusters[world.exchange].id.clone()]
            } else {
                Vec::new()
            },
        })
        .collect();
    let appliances = world
        .appliances
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let cluster = &world.clusters[a.cluster];
            let origin = cluster.kind == ClusterKind::Origin;
            steering::Appliance {
                id: a.id.clone(),
                cluster: cluster.id.clone(),
                address: format!("192.0.2.{}", i % 250 + 1),
                port: 80,
                admin_state: if origin {
                    AdminState::Online
                } else {
                    AdminState::Reported
                },
                health: Some(if down[i] { Health::Error } else { Health::Ok }),
                load: 0.0,
                last_heartbeat: Some(now),
                titles: match holdings {
                    Some(h) if !origin => Some(
                        h[i].iter()
                            .map(|&t| world.titles[t as usize].id.clone())
                            .collect(),
                    ),
                    _ => None,
                },
                prefixes: cluster.prefix.into_iter().collect(),
            }
        })
        .collect();
    Fleet::new(clusters, appliances)
}

/// Steers one client of `cluster` to `title` with the real ranking.
fn steer(
    fleet: &Fleet,
    world: &World,
    cluster: usize,
    title: u32,
    now: u64,
    down: &[bool],
) -> Outcome {
    let id = &world.titles[title as usize].id;
    let d = fleet.rank(world.clusters[cluster].client, id, now, &THRESHOLDS);
    let origin = world.clusters[world.origin].appliances[0];
    let appliance = d
        .ranked
        .first()
        .and_then(|c| world.appliance_index.get(&c.appliance).copied())
        .unwrap_or(origin);
    let c = world.appliances[appliance].cluster;
    let tier = if c < world.embedded {
        Tier::Embedded
    } else if c == world.exchange {
        Tier::Exchange
    } else {
        Tier::Origin
    };
    let parent = fleet
        .hrw_order(&world.clusters[world.exchange].id, id)
        .into_iter()
        .filter_map(|a| world.appliance_index.get(&a.id).copied())
        .find(|&a| !down[a]);
    Outcome {
        tier,
        appliance,
        miss: d.miss,
        parent,
    }
}
