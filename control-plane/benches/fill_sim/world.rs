//! The simulated country: catalog, clusters, appliances, and each day's demand.
//!
//! Everything here is policy-independent and drawn from one seeded PRNG, so every policy is run
//! against the very same sessions, releases, forecasts and outages. Nothing here knows how content
//! is placed.
//!
//! - **Catalog**: `--titles` titles of 2–8 GB each (the whole ladder), plus `NEW_PER_DAY` new
//!   releases per simulated day. Each title has a log-score; ranking titles by score gives a Zipf
//!   weight `rank^-ZIPF_S`. Every day each score takes a Gaussian step (`DRIFT`: the ranking
//!   drifts), new releases enter at a rank drawn in `1..=RELEASE_TOP_RANK` and fade by
//!   `RELEASE_FADE` per day for four weeks.
//! - **Regional taste**: each cluster multiplies each title's weight by a fixed log-normal factor
//!   (`REGIONAL_SIGMA`), so clusters of one country agree on the head and differ in the tail.
//! - **Sessions**: per cluster and hour, `subscribers × SESSIONS_PER_SUB × diurnal share`
//!   sessions; each picks a title by its cluster's weights, a rung of the ladder by the device
//!   mix, and watches a uniform 5–100% of it. A session's bytes are counted in its start hour.
//! - **Forecast feed**: for each title released today, the expected country-wide views of the day
//!   times a log-normal error (`FORECAST_SIGMA`): what the announced-release metadata gives.
//! - **Outages**: each embedded appliance fails (health `error`) on a given day with probability
//!   `OUTAGE_PROB`, for 1–8 hours.
//!
//! A simulated day runs from 02:00 to 02:00 local time, so hour 0 is the start of the fill window.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use control_plane::prefix::Prefix;
use control_plane::steering::ClusterKind;

/// 10^9 bytes.
pub const GB: u64 = 1_000_000_000;
/// 10^12 bytes.
pub const TB: u64 = 1_000 * GB;

/// New releases per simulated day.
pub const NEW_PER_DAY: usize = 10;
/// Zipf exponent of popularity by rank.
pub const ZIPF_S: f64 = 0.9;
/// Daily Gaussian step of every title's log-score (the rank perturbation).
pub const DRIFT: f64 = 0.08;
/// New releases enter at a rank drawn uniformly in `1..=RELEASE_TOP_RANK`.
pub const RELEASE_TOP_RANK: usize = 30;
/// Log-score a release loses per day during its first 28 days.
pub const RELEASE_FADE: f64 = 0.12;
/// Standard deviation of a cluster's log-normal taste factor per title.
pub const REGIONAL_SIGMA: f64 = 0.3;
/// Standard deviation of the forecast feed's log-normal error.
pub const FORECAST_SIGMA: f64 = 0.3;
/// Sessions per subscriber per day.
pub const SESSIONS_PER_SUB: f64 = 0.4;
/// Probability that an embedded appliance has an outage on a given day.
pub const OUTAGE_PROB: f64 = 0.03;
/// Share of a title's bytes each rung of the ladder takes (top, middle, low).
pub const RUNG_SHARE: [f64; 3] = [0.5, 0.3, 0.2];
/// Device mix: probability that a session plays each rung.
pub const RUNG_MIX: [f64; 3] = [0.55, 0.3, 0.15];
/// Relative demand per local clock hour (0 = 00:00-01:00): trough 02:00-10:00, peak 20:00-22:00.
pub const DIURNAL: [f64; 24] = [
    3.0, 2.0, 1.2, 0.8, 0.6, 0.6, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.4, 3.6, 3.8, 4.2, 5.0, 6.0,
    7.0, 8.0, 8.0, 6.5, 4.5,
];
/// The simulated day starts at this local clock hour (the fill window's start).
pub const DAY_START_HOUR: usize = 2;
/// Unix seconds of day 0, hour 0 (an arbitrary fixed instant).
pub const EPOCH: u64 = 1_800_000_000;
/// The country every cluster's content region is.
pub const COUNTRY: &str = "NL";

