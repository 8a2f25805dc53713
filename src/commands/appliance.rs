//! `outpost appliance`: runs the segment server an ISP hosts. Glue only: reads `--config` (strict
//! TOML, keys as the flags with `_` for `-`), lets flags override it, loads the public keys and
//! the cache, and hands everything to `appliance::server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use appliance::cache::Store;
use appliance::conn::Timeouts;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::grant::Verifier;
use serde::Deserialize;

/// Flags for `outpost appliance`. Each overrides the same key of `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
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
    /// TLS listen address (needs --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// TLS certificate chain, PEM (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

/// The configuration file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
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
    tls_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Runs the appliance until SIGTERM/SIGINT has drained it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    let Some(cluster) = args.cluster.or(file.cluster) else {
        bail!("--cluster (config key `cluster`) is required: the cluster id grants must name");
    };
    let Some(keys_dir) = args.public_keys.or(file.public_keys) else {
        bail!("--public-keys (config key `public_keys`) is required: a directory of <kid>.pub.pem");
    };
    let cache_dirs = if args.cache_dirs.is_empty() {
        file.cache_dirs
    } else {
        args.cache_dirs
    };
    if cache_dirs.is_empty() {
        bail!("at least one --cache-dir (config key `cache_dirs`) is required");
    }
    let backend: BackendChoice = args
        .backend
        .or(file.backend)
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
        .or(file.id)
        .or_else(hostname)
        .unwrap_or_else(|| listen.to_string());
    let secs = |flag: Option<u64>, key: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(key).unwrap_or(default))
    };

    let ring = appliance::keys::load_dir(&keys_dir).context("--public-keys")?;
    tracing::info!(keys = ?ring.kids().collect::<Vec<_>>(), dir = %keys_dir.display(), "grant public keys loaded");
    let store = Arc::new(
        Store::open(
            &cache_dirs,
            args.drive_capacity_bytes.or(file.drive_capacity_bytes),
        )
        .context("--cache-dir")?,
    );
    let svc = Arc::new(Service::new(
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
    ));
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
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(100_000),
        timeouts: Timeouts {
            header: secs(args.header_timeout_secs, file.header_timeout_secs, 10),
            idle: secs(args.idle_timeout_secs, file.idle_timeout_secs, 60),
        },
        drain_timeout: secs(args.drain_timeout_secs, file.drain_timeout_secs, 30),
        handle_signals: true,
        tls,
    };
    let running = server::start(cfg, svc, Some(reload))?;
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
    running.wait()?;
    Ok(ExitCode::SUCCESS)
}
