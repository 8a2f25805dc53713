//! The request handler shared by every backend: routes a parsed request, checks its grant
//! (through a bounded cache of verified tokens), finds the object in the cache and plans the
//! response as a list of chunks ("these bytes, then this file range").
//!
//! **Invariant:** only the canonical resource path after the grant reaches the cache; the grant
//! string is used solely as the key of the verified-token cache.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use lru::LruCache;
use protocol::catalog::CATALOG_FILE;
use protocol::grant::{
    authorize, split_grant_path, Claims, GrantError, KeyRing, ResourcePath, Scope, Verifier,
    CLOCK_LEEWAY_SECS,
};

use crate::cache::{CachedFile, Miss, Store};
use crate::http1::conditional::{self, Outcome};
use crate::http1::range::{self, RangeDecision};
use crate::http1::response::{self, Head, Multipart, ALLOW_HEADERS, PREFLIGHT_MAX_AGE};
use crate::http1::{Method, Request, Status, Version};
use crate::metrics::Metrics;

/// Most verified tokens remembered (one per playback session).
pub const GRANT_CACHE_ENTRIES: usize = 65_536;

/// One piece of a response, sent in order.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes built in memory (heads, multipart delimiters, error bodies).
    Mem(Vec<u8>),
    /// A byte range of the response's file, sent by the kernel (sendfile / splice).
    File {
        /// First byte.
        offset: u64,
        /// Byte count (non-zero).
        len: u64,
    },
}

/// A planned response.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// The chunks to send, the head first.
    pub chunks: Vec<Chunk>,
    /// The file that `Chunk::File` ranges refer to, held open for the whole send.
    pub file: Option<Arc<CachedFile>>,
    /// Whether the connection stays open afterwards.
    pub keep_alive: bool,
    /// The resource path for the access log and QoE (never the grant), copied into a pooled
    /// string (`bufpool::path`: no allocation once a thread is warm).
    pub log_path: Option<ResourcePath<'static>>,
    /// The verified grant's claims (its `sub` goes to the access log); shared, not copied.
    pub claims: Option<Arc<Claims>>,
}

impl Response {
    /// Total bytes of the response (head and body).
    pub fn total_len(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| match c {
                Chunk::Mem(b) => b.len() as u64,
                Chunk::File { len, .. } => *len,
            })
            .sum()
    }
}

/// Settings of the handler.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The appliance id sent in `Outpost-Appliance`.
    pub id: String,
    /// Log one request in this many (0: none).
    pub access_log_every: u64,
}

/// The request handler.
#[derive(Debug)]
pub struct Service {
    id: String,
    verifier: RwLock<Verifier>,
    grants: Mutex<LruCache<String, Arc<Claims>>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    access_log_every: u64,
    log_seq: AtomicU64,
    /// Which per-thread verified-token caches are still valid: unique per service and per key
    /// set (a new value on [`Service::set_keys`]).
    grant_epoch: AtomicU64,
    /// QoE: CMCD / CMSD / sessions / JSON access log, when enabled ([`Service::with_qoe`]).
    qoe: Option<Arc<crate::qoe::Qoe>>,
}

/// Verified tokens each data-plane thread keeps in front of the shared cache (cleared when
/// full: a thread serves a bounded set of sessions at a time).
pub const LOCAL_GRANT_ENTRIES: usize = 4096;

/// Source of [`Service`] grant epochs, unique in the process.
static NEXT_GRANT_EPOCH: AtomicU64 = AtomicU64::new(1);

/// One thread's verified tokens, valid while `epoch` is its service's current one: a hit costs
/// one hash and no lock.
#[derive(Default)]
struct LocalGrants {
    epoch: u64,
    map: std::collections::HashMap<Box<str>, Arc<Claims>>,
}