/// A small deterministic PRNG (SplitMix64): the whole simulation depends on the seed only.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// An index drawn by `weights` (which sum to about 1).
    pub fn pick(&mut self, weights: &[f64]) -> usize {
        let mut x = self.f64();
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// One title of the catalog.
#[derive(Debug, Clone)]
pub struct Title {
    /// Title id (`t000042`).
    pub id: String,
    /// Bytes of the whole ladder.
    pub bytes: u64,
    /// Day it becomes watchable (negative: in the catalog from the start).
    pub release_day: i64,
}

/// One appliance.
#[derive(Debug, Clone)]
pub struct Appliance {
    /// Appliance id.
    pub id: String,
    /// Index of its cluster in [`World::clusters`].
    pub cluster: usize,
    /// Cache bytes.
    pub capacity: u64,
}

/// One cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Cluster id.
    pub id: String,
    /// Embedded, exchange or origin.
    pub kind: ClusterKind,
    /// Indexes into [`World::appliances`].
    pub appliances: Vec<usize>,
    /// Subscribers behind it (embedded only).
    pub subscribers: u64,
    /// The prefix its appliances announce (embedded only).
    pub prefix: Option<Prefix>,
    /// A client address inside that prefix.
    pub client: IpAddr,
}

/// One playback session.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Embedded cluster of the client.
    pub cluster: u16,
    /// Rung of the ladder played.
    pub rung: u8,
    /// Title index.
    pub title: u32,
    /// Bytes streamed.
    pub bytes: u64,
}

/// An appliance in health `error` for hours `from..to` of a day.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// Appliance index.
    pub appliance: usize,
    /// First hour down.
    pub from: u8,
    /// First hour up again.
    pub to: u8,
}

/// Everything that happens on one simulated day, whatever the policy.
#[derive(Debug, Clone)]
pub struct Day {
    /// Day number (0 = first warm-up day).
    pub index: i64,
    /// Sessions, ordered by hour.
    pub sessions: Vec<Session>,
    /// `hour_start[h]..hour_start[h + 1]` are the sessions of hour `h`.
    pub hour_start: [usize; 25],
    /// The forecast feed: expected country-wide views today, per title released today.
    pub forecast: Vec<(u32, f64)>,
    /// Per embedded cluster and title: the views the demand model expects today (what a perfect
    /// forecaster could know; the sessions are one random draw of it).
    pub expected: Vec<Vec<f32>>,
    /// Outages.
    pub outages: Vec<Outage>,
}

impl Day {
    /// The sessions of hour `h`.
    pub fn hour(&self, h: usize) -> &[Session] {
        &self.sessions[self.hour_start[h]..self.hour_start[h + 1]]
    }

    /// Unix seconds at hour `h` of this day.
    pub fn unix(&self, h: usize) -> u64 {
        EPOCH + (self.index as u64 * 24 + h as u64) * 3600
    }
}

/// The country: fleet, catalog and the popularity state that drifts from day to day.
#[derive(Debug)]
pub struct World {
    /// Catalog (including titles released later).
    pub titles: Vec<Title>,
    /// Every appliance: embedded clusters' first, then exchange, then origin.
    pub appliances: Vec<Appliance>,
    /// Embedded clusters first, then the exchange, then origin.
    pub clusters: Vec<Cluster>,
    /// Number of embedded clusters (they are `clusters[..embedded]`).
    pub embedded: usize,
    /// Index of the exchange cluster.
    pub exchange: usize,
    /// Index of the origin cluster.
    pub origin: usize,
    /// Appliance id → index into [`World::appliances`].
    pub appliance_index: HashMap<String, usize>,
    score: Vec<f64>,
    regional: Vec<Vec<f32>>,
    next_day: i64,
    rng: Rng,
}

/// Title id of index `i`.
pub fn title_id(i: u32) -> String {
    format!("t{i:06}")
}

/// Index of title id `id` (the inverse of [`title_id`]).
pub fn title_index(id: &str) -> Option<u32> {
    id.strip_prefix('t')?.parse().ok()
}

