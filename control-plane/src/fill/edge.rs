//! The database edge of fill planning: it speaks no HTTP (narrow arguments in, [`FillError`]
//! out; the route maps it). It gathers a cluster's [`ClusterInput`] from the snapshot and
//! the database (sessions for popularity, the forecast feed, the last published placement), runs
//! the pure planner, publishes a changed placement (stored in `fill_placements`, one log line per
//! change, churn metrics), and turns a cluster plan into one appliance's
//! [`protocol::fill::FillPlan`] with ordered sources and fill grants.
//!
//! Which appliances are planned: those of the cluster with `admin_state = reported` that have
//! reported their drives at least once (capacity = the sum of their drives that have not
//! failed). An appliance that goes silent keeps its placement (it will come back with its
//! files); steering and the source lists skip it meanwhile. Origin clusters are not planned by
//! popularity: each of their reported appliances holds every title.
//!
//! Which titles: those with a window, in a country of the cluster's content region, that has
//! not ended (a window that opens later counts: a release is pre-positioned before it opens).
//!
//! What an appliance holds: the `held` list of its heartbeats (title + catalog digest) when its
//! agent reports one, split into the current version and older ones; otherwise its `titles`
//! list, taken as current.
//!
//! Urgency: titles imported within `new_release_secs` (new releases), else titles with a content
//! miss in the region within `miss_urgent_secs`, else titles with low QoE on the cluster's
//! appliances within `qoe_urgent_secs` ([`super::qoe`]: the latest 5000 reports of the cluster).
//!
//! The cluster's demand share (for copy counts): the bytes of the window's sessions of the region
//! whose first steering choice was in the cluster, over those of every embedded cluster of the
//! region ([`region_clusters`], [`crate::steering::StoredDecision::served_cluster`],
//! [`popularity::cluster_shares`]). Sessions sent past the cluster (a content or health miss) count for the cluster that served them, so a
//! cluster that misses a lot looks smaller than its clients' demand; the exchange and origin get
//! no share (they carry the whole region).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use protocol::fill::{FillPlan, FillSource, PlannedTitle, Removal};
use protocol::grant::{sign, Claims, Scope, SigningKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::cache::PlanCache;
use super::popularity::{self, Usage};
use super::sources::{ordered_sources, S3Origin, SourceRef};
use super::{
    plan_cluster, ApplianceInput, ClusterInput, ClusterPlacement, ClusterPlan, TitleDecision,
    TitleInput, Urgency,
};
use crate::config::{Config, FillConfig};
use crate::db::Repository;
use crate::metrics::Metrics;
use crate::state::Snapshot;
use crate::steering::{AdminState, ClusterKind, Fleet, Thresholds};
use crate::Error;

/// Why the fill edge failed.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// Storage failed, or a configuration value is wrong.
    #[error(transparent)]
    Store(#[from] Error),
    /// The cluster is not in the policy.
    #[error("unknown cluster {0:?}")]
    UnknownCluster(String),
    /// A fill grant could not be signed.
    #[error("minting a fill grant: {0}")]
    Grant(String),
    /// The plan built does not pass [`FillPlan::validate`] (a bug, never sent).
    #[error("built an invalid fill plan: {0}")]
    InvalidPlan(String),
}

/// Where cluster plans are cached and published: narrow borrows of the service state.
#[derive(Debug, Clone, Copy)]
pub struct Publisher<'a> {
    /// Storage (sessions, forecasts, placements).
    pub repo: &'a dyn Repository,
    /// Churn and planned-title metrics.
    pub metrics: &'a Metrics,
    /// Recently computed plans.
    pub cache: &'a PlanCache,
    /// The `[fill]` settings.
    pub cfg: &'a FillConfig,
}

/// What turning a cluster plan into one appliance's plan takes: the `[fill]` settings, the
/// steering thresholds sources are checked against, and what fill grants are signed with.
#[derive(Debug, Clone, Copy)]
pub struct PlanWriter<'a> {
    /// The `[fill]` settings.
    pub cfg: &'a FillConfig,
    /// Steering thresholds (a source must be able to serve now).
    pub thresholds: Thresholds,
    /// The grant issuer.
    pub issuer: &'a str,
    /// The current signing key.
    pub key: &'a SigningKey,
}