thread_local! {
    static LOCAL_GRANTS: std::cell::RefCell<LocalGrants> = std::cell::RefCell::new(LocalGrants::default());
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// The `Date` header value for `now`, formatted once per second per thread.
pub fn http_date(now: SystemTime) -> String {
    with_http_date(now, str::to_owned)
}

/// Calls `f` with the `Date` header value for `now`, formatted once per second per thread
/// (no allocation within a second).
pub fn with_http_date<R>(now: SystemTime, f: impl FnOnce(&str) -> R) -> R {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            // Rewritten in place: the string keeps its capacity (a date is always 29 bytes).
            use std::fmt::Write as _;
            c.0 = secs;
            c.1.clear();
            let _ = write!(c.1, "{}", httpdate::HttpDate::from(now));
        }
        f(&c.1)
    })
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Service {
    /// A handler for `verifier`'s cluster serving from `store`.
    pub fn new(
        cfg: ServiceConfig,
        verifier: Verifier,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Service {
            id: cfg.id,
            verifier: RwLock::new(verifier),
            grants: Mutex::new(LruCache::new(
                NonZeroUsize::new(GRANT_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
            store,
            metrics,
            access_log_every: cfg.access_log_every,
            grant_epoch: AtomicU64::new(NEXT_GRANT_EPOCH.fetch_add(1, Ordering::Relaxed)),
            log_seq: AtomicU64::new(0),
            qoe: None,
        }
    }

    /// QoE: enables CMCD parsing, CMSD headers, session summaries and the JSON access log.
    pub fn with_qoe(mut self, qoe: Arc<crate::qoe::Qoe>) -> Self {
        self.qoe = Some(qoe);
        self
    }

    /// QoE state, when enabled.
    pub fn qoe(&self) -> Option<&Arc<crate::qoe::Qoe>> {
        self.qoe.as_ref()
    }

    /// The appliance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The cache.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Replaces the public keys (rotation); forgets every verified token.
    pub fn set_keys(&self, keys: KeyRing) {
        self.verifier
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_keys(keys);
        self.grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // Every thread's local cache becomes stale at its next request.
        self.grant_epoch.store(
            NEXT_GRANT_EPOCH.fetch_add(1, Ordering::Relaxed),
            Ordering::Release,
        );
    }

    /// Whether this request should be written to the access log (sampling).
    pub fn sample_access_log(&self) -> bool {
        self.access_log_every > 0
            && self.log_seq.fetch_add(1, Ordering::Relaxed) % self.access_log_every == 0
    }

    fn claims(&self, token: &str, now: u64) -> Result<Arc<Claims>, GrantError> {
        // The epoch is read before any verification: claims verified under keys replaced
        // meanwhile are stored under the old epoch and dropped at the next request.
        let epoch = self.grant_epoch.load(Ordering::Acquire);
        let local = LOCAL_GRANTS.with(|l| {
            let mut l = l.borrow_mut();
            if l.epoch != epoch {
                l.map.clear();
                l.epoch = epoch;
                return None;
            }
            match l.map.get(token) {
                Some(c) if now < c.exp.saturating_add(CLOCK_LEEWAY_SECS) => Some(c.clone()),
                Some(_) => {
                    l.map.remove(token);
                    None
                }
                None => None,
            }
        });
        if let Some(c) = local {
            self.metrics.grant_cache_hit();
            return Ok(c);
        }
        let c = self.shared_claims(token, now)?;
        LOCAL_GRANTS.with(|l| {
            let mut l = l.borrow_mut();
            if l.epoch == epoch {
                if l.map.len() >= LOCAL_GRANT_ENTRIES {
                    l.map.clear();
                }
                l.map.insert(token.into(), c.clone());
            }
        });
        Ok(c)
    }

    /// The shared verified-token cache (a lock), then the verifier.
    fn shared_claims(&self, token: &str, now: u64) -> Result<Arc<Claims>, GrantError> {
        {
            let mut cache = self.grants.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(token) {
                if now < c.exp.saturating_add(CLOCK_LEEWAY_SECS) {
                    self.metrics.grant_cache_hit();
                    return Ok(c.clone());
                }
                cache.pop(token);
            }
        }
        self.metrics.grant_verified();
        let (claims, _kid) = self
            .verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verify_token(token, now)?;
        let claims = Arc::new(claims);
        self.grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// An error answer: a short text body naming the reason; `close` adds `Connection: close`.
    pub fn error(
        &self,
        status: Status,
        detail: &str,
        keep_alive: bool,
        head_only: bool,
        now: SystemTime,
    ) -> Response {
        self.metrics.request(status);
        let body = format!("{} {}: {detail}\n", status.code(), status.reason());
        let mut h = with_http_date(now, |date| Head::new(status, date, &self.id))
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Length", body.len())
            .header("Cache-Control", "no-store");
        if status == Status::MethodNotAllowed {
            h = h.header("Allow", "GET, HEAD, OPTIONS");
        }
        if !keep_alive {
            h = h.header("Connection", "close");
        }
        let mut bytes = h.finish();
        if !head_only {
            bytes.extend_from_slice(body.as_bytes());
        }
        Response {
            status,
            chunks: vec![Chunk::Mem(bytes)],
            file: None,
            keep_alive,
            log_path: None,
            claims: None,
        }
    }

    /// Answers one request.
    pub fn respond(&self, req: &Request, peer: Option<IpAddr>, now: SystemTime) -> Response {
        let keep_alive = req.keep_alive;
        let head_only = req.method == Method::Head;
        match &req.method {
            Method::Options => return self.preflight(req, now),
            Method::Get | Method::Head => {}
            Method::Other(_) => {
                return self.error(
                    Status::MethodNotAllowed,
                    "only GET, HEAD and OPTIONS are served",
                    keep_alive,
                    head_only,
                    now,
                )
            }
        }
        if !req.path.starts_with("/g/") {
            return self.error(
                Status::NotFound,
                "content paths are /g/<grant>/<title>/<file>",
                keep_alive,
                head_only,
                now,
            );
        }
        let refuse = |e: GrantError| {
            self.metrics.grant_refused(e.code());
            self.error(
                Status::Forbidden,
                &format!("{}: {e}", e.code()),
                keep_alive,
                head_only,
                now,
            )
        };
        let (token, resource) = match split_grant_path(req.path) {
            Ok(v) => v,
            Err(e) => return refuse(e),
        };
        let claims = match self.claims(token, unix(now)) {
            Ok(c) => c,
            Err(e) => return refuse(e),
        };
        if let Err(e) = authorize(&claims, &resource, peer) {
            return refuse(e);
        }
        let fill = claims.scope == Scope::Fill;
        let path = resource.as_str();
        let is_catalog = path
            .strip_suffix(CATALOG_FILE)
            .is_some_and(|p| p.ends_with('/'));
        if !fill && path.matches('/').count() == 2 && is_catalog {
            return self.error(
                Status::Forbidden,
                "catalog.json is served to fill grants only",
                keep_alive,
                head_only,
                now,
            );
        }
        let file = match self.store.get(resource.as_str()) {
            Ok(f) => {
                self.metrics.hit();
                f
            }
            Err(Miss::NotFound) => {
                self.metrics.miss();
                let mut r = self.error(
                    Status::NotFound,
                    &format!("{} is not in this appliance's cache", resource.as_str()),
                    keep_alive,
                    head_only,
                    now,
                );
                r.log_path = Some(resource.to_owned_in(crate::bufpool::path()));
                r.claims = Some(claims);
                return r;
            }
            Err(Miss::DriveFailed) => {
                self.metrics.miss();
                return self.error(
                    Status::ServiceUnavailable,
                    "the drive holding this object failed",
                    keep_alive,
                    head_only,
                    now,
                );
            }
        };
        let mut r = self.serve_file(req, file, resource.as_str(), now);
        r.log_path = Some(resource.to_owned_in(crate::bufpool::path()));
        if fill {
            let body: u64 = r
                .chunks
                .iter()
                .map(|c| match c {
                    Chunk::File { len, .. } => *len,
                    Chunk::Mem(_) => 0,
                })
                .sum();
            self.metrics
                .fill
                .bytes_out
                .fetch_add(body, Ordering::Relaxed);
        }
        r.claims = Some(claims);
        r
    }

    fn preflight(&self, req: &Request, now: SystemTime) -> Response {
        self.metrics.request(Status::NoContent);
        let mut h = with_http_date(now, |date| Head::new(Status::NoContent, date, &self.id))
            .header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
            .header("Access-Control-Allow-Headers", ALLOW_HEADERS)
            .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
            .header("Allow", "GET, HEAD, OPTIONS");
        if !req.keep_alive {
            h = h.header("Connection", "close");
        }
        Response {
            status: Status::NoContent,
            chunks: vec![Chunk::Mem(h.finish())],
            file: None,
            keep_alive: req.keep_alive,
            log_path: None,
            claims: None,
        }
    }

    fn serve_file(
        &self,
        req: &Request,
        file: Arc<CachedFile>,
        path: &str,
        now: SystemTime,
    ) -> Response {
        let keep_alive = req.keep_alive;
        let head_only = req.method == Method::Head;
        let v = &file.validators;
        let size = file.size;
        let ctype = response::content_type(path);
        let base = |status: Status| {
            let mut h = with_http_date(now, |date| Head::new(status, date, &self.id))
                .lines(&file.header_block);
            if !keep_alive {
                h = h.header("Connection", "close");
            } else if req.version == Version::Http10 {
                h = h.header("Connection", "keep-alive");
            }
            h
        };
        let honor_range = match conditional::evaluate(req, v) {
            Outcome::NotModified => {
                self.metrics.request(Status::NotModified);
                return Response {
                    status: Status::NotModified,
                    chunks: vec![Chunk::Mem(base(Status::NotModified).finish())],
                    file: None,
                    keep_alive,
                    log_path: None,
                    claims: None,
                };
            }
            Outcome::PreconditionFailed => {
                return self.error(
                    Status::PreconditionFailed,
                    "If-Match / If-Unmodified-Since did not match",
                    keep_alive,
                    head_only,
                    now,
                )
            }
            Outcome::Proceed { honor_range } => honor_range,
        };
        let decision = match (&req.range, honor_range) {
            (Some(r), true) => range::evaluate(r, size),
            _ => RangeDecision::Full,
        };
        // Each arm builds the whole chunk list, the head first (one vector per response); a
        // HEAD request keeps only the head.
        let (status, mut chunks) = match decision {
            RangeDecision::Full => {
                let h = base(Status::Ok)
                    .header("Content-Type", ctype)
                    .header("Content-Length", size)
                    .finish();
                let mut chunks = crate::bufpool::chunks();
                chunks.push(Chunk::Mem(h));
                if size > 0 {
                    chunks.push(Chunk::File {
                        offset: 0,
                        len: size,
                    });
                }
                (Status::Ok, chunks)
            }
            RangeDecision::Unsatisfiable => {
                self.metrics.request(Status::RangeNotSatisfiable);
                let body =
                    format!("416 Range Not Satisfiable: the representation has {size} bytes\n");
                let mut h = base(Status::RangeNotSatisfiable)
                    .header("Content-Range", format!("bytes */{size}"))
                    .header("Content-Type", "text/plain; charset=utf-8")
                    .header("Content-Length", body.len())
                    .finish();
                if !head_only {
                    h.extend_from_slice(body.as_bytes());
                }
                return Response {
                    status: Status::RangeNotSatisfiable,
                    chunks: vec![Chunk::Mem(h)],
                    file: None,
                    keep_alive,
                    log_path: None,
                    claims: None,
                };
            }
            RangeDecision::Partial(ranges) if ranges.len() == 1 => {
                let r = ranges[0];
                let h = base(Status::PartialContent)
                    .header("Content-Type", ctype)
                    .header(
                        "Content-Range",
                        format_args!("bytes {}-{}/{size}", r.first, r.last),
                    )
                    .header("Content-Length", r.len())
                    .finish();
                let mut chunks = crate::bufpool::chunks();
                chunks.push(Chunk::Mem(h));
                chunks.push(Chunk::File {
                    offset: r.first,
                    len: r.len(),
                });
                (Status::PartialContent, chunks)
            }
            RangeDecision::Partial(ranges) => {
                let boundary = format!("OUTPOST{}", &v.etag[1..v.etag.len() - 1].replace('-', ""));
                let mp = Multipart::new(boundary, &ranges, size, ctype);
                let h = base(Status::PartialContent)
                    .header(
                        "Content-Type",
                        format!("multipart/byteranges; boundary={}", mp.boundary),
                    )
                    .header("Content-Length", mp.body_len)
                    .finish();
                let mut body = Vec::with_capacity(ranges.len() * 2 + 2);
                body.push(Chunk::Mem(h));
                for (r, ph) in ranges.iter().zip(mp.part_heads) {
                    body.push(Chunk::Mem(ph));
                    body.push(Chunk::File {
                        offset: r.first,
                        len: r.len(),
                    });
                }
                body.push(Chunk::Mem(mp.tail));
                (Status::PartialContent, body)
            }
        };
        self.metrics.request(status);
        if head_only {
            chunks.truncate(1);
        }
        Response {
            status,
            chunks,
            file: Some(file),
            keep_alive,
            log_path: None,
            claims: None,
        }
    }
}