impl World {
    /// Builds the country for `seed`: `titles` catalog titles and room for `days` of releases.
    pub fn new(seed: u64, titles: usize, days: usize) -> World {
        // Separate streams, so the fleet and the first days do not depend on `--days`.
        let mut rng = Rng::new(seed);
        let mut fleet_rng = Rng::new(seed ^ 0xf1ee_7000);
        let mut taste_rng = Rng::new(seed ^ 0x7a57_e000);
        let total = titles + NEW_PER_DAY * days;
        let mut catalog = Vec::with_capacity(total);
        let mut score = Vec::with_capacity(total);
        for i in 0..total {
            let release_day = if i < titles {
                -1
            } else {
                ((i - titles) / NEW_PER_DAY) as i64
            };
            catalog.push(Title {
                id: title_id(i as u32),
                bytes: rng.range(2 * GB, 8 * GB),
                release_day,
            });
            score.push(rng.normal());
        }

        let mut clusters = Vec::new();
        let mut appliances = Vec::new();
        for c in 0..20usize {
            let n = fleet_rng.range(2, 8) as usize;
            let capacity = [4 * TB, 6 * TB, 8 * TB][fleet_rng.range(0, 2) as usize];
            let ids: Vec<usize> = (0..n)
                .map(|k| {
                    appliances.push(Appliance {
                        id: format!("isp{c:02}-oca{k}"),
                        cluster: c,
                        capacity,
                    });
                    appliances.len() - 1
                })
                .collect();
            let net = Ipv4Addr::new(10, c as u8, 0, 0);
            clusters.push(Cluster {
                id: format!("isp{c:02}"),
                kind: ClusterKind::Embedded,
                appliances: ids,
                subscribers: n as u64 * fleet_rng.range(15_000, 25_000),
                prefix: Prefix::containing(IpAddr::V4(net), 16),
                client: IpAddr::V4(Ipv4Addr::new(10, c as u8, 1, 1)),
            });
        }
        let embedded = clusters.len();
        let mut push_cluster = |id: &str, kind, n: usize, capacity| {
            let ids = (0..n)
                .map(|k| {
                    appliances.push(Appliance {
                        id: format!("{id}-oca{k}"),
                        cluster: clusters.len(),
                        capacity,
                    });
                    appliances.len() - 1
                })
                .collect();
            clusters.push(Cluster {
                id: id.to_owned(),
                kind,
                appliances: ids,
                subscribers: 0,
                prefix: None,
                client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            });
            clusters.len() - 1
        };
        let exchange = push_cluster("ix", ClusterKind::Exchange, 4, 12 * TB);
        let origin = push_cluster("origin", ClusterKind::Origin, 2, u64::MAX);

        let mut regional: Vec<Vec<f32>> = vec![Vec::with_capacity(total); embedded];
        for _ in 0..total {
            for r in &mut regional {
                r.push((REGIONAL_SIGMA * taste_rng.normal()).exp() as f32);
            }
        }
        let rng = Rng::new(seed ^ 0xda11_e000);
        let appliance_index = appliances
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        World {
            titles: catalog,
            appliance_index,
            appliances,
            clusters,
            embedded,
            exchange,
            origin,
            score,
            regional,
            next_day: 0,
            rng,
        }
    }

    /// Whether title `t` is watchable on `day`.
    pub fn released(&self, t: usize, day: i64) -> bool {
        self.titles[t].release_day <= day
    }

