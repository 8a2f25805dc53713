//! `outpost appliance`: runs the segment server an ISP hosts. Glue only: reads `--config` (strict
//! TOML, keys as the flags with `_` for `-`), lets flags override it, loads the public keys and
//! the cache, and hands everything to `appliance::server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use appliance::agent::{self, AgentConfig};
use appliance::cache::{Gate, Store};
use appliance::conn::Timeouts;
use appliance::fill::{FillConfig, FillWindow, RemovalMode, RemovalPolicy, S3Settings};
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::grant::Verifier;
use serde::Deserialize;

/// Flags for `outpost appliance`. Each overrides the same key of `--config`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Appliance id, sent in every response's `Outpost-Appliance` header (default: the
    /// hostname, else the listen address).
    #[arg(long)]
    id: Option<String>,
    /// Data-plane listen address (default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin listen address for /metrics, /healthz, /readyz (default 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// This appliance's cluster id (grants must name it in `aud`).
    #[arg(long)]
    cluster: Option<String>,
    /// Directory of `<kid>.pub.pem` grant public keys (re-read on SIGHUP).
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// A cache directory (one per drive); repeat for several.
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dirs: Vec<PathBuf>,
    /// Per-drive capacity in bytes (default: the file system's size).
    #[arg(long, value_name = "BYTES")]
    drive_capacity_bytes: Option<u64>,
    /// Data-plane threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// I/O backend: auto (io_uring if the probe succeeds, else epoll), io_uring, epoll.
    #[arg(long)]
    backend: Option<String>,
    /// Most open client connections (default 100000).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a client may take to send a request head (default 10).
    #[arg(long, value_name = "SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection is kept (default 60).
    #[arg(long, value_name = "SECS")]
    idle_timeout_secs: Option<u64>,
    /// Seconds SIGTERM waits for in-flight responses (default 30).
    #[arg(long, value_name = "SECS")]
    drain_timeout_secs: Option<u64>,
    /// Log one request in this many to the access log (0: none; default 100).
    #[arg(long, value_name = "N")]
    access_log_every: Option<u64>,
    // QoE (issue 16): CMCD / CMSD / JSON access log.
    #[command(flatten)]
    qoe: QoeArgs,
    /// TLS listen address (needs --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// TLS certificate chain, PEM (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve only titles whose catalog.json is present and complete (always on with
    /// --control-plane; without it, hand-placed directories without catalog.json are served).
    #[arg(long)]
    require_catalog: bool,
    /// Control-plane base URL (http://host:port): runs the fleet agent (registration,
    /// heartbeats, key cache in --public-keys, fill plan and fill).
    #[arg(long, value_name = "URL")]
    control_plane: Option<String>,
    /// The shared secret the control plane's policy lists for this appliance.
    #[arg(
        long,
        value_name = "SECRET",
        env = "OUTPOST_APPLIANCE_CREDENTIAL",
        hide_env_values = true
    )]
    credential: Option<String>,
    /// A file holding the credential (first line).
    #[arg(long, value_name = "FILE")]
    credential_file: Option<PathBuf>,
    /// Address announced to the control plane at registration (default: the listen address
    /// unless it is a wildcard, then the policy's address is kept).
    #[arg(long, value_name = "HOST")]
    advertise_address: Option<String>,
    /// Port announced to the control plane at registration (default: the bound port).
    #[arg(long, value_name = "PORT")]
    advertise_port: Option<u16>,
    /// Seconds the control plane may be unreachable before the outage is logged (default 60);
    /// serving never stops.
    #[arg(long, value_name = "SECS")]
    control_plane_grace: Option<u64>,
    /// Fill window, local time: HH:MM-HH:MM (may wrap past midnight) or `always`
    /// (default 02:00-14:00). Outside it only urgent titles are fetched.
    #[arg(long, value_name = "WINDOW")]
    fill_window: Option<String>,
    /// Total fill download rate, megabits per second (default: unlimited).
    #[arg(long, value_name = "MBPS")]
    fill_rate_mbps: Option<f64>,
    /// Most files downloading at once (default 4).
    #[arg(long, value_name = "N")]
    fill_concurrency: Option<usize>,
    /// Pace fill: spread the bytes still to fetch over what is left of the window (capped by
    /// --fill-rate-mbps) instead of starting at full rate when it opens; urgent titles always go
    /// at full rate.
    #[arg(long)]
    fill_pace: bool,
    /// Whether fill plans may delete content here: `plan` (titles the plan lists as removable,
    /// after the grace period) or `never` (origin appliances; a frozen cache). Default `plan`.
    #[arg(long, value_name = "plan|never")]
    fill_removals: Option<String>,
    /// Seconds a title must have been listed as removable before it is deleted (default 3600).
    #[arg(long, value_name = "SECS")]
    fill_removal_grace: Option<u64>,
    /// Consecutive plans that must list a title as removable before it is deleted (default 3).
    #[arg(long, value_name = "N")]
    fill_removal_plans: Option<u32>,
    /// Largest share of the held titles one plan may remove; a plan listing more is refused as
    /// suspect (default 0.5).
    #[arg(long, value_name = "SHARE")]
    fill_max_removal_share: Option<f64>,
    /// S3-compatible origin endpoint for S3 fill sources (http(s)://host:port).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 signing region (default us-east-1).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
    /// Allow a plain-http S3 endpoint.
    #[arg(long)]
    s3_allow_http: bool,
    // ---- `outpost appliance check` (src/commands/check.rs) ----
    #[command(subcommand)]
    command: Option<Command>,
    // --- BGP (issue 14) ---
    /// Accept BGP sessions on this address (e.g. 127.0.0.1:1179); needs --bgp-asn,
    /// --bgp-router-id and at least one --bgp-peer.
    #[arg(long, value_name = "ADDR")]
    bgp_listen: Option<SocketAddr>,
    /// This appliance's AS number (4-octet allowed).
    #[arg(long, value_name = "N")]
    bgp_asn: Option<u32>,
    /// BGP identifier (an IPv4 address unique among the router's neighbours).
    #[arg(long, value_name = "IP")]
    bgp_router_id: Option<std::net::Ipv4Addr>,
    /// A BGP neighbour: `ip[:port],asn[,passive]` (repeat for several; without `passive` the
    /// appliance also connects out to it, port default 179).
    #[arg(long = "bgp-peer", value_name = "PEER")]
    bgp_peers: Vec<String>,
    /// Proposed hold time, seconds (0, or at least 3; default 90).
    #[arg(long, value_name = "S")]
    bgp_hold_time: Option<u16>,
    /// Seconds without any established BGP session before the appliance reports itself
    /// unsteerable for BGP-fed prefixes (default 300).
    #[arg(long, value_name = "S")]
    bgp_grace_secs: Option<u64>,
    // --- end BGP ---
}

