//! Downloading one file of a title from one source into its partial file, verifying size and
//! SHA-256 as the bytes arrive. A partial file left by an interrupted download is resumed with
//! `Range: bytes=<have>-` (its bytes are hashed again first); a source that answers 200 to a
//! range request starts the file over; a size or SHA-256 mismatch drops the partial file.
//!
//! Partial files live in the target drive's [`FILL_DIR`] under a name derived from the key and
//! the expected SHA-256, so they survive a restart and are never mistaken for another file.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use protocol::catalog::FileEntry;
use protocol::fill::FillSource;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::rate::RateLimiter;
use super::S3Settings;
use crate::cache::FILL_DIR;
use crate::metrics::Metrics;

/// Times a source is asked again to resume an interrupted file before the next source.
pub const MAX_RESUMES: u32 = 3;

/// Pause before a resume, times the attempt number.
pub const RESUME_DELAY: Duration = Duration::from_millis(300);

/// Why one source did not deliver a file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed before a body started (connect, TLS, bad answer head).
    #[error("request failed: {0}")]
    Request(String),
    /// The source answered an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The body stopped before the end; the partial file is kept for a resume.
    #[error("interrupted after {have} of {size} bytes: {reason}")]
    Interrupted {
        /// Bytes in the partial file.
        have: u64,
        /// Expected size.
        size: u64,
        /// What happened.
        reason: String,
    },
    /// The bytes are not the catalog's (size or SHA-256); the partial file was dropped.
    #[error("verification failed: {0}")]
    Verify(String),
    /// This kind of source is not available here.
    #[error("unsupported source: {0}")]
    Unsupported(String),
    /// The local file could not be written.
    #[error("local I/O on {path}: {source}")]
    Io {
        /// The partial file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The partial-file path of `key` (`/<title>/<path>`, expected SHA-256 `sha256`) on the drive
/// rooted at `root`: `<root>/.fill/<title>/<hash of key>-<sha256 prefix>.part`. The same file is
/// found again after a restart (the download resumes), and the title it belongs to is its
/// directory, so partial files of titles that left the plan can be found and removed.
pub fn partial_path(root: &Path, key: &str, sha256: &str) -> PathBuf {
    let k = Sha256::digest(key.as_bytes());
    let k = protocol::hex::encode(&k[..12]);
    let short = sha256.get(..16).unwrap_or(sha256);
    let title = key.trim_start_matches('/').split('/').next().unwrap_or("");
    root.join(FILL_DIR)
        .join(title)
        .join(format!("{k}-{short}.part"))
}

/// `bytes a-b/total` → `(a, b, total)`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// Fetches files from fill sources.
#[derive(Debug)]
pub struct Fetcher {
    http: reqwest::Client,
    limiter: Option<Arc<RateLimiter>>,
    metrics: Arc<Metrics>,
    s3: Option<super::s3::S3Origin>,
}

impl Fetcher {
    /// A fetcher sharing `limiter` across every download.
    pub fn new(
        limiter: Option<Arc<RateLimiter>>,
        metrics: Arc<Metrics>,
        s3: Option<S3Settings>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Fetcher {
            http,
            limiter,
            metrics,
            s3: s3.map(|c| {
                super::s3::S3Origin::new(super::s3::S3Config {
                    endpoint: c.endpoint,
                    region: c.region,
                    access_key_id: c.access_key_id,
                    secret_access_key: c.secret_access_key,
                    allow_http: c.allow_http,
                })
            }),
        })
    }

    /// Fetches `f` of `title` from `src` into `part` (verified, fsynced) or fails; resumes an
    /// interrupted body from the same source up to [`MAX_RESUMES`] times. A verification failure
    /// is counted against `src` and the partial file is removed.
    pub async fn fetch(
        &self,
        src: &FillSource,
        title: &str,
        f: &FileEntry,
        part: &Path,
    ) -> Result<(), FetchError> {
        let mut attempt = 0;
        loop {
            let r = match src {
                FillSource::Appliance { .. } => {
                    let url = src.file_url(title, &f.path).unwrap_or_default();
                    self.fetch_http(&url, f, part).await
                }
                FillSource::S3 { .. } => self.fetch_s3(src, title, f, part).await,
            };
            match r {
                Err(FetchError::Interrupted { .. }) if attempt < MAX_RESUMES => {
                    attempt += 1;
                    tracing::info!(source = src.label(), path = f.path, error = %r.as_ref().err().map(|e| e.to_string()).unwrap_or_default(), attempt, "download interrupted; resuming");
                    tokio::time::sleep(RESUME_DELAY * attempt).await;
                }
                Err(FetchError::Verify(why)) => {
                    let _ = tokio::fs::remove_file(part).await;
                    self.metrics.fill.verify_failed(&src.label());
                    return Err(FetchError::Verify(why));
                }
                other => return other,
            }
        }
    }

    async fn prepare(&self, f: &FileEntry, part: &Path) -> Result<(u64, Sha256), FetchError> {
        let io = |source| FetchError::Io {
            path: part.display().to_string(),
            source,
        };
        if let Some(dir) = part.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        // Hash what a previous attempt left (or drop it when it is too long).
        let p = part.to_path_buf();
        let size = f.size;
        tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Sha256)> {
            use std::io::Read as _;
            let mut h = Sha256::new();
            let mut file = match std::fs::File::open(&p) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, h)),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if len > size {
                drop(file);
                std::fs::remove_file(&p)?;
                return Ok((0, h));
            }
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok((len, h))
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
    }

    async fn fetch_http(&self, url: &str, f: &FileEntry, part: &Path) -> Result<(), FetchError> {
        let (mut have, mut hasher) = self.prepare(f, part).await?;
        let mut restart = false;
        let mut body: Option<reqwest::Response> = None;
        if have < f.size {
            let mut req = self.http.get(url);
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            let resp = req
                .send()
                .await
                .map_err(|e| FetchError::Request(e.to_string()))?;
            let status = resp.status().as_u16();
            match status {
                206 if have > 0 => {
                    let cr = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range);
                    match cr {
                        Some((a, b, total)) if a == have && b + 1 == f.size && total == f.size => {}
                        Some((_, _, total)) if total != f.size => {
                            return Err(FetchError::Verify(format!(
                                "Content-Range total {total}, the catalog says {} bytes",
                                f.size
                            )))
                        }
                        _ => {
                            return Err(FetchError::Request(format!(
                                "206 without a Content-Range starting at byte {have}"
                            )))
                        }
                    }
                }
                200 => {
                    if have > 0 {
                        tracing::info!(
                            path = f.path,
                            have,
                            "source ignored the range: starting over"
                        );
                        restart = true;
                        have = 0;
                        hasher = Sha256::new();
                    }
                    if let Some(len) = resp.content_length() {
                        if len != f.size {
                            return Err(FetchError::Verify(format!(
                                "Content-Length {len}, the catalog says {} bytes",
                                f.size
                            )));
                        }
                    }
                }
                _ => {
                    let text = resp.text().await.unwrap_or_default();
                    return Err(FetchError::Status {
                        status,
                        body: text.chars().take(200).collect::<String>().trim().to_owned(),
                    });
                }
            }
            body = Some(resp);
        }
        let stream = futures::stream::unfold(body, |resp| async move {
            let mut resp = resp?;
            match resp.chunk().await {
                Ok(Some(c)) => Some((Ok(c), Some(resp))),
                Ok(None) => None,
                Err(e) => Some((Err(e.to_string()), None)),
            }
        })
        .boxed();
        self.consume(stream, f, part, restart, have, hasher).await
    }

    async fn fetch_s3(
        &self,
        src: &FillSource,
        title: &str,
        f: &FileEntry,
        part: &Path,
    ) -> Result<(), FetchError> {
        let (Some(origin), FillSource::S3 { bucket, .. }) = (&self.s3, src) else {
            return Err(FetchError::Unsupported(format!(
                "{}: no S3 origin configured (--s3-endpoint)",
                src.label()
            )));
        };
        let key = src.object_key(title, &f.path).unwrap_or_default();
        let (have, hasher) = self.prepare(f, part).await?;
        let stream = if have < f.size {
            match origin.get_from(bucket, &key, have).await {
                Ok(s) => s.map(|r| r.map_err(|e| e.to_string())).boxed(),
                Err(e @ super::s3::S3Error::OffsetPastEnd { .. }) => {
                    return Err(FetchError::Verify(e.to_string()))
                }
                Err(e) => return Err(FetchError::Request(e.to_string())),
            }
        } else {
            futures::stream::empty().boxed()
        };
        self.consume(stream, f, part, false, have, hasher).await
    }

    /// Appends `stream` to `part` (truncated first when `restart`), hashing and counting, then
    /// checks size and SHA-256 and fsyncs.
    async fn consume(
        &self,
        mut stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
        f: &FileEntry,
        part: &Path,
        restart: bool,
        mut have: u64,
        mut hasher: Sha256,
    ) -> Result<(), FetchError> {
        let io = |source| FetchError::Io {
            path: part.display().to_string(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .await
            .map_err(io)?;
        if restart {
            file.set_len(0).await.map_err(io)?;
        }
        loop {
            let chunk = match stream.next().await {
                Some(Ok(c)) => c,
                None => break,
                Some(Err(e)) => {
                    file.flush().await.map_err(io)?;
                    return Err(FetchError::Interrupted {
                        have,
                        size: f.size,
                        reason: e,
                    });
                }
            };
            if have + chunk.len() as u64 > f.size {
                return Err(FetchError::Verify(format!(
                    "more than the catalog's {} bytes",
                    f.size
                )));
            }
            if let Some(l) = &self.limiter {
                l.acquire(chunk.len()).await;
            }
            file.write_all(&chunk).await.map_err(io)?;
            hasher.update(&chunk);
            have += chunk.len() as u64;
            self.metrics
                .fill
                .bytes_in
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        file.flush().await.map_err(io)?;
        if have < f.size {
            return Err(FetchError::Interrupted {
                have,
                size: f.size,
                reason: "body ended early".into(),
            });
        }
        let got = protocol::hex::encode(&hasher.finalize());
        if got != f.sha256 {
            return Err(FetchError::Verify(format!(
                "SHA-256 {got}, the catalog says {}",
                f.sha256
            )));
        }
        file.sync_all().await.map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_and_partial_names() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, 99, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        let a = partial_path(Path::new("/d"), "/t/a.m4s", &"ab".repeat(32));
        let b = partial_path(Path::new("/d"), "/u/a.m4s", &"ab".repeat(32));
        assert_ne!(a, b);
        assert!(a.starts_with("/d/.fill/t/"), "{a:?}");
        assert!(b.starts_with("/d/.fill/u/"), "{b:?}");
    }
}
