//! Fill, the appliance side: brings the plan's titles onto this appliance, removes those it left.
//!
//! For each planned title not held at its planned version it fetches the catalog entry from the
//! control plane and checks its SHA-256 against [`PlannedTitle::catalog_sha256`], then fetches
//! every missing file from the plan's sources in order ([`fetch`]: HTTP with a fill grant,
//! resuming a partial file with `Range`), verifying size and SHA-256 while writing into the
//! drive's [`FILL_DIR`], fsyncs and renames each file into place ([`Store::commit_file`]), and
//! writes `catalog.json` last: only then does the title gate serve it and the heartbeat report it
//! held. A title leaves the cache only when the plan lists it as removable (another copy
//! exists), after a grace period, and never on a suspect plan ([`removal`]). A corrupt or failed download is dropped and the next source is tried. Non-urgent titles
//! are fetched only inside the [`FillWindow`]; every download shares one [`RateLimiter`] and at
//! most `concurrency` files download at once. Everything here runs on the agent's tokio runtime,
//! never on a serving thread.

pub mod fetch;
pub mod rate;
pub mod removal;
pub mod s3;
pub mod window;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt as _;
use protocol::catalog::{CatalogEntry, FileEntry, CATALOG_FILE};
use protocol::fill::{catalog_digest, FillPlan, PlannedTitle};
use tokio::sync::Semaphore;

pub use rate::RateLimiter;
pub use removal::{RemovalMode, RemovalPolicy, RemovalTracker};
pub use window::FillWindow;

use crate::agent::client::ControlPlane;
use crate::cache::{Store, TitleState, FILL_DIR};
use crate::metrics::Metrics;

/// The S3 origin settings (endpoint and credentials are the appliance's, never the plan's).
#[derive(Clone)]
pub struct S3Settings {
    /// Endpoint URL.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Whether a plain-HTTP endpoint is allowed.
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Fill settings.
#[derive(Debug, Clone)]
pub struct FillConfig {
    /// When non-urgent titles are fetched.
    pub window: FillWindow,
    /// Total download rate, bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// Most files downloading at once.
    pub concurrency: usize,
    /// Spread the fill over what remains of the window ([`rate::paced_rate_bps`]) instead of
    /// starting at `rate_bps` when the window opens; urgent titles always go at `rate_bps`.
    pub pace: bool,
    /// The S3 origin, if configured.
    pub s3: Option<S3Settings>,
    /// When titles that left the plan are deleted ([`removal`]).
    pub removal: RemovalPolicy,
}

impl Default for FillConfig {
    fn default() -> Self {
        FillConfig {
            window: FillWindow::Between {
                start: 120,
                end: 840,
            },
            rate_bps: None,
            concurrency: 4,
            pace: false,
            s3: None,
            removal: RemovalPolicy::default(),
        }
    }
}

/// What one fill pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Titles made complete in this pass.
    pub filled: Vec<String>,
    /// Titles removed because they left the plan.
    pub removed: Vec<String>,
    /// Titles of the plan still not held (window closed, or every source failed).
    pub pending: Vec<String>,
}

/// Why a title could not be filled in this pass.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// The catalog entry could not be fetched or is wrong.
    #[error("title {title}: catalog entry: {reason}")]
    Catalog {
        /// The title.
        title: String,
        /// What went wrong.
        reason: String,
    },
    /// A file came from no source.
    #[error("title {title}: {path}: every source failed ({reasons})")]
    File {
        /// The title.
        title: String,
        /// The file.
        path: String,
        /// One reason per source tried.
        reasons: String,
    },
    /// Writing into the cache failed.
    #[error("title {title}: {reason}")]
    Store {
        /// The title.
        title: String,
        /// What went wrong.
        reason: String,
    },
}

/// The filler.
#[derive(Debug)]
pub struct Filler {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    cp: Arc<ControlPlane>,
    cfg: FillConfig,
    fetcher: fetch::Fetcher,
    /// The limiter shared by every download (present with a rate or pacing).
    limiter: Option<Arc<RateLimiter>>,
    slots: Arc<Semaphore>,
    /// Partial files left by downloads not finished yet, by title: removed once the title has
    /// been out of the plan for the removal grace period (kept otherwise, for a resume).
    partials: std::sync::Mutex<HashMap<String, HashSet<std::path::PathBuf>>>,
    /// Deletion candidates across passes.
    removals: std::sync::Mutex<RemovalTracker>,
}

