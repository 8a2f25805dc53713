//! Fleet simulator for fill (issue 8): days of one country's demand served under several content
//! placement policies, driving the real planner ([`control_plane::fill::plan_cluster`], the
//! popularity estimator, `fill::sources::ordered_sources`) and the real steering
//! ([`control_plane::steering::Fleet::rank`]); nothing of them is copied here.
//!
//! ```text
//! cargo bench -p control_plane --bench fill_sim -- [--days N] [--warmup N] [--seed S] [--titles N] [--variants]
//! ```
//!
//! - [`world`]: the country (20 ISP clusters of 2–8 appliances with 4–8 TB each, an exchange
//!   cluster, origin), a catalog with drifting Zipf popularity and daily releases, and each
//!   [`world::Day`]'s sessions, forecast feed and outages. Deterministic for a seed.
//! - [`policy`]: Outpost's planner, LRU pull-through caching, an oracle that knows the day's
//!   sessions and one that knows only the day's expected demand (a perfect forecaster), each a
//!   [`policy::Policy`] fed the same days. `--variants` adds planner rows with one `[fill]`
//!   change each (and LRU by whole title) to show what limits the defaults.
//!
//! The first `--warmup` days (default 2) fill the caches and are not measured. The result is a
//! Markdown table on stdout (progress on stderr); the run fails if its accounting does not add
//! up. Results and their reading: `BENCHMARKS.md`, "Fill: fleet simulation".

#[path = "fill_sim/policy.rs"]
mod policy;
#[path = "fill_sim/world.rs"]
mod world;

use std::process::ExitCode;
use std::time::Instant;

use control_plane::config::FillConfig;

use policy::{Policy, Strategy, WINDOW_CAP};
use world::{World, TB};

