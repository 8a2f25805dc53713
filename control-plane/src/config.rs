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
    /// Fill planning (`[fill]`).
    pub fill: FillConfig,
    /// Log line format of `outpost control-plane`: `text` or `json` (the binary reads it before
    /// logging starts; checked here).
    pub log_format: Option<String>,
}

/// Fill planning settings: the `[fill]` table (unknown keys are errors), every key also a
/// `--fill-<key>` flag of `outpost control-plane`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FillConfig {
    /// S3-compatible bucket holding the packager's output (`<prefix>/<title>/<path>`), offered as
    /// the last origin source; none by default. Appliances hold its endpoint and credentials.
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub s3_prefix: String,
    /// Appliances fetch their plan again within this many seconds.
    pub plan_refresh_secs: u64,
    /// A cluster's placement is recomputed at most this often (sources and grants are fresh on
    /// every request), seconds.
    pub plan_cache_secs: u64,
    /// Lifetime of fill grants, seconds: longer than `plan_refresh_secs`, at most the verifiers'
    /// six-hour cap.
    pub grant_ttl_secs: u64,
    /// The sliding window popularity is measured over, seconds.
    pub popularity_window_secs: u64,
    /// Weight of the forecast feed against observed views, 0..=1.
    pub forecast_weight: f64,
    /// Views per day of the cluster's own demand one copy carries: a title gets
    /// ceil(views ÷ window days × the cluster's share of the region's traffic ÷ this) copies.
    pub views_per_copy: f64,
    /// Most copies of a title in one cluster; 0 = every appliance.
    pub max_copies: usize,
    /// Swap cost: a held title is displaced only by one this many times more popular (>= 1).
    pub hysteresis: f64,
    /// Share of each appliance's reported capacity the planner fills, (0, 1].
    pub capacity_fraction: f64,
    /// Titles imported less than this long ago are new releases: urgent, seconds.
    pub new_release_secs: u64,
    /// Titles with a content miss in the cluster's countries this recently are urgent, seconds.
    pub miss_urgent_secs: u64,
    /// Titles with low QoE on the cluster's appliances in this window are urgent and get one
    /// extra copy (see `fill::qoe`), seconds; 0 turns the signal off.
    pub qoe_urgent_secs: u64,
    /// Fewest QoE reports of a title in the window before its QoE counts (>= 1).
    pub qoe_min_sessions: u32,
    /// Share of bad reports (starvation, or throughput below bitrate) that makes a title
    /// urgent, (0, 1].
    pub qoe_bad_share: f64,
    /// Most titles of one cluster urgent for low QoE at once.
    pub qoe_max_titles: usize,
    /// Most appliances listed as sources per source cluster.
    pub sources_per_cluster: usize,
    /// Whether plans of origin clusters may list removals. Off by default: an origin appliance
    /// holds the fleet's copy of last resort and deletes nothing on a plan unless told to here.
    pub origin_removals: bool,
}

impl Default for FillConfig {
    fn default() -> Self {
        FillConfig {
            s3_bucket: None,
            s3_prefix: String::new(),
            plan_refresh_secs: 300,
            plan_cache_secs: 30,
            grant_ttl_secs: 4 * 3600,
            popularity_window_secs: 86_400,
            forecast_weight: 0.5,
            views_per_copy: 50.0,
            max_copies: 0,
            hysteresis: 2.0,
            capacity_fraction: 0.95,
            new_release_secs: 86_400,
            miss_urgent_secs: 600,
            qoe_urgent_secs: 600,
            qoe_min_sessions: 3,
            qoe_bad_share: 0.5,
            qoe_max_titles: 5,
            sources_per_cluster: 2,
            origin_removals: false,
        }
    }
}

impl FillConfig {
    /// The planner's parameters.
    pub fn params(&self) -> crate::fill::FillParams {
        crate::fill::FillParams {
            views_per_copy: self.views_per_copy,
            max_copies: self.max_copies,
            hysteresis: self.hysteresis,
            capacity_fraction: self.capacity_fraction,
            popularity_window_secs: self.popularity_window_secs,
        }
    }

    /// The thresholds of the low-QoE fill signal.
    pub fn qoe_signal(&self) -> crate::fill::qoe::QoeSignal {
        crate::fill::qoe::QoeSignal {
            min_sessions: self.qoe_min_sessions,
            bad_share: self.qoe_bad_share,
            max_titles: self.qoe_max_titles,
        }
    }

    /// Checks values serde cannot; the error names the key (`fill.<key>`).
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |key: &str, why: &str| {
            Err(crate::Error::Config {
                key: format!("fill.{key}"),
                reason: why.to_owned(),
            })
        };
        if !(self.qoe_bad_share > 0.0 && self.qoe_bad_share <= 1.0) {
            return bad("qoe_bad_share", "must be a share in (0, 1]");
        }
        if self.qoe_min_sessions == 0 {
            return bad("qoe_min_sessions", "must be at least 1");
        }
        if let Some(b) = &self.s3_bucket {
            let ok = (3..=63).contains(&b.len())
                && b.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'
                })
                && !b.starts_with(['-', '.'])
                && !b.ends_with(['-', '.']);
            if !ok {
                return bad(
                    "s3_bucket",
                    "must be an S3 bucket name: 3-63 of [a-z0-9.-], starting and ending with a letter or digit",
                );
            }
        }
        if self.s3_prefix.starts_with('/')
            || self.s3_prefix.ends_with('/')
            || self.s3_prefix.contains("//")
            || self.s3_prefix.chars().any(char::is_control)
        {
            return bad(
                "s3_prefix",
                "must not start or end with '/' nor hold empty segments",
            );
        }
        if self.plan_refresh_secs == 0 {
            return bad("plan_refresh_secs", "must be positive");
        }
        if self.grant_ttl_secs <= self.plan_refresh_secs
            || self.grant_ttl_secs > protocol::grant::DEFAULT_MAX_LIFETIME_SECS
        {
            return bad(
                "grant_ttl_secs",
                "must exceed plan_refresh_secs and be at most 21600 (the verifiers' cap)",
            );
        }
        if self.popularity_window_secs == 0 {
            return bad("popularity_window_secs", "must be positive");
        }
        if !(0.0..=1.0).contains(&self.forecast_weight) {
            return bad("forecast_weight", "must be between 0 and 1");
        }
        if !(self.views_per_copy.is_finite() && self.views_per_copy > 0.0) {
            return bad("views_per_copy", "must be a positive number");
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 1.0) {
            return bad("hysteresis", "must be a number >= 1");
        }
        if !(self.capacity_fraction > 0.0 && self.capacity_fraction <= 1.0) {
            return bad("capacity_fraction", "must be in (0, 1]");
        }
        if self.sources_per_cluster == 0 || self.sources_per_cluster > 8 {
            return bad("sources_per_cluster", "must be between 1 and 8");
        }
        Ok(())
    }
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
            steering_max: 4,
            load_threshold: 0.9,
            appliance_heartbeat_secs: 10,
            appliance_offline_after_secs: 30,
            session_starts_per_minute: 30,
            session_start_burst: 10,
            key_rotate_secs: 7 * 86400,
            key_prepublish_secs: 600,
            snapshot_ttl_ms: 1000,
            log_format: None,
            fill: FillConfig::default(),
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
        if let Some(f) = &self.log_format {
            if f != "text" && f != "json" {
                return bad("log_format", "must be \"text\" or \"json\"");
            }
        }
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
        self.fill.validate()
    }
}
