//! The Outpost control plane: decides whether a member may watch a title here, on this device, at
//! which quality, and which appliances should serve it, then hands back per-session manifests
//! whose URLs carry grants the appliances accept offline.
//!
//! - [`app()`] builds the axum router from an [`AppState`]; [`serve`] binds, runs background
//!   tasks (offline marking, key rotation) and serves until a shutdown future resolves.
//! - [`db`]: the [`db::Repository`] trait with SQLite (embedded default) and PostgreSQL backends
//!   sharing one migration set.
//! - [`entitlement`]: the session-start decision, pure; its module doc lists the refusal order.
//! - [`import`]: policy, catalog and content-key imports with errors naming the field.
//! - [`steering`]: pure ranking (longest-prefix match, cluster fallbacks, rendezvous hashing,
//!   miss classes) over a [`steering::Fleet`] snapshot; [`prefix`] is its prefix table.
//! - [`fill`]: the fill planner (pure: which titles each appliance holds, where it fetches them
//!   from) and its database edge; appliances read it at `GET /v1/appliances/{id}/fill-plan`.
//! - [`manifest`]: per-session HLS and DASH rewriting with content steering.
//! - [`routes`]: the handlers; [`keys`]: grant signing keys with rotation; [`crypto`]: sealed
//!   content keys and hashed secrets.
//!
//! It owns no media bytes and never sits on the segment path.
#![forbid(unsafe_code)]

pub mod app;
pub mod bgp;
pub mod client;
pub mod config;
pub mod crypto;
pub mod db;
pub mod entitlement;
pub mod error;
pub mod fill;
pub mod import;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod prefix;
pub mod routes;
pub mod state;
pub mod steering;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use app::app;
pub use config::Config;
pub use error::{ApiError, Error};
pub use state::{AppState, Clock, ManualClock, SystemClock};

use crate::crypto::{parse_master_key, MasterKey};
use crate::keys::{KeyStore, Rotation};

/// The database URL the configuration names, or the embedded SQLite file in the data directory.
pub fn database_url(config: &Config) -> String {
    config.database.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            config.data_dir.join("control-plane.db").display()
        )
    })
}

/// The master key: configured, else from [`config::MASTER_KEY_ENV`], else read from (or generated
/// into, mode 0600) `<data_dir>/master.key`.
pub fn master_key(config: &Config) -> Result<MasterKey, Error> {
    if let Some(k) = &config.master_key {
        let b = parse_master_key(k.expose()).ok_or_else(|| Error::Config {
            key: "master_key".into(),
            reason: "must be 64 hex digits".into(),
        })?;
        return Ok(MasterKey::new(b));
    }
    if let Ok(v) = std::env::var(config::MASTER_KEY_ENV) {
        let b = parse_master_key(&v).ok_or_else(|| Error::Config {
            key: config::MASTER_KEY_ENV.into(),
            reason: "must be 64 hex digits".into(),
        })?;
        return Ok(MasterKey::new(b));
    }
    let path = config.data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(t) => parse_master_key(&t)
            .map(MasterKey::new)
            .ok_or_else(|| Error::Config {
                key: "master_key".into(),
                reason: format!("{} does not hold 64 hex digits", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| Error::io(&config.data_dir, e))?;
            let hex = crypto::random_hex32();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.write_all(hex.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            tracing::warn!(path = %path.display(), "generated a content-key master key; back it up or set master_key");
            parse_master_key(&hex)
                .map(MasterKey::new)
                .ok_or_else(|| Error::Crypto("generated key".into()))
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn rotation(config: &Config) -> Rotation {
    Rotation {
        rotate_secs: config.key_rotate_secs,
        prepublish_secs: config.key_prepublish_secs,
        grant_ttl_secs: config.grant_ttl_secs,
    }
}

/// Builds the state from a configuration: opens the database (running migrations), the key
/// directory and the master key. `public_url` overrides the configured one.
pub async fn build_state(
    config: Config,
    public_url: String,
    clock: Arc<dyn Clock>,
) -> Result<AppState, Error> {
    config.validate()?;
    if config.database.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
    }
    let repo = db::connect(&database_url(&config), config.pool_size()).await?;
    let keys_dir = config
        .keys_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("keys"));
    let keys = KeyStore::open(&keys_dir, rotation(&config), clock.now())?;
    let master = master_key(&config)?;
    AppState::new(config, public_url, repo, keys, master, clock).await
}

/// Imports files into the database a configuration names (the `import` subcommand).
pub async fn import_files(
    config: &Config,
    files: &[&Path],
) -> Result<Vec<import::Imported>, Error> {
    config.validate()?;
    if config.database.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
    }
    let repo = db::connect(&database_url(config), 2).await?;
    let master = master_key(config)?;
    let now = SystemClock.now() as i64;
    let mut out = Vec::new();
    for f in files {
        out.push(import::import_file(repo.as_ref(), &master, f, now).await?);
    }
    Ok(out)
}

/// Binds `config.listen`, builds the state and serves until `shutdown` resolves. Runs the
/// background tasks: appliances without heartbeats are marked offline, signing keys rotate.
/// Calls `on_ready` with the bound address before serving.
pub async fn serve(
    config: Config,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::Config {
            key: "listen".into(),
            reason: format!("cannot bind {}: {e}", config.listen),
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(Path::new(&config.listen), e))?;
    let public = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let state = build_state(config, public.clone(), Arc::new(SystemClock)).await?;
    tracing::info!(%addr, public_url = %public, database = state.repo.backend(), "control plane listening");
    let bg = tokio::spawn(background(state.clone()));
    on_ready(addr);
    let r = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io(Path::new(&addr.to_string()), e));
    bg.abort();
    r
}

/// Sessions that ended or lapsed are deleted this long afterwards, seconds.
pub const SESSION_RETENTION_SECS: u64 = 86_400;

/// The periodic tasks: mark silent appliances offline, rotate signing keys, delete sessions that
/// ended more than [`SESSION_RETENTION_SECS`] ago.
pub async fn background(state: AppState) {
    let period = Duration::from_secs(state.config.appliance_heartbeat_secs.clamp(1, 60));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let now = state.now();
        let before = now.saturating_sub(state.config.appliance_offline_after_secs) as i64;
        match state.repo.mark_offline(before).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(appliances = %ids.join(","), "marked offline: heartbeats stopped");
                state.refresh().await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "marking appliances offline"),
        }
        if let Err(e) = state.keys.rotate_if_due(now) {
            tracing::error!(error = %e, "rotating signing keys");
        }
        match state
            .repo
            .purge_sessions(now.saturating_sub(SESSION_RETENTION_SECS) as i64)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged old sessions"),
            Err(e) => tracing::error!(error = %e, "purging old sessions"),
        }
        // Expired Idempotency-Keys of session starts (migration 0006).
        if let Err(e) = state.repo.purge_idempotency_keys(now as i64).await {
            tracing::error!(error = %e, "purging expired idempotency keys");
        }
    }
}
