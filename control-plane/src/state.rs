//! Shared service state: configuration, the repository, signing keys, the content-key master
//! key, the clock, the in-memory snapshot of policy and fleet tables, the per-account rate
//! limiter and the metrics.
//!
//! **Snapshot invariant:** small tables (plans, device classes, geo prefixes, windows, titles,
//! key metadata, clusters, appliances, BGP routes, API keys) are read from the database at most
//! once per `snapshot_ttl_ms`, and at once after this process writes them (import, heartbeat), so
//! a replica sees another replica's changes within the TTL. Accounts and sessions are always read
//! from the database.
//!
//! **No request waits on a rebuild:** [`AppState::snapshot`] always answers with the current
//! snapshot; when it is older than the TTL it starts one rebuild in the background and the
//! previous snapshot serves until the new one is swapped in (an `Arc` under a short lock). A
//! handler that writes a cached table calls [`AppState::refresh`], which returns once a snapshot
//! built after its write is in place (concurrent writers share one rebuild), so the writer, not
//! the next play request, waits, and the writer's own next request sees its write. A withdrawn
//! route or a session that goes down thus steers no more once its heartbeat is answered; another
//! replica follows within the TTL plus one rebuild.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protocol::catalog::{CatalogEntry, Tier, TrackKind};

use crate::config::Config;
use crate::crypto::MasterKey;
use crate::db::{BadRow, Repository, SnapshotRows};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::prefix::{Prefix, PrefixTable};
use crate::steering::{AdminState, Appliance, Cluster, Fleet, Thresholds};
use crate::Error;

/// The time source. The service reads [`SystemClock`]; tests move a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Unix seconds.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `t`.
    pub fn new(t: u64) -> Self {
        ManualClock(AtomicU64::new(t))
    }
    /// Sets the time.
    pub fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }
    /// Moves the time forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A device class.
#[derive(Debug, Clone)]
pub struct Device {
    /// EME key systems.
    pub key_systems: Vec<String>,
    /// Highest tier.
    pub max_tier: Tier,
}

/// A content key's metadata (the key itself stays sealed until a licence is issued).
#[derive(Debug, Clone)]
pub struct KeyMeta {
    /// Key id, 32 hex.
    pub kid: String,
    /// Highest tier it protects, or any.
    pub tier: Option<Tier>,
    /// Track type.
    pub track_type: TrackKind,
    /// The sealed key.
    pub sealed: String,
}

impl KeyMeta {
    /// Whether a session of effective tier `t` may receive it.
    pub fn allowed_at(&self, t: Tier) -> bool {
        self.tier.is_none_or(|k| k <= t)
    }
}

/// The cached tables.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Plan id → (max tier, max streams).
    pub plans: HashMap<String, (Tier, i64)>,
    /// Device classes.
    pub devices: HashMap<String, Device>,
    /// Prefix → country.
    pub geo: PrefixTable<String>,
    /// (title, country) → (start, end, max tier).
    pub windows: HashMap<(String, String), (i64, i64, Tier)>,
    /// Titles.
    pub titles: HashMap<String, Arc<CatalogEntry>>,
    /// Title → content keys.
    pub keys: HashMap<String, Vec<KeyMeta>>,
    /// The fleet for steering.
    pub fleet: Fleet,
    /// Appliance id → credential SHA-256.
    pub appliance_credentials: HashMap<String, String>,
    /// API key SHA-256 → key id.
    pub api_keys: HashMap<String, String>,
    /// Title → its catalog entry JSON exactly as stored (served to appliances that fill it).
    pub catalog_text: HashMap<String, Arc<str>>,
    /// Title → version digest, size and import time.
    pub title_meta: HashMap<String, TitleMeta>,
    /// Appliance → the titles it reported held with their versions (fill-aware agents only).
    pub held: HashMap<String, Vec<protocol::fill::HeldTitle>>,
    /// Appliance → its last reported fill status.
    pub fill_status: HashMap<String, protocol::fill::FillStatus>,
    /// Appliance → bytes of its working (not failed) drives, as last reported (absent when
    /// none).
    pub capacity: HashMap<String, u64>,
    /// Cluster → the countries of its content region (empty = every country).
    pub cluster_countries: HashMap<String, Vec<String>>,
    /// Stored values that did not decode when this snapshot was built (each logged).
    pub bad_rows: u64,
    // --- BGP (issue 14) ---
    /// What the fleet hears over BGP (sessions, routes, site consistency).
    pub bgp: crate::bgp::BgpView,
    // --- end BGP ---
}

