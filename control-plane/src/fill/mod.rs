//! Fill, the control-plane side: plans which titles each appliance holds and where it fetches.
//!
//! Everything here but [`edge`] (the database edge) and [`cache`] (recent plans) is pure: no
//! I/O, no clock (`now` is an argument), no randomness, so a simulator can replay days of a
//! fleet in milliseconds.
//!
//! # The pure API
//!
//! - [`plan_cluster`]`(&ClusterInput, &ClusterPlacement, &FillParams) -> ClusterPlan`: one
//!   cluster's placement from its appliances (id, capacity), the titles (id, bytes, popularity,
//!   urgency) and what is held now, given the previous placement. Deterministic.
//! - [`popularity`]: the estimator. A title's *views* = bytes streamed ÷ title size over a
//!   sliding window, from the sessions the control plane records (each session's tier bitrate ×
//!   the time its lease was live), blended with the imported [`forecast`] feed for the
//!   countries of the cluster's content region.
//! - [`sources::ordered_sources`]: for one appliance and one title, peers of its cluster holding
//!   the title, then the upstream (exchange) clusters among its fallbacks, then origin, each
//!   list in the rendezvous order steering uses.
//!
//! # Rules of [`plan_cluster`]
//!
//! 1. Titles are ranked: urgent first (new releases, recent content misses, recent low QoE on
//!    the cluster: [`qoe`]), then by popularity, then by id.
//! 2. A title gets `copies = clamp(ceil(demand / views_per_copy), 1, max)` where `max` is
//!    `max_copies` (0 = every appliance of the cluster) and `demand` is [`cluster_demand`]: the
//!    views per day the CLUSTER will carry, `popularity × demand_share ÷ window days` (the
//!    popularity is region-wide views over the popularity window; `demand_share` is the
//!    cluster's share of the region's recent traffic, [`popularity::cluster_shares`]). So a
//!    popular title gets several copies only in a cluster that carries enough of its views, and
//!    changing the window length does not change copy counts. A title that has copies keeps
//!    their number while that number lies between the counts for `demand / hysteresis` and
//!    `demand × hysteresis`. A title urgent for low QoE gets at least one copy more than its
//!    demand asks for (`copies(demand) + 1`, at most `max`).
//! 3. Each copy is a request; requests are served in order of their *effective popularity*:
//!    urgent first, then popularity × `hysteresis` for copies the cluster already holds or had
//!    placed (the first `held_count` copies of the title), popularity × 1 for new copies. So a
//!    newcomer displaces a held title only when it is more popular by the hysteresis factor
//!    (the swap cost), and plans change as few files as possible from one day to the next.
//! 4. A new copy goes to the first appliance in the title's rendezvous order
//!    ([`crate::steering::rendezvous_score`], the same hash steering ranks with) that does not
//!    have the title yet and still has room (`capacity × capacity_fraction`). For a fresh
//!    cluster, and whenever no appliance was full, this is exactly the top-`copies` of the
//!    rendezvous order, so steering's best local choice is the appliance that holds the title.
//!    A copy the cluster already has stays on the appliance that has it while that one has room
//!    (moving it would cost fill traffic for nothing); so after an appliance joins a cluster,
//!    titles already held elsewhere stay there, and steering finds them on the next holder of
//!    the rendezvous order (a content miss for the newcomer's share) until they are displaced.
//! 5. Every difference from the previous placement is a [`PlanChange`] with a reason; the
//!    database edge logs one line per change.
//!
//! Titles held in an older catalog version count as not held (they are re-added with the
//! reason "new catalog version"); steering does not use such copies either.
//!
//! # Simulator entry points
//!
//! A fleet simulator should call [`plan_cluster`] once per cluster per simulated day with the
//! previous day's [`ClusterPlan::placement`], [`popularity::views`] /
//! [`popularity::blend`] to turn its demand into popularity, [`popularity::cluster_shares`] for
//! each cluster's [`ClusterInput::demand_share`], and
//! [`crate::steering::Fleet::rank`] to steer each simulated request (with each appliance's
//! `titles` set to its placement once filled). These signatures are kept stable.