/// `outpost appliance` subcommands (the default serves).
#[derive(Debug, Clone, clap::Subcommand)]
enum Command {
    /// Validate the configuration and probe this host (io_uring, cachestat, kernel TLS, cache
    /// drives, file-descriptor limit, clock sync, public keys, control plane), like `nginx -t`:
    /// one line per item, `ok`/`warning`/`error` with the fix; exits 1 on any error.
    Check,
}

/// The appliance's settings as `run` resolves them from flags and `--config` (also what
/// `outpost appliance check` probes).
pub(crate) struct Resolved {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub cluster: String,
    pub keys_dir: PathBuf,
    pub cache_dirs: Vec<PathBuf>,
    pub backend: BackendChoice,
    pub threads: usize,
    pub id: String,
    pub max_connections: usize,
    pub agent: Option<AgentConfig>,
    /// The BGP speaker's settings, when peers are configured.
    pub bgp: Option<appliance::bgp::BgpConfig>,
    args: Args,
    file: Config,
}

/// Reads `--config` and the flags and checks them: the same rules for `run` and `check`.
pub(crate) fn resolve(args: Args) -> anyhow::Result<Resolved> {
    let file: Config = match &args.config {
        Some(p) => crate::config::load_toml(p)?,
        None => Config::default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
    let admin_listen = args
        .admin_listen
        .or(file.admin_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    let Some(cluster) = args.cluster.clone().or(file.cluster.clone()) else {
        bail!("--cluster (config key `cluster`) is required: the cluster id grants must name");
    };
    let Some(keys_dir) = args.public_keys.clone().or(file.public_keys.clone()) else {
        bail!("--public-keys (config key `public_keys`) is required: a directory of <kid>.pub.pem");
    };
    let cache_dirs = if args.cache_dirs.is_empty() {
        file.cache_dirs.clone()
    } else {
        args.cache_dirs.clone()
    };
    if cache_dirs.is_empty() {
        bail!("at least one --cache-dir (config key `cache_dirs`) is required");
    }
    let backend: BackendChoice = args
        .backend
        .clone()
        .or(file.backend.clone())
        .unwrap_or_else(|| "auto".into())
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--backend (config key `backend`): {e}"))?;
    let threads = args
        .threads
        .or(file.threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--threads (config key `threads`) must be at least 1");
    }
    let id = args
        .id
        .clone()
        .or(file.id.clone())
        .or_else(hostname)
        .unwrap_or_else(|| listen.to_string());
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(100_000);
    let agent = agent_config(&args, &file, &id, listen, &keys_dir, max_connections)?;
    let bgp = bgp_config(&args, &file)?;
    Ok(Resolved {
        listen,
        admin_listen,
        cluster,
        keys_dir,
        cache_dirs,
        backend,
        threads,
        id,
        max_connections,
        agent,
        bgp,
        args,
        file,
    })
}

impl Args {
    /// `--config`, if given.
    pub(crate) fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

/// Dispatches `outpost appliance [check]`.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Command::Check) => super::check::appliance(args),
        None => run(args),
    }
}
// ---- end of `check` block ----

/// The configuration file: the same keys as the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    id: Option<String>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    cluster: Option<String>,
    public_keys: Option<PathBuf>,
    #[serde(default)]
    cache_dirs: Vec<PathBuf>,
    drive_capacity_bytes: Option<u64>,
    threads: Option<usize>,
    backend: Option<String>,
    max_connections: Option<usize>,
    header_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    drain_timeout_secs: Option<u64>,
    access_log_every: Option<u64>,
    // QoE (issue 16): the same keys as `QoeArgs`' flags.
    access_log: Option<String>,
    access_log_sample: Option<f64>,
    access_log_max_bytes: Option<u64>,
    access_log_keep: Option<u32>,
    cmsd_overload: Option<u64>,
    cmsd_max_bitrate_kbps: Option<u64>,
    no_qoe: Option<bool>,
    tls_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    require_catalog: Option<bool>,
    control_plane: Option<String>,
    credential: Option<String>,
    credential_file: Option<PathBuf>,
    advertise_address: Option<String>,
    advertise_port: Option<u16>,
    control_plane_grace: Option<u64>,
    fill_window: Option<String>,
    fill_rate_mbps: Option<f64>,
    fill_concurrency: Option<usize>,
    fill_pace: Option<bool>,
    fill_removals: Option<String>,
    fill_removal_grace: Option<u64>,
    fill_removal_plans: Option<u32>,
    fill_max_removal_share: Option<f64>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_allow_http: Option<bool>,
    /// S3 access key id (else the AWS_ACCESS_KEY_ID environment variable).
    s3_access_key_id: Option<String>,
    /// S3 secret access key (else AWS_SECRET_ACCESS_KEY).
    s3_secret_access_key: Option<String>,
    /// Log line format, `text` or `json` (read in main.rs before logging starts; the
    /// `--log-format` flag wins).
    #[allow(dead_code)]
    log_format: Option<crate::cli::LogFormat>,
    // --- BGP (issue 14) ---
    bgp_listen: Option<SocketAddr>,
    bgp_asn: Option<u32>,
    bgp_router_id: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    bgp_peers: Vec<String>,
    bgp_hold_time: Option<u16>,
    bgp_grace_secs: Option<u64>,
    // --- end BGP ---
}