    /// Draws the next day: drift, releases, sessions, forecast, outages.
    pub fn next_day(&mut self) -> Day {
        let day = self.next_day;
        self.next_day += 1;
        let rng = &mut self.rng;

        // Drift and fading of recent releases.
        if day > 0 {
            for (t, s) in self.score.iter_mut().enumerate() {
                let title = &self.titles[t];
                if title.release_day >= day {
                    continue;
                }
                *s += DRIFT * rng.normal();
                if title.release_day >= 0 && day - title.release_day <= 28 {
                    *s -= RELEASE_FADE;
                }
            }
        }
        // Rank the titles watchable before today; releases enter near the top.
        let mut live: Vec<usize> = (0..self.titles.len())
            .filter(|&t| self.titles[t].release_day < day)
            .collect();
        live.sort_by(|&a, &b| self.score[b].total_cmp(&self.score[a]));
        let released: Vec<u32> = (0..self.titles.len())
            .filter(|&t| self.titles[t].release_day == day)
            .map(|t| t as u32)
            .collect();
        for &t in &released {
            let r = rng.range(1, RELEASE_TOP_RANK as u64) as usize;
            self.score[t as usize] = self.score[live[r.min(live.len()) - 1]] + 1e-3;
        }
        live.extend(released.iter().map(|&t| t as usize));
        live.sort_by(|&a, &b| self.score[b].total_cmp(&self.score[a]));
        let mut weight = vec![0f64; self.titles.len()];
        for (rank, &t) in live.iter().enumerate() {
            weight[t] = ((rank + 1) as f64).powf(-ZIPF_S);
        }
        let total_weight: f64 = weight.iter().sum();

        // Sessions per cluster and hour, from each cluster's cumulative weights.
        let cdfs: Vec<Vec<f64>> = (0..self.embedded)
            .map(|c| {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = weight
                    .iter()
                    .zip(&self.regional[c])
                    .map(|(w, r)| {
                        acc += w * *r as f64;
                        acc
                    })
                    .collect();
                for x in &mut cdf {
                    *x /= acc;
                }
                cdf
            })
            .collect();
        let mean_played: f64 = RUNG_SHARE
            .iter()
            .zip(RUNG_MIX)
            .map(|(s, m)| s * m)
            .sum::<f64>()
            * 0.525;
        let expected_views = cdfs
            .iter()
            .enumerate()
            .map(|(c, cdf)| {
                let views = self.clusters[c].subscribers as f64 * SESSIONS_PER_SUB * mean_played;
                let mut prev = 0.0;
                cdf.iter()
                    .map(|&x| {
                        let p = x - prev;
                        prev = x;
                        (views * p) as f32
                    })
                    .collect()
            })
            .collect();
        let diurnal_sum: f64 = DIURNAL.iter().sum();
        let mut sessions = Vec::new();
        let mut hour_start = [0usize; 25];
        for h in 0..24 {
            hour_start[h] = sessions.len();
            let share = DIURNAL[(h + DAY_START_HOUR) % 24] / diurnal_sum;
            for (c, cdf) in cdfs.iter().enumerate() {
                let expected = self.clusters[c].subscribers as f64 * SESSIONS_PER_SUB * share;
                let n = expected.floor() as usize + usize::from(rng.f64() < expected.fract());
                for _ in 0..n {
                    let x = rng.f64();
                    let t = cdf.partition_point(|&v| v <= x).min(cdf.len() - 1);
                    let rung = rng.pick(&RUNG_MIX);
                    let watched = 0.05 + 0.95 * rng.f64();
                    let bytes = (self.titles[t].bytes as f64 * RUNG_SHARE[rung] * watched) as u64;
                    sessions.push(Session {
                        cluster: c as u16,
                        rung: rung as u8,
                        title: t as u32,
                        bytes,
                    });
                }
            }
        }
        hour_start[24] = sessions.len();

        // Forecast: expected views today (sessions × mean share of the title played), with error.
        let subscribers: u64 = self.clusters[..self.embedded]
            .iter()
            .map(|c| c.subscribers)
            .sum();
        let forecast = released
            .iter()
            .map(|&t| {
                let expected = subscribers as f64 * SESSIONS_PER_SUB * weight[t as usize]
                    / total_weight
                    * mean_played;
                (t, expected * (FORECAST_SIGMA * rng.normal()).exp())
            })
            .collect();

        let mut outages = Vec::new();
        for c in &self.clusters[..self.embedded] {
            for &a in &c.appliances {
                if rng.f64() < OUTAGE_PROB {
                    let from = rng.range(0, 23) as u8;
                    let to = (from as u64 + rng.range(1, 8)).min(24) as u8;
                    outages.push(Outage {
                        appliance: a,
                        from,
                        to,
                    });
                }
            }
        }

        Day {
            index: day,
            sessions,
            hour_start,
            forecast,
            expected: expected_views,
            outages,
        }
    }
}