/// What the fill planner needs to know of a title besides its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TitleMeta {
    /// `protocol::fill::catalog_digest` of the stored catalog JSON: the title's version.
    pub catalog_sha256: String,
    /// Total bytes of its files.
    pub bytes: u64,
    /// Duration, seconds (rounded up).
    pub duration_secs: u64,
    /// When it was imported, Unix seconds.
    pub imported_at: i64,
}

impl Snapshot {
    /// Builds the in-memory form. Rows were validated on import; a value that no longer decodes
    /// (a [`crate::db::BadRow`], or a prefix or catalog entry that no longer parses) is reported
    /// with a warning naming table, row and column and counted in [`Snapshot::bad_rows`] (the
    /// `outpost_cp_snapshot_bad_rows` gauge), and its row is left out rather than guessed at.
    pub fn build(mut rows: SnapshotRows) -> Snapshot {
        let mut s = Snapshot::default();
        for b in &rows.bad {
            s.report(b);
        }
        for p in rows.plans {
            s.plans.insert(p.id, (p.max_tier, p.max_streams));
        }
        for d in rows.device_classes {
            s.devices.insert(
                d.id,
                Device {
                    key_systems: d.key_systems,
                    max_tier: d.max_tier,
                },
            );
        }
        for (p, c) in rows.geo {
            match p.parse::<Prefix>() {
                Ok(parsed) => {
                    s.geo.insert(parsed, c);
                }
                Err(e) => s.report(&BadRow {
                    table: "geo_prefixes",
                    key: p,
                    column: "prefix",
                    reason: e.to_string(),
                }),
            }
        }
        for w in rows.windows {
            s.windows
                .insert((w.title, w.country), (w.starts_at, w.ends_at, w.max_tier));
        }
        let imported: HashMap<String, i64> = rows.titles_imported_at.into_iter().collect();
        for (id, c) in rows.titles {
            match CatalogEntry::from_json(&c) {
                Ok(e) => {
                    s.title_meta.insert(
                        id.clone(),
                        TitleMeta {
                            catalog_sha256: protocol::fill::catalog_digest(&c),
                            bytes: e.total_bytes(),
                            duration_secs: e.duration_ms.div_ceil(1000),
                            imported_at: imported.get(&id).copied().unwrap_or(0),
                        },
                    );
                    s.catalog_text.insert(id.clone(), Arc::from(c.as_str()));
                    s.titles.insert(id, Arc::new(e));
                }
                Err(e) => s.report(&BadRow {
                    table: "titles",
                    key: id,
                    column: "catalog",
                    reason: e.to_string(),
                }),
            }
        }
        for k in rows.keys {
            s.keys.entry(k.title).or_default().push(KeyMeta {
                kid: k.kid,
                tier: k.tier,
                track_type: k.track_type,
                sealed: k.sealed,
            });
        }
        let mut clusters = Vec::with_capacity(rows.clusters.len());
        for c in rows.clusters {
            s.cluster_countries.insert(c.id.clone(), c.countries);
            clusters.push(Cluster {
                kind: c.kind,
                fallbacks: c.fallbacks,
                id: c.id,
            });
        }
        let mut appliances = Vec::new();
        for a in rows.appliances {
            let admin_state = a.admin_state;
            let mut prefixes = Vec::new();
            for p in a.reported_prefixes.as_ref().unwrap_or(&a.prefixes) {
                match p.parse() {
                    Ok(p) => prefixes.push(p),
                    Err(e) => s.report(&BadRow {
                        table: "appliances",
                        key: a.id.clone(),
                        column: if a.reported_prefixes.is_some() {
                            "reported_prefixes"
                        } else {
                            "prefixes"
                        },
                        reason: format!("{p:?}: {e}"),
                    }),
                }
            }
            let held = a.held.unwrap_or_default();
            // A title held in an older catalog version is not held for steering: the session's
            // manifests describe the current version's files.
            let stale: HashSet<&str> = held
                .iter()
                .filter(|h| {
                    s.title_meta
                        .get(&h.title)
                        .is_some_and(|m| m.catalog_sha256 != h.catalog_sha256)
                })
                .map(|h| h.title.as_str())
                .collect();
            let titles = match admin_state {
                AdminState::Online => a.configured_titles,
                _ => Some(
                    a.titles
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| !stale.contains(t.as_str()))
                        .collect(),
                ),
            };
            if let Some(d) = &a.drives {
                let cap = d
                    .iter()
                    .filter(|d| d.state != protocol::fleet::DriveState::Failed)
                    .fold(0u64, |acc, d| acc.saturating_add(d.capacity_bytes));
                if cap > 0 {
                    s.capacity.insert(a.id.clone(), cap);
                }
            }
            if let Some(f) = a.fill_status {
                s.fill_status.insert(a.id.clone(), f);
            }
            if !held.is_empty() {
                s.held.insert(a.id.clone(), held);
            }
            if !a.credential_sha256.is_empty() {
                s.appliance_credentials
                    .insert(a.id.clone(), a.credential_sha256.clone());
            }
            appliances.push(Appliance {
                health: a.health,
                load: a.load,
                last_heartbeat: a.last_heartbeat.map(|t| t.max(0) as u64),
                titles: titles.map(|v| v.into_iter().collect()),
                prefixes,
                admin_state,
                port: u16::try_from(a.port).unwrap_or(0),
                address: a.address,
                cluster: a.cluster_id,
                id: a.id,
            });
        }
        // --- BGP (issue 14) ---
        let mut bad_bgp = Vec::new();
        let mut bgp = crate::bgp::BgpView::from_rows(
            std::mem::take(&mut rows.bgp_routes),
            std::mem::take(&mut rows.bgp_status),
            &mut bad_bgp,
        );
        for (id, reason) in bad_bgp {
            s.report(&BadRow {
                table: "bgp_routes",
                key: id,
                column: "prefix",
                reason,
            });
        }
        let routes = bgp.entries(&appliances);
        s.fleet = Fleet::with_bgp(clusters, appliances, &routes);
        s.bgp = bgp;
        // --- end BGP ---
        for k in rows.api_keys {
            s.api_keys.insert(k.secret_sha256, k.id);
        }
        s
    }

    fn report(&mut self, b: &BadRow) {
        tracing::warn!(table = b.table, row = %b.key, column = b.column, reason = %b.reason,
            "stored value no longer decodes; left out of the snapshot");
        self.bad_rows += 1;
    }

    /// The country of a client address.
    pub fn country(&self, ip: IpAddr) -> Option<&str> {
        self.geo.lookup(ip).map(|(_, c)| c.as_str())
    }
}