/// A cluster's input and the placement it is planned against.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// The planner's input.
    pub input: ClusterInput,
    /// The last published placement (before the first one: what the appliances hold).
    pub previous: ClusterPlacement,
    /// The cluster's kind.
    pub kind: ClusterKind,
}

/// Gathers everything [`plan_cluster`] needs for `cluster` at `now`.
pub async fn gather(
    repo: &dyn Repository,
    snap: &Snapshot,
    cfg: &FillConfig,
    cluster: &str,
    now: u64,
) -> Result<Gathered, FillError> {
    let kind = snap
        .fleet
        .cluster(cluster)
        .map(|c| c.kind)
        .ok_or_else(|| FillError::UnknownCluster(cluster.to_owned()))?;
    let countries = snap
        .cluster_countries
        .get(cluster)
        .cloned()
        .unwrap_or_default();

    // Appliances and their holdings.
    let mut appliances = Vec::new();
    let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stale: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in snap.fleet.appliances() {
        if a.cluster != cluster || a.admin_state != AdminState::Reported {
            continue;
        }
        let Some(&cap) = snap.capacity.get(&a.id) else {
            continue;
        };
        appliances.push(ApplianceInput {
            id: a.id.clone(),
            capacity_bytes: cap,
        });
        let (cur, old) = holdings(snap, &a.id);
        held.insert(a.id.clone(), cur);
        if !old.is_empty() {
            stale.insert(a.id.clone(), old);
        }
    }

    // Popularity: observed views over the window, blended with the forecast. The database sums
    // the window's sessions per (title, country, serving cluster); sessions stored before
    // migration 0010 (no stored bit rate) are weighed here with the catalog, as they were.
    let window_start = now.saturating_sub(cfg.popularity_window_secs);
    let miss_since = now.saturating_sub(cfg.miss_urgent_secs);
    let mut totals = repo
        .usage_totals(window_start as i64, now as i64, miss_since as i64)
        .await?;
    for r in repo.legacy_session_usage(window_start as i64).await? {
        let Some(entry) = snap.titles.get(&r.title) else {
            continue;
        };
        let session = Usage {
            title: r.title.clone(),
            country: r.country.clone(),
            bitrate_bps: popularity::session_bitrate(entry, &r.renditions),
            start: r.created_at.max(0) as u64,
            end: r.last_at.max(0) as u64,
        };
        let duration = snap.title_meta.get(&r.title).map_or(0, |m| m.duration_secs);
        let missed = r.created_at >= miss_since as i64 && r.steering.content_miss();
        let served_by = r.steering.served_cluster().map(str::to_owned);
        totals.push(session.total(duration, served_by, missed, window_start, now));
    }
    let in_region = |country: &str| countries.is_empty() || countries.iter().any(|c| c == country);
    let mut missed: BTreeSet<String> = BTreeSet::new();
    // Bytes each cluster served inside the window (by the first choice steering recorded).
    let mut served: HashMap<String, f64> = HashMap::new();
    for t in &totals {
        if !snap.titles.contains_key(&t.title) || !in_region(&t.country) {
            continue;
        }
        if let Some(c) = &t.served_cluster {
            *served.entry(c.clone()).or_default() += t.served_bytes;
        }
        if t.missed {
            missed.insert(t.title.clone());
        }
    }
    let sizes: HashMap<String, u64> = snap
        .title_meta
        .iter()
        .map(|(t, m)| (t.clone(), m.bytes))
        .collect();
    let observed = popularity::views(&totals, &sizes, &countries);
    let forecast_rows = repo.forecasts().await?;
    let forecast = popularity::forecast_views(
        forecast_rows
            .iter()
            .map(|r| (r.country.as_str(), r.title.as_str(), r.views)),
        &countries,
    );
    let new_since = now.saturating_sub(cfg.new_release_secs) as i64;
    // Low QoE on this cluster's appliances (the second urgency signal after content misses).
    let low_qoe = if cfg.qoe_urgent_secs == 0 {
        BTreeMap::new()
    } else {
        let since = now.saturating_sub(cfg.qoe_urgent_secs) as i64;
        let rows = repo
            .qoe(since, Some(cluster), crate::routes::qoe::MAX_LIMIT)
            .await?;
        super::qoe::low_qoe_titles(rows.iter().map(|r| &r.session), &cfg.qoe_signal())
    };
    // Only titles some country of the region may watch now or later (a window that has not
    // ended): a title whose windows there all closed only takes room.
    let mut playable: BTreeSet<&str> = BTreeSet::new();
    for ((t, c), (_, end, _)) in &snap.windows {
        if *end > now as i64 && (countries.is_empty() || countries.iter().any(|x| x == c)) {
            playable.insert(t.as_str());
        }
    }
    let mut titles: Vec<TitleInput> = snap
        .title_meta
        .iter()
        .filter(|(t, _)| playable.contains(t.as_str()))
        .map(|(t, m)| TitleInput {
            id: t.clone(),
            bytes: m.bytes,
            popularity: popularity::blend(
                observed.get(t).copied().unwrap_or(0.0),
                forecast.get(t).copied(),
                cfg.forecast_weight,
            ),
            urgent: if m.imported_at >= new_since {
                Some(Urgency::NewRelease)
            } else if missed.contains(t) {
                Some(Urgency::ContentMiss)
            } else {
                low_qoe.get(t).copied()
            },
        })
        .collect();
    titles.sort_by(|a, b| a.id.cmp(&b.id));

    // The cluster's share of its region's demand: embedded clusters whose content region
    // overlaps this one's share it, by bytes served in the window (equal shares before any
    // traffic). The exchange and origin carry the whole region.
    let demand_share = if kind == ClusterKind::Embedded {
        let region = region_clusters(&snap.fleet, &snap.cluster_countries, cluster);
        popularity::cluster_shares(&served, &region)
            .get(cluster)
            .copied()
    } else {
        None
    };

    // The previous placement: the last published one; before the first, what is held.
    let stored = ClusterPlacement::from_pairs(repo.placements(cluster).await?);
    let previous = if stored.0.is_empty() {
        ClusterPlacement(
            held.iter()
                .filter(|(_, ts)| !ts.is_empty())
                .map(|(a, ts)| (a.clone(), ts.clone()))
                .collect(),
        )
    } else {
        stored
    };
    Ok(Gathered {
        input: ClusterInput {
            cluster: cluster.to_owned(),
            appliances,
            titles,
            held,
            stale,
            demand_share,
        },
        previous,
        kind,
    })
}

