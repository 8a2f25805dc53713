//! `outpost control-plane`: runs the control plane (the default) or imports policy, catalog and
//! content-key files into its database. Glue only: a TOML file (`--config`) and flags (which win)
//! make a [`control_plane::Config`]; the work is in the `control_plane` crate.
//!
//! With no flags it serves on 127.0.0.1:8700 with the embedded SQLite database, signing keys and
//! a generated master key in `./outpost-control-plane/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use control_plane::config::Secret;
use control_plane::import::Imported;
use control_plane::Config;

/// Flags for `outpost control-plane`. Each one overrides the same key of `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (keys as the flags below, with `_` for `-`).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8700].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the SQLite database, keys and master key [default: ./outpost-control-plane].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://FILE` or `postgres://...`) [default: DATA_DIR/control-plane.db].
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// Most database connections [default: 1 for SQLite, 8 for PostgreSQL].
    #[arg(long)]
    pub db_max_connections: Option<u32>,
    /// Base URL players and appliances reach this service at (default: `http://<bound address>`).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Content-key master key, 64 hex digits.
    #[arg(
        long,
        global = true,
        env = "OUTPOST_MASTER_KEY",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// Bearer token of the admin API (disabled without one).
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Directory of grant signing keys [default: DATA_DIR/keys].
    #[arg(long, value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Grant issuer.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Lease length in seconds.
    #[arg(long)]
    pub lease_secs: Option<u64>,
    /// Heartbeat interval announced to players, seconds.
    #[arg(long)]
    pub heartbeat_interval_secs: Option<u64>,
    /// Grant lifetime in seconds (at most 21600).
    #[arg(long)]
    pub grant_ttl_secs: Option<u64>,
    /// Serve `GET /v1/fleet` without the admin token.
    #[arg(long)]
    pub fleet_view_public: bool,
    /// Steering manifest TTL in seconds.
    #[arg(long)]
    pub steering_ttl_secs: Option<u64>,
    /// Longest ranked appliance list.
    #[arg(long)]
    pub steering_max: Option<usize>,
    /// Skip appliances whose load is above this fraction.
    #[arg(long)]
    pub load_threshold: Option<f64>,
    /// Heartbeat interval announced to appliances, seconds.
    #[arg(long)]
    pub appliance_heartbeat_secs: Option<u64>,
    /// Mark an appliance offline after this many seconds without a heartbeat.
    #[arg(long)]
    pub appliance_offline_after_secs: Option<u64>,
    /// Session starts per account per minute.
    #[arg(long)]
    pub session_starts_per_minute: Option<u32>,
    /// Burst of session starts per account.
    #[arg(long)]
    pub session_start_burst: Option<u32>,
    /// Make a new signing key this often, seconds.
    #[arg(long)]
    pub key_rotate_secs: Option<u64>,
    /// Publish a new key this long before it signs, seconds.
    #[arg(long)]
    pub key_prepublish_secs: Option<u64>,
    /// Cache policy and fleet tables this long, milliseconds.
    #[arg(long)]
    pub snapshot_ttl_ms: Option<u64>,
    /// `[fill]` settings, each `--fill-<key>`.
    #[command(flatten)]
    pub fill: FillFlags,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags for the `[fill]` table of the configuration (same keys, `fill_` prefix).
