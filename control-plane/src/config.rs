//! The control plane's settings: one strict TOML table (unknown keys are errors naming the key),
//! every field also a flag of `outpost control-plane`. Secrets are wrapped in [`Secret`], whose
//! `Debug` never prints them.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A secret string (master key, admin token): printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Environment variable holding the content-key master key (64 hex digits) when the
/// configuration has none.
pub const MASTER_KEY_ENV: &str = "OUTPOST_MASTER_KEY";

/// Control-plane settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the SQLite database, signing keys and the generated master key.
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://path` or `postgres://...`; default: `<data_dir>/control-plane.db`.
    pub database: Option<String>,
    /// Most database connections in the pool; default 1 for SQLite (its writes serialize anyway,
    /// and one connection keeps its page cache valid: measured 12-13% less CPU per session start
    /// than four) and 8 for PostgreSQL.
    pub db_max_connections: Option<u32>,
    /// Base URL players and appliances reach this service at; default `http://<bound address>`.
    pub public_url: Option<String>,
    /// Content-key master key, 64 hex digits (AES-256-GCM); else [`MASTER_KEY_ENV`], else a key
    /// generated into `<data_dir>/master.key`.
    pub master_key: Option<Secret>,
    /// Bearer token of the admin API; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// Directory of grant signing keys (`<kid>.key.pem`); default `<data_dir>/keys`.
    pub keys_dir: Option<PathBuf>,
    /// Grant issuer (`iss`).
    pub issuer: String,
    /// Lease length: a session lapses this long after its last heartbeat, seconds.
    pub lease_secs: u64,
    /// Heartbeat interval announced to players, seconds.
    pub heartbeat_interval_secs: u64,
    /// Grant lifetime, seconds (at most the verifier's six-hour cap).
    pub grant_ttl_secs: u64,
    /// TTL of steering manifests, seconds.
    pub steering_ttl_secs: u64,
    /// Serve `GET /v1/fleet` without the admin token (a read-only operator view; for demos and
    /// private networks).
    pub fleet_view_public: bool,
    /// Longest ranked appliance list.
    pub steering_max: usize,
    /// Appliances reporting a load above this are skipped.
    pub load_threshold: f64,
    /// Heartbeat interval announced to appliances, seconds.
    pub appliance_heartbeat_secs: u64,
    /// An appliance is offline after this long without a heartbeat, seconds.
    pub appliance_offline_after_secs: u64,
    /// Session starts allowed per account per minute (token bucket refill).
    pub session_starts_per_minute: u32,
    /// Token-bucket burst of session starts per account.
    pub session_start_burst: u32,
    /// A new signing key is made this often, seconds.
    pub key_rotate_secs: u64,
    /// A new key is published this long before it signs, seconds.
    pub key_prepublish_secs: u64,
    /// How long policy and fleet data are cached in memory, milliseconds.
    pub snapshot_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8700".into(),
            data_dir: PathBuf::from("outpost-control-plane"),
            database: None,
            db_max_connections: None,
            public_url: None,
            master_key: None,
            admin_token: None,
            keys_dir: None,
            issuer: "outpost-control-plane".into(),
            lease_secs: 120,
            heartbeat_interval_secs: 30,
            grant_ttl_secs: 3 * 3600,
            steering_ttl_secs: 60,
            fleet_view_public: false,
            steering_max: 3,
            load_threshold: 0.9,
            appliance_heartbeat_secs: 10,
            appliance_offline_after_secs: 30,
            session_starts_per_minute: 30,
            session_start_burst: 10,
            key_rotate_secs: 7 * 86400,
            key_prepublish_secs: 600,
            snapshot_ttl_ms: 1000,
        }
    }
}

impl Config {
    /// The pool size: configured, else 1 for SQLite and 8 for PostgreSQL.
    pub fn pool_size(&self) -> u32 {
        match (self.db_max_connections, &self.database) {
            (Some(n), _) => n,
            (None, Some(d)) if d.starts_with("postgres") => 8,
            (None, _) => 1,
        }
    }

    /// Checks values serde cannot: returns the bad key and why.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |key: &str, why: &str| {
            Err(crate::Error::Config {
                key: key.to_owned(),
                reason: why.to_owned(),
            })
        };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "listen",
                "must be an IP address and port, e.g. 127.0.0.1:8700",
            );
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/') {
                return bad(
                    "public_url",
                    "must be an http(s) URL without a trailing '/'",
                );
            }
        }
        if let Some(d) = &self.database {
            if !(d.starts_with("sqlite:")
                || d.starts_with("postgres://")
                || d.starts_with("postgresql://"))
            {
                return bad(
                    "database",
                    "must start with sqlite:, postgres:// or postgresql://",
                );
            }
        }
        if let Some(k) = &self.master_key {
            if crate::crypto::parse_master_key(k.expose()).is_none() {
                return bad("master_key", "must be 64 hex digits");
            }
        }
        if self.lease_secs < 10 {
            return bad("lease_secs", "must be at least 10");
        }
        if self.heartbeat_interval_secs == 0 || self.heartbeat_interval_secs >= self.lease_secs {
            return bad(
                "heartbeat_interval_secs",
                "must be between 1 and lease_secs - 1",
            );
        }
        if self.grant_ttl_secs < 10
            || self.grant_ttl_secs > protocol::grant::DEFAULT_MAX_LIFETIME_SECS
        {
            return bad(
                "grant_ttl_secs",
                "must be between 10 and 21600 (the verifiers' cap)",
            );
        }
        if self.heartbeat_interval_secs >= self.grant_ttl_secs {
            return bad(
                "heartbeat_interval_secs",
                "must be shorter than grant_ttl_secs, so heartbeats refresh grants before they expire",
            );
        }
        if self.steering_max == 0 || self.steering_max > 8 {
            return bad("steering_max", "must be between 1 and 8");
        }
        if !(self.load_threshold > 0.0 && self.load_threshold.is_finite()) {
            return bad("load_threshold", "must be a positive number");
        }
        if self.appliance_offline_after_secs <= self.appliance_heartbeat_secs {
            return bad(
                "appliance_offline_after_secs",
                "must exceed appliance_heartbeat_secs",
            );
        }
        if self.session_starts_per_minute == 0 || self.session_start_burst == 0 {
            return bad(
                "session_starts_per_minute",
                "rate and burst must be positive",
            );
        }
        if self.key_rotate_secs <= self.key_prepublish_secs {
            return bad("key_rotate_secs", "must exceed key_prepublish_secs");
        }
        if self.db_max_connections == Some(0) {
            return bad("db_max_connections", "must be positive");
        }
        Ok(())
    }
}