pub mod cache;
pub mod edge;
pub mod forecast;
pub mod popularity;
pub mod qoe;
pub mod sources;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::steering::rendezvous_score;

/// Tunables of the planner (the `[fill]` section of the configuration carries them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillParams {
    /// Views per day of the cluster's own demand one copy is expected to carry; more views,
    /// more copies (see [`cluster_demand`]).
    pub views_per_copy: f64,
    /// Most copies of one title in a cluster; 0 = every appliance.
    pub max_copies: usize,
    /// Swap cost: a held copy keeps its place unless a newcomer is this many times more
    /// popular (>= 1.0; 1.0 = no stickiness).
    pub hysteresis: f64,
    /// Share of each appliance's capacity the planner may fill (0 < f <= 1).
    pub capacity_fraction: f64,
    /// Length of the window titles' popularity was measured over, seconds (0 = one day):
    /// popularity is divided by its length in days before it is compared with
    /// `views_per_copy`.
    pub popularity_window_secs: u64,
}

impl Default for FillParams {
    fn default() -> Self {
        FillParams {
            views_per_copy: 50.0,
            max_copies: 0,
            hysteresis: 2.0,
            capacity_fraction: 0.95,
            popularity_window_secs: 86_400,
        }
    }
}

/// Why a title is urgent (fetched even outside the fill window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Imported recently: a new release.
    NewRelease,
    /// Steering recently had to send clients of this cluster's region elsewhere because the
    /// best local appliance lacked it.
    ContentMiss,
    /// Players of this title on this cluster's appliances recently had bad QoE (starvation, or
    /// measured throughput below the bitrate played): `bad` of `sessions` QoE reports (see
    /// [`qoe::low_qoe_titles`]). Besides ranking it with the urgent titles, the planner gives
    /// the title one copy more than its demand asks for (at most `max_copies`), so steering has
    /// another local holder to move those sessions to.
    LowQoe {
        /// Reports with bad QoE.
        bad: u32,
        /// Reports of the title from the cluster in the window.
        sessions: u32,
    },
}

impl Urgency {
    /// `new release`, `recent content miss` or `low QoE on this cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::NewRelease => "new release",
            Urgency::ContentMiss => "recent content miss",
            Urgency::LowQoe { .. } => "low QoE on this cluster",
        }
    }

    /// [`Urgency::as_str`] with the evidence, for plan reasons.
    pub fn describe(self) -> String {
        match self {
            Urgency::LowQoe { bad, sessions } => format!(
                "{}: {bad} of {sessions} recent sessions starved or played above their throughput; one extra copy",
                self.as_str()
            ),
            other => other.as_str().to_owned(),
        }
    }
}

/// One appliance of the cluster being planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceInput {
    /// Appliance id (its rendezvous key).
    pub id: String,
    /// Bytes of cache it can hold (sum of its working drives).
    pub capacity_bytes: u64,
}

/// One title that may be placed.
#[derive(Debug, Clone, PartialEq)]
pub struct TitleInput {
    /// Title id.
    pub id: String,
    /// Total bytes of its files.
    pub bytes: u64,
    /// Popularity: views per window (see [`popularity`]).
    pub popularity: f64,
    /// Set when it must be fetched now.
    pub urgent: Option<Urgency>,
}

/// What the planner plans from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterInput {
    /// Cluster id.
    pub cluster: String,
    /// Its appliances.
    pub appliances: Vec<ApplianceInput>,
    /// The titles.
    pub titles: Vec<TitleInput>,
    /// Appliance id → titles it holds in the current catalog version.
    pub held: BTreeMap<String, BTreeSet<String>>,
    /// Appliance id → titles it holds in an older catalog version.
    pub stale: BTreeMap<String, BTreeSet<String>>,
    /// Share of the titles' popularity (region-wide views) this cluster carries, 0..=1, from
    /// [`popularity::cluster_shares`]; `None` (or a negative or non-finite value) = all of it.
    /// Only copy counts use it; the ranking is the region's.
    pub demand_share: Option<f64>,
}