#[derive(Debug, clap::Args)]
pub struct FillFlags {
    /// S3-compatible bucket holding the packager's output, offered as the last origin source.
    #[arg(long, global = true, value_name = "BUCKET")]
    pub fill_s3_bucket: Option<String>,
    /// Key prefix inside the S3 bucket.
    #[arg(long, global = true, value_name = "PREFIX")]
    pub fill_s3_prefix: Option<String>,
    /// Appliances fetch their fill plan again within this many seconds.
    #[arg(long, global = true)]
    pub fill_plan_refresh_secs: Option<u64>,
    /// Recompute a cluster's placement at most this often, seconds.
    #[arg(long, global = true)]
    pub fill_plan_cache_secs: Option<u64>,
    /// Lifetime of fill grants, seconds.
    #[arg(long, global = true)]
    pub fill_grant_ttl_secs: Option<u64>,
    /// Sliding window of the popularity estimate, seconds.
    #[arg(long, global = true)]
    pub fill_popularity_window_secs: Option<u64>,
    /// Weight of the forecast feed against observed views, 0..=1.
    #[arg(long, global = true)]
    pub fill_forecast_weight: Option<f64>,
    /// Views per window one copy carries.
    #[arg(long, global = true)]
    pub fill_views_per_copy: Option<f64>,
    /// Most copies of a title per cluster (0 = every appliance).
    #[arg(long, global = true)]
    pub fill_max_copies: Option<usize>,
    /// Swap cost: a held title is displaced only by one this many times more popular.
    #[arg(long, global = true)]
    pub fill_hysteresis: Option<f64>,
    /// Share of each appliance's capacity the planner fills.
    #[arg(long, global = true)]
    pub fill_capacity_fraction: Option<f64>,
    /// Titles imported this recently are urgent new releases, seconds.
    #[arg(long, global = true)]
    pub fill_new_release_secs: Option<u64>,
    /// Titles with a content miss this recently are urgent, seconds.
    #[arg(long, global = true)]
    pub fill_miss_urgent_secs: Option<u64>,
    /// Titles with low QoE on a cluster this recently are urgent there (+1 copy), seconds; 0 = off.
    #[arg(long, global = true)]
    pub fill_qoe_urgent_secs: Option<u64>,
    /// Fewest QoE reports of a title before its QoE counts.
    #[arg(long, global = true)]
    pub fill_qoe_min_sessions: Option<u32>,
    /// Share of bad QoE reports (starved, or throughput below bitrate) that makes a title urgent.
    #[arg(long, global = true)]
    pub fill_qoe_bad_share: Option<f64>,
    /// Most titles per cluster urgent for low QoE at once.
    #[arg(long, global = true)]
    pub fill_qoe_max_titles: Option<usize>,
    /// Most source appliances listed per source cluster.
    #[arg(long, global = true)]
    pub fill_sources_per_cluster: Option<usize>,
    /// Let plans of origin clusters list removals (off: origin appliances never delete).
    #[arg(long, global = true)]
    pub fill_origin_removals: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Validate the configuration and probe this host (data directory, database, master key,
    /// listen address, file-descriptor limit, clock sync), like `nginx -t`: one line per item,
    /// `ok`/`warning`/`error` with the fix; exits 1 on any error.
    Check,
    /// Import files: a policy (TOML or JSON: plans, accounts, device_classes, geo, windows,
    /// sites, clusters, appliances, api_keys; example: control-plane/tests/data/policy.toml), a
    /// packager `catalog.json` (its sibling `manifest.mpd` and `master.m3u8` are read too), a
    /// content-keys JSON file or a popularity forecast feed (JSON `{"forecast": [{"country":
    /// "NZ", "titles": [{"title": "...", "views": 1200}, ...]}]}`, most watched first).
    Import {
        /// Files to import, in order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print a cluster's fill plan computed from the database now: per appliance the titles to
    /// hold, to add and to remove, with reasons and bytes (read-only: nothing is published).
    FillPlan {
        /// Cluster id (from the policy).
        #[arg(long, value_name = "ID")]
        cluster: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut c: Config = match &args.config {
        Some(p) => crate::config::load_toml(p)?,
        None => Config::default(),
    };
    macro_rules! flag {
        ($($f:ident),*) => { $( if let Some(v) = &args.$f { c.$f = v.clone(); } )* };
    }
    flag!(
        listen,
        data_dir,
        issuer,
        lease_secs,
        heartbeat_interval_secs,
        grant_ttl_secs,
        steering_ttl_secs,
        steering_max,
        load_threshold,
        appliance_heartbeat_secs,
        appliance_offline_after_secs,
        session_starts_per_minute,
        session_start_burst,
        key_rotate_secs,
        key_prepublish_secs,
        snapshot_ttl_ms
    );
    macro_rules! fill_flag {
        ($($f:ident => $k:ident),*) => { $( if let Some(v) = &args.fill.$f { c.fill.$k = v.clone(); } )* };
    }
    fill_flag!(
        fill_s3_prefix => s3_prefix,
        fill_plan_refresh_secs => plan_refresh_secs,
        fill_plan_cache_secs => plan_cache_secs,
        fill_grant_ttl_secs => grant_ttl_secs,
        fill_popularity_window_secs => popularity_window_secs,
        fill_forecast_weight => forecast_weight,
        fill_views_per_copy => views_per_copy,
        fill_max_copies => max_copies,
        fill_hysteresis => hysteresis,
        fill_capacity_fraction => capacity_fraction,
        fill_new_release_secs => new_release_secs,
        fill_miss_urgent_secs => miss_urgent_secs,
        fill_qoe_urgent_secs => qoe_urgent_secs,
        fill_qoe_min_sessions => qoe_min_sessions,
        fill_qoe_bad_share => qoe_bad_share,
        fill_qoe_max_titles => qoe_max_titles,
        fill_sources_per_cluster => sources_per_cluster
    );
    if args.fill.fill_origin_removals {
        c.fill.origin_removals = true;
    }
    if let Some(v) = &args.fill.fill_s3_bucket {
        c.fill.s3_bucket = Some(v.clone());
    }
    if let Some(v) = args.db_max_connections {
        c.db_max_connections = Some(v);
    }
    if args.fleet_view_public {
        c.fleet_view_public = true;
    }
    if let Some(v) = &args.database {
        c.database = Some(v.clone());
    }
    if let Some(v) = &args.public_url {
        c.public_url = Some(v.clone());
    }
    if let Some(v) = &args.keys_dir {
        c.keys_dir = Some(v.clone());
    }
    if let Some(v) = &args.master_key {
        c.master_key = Some(Secret(v.clone()));
    }
    if let Some(v) = &args.admin_token {
        c.admin_token = Some(Secret(v.clone()));
    }
    c.validate().map_err(|e| match &args.config {
        Some(p) => anyhow::anyhow!("config file {}: {e}", p.display()),
        None => anyhow::anyhow!("{e}"),
    })?;
    Ok(c)
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Command::Check) = &args.command {
        return super::check::control_plane(config(&args));
    }
    let cfg = config(&args)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match &args.command {
        None | Some(Command::Serve) => {
            // Ctrl-C, or SIGTERM from a supervisor (systemd, the demo, a test): both drain and
            // exit 0. Caught from here on, before the listening line below.
            let shutdown = {
                let _runtime = rt.enter();
                super::shutdown_signal()
            };
            rt.block_on(control_plane::serve(
                cfg,
                |addr| {
                    println!("control plane listening on http://{addr}");
                },
                shutdown,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check) => unreachable!("handled above"),
        Some(Command::Import { files }) => {
            let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            for imported in rt.block_on(control_plane::import_files(&cfg, &paths))? {
                match imported {
                    Imported::Policy(s) => println!("imported policy: {s}"),
                    Imported::Title(t) => println!("imported title {t}"),
                    Imported::Keys(t, n) => println!("imported {n} content keys for {t}"),
                    Imported::Forecast(c, n) => {
                        println!("imported forecast: {n} titles in {c} countries")
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::FillPlan { cluster, json }) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let report = rt
                .block_on(control_plane::fill::edge::report_from_config(
                    &cfg, cluster, now,
                ))
                .with_context(|| format!("planning cluster {cluster}"))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", fill_table(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The readable form of a cluster's fill plan.
fn fill_table(r: &control_plane::fill::edge::ClusterReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let countries = if r.countries.is_empty() {
        "every country".to_owned()
    } else {
        r.countries.join(", ")
    };
    let _ = writeln!(
        s,
        "cluster {} ({}), content region: {countries}",
        r.cluster,
        r.kind.as_str()
    );
    if r.appliances.is_empty() {
        let _ = writeln!(
            s,
            "no appliance of this cluster is planned yet (appliances are planned once they report their drives)"
        );
    }
    for a in &r.appliances {
        let sum = |l: &[control_plane::fill::edge::ReportLine]| l.iter().map(|x| x.bytes).sum();
        let _ = writeln!(
            s,
            "\nappliance {}: capacity {}, hold {} ({}), add {} ({}), remove {} ({})",
            a.appliance,
            bytes(a.capacity_bytes),
            a.hold.len(),
            bytes(sum(&a.hold)),
            a.add.len(),
            bytes(sum(&a.add)),
            a.remove.len(),
            bytes(sum(&a.remove)),
        );
        let width = a
            .hold
            .iter()
            .chain(&a.add)
            .chain(&a.remove)
            .map(|l| l.title.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            s,
            "  {:<6}  {:<width$}  {:>10}  REASON",
            "ACTION", "TITLE", "BYTES"
        );
        for (action, list) in [("hold", &a.hold), ("add", &a.add), ("remove", &a.remove)] {
            for l in list {
                let _ = writeln!(
                    s,
                    "  {action:<6}  {:<width$}  {:>10}  {}",
                    l.title,
                    bytes(l.bytes),
                    l.reason
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nchanges against the last published placement: {}",
        r.changes.len()
    );
    for c in &r.changes {
        let _ = writeln!(
            s,
            "  {:<6}  {}  {}: {}",
            c.action.as_str(),
            c.appliance,
            c.title,
            c.reason
        );
    }
    if !r.short.is_empty() {
        let _ = writeln!(
            s,
            "short of room (fewer copies than wanted): {}",
            r.short.join(", ")
        );
    }
    s
}