// --- BGP (issue 14) ---
/// The BGP speaker's settings (`None` when neither flags nor file configure a peer).
fn bgp_config(args: &Args, file: &Config) -> anyhow::Result<Option<appliance::bgp::BgpConfig>> {
    let peers = if args.bgp_peers.is_empty() {
        &file.bgp_peers
    } else {
        &args.bgp_peers
    };
    let listen = args.bgp_listen.or(file.bgp_listen);
    let asn = args.bgp_asn.or(file.bgp_asn);
    if peers.is_empty() {
        if listen.is_some() || asn.is_some() {
            bail!("--bgp-listen/--bgp-asn need at least one --bgp-peer (config key `bgp_peers`)");
        }
        return Ok(None);
    }
    let Some(asn) = asn else {
        bail!("--bgp-peer needs --bgp-asn (config key `bgp_asn`)");
    };
    let Some(router_id) = args.bgp_router_id.or(file.bgp_router_id) else {
        bail!("--bgp-peer needs --bgp-router-id (config key `bgp_router_id`)");
    };
    let peers = peers
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<appliance::bgp::PeerConfig>, String>>()
        .map_err(|e| anyhow::anyhow!("--bgp-peer (config key `bgp_peers`): {e}"))?;
    let cfg = appliance::bgp::BgpConfig {
        listen,
        asn,
        router_id,
        peers,
        hold_time: args.bgp_hold_time.or(file.bgp_hold_time).unwrap_or(90),
        grace: Duration::from_secs(args.bgp_grace_secs.or(file.bgp_grace_secs).unwrap_or(300)),
        connect_retry: Duration::from_secs(5),
        rib_settle: Duration::from_secs(5),
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{e} (flags --bgp-*, config keys bgp_*)"))?;
    Ok(Some(cfg))
}
// --- end BGP ---

/// Builds the fleet agent's settings from flags and file (`None` without `--control-plane`).
fn agent_config(
    args: &Args,
    file: &Config,
    id: &str,
    listen: SocketAddr,
    keys_dir: &std::path::Path,
    max_connections: usize,
) -> anyhow::Result<Option<AgentConfig>> {
    let Some(control_plane) = args.control_plane.clone().or(file.control_plane.clone()) else {
        return Ok(None);
    };
    let credential = match (
        args.credential.clone().or(file.credential.clone()),
        args.credential_file.clone().or(file.credential_file.clone()),
    ) {
        (Some(c), _) => c,
        (None, Some(p)) => std::fs::read_to_string(&p)
            .with_context(|| format!("--credential-file (config key `credential_file`) {}", p.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        (None, None) => bail!(
            "--control-plane needs --credential or --credential-file (config keys `credential`, `credential_file`)"
        ),
    };
    if credential.is_empty() {
        bail!("the appliance credential (--credential / --credential-file) is empty");
    }
    let window: FillWindow = args
        .fill_window
        .clone()
        .or(file.fill_window.clone())
        .unwrap_or_else(|| "02:00-14:00".into())
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--fill-window (config key `fill_window`): {e}"))?;
    let rate_bps = match args.fill_rate_mbps.or(file.fill_rate_mbps) {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 => Some((r * 1e6) as u64),
        Some(r) => {
            bail!("--fill-rate-mbps (config key `fill_rate_mbps`): {r} is not a positive number")
        }
    };
    let concurrency = args.fill_concurrency.or(file.fill_concurrency).unwrap_or(4);
    if concurrency == 0 || concurrency > 256 {
        bail!("--fill-concurrency (config key `fill_concurrency`) must be between 1 and 256");
    }
    let removal = removal_policy(args, file)?;
    let s3 = args
        .s3_endpoint
        .clone()
        .or(file.s3_endpoint.clone())
        .map(|endpoint| S3Settings {
            endpoint,
            region: args
                .s3_region
                .clone()
                .or(file.s3_region.clone())
                .unwrap_or_else(|| "us-east-1".into()),
            access_key_id: file
                .s3_access_key_id
                .clone()
                .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok())
                .unwrap_or_default(),
            secret_access_key: file
                .s3_secret_access_key
                .clone()
                .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok())
                .unwrap_or_default(),
            allow_http: args.s3_allow_http || file.s3_allow_http.unwrap_or(false),
        });
    Ok(Some(AgentConfig {
        control_plane,
        id: id.to_owned(),
        credential,
        // Without one, a specific listen address is announced; a wildcard one is not (the
        // policy's configured address stays).
        advertise_address: args
            .advertise_address
            .clone()
            .or(file.advertise_address.clone())
            .or_else(|| (!listen.ip().is_unspecified()).then(|| listen.ip().to_string())),
        advertise_port: args.advertise_port.or(file.advertise_port),
        key_dir: keys_dir.to_path_buf(),
        grace: Duration::from_secs(
            args.control_plane_grace
                .or(file.control_plane_grace)
                .unwrap_or(60),
        ),
        max_connections,
        fill: FillConfig {
            window,
            rate_bps,
            concurrency,
            pace: args.fill_pace || file.fill_pace.unwrap_or(false),
            s3,
            removal,
        },
        bgp: None,
    }))
}

/// `--fill-removals`, `--fill-removal-grace`, `--fill-removal-plans`, `--fill-max-removal-share`.
fn removal_policy(args: &Args, file: &Config) -> anyhow::Result<RemovalPolicy> {
    let d = RemovalPolicy::default();
    let mode: RemovalMode = match args.fill_removals.clone().or(file.fill_removals.clone()) {
        None => d.mode,
        Some(m) => m.parse().map_err(|e: String| {
            anyhow::anyhow!("--fill-removals (config key `fill_removals`): {e}")
        })?,
    };
    let min_plans = args
        .fill_removal_plans
        .or(file.fill_removal_plans)
        .unwrap_or(d.min_plans);
    if min_plans == 0 {
        bail!("--fill-removal-plans (config key `fill_removal_plans`) must be at least 1");
    }
    let max_share = args
        .fill_max_removal_share
        .or(file.fill_max_removal_share)
        .unwrap_or(d.max_share);
    if !(max_share.is_finite() && (0.0..=1.0).contains(&max_share)) {
        bail!(
            "--fill-max-removal-share (config key `fill_max_removal_share`): {max_share} is not between 0 and 1"
        );
    }
    Ok(RemovalPolicy {
        mode,
        grace: args
            .fill_removal_grace
            .or(file.fill_removal_grace)
            .map_or(d.grace, Duration::from_secs),
        min_plans,
        max_share,
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Runs the appliance until SIGTERM/SIGINT has drained it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Resolved {
        listen,
        admin_listen,
        cluster,
        keys_dir,
        cache_dirs,
        backend,
        threads,
        id,
        max_connections,
        agent: mut agent_cfg,
        bgp: bgp_cfg,
        args,
        file,
    } = resolve(args)?;
    // QoE: the flags merged with the file's keys.
    let qoe_args = args.qoe.merged(&file);
    let secs = |flag: Option<u64>, key: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(key).unwrap_or(default))
    };
    if let Some(a) = &agent_cfg {
        // The key directory is the agent's key cache: refresh it, or start with what it holds.
        match agent::bootstrap_keys(a) {
            Ok(kids) => {
                tracing::info!(?kids, dir = %keys_dir.display(), "grant public keys fetched from the control plane")
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %keys_dir.display(), "control plane unreachable at start-up: serving with the cached keys")
            }
        }
    }
    let gate = if agent_cfg.is_some() || args.require_catalog || file.require_catalog == Some(true)
    {
        Gate::RequireCatalog
    } else {
        Gate::Lenient
    };
    let ring = appliance::keys::load_dir(&keys_dir).context("--public-keys")?;
    tracing::info!(keys = ?ring.kids().collect::<Vec<_>>(), dir = %keys_dir.display(), "grant public keys loaded");
    let store = Arc::new(
        Store::open_with(
            &cache_dirs,
            args.drive_capacity_bytes.or(file.drive_capacity_bytes),
            gate,
        )
        .context("--cache-dir")?,
    );
    // QoE: built before `id` moves into the service config.
    let qoe = qoe_from_args(&qoe_args, &id)?;
    let mut svc = Service::new(
        ServiceConfig {
            id,
            access_log_every: args
                .access_log_every
                .or(file.access_log_every)
                .unwrap_or(100),
        },
        Verifier::new(ring, cluster),
        store,
        Arc::new(Metrics::default()),
    );
    if let Some(q) = qoe {
        svc = svc.with_qoe(Arc::new(q));
    }
    let svc = Arc::new(svc);
    let tls = match (
        args.tls_listen.or(file.tls_listen),
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (None, None, None) => None,
        (Some(listen), Some(cert), Some(key)) => Some(server::TlsConfig {
            listen,
            certs: Arc::new(appliance::tls::CertStore::open(&cert, &key).context("--tls-cert/--tls-key")?),
        }),
        _ => bail!("--tls-listen, --tls-cert and --tls-key (config keys tls_listen, tls_cert, tls_key) go together"),
    };
    let reload_certs = tls.as_ref().map(|t| t.certs.clone());
    let reload_svc = svc.clone();
    let reload: server::ReloadFn = Arc::new(move || {
        match appliance::keys::load_dir(&keys_dir) {
            Ok(ring) => {
                tracing::info!(keys = ?ring.kids().collect::<Vec<_>>(), "grant public keys reloaded");
                reload_svc.set_keys(ring);
            }
            Err(e) => tracing::error!(error = %e, "key reload failed; keeping the previous keys"),
        }
        if let Some(c) = &reload_certs {
            match c.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                }
            }
        }
    });
    let cfg = ServerConfig {
        listen,
        admin_listen: Some(admin_listen),
        threads,
        backend,
        max_connections,
        timeouts: Timeouts {
            header: secs(args.header_timeout_secs, file.header_timeout_secs, 10),
            idle: secs(args.idle_timeout_secs, file.idle_timeout_secs, 60),
        },
        drain_timeout: secs(args.drain_timeout_secs, file.drain_timeout_secs, 30),
        handle_signals: true,
        tls,
    };
    // --- BGP (issue 14) ---
    let bgp = match bgp_cfg {
        Some(c) => {
            let b = appliance::bgp::Bgp::start(c).context("--bgp-listen")?;
            svc.metrics().set_bgp(b.shared().clone());
            if let Some(a) = b.local_addr() {
                println!("bgp listening on {a}");
            }
            Some(b)
        }
        None => None,
    };
    if let (Some(a), Some(b)) = (agent_cfg.as_mut(), bgp.as_ref()) {
        a.bgp = Some(b.shared().clone());
    }
    // --- end BGP ---
    let running = server::start(cfg, svc.clone(), Some(reload))?;
    let agent = match agent_cfg.take() {
        Some(mut a) => {
            if a.advertise_port.is_none() {
                a.advertise_port = Some(running.local_addr.port());
            }
            tracing::info!(control_plane = a.control_plane, window = %a.fill.window, rate_bps = ?a.fill.rate_bps, concurrency = a.fill.concurrency, removals = %a.fill.removal.mode, removal_grace_secs = a.fill.removal.grace.as_secs(), "fleet agent starting");
            Some(agent::start(a, svc).context("fleet agent")?)
        }
        None => None,
    };
    println!(
        "appliance listening on {} (admin {}), backend {}, tls {}",
        running.local_addr,
        running
            .admin_addr
            .map_or_else(|| "-".into(), |a| a.to_string()),
        running.backend,
        running
            .tls_addr
            .map_or_else(|| "-".into(), |a| a.to_string()),
    );
    let result = running.wait();
    if let Some(a) = agent {
        a.stop();
    }
    drop(bgp);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// QoE (issue 16): the flags of `crate::qoe` in the appliance.