/// The embedded clusters that share `cluster`'s content region (its countries overlap theirs;
/// clusters without countries share the "every country" region), `cluster` included, sorted.
pub fn region_clusters(
    fleet: &Fleet,
    cluster_countries: &HashMap<String, Vec<String>>,
    cluster: &str,
) -> Vec<String> {
    let ours = cluster_countries
        .get(cluster)
        .map(Vec::as_slice)
        .unwrap_or_default();
    fleet
        .clusters()
        .iter()
        .filter(|c| c.kind == ClusterKind::Embedded)
        .filter(|c| {
            let theirs = cluster_countries
                .get(&c.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            c.id == cluster
                || (ours.is_empty() && theirs.is_empty())
                || theirs.iter().any(|x| ours.contains(x))
        })
        .map(|c| c.id.clone())
        .collect()
}

/// What `appliance` holds: `(current version, older version)`.
pub fn holdings(snap: &Snapshot, appliance: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cur = BTreeSet::new();
    let mut old = BTreeSet::new();
    if let Some(list) = snap.held.get(appliance) {
        for h in list {
            match snap.title_meta.get(&h.title) {
                Some(m) if m.catalog_sha256 == h.catalog_sha256 => {
                    cur.insert(h.title.clone());
                }
                Some(_) => {
                    old.insert(h.title.clone());
                }
                None => {}
            }
        }
    } else if let Some(a) = snap.fleet.appliance(appliance) {
        if let Some(ts) = &a.titles {
            cur.extend(
                ts.iter()
                    .filter(|t| snap.title_meta.contains_key(*t))
                    .cloned(),
            );
        }
    }
    (cur, old)
}

/// Runs the planner on gathered input. Origin clusters hold every title on every appliance.
pub fn compute(g: &Gathered, cfg: &FillConfig) -> ClusterPlan {
    if g.kind != ClusterKind::Origin {
        return plan_cluster(&g.input, &g.previous, &cfg.params());
    }
    let mut input = g.input.clone();
    for a in &mut input.appliances {
        a.capacity_bytes = u64::MAX;
    }
    let params = super::FillParams {
        views_per_copy: f64::MIN_POSITIVE,
        max_copies: 0,
        ..cfg.params()
    };
    // Every title wants every appliance: popularity / MIN_POSITIVE overflows to the cap.
    for t in &mut input.titles {
        t.popularity = t.popularity.max(1.0);
    }
    plan_cluster(&input, &g.previous, &params)
}

/// Stores a plan whose placement differs from `previous`, logs each change (target
/// `outpost::fill`) and counts the churn. Returns whether anything changed.
pub async fn publish(
    repo: &dyn Repository,
    metrics: &Metrics,
    plan: &ClusterPlan,
    previous: &ClusterPlacement,
    now: u64,
) -> Result<bool, FillError> {
    if let Ok(mut m) = metrics.titles_planned.lock() {
        let distinct: BTreeSet<&String> = plan.placement.0.values().flatten().collect();
        m.insert(plan.cluster.clone(), distinct.len() as u64);
    }
    if plan.placement == *previous && plan.changes.is_empty() {
        return Ok(false);
    }
    repo.replace_placements(&plan.cluster, &plan.placement.pairs(), now as i64)
        .await?;
    for c in &plan.changes {
        tracing::info!(
            target: "outpost::fill",
            cluster = %plan.cluster,
            appliance = %c.appliance,
            title = %c.title,
            action = c.action.as_str(),
            reason = %c.reason,
            "fill plan change"
        );
        let counter = match c.action {
            super::Action::Add => &metrics.plan_adds,
            super::Action::Remove => &metrics.plan_removes,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    for t in &plan.short {
        tracing::debug!(target: "outpost::fill", cluster = %plan.cluster, title = %t, "fewer copies than wanted: the cluster is full");
    }
    Ok(true)
}

/// The cluster's plan: cached for `plan_cache_secs`, recomputed (and published) when older, or
/// when `appliance` is not planned in the cached one (it just reported its drives).
pub async fn cluster_plan(
    p: Publisher<'_>,
    snap: &Snapshot,
    cluster: &str,
    appliance: &str,
    now: u64,
) -> Result<Arc<ClusterPlan>, FillError> {
    let cfg = p.cfg;
    let mut cache = p.cache.lock().await;
    if let Some((at, p)) = cache.get(cluster) {
        let fresh = now < at.saturating_add(cfg.plan_cache_secs) && *at <= now;
        let knows = p.placement.0.contains_key(appliance) || !snap.capacity.contains_key(appliance);
        if fresh && knows {
            return Ok(p.clone());
        }
    }
    let g = gather(p.repo, snap, cfg, cluster, now).await?;
    let plan = compute(&g, cfg);
    publish(p.repo, p.metrics, &plan, &g.previous, now).await?;
    let plan = Arc::new(plan);
    cache.insert(cluster.to_owned(), (now, plan.clone()));
    Ok(plan)
}

/// Mints a fill grant for `appliance` to fetch `title` from appliances of `source_cluster`.
pub fn fill_grant(
    w: &PlanWriter<'_>,
    appliance: &str,
    source_cluster: &str,
    title: &str,
    now: u64,
) -> Result<String, FillError> {
    let claims = Claims {
        iss: w.issuer.to_owned(),
        aud: vec![source_cluster.to_owned()],
        sub: format!("fill:{appliance}"),
        nbf: None,
        iat: now,
        exp: now + w.cfg.grant_ttl_secs,
        prefix: format!("/{title}/"),
        renditions: None,
        client: None,
        jti: crate::crypto::random_token(12),
        scope: Scope::Fill,
    };
    sign(w.key, &claims).map_err(|e| FillError::Grant(e.to_string()))
}

fn s3_origin(cfg: &FillConfig) -> Option<S3Origin> {
    cfg.s3_bucket.as_ref().map(|b| S3Origin {
        bucket: b.clone(),
        prefix: cfg.s3_prefix.clone(),
    })
}

fn base_url(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("http://[{address}]:{port}")
    } else {
        format!("http://{address}:{port}")
    }
}

/// The reason given for titles kept on an appliance the planner does not plan.
pub const NOT_PLANNED: &str =
    "kept as held: the appliance is not planned until it reports its drives (admin_state reported)";

/// One appliance's fill plan from its cluster's plan: titles most important first, each title it
/// does not hold in the current version with its ordered sources and fill grants. Validated.
pub fn fill_plan(
    w: &PlanWriter<'_>,
    snap: &Snapshot,
    plan: &ClusterPlan,
    appliance: &str,
    now: u64,
) -> Result<FillPlan, FillError> {
    let (held, _) = holdings(snap, appliance);
    let s3 = s3_origin(w.cfg);
    let t = w.thresholds;
    let mut titles = Vec::new();
    let mut id = Sha256::new();
    id.update(format!("{}\n{appliance}\n", plan.cluster).as_bytes());
    if !plan.placement.0.contains_key(appliance) {
        // Not planned (no drives reported yet, or not `admin_state = reported`): keep what it
        // holds, so a plan fetched before the first heartbeat never empties a cache.
        for title in &held {
            let Some(meta) = snap.title_meta.get(title) else {
                continue;
            };
            id.update(format!("{title} {}\n", meta.catalog_sha256).as_bytes());
            titles.push(PlannedTitle {
                title: title.clone(),
                catalog_sha256: meta.catalog_sha256.clone(),
                bytes: meta.bytes,
                urgent: false,
                reason: NOT_PLANNED.to_owned(),
                sources: Vec::new(),
            });
        }
    }
    for title in plan.ordered_titles(appliance) {
        let (Some(meta), Some(d)) = (snap.title_meta.get(title), plan.titles.get(title)) else {
            continue;
        };
        let mut sources = Vec::new();
        if !held.contains(title) {
            let mut grants: HashMap<String, String> = HashMap::new();
            for s in ordered_sources(
                &snap.fleet,
                appliance,
                title,
                now,
                &t,
                s3.as_ref(),
                w.cfg.sources_per_cluster,
            ) {
                sources.push(match s {
                    SourceRef::Appliance {
                        tier,
                        appliance: src,
                        cluster,
                        address,
                        port,
                    } => {
                        let grant = match grants.get(&cluster) {
                            Some(g) => g.clone(),
                            None => {
                                let g = fill_grant(w, appliance, &cluster, title, now)?;
                                grants.insert(cluster.clone(), g.clone());
                                g
                            }
                        };
                        FillSource::Appliance {
                            tier,
                            appliance: src,
                            cluster,
                            base_url: base_url(&address, port),
                            grant,
                        }
                    }
                    SourceRef::S3(o) => FillSource::S3 {
                        tier: protocol::fill::SourceTier::Origin,
                        bucket: o.bucket,
                        prefix: o.prefix,
                    },
                });
            }
        }
        id.update(format!("{title} {} {}", meta.catalog_sha256, d.urgent.is_some()).as_bytes());
        // The sources belong to the plan's content (their grants do not: they are fresh on
        // every request).
        for s in &sources {
            id.update(format!(" {}:{}", s.tier().as_str(), s.label()).as_bytes());
        }
        id.update(b"\n");
        titles.push(PlannedTitle {
            title: title.to_owned(),
            catalog_sha256: meta.catalog_sha256.clone(),
            bytes: meta.bytes,
            urgent: d.urgent.is_some(),
            reason: d.reason(),
            sources,
        });
    }
    let removals = removals(w, snap, plan, appliance, &titles, now);
    for r in &removals {
        id.update(format!("remove {} {}\n", r.title, r.kept_at.join(",")).as_bytes());
    }
    let digest = id.finalize();
    let plan_id = protocol::hex::encode(&digest[..8]);
    let out = FillPlan {
        appliance: appliance.to_owned(),
        cluster: plan.cluster.clone(),
        plan_id,
        generated_at: now,
        refresh_secs: w.cfg.plan_refresh_secs,
        titles,
        removals,
    };
    out.validate()
        .map_err(|e| FillError::InvalidPlan(e.to_string()))?;
    Ok(out)
}

/// The titles `appliance` holds (any version) that its plan leaves out and that it may delete:
/// each only when another copy exists ([`ordered_sources`] of the title for this appliance is
/// not empty: a healthy peer, upstream or origin appliance holding its current version, or the
/// S3 origin). A title with no other copy is never listed, whatever the planner decided, and an
/// origin cluster's plans list none unless `[fill] origin_removals` says so.
fn removals(
    w: &PlanWriter<'_>,
    snap: &Snapshot,
    plan: &ClusterPlan,
    appliance: &str,
    planned: &[PlannedTitle],
    now: u64,
) -> Vec<Removal> {
    let origin = snap
        .fleet
        .cluster(&plan.cluster)
        .is_some_and(|c| c.kind == ClusterKind::Origin);
    if origin && !w.cfg.origin_removals {
        return Vec::new();
    }
    let (cur, old) = holdings(snap, appliance);
    let s3 = s3_origin(w.cfg);
    let t = w.thresholds;
    let mut out = Vec::new();
    for title in cur.iter().chain(&old) {
        if planned.iter().any(|p| &p.title == title)
            || out.iter().any(|r: &Removal| &r.title == title)
        {
            continue;
        }
        let kept_at: Vec<String> = ordered_sources(
            &snap.fleet,
            appliance,
            title,
            now,
            &t,
            s3.as_ref(),
            w.cfg.sources_per_cluster,
        )
        .into_iter()
        .map(|s| match s {
            SourceRef::Appliance { appliance, .. } => appliance,
            SourceRef::S3(o) => format!("s3:{}", o.bucket),
        })
        .take(protocol::fill::MAX_KEPT_AT)
        .collect();
        if kept_at.is_empty() {
            tracing::info!(target: "outpost::fill", appliance, title, "title left the plan but is its last copy: not listed for removal");
            continue;
        }
        let reason = if snap.title_meta.contains_key(title) {
            plan.titles
                .get(title.as_str())
                .map_or_else(|| "not placed on this appliance".to_owned(), |d| d.reason())
        } else {
            "not in the catalog".to_owned()
        };
        out.push(Removal {
            title: title.clone(),
            reason,
            kept_at,
        });
    }
    out
}

/// One appliance's part of a [`ClusterReport`].
#[derive(Debug, Clone, Serialize)]
pub struct ApplianceReport {
    /// Appliance id.
    pub appliance: String,
    /// Capacity the planner fills (bytes, after `capacity_fraction`).
    pub capacity_bytes: u64,
    /// Planned and held in the current version.
    pub hold: Vec<ReportLine>,
    /// Planned, not held yet (or held in an older version).
    pub add: Vec<ReportLine>,
    /// Held, not planned.
    pub remove: Vec<ReportLine>,
}

/// One title on one appliance.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLine {
    /// Title id.
    pub title: String,
    /// Its bytes.
    pub bytes: u64,
    /// Why.
    pub reason: String,
}

/// A cluster's plan against what its appliances hold, for `outpost control-plane fill-plan`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Cluster id.
    pub cluster: String,
    /// Its kind.
    pub kind: ClusterKind,
    /// Countries of its content region (empty = every country).
    pub countries: Vec<String>,
    /// When it was computed.
    pub generated_at: u64,
    /// Per appliance.
    pub appliances: Vec<ApplianceReport>,
    /// Changes against the last published placement.
    pub changes: Vec<super::PlanChange>,
    /// Titles short of copies for lack of room.
    pub short: Vec<String>,
}