/// What an earlier run (stopped or killed mid-fill) left in each drive's [`FILL_DIR`]: partial
/// downloads by title, kept so a planned title resumes where it stopped and an unplanned one is
/// removed like any partial download. Catalog temporaries (rewritten on every attempt) and
/// files of no title are deleted at once.
fn left_over_partials(store: &Store) -> HashMap<String, HashSet<std::path::PathBuf>> {
    let mut out: HashMap<String, HashSet<std::path::PathBuf>> = HashMap::new();
    for d in store.drives() {
        let Ok(entries) = std::fs::read_dir(d.root.join(FILL_DIR)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let parts: Vec<std::path::PathBuf> = std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|p| p.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "part"))
                    .collect();
                if parts.is_empty() {
                    let _ = std::fs::remove_dir(&path);
                } else {
                    tracing::info!(title = name, files = parts.len(), drive = %d.root.display(), "partial downloads left by an earlier run: resumed if still planned");
                    out.entry(name).or_default().extend(parts);
                }
            } else {
                tracing::info!(file = %path.display(), "fill temporary of an earlier run removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

impl Filler {
    /// A filler writing into `store`, fetching catalog entries through `cp`.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        cp: Arc<ControlPlane>,
        cfg: FillConfig,
    ) -> Result<Self, String> {
        let limiter = match (cfg.rate_bps, cfg.pace) {
            (Some(r), _) => Some(Arc::new(RateLimiter::new(r))),
            (None, true) => Some(Arc::new(RateLimiter::new(u64::MAX / 16))),
            (None, false) => None,
        };
        let fetcher = fetch::Fetcher::new(limiter.clone(), metrics.clone(), cfg.s3.clone())?;
        let partials = left_over_partials(&store);
        Ok(Filler {
            limiter,
            slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            partials: std::sync::Mutex::new(partials),
            removals: std::sync::Mutex::new(RemovalTracker::default()),
            store,
            metrics,
            cp,
            cfg,
            fetcher,
        })
    }

    /// The settings.
    pub fn config(&self) -> &FillConfig {
        &self.cfg
    }

    fn held_at(&self, t: &PlannedTitle) -> bool {
        matches!(self.store.title_state(&t.title), Some(TitleState::Complete(h)) if h.catalog_sha256 == t.catalog_sha256)
    }

    /// One pass over `plan` at local minute `minute`: removes titles that left the plan, then
    /// fills the titles not held (only urgent ones outside the window).
    pub async fn pass(&self, plan: &FillPlan, minute: u16) -> PassReport {
        let in_window = self.cfg.window.contains(minute);
        self.metrics
            .fill
            .in_window
            .store(in_window, Ordering::Relaxed);
        let mut report = PassReport::default();
        self.remove_unplanned(plan, &mut report).await;
        let todo: Vec<&PlannedTitle> = plan.titles.iter().filter(|t| !self.held_at(t)).collect();
        self.metrics
            .fill
            .titles_pending
            .store(todo.len() as u64, Ordering::Relaxed);
        let runnable: Vec<&PlannedTitle> = todo
            .iter()
            .copied()
            .filter(|t| in_window || t.urgent)
            .collect();
        if runnable.len() < todo.len() {
            tracing::debug!(
                waiting = todo.len() - runnable.len(),
                window = %self.cfg.window,
                "fill window closed: only urgent titles are fetched"
            );
        }
        self.pace(&runnable, minute);
        let owned: Vec<PlannedTitle> = runnable.into_iter().cloned().collect();
        let results: Vec<(String, Result<(), FillError>)> =
            futures::stream::iter(owned.into_iter().map(|t| async move {
                let r = self.fill_title(&t).await;
                (t.title, r)
            }))
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        for (title, r) in results {
            match r {
                Ok(()) => report.filled.push(title),
                Err(e) => tracing::warn!(error = %e, "fill of a title failed; retried next pass"),
            }
        }
        for t in &todo {
            if !self.held_at(t) {
                report.pending.push(t.title.clone());
            }
        }
        self.metrics
            .fill
            .titles_pending
            .store(report.pending.len() as u64, Ordering::Relaxed);
        report
    }

    /// Deletes what the plan lets this pass delete ([`removal`]): held titles the plan lists as
    /// removable once their grace period is over and the plan is not suspect, and partial
    /// downloads of titles out of the plan for as long. Everything else is kept.
    async fn remove_unplanned(&self, plan: &FillPlan, report: &mut PassReport) {
        let mut held = BTreeSet::new();
        let mut partial: BTreeSet<String> = self
            .partials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for title in self.store.title_dirs() {
            match self.store.title_state(&title) {
                Some(TitleState::Complete(_)) => {
                    held.insert(title);
                }
                _ => {
                    partial.insert(title);
                }
            }
        }
        let verdict = self
            .removals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decide(
                &self.cfg.removal,
                plan,
                &held,
                &partial,
                std::time::Instant::now(),
            );
        let fill = &self.metrics.fill;
        if let Some(why) = &verdict.suspect {
            if verdict.new_plan {
                fill.plans_suspect.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plan = plan.plan_id, "suspect fill plan: {why}");
            }
        }
        if verdict.new_plan {
            for (title, why) in &verdict.kept {
                tracing::info!(
                    title,
                    plan = plan.plan_id,
                    why = why.as_str(),
                    "title left the fill plan: kept"
                );
            }
        }
        fill.titles_kept_unplanned
            .store(verdict.kept.len() as u64, Ordering::Relaxed);
        let reasons: HashMap<&str, &protocol::fill::Removal> = plan
            .removals
            .iter()
            .map(|r| (r.title.as_str(), r))
            .collect();
        for title in verdict.remove {
            let n = self.store.remove_title(&title);
            let r = reasons.get(title.as_str());
            tracing::info!(
                title,
                objects = n,
                plan = plan.plan_id,
                reason = r.map_or("", |r| r.reason.as_str()),
                kept_at = ?r.map(|r| &r.kept_at),
                "title left the fill plan: removed"
            );
            fill.titles_removed.fetch_add(1, Ordering::Relaxed);
            report.removed.push(title);
        }
        for title in verdict.drop_partials {
            let files = self
                .partials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&title)
                .unwrap_or_default();
            for f in &files {
                let _ = tokio::fs::remove_file(f).await;
                if let Some(dir) = f.parent() {
                    let _ = tokio::fs::remove_dir(dir).await;
                }
            }
            // Files of the title already moved into place (its catalog.json never was).
            let objects = if self.store.title_dirs().contains(&title) {
                self.store.remove_title(&title)
            } else {
                0
            };
            tracing::info!(
                title,
                partial_files = files.len(),
                objects,
                "title left the fill plan: partial downloads removed"
            );
            if !report.removed.contains(&title) {
                report.removed.push(title);
            }
        }
    }

    /// With pacing on, sets the shared limiter to spread the bytes still to fetch over what is
    /// left of the window; urgent work, an `always` window or pacing off use the configured rate.
    fn pace(&self, runnable: &[&PlannedTitle], minute: u16) {
        let (Some(limiter), true) = (&self.limiter, self.cfg.pace) else {
            return;
        };
        let cap = self.cfg.rate_bps;
        let rate = match self.cfg.window.minutes_left(minute) {
            Some(left) if !runnable.iter().any(|t| t.urgent) => {
                let bytes: u64 = runnable.iter().map(|t| t.bytes).sum();
                rate::paced_rate_bps(bytes, u64::from(left) * 60, cap)
            }
            _ => cap.unwrap_or(u64::MAX / 16),
        };
        if limiter.rate_bps().abs_diff(rate) > rate / 20 {
            tracing::info!(
                rate_bps = rate,
                titles = runnable.len(),
                "fill pace: rate set to finish within the window"
            );
            limiter.set_rate(rate);
        }
    }

    /// Fills one title; on success it is complete and served.
    pub async fn fill_title(&self, t: &PlannedTitle) -> Result<(), FillError> {
        let cat_err = |reason: String| FillError::Catalog {
            title: t.title.clone(),
            reason,
        };
        let text = self
            .cp
            .catalog(&t.title)
            .await
            .map_err(|e| cat_err(e.to_string()))?;
        let got = catalog_digest(&text);
        if got != t.catalog_sha256 {
            return Err(cat_err(format!(
                "SHA-256 {got} does not match the plan's catalog_sha256 {}",
                t.catalog_sha256
            )));
        }
        let entry = CatalogEntry::from_json(&text).map_err(|e| cat_err(e.to_string()))?;
        if entry.title != t.title {
            return Err(cat_err(format!(
                "field title is {:?}, not {:?}",
                entry.title, t.title
            )));
        }
        if entry.files.iter().any(|f| f.path == CATALOG_FILE) {
            return Err(cat_err("files lists catalog.json itself".into()));
        }
        // An older version on disk: keep the files whose SHA-256 is unchanged.
        let mut old: HashMap<String, String> = HashMap::new();
        let old_text = self
            .store
            .catalog_text(&t.title)
            .filter(|o| catalog_digest(o) != t.catalog_sha256);
        if let Some(o) = &old_text {
            if let Ok(e) = CatalogEntry::from_json(o) {
                old = e.files.into_iter().map(|f| (f.path, f.sha256)).collect();
            }
        }
        let needed: Vec<FileEntry> = entry
            .files
            .iter()
            .filter(|f| {
                let key = format!("/{}/{}", t.title, f.path);
                let same_version = old.get(&f.path).is_none_or(|h| *h == f.sha256);
                !(same_version && self.store.object_size(&key) == Some(f.size))
            })
            .cloned()
            .collect();
        if !needed.is_empty() && t.sources.is_empty() {
            return Err(FillError::File {
                title: t.title.clone(),
                path: needed[0].path.clone(),
                reasons: "the plan lists no source".into(),
            });
        }
        if old_text.is_some() && !needed.is_empty() {
            // Files change: the old version stops being served before any is replaced.
            self.store
                .remove_object(&format!("/{}/{CATALOG_FILE}", t.title));
            tracing::info!(
                title = t.title,
                "new catalog version: the old version is no longer served"
            );
        }
        tracing::info!(
            title = t.title,
            files = entry.files.len(),
            missing = needed.len(),
            reason = t.reason,
            urgent = t.urgent,
            "filling title"
        );
        let failures: Vec<FillError> =
            futures::stream::iter(needed.into_iter().map(|f| async move {
                let _slot = self.slots.acquire().await;
                self.fill_file(t, &f).await.err()
            }))
            .buffer_unordered(self.cfg.concurrency.max(1))
            .filter_map(|e| async move { e })
            .collect()
            .await;
        if let Some(e) = failures.into_iter().next() {
            return Err(e);
        }
        // Every file is in place and verified: the catalog goes last.
        let key = format!("/{}/{CATALOG_FILE}", t.title);
        let store_err = |reason: String| FillError::Store {
            title: t.title.clone(),
            reason,
        };
        let drive = self
            .store
            .placement(&key)
            .ok_or_else(|| store_err("no healthy cache drive".into()))?;
        let tmp = self.store.drives()[drive]
            .root
            .join(FILL_DIR)
            .join(format!("{}.catalog.tmp", t.title));
        let write = {
            let (tmp, text) = (tmp.clone(), text.clone());
            tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                std::fs::create_dir_all(tmp.parent().unwrap_or(&tmp))?;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .await
        };
        match write {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(store_err(format!("writing {}: {e}", tmp.display()))),
            Err(e) => return Err(store_err(e.to_string())),
        }
        let store = self.store.clone();
        let commit = tokio::task::spawn_blocking(move || store.commit_file(&key, drive, &tmp))
            .await
            .map_err(|e| store_err(e.to_string()))?;
        commit.map_err(|e| store_err(e.to_string()))?;
        match self.store.refresh_title(&t.title) {
            TitleState::Complete(h) => {
                tracing::info!(
                    title = t.title,
                    catalog_sha256 = h.catalog_sha256,
                    files_digest = h.files_digest,
                    "title filled and verified: now served"
                );
                Ok(())
            }
            TitleState::Incomplete(why) => {
                Err(store_err(format!("still incomplete after fill: {why}")))
            }
        }
    }

    async fn fill_file(&self, t: &PlannedTitle, f: &FileEntry) -> Result<(), FillError> {
        let key = format!("/{}/{}", t.title, f.path);
        let file_err = |reasons: String| FillError::File {
            title: t.title.clone(),
            path: f.path.clone(),
            reasons,
        };
        let drive = self
            .store
            .placement(&key)
            .ok_or_else(|| file_err("no healthy cache drive".into()))?;
        let part = fetch::partial_path(&self.store.drives()[drive].root, &key, &f.sha256);
        self.partials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(t.title.clone())
            .or_default()
            .insert(part.clone());
        let mut reasons = Vec::new();
        for src in &t.sources {
            match self.fetcher.fetch(src, &t.title, f, &part).await {
                Ok(()) => {
                    let store = self.store.clone();
                    let (k, p) = (key.clone(), part.clone());
                    let r =
                        tokio::task::spawn_blocking(move || store.commit_file(&k, drive, &p)).await;
                    match r {
                        Ok(Ok(_)) => {
                            if let Some(set) = self
                                .partials
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_mut(&t.title)
                            {
                                set.remove(&part);
                            }
                            self.metrics
                                .fill
                                .files_verified
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(key, source = src.label(), "file filled and verified");
                            return Ok(());
                        }
                        Ok(Err(e)) => return Err(file_err(e.to_string())),
                        Err(e) => return Err(file_err(e.to_string())),
                    }
                }
                Err(e @ fetch::FetchError::Io { .. }) => {
                    // This drive cannot take the file (ENOSPC, EIO, ...): no other source would
                    // do better. The partial file stays under FILL_DIR, never served, for a
                    // resume once the drive has room again.
                    let root = self.store.drives()[drive].root.display().to_string();
                    tracing::error!(key, drive = root, error = %e, "fill cannot write to its cache drive");
                    return Err(FillError::Store {
                        title: t.title.clone(),
                        reason: format!("{key}: cache drive {root}: {e}"),
                    });
                }
                Err(e) => {
                    tracing::warn!(key, source = src.label(), error = %e, "fill source failed; trying the next");
                    reasons.push(format!("{}: {e}", src.label()));
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("the plan lists no source".into());
        }
        Err(file_err(reasons.join("; ")))
    }
}