#[derive(Debug, Clone, clap::Args)]
pub struct QoeArgs {
    /// JSON-lines access log with each request's CMCD: a file path, or `-` for stdout.
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<String>,
    /// Fraction of requests written to --access-log, 0.0 to 1.0 (default 1.0).
    #[arg(long, value_name = "FRACTION")]
    access_log_sample: Option<f64>,
    /// Rotate --access-log before it exceeds this many bytes (default 100 MiB; 0: never).
    #[arg(long, value_name = "BYTES")]
    access_log_max_bytes: Option<u64>,
    /// Rotated access logs kept (default 5).
    #[arg(long, value_name = "N")]
    access_log_keep: Option<u32>,
    /// CMSD: the appliance is overloaded (sends `mb`) at or above this many connections.
    #[arg(long, value_name = "CONNECTIONS")]
    cmsd_overload: Option<u64>,
    /// CMSD: the max suggested bitrate (`mb`) sent while overloaded, kbps.
    #[arg(long, value_name = "KBPS")]
    cmsd_max_bitrate_kbps: Option<u64>,
    /// Turn QoE off: no CMCD parsing, CMSD headers or session summaries.
    #[arg(long)]
    no_qoe: bool,
}

impl QoeArgs {
    /// The flags, each falling back to the configuration file's key of the same name.
    fn merged(&self, file: &Config) -> QoeArgs {
        QoeArgs {
            access_log: self.access_log.clone().or(file.access_log.clone()),
            access_log_sample: self.access_log_sample.or(file.access_log_sample),
            access_log_max_bytes: self.access_log_max_bytes.or(file.access_log_max_bytes),
            access_log_keep: self.access_log_keep.or(file.access_log_keep),
            cmsd_overload: self.cmsd_overload.or(file.cmsd_overload),
            cmsd_max_bitrate_kbps: self.cmsd_max_bitrate_kbps.or(file.cmsd_max_bitrate_kbps),
            no_qoe: self.no_qoe || file.no_qoe == Some(true),
        }
    }
}

