//! `GET /v1/qoe`: the per-session quality of experience appliances report with their
//! heartbeats (folded from their players' CMCD), with per-cluster and per-appliance aggregates:
//! sessions, startup p50/p95, rebuffer ratio, average bitrate, the throughput players measured
//! and the rate the appliances sent at. The heartbeat handler stores the
//! reports (`record`).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ErrorBody, Query};
use crate::db::QoeRow;
use crate::error::ApiError;
use crate::state::AppState;

/// Default look-back of `GET /v1/qoe`, seconds.
pub const DEFAULT_WINDOW_SECS: u64 = 3600;
/// Most sessions one answer lists.
pub const MAX_LIMIT: i64 = 5000;

/// Stores the QoE part of an accepted heartbeat and counts it.
pub(crate) async fn record(
    st: &AppState,
    appliance: &str,
    sessions: &[protocol::qoe::SessionQoe],
    now: u64,
) -> Result<(), ApiError> {
    if sessions.is_empty() {
        return Ok(());
    }
    st.repo.put_qoe(appliance, sessions, now as i64).await?;
    let starved = sessions.iter().filter(|s| s.starved()).count() as u64;
    st.metrics.record_qoe(sessions.len() as u64, starved);
    Ok(())
}

/// Filters of `GET /v1/qoe`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QoeQuery {
    /// Only reports received at or after this Unix time, seconds (default: the last hour).
    #[param(minimum = 0)]
    since: Option<u64>,
    /// Only this cluster.
    cluster: Option<String>,
    /// Most sessions listed (1 to 5000, default 1000); the aggregates cover the same rows.
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<i64>,
}

/// Aggregates over a group of session reports (a cluster or an appliance).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QoeGroup {
    /// The cluster or appliance id.
    pub id: String,
    /// Session reports in the group.
    pub sessions: u64,
    /// Reports with at least one starvation event.
    pub starved_sessions: u64,
    /// `starved_sessions / sessions`: the share of sessions that rebuffered.
    pub rebuffer_ratio: f64,
    /// Median startup time, ms (nearest rank), over sessions that reported one.
    pub startup_p50_ms: Option<u64>,
    /// 95th percentile startup time, ms (nearest rank).
    pub startup_p95_ms: Option<u64>,
    /// Average encoded bitrate weighted by media time, kbps.
    pub avg_bitrate_kbps: Option<u64>,
    /// The throughput players measured (CMCD `mtp`): the sessions' averages weighted by their
    /// requests, kbps, over sessions that reported one.
    pub avg_throughput_kbps: Option<u64>,
    /// The rate the appliances sent responses of at least 64 KiB at (their bytes over their send
    /// time, summed over the sessions), kbps. Players measuring far less than this are limited
    /// past the appliance (the network); both low, by the appliance or its client's link.
    pub served_kbps: Option<u64>,
}

/// The answer of `GET /v1/qoe`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QoeView {
    /// Control-plane time, Unix seconds.
    pub now: u64,
    /// The reports listed, most recent first.
    pub sessions: Vec<QoeRow>,
    /// Aggregates per cluster.
    pub clusters: Vec<QoeGroup>,
    /// Aggregates per appliance.
    pub appliances: Vec<QoeGroup>,
}

fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Groups `rows` by `key` (in key order) and aggregates each group.
pub fn aggregate(rows: &[QoeRow], key: impl Fn(&QoeRow) -> &str) -> Vec<QoeGroup> {
    let mut groups: std::collections::BTreeMap<&str, Vec<&QoeRow>> = Default::default();
    for r in rows {
        groups.entry(key(r)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(id, rs)| {
            let sessions = rs.len() as u64;
            let starved = rs.iter().filter(|r| r.session.starved()).count() as u64;
            let mut startups: Vec<u64> = rs.iter().filter_map(|r| r.session.startup_ms).collect();
            startups.sort_unstable();
            let (mut weighted, mut media) = (0u128, 0u128);
            let (mut mtp_weighted, mut mtp_requests) = (0u128, 0u128);
            let (mut timed_bytes, mut timed_us) = (0u128, 0u128);
            for r in &rs {
                let q = &r.session;
                if let Some(br) = q.avg_bitrate_kbps {
                    weighted += u128::from(br) * u128::from(q.media_ms);
                    media += u128::from(q.media_ms);
                }
                if let Some(mtp) = q.avg_throughput_kbps {
                    let n = u128::from(q.requests.max(1));
                    mtp_weighted += u128::from(mtp) * n;
                    mtp_requests += n;
                }
                if let (Some(b), Some(us)) = (q.timed_bytes, q.timed_us) {
                    timed_bytes += u128::from(b);
                    timed_us += u128::from(us);
                }
            }
            QoeGroup {
                id: id.to_owned(),
                sessions,
                starved_sessions: starved,
                rebuffer_ratio: if sessions == 0 {
                    0.0
                } else {
                    starved as f64 / sessions as f64
                },
                startup_p50_ms: nearest_rank(&startups, 0.5),
                startup_p95_ms: nearest_rank(&startups, 0.95),
                avg_bitrate_kbps: (media > 0).then(|| (weighted / media) as u64),
                avg_throughput_kbps: (mtp_requests > 0)
                    .then(|| (mtp_weighted / mtp_requests) as u64),
                // bytes · 8 / (us / 10^6) / 1000
                served_kbps: (timed_us > 0).then(|| (timed_bytes * 8_000 / timed_us) as u64),
            }
        })
        .collect()
}

/// Session QoE reported by appliances, with per-cluster and per-appliance aggregates. Needs the
/// admin token unless `fleet_view_public` is set.
#[utoipa::path(get, path = "/v1/qoe", tag = "fleet",
    params(QoeQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Session reports and their aggregates", body = QoeView),
        (status = 400, description = "invalid_request: a query parameter is malformed or out of range", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "admin_disabled: no admin token is configured (and the view is not public)", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn view(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<QoeQuery>,
) -> Result<Response, ApiError> {
    if !st.config.fleet_view_public {
        super::admin::require_admin(&st, &headers)?;
    }
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 5000"));
    }
    let now = st.now();
    let since = q
        .since
        .unwrap_or_else(|| now.saturating_sub(DEFAULT_WINDOW_SECS));
    let since = i64::try_from(since).map_err(|_| ApiError::invalid("since", "too large"))?;
    let rows = st.repo.qoe(since, q.cluster.as_deref(), limit).await?;
    let view = QoeView {
        now,
        clusters: aggregate(&rows, |r| r.cluster_id.as_str()),
        appliances: aggregate(&rows, |r| r.appliance_id.as_str()),
        sessions: rows,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}

/// Why a session's QoE from an appliance counts as bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadQoe {
    /// The player reported buffer starvation (CMCD `bs`) on requests to it.
    Starvation,
    /// Its measured throughput (CMCD `mtp`) is below the bitrate being played (`br`).
    ThroughputBelowBitrate,
}

impl BadQoe {
    /// The reason as logged and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            BadQoe::Starvation => "starvation",
            BadQoe::ThroughputBelowBitrate => "throughput_below_bitrate",
        }
    }
}

/// Why `q` counts as bad QoE, if it does (steering and the fill planner's low-QoE signal).
pub(crate) fn bad(q: &protocol::qoe::SessionQoe) -> Option<BadQoe> {
    if q.starved() {
        return Some(BadQoe::Starvation);
    }
    match (q.avg_throughput_kbps, q.avg_bitrate_kbps) {
        (Some(mtp), Some(br)) if mtp < br => Some(BadQoe::ThroughputBelowBitrate),
        _ => None,
    }
}

