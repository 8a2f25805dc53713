//! The cache: several cache directories ("drives", one per NVMe drive), an in-memory index of
//! every object rebuilt by scanning the drives at start-up, rendezvous placement of new objects,
//! per-drive capacity with LRU eviction between watermarks, and drive failure.
//!
//! **Invariants.**
//! - Keys are canonical resource paths (`/<title>/<file>`, from `protocol::grant::canonicalize`);
//!   the grant is never part of a key or a file path.
//! - Files are opened only with `openat2(RESOLVE_BENEATH)` relative to a drive's root directory
//!   descriptor: nothing outside a cache root can be opened, whatever the key.
//! - Objects are immutable once visible: written under `.tmp/`, fsynced, renamed into place.
//! - A file being sent is held open (`Arc<CachedFile>`), so eviction (unlink) never pulls it
//!   from under a reader.
//! - A drive that returns I/O errors is marked failed: its objects leave the index and new
//!   objects are placed on the others.
//! - **Title gate.** A title directory whose `catalog.json` is present is served only while every
//!   file the entry lists is indexed with the listed size (the entry is parsed and checked when
//!   the title is scanned, filled or changed; SHA-256 is checked by the filler before a file gets
//!   its final name, so start-up checks sizes only and never re-hashes). Under
//!   [`Gate::RequireCatalog`] (an appliance that fills) a title without `catalog.json` is not
//!   served at all; under [`Gate::Lenient`] (hand-placed directories) it is served as before.
//!   Any file of a complete title leaving the index (eviction, failure, removal) makes it
//!   incomplete until it is checked again.

mod placement;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::num::NonZeroUsize;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
pub use placement::rendezvous_order;
use protocol::catalog::{CatalogEntry, CATALOG_FILE};
use protocol::fill::{catalog_digest, files_digest, HeldTitle};

use crate::http1::conditional::Validators;
use crate::io::sys;

/// Name of the per-drive directory for objects being written.
pub const TMP_DIR: &str = ".tmp";

/// Deepest directory nesting scanned under a title directory.
pub const MAX_SCAN_DEPTH: usize = 4;

/// Eviction starts when a drive's usage passes this fraction of its capacity...
pub const HIGH_WATERMARK: f64 = 0.95;
/// ...and stops when usage is back under this fraction.
pub const LOW_WATERMARK: f64 = 0.90;

/// Largest `catalog.json` read, bytes.
pub const MAX_CATALOG_BYTES: u64 = 16 << 20;

/// Name of the per-drive directory holding partial fill downloads (kept across restarts so a
/// download resumes; never indexed because it starts with a dot).
pub const FILL_DIR: &str = ".fill";

/// Which title directories are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Titles without `catalog.json` are served as placed (hand-copied directories); titles with
    /// one are served only when complete.
    Lenient,
    /// Only complete titles (with `catalog.json`, every listed file present with its size).
    RequireCatalog,
}

/// Whether a title can be served, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TitleState {
    /// Complete: every file listed in its `catalog.json` is present with its size.
    Complete(HeldTitle),
    /// Not servable; the reason (for logs).
    Incomplete(String),
}

/// Most file descriptors kept open for reuse across requests (like nginx's `open_file_cache`).
pub const OPEN_FILE_CACHE: usize = 4096;

/// Cache errors. Each names the drive or key concerned.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A cache directory cannot be used at start-up.
    #[error("cache directory {path}: {source}")]
    Drive {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No cache directory was configured.
    #[error("no cache directory configured")]
    NoDrives,
    /// Every drive has failed.
    #[error("no healthy cache drive")]
    NoHealthyDrive,
    /// The key is not a canonical resource path.
    #[error("invalid cache key {key:?}: {why}")]
    BadKey {
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
    /// An object larger than a drive's capacity.
    #[error("object {key} of {size} bytes does not fit on drive {drive} ({capacity} bytes)")]
    TooLarge {
        /// The key.
        key: String,
        /// Its size.
        size: u64,
        /// The chosen drive.
        drive: String,
        /// The drive's capacity.
        capacity: u64,
    },
    /// An I/O error while writing an object.
    #[error("writing {key} on {drive}: {source}")]
    Write {
        /// The key.
        key: String,
        /// The drive.
        drive: String,
        /// The cause.
        source: io::Error,
    },
}

/// Why a lookup found nothing to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No drive holds the object.
    NotFound,
    /// The drive holding it failed while opening it.
    DriveFailed,
}

/// One cache directory.
#[derive(Debug)]
pub struct Drive {
    /// The directory.
    pub root: PathBuf,
    dir: File,
    /// Capacity in bytes.
    pub capacity: u64,
    used: AtomicU64,
    failed: AtomicBool,
    io_errors: AtomicU64,
}

impl Drive {
    /// Bytes used by indexed objects.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the drive has been taken out.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// I/O errors seen on this drive.
    pub fn io_errors(&self) -> u64 {
        self.io_errors.load(Ordering::Relaxed)
    }
}