/// A token bucket per account.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most accounts tracked before full buckets are pruned.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// `per_minute` starts per minute, `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: per_minute as f64 / 60.0,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token; `Err(retry_after_secs)` when the bucket is empty.
    pub fn check(&self, account: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_BUCKETS {
            let (per_sec, burst) = (self.per_sec, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let entry = b.entry(account.to_owned()).or_insert((self.burst, now));
        let refill = now.duration_since(entry.1).as_secs_f64() * self.per_sec;
        entry.0 = (entry.0 + refill).min(self.burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - entry.0) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// Everything handlers share.
#[derive(Debug)]
pub struct Inner {
    /// Settings.
    pub config: Config,
    /// The public base URL (no trailing `/`).
    pub public_url: String,
    /// Storage.
    pub repo: Arc<dyn Repository>,
    /// Grant signing keys.
    pub keys: KeyStore,
    /// Content-key master key.
    pub master: MasterKey,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Per-account session-start limiter.
    pub limiter: RateLimiter,
    /// Counters.
    pub metrics: Metrics,
    /// Request rates per appliance, from heartbeats (for the fleet view).
    pub telemetry: crate::telemetry::Telemetry,
    /// Recently computed fill plans per cluster.
    pub fill_plans: crate::fill::cache::PlanCache,
    snapshot: RwLock<(Arc<Snapshot>, Instant)>,
    dirty: AtomicBool,
    reload: tokio::sync::Mutex<()>,
    /// Writes this process made to cached tables (bumped by [`AppState::refresh`]).
    writes: AtomicU64,
    /// The `writes` count the current snapshot includes.
    built: AtomicU64,
    /// Whether a background rebuild is under way.
    rebuilding: AtomicBool,
}

/// The shared state handed to `app`.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Assembles the state and loads the first snapshot.
    pub async fn new(
        config: Config,
        public_url: String,
        repo: Arc<dyn Repository>,
        keys: KeyStore,
        master: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, Error> {
        let snap = Snapshot::build(repo.load_snapshot().await?);
        crate::bgp::log_site_changes(&[], &snap.bgp.sites);
        let metrics = Metrics::default();
        metrics
            .snapshot_bad_rows
            .store(snap.bad_rows, Ordering::Relaxed);
        let limiter =
            RateLimiter::new(config.session_starts_per_minute, config.session_start_burst);
        Ok(AppState(Arc::new(Inner {
            public_url,
            repo,
            keys,
            master,
            clock,
            limiter,
            metrics,
            telemetry: crate::telemetry::Telemetry::default(),
            fill_plans: crate::fill::cache::PlanCache::default(),
            snapshot: RwLock::new((Arc::new(snap), Instant::now())),
            dirty: AtomicBool::new(false),
            reload: tokio::sync::Mutex::new(()),
            writes: AtomicU64::new(0),
            built: AtomicU64::new(0),
            rebuilding: AtomicBool::new(false),
            config,
        })))
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Steering thresholds from the configuration.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            offline_after_secs: self.config.appliance_offline_after_secs,
            load_threshold: self.config.load_threshold,
            max: self.config.steering_max,
        }
    }

    /// Marks the snapshot stale: the next [`AppState::snapshot`] call rebuilds it before
    /// answering. For writes made behind the service's back (tests, tools); handlers that write
    /// call [`AppState::refresh`] instead, so no request waits.
    pub fn invalidate(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// The current snapshot. Never waits on a rebuild (except after [`AppState::invalidate`]):
    /// when the snapshot is older than the TTL, one rebuild starts in the background and this
    /// answer is the previous snapshot.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Error> {
        if self.dirty.load(Ordering::SeqCst) {
            let _guard = self.reload.lock().await;
            if self.dirty.swap(false, Ordering::SeqCst) {
                self.rebuild().await?;
            }
        }
        let ttl = Duration::from_millis(self.config.snapshot_ttl_ms);
        let (snap, at) = {
            let g = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
            (g.0.clone(), g.1)
        };
        if at.elapsed() >= ttl {
            self.rebuild_in_background();
        }
        Ok(snap)
    }

    /// Call after writing a cached table: returns once a snapshot that includes every write this
    /// process made before the call is in place. Callers that arrive while a rebuild runs wait
    /// for it and share the next one. If the rebuild fails (logged), the snapshot is marked
    /// stale as by [`AppState::invalidate`] so the next request retries it.
    pub async fn refresh(&self) {
        let want = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.reload.lock().await;
        if self.built.load(Ordering::SeqCst) >= want {
            return;
        }
        if let Err(e) = self.rebuild().await {
            tracing::error!(error = %e, "rebuilding the snapshot after a write; the next request retries");
            self.invalidate();
        }
    }

    /// Starts a rebuild on the runtime unless one is under way (or there is no runtime).
    fn rebuild_in_background(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .rebuilding
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        let st = self.clone();
        rt.spawn(async move {
            {
                let _guard = st.reload.lock().await;
                let stale = {
                    let g = st.snapshot.read().unwrap_or_else(|p| p.into_inner());
                    g.1.elapsed() >= Duration::from_millis(st.config.snapshot_ttl_ms)
                };
                if stale {
                    if let Err(e) = st.rebuild().await {
                        tracing::error!(error = %e, "rebuilding the snapshot; the previous one keeps serving");
                    }
                }
            }
            st.rebuilding.store(false, Ordering::SeqCst);
        });
    }

    /// Loads and builds a snapshot and swaps it in. The caller holds `reload`.
    async fn rebuild(&self) -> Result<(), Error> {
        let writes = self.writes.load(Ordering::SeqCst);
        let rows = self.repo.load_snapshot().await?;
        let prev = self
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        // The build is CPU work: off the async workers when the runtime has a blocking pool.
        let snap = match tokio::runtime::Handle::try_current() {
            Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| Snapshot::build(rows))
            }
            _ => Snapshot::build(rows),
        };
        crate::bgp::log_site_changes(&prev.bgp.sites, &snap.bgp.sites);
        crate::bgp::log_rib_changes(&prev.bgp.appliances, &snap.bgp.appliances);
        drop(prev);
        self.metrics
            .snapshot_bad_rows
            .store(snap.bad_rows, Ordering::Relaxed);
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) =
            (Arc::new(snap), Instant::now());
        self.built.fetch_max(writes, Ordering::SeqCst);
        Ok(())
    }
}
