//! Steering from BGP at fleet scale: `CP_BENCH_APPLIANCES` (default 1000) appliances in sites of
//! four, each hearing `CP_BENCH_ROUTES` (default 1000) IPv4 /24 routes (each site its own mix of
//! a shared pool, so clusters compete for prefixes). Measures, beside today's policy-only table
//! (the same prefixes configured as policy prefixes) in the same run:
//! - rebuild: `BgpView::entries` (per-site intersection) + `Fleet::with_bgp`, against
//!   `Fleet::new` alone with policy prefixes, median of `CP_BENCH_RUNS` (default 5);
//! - memory: the steering table's heap bytes ([`Fleet::table_bytes`], from capacities) and per
//!   (prefix, appliance) entry, and the resident-set growth of the first build (from
//!   /proc/self/statm; later builds reuse freed pages, so only the first is meaningful);
//! - lookup: `Fleet::candidate_clusters` for 200 000 random client addresses, ns per lookup.
//!
//! ```text
//! cargo bench -p control_plane --bench bgp_table
//! CP_BENCH_ROUTES=100000 CP_BENCH_APPLIANCES=100 cargo bench -p control_plane --bench bgp_table
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use control_plane::bgp::{ApplianceBgp, BgpView};
use control_plane::prefix::Prefix;
use control_plane::steering::{AdminState, Appliance, Cluster, ClusterKind, Fleet};
use protocol::fleet::{BgpSession, Health};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn prefix_of(i: usize) -> Prefix {
    // 10.0.0.0/8 and beyond: /24 number i.
    let a = 0x0a00_0000u32.wrapping_add((i as u32) << 8);
    format!("{}/24", Ipv4Addr::from(a)).parse().unwrap()
}

fn main() {
    let n_app = env("CP_BENCH_APPLIANCES", 1000);
    let n_routes = env("CP_BENCH_ROUTES", 1000);
    let runs = env("CP_BENCH_RUNS", 5).max(1);
    let per_site = 4;
    let pool = (n_routes * 4).max(1);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sites = n_app.div_ceil(per_site);
    let clusters: Vec<Cluster> = (0..sites)
        .map(|s| Cluster {
            id: format!("site-{s}"),
            kind: ClusterKind::Embedded,
            fallbacks: vec![],
        })
        .collect();
    // Each site hears n_routes prefixes of the pool, with path lengths 1-4.
    let site_routes: Vec<BTreeMap<Prefix, (u32, u32)>> = (0..sites)
        .map(|_| {
            let mut m = BTreeMap::new();
            while m.len() < n_routes.min(pool) {
                let r = rnd();
                m.insert(
                    prefix_of((r as usize) % pool),
                    (1 + (r >> 32) as u32 % 4, 0),
                );
            }
            m
        })
        .collect();
    let appliance = |i: usize, prefixes: Vec<Prefix>| Appliance {
        id: format!("oca-{i}"),
        cluster: format!("site-{}", i / per_site),
        address: "127.0.0.1".into(),
        port: 8080,
        admin_state: AdminState::Reported,
        health: Some(Health::Ok),
        load: 0.1,
        last_heartbeat: Some(0),
        titles: None,
        prefixes,
    };
    let mut view = BgpView::default();
    for i in 0..n_app {
        view.appliances.insert(
            format!("oca-{i}"),
            ApplianceBgp {
                sessions: vec![BgpSession {
                    peer: "192.0.2.1:179".into(),
                    asn: 64500,
                    state: "established".into(),
                    last_error: None,
                    uptime_secs: 1,
                    routes: n_routes,
                    rib_complete: true,
                }],
                steerable: true,
                routes: site_routes[i / per_site].clone(),
            },
        );
    }
    let bgp_apps: Vec<Appliance> = (0..n_app).map(|i| appliance(i, vec![])).collect();
    let policy_apps: Vec<Appliance> = (0..n_app)
        .map(|i| appliance(i, site_routes[i / per_site].keys().copied().collect()))
        .collect();
    drop(site_routes);

    let mut t_bgp = Vec::new();
    let mut t_pol = Vec::new();
    let mut mem_bgp = None;
    let mut mem_pol = None;
    let mut fleet_bgp = Fleet::default();
    let mut fleet_pol = Fleet::default();
    for _ in 0..runs {
        drop(std::mem::take(&mut fleet_bgp));
        let (c, a) = (clusters.clone(), bgp_apps.clone());
        let before = rss_bytes();
        let t = Instant::now();
        let routes = view.entries(&a);
        let f = Fleet::with_bgp(c, a, &routes);
        t_bgp.push(t.elapsed().as_secs_f64() * 1e3);
        drop(routes);
        mem_bgp.get_or_insert(rss_bytes().saturating_sub(before));
        fleet_bgp = f;

        drop(std::mem::take(&mut fleet_pol));
        let (c, a) = (clusters.clone(), policy_apps.clone());
        let before = rss_bytes();
        let t = Instant::now();
        let f = Fleet::new(c, a);
        t_pol.push(t.elapsed().as_secs_f64() * 1e3);
        mem_pol.get_or_insert(rss_bytes().saturating_sub(before));
        fleet_pol = f;
    }
    let (mem_bgp, mem_pol) = (mem_bgp.unwrap_or(0), mem_pol.unwrap_or(0));
    let lookups = 200_000;
    let ips: Vec<IpAddr> = (0..lookups)
        .map(|_| {
            let r = rnd();
            IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000u32.wrapping_add(((r as usize % pool) as u32) << 8) | (r >> 56) as u32,
            ))
        })
        .collect();
    let mut sink = 0usize;
    let t = Instant::now();
    for ip in &ips {
        sink += fleet_bgp.candidate_clusters(*ip).1.len();
    }
    let ns_bgp = t.elapsed().as_nanos() as f64 / lookups as f64;
    let t = Instant::now();
    for ip in &ips {
        sink += fleet_pol.candidate_clusters(*ip).1.len();
    }
    let ns_pol = t.elapsed().as_nanos() as f64 / lookups as f64;
    println!(
        "bgp_table: {n_app} appliances x {n_routes} routes ({} sites, pool {pool} prefixes)",
        sites
    );
    println!(
        "  rebuild  bgp {:.1} ms   policy-only {:.1} ms   ratio {:.2}",
        median(t_bgp.clone()),
        median(t_pol.clone()),
        median(t_bgp) / median(t_pol).max(1e-9)
    );
    let per_entry = |f: &Fleet| f.table_bytes() as f64 / f.table_entries().max(1) as f64;
    println!(
        "  table    bgp {:.1} MiB ({} entries, {:.1} B/entry)  policy-only {:.1} MiB ({} entries, {:.1} B/entry)",
        fleet_bgp.table_bytes() as f64 / 1048576.0,
        fleet_bgp.table_entries(),
        per_entry(&fleet_bgp),
        fleet_pol.table_bytes() as f64 / 1048576.0,
        fleet_pol.table_entries(),
        per_entry(&fleet_pol),
    );
    println!(
        "  memory   bgp {:.1} MiB  policy-only {:.1} MiB (RSS growth of the first build)",
        mem_bgp as f64 / 1048576.0,
        mem_pol as f64 / 1048576.0
    );
    println!(
        "  lookup   bgp {ns_bgp:.0} ns   policy-only {ns_pol:.0} ns   ratio {:.2}   (checksum {sink})",
        ns_bgp / ns_pol.max(1e-9)
    );
}