/// An open object ready to send.
#[derive(Debug)]
pub struct CachedFile {
    /// The open file (read-only).
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// Its validators.
    pub validators: Validators,
    /// Index of the drive holding it.
    pub drive: usize,
    /// Its response header lines, rendered once when the file is opened: `ETag`,
    /// `Last-Modified`, `Cache-Control` (by the key's type) and `Accept-Ranges`, each ending in
    /// CRLF.
    pub header_block: String,
    /// When the whole file was last found resident in the page cache (`cachestat`), in
    /// milliseconds of [`coarse_ms`] plus one (0: never): see [`CachedFile::resident_memo`].
    pub resident_at: std::sync::atomic::AtomicU64,
    /// The file mapped read-only, made on the first small range sent from it (see
    /// [`CachedFile::mapping`]) and unmapped when the file is closed.
    pub mapping: std::sync::OnceLock<Option<crate::io::sys::Mapping>>,
}

/// How long a "the whole file is in the page cache" answer is trusted before `cachestat` is
/// asked again: the io_uring backend then sends ranges of that file inline without a
/// `cachestat` call each (one call per file per interval instead of one per response). Pages
/// evicted within the interval cost one `sendfile` that waits on the disk on the ring thread.
///
/// One second: a file found wholly resident is one being served, and pages read within the
/// last second are on the kernel's active LRU list, which reclaim only takes from after
/// demoting them to the inactive list and ageing them there; what drops them sooner is explicit
/// (`fadvise(DONTNEED)`, `drop_caches`, truncation). At 100 ms a popular 2 MiB segment served
/// a few times a second was asked about on ~3 responses of 4, and that walk of its 512 pages
/// was ~3% of the server's CPU on whole segments (perf against the floor server, BENCHMARKS.md).
pub const RESIDENT_MEMO: std::time::Duration = std::time::Duration::from_secs(1);

/// Milliseconds since the first call, on the monotonic clock.
pub fn coarse_ms(now: std::time::Instant) -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| now);
    now.saturating_duration_since(base).as_millis() as u64
}

impl CachedFile {
    /// Whether the whole file was found resident less than [`RESIDENT_MEMO`] before `now`.
    pub fn resident_memo(&self, now: std::time::Instant) -> bool {
        use std::sync::atomic::Ordering;
        let at = self.resident_at.load(Ordering::Relaxed);
        at != 0 && coarse_ms(now) < at - 1 + RESIDENT_MEMO.as_millis() as u64
    }

    /// The file mapped read-only (made on first use, kept while the file is open), or `None` if
    /// it cannot be (empty, or `mmap` refused). The io_uring backend sends a small resident range
    /// together with its head from it in one `sendmsg`.
    pub fn mapping(&self) -> Option<&crate::io::sys::Mapping> {
        use std::os::fd::AsFd as _;
        self.mapping
            .get_or_init(|| crate::io::sys::Mapping::new(self.file.as_fd(), self.size).ok())
            .as_ref()
    }