/// Which titles each appliance should hold: appliance id → title ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPlacement(pub BTreeMap<String, BTreeSet<String>>);

impl ClusterPlacement {
    /// From `(appliance, title)` pairs.
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, t) in pairs {
            m.entry(a).or_default().insert(t);
        }
        ClusterPlacement(m)
    }

    /// `(appliance, title)` pairs, sorted.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .flat_map(|(a, ts)| ts.iter().map(move |t| (a.clone(), t.clone())))
            .collect()
    }

    /// The titles of one appliance.
    pub fn titles_of(&self, appliance: &str) -> Option<&BTreeSet<String>> {
        self.0.get(appliance)
    }

    /// Whether `appliance` holds `title` in this placement.
    pub fn contains(&self, appliance: &str, title: &str) -> bool {
        self.0.get(appliance).is_some_and(|s| s.contains(title))
    }

    /// How many appliances hold `title`.
    pub fn copies(&self, title: &str) -> usize {
        self.0.values().filter(|s| s.contains(title)).count()
    }
}

/// Add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The appliance should fetch the title.
    Add,
    /// The appliance should drop the title.
    Remove,
}

impl Action {
    /// `add` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

/// One difference between the previous placement and the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChange {
    /// Title id.
    pub title: String,
    /// Appliance id.
    pub appliance: String,
    /// Add or remove.
    pub action: Action,
    /// Why, for logs and `outpost control-plane fill-plan`.
    pub reason: String,
}

/// The planner's view of one title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TitleDecision {
    /// 1-based rank in the cluster (urgent first, then popularity).
    pub rank: usize,
    /// Popularity used.
    pub popularity: f64,
    /// Copies wanted.
    pub copies_wanted: usize,
    /// Copies placed (fewer when the cluster is full).
    pub copies_placed: usize,
    /// Urgency, if any.
    pub urgent: Option<Urgency>,
    /// Title bytes.
    pub bytes: u64,
}

impl TitleDecision {
    /// The reason a copy of the title is where it is.
    pub fn reason(&self) -> String {
        let base = format!(
            "rank {}, popularity {:.2} views, {} of {} copies",
            self.rank, self.popularity, self.copies_placed, self.copies_wanted
        );
        match self.urgent {
            Some(u) => format!("urgent ({}); {base}", u.describe()),
            None => base,
        }
    }
}

/// The planner's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterPlan {
    /// Cluster id.
    pub cluster: String,
    /// The new placement.
    pub placement: ClusterPlacement,
    /// Every difference from the previous placement, adds then removes, each with a reason.
    pub changes: Vec<PlanChange>,
    /// Per title.
    pub titles: BTreeMap<String, TitleDecision>,
    /// Titles that got fewer copies than wanted (or none) for lack of room.
    pub short: Vec<String>,
}

impl ClusterPlan {
    /// The titles of one appliance, most important first (urgent, then popularity).
    pub fn ordered_titles(&self, appliance: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .placement
            .titles_of(appliance)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        v.sort_by_key(|t| self.titles.get(*t).map_or(usize::MAX, |d| d.rank));
        v
    }
}

/// The views per day a title of region-wide `popularity` (views over a window of
/// `window_secs`, 0 = one day) brings to a cluster carrying `share` of the region's demand
/// (`None`, negative or not finite: all of it; clamped to at most 1; 0, a cluster that served
/// nothing of the region's traffic yet, wants one copy of each title). Copy counts compare this
/// with `views_per_copy`.
pub fn cluster_demand(popularity: f64, share: Option<f64>, window_secs: u64) -> f64 {
    let share = match share {
        Some(s) if s.is_finite() && s >= 0.0 => s.min(1.0),
        _ => 1.0,
    };
    let days = if window_secs == 0 {
        1.0
    } else {
        window_secs as f64 / 86_400.0
    };
    sanitize(popularity) * share / days
}