/// Command-line settings.
#[derive(Debug, Clone, Copy)]
struct Args {
    days: usize,
    warmup: usize,
    seed: u64,
    titles: usize,
    variants: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        days: 7,
        warmup: 2,
        seed: 1,
        titles: 20_000,
        variants: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        if flag == "--variants" {
            args.variants = true;
            continue;
        }
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: {v:?} is not a non-negative integer"))
        };
        match flag.as_str() {
            "--days" => args.days = value("--days")? as usize,
            "--warmup" => args.warmup = value("--warmup")? as usize,
            "--seed" => args.seed = value("--seed")?,
            "--titles" => args.titles = value("--titles")? as usize,
            other => {
                return Err(format!(
                "unknown argument {other:?} (expected --days N, --warmup N, --seed S, --titles N, --variants)"
            ))
            }
        }
    }
    if args.days == 0 {
        return Err("--days must be at least 1".into());
    }
    if args.titles < 100 {
        return Err("--titles must be at least 100".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fill_sim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let total_days = args.warmup + args.days;
    let mut world = World::new(args.seed, args.titles, total_days);
    let planner = |name: &str, cfg: FillConfig, per_cluster: bool| {
        Policy::new(
            name,
            Strategy::Planner { cfg, per_cluster },
            &world,
            args.seed,
        )
    };
    let defaults = FillConfig::default();
    let mut policies = vec![planner(
        "Outpost planner (`[fill]` defaults)",
        defaults.clone(),
        false,
    )];
    if args.variants {
        for (name, cfg, per_cluster) in variants(&defaults) {
            policies.push(planner(&name, cfg, per_cluster));
        }
    }
    policies.push(Policy::new(
        "LRU pull-through",
        Strategy::Lru {
            per_rendition: true,
        },
        &world,
        args.seed,
    ));
    if args.variants {
        policies.push(Policy::new(
            "LRU pull-through, whole titles",
            Strategy::Lru {
                per_rendition: false,
            },
            &world,
            args.seed,
        ));
    }
    policies.push(Policy::new(
        "Expected-demand oracle (perfect forecast)",
        Strategy::Oracle { realized: false },
        &world,
        args.seed,
    ));
    policies.push(Policy::new(
        "Oracle (knows the day's sessions)",
        Strategy::Oracle { realized: true },
        &world,
        args.seed,
    ));
    let mut history: Vec<world::Day> = Vec::new();
    for d in 0..total_days {
        let day = world.next_day();
        if d == args.warmup {
            for p in &mut policies {
                p.stats = Default::default();
            }
        }
        for p in &mut policies {
            let t = Instant::now();
            p.run_day(&world, &day, &history);
            eprintln!(
                "day {d} ({}): {} sessions, {} in {:.1}s, offload {:.1}%",
                if d < args.warmup {
                    "warm-up"
                } else {
                    "measured"
                },
                day.sessions.len(),
                p.name,
                t.elapsed().as_secs_f64(),
                100.0 * p.stats.offload()
            );
        }
        history.push(day);
        if history.len() > HISTORY_DAYS {
            history.remove(0);
        }
    }
    report(&args, &world, &policies);
    eprintln!("fill_sim: {:.0}s", started.elapsed().as_secs_f64());
    let broken: Vec<String> = policies.iter().flat_map(check).collect();
    for b in &broken {
        eprintln!("fill_sim: inconsistent result: {b}");
    }
    if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The accounting identities a run must satisfy; a violation means a bug in the simulator.
fn check(p: &Policy) -> Vec<String> {
    let s = &p.stats;
    let mut out = Vec::new();
    if s.embedded + s.exchange + s.origin != s.bytes {
        out.push(format!(
            "{}: embedded + exchange + origin bytes != bytes served",
            p.name
        ));
    }
    if s.content_misses + s.health_misses > s.sessions {
        out.push(format!("{}: more misses than sessions", p.name));
    }
    if s.fill_upstream > s.fill || s.fill_in_window > s.fill {
        out.push(format!("{}: fill parts exceed the fill", p.name));
    }
    if p.is_proactive() {
        if s.max_appliance_day_fill > WINDOW_CAP {
            out.push(format!(
                "{}: an appliance fetched over the window cap",
                p.name
            ));
        }
        if s.fill_in_window != s.fill || s.fill > s.fill_planned {
            out.push(format!("{}: fill outside the window or the plan", p.name));
        }
    }
    out
}

/// Days of sessions kept for the popularity window (the variants use up to 3).
const HISTORY_DAYS: usize = 3;

/// Planner variants (`--variants`): one `[fill]` change each, to see what limits the defaults.
fn variants(d: &FillConfig) -> Vec<(String, FillConfig, bool)> {
    let with = |f: &dyn Fn(&mut FillConfig)| {
        let mut c = d.clone();
        f(&mut c);
        c
    };
    vec![
        (
            "planner, `hysteresis = 1.25` (the old default)".into(),
            with(&|c| c.hysteresis = 1.25),
            false,
        ),
        (
            "planner, `views_per_copy = 500`".into(),
            with(&|c| c.views_per_copy = 500.0),
            false,
        ),
        (
            "planner, `max_copies = 1`".into(),
            with(&|c| c.max_copies = 1),
            false,
        ),
        (
            "planner, 2-day `popularity_window_secs`".into(),
            with(&|c| c.popularity_window_secs = 2 * 86_400),
            false,
        ),
        (
            "planner, 3-day `popularity_window_secs`".into(),
            with(&|c| c.popularity_window_secs = 3 * 86_400),
            false,
        ),
        ("planner, per-cluster popularity".into(), d.clone(), true),
    ]
}

fn report(args: &Args, world: &World, policies: &[Policy]) {
    let embedded = &world.clusters[..world.embedded];
    let appliances: usize = embedded.iter().map(|c| c.appliances.len()).sum();
    let capacity: u64 = embedded
        .iter()
        .flat_map(|c| &c.appliances)
        .map(|&a| world.appliances[a].capacity)
        .sum();
    let catalog: u64 = world.titles[..args.titles].iter().map(|t| t.bytes).sum();
    println!(
        "Seed {}, {} measured days after {} warm-up days; {} catalog titles ({:.0} TB) + {} \
         releases/day; {} embedded clusters, {} appliances, {:.0} TB embedded; fill cap {:.2} TB \
         per appliance and window.\n",
        args.seed,
        args.days,
        args.warmup,
        args.titles,
        catalog as f64 / TB as f64,
        world::NEW_PER_DAY,
        world.embedded,
        appliances,
        capacity as f64 / TB as f64,
        WINDOW_CAP as f64 / TB as f64,
    );
    let oracle = policies
        .iter()
        .find(|p| p.name.starts_with("Oracle"))
        .map_or(1.0, |p| p.stats.offload());
    let forecast = policies
        .iter()
        .find(|p| p.name.starts_with("Expected-demand"))
        .map_or(1.0, |p| p.stats.offload());
    println!(
        "| policy | offload | of oracle's | of perfect forecast's | fill TB/day (from upstream) | fill done / planned | \
         fill in window | max fill per appliance-day | upstream peak Gb/s: serving (with fill) \
         | content misses | health misses |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for p in policies {
        let s = &p.stats;
        let days = s.days.max(1) as f64;
        let sessions = s.sessions.max(1) as f64;
        let (serving, with_fill) = s.upstream_peak_gbps();
        println!(
            "| {} | {:.1}% | {:.1}% | {:.1}% | {:.1} ({:.1}) | {} | {:.0}% | {:.2} TB{} | {:.0} ({:.0}) | {:.1}% | {:.2}% |",
            p.name,
            100.0 * s.offload(),
            100.0 * s.offload() / oracle.max(1e-9),
            100.0 * s.offload() / forecast.max(1e-9),
            s.fill as f64 / TB as f64 / days,
            s.fill_upstream as f64 / TB as f64 / days,
            if s.fill_planned == 0 {
                "pull on miss".to_owned()
            } else {
                format!("{:.0}%", 100.0 * s.fill as f64 / s.fill_planned as f64)
            },
            100.0 * s.fill_in_window as f64 / s.fill.max(1) as f64,
            s.max_appliance_day_fill as f64 / TB as f64,
            if s.max_appliance_day_fill > WINDOW_CAP {
                " (over the cap)"
            } else {
                ""
            },
            serving,
            with_fill,
            100.0 * s.content_misses as f64 / sessions,
            100.0 * s.health_misses as f64 / sessions,
        );
    }
}