/// Acting on QoE (issue 16, item 4): moves the appliances this session had bad QoE from behind
/// the others of its `priority`. Returns the new order and the moves with their reason.
///
/// When every appliance of the list played badly, moving elsewhere cannot help, and sending the
/// session back to an appliance it was already moved off would make it flap: a player's signals
/// just after a move still describe the appliance it left (CMCD `mtp` is its running throughput
/// estimate; `bs` flags a starvation that began before the switch), so the appliance it moved to
/// looks bad at first too. The session then keeps the appliance it went to last (the report
/// with the latest first request, ties to the earlier in `priority`), the others behind it in
/// their order.
pub fn demote_bad(
    priority: Vec<String>,
    reports: &[QoeRow],
) -> (Vec<String>, Vec<(String, BadQoe)>) {
    let report = |id: &str| reports.iter().find(|r| r.appliance_id == id);
    let verdict = |id: &str| report(id).and_then(|r| bad(&r.session));
    let (mut good, poor): (Vec<String>, Vec<String>) =
        priority.iter().cloned().partition(|a| verdict(a).is_none());
    if poor.is_empty() {
        return (priority, Vec::new());
    }
    // The first appliance of the new order: the first good one, else the one gone to last.
    let lead = match priority.iter().position(|a| verdict(a).is_none()) {
        Some(i) => i,
        None => {
            let first_ms = |a: &String| report(a).map_or(0, |r| r.session.first_ms);
            let mut lead = 0;
            for (i, a) in priority.iter().enumerate() {
                if first_ms(a) > first_ms(&priority[lead]) {
                    lead = i;
                }
            }
            lead
        }
    };
    // Only appliances that were ahead of the lead actually move.
    let moves = priority[..lead]
        .iter()
        .filter_map(|a| verdict(a).map(|why| (a.clone(), why)))
        .collect();
    if good.is_empty() {
        let mut order = priority.clone();
        let first = order.remove(lead);
        order.insert(0, first);
        return (order, moves);
    }
    good.extend(poor);
    (good, moves)
}

/// Which of `moves` ([`demote_bad`]'s, for `priority`) are new, and which appliances were let
/// back in front, given what `reports` remember (`moved_at`, set once per session and appliance).
/// A steering manifest is reloaded every few seconds and repeats the same demotion each time;
/// only the first response that demotes an appliance moves the session, so only that one is
/// logged and counted. An appliance of `priority` whose move is remembered but which no longer
/// moves (its QoE recovered) is forgotten, so demoting it again counts as a new move. This is the
/// only per-session steering state: one column of the session's report rows.
pub fn move_changes<'a>(
    priority: &[String],
    moves: &'a [(String, BadQoe)],
    reports: &'a [QoeRow],
) -> (Vec<&'a (String, BadQoe)>, Vec<&'a str>) {
    let moved = |id: &str| {
        reports
            .iter()
            .any(|r| r.appliance_id == id && r.moved_at.is_some())
    };
    let fresh = moves.iter().filter(|(a, _)| !moved(a)).collect();
    let lifted = reports
        .iter()
        .filter(|r| r.moved_at.is_some())
        .map(|r| r.appliance_id.as_str())
        .filter(|a| priority.iter().any(|p| p == a) && !moves.iter().any(|(m, _)| m == a))
        .collect();
    (fresh, lifted)
}