    /// Records that the whole file was found resident at `now`.
    pub fn note_resident(&self, now: std::time::Instant) {
        self.resident_at
            .store(coarse_ms(now) + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The header lines every answer about this file carries (see [`CachedFile::header_block`]).
    pub fn render_header_block(key: &str, v: &Validators) -> String {
        format!(
            "ETag: {}\r\nLast-Modified: {}\r\nCache-Control: {}\r\nAccept-Ranges: bytes\r\n",
            v.etag,
            httpdate::fmt_http_date(v.last_modified),
            crate::http1::response::cache_control(key)
        )
    }
}

#[derive(Debug)]
struct Index {
    /// key → drive index.
    objects: HashMap<String, usize>,
    /// Per drive: key → size, in recency order (eviction pops the least recent).
    lru: Vec<LruCache<String, u64>>,
    /// Open descriptors kept for reuse.
    open: LruCache<String, Arc<CachedFile>>,
    /// Titles that have (or had) a `catalog.json`.
    titles: HashMap<String, TitleState>,
}

/// The title id of a key (`/<title>/...`).
fn title_of(key: &str) -> &str {
    key.trim_start_matches('/').split('/').next().unwrap_or("")
}

impl Index {
    /// A file of `key`'s title changed or left: a complete title is checked again before it is
    /// served.
    fn invalidate(&mut self, key: &str) {
        if let Some(st) = self.titles.get_mut(title_of(key)) {
            if matches!(st, TitleState::Complete(_)) {
                *st = TitleState::Incomplete(format!("{key} changed or left the cache"));
            }
        }
    }
}

/// The set of cache drives and their index.
#[derive(Debug)]
pub struct Store {
    drives: Vec<Drive>,
    index: Mutex<Index>,
    tmp_seq: AtomicU64,
    gate: Gate,
}

impl Store {
    /// Opens the cache directories, creating them if missing, and indexes every object found.
    /// `capacity` is the per-drive byte capacity; `None` means the file system's size.
    /// Hand-placed titles without `catalog.json` are served ([`Gate::Lenient`]).
    pub fn open(roots: &[PathBuf], capacity: Option<u64>) -> Result<Self, CacheError> {
        Self::open_with(roots, capacity, Gate::Lenient)
    }

    /// [`Store::open`] with an explicit title gate.
    pub fn open_with(
        roots: &[PathBuf],
        capacity: Option<u64>,
        gate: Gate,
    ) -> Result<Self, CacheError> {
        if roots.is_empty() {
            return Err(CacheError::NoDrives);
        }
        let mut drives = Vec::new();
        for root in roots {
            let e = |source| CacheError::Drive {
                path: root.clone(),
                source,
            };
            std::fs::create_dir_all(root).map_err(e)?;
            let dir = File::open(root).map_err(e)?;
            if !dir.metadata().map_err(e)?.is_dir() {
                return Err(e(io::Error::other("not a directory")));
            }
            let capacity = match capacity {
                Some(c) => c,
                None => sys::fs_space(root).map_err(e)?.0,
            };
            drives.push(Drive {
                root: root.clone(),
                dir,
                capacity,
                used: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                io_errors: AtomicU64::new(0),
            });
        }
        let unbounded = || LruCache::unbounded();
        let store = Store {
            index: Mutex::new(Index {
                objects: HashMap::new(),
                lru: drives.iter().map(|_| unbounded()).collect(),
                open: LruCache::new(
                    NonZeroUsize::new(OPEN_FILE_CACHE).unwrap_or(NonZeroUsize::MIN),
                ),
                titles: HashMap::new(),
            }),
            drives,
            tmp_seq: AtomicU64::new(0),
            gate,
        };
        store.scan();
        Ok(store)
    }

    /// The drives.
    pub fn drives(&self) -> &[Drive] {
        &self.drives
    }

    /// Number of indexed objects.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// Whether no object is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether at least one drive is healthy.
    pub fn any_healthy(&self) -> bool {
        self.drives.iter().any(|d| !d.is_failed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the index from the drives' contents. Leftover temporary files are removed.
    fn scan(&self) {
        let mut failed = Vec::new();
        let mut idx = self.lock();
        for (i, d) in self.drives.iter().enumerate() {
            let _ = std::fs::remove_dir_all(d.root.join(TMP_DIR));
            let mut found = Vec::new();
            if let Err(e) = scan_dir(&d.root, "", 0, &mut found) {
                tracing::error!(drive = %d.root.display(), error = %e, "scan failed; drive taken out");
                failed.push(i);
                continue;
            }
            for (key, size) in found {
                if let Some(&other) = idx.objects.get(&key) {
                    tracing::warn!(key, first = %self.drives[other].root.display(), second = %d.root.display(), "object on two drives; keeping the first");
                    continue;
                }
                idx.objects.insert(key.clone(), i);
                idx.lru[i].put(key, size);
                d.used.fetch_add(size, Ordering::Relaxed);
            }
            tracing::info!(drive = %d.root.display(), objects = idx.lru[i].len(), bytes = d.used(), "cache drive indexed");
        }
        let catalogs: Vec<String> = idx
            .objects
            .keys()
            .filter(|k| k.ends_with(&format!("/{CATALOG_FILE}")) && k.matches('/').count() == 2)
            .map(|k| title_of(k).to_owned())
            .collect();
        drop(idx);
        for i in failed {
            self.fail(i);
        }
        for t in catalogs {
            match self.refresh_title(&t) {
                TitleState::Complete(_) => tracing::debug!(title = t, "title complete"),
                TitleState::Incomplete(why) => {
                    tracing::warn!(title = t, why, "title incomplete: not served")
                }
            }
        }
    }

    /// The title gate in force.
    pub fn gate(&self) -> Gate {
        self.gate
    }

    /// Reads a small object (a `catalog.json`) regardless of the title gate.
    fn read_object(&self, key: &str, max: u64) -> io::Result<String> {
        let drive = self
            .lock()
            .objects
            .get(key)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in the cache"))?;
        let d = &self.drives[drive];
        let f = sys::open_beneath(d.dir.as_fd(), key.trim_start_matches('/'))?;
        let mut text = String::new();
        f.take(max + 1).read_to_string(&mut text)?;
        if text.len() as u64 > max {
            return Err(io::Error::other(format!("larger than {max} bytes")));
        }
        Ok(text)
    }

    /// Checks `title` against its `catalog.json` (parsed and validated; every listed file present
    /// with its size) and records the result, which the gate then uses.
    pub fn refresh_title(&self, title: &str) -> TitleState {
        let key = format!("/{title}/{CATALOG_FILE}");
        let checked = self
            .read_object(&key, MAX_CATALOG_BYTES)
            .map_err(|e| format!("{key}: {e}"))
            .and_then(|text| {
                let entry = CatalogEntry::from_json(&text).map_err(|e| format!("{key}: {e}"))?;
                if entry.title != title {
                    return Err(format!(
                        "{key}: field title is {:?}, not the directory name",
                        entry.title
                    ));
                }
                Ok((text, entry))
            });
        let mut idx = self.lock();
        let state = match checked {
            Err(why) => TitleState::Incomplete(why),
            Ok((text, entry)) => {
                let missing = entry.files.iter().find_map(|f| {
                    let k = format!("/{title}/{}", f.path);
                    let have = idx
                        .objects
                        .get(&k)
                        .and_then(|&d| idx.lru[d].peek(&k).copied());
                    match have {
                        Some(s) if s == f.size => None,
                        Some(s) => Some(format!("{k} has {s} bytes, the catalog says {}", f.size)),
                        None => Some(format!("{k} is missing")),
                    }
                });
                match missing {
                    Some(why) => TitleState::Incomplete(why),
                    None => TitleState::Complete(HeldTitle {
                        title: title.to_owned(),
                        catalog_sha256: catalog_digest(&text),
                        files_digest: files_digest(
                            entry
                                .files
                                .iter()
                                .map(|f| (f.path.as_str(), f.size, f.sha256.as_str())),
                        ),
                    }),
                }
            }
        };
        idx.titles.insert(title.to_owned(), state.clone());
        state
    }

    /// The state of `title` (`None`: no `catalog.json` was ever seen for it).
    pub fn title_state(&self, title: &str) -> Option<TitleState> {
        self.lock().titles.get(title).cloned()
    }

    /// Every complete title, sorted by id.
    pub fn held(&self) -> Vec<HeldTitle> {
        let mut v: Vec<HeldTitle> = self
            .lock()
            .titles
            .values()
            .filter_map(|s| match s {
                TitleState::Complete(h) => Some(h.clone()),
                TitleState::Incomplete(_) => None,
            })
            .collect();
        v.sort_by(|a, b| a.title.cmp(&b.title));
        v
    }

    /// Titles with at least one indexed object (complete or not), sorted.
    pub fn title_dirs(&self) -> Vec<String> {
        let idx = self.lock();
        let mut v: Vec<String> = idx
            .objects
            .keys()
            .map(|k| title_of(k).to_owned())
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        v.sort();
        v
    }

    /// The `catalog.json` text of `title`, if indexed and readable.
    pub fn catalog_text(&self, title: &str) -> Option<String> {
        self.read_object(&format!("/{title}/{CATALOG_FILE}"), MAX_CATALOG_BYTES)
            .ok()
    }

    /// Size of the indexed object `key`, regardless of the title gate.
    pub fn object_size(&self, key: &str) -> Option<u64> {
        let idx = self.lock();
        idx.objects
            .get(key)
            .and_then(|&d| idx.lru[d].peek(key).copied())
    }

    /// Removes a title: it stops being served first (its `catalog.json` goes), then every object
    /// under `/<title>/` leaves the index and is unlinked. Responses in flight keep their open
    /// descriptors and finish. Returns the number of objects removed.
    pub fn remove_title(&self, title: &str) -> usize {
        let prefix = format!("/{title}/");
        let mut idx = self.lock();
        idx.titles.insert(
            title.to_owned(),
            TitleState::Incomplete("being removed".into()),
        );
        let mut keys: Vec<(String, usize)> = idx
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, &d)| (k.clone(), d))
            .collect();
        // The catalog first: a crash half-way leaves an incomplete title, never a wrong one.
        keys.sort_by_key(|(k, _)| !k.ends_with(&format!("/{CATALOG_FILE}")));
        // Under the lock only the index changes; descriptors are closed and files unlinked
        // after it is released (the title is already out of the index: nothing can open them).
        let mut closed = Vec::new();
        for (k, d) in &keys {
            idx.objects.remove(k);
            closed.extend(idx.open.pop(k));
            if let Some(size) = idx.lru[*d].pop(k) {
                self.drives[*d].used.fetch_sub(size, Ordering::Relaxed);
            }
        }
        idx.titles.remove(title);
        drop(idx);
        drop(closed);
        for (k, d) in &keys {
            let _ = std::fs::remove_file(self.drives[*d].root.join(&k[1..]));
        }
        for d in &self.drives {
            let _ = std::fs::remove_dir_all(d.root.join(title));
        }
        keys.len()
    }

    /// Removes one object from the index and unlinks it (its title, if complete, stops being
    /// served until checked again). Readers keep their open descriptors.
    pub fn remove_object(&self, key: &str) {
        let drive = self.lock().objects.get(key).copied();
        self.forget(key);
        if let Some(d) = drive {
            let _ = std::fs::remove_file(self.drives[d].root.join(key.trim_start_matches('/')));
        }
    }

    /// The drive a new object `key` goes to (rendezvous over the healthy drives).
    pub fn placement(&self, key: &str) -> Option<usize> {
        let healthy: Vec<(usize, &Path)> = self
            .drives
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.is_failed())
            .map(|(i, d)| (i, d.root.as_path()))
            .collect();
        rendezvous_order(key, &healthy).first().copied()
    }

    /// Moves a finished, fsynced file `tmp` (on `drive`'s file system, e.g. under
    /// [`FILL_DIR`]) to `key` on `drive`, fsyncs the directory and indexes it. The caller has
    /// verified its contents. A complete title containing `key` is checked again before it is
    /// served.
    pub fn commit_file(&self, key: &str, drive: usize, tmp: &Path) -> Result<u64, CacheError> {
        let canon = protocol::grant::canonicalize(key).map_err(|e| CacheError::BadKey {
            key: key.to_owned(),
            why: e.to_string(),
        })?;
        if canon.as_str() != key {
            return Err(CacheError::BadKey {
                key: key.to_owned(),
                why: "not canonical".into(),
            });
        }
        let d = self.drives.get(drive).ok_or(CacheError::NoHealthyDrive)?;
        let werr = |source| CacheError::Write {
            key: key.to_owned(),
            drive: d.root.display().to_string(),
            source,
        };
        let dest = d.root.join(&key[1..]);
        let parent = dest.parent().unwrap_or(&d.root).to_path_buf();
        let size = (|| {
            let size = std::fs::metadata(tmp)?.len();
            std::fs::create_dir_all(&parent)?;
            std::fs::rename(tmp, &dest)?;
            File::open(&parent)?.sync_all()?;
            Ok::<u64, io::Error>(size)
        })()
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EIO) {
                self.report_io_error(drive);
            }
            werr(e)
        })?;
        self.index_new(key, drive, size);
        Ok(size)
    }

    /// Looks up and opens `key` for sending; marks it recently used.
    pub fn get(&self, key: &str) -> Result<Arc<CachedFile>, Miss> {
        let drive = {
            let mut idx = self.lock();
            let Some(&drive) = idx.objects.get(key) else {
                return Err(Miss::NotFound);
            };
            match idx.titles.get(title_of(key)) {
                Some(TitleState::Complete(_)) => {}
                Some(TitleState::Incomplete(_)) => return Err(Miss::NotFound),
                None if self.gate == Gate::RequireCatalog => return Err(Miss::NotFound),
                None => {}
            }
            let _ = idx.lru[drive].get(key);
            if let Some(f) = idx.open.get(key) {
                return Ok(f.clone());
            }
            drive
        };
        let d = &self.drives[drive];
        if d.is_failed() {
            return Err(Miss::DriveFailed);
        }
        let rel = key.trim_start_matches('/');
        let opened = sys::open_beneath(d.dir.as_fd(), rel).and_then(|f| {
            let m = f.metadata()?;
            if !m.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "not a regular file",
                ));
            }
            Ok((f, m))
        });
        match opened {
            Ok((file, m)) => {
                let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                let validators = Validators::from_meta(m.ino(), m.size(), mtime_ns);
                let f = Arc::new(CachedFile {
                    header_block: CachedFile::render_header_block(key, &validators),
                    validators,
                    size: m.size(),
                    file,
                    drive,
                    resident_at: std::sync::atomic::AtomicU64::new(0),
                    mapping: std::sync::OnceLock::new(),
                });
                // The entry pushed out (if the open-file cache was full) is closed after the
                // lock is released.
                let evicted = self.lock().open.push(key.to_owned(), f.clone());
                drop(evicted);
                Ok(f)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The file went away behind our back: forget it, unless its whole drive went
                // (removed, unmounted): then the drive is taken out.
                if !self.check_drive(drive) {
                    return Err(Miss::DriveFailed);
                }
                self.forget(key);
                Err(Miss::NotFound)
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) {
                    // A symlink leaving the root: refused, not a drive failure.
                    return Err(Miss::NotFound);
                }
                tracing::error!(drive = %d.root.display(), key, error = %e, "I/O error opening object");
                self.report_io_error(drive);
                Err(Miss::DriveFailed)
            }
        }
    }

    fn forget(&self, key: &str) {
        let closed = {
            let mut idx = self.lock();
            if let Some(drive) = idx.objects.remove(key) {
                if let Some(size) = idx.lru[drive].pop(key) {
                    self.drives[drive].used.fetch_sub(size, Ordering::Relaxed);
                }
            }
            idx.invalidate(key);
            idx.open.pop(key)
        };
        drop(closed);
    }

    /// Records an I/O error on `drive` (from a read or send); the drive is taken out.
    pub fn report_io_error(&self, drive: usize) {
        if let Some(d) = self.drives.get(drive) {
            d.io_errors.fetch_add(1, Ordering::Relaxed);
            self.fail(drive);
        }
    }

    /// Checks that `drive`'s root directory is still the directory opened at start-up: its path
    /// resolves (no ENOENT, EIO, ...) to the same file system object (a drive unmounted, even
    /// lazily, or its directory removed or replaced, is not). A drive failing the check is
    /// taken out (counted as an I/O error). Returns whether the drive is healthy.
    pub fn check_drive(&self, drive: usize) -> bool {
        let Some(d) = self.drives.get(drive) else {
            return false;
        };
        if d.is_failed() {
            return false;
        }
        let why = match (d.dir.metadata(), std::fs::metadata(&d.root)) {
            (Err(e), _) => format!("the open root directory: {e}"),
            (_, Err(e)) => format!("{}: {e}", d.root.display()),
            (Ok(open), Ok(now)) if (open.dev(), open.ino()) != (now.dev(), now.ino()) => format!(
                "{} is no longer the directory opened at start-up (unmounted, removed or replaced)",
                d.root.display()
            ),
            _ => return true,
        };
        d.io_errors.fetch_add(1, Ordering::Relaxed);
        self.fail_because(drive, &why);
        false
    }

    /// [`Store::check_drive`] on every drive; returns the number of healthy drives.
    pub fn check_drives(&self) -> usize {
        (0..self.drives.len())
            .filter(|&i| self.check_drive(i))
            .count()
    }

    /// Takes a drive out: its objects leave the index.
    pub fn fail(&self, drive: usize) {
        self.fail_because(drive, "I/O error");
    }

    fn fail_because(&self, drive: usize, why: &str) {
        let Some(d) = self.drives.get(drive) else {
            return;
        };
        if d.failed.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::error!(drive = %d.root.display(), why, "cache drive marked failed: its objects leave the index");
        let mut closed = Vec::new();
        let mut idx = self.lock();
        let keys: Vec<String> = idx.lru[drive].iter().map(|(k, _)| k.clone()).collect();
        for k in keys {
            idx.objects.remove(&k);
            closed.extend(idx.open.pop(&k));
            idx.invalidate(&k);
        }
        idx.lru[drive].clear();
        d.used.store(0, Ordering::Relaxed);
        drop(idx);
        // Descriptors are closed after the lock is released.
        drop(closed);
    }

    /// Stores a new object under `key` from `data`: placed by rendezvous hashing over the healthy
    /// drives, written to a temporary file, fsynced and renamed into place, then indexed.
    /// Evicts least recently used objects when the drive passes its high watermark.
    pub fn insert(&self, key: &str, data: &mut dyn Read) -> Result<(), CacheError> {
        let canon = protocol::grant::canonicalize(key).map_err(|e| CacheError::BadKey {
            key: key.to_owned(),
            why: e.to_string(),
        })?;
        if canon.as_str() != key {
            return Err(CacheError::BadKey {
                key: key.to_owned(),
                why: format!("not canonical (canonical form is {:?})", canon.as_str()),
            });
        }
        let healthy: Vec<(usize, &Path)> = self
            .drives
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.is_failed())
            .map(|(i, d)| (i, d.root.as_path()))
            .collect();
        let order = rendezvous_order(key, &healthy);
        let &drive = order.first().ok_or(CacheError::NoHealthyDrive)?;
        let d = &self.drives[drive];
        let werr = |source| CacheError::Write {
            key: key.to_owned(),
            drive: d.root.display().to_string(),
            source,
        };
        let tmp_dir = d.root.join(TMP_DIR);
        std::fs::create_dir_all(&tmp_dir).map_err(werr)?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("{}-{seq}", std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            let size = io::copy(data, &mut f)?;
            f.flush()?;
            f.sync_all()?;
            let dest = d.root.join(&key[1..]);
            let parent = dest.parent().unwrap_or(&d.root);
            std::fs::create_dir_all(parent)?;
            std::fs::rename(&tmp, &dest)?;
            File::open(parent)?.sync_all()?;
            Ok::<u64, io::Error>(size)
        })();
        let size = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                if e.raw_os_error() == Some(libc::EIO) {
                    self.report_io_error(drive);
                }
                return Err(werr(e));
            }
        };
        if size > d.capacity {
            let _ = std::fs::remove_file(d.root.join(&key[1..]));
            return Err(CacheError::TooLarge {
                key: key.to_owned(),
                size,
                drive: d.root.display().to_string(),
                capacity: d.capacity,
            });
        }
        self.index_new(key, drive, size);
        let title = title_of(key);
        if key.ends_with(&format!("/{CATALOG_FILE}")) || self.title_state(title).is_some() {
            self.refresh_title(title);
        }
        Ok(())
    }

    /// Evicts least recently used objects from `drive` while it is above the high watermark,
    /// down to the low watermark. Returns the number of objects removed.
    pub fn evict(&self, drive: usize) -> usize {
        let d = &self.drives[drive];
        let high = (d.capacity as f64 * HIGH_WATERMARK) as u64;
        let low = (d.capacity as f64 * LOW_WATERMARK) as u64;
        if d.used() <= high {
            return 0;
        }
        // Collect under the lock (index changes only), close and unlink after it.
        let mut victims = Vec::new();
        let mut closed = Vec::new();
        {
            let mut idx = self.lock();
            while d.used() > low {
                let Some((key, size)) = idx.lru[drive].pop_lru() else {
                    break;
                };
                idx.objects.remove(&key);
                closed.extend(idx.open.pop(&key));
                idx.invalidate(&key);
                d.used.fetch_sub(size, Ordering::Relaxed);
                victims.push(key);
            }
        }
        drop(closed);
        for key in &victims {
            // Readers hold their own descriptor: unlinking never truncates what they send.
            let _ = std::fs::remove_file(d.root.join(&key[1..]));
            tracing::debug!(key, drive = %d.root.display(), "evicted");
        }
        victims.len()
    }

    /// Indexes a file just renamed into place as `key` on `drive` (replacing any older copy on
    /// any drive), then evicts from `drive` if it passed its high watermark. The one path by
    /// which [`Store::insert`] and [`Store::commit_file`] make an object visible.
    fn index_new(&self, key: &str, drive: usize, size: u64) {
        let closed = {
            let mut idx = self.lock();
            if let Some(old_drive) = idx.objects.insert(key.to_owned(), drive) {
                if let Some(old) = idx.lru[old_drive].pop(key) {
                    self.drives[old_drive]
                        .used
                        .fetch_sub(old, Ordering::Relaxed);
                }
            }
            let closed = idx.open.pop(key);
            idx.invalidate(key);
            idx.lru[drive].put(key.to_owned(), size);
            self.drives[drive].used.fetch_add(size, Ordering::Relaxed);
            closed
        };
        drop(closed);
        self.evict(drive);
    }
}

