//! Low QoE as a fill signal (pure): which titles of a cluster recently played badly there.
//!
//! Content misses say a title is missing from a cluster; QoE reports say the copies it has do
//! not serve it well (the appliances holding it are overloaded or slow), which one more copy
//! helps with: steering already moves a session off an appliance that gave it bad QoE
//! ([`crate::routes::qoe::demote_bad`]) and needs another local holder to move it to.
//!
//! A report is *bad* by the steering rule ([`crate::routes::qoe::BadQoe`]): the player starved
//! (CMCD `bs`) or its measured throughput (`mtp`) was below the bitrate it played (`br`). A
//! title is *low QoE* on a cluster when, among the reports of the cluster's appliances received
//! in the last `qoe_urgent_secs`, at least `qoe_min_sessions` are of the title and at least
//! `qoe_bad_share` of them are bad. The signal is bounded: at most `qoe_max_titles` titles per
//! cluster (the worst shares first), each given one copy more than its demand asks for (never
//! more than `max_copies`), and it lapses as soon as the window holds no such reports.

use std::collections::BTreeMap;

use protocol::qoe::SessionQoe;

use super::Urgency;

/// The thresholds of the low-QoE signal (the `[fill]` settings `qoe_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QoeSignal {
    /// Fewest reports of a title before its QoE counts (>= 1).
    pub min_sessions: u32,
    /// Share of bad reports that makes a title urgent, `(0, 1]`.
    pub bad_share: f64,
    /// Most titles of one cluster urgent for low QoE at once.
    pub max_titles: usize,
}

/// Whether one report is bad (starvation, or throughput below the bitrate played).
pub fn is_bad(q: &SessionQoe) -> bool {
    crate::routes::qoe::bad(q).is_some()
}

/// The titles urgent for low QoE among `reports` (one cluster's, inside the window), with
/// their [`Urgency::LowQoe`]: reports without a title are ignored; the worst shares first
/// (then more bad reports, then title id) up to `max_titles`.
pub fn low_qoe_titles<'a>(
    reports: impl IntoIterator<Item = &'a SessionQoe>,
    signal: &QoeSignal,
) -> BTreeMap<String, Urgency> {
    let mut per: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for q in reports {
        let Some(t) = q.title.as_deref() else {
            continue;
        };
        let e = per.entry(t).or_default();
        e.1 = e.1.saturating_add(1);
        if is_bad(q) {
            e.0 = e.0.saturating_add(1);
        }
    }
    let min = signal.min_sessions.max(1);
    let share = if signal.bad_share.is_finite() {
        signal.bad_share.clamp(f64::MIN_POSITIVE, 1.0)
    } else {
        1.0
    };
    let mut hits: Vec<(&str, u32, u32)> = per
        .into_iter()
        .filter(|(_, (bad, n))| *n >= min && *bad > 0 && f64::from(*bad) >= share * f64::from(*n))
        .map(|(t, (bad, n))| (t, bad, n))
        .collect();
    hits.sort_by(|a, b| {
        // bad_a / n_a > bad_b / n_b  <=>  bad_a * n_b > bad_b * n_a
        (u64::from(b.1) * u64::from(a.2))
            .cmp(&(u64::from(a.1) * u64::from(b.2)))
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| a.0.cmp(b.0))
    });
    hits.into_iter()
        .take(signal.max_titles)
        .map(|(t, bad, sessions)| (t.to_owned(), Urgency::LowQoe { bad, sessions }))
        .collect()
}
