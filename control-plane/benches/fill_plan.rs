//! Cost of one fill-planner run (`control_plane::fill::plan_cluster`), the call a fleet
//! simulator makes per cluster per simulated day: a cluster of `CP_BENCH_APPLIANCES` (default 8)
//! appliances of 4 TB each, a catalog of `CP_BENCH_TITLES` (default 20000) titles of 2-20 GB with
//! Zipf-like popularity, planned from scratch and then re-planned against its own placement with
//! 10% popularity noise (the daily case). Reports the median of `CP_BENCH_RUNS` (default 11)
//! runs of each, in milliseconds of one core.
//!
//! ```text
//! cargo bench -p control_plane --bench fill_plan
//! ```

use std::time::Instant;

use control_plane::fill::{
    plan_cluster, ApplianceInput, ClusterInput, ClusterPlacement, FillParams, TitleInput,
};

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

fn main() {
    let n_app = env("CP_BENCH_APPLIANCES", 8);
    let n_titles = env("CP_BENCH_TITLES", 20_000);
    let runs = env("CP_BENCH_RUNS", 11).max(1);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let input = ClusterInput {
        cluster: "isp".into(),
        appliances: (0..n_app)
            .map(|i| ApplianceInput {
                id: format!("oca-{i}"),
                capacity_bytes: 4_000_000_000_000,
            })
            .collect(),
        titles: (0..n_titles)
            .map(|i| TitleInput {
                id: format!("title-{i:05}"),
                bytes: 2_000_000_000 + (rnd() * 18e9) as u64,
                popularity: 100_000.0 / (i + 1) as f64,
                urgent: None,
            })
            .collect(),
        ..Default::default()
    };
    let params = FillParams::default();
    let mut fresh = Vec::new();
    let mut plan = None;
    for _ in 0..runs {
        let t = Instant::now();
        let p = plan_cluster(&input, &ClusterPlacement::default(), &params);
        fresh.push(t.elapsed().as_secs_f64() * 1e3);
        plan = Some(p);
    }
    let plan = plan.expect("at least one run");
    let mut noisy = input.clone();
    for t in &mut noisy.titles {
        t.popularity *= 0.9 + 0.2 * rnd();
    }
    let mut daily = Vec::new();
    let mut changes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let p = plan_cluster(&noisy, &plan.placement, &params);
        daily.push(t.elapsed().as_secs_f64() * 1e3);
        changes = p.changes.len();
    }
    let placed: usize = plan.placement.0.values().map(|s| s.len()).sum();
    println!(
        "fill_plan: {n_app} appliances x {n_titles} titles: {placed} copies placed, {} titles short of room",
        plan.short.len()
    );
    println!("  from scratch: median {:.1} ms", median(fresh));
    println!(
        "  next day (+-10% noise, hysteresis {}): median {:.1} ms, {changes} changes",
        params.hysteresis,
        median(daily)
    );
}
