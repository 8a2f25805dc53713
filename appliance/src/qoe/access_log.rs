//! The structured access log: one JSON object per line per sampled request (time, status, bytes,
//! duration, cache drive, title, path, the grant's subject `sub`, the request's CMCD keys), to
//! stdout or a file rotated by size. Only sampled requests build a line: an unsampled one
//! allocates nothing for the log.
//!
//! The data plane never waits on it: lines go into a bounded queue that a writer thread empties
//! every [`WRITER_POLL`], and a line that finds the queue full is dropped and counted
//! ([`AccessLog::dropped`]). The writer is not woken per line: a channel's wake-up cost a futex
//! call and a context switch per sampled line on the serving core (BENCHMARKS.md, "Appliance:
//! per-request counters").
//! Rotation: when writing a line would take the file past `max_bytes`, `log` becomes `log.1`,
//! `log.1` becomes `log.2`, and so on up to `keep` files; the oldest is removed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines queued for the writer before new ones are dropped.
pub const CHANNEL_LINES: usize = 8192;

/// How often the writer thread takes the queued lines.
pub const WRITER_POLL: Duration = Duration::from_millis(50);

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, rotated by size.
    File {
        /// The file.
        path: PathBuf,
        /// Rotate before the file would exceed this many bytes (0: never).
        max_bytes: u64,
        /// Rotated files kept (`path.1` … `path.<keep>`).
        keep: u32,
    },
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error("access log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("access log writer thread: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    rotations: AtomicU64,
    write_errors: AtomicU64,
}

/// The sending side, held by the service.
#[derive(Debug)]
pub struct AccessLog {
    queue: Arc<Mutex<Vec<String>>>,
    counters: Arc<Counters>,
}

impl AccessLog {
    /// Opens `target` and starts the writer thread.
    pub fn start(target: Target) -> Result<Self, AccessLogError> {
        let out: Box<dyn Write + Send> = match &target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File { path, .. } => Box::new(open(path)?),
        };
        let size = match &target {
            Target::File { path, .. } => std::fs::metadata(path).map_or(0, |m| m.len()),
            Target::Stdout => 0,
        };
        let queue = Arc::new(Mutex::new(Vec::with_capacity(256)));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let q = queue.clone();
        std::thread::Builder::new()
            .name("outpost-access-log".into())
            .spawn(move || writer(q, target, out, size, &c))
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog { queue, counters })
    }

    /// Queues one line (without its newline); drops it when the writer is behind.
    pub fn send(&self, line: String) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= CHANNEL_LINES {
            drop(q);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            q.push(line);
        }
    }

    /// Lines written.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Rotations done.
    pub fn rotations(&self) -> u64 {
        self.counters.rotations.load(Ordering::Relaxed)
    }

    /// Write errors (the line is lost; the writer keeps going).
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }
}

fn open(path: &Path) -> Result<BufWriter<File>, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(BufWriter::new)
        .map_err(|source| AccessLogError::Open {
            path: path.to_owned(),
            source,
        })
}

fn rotated(path: &Path, k: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(rotated(path, keep));
    for k in (1..keep).rev() {
        let from = rotated(path, k);
        if from.exists() {
            std::fs::rename(&from, rotated(path, k + 1))?;
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

fn writer(
    queue: Arc<Mutex<Vec<String>>>,
    target: Target,
    mut out: Box<dyn Write + Send>,
    mut size: u64,
    c: &Counters,
) {
    let mut batch = Vec::new();
    loop {
        // The sender side gone (the appliance stopping): one last drain, then exit.
        let last = Arc::strong_count(&queue) == 1;
        std::mem::swap(
            &mut batch,
            &mut *queue.lock().unwrap_or_else(|p| p.into_inner()),
        );
        for line in batch.drain(..) {
            let len = line.len() as u64 + 1;
            if let Target::File {
                path,
                max_bytes,
                keep,
            } = &target
            {
                if *max_bytes > 0 && size > 0 && size + len > *max_bytes {
                    let _ = out.flush();
                    match rotate(path, *keep)
                        .map_err(|e| e.to_string())
                        .and_then(|()| open(path).map_err(|e| e.to_string()))
                    {
                        Ok(f) => {
                            out = Box::new(f);
                            size = 0;
                            c.rotations.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            c.write_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(path = %path.display(), error = %e, "access log rotation failed");
                        }
                    }
                }
            }
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .is_ok()
            {
                size += len;
                c.written.fetch_add(1, Ordering::Relaxed);
            } else {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Flushed after each batch: a burst is written in one go, a quiet log is current.
        if out.flush().is_err() {
            c.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        if last {
            return;
        }
        std::thread::sleep(WRITER_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_written(log: &AccessLog, n: u64) {
        // Bounded wait for the writer thread (not a timing assertion: only the count is checked).
        for _ in 0..500 {
            if log.written() + log.write_errors() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn rotates_at_the_size_limit_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(Target::File {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        })
        .unwrap();
        for i in 0..10 {
            log.send(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(20)));
        }
        wait_written(&log, 10);
        assert_eq!(log.written(), 10);
        assert_eq!(log.dropped(), 0);
        assert!(log.rotations() >= 3, "{}", log.rotations());
        let cur = std::fs::read_to_string(&path).unwrap();
        assert!(cur.len() <= 100, "{}", cur.len());
        assert!(cur.ends_with("\"}\n"));
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "only `keep` rotated files");
        let last: serde_json::Value = serde_json::from_str(cur.lines().last().unwrap()).unwrap();
        assert_eq!(last["n"], 9);
    }
}