/// Builds the report of `cluster` (read-only: nothing is published).
pub fn report(
    snap: &Snapshot,
    g: &Gathered,
    plan: &ClusterPlan,
    cfg: &FillConfig,
    now: u64,
) -> ClusterReport {
    let bytes = |t: &str| snap.title_meta.get(t).map_or(0, |m| m.bytes);
    let why = |t: &str| {
        plan.titles
            .get(t)
            .map_or_else(|| "not in the catalog".to_owned(), TitleDecision::reason)
    };
    let mut appliances = Vec::new();
    for a in &g.input.appliances {
        let planned = plan.ordered_titles(&a.id);
        let held = g.input.held.get(&a.id).cloned().unwrap_or_default();
        let stale = g.input.stale.get(&a.id).cloned().unwrap_or_default();
        let mut r = ApplianceReport {
            appliance: a.id.clone(),
            capacity_bytes: (a.capacity_bytes as f64 * cfg.capacity_fraction).floor() as u64,
            hold: Vec::new(),
            add: Vec::new(),
            remove: Vec::new(),
        };
        for t in &planned {
            let line = |reason: String| ReportLine {
                title: (*t).to_owned(),
                bytes: bytes(t),
                reason,
            };
            if held.contains(*t) {
                r.hold.push(line(why(t)));
            } else if stale.contains(*t) {
                r.add.push(line(format!("new catalog version; {}", why(t))));
            } else {
                r.add.push(line(why(t)));
            }
        }
        for t in held.iter().chain(stale.iter()) {
            if !planned.contains(&t.as_str()) {
                r.remove.push(ReportLine {
                    title: t.clone(),
                    bytes: bytes(t),
                    reason: match plan.titles.get(t) {
                        Some(d) => format!("not placed here ({})", d.reason()),
                        None => "no longer in the catalog".to_owned(),
                    },
                });
            }
        }
        appliances.push(r);
    }
    ClusterReport {
        cluster: plan.cluster.clone(),
        kind: g.kind,
        countries: snap
            .cluster_countries
            .get(&plan.cluster)
            .cloned()
            .unwrap_or_default(),
        generated_at: now,
        appliances,
        changes: plan.changes.clone(),
        short: plan.short.clone(),
    }
}