fn cmp_f64_desc(a: f64, b: f64) -> std::cmp::Ordering {
    b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal)
}

fn sanitize(p: f64) -> f64 {
    if p.is_finite() && p > 0.0 {
        p
    } else {
        0.0
    }
}

/// Plans one cluster. Pure and deterministic; see the module documentation for the rules.
pub fn plan_cluster(
    input: &ClusterInput,
    previous: &ClusterPlacement,
    params: &FillParams,
) -> ClusterPlan {
    let n = input.appliances.len();
    let hysteresis = if params.hysteresis.is_finite() {
        params.hysteresis.max(1.0)
    } else {
        1.0
    };
    let fraction = if params.capacity_fraction.is_finite() {
        params.capacity_fraction.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let per_copy = if params.views_per_copy.is_finite() && params.views_per_copy > 0.0 {
        params.views_per_copy
    } else {
        f64::INFINITY
    };
    let max_copies = if params.max_copies == 0 {
        n
    } else {
        params.max_copies.min(n)
    };

    // 1. Rank titles (duplicates: the first wins).
    let mut seen = BTreeSet::new();
    let mut titles: Vec<&TitleInput> = input
        .titles
        .iter()
        .filter(|t| seen.insert(t.id.as_str()))
        .collect();
    titles.sort_by(|a, b| {
        b.urgent
            .is_some()
            .cmp(&a.urgent.is_some())
            .then_with(|| cmp_f64_desc(sanitize(a.popularity), sanitize(b.popularity)))
            .then_with(|| a.id.cmp(&b.id))
    });

    // Held now or placed before (current version only): the copies that carry the swap cost.
    let incumbent = |a: &str, t: &str| -> bool {
        previous.contains(a, t) || input.held.get(a).is_some_and(|s| s.contains(t))
    };

    // 2-3. Copy requests with their effective popularity.
    struct Req {
        title: usize,
        copy: usize,
        urgent: bool,
        incumbent: bool,
        effective: f64,
    }
    let mut reqs: Vec<Req> = Vec::new();
    let mut wanted: Vec<usize> = Vec::with_capacity(titles.len());
    for (ti, t) in titles.iter().enumerate() {
        let pop = sanitize(t.popularity);
        let demand = cluster_demand(pop, input.demand_share, params.popularity_window_secs);
        let held_count = input
            .appliances
            .iter()
            .filter(|a| incumbent(&a.id, &t.id))
            .count();
        let copies = |views: f64| -> usize {
            if max_copies == 0 {
                0
            } else {
                ((views / per_copy).ceil() as usize).clamp(1, max_copies)
            }
        };
        // The copy count has the same swap cost: it moves only when popularity leaves the
        // band [held / hysteresis, held * hysteresis] of the current count.
        let mut k = if held_count == 0 {
            copies(demand)
        } else {
            held_count.clamp(copies(demand / hysteresis), copies(demand * hysteresis))
        };
        // Low QoE: one copy more than the demand asks for, bounded by `max_copies` (and not
        // growing plan after plan while the QoE stays bad: it is relative to the demand).
        if matches!(t.urgent, Some(Urgency::LowQoe { .. })) && max_copies > 0 {
            k = k.max((copies(demand) + 1).min(max_copies));
        }
        wanted.push(k);
        for copy in 0..k {
            let boost = if copy < held_count { hysteresis } else { 1.0 };
            reqs.push(Req {
                title: ti,
                copy,
                urgent: t.urgent.is_some(),
                incumbent: copy < held_count,
                effective: pop * boost,
            });
        }
    }
    reqs.sort_by(|a, b| {
        b.urgent
            .cmp(&a.urgent)
            .then_with(|| cmp_f64_desc(a.effective, b.effective))
            .then_with(|| a.copy.cmp(&b.copy))
            .then_with(|| a.title.cmp(&b.title))
    });

    // 4. First fit in rendezvous order, on appliance indices.
    let mut room: Vec<u64> = input
        .appliances
        .iter()
        .map(|a| (a.capacity_bytes as f64 * fraction).floor() as u64)
        .collect();
    // Per title: its rendezvous order, and which appliances have it so far.
    let mut orders: HashMap<usize, (Vec<usize>, Vec<bool>)> = HashMap::new();
    let mut placement: BTreeMap<String, BTreeSet<String>> = input
        .appliances
        .iter()
        .map(|a| (a.id.clone(), BTreeSet::new()))
        .collect();
    let mut placed = vec![0usize; titles.len()];
    for r in &reqs {
        let t = titles[r.title];
        // Nothing can take it: skip the scan.
        if !room.iter().any(|&x| x >= t.bytes) {
            continue;
        }
        let (order, has) = orders.entry(r.title).or_insert_with(|| {
            let mut ids: Vec<(u64, usize)> = input
                .appliances
                .iter()
                .enumerate()
                .map(|(i, a)| (rendezvous_score(&t.id, &a.id), i))
                .collect();
            ids.sort_by(|a, b| {
                b.0.cmp(&a.0)
                    .then_with(|| input.appliances[a.1].id.cmp(&input.appliances[b.1].id))
            });
            (ids.into_iter().map(|(_, i)| i).collect(), vec![false; n])
        });
        let fits = |i: usize| !has[i] && room[i] >= t.bytes;
        // A copy the cluster already has stays where it is (no fill traffic to move it); a new
        // copy goes to the first appliance of the rendezvous order with room.
        let choice = if r.incumbent {
            order
                .iter()
                .copied()
                .find(|&i| fits(i) && incumbent(&input.appliances[i].id, &t.id))
                .or_else(|| order.iter().copied().find(|&i| fits(i)))
        } else {
            order.iter().copied().find(|&i| fits(i))
        };
        if let Some(i) = choice {
            room[i] -= t.bytes;
            has[i] = true;
            placement
                .entry(input.appliances[i].id.clone())
                .or_default()
                .insert(t.id.clone());
            placed[r.title] += 1;
        }
    }

    let mut decisions = BTreeMap::new();
    let mut short = Vec::new();
    for (ti, t) in titles.iter().enumerate() {
        if placed[ti] < wanted[ti] {
            short.push(t.id.clone());
        }
        decisions.insert(
            t.id.clone(),
            TitleDecision {
                rank: ti + 1,
                popularity: sanitize(t.popularity),
                copies_wanted: wanted[ti],
                copies_placed: placed[ti],
                urgent: t.urgent,
                bytes: t.bytes,
            },
        );
    }
    let placement = ClusterPlacement(placement);

    // 5. Changes against the previous placement.
    let mut changes = Vec::new();
    for (a, ts) in &placement.0 {
        for t in ts {
            if previous.contains(a, t) {
                continue;
            }
            let d = &decisions[t];
            let reason = if input.stale.get(a).is_some_and(|s| s.contains(t)) {
                format!("new catalog version; {}", d.reason())
            } else {
                d.reason()
            };
            changes.push(PlanChange {
                title: t.clone(),
                appliance: a.clone(),
                action: Action::Add,
                reason,
            });
        }
    }
    for (a, ts) in &previous.0 {
        for t in ts {
            if placement.contains(a, t) {
                continue;
            }
            let reason = if !placement.0.contains_key(a) {
                "the appliance is no longer planned in this cluster".to_owned()
            } else {
                match decisions.get(t) {
                    None => "no longer in the catalog".to_owned(),
                    Some(d) if d.copies_placed < d.copies_wanted => format!(
                        "displaced: no room for it here against more popular titles ({})",
                        d.reason()
                    ),
                    Some(d) => format!(
                        "not among the rendezvous top {} with room for it ({})",
                        d.copies_wanted,
                        d.reason()
                    ),
                }
            };
            changes.push(PlanChange {
                title: t.clone(),
                appliance: a.clone(),
                action: Action::Remove,
                reason,
            });
        }
    }
    ClusterPlan {
        cluster: input.cluster.clone(),
        placement,
        changes,
        titles: decisions,
        short,
    }
}

#[cfg(test)]
mod tests;