/// [`demote_bad`] for a live session's steering manifest: reads its reports, then logs and
/// counts each move once ([`move_changes`]; the conditional `mark_qoe_moved` makes concurrent
/// reloads, on any replica, count it once too). The bookkeeping never fails the manifest.
pub(crate) async fn steer(
    st: &AppState,
    session: &str,
    priority: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    if priority.len() < 2 {
        return Ok(priority);
    }
    let reports = st.repo.qoe_session(session).await?;
    if reports.is_empty() {
        return Ok(priority);
    }
    let (order, moves) = demote_bad(priority.clone(), &reports);
    let (fresh, lifted) = move_changes(&priority, &moves, &reports);
    let now = i64::try_from(st.now()).unwrap_or(i64::MAX);
    for (appliance, why) in fresh {
        match st.repo.mark_qoe_moved(session, appliance, now).await {
            Ok(true) => {
                tracing::info!(session, appliance = %appliance, reason = why.as_str(), "steering: session moved off an appliance for its QoE");
                st.metrics.record_qoe_move(why.as_str());
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(session, appliance = %appliance, error = %e, "steering: could not record a QoE move")
            }
        }
    }
    for appliance in lifted {
        if let Err(e) = st.repo.clear_qoe_moved(session, appliance).await {
            tracing::warn!(session, appliance, error = %e, "steering: could not forget a QoE move");
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::qoe::SessionQoe;

    fn row(
        app: &str,
        cluster: &str,
        startup: Option<u64>,
        starved: u64,
        br: u64,
        media: u64,
    ) -> QoeRow {
        QoeRow {
            appliance_id: app.into(),
            cluster_id: cluster.into(),
            reported_at: 1,
            moved_at: None,
            session: SessionQoe {
                sid: format!("{app}-{startup:?}"),
                startup_ms: startup,
                starvation_events: starved,
                avg_bitrate_kbps: Some(br),
                media_ms: media,
                ..SessionQoe::default()
            },
        }
    }

    #[test]
    fn bad_qoe_moves_the_appliance_behind_a_healthy_one() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut starved = row("a1", "c1", Some(1), 2, 1000, 1000);
        starved.session.avg_throughput_kbps = Some(9000);
        let mut slow = row("a2", "c1", Some(1), 0, 3000, 1000);
        slow.session.avg_throughput_kbps = Some(2000);
        let mut fine = row("b1", "c2", Some(1), 0, 1000, 1000);
        fine.session.avg_throughput_kbps = Some(5000);
        let (order, moves) = demote_bad(
            ids(&["a1", "a2", "b1"]),
            &[starved.clone(), slow.clone(), fine.clone()],
        );
        assert_eq!(order, ids(&["b1", "a1", "a2"]));
        assert_eq!(
            moves,
            vec![
                ("a1".to_string(), BadQoe::Starvation),
                ("a2".to_string(), BadQoe::ThroughputBelowBitrate)
            ]
        );
        // No report for an appliance: it counts as healthy.
        let (order, moves) = demote_bad(ids(&["a1", "c9"]), std::slice::from_ref(&starved));
        assert_eq!((order, moves.len()), (ids(&["c9", "a1"]), 1));
        // Already behind a healthy one: same order, no move logged.
        let (order, moves) = demote_bad(ids(&["b1", "a1"]), &[starved.clone(), fine]);
        assert_eq!((order, moves.len()), (ids(&["b1", "a1"]), 0));
        // All bad, reached at the same time: nothing better to move to.
        let (order, moves) = demote_bad(ids(&["a1", "a2"]), &[starved.clone(), slow.clone()]);
        assert_eq!((order, moves.len()), (ids(&["a1", "a2"]), 0));
    }

    #[test]
    fn all_bad_keeps_the_appliance_the_session_moved_to_last() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Moved off a1 (starved) to a2 at t=5 s; the player's throughput estimate from a1
        // makes a2 look bad too. The session stays on a2 instead of going back to a1.
        let mut a1 = row("a1", "c1", Some(1), 3, 450, 8000);
        a1.session.first_ms = 1_000;
        let mut a2 = row("a2", "c1", Some(1), 0, 450, 2000);
        a2.session.first_ms = 5_000;
        a2.session.avg_throughput_kbps = Some(100);
        let mut a3 = row("a3", "c2", Some(1), 1, 450, 1000);
        a3.session.first_ms = 2_000;
        let (order, moves) = demote_bad(ids(&["a1", "a3", "a2"]), &[a1.clone(), a2, a3]);
        assert_eq!(order, ids(&["a2", "a1", "a3"]));
        assert_eq!(
            moves,
            vec![
                ("a1".to_string(), BadQoe::Starvation),
                ("a3".to_string(), BadQoe::Starvation)
            ]
        );
        // Already first: unchanged, no move.
        let mut a2 = row("a2", "c1", Some(1), 1, 450, 2000);
        a2.session.first_ms = 5_000;
        let (order, moves) = demote_bad(ids(&["a2", "a1"]), &[a1, a2]);
        assert_eq!((order, moves.len()), (ids(&["a2", "a1"]), 0));
    }

    #[test]
    fn a_move_counts_once_however_many_reloads_repeat_it() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let priority = ids(&["a1", "a2", "b1"]);
        let mut reports = vec![
            row("a1", "c1", Some(1), 2, 1000, 1000),
            row("a2", "c1", Some(1), 0, 1000, 1000),
        ];
        // One steering reload: demote, count the fresh moves, remember them (as `steer` does
        // through `mark_qoe_moved`), forget the lifted ones.
        let mut counted: Vec<(String, BadQoe)> = Vec::new();
        let reload = |reports: &mut Vec<QoeRow>, counted: &mut Vec<(String, BadQoe)>| {
            let (order, moves) = demote_bad(priority.clone(), reports);
            let (fresh, lifted) = move_changes(&priority, &moves, reports);
            let fresh: Vec<(String, BadQoe)> = fresh.into_iter().cloned().collect();
            let lifted: Vec<String> = lifted.into_iter().map(str::to_owned).collect();
            for r in reports.iter_mut() {
                if fresh.iter().any(|(a, _)| *a == r.appliance_id) {
                    r.moved_at = Some(7);
                }
                if lifted.contains(&r.appliance_id) {
                    r.moved_at = None;
                }
            }
            counted.extend(fresh);
            order
        };
        // a1 starved: the first reload moves the session to a2; four more repeat it.
        for _ in 0..5 {
            assert_eq!(reload(&mut reports, &mut counted), ids(&["a2", "b1", "a1"]));
        }
        assert_eq!(counted, vec![("a1".to_string(), BadQoe::Starvation)]);
        // Then a2 measures throughput below the bitrate: a second, different move, once.
        reports[1].session.avg_throughput_kbps = Some(500);
        for _ in 0..3 {
            assert_eq!(reload(&mut reports, &mut counted), ids(&["b1", "a1", "a2"]));
        }
        assert_eq!(
            counted,
            vec![
                ("a1".to_string(), BadQoe::Starvation),
                ("a2".to_string(), BadQoe::ThroughputBelowBitrate)
            ]
        );
        // a2's throughput recovers: it goes back in front and its move is forgotten, so a
        // later relapse counts again.
        reports[1].session.avg_throughput_kbps = Some(5000);
        assert_eq!(reload(&mut reports, &mut counted), ids(&["a2", "b1", "a1"]));
        assert_eq!((reports[0].moved_at, reports[1].moved_at), (Some(7), None));
        reports[1].session.avg_throughput_kbps = Some(500);
        reload(&mut reports, &mut counted);
        reload(&mut reports, &mut counted);
        assert_eq!(counted.len(), 3, "{counted:?}");
        // An appliance left out of the priority (down) keeps its remembered move.
        let (_, lifted) = move_changes(&ids(&["b1"]), &[], &reports);
        assert!(lifted.is_empty());
    }

    #[test]
    fn aggregates_per_group() {
        let mut rows: Vec<QoeRow> = (1..=20)
            .map(|i| row("a1", "c1", Some(i * 100), u64::from(i % 5 == 0), 1000, 1000))
            .collect();
        rows.push(row("b1", "c2", None, 1, 3000, 3000));
        rows.push(row("b2", "c2", Some(700), 0, 1000, 1000));
        let c = aggregate(&rows, |r| r.cluster_id.as_str());
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "c1");
        assert_eq!(c[0].sessions, 20);
        assert_eq!(c[0].starved_sessions, 4);
        assert_eq!(c[0].rebuffer_ratio, 0.2);
        assert_eq!(c[0].startup_p50_ms, Some(1000));
        assert_eq!(c[0].startup_p95_ms, Some(1900));
        assert_eq!(c[1].avg_bitrate_kbps, Some(2500), "weighted by media time");
        assert_eq!(c[1].startup_p50_ms, Some(700));
        let a = aggregate(&rows, |r| r.appliance_id.as_str());
        assert_eq!(
            a.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            ["a1", "b1", "b2"]
        );
        assert_eq!(a[1].startup_p95_ms, None);
        assert!(aggregate(&[], |r| r.cluster_id.as_str()).is_empty());
        // Throughput: players' mtp weighted by requests; the send rate over summed bytes and time.
        assert_eq!((c[0].avg_throughput_kbps, c[0].served_kbps), (None, None));
        let mut x = row("x1", "c3", Some(1), 0, 1000, 1000);
        x.session.requests = 30;
        x.session.avg_throughput_kbps = Some(400);
        x.session.timed_bytes = Some(1_000_000);
        x.session.timed_us = Some(4_000_000);
        let mut y = row("x2", "c3", Some(1), 0, 1000, 1000);
        y.session.requests = 10;
        y.session.avg_throughput_kbps = Some(8_000);
        y.session.timed_bytes = Some(3_000_000);
        y.session.timed_us = Some(1_000_000);
        let z = row("x3", "c3", Some(1), 0, 1000, 1000);
        let g = &aggregate(&[x, y, z], |r| r.cluster_id.as_str())[0];
        assert_eq!(
            g.avg_throughput_kbps,
            Some(2_300),
            "(400·30 + 8000·10) / 40"
        );
        assert_eq!(g.served_kbps, Some(6_400), "4 MB in 5 s");
    }
}
