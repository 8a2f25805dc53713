//! The popularity estimator (pure).
//!
//! Popularity is Open Connect's *views*: bytes streamed ÷ the title's size, over a sliding
//! window (the `[fill] popularity_window_secs` setting, a day by default).
//!
//! **Bytes streamed** are estimated from what the control plane records for every session: the
//! session's bitrate (the highest video rendition its tier allowed, by average bandwidth, plus
//! the highest audio rendition) × the seconds its lease was live inside the window (from the
//! start to the end, or to the lease expiry when the player stopped sending heartbeats), capped
//! at the title's duration. Each session start stores its bit rate, the title's duration and the
//! cluster it was steered to; the database sums the window per (title, country, serving cluster)
//! ([`crate::db::Repository::usage_totals`], the same formula as [`Usage::total`]), so a plan
//! holds one row per group, not one per session. It overestimates players that sat on a lower
//! rung, and it counts paused players whose heartbeats kept the lease; appliances' byte counters are per appliance,
//! not per title, so they cannot refine it.
//!
//! **Blending with the forecast feed**: when the feed lists the title for the cluster's
//! countries, `popularity = observed + forecast_weight × (forecast − observed)`; otherwise the
//! observed value alone. Forecast views are expected views per window, like observed ones.
//!
//! **Each cluster's share** of its region's demand ([`cluster_shares`]) scales the region's
//! views to the cluster's own when the planner counts copies: the edge weighs clusters by the
//! bytes their appliances served in the window (the first choice steering recorded per session).

use std::collections::{HashMap, HashSet};

use protocol::catalog::{CatalogEntry, TrackKind};

use crate::db::UsageTotal;

/// One session as the estimator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// Title.
    pub title: String,
    /// Client country.
    pub country: String,
    /// Bits per second streamed.
    pub bitrate_bps: u64,
    /// Started, Unix seconds.
    pub start: u64,
    /// Ended (or lease expiry), Unix seconds.
    pub end: u64,
}

/// The bitrate of a session that may fetch `renditions` of `entry`: the highest video rendition
/// plus the highest audio rendition, by average bandwidth (peak when the average is unknown).
pub fn session_bitrate(entry: &CatalogEntry, renditions: &[String]) -> u64 {
    let allowed: HashSet<&str> = renditions.iter().map(String::as_str).collect();
    let mut video = 0u64;
    let mut audio = 0u64;
    for r in entry
        .renditions
        .iter()
        .filter(|r| allowed.contains(r.id.as_str()))
    {
        let bw = if r.average_bandwidth > 0 {
            r.average_bandwidth
        } else {
            r.bandwidth
        };
        match r.kind {
            // Trick play renditions are fetched only while seeking, at a fraction of the rate.
            TrackKind::Video if r.is_trick() => {}
            TrackKind::Video => video = video.max(bw),
            TrackKind::Audio => audio = audio.max(bw),
            // Subtitles: a few hundred bit/s, not a session's bit rate.
            TrackKind::Text | TrackKind::Image => {}
        }
    }
    video.saturating_add(audio)
}

impl Usage {
    /// This session as the database sums the sessions stored with their bit rate
    /// ([`crate::db::Repository::usage_totals`], whose SQL computes the same): the bytes it
    /// streamed inside `(window_start, now]`, capped at the title's `duration` seconds (0: no
    /// cap) for popularity and uncapped for the serving cluster's share.
    pub fn total(
        &self,
        duration: u64,
        served_cluster: Option<String>,
        missed: bool,
        window_start: u64,
        now: u64,
    ) -> UsageTotal {
        let secs = self
            .end
            .min(now)
            .saturating_sub(self.start.max(window_start));
        let capped = if duration > 0 {
            secs.min(duration)
        } else {
            secs
        };
        let bytes_per_sec = self.bitrate_bps as f64 / 8.0;
        UsageTotal {
            title: self.title.clone(),
            country: self.country.clone(),
            served_cluster,
            streamed_bytes: bytes_per_sec * capped as f64,
            served_bytes: bytes_per_sec * secs as f64,
            missed,
        }
    }
}

/// Observed views per title: the streamed bytes of `totals` from `countries` (empty = every
/// country) ÷ the title's size in `bytes`; totals of unknown or empty titles, and totals that
/// streamed nothing inside the window, are ignored.
pub fn views(
    totals: &[UsageTotal],
    bytes: &HashMap<String, u64>,
    countries: &[String],
) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for t in totals {
        if !countries.is_empty() && !countries.iter().any(|c| c == &t.country) {
            continue;
        }
        match bytes.get(&t.title) {
            Some(&size) if size > 0 && t.streamed_bytes > 0.0 => {
                *out.entry(t.title.clone()).or_default() += t.streamed_bytes / size as f64;
            }
            _ => {}
        }
    }
    out
}

/// Forecast views per title for `countries` (empty = every country): the sum over those
/// countries. `rows` are `(country, title, views)`.
pub fn forecast_views<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str, f64)>,
    countries: &[String],
) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for (c, t, v) in rows {
        if countries.is_empty() || countries.iter().any(|x| x == c) {
            *out.entry(t.to_owned()).or_default() += v.max(0.0);
        }
    }
    out
}