/// QoE (issue 16): the CMCD / CMSD / access-log state from the flags, unless `--no-qoe`.
fn qoe_from_args(args: &QoeArgs, id: &str) -> anyhow::Result<Option<appliance::qoe::Qoe>> {
    use appliance::qoe::access_log::{AccessLog, Target};
    if args.no_qoe {
        if args.access_log.is_some() {
            bail!("--access-log needs QoE: drop --no-qoe");
        }
        return Ok(None);
    }
    let sample = args.access_log_sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        bail!("--access-log-sample {sample}: must be between 0.0 and 1.0");
    }
    if args.cmsd_overload.is_some() && args.cmsd_max_bitrate_kbps.is_none() {
        bail!("--cmsd-overload needs --cmsd-max-bitrate-kbps (the mb value to send)");
    }
    let log = match args.access_log.as_deref() {
        None => None,
        Some("-") => Some(AccessLog::start(Target::Stdout).context("--access-log")?),
        Some(p) => Some(
            AccessLog::start(Target::File {
                path: PathBuf::from(p),
                max_bytes: args.access_log_max_bytes.unwrap_or(100 << 20),
                keep: args.access_log_keep.unwrap_or(5),
            })
            .context("--access-log")?,
        ),
    };
    Ok(Some(appliance::qoe::Qoe::new(
        appliance::qoe::QoeConfig {
            name: id.to_owned(),
            overload_connections: args.cmsd_overload,
            max_bitrate_kbps: args.cmsd_max_bitrate_kbps,
            access_log_sample: sample,
            sessions: appliance::qoe::DEFAULT_SESSIONS,
        },
        log,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn agent(flags: &[&str], toml: &str) -> anyhow::Result<Option<AgentConfig>> {
        let mut argv = vec!["outpost"];
        argv.extend_from_slice(flags);
        let args = Cli::try_parse_from(argv).unwrap().args;
        let file: Config = crate::config::parse_toml(toml)?;
        agent_config(
            &args,
            &file,
            "isp-1",
            "127.0.0.1:8080".parse().unwrap(),
            std::path::Path::new("/keys"),
            100,
        )
    }

    #[test]
    fn fill_settings_from_flags_and_file_with_errors_naming_the_key() {
        assert!(
            agent(&[], "").unwrap().is_none(),
            "no agent without --control-plane"
        );
        let a = agent(
            &[
                "--control-plane",
                "http://cp:8700",
                "--fill-rate-mbps",
                "400",
            ],
            "credential = \"s3cret\"\nfill_window = \"22:00-06:00\"\nfill_concurrency = 8\nfill_pace = true\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.credential, "s3cret");
        assert_eq!(a.fill.rate_bps, Some(400_000_000));
        assert_eq!(a.fill.concurrency, 8);
        assert!(a.fill.pace);
        assert_eq!(a.fill.window.to_string(), "22:00-06:00");
        assert_eq!(a.advertise_address.as_deref(), Some("127.0.0.1"));
        let e = agent(&["--control-plane", "http://cp"], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--credential"), "{e}");
        let e = agent(
            &["--control-plane", "http://cp", "--credential", "x"],
            "fill_window = \"25:00-01:00\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fill_window"), "{e}");
        let e = agent(
            &[
                "--control-plane",
                "http://cp",
                "--credential",
                "x",
                "--fill-rate-mbps=-3",
            ],
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fill_rate_mbps"), "{e}");
        let e = agent(&[], "fill_windw = \"always\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fill_windw"), "{e}");
    }

    #[test]
    fn removal_settings_default_to_cautious_and_bad_values_name_the_key() {
        let cp = ["--control-plane", "http://cp", "--credential", "x"];
        let a = agent(&cp, "").unwrap().unwrap();
        assert_eq!(a.fill.removal, RemovalPolicy::default());
        let mut flags = cp.to_vec();
        flags.extend(["--fill-removals", "never", "--fill-removal-grace", "0"]);
        let a = agent(
            &flags,
            "fill_removal_plans = 1\nfill_max_removal_share = 1.0\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.fill.removal.mode, RemovalMode::Never);
        assert_eq!(a.fill.removal.grace, Duration::ZERO);
        assert_eq!(a.fill.removal.min_plans, 1);
        for (toml, key) in [
            ("fill_removals = \"sometimes\"\n", "fill_removals"),
            ("fill_removal_plans = 0\n", "fill_removal_plans"),
            ("fill_max_removal_share = 1.5\n", "fill_max_removal_share"),
        ] {
            let e = agent(&cp, toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
