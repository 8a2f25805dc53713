//! The I/O backends. Both drive the same [`crate::conn::Conn`] state machine, one thread per
//! core, each thread with its own `SO_REUSEPORT` listener:
//! - [`uring`]: one io_uring per thread; resident file ranges go out with an inline `sendfile`
//!   (checked with `cachestat(2)`), the others file → pipe → socket with `SPLICE` through io-wq,
//!   so the serving thread never waits on the disk;
//! - [`epoll`]: the portable fallback, epoll + `sendfile`.
//!
//! `unsafe` is allowed only in [`sys`], [`uring`] and [`count_alloc`] (a counting allocator for
//! tests).

pub mod count_alloc;
pub mod epoll;
pub mod sys;
pub mod uring;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::conn::Timeouts;
use crate::service::Service;

/// Largest file range handed to the kernel in one call, so one fast client cannot hog a thread
/// (nginx's `sendfile_max_chunk` default is 2 MiB).
pub const MAX_SEND_CHUNK: usize = 2 << 20;

/// Most bytes one connection may send per readiness event before others get a turn.
pub const SEND_BUDGET: usize = 4 << 20;

/// How long a connection stays idle before its input buffer is freed (`Conn::trim_if_idle`).
pub const TRIM_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Listen backlog.
pub const BACKLOG: i32 = 4096;

/// State shared by every data-plane thread.
#[derive(Debug)]
pub struct Shared {
    /// The request handler.
    pub svc: Arc<Service>,
    /// Most open client connections (over it, new connections are closed at once).
    pub max_connections: usize,
    /// Header and idle timeouts.
    pub timeouts: Timeouts,
    shutdown: AtomicBool,
    drain_deadline: Mutex<Option<Instant>>,
}

impl Shared {
    /// Shared state for the data plane.
    pub fn new(svc: Arc<Service>, max_connections: usize, timeouts: Timeouts) -> Self {
        Shared {
            svc,
            max_connections,
            timeouts,
            shutdown: AtomicBool::new(false),
            drain_deadline: Mutex::new(None),
        }
    }

    /// Starts draining: stop accepting, finish in-flight responses until `deadline`.
    pub fn begin_shutdown(&self, deadline: Instant) {
        *self
            .drain_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// Whether draining has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// The drain deadline, once draining.
    pub fn drain_deadline(&self) -> Option<Instant> {
        *self
            .drain_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether another connection may be accepted.
    pub fn admit(&self) -> bool {
        (self.svc.metrics().active_connections() as usize) < self.max_connections
    }
}

/// Binds `n` listeners on `addr` with `SO_REUSEPORT` (the kernel spreads connections across
/// them). With port 0 the first one picks the port and the others share it.
pub fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out: Vec<TcpListener> = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&addr.into())?;
        s.listen(BACKLOG)?;
        s.set_nonblocking(true)?;
        let l: TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}
