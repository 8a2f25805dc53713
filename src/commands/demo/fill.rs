//! How the demo waits for fill: the appliances' own fleet agents fetch their plans and fill from
//! origin through the exchange; the demo only watches the control plane's fleet tables until
//! every title is held in the embedded cluster and no appliance has a title pending.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::assets::TITLES;
use super::topology::{Kind, Topology, COUNTRY};

/// The demo's forecast feed: both titles expected to be watched a lot in the demo country, so
/// the planner gives them a copy on every embedded appliance (and failover stays in the ISP).
pub fn forecast_json() -> String {
    let titles: Vec<serde_json::Value> = TITLES
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"title": t.id, "views": 10_000.0 / (i + 1) as f64}))
        .collect();
    serde_json::json!({"forecast": [{"country": COUNTRY, "titles": titles}]}).to_string()
}

/// Waits until every demo title is reported held by every embedded appliance and no appliance
/// reports titles pending, printing progress; fails after `limit` naming what is missing.
pub async fn wait_until_placed(
    state: &control_plane::AppState,
    topo: &Topology,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let want: BTreeSet<&str> = TITLES.iter().map(|t| t.id).collect();
    let embedded: Vec<&str> = topo
        .appliances
        .iter()
        .filter(|a| a.kind == Kind::Embedded)
        .map(|a| a.id.as_str())
        .collect();
    let origin: Vec<&str> = topo
        .appliances
        .iter()
        .filter(|a| a.kind == Kind::Origin)
        .map(|a| a.id.as_str())
        .collect();
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut last = String::new();
    loop {
        let rows = state
            .repo
            .load_snapshot()
            .await
            .context("reading the fleet tables")?;
        let mut missing = Vec::new();
        let mut pending = 0u64;
        // A data directory from an earlier run leaves that run's reports in the fleet tables:
        // only a heartbeat from this run counts, and a copy only when it is origin's version
        // (a title packaged again has a new catalog).
        let fresh = |a: &control_plane::db::rows::ApplianceRow| {
            a.last_heartbeat.is_some_and(|t| t >= started_at)
        };
        let origin_versions: BTreeMap<&str, &str> = rows
            .appliances
            .iter()
            .filter(|a| fresh(a) && origin.contains(&a.id.as_str()))
            .flat_map(|a| a.held.iter().flatten())
            .map(|h| (h.title.as_str(), h.catalog_sha256.as_str()))
            .collect();
        for a in &rows.appliances {
            if !fresh(a) {
                missing.push(format!("a first heartbeat from {}", a.id));
                continue;
            }
            pending += a.fill_status.as_ref().map_or(0, |f| f.titles_pending);
            if !embedded.contains(&a.id.as_str()) {
                continue;
            }
            let have: BTreeSet<&str> = a
                .held
                .iter()
                .flatten()
                .filter(|h| {
                    origin_versions.get(h.title.as_str()) == Some(&h.catalog_sha256.as_str())
                })
                .map(|h| h.title.as_str())
                .collect();
            for t in want.difference(&have) {
                missing.push(format!("{t} on {}", a.id));
            }
        }
        if missing.is_empty() && pending == 0 {
            return Ok(());
        }
        let now = if missing.is_empty() {
            format!("fill: {pending} title(s) still pending on the upstream tiers")
        } else {
            format!("fill: waiting for {}", missing.join(", "))
        };
        if now != last {
            eprintln!("demo: {now}");
            last = now;
        }
        if start.elapsed() > limit {
            anyhow::bail!(
                "fill did not place the titles within {} s ({}); see the appliance logs",
                limit.as_secs(),
                last.trim_start_matches("fill: ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