/// Computes the report of `cluster` from the database a configuration names (the `fill-plan`
/// subcommand). Read-only.
pub async fn report_from_config(
    config: &Config,
    cluster: &str,
    now: u64,
) -> Result<ClusterReport, FillError> {
    config.validate()?;
    let repo = crate::db::connect(&crate::database_url(config), 2).await?;
    let snap = Snapshot::build(repo.load_snapshot().await?);
    if snap.fleet.cluster(cluster).is_none() {
        let known: Vec<String> = snap.fleet.clusters().iter().map(|c| c.id.clone()).collect();
        return Err(FillError::Store(Error::Config {
            key: "cluster".into(),
            reason: format!(
                "unknown cluster {cluster:?}; the policy has: {}",
                if known.is_empty() {
                    "none (import a policy first)".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        }));
    }
    let g = gather(repo.as_ref(), &snap, &config.fill, cluster, now).await?;
    let plan = compute(&g, &config.fill);
    Ok(report(&snap, &g, &plan, &config.fill, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steering::{Choice, Cluster, StoredDecision};

    #[test]
    fn sessions_count_for_the_cluster_steering_chose_first() {
        let choice = |cluster: &str| Choice {
            appliance: format!("{cluster}-1"),
            cluster: cluster.to_owned(),
            address: "127.0.0.1".into(),
            port: 1,
        };
        // The shape the playback route stores.
        let stored: StoredDecision = serde_json::from_value(serde_json::json!({
            "ranked": [choice("isp-a"), choice("ix")],
            "reason": "best local",
            "miss": null,
        }))
        .unwrap();
        assert_eq!(stored.served_cluster(), Some("isp-a"));
        let nowhere: StoredDecision = serde_json::from_value(
            serde_json::json!({"ranked": [], "reason": "none", "miss": null}),
        )
        .unwrap();
        assert_eq!(nowhere.served_cluster(), None);
    }

    #[test]
    fn a_region_is_the_embedded_clusters_sharing_a_country() {
        let cluster = |id: &str, kind| Cluster {
            id: id.into(),
            kind,
            fallbacks: Vec::new(),
        };
        let fleet = Fleet::new(
            vec![
                cluster("nz-a", ClusterKind::Embedded),
                cluster("nz-b", ClusterKind::Embedded),
                cluster("au-a", ClusterKind::Embedded),
                cluster("ix", ClusterKind::Exchange),
                cluster("any", ClusterKind::Embedded),
            ],
            Vec::new(),
        );
        let countries: HashMap<String, Vec<String>> = [
            ("nz-a", vec!["NZ"]),
            ("nz-b", vec!["NZ", "CK"]),
            ("au-a", vec!["AU"]),
            ("ix", vec!["NZ", "AU"]),
        ]
        .into_iter()
        .map(|(c, v)| (c.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            region_clusters(&fleet, &countries, "nz-a"),
            ["nz-a", "nz-b"]
        );
        assert_eq!(region_clusters(&fleet, &countries, "au-a"), ["au-a"]);
        assert_eq!(region_clusters(&fleet, &countries, "any"), ["any"]);
    }
}