/// Collects `(key, size)` for every regular file under `root/rel` (title directories at depth 0).
fn scan_dir(root: &Path, rel: &str, depth: usize, out: &mut Vec<(String, u64)>) -> io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel.trim_start_matches('/'))
    };
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let child = format!("{rel}/{name}");
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if depth < MAX_SCAN_DEPTH {
                scan_dir(root, &child, depth + 1, out)?;
            }
        } else if ft.is_file() && depth > 0 {
            // Only keys that a request could name are indexed.
            if protocol::grant::canonicalize(&child).is_ok_and(|c| c.as_str() == child) {
                out.push((child, entry.metadata()?.len()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn scan_indexes_titles_on_every_drive() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(a.path(), "t1/master.m3u8", b"#EXTM3U");
        write(a.path(), "t1/v/seg1.m4s", b"12345");
        write(b.path(), "t2/manifest.mpd", b"<MPD/>");
        write(b.path(), ".tmp/junk", b"x");
        write(b.path(), "loose-file", b"x");
        let s = Store::open(&[a.path().into(), b.path().into()], Some(1 << 20)).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.drives()[0].used(), 12);
        let f = s.get("/t1/v/seg1.m4s").unwrap();
        assert_eq!(f.size, 5);
        assert_eq!(f.drive, 0);
        assert_eq!(s.get("/t2/manifest.mpd").unwrap().drive, 1);
        assert_eq!(s.get("/t2/nope").unwrap_err(), Miss::NotFound);
        assert!(!b.path().join(".tmp").exists(), "leftover temp dir removed");
    }

    #[test]
    fn insert_places_renames_and_evicts_lru() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let s = Store::open(&[a.path().into(), b.path().into()], Some(1000)).unwrap();
        for i in 0..30 {
            s.insert(&format!("/t/v/s{i}.m4s"), &mut &[7u8; 100][..])
                .unwrap();
            // Keep s0 hot.
            let _ = s.get("/t/v/s0.m4s");
        }
        for d in s.drives() {
            assert!(
                d.used() <= 950,
                "drive over its high watermark: {}",
                d.used()
            );
        }
        assert!(s.get("/t/v/s0.m4s").is_ok(), "recently used object evicted");
        assert!(s.len() < 30);
        // Same key always lands on the same drive.
        let order1 = rendezvous_order("/t/v/s1.m4s", &[(0, a.path()), (1, b.path())]);
        let order2 = rendezvous_order("/t/v/s1.m4s", &[(0, a.path()), (1, b.path())]);
        assert_eq!(order1, order2);
        assert!(s.insert("/t/../x", &mut &b"x"[..]).is_err());
        assert!(s.insert("/t/a%2fb", &mut &b"x"[..]).is_err());
    }

    fn catalog(title: &str, files: &[(&str, &[u8])]) -> String {
        use sha2::{Digest as _, Sha256};
        let files: Vec<serde_json::Value> = files
            .iter()
            .map(|(p, d)| {
                let h = protocol::hex::encode(&Sha256::digest(d));
                serde_json::json!({"path": p, "size": d.len(), "sha256": h})
            })
            .collect();
        serde_json::json!({
            "version": 1, "title": title, "duration_ms": 1000, "mode": "on-demand",
            "segment_duration_ms": 1000,
            "renditions": [{"id": "a", "kind": "audio", "codec": "opus", "bandwidth": 1,
                            "average_bandwidth": 1, "files": ["a/x.mp4"]}],
            "manifests": {"hls": "master.m3u8", "dash": "manifest.mpd"},
            "files": files,
        })
        .to_string()
    }

    #[test]
    fn title_gate_serves_complete_titles_only() {
        let a = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8]); 3] = [
            ("master.m3u8", b"#EXTM3U"),
            ("manifest.mpd", b"<MPD/>"),
            ("a/x.mp4", b"0123456789"),
        ];
        for t in ["ok", "short", "nocat"] {
            for (p, d) in files {
                write(a.path(), &format!("{t}/{p}"), d);
            }
        }
        write(
            a.path(),
            "ok/catalog.json",
            catalog("ok", &files).as_bytes(),
        );
        write(
            a.path(),
            "short/catalog.json",
            catalog("short", &files).as_bytes(),
        );
        write(a.path(), "short/a/x.mp4", b"012345678");
        let roots = [a.path().to_path_buf()];
        for gate in [Gate::Lenient, Gate::RequireCatalog] {
            let s = Store::open_with(&roots, Some(1 << 20), gate).unwrap();
            assert!(s.get("/ok/a/x.mp4").is_ok());
            assert_eq!(s.get("/short/a/x.mp4").unwrap_err(), Miss::NotFound);
            assert_eq!(s.get("/short/master.m3u8").unwrap_err(), Miss::NotFound);
            match s.title_state("short") {
                Some(TitleState::Incomplete(why)) => {
                    assert!(why.contains("/short/a/x.mp4 has 9 bytes"), "{why}")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(s.get("/nocat/a/x.mp4").is_ok(), gate == Gate::Lenient);
            let held: Vec<String> = s.held().into_iter().map(|h| h.title).collect();
            assert_eq!(held, vec!["ok".to_string()]);
            // A file of a complete title leaving the cache makes it incomplete.
            s.remove_object("/ok/manifest.mpd");
            assert_eq!(s.get("/ok/a/x.mp4").unwrap_err(), Miss::NotFound);
            assert!(s.held().is_empty());
            write(a.path(), "ok/manifest.mpd", b"<MPD/>");
        }
        let s = Store::open_with(&roots, Some(1 << 20), Gate::RequireCatalog).unwrap();
        assert_eq!(s.remove_title("ok"), 4);
        assert!(!a.path().join("ok").exists());
        assert!(s.get("/ok/a/x.mp4").is_err());
    }

    #[test]
    fn a_drive_whose_root_goes_away_is_taken_out() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a, "t1/a.m4s", b"AAAA");
        write(&a, "t2/a.m4s", b"AAAA");
        write(&b, "t3/b.m4s", b"BBBB");
        let s = Store::open(&[a.clone(), b.clone()], Some(1 << 20)).unwrap();
        assert_eq!(s.check_drives(), 2);
        std::fs::remove_dir_all(&a).unwrap();
        // A request's failed open notices at once: the drive, not the file, is gone.
        assert_eq!(s.get("/t1/a.m4s").unwrap_err(), Miss::DriveFailed);
        assert!(s.drives()[0].is_failed());
        assert_eq!(s.drives()[0].io_errors(), 1);
        assert_eq!(s.get("/t2/a.m4s").unwrap_err(), Miss::NotFound);
        assert!(s.get("/t3/b.m4s").is_ok());
        // A directory put back at the same path is another directory: still failed.
        std::fs::create_dir(&a).unwrap();
        assert_eq!(s.check_drives(), 1);
        assert!(!s.check_drive(0));
        // A drive replaced behind its path still opens through its root descriptor (the bytes
        // are right); the periodic check takes it out.
        std::fs::rename(&b, dir.path().join("b-old")).unwrap();
        std::fs::create_dir(&b).unwrap();
        assert!(s.get("/t3/b.m4s").is_ok());
        assert_eq!(s.check_drives(), 0);
        assert!(!s.any_healthy());
        assert_eq!(s.get("/t3/b.m4s").unwrap_err(), Miss::NotFound);
    }

    #[test]
    fn held_file_survives_eviction_and_failed_drive_leaves_index() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(a.path(), "t/a.m4s", b"AAAA");
        write(b.path(), "t/b.m4s", b"BBBB");
        let s = Store::open(&[a.path().into(), b.path().into()], Some(1 << 20)).unwrap();
        let held = s.get("/t/a.m4s").unwrap();
        std::fs::remove_file(a.path().join("t/a.m4s")).unwrap();
        let mut buf = String::new();
        (&held.file).read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "AAAA");
        s.fail(0);
        assert_eq!(s.get("/t/a.m4s").unwrap_err(), Miss::NotFound);
        assert!(s.get("/t/b.m4s").is_ok());
        assert!(s.drives()[0].is_failed());
        // New objects go to the healthy drive.
        s.insert("/t/c.m4s", &mut &b"C"[..]).unwrap();
        assert!(b.path().join("t/c.m4s").exists());
    }
}