/// Blends observed and forecast views (see the module documentation). `weight` is clamped to
/// `0..=1`.
pub fn blend(observed: f64, forecast: Option<f64>, weight: f64) -> f64 {
    let w = if weight.is_finite() {
        weight.clamp(0.0, 1.0)
    } else {
        0.0
    };
    match forecast {
        Some(f) => observed + w * (f - observed),
        None => observed,
    }
}

/// Each cluster's share of its content region's demand, for [`super::ClusterInput::demand_share`]:
/// `weights` are the bytes (or sessions) each cluster served over the popularity window,
/// `clusters` the region's clusters that share it (clusters absent from `weights` weigh 0).
/// When the region's total is zero (no traffic recorded yet) every cluster gets
/// `1 / clusters.len()`. Shares of the listed clusters sum to 1; weights of unlisted clusters are
/// ignored; negative or non-finite weights count as 0.
pub fn cluster_shares(weights: &HashMap<String, f64>, clusters: &[String]) -> HashMap<String, f64> {
    let w = |c: &String| {
        weights
            .get(c)
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(0.0)
    };
    let mut unique: Vec<&String> = clusters.iter().collect();
    unique.sort();
    unique.dedup();
    let total: f64 = unique.iter().map(|c| w(c)).sum();
    unique
        .into_iter()
        .map(|c| {
            let share = if total > 0.0 {
                w(c) / total
            } else {
                1.0 / clusters.len().max(1) as f64
            };
            (c.clone(), share)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Views of sessions of titles `(bytes, duration seconds)`, summed as the edge sums them.
    fn views_of(
        usage: &[Usage],
        titles: &HashMap<String, (u64, u64)>,
        countries: &[String],
        window_start: u64,
        now: u64,
    ) -> HashMap<String, f64> {
        let totals: Vec<UsageTotal> = usage
            .iter()
            .map(|u| {
                let duration = titles.get(&u.title).map_or(0, |t| t.1);
                u.total(duration, None, false, window_start, now)
            })
            .collect();
        let bytes = titles.iter().map(|(t, v)| (t.clone(), v.0)).collect();
        views(&totals, &bytes, countries)
    }

    #[test]
    fn views_are_bytes_streamed_over_size_inside_the_window() {
        let titles: HashMap<String, (u64, u64)> = [
            ("t".to_owned(), (1_000_000, 100)),
            ("z".to_owned(), (0, 10)),
        ]
        .into_iter()
        .collect();
        // 800 kb/s = 100 kB/s; 50 s inside the window = 5 MB = 5 views of a 1 MB title.
        let u = |c: &str, start, end| Usage {
            title: "t".into(),
            country: c.into(),
            bitrate_bps: 800_000,
            start,
            end,
        };
        let v = views_of(&[u("NZ", 950, 1100)], &titles, &[], 1000, 1050);
        assert_eq!(v["t"], 5.0);
        // Capped at the title's duration (100 s = 10 views), filtered by country.
        let v = views_of(
            &[u("NZ", 0, 10_000), u("AU", 0, 10_000)],
            &titles,
            &["NZ".into()],
            0,
            10_000,
        );
        assert_eq!(v["t"], 10.0);
        // The serving cluster's bytes are not capped: 10 000 s at 100 kB/s.
        let t = u("NZ", 0, 10_000).total(100, Some("isp".into()), true, 0, 10_000);
        assert_eq!((t.streamed_bytes, t.served_bytes), (10e6, 1e9));
        assert_eq!((t.served_cluster.as_deref(), t.missed), (Some("isp"), true));
        // Outside the window, unknown or empty titles: nothing.
        let mut z = u("NZ", 0, 10);
        z.title = "z".into();
        let v = views_of(&[u("NZ", 0, 10), z], &titles, &[], 100, 200);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn forecast_sums_countries_and_blends() {
        let rows = [("NZ", "a", 10.0), ("AU", "a", 5.0), ("AU", "b", 3.0)];
        let all = forecast_views(rows, &[]);
        assert_eq!(all["a"], 15.0);
        let nz = forecast_views(rows, &["NZ".into()]);
        assert_eq!(nz.get("b"), None);
        assert_eq!(blend(10.0, Some(20.0), 0.5), 15.0);
        assert_eq!(blend(10.0, None, 0.5), 10.0);
        assert_eq!(blend(10.0, Some(20.0), 7.0), 20.0);
    }

    #[test]
    fn cluster_shares_follow_traffic_and_fall_back_to_equal_shares() {
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let w: HashMap<String, f64> = [
            ("a".to_owned(), 300.0),
            ("b".to_owned(), 100.0),
            ("x".to_owned(), 1e9),
            ("c".to_owned(), f64::NAN),
        ]
        .into_iter()
        .collect();
        let s = cluster_shares(&w, &names);
        assert_eq!(s.len(), 4);
        assert_eq!(s["a"], 0.75);
        assert_eq!(s["b"], 0.25);
        assert_eq!(s["c"], 0.0);
        assert_eq!(s["d"], 0.0);
        assert!(!s.contains_key("x"));
        // No traffic yet: 1 / number of clusters.
        let s = cluster_shares(&HashMap::new(), &names);
        assert!(s.values().all(|&v| v == 0.25), "{s:?}");
    }
}
