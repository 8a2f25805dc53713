//! The io_uring backend: one ring per data-plane thread (`SINGLE_ISSUER` and `COOP_TASKRUN`
//! when the kernel has them; not `DEFER_TASKRUN`, see `build_ring`), multishot accept on the
//! thread's own `SO_REUSEPORT` listener, `RECV` for request heads into a per-thread
//! provided-buffer ring (`BufRing`: an idle connection pins no receive buffer; per-connection
//! buffers on kernels without it), and the body path measured cheapest on this kernel
//! (BENCHMARKS.md, "Appliance vs nginx"):
//!
//! - Response heads and file ranges that `cachestat(2)` reports fully resident in the page cache
//!   (a whole file found resident is trusted for `cache::RESIDENT_MEMO` without asking again;
//!   a range whose file has no fresh answer asks about its own pages only)
//!   go out inline from the ring thread with non-blocking `send` / `sendfile` (one system call
//!   per 2 MiB chunk, like nginx; no io-wq hop, no pipe). On `EAGAIN` the connection waits with
//!   `POLL_ADD(POLLOUT)`; after `SEND_BUDGET` bytes it yields with a `NOP` so one fast client
//!   cannot hog the thread.
//! - A head followed by a resident range of at most `MAPPED_MAX` (64 KiB) leaves with it in one
//!   `sendmsg` from the file's read-only mapping (`CachedFile::mapping`): one call and two TCP
//!   segments instead of three, ~15% less CPU per 64 KiB range than `send` + `sendfile`. Only
//!   the kernel reads the mapped bytes, so a page that cannot be read fails the call with
//!   `EFAULT` (handled like `sendfile`'s `EIO`) instead of raising `SIGBUS`.
//! - A range that is not resident is sent file → pipe → socket with `SPLICE` through a
//!   per-thread pipe pool: the file side always runs in an io-wq worker (whose count is capped,
//!   `IORING_REGISTER_IOWQ_MAX_WORKERS`), so the ring thread never blocks on a disk read; the read
//!   also brings the following pages in (readahead), so the next chunk is usually inline again.
//!   Without `cachestat` (Linux < 6.5) every range takes this path.
//! - Short sends and short splices resubmit the remainder.
//! - Every buffer and descriptor an in-flight operation points to is owned by the connection
//!   slot (its receive buffer, its pipe, its socket), which is freed only when its in-flight
//!   count is back to zero; on a drain deadline with operations still in flight the slots are
//!   leaked rather than freed under the kernel. Inline sends borrow nothing past the call.
//! - The CQ is four times the SQ; completions are drained on every wake.
#![allow(unsafe_code)]

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use super::sys;
use super::{Shared, MAX_SEND_CHUNK, SEND_BUDGET};
use crate::cache::CachedFile;
use crate::conn::{Action, Conn};

const SQ_ENTRIES: u32 = 1024;
/// Receive buffer of one connection when the kernel has no provided-buffer rings.
const READ_BUF: usize = 16 * 1024;
/// Provided receive buffers per thread (a power of two) and their size: 512 x 4 KiB.
const PBUF_COUNT: u16 = 512;
const PBUF_SIZE: usize = 4096;
/// The buffer group id of the thread's provided-buffer ring.
const PBUF_GROUP: u16 = 0;
/// Capacity asked for each pooled pipe (`F_SETPIPE_SZ`).
const PIPE_SIZE: usize = 256 * 1024;
/// Most idle pipes kept per thread (the per-user pipe page budget is finite).
const PIPE_POOL: usize = 64;
/// Cap on io-wq workers per ring: [bounded (file reads), unbounded].
const IOWQ_MAX_WORKERS: [u32; 2] = [8, 32];
/// Largest file range sent together with its head from the file's mapping (one `sendmsg`)
/// instead of `send` + `sendfile`: at 64 KiB the copy costs less than the extra segment, at
/// 128 KiB and whole 2 MiB files `sendfile` is cheaper (floor servers, BENCHMARKS.md).
const MAPPED_MAX: u64 = 64 * 1024;
const LINGER: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(100);

const K_ACCEPT: u64 = 1;
const K_RECV: u64 = 2;
const K_F2P: u64 = 4;
const K_P2S: u64 = 5;
const K_POLL: u64 = 6;
const K_TIMER: u64 = 7;
const K_CANCEL: u64 = 8;

fn ud(slot: usize, kind: u64) -> u64 {
    ((slot as u64) << 8) | kind
}

/// The ring of one data-plane thread. Not `DEFER_TASKRUN`: with it, 64 KiB ranges at 1 000
/// connections right after another 1 000 had gone had a p99 of 0.22-0.36 s in 7 runs of 10
/// (p50 unchanged); without it 38-83 ms in 11 of 11, near nginx's 45-67 ms (BENCHMARKS.md,
/// "2026-12-07 12:00-13:30 UTC").
fn build_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    match IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_cqsize(entries * 4)
        .build(entries)
    {
        Ok(r) => Ok((r, "single_issuer+coop_taskrun")),
        Err(_) => match IoUring::builder()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 4)
            .build(entries)
        {
            Ok(r) => Ok((r, "coop_taskrun")),
            Err(_) => Ok((
                IoUring::builder()
                    .setup_cqsize(entries * 4)
                    .build(entries)?,
                "plain",
            )),
        },
    }
}

/// Probes whether io_uring can be set up here and has every opcode the backend uses.
pub fn probe() -> io::Result<()> {
    let (ring, flags) = build_ring(8)?;
    let mut p = Probe::new();
    ring.submitter().register_probe(&mut p)?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Nop::CODE, "NOP"),
        (opcode::Splice::CODE, "SPLICE"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::Timeout::CODE, "TIMEOUT"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !p.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring lacks opcode {name}"),
            ));
        }
    }
    tracing::info!(setup = flags, "io_uring probe succeeded");
    Ok(())
}

/// The thread's receive buffers, lent to the kernel through a provided-buffer ring
/// (`IORING_REGISTER_PBUF_RING`, Linux >= 5.19): a `RECV` with `BUFFER_SELECT` takes one only
/// when data arrives, and the buffer comes back to the ring as soon as its bytes are copied
/// into the connection, so an idle connection pins no receive memory (10 000 idle connections
/// cost 10 000 slots, not 10 000 buffers). A single-shot receive, armed only while the
/// connection wants input, keeps the input back-pressure of the per-connection path
/// (`Conn::wants_read`); a multishot one would keep delivering into a full connection.
struct BufRing {
    /// `PBUF_COUNT` descriptors, page-aligned, read by the kernel (the tail sits in the first).
    ring: *mut types::BufRingEntry,
    ring_layout: std::alloc::Layout,
    /// `PBUF_COUNT` buffers of `PBUF_SIZE` bytes, written by the kernel.
    mem: *mut u8,
    mem_layout: std::alloc::Layout,
    /// Our tail (published with a release store).
    tail: u16,
    /// Whether the kernel still has the ring registered (then its memory must not be freed).
    registered: bool,
}

impl BufRing {
    /// Allocates the ring and its buffers and registers them with `ring`; an error (an older
    /// kernel) leaves the caller on per-connection buffers.
    fn new(ring: &IoUring) -> io::Result<BufRing> {
        let oom = || io::Error::new(io::ErrorKind::OutOfMemory, "provided-buffer ring");
        let ring_layout = std::alloc::Layout::from_size_align(
            usize::from(PBUF_COUNT) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(|_| oom())?;
        let mem_layout =
            std::alloc::Layout::from_size_align(usize::from(PBUF_COUNT) * PBUF_SIZE, 4096)
                .map_err(|_| oom())?;
        // SAFETY: both layouts have a non-zero size.
        let (r, m) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout),
                std::alloc::alloc_zeroed(mem_layout),
            )
        };
        let mut b = BufRing {
            ring: r.cast(),
            ring_layout,
            mem: m,
            mem_layout,
            tail: 0,
            registered: false,
        };
        if r.is_null() || m.is_null() {
            return Err(oom());
        }
        // SAFETY: `b.ring` points at `PBUF_COUNT` zeroed, page-aligned entries that stay
        // allocated while registered (`Drop` frees them only after unregistering, and the
        // worker leaks them when operations may still be in flight).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                b.ring as u64,
                PBUF_COUNT,
                PBUF_GROUP,
                0,
            )?
        };
        b.registered = true;
        for bid in 0..PBUF_COUNT {
            b.give(bid);
        }
        b.publish();
        Ok(b)
    }

    /// Puts buffer `bid` back at our tail (seen by the kernel after [`BufRing::publish`]).
    fn give(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (PBUF_COUNT - 1));
        // SAFETY: `idx < PBUF_COUNT`; the entry is past the published tail, so the kernel does
        // not read it until the next publish.
        let e = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: `bid < PBUF_COUNT`: inside the buffer allocation.
        e.set_addr(unsafe { self.mem.add(usize::from(bid) * PBUF_SIZE) } as u64);
        e.set_len(PBUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is a `u16` inside the ring's first entry (the ring is page-aligned,
        // so the field is aligned for an atomic access), shared with the kernel, which reads it
        // with an acquire load.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completed receive filled.
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid).min(usize::from(PBUF_COUNT) - 1);
        // SAFETY: in bounds (`bid < PBUF_COUNT`, `len` clamped to `PBUF_SIZE`); the kernel
        // finished writing this buffer (its completion was reaped) and gets it back only after
        // the slice is dropped (`give` + `publish`).
        unsafe { std::slice::from_raw_parts(self.mem.add(bid * PBUF_SIZE), len.min(PBUF_SIZE)) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // Still registered (the ring could not be told): leak rather than free memory the
            // kernel may write.
            return;
        }
        // SAFETY: allocated in `new` with these layouts (null only if allocation failed).
        unsafe {
            if !self.ring.is_null() {
                std::alloc::dealloc(self.ring.cast(), self.ring_layout);
            }
            if !self.mem.is_null() {
                std::alloc::dealloc(self.mem, self.mem_layout);
            }
        }
    }
}

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Closing {
    No,
    Linger(Instant),
    Hard,
}

struct Slot {
    sock: TcpStream,
    conn: Conn,
    /// The connection's own receive buffer: always without a provided-buffer ring; with one,
    /// only for the receive after one that found the ring empty (`ENOBUFS`).
    rbuf: Option<Box<[u8]>>,
    recv_busy: bool,
    send_busy: bool,
    pipe: Option<Pipe>,
    in_pipe: usize,
    /// Drive of the file being spliced (to report I/O errors).
    drive: Option<usize>,
    ops: u32,
    closing: Closing,
}

struct Worker {
    ring: IoUring,
    shared: Arc<Shared>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    pipes: Vec<Pipe>,
    listener: Option<TcpListener>,
    accept_armed: bool,
    timespec: Box<types::Timespec>,
    /// Whether `cachestat(2)` works here (else every file range goes through io-wq).
    cachestat: bool,
    /// The thread's provided receive buffers (`None` on kernels without them).
    bufs: Option<BufRing>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Unregister the buffer ring before its memory goes (the ring itself is torn down
        // asynchronously); if the kernel refuses, `BufRing::drop` leaks the memory.
        if let Some(b) = &mut self.bufs {
            if b.registered
                && self
                    .ring
                    .submitter()
                    .unregister_buf_ring(PBUF_GROUP)
                    .is_ok()
            {
                b.registered = false;
            }
        }
    }
}

/// Runs one io_uring data-plane thread until the drain finishes.
pub fn run(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let (ring, _) = build_ring(SQ_ENTRIES)?;
    let mut max = IOWQ_MAX_WORKERS;
    if let Err(e) = ring.submitter().register_iowq_max_workers(&mut max) {
        tracing::warn!(error = %e, "cannot cap io-wq workers");
    }
    // io-wq workers (where splices run) follow this thread's CPU affinity, so pinning the
    // server (taskset, cpusets per NUMA node) also pins its kernel-side work.
    match sys::current_affinity() {
        Ok(set) => {
            if let Err(e) = ring.submitter().register_iowq_aff(&set) {
                tracing::warn!(error = %e, "cannot set io-wq affinity");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read CPU affinity"),
    }
    let mut w = Worker {
        ring,
        shared,
        slots: Vec::new(),
        free: Vec::new(),
        pipes: Vec::new(),
        listener: Some(listener),
        accept_armed: false,
        timespec: Box::new(types::Timespec::from(TICK)),
        cachestat: true,
        bufs: None,
    };
    match BufRing::new(&w.ring) {
        Ok(b) => w.bufs = Some(b),
        Err(e) => tracing::info!(
            error = %e,
            "no provided-buffer ring; each connection gets its own receive buffer"
        ),
    }
    w.arm_accept()?;
    w.arm_timer()?;
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(256);
    let mut last_sweep = Instant::now();
    loop {
        match w.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(
            w.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let now = Instant::now();
        for &(data, res, flags) in &cqes {
            w.complete(data, res, flags, now)?;
        }
        if now.duration_since(last_sweep) >= TICK {
            last_sweep = now;
            w.sweep(now)?;
            if w.shared.is_shutting_down() && w.drain(now)? {
                return Ok(());
            }
        }
    }
}

impl Worker {
    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed points only at memory owned by `self` (a slot's receive
            // buffer, the provided-buffer ring `self.bufs`, `self.timespec`) or at
            // descriptors owned by the slot; slots are freed only when their in-flight count is
            // zero, so the memory outlives the operation.
            let pushed = unsafe { self.ring.submission().push(&e) }.is_ok();
            if pushed {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let Some(l) = &self.listener else {
            return Ok(());
        };
        let e = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(0, K_ACCEPT));
        self.push(e)?;
        self.accept_armed = true;
        Ok(())
    }

    fn arm_timer(&mut self) -> io::Result<()> {
        let e = opcode::Timeout::new(&*self.timespec as *const types::Timespec)
            .build()
            .user_data(ud(0, K_TIMER));
        self.push(e)
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32, now: Instant) -> io::Result<()> {
        let kind = data & 0xff;
        let slot = (data >> 8) as usize;
        match kind {
            K_ACCEPT => {
                if !cqueue::more(flags) {
                    self.accept_armed = false;
                    if !self.shared.is_shutting_down() {
                        self.arm_accept()?;
                    }
                }
                if res >= 0 {
                    self.accepted(res, now)?;
                }
                Ok(())
            }
            K_TIMER => self.arm_timer(),
            K_CANCEL => Ok(()),
            _ => self.op_done(slot, kind, res, flags, now),
        }
    }

    fn accepted(&mut self, fd: RawFd, now: Instant) -> io::Result<()> {
        // SAFETY: the accept completion hands us a new descriptor that nobody else owns.
        let sock = unsafe { TcpStream::from_raw_fd(fd) };
        let m = self.shared.svc.metrics().clone();
        if !self.shared.admit() || self.shared.is_shutting_down() {
            m.conn_refused();
            return Ok(());
        }
        let _ = sock.set_nodelay(true);
        let peer = sock.peer_addr().ok().map(|a| a.ip());
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        m.conn_opened();
        self.slots[i] = Some(Slot {
            sock,
            conn: Conn::new(peer, now),
            rbuf: self
                .bufs
                .is_none()
                .then(|| vec![0u8; READ_BUF].into_boxed_slice()),
            recv_busy: false,
            send_busy: false,
            pipe: None,
            in_pipe: 0,
            drive: None,
            ops: 0,
            closing: Closing::No,
        });
        self.pump(i, now)
    }

    fn op_done(
        &mut self,
        i: usize,
        kind: u64,
        res: i32,
        flags: u32,
        now: Instant,
    ) -> io::Result<()> {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        s.ops = s.ops.saturating_sub(1);
        let mut hard = false;
        match kind {
            K_RECV => {
                s.recv_busy = false;
                let picked = cqueue::buffer_select(flags);
                let data: &[u8] = match (picked, &self.bufs, &s.rbuf) {
                    _ if res <= 0 => &[],
                    (Some(bid), Some(b), _) => b.filled(bid, res as usize),
                    (None, _, Some(r)) => &r[..(res as usize).min(r.len())],
                    _ => &[],
                };
                match s.closing {
                    Closing::No if res > 0 => s.conn.feed(data, now),
                    Closing::No if res == 0 => s.conn.feed(&[], now),
                    // No free provided buffer at that moment. Receiving again from the ring
                    // could lose the race for buffers round after round: at 1 000 busy
                    // connections and 512 buffers the connections left out kept being left
                    // out, and waited 0.2-1.6 s (BENCHMARKS.md). So this connection's next
                    // receive goes into a buffer of its own, given back once used.
                    Closing::No if res == -libc::ENOBUFS => {
                        if s.rbuf.is_none() {
                            s.rbuf = Some(vec![0u8; PBUF_SIZE].into_boxed_slice());
                        }
                    }
                    Closing::Linger(_) if res > 0 || res == -libc::ENOBUFS => {}
                    Closing::Hard => {}
                    _ => hard = true,
                }
                if let (Some(b), Some(bid)) = (&mut self.bufs, picked) {
                    b.give(bid);
                    b.publish();
                } else if self.bufs.is_some() && res != -libc::ENOBUFS {
                    // The fallback buffer's receive is done: back to the shared ring.
                    s.rbuf = None;
                }
            }
            K_F2P => {
                s.send_busy = false;
                if res > 0 {
                    s.in_pipe = res as usize;
                } else if res == -libc::EAGAIN || res == -libc::EINTR {
                    // Retried by pump().
                } else {
                    if res == -libc::EIO {
                        if let Some(d) = s.drive {
                            self.shared.svc.store().report_io_error(d);
                        }
                    }
                    if res == 0 {
                        tracing::error!("file shrank while being sent; closing the connection");
                    }
                    hard = true;
                }
            }
            K_P2S => {
                s.send_busy = false;
                if res > 0 {
                    let n = res as usize;
                    s.in_pipe -= n.min(s.in_pipe);
                    s.conn.advance(n, now);
                    if s.in_pipe == 0 {
                        if let Some(p) = s.pipe.take() {
                            if self.pipes.len() < PIPE_POOL {
                                self.pipes.push(p);
                            }
                        }
                    }
                } else if res == -libc::EAGAIN {
                    let e =
                        opcode::PollAdd::new(types::Fd(s.sock.as_raw_fd()), libc::POLLOUT as u32)
                            .build()
                            .user_data(ud(i, K_POLL));
                    s.send_busy = true;
                    s.ops += 1;
                    return self.push(e);
                } else {
                    hard = true;
                }
            }
            K_POLL => {
                s.send_busy = false;
            }
            _ => {}
        }
        if hard {
            self.hard_close(i);
        }
        self.pump(i, now)
    }

    fn take_pipe(&mut self) -> io::Result<Pipe> {
        if let Some(p) = self.pipes.pop() {
            return Ok(p);
        }
        let (r, w) = sys::pipe()?;
        let cap = sys::set_pipe_size(w.as_fd(), PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(Pipe { r, w, cap })
    }

    /// Submits whatever the connection needs next.
    fn pump(&mut self, i: usize, now: Instant) -> io::Result<()> {
        let shared = self.shared.clone();
        let cachestat = &mut self.cachestat;
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        match s.closing {
            Closing::Hard => {
                if s.ops == 0 {
                    self.free_slot(i);
                }
                return Ok(());
            }
            Closing::Linger(until) => {
                if now >= until || s.conn.peer_closed() {
                    self.hard_close(i);
                    return self.pump(i, now);
                }
                if !s.recv_busy {
                    let e = recv_entry(s, i);
                    s.recv_busy = true;
                    s.ops += 1;
                    return self.push(e);
                }
                return Ok(());
            }
            Closing::No => {}
        }
        // Heads and resident file ranges go out inline (non-blocking `send` / `sendfile`, which
        // copy from memory and never wait on the disk); a range not in the page cache goes
        // through io-wq (`SPLICE` file -> pipe), so the disk read happens off this thread.
        let mut wait: Option<squeue::Entry> = None;
        let mut need_pipe = None;
        let mut close = false;
        let mut hard = false;
        let mut budget = SEND_BUDGET;
        let metrics = shared.svc.metrics();
        if !s.send_busy && s.in_pipe > 0 {
            wait = Some(p2s_entry(s, i));
            s.send_busy = true;
        }
        while !s.send_busy {
            let sock = s.sock.as_fd();
            let (result, drive) = match s.conn.next(&shared.svc, now) {
                Action::Read => break,
                Action::Close => {
                    close = true;
                    break;
                }
                Action::Send {
                    data,
                    more,
                    then_file,
                } => {
                    // A head followed by a small resident range goes out with it in one
                    // `sendmsg` from the file's mapping: two TCP segments instead of three,
                    // 15% less server CPU per 64 KiB range than `send` + `sendfile` (floor
                    // servers, BENCHMARKS.md); above `MAPPED_MAX` `sendfile`'s page references
                    // beat the copy.
                    let mapped = then_file
                        .filter(|&(file, offset, len)| {
                            len <= MAPPED_MAX && resident(cachestat, file, offset, len, len, now)
                        })
                        .and_then(|(file, offset, len)| Some((file, file.mapping()?, offset, len)));
                    match mapped {
                        Some((file, map, offset, len)) => {
                            metrics.body_mapped();
                            let r = sys::send_head_and_mapped(sock, data, map, offset, len);
                            (r, Some(file.drive))
                        }
                        None => (sys::send(sock, data, more), None),
                    }
                }
                Action::SendFile {
                    file, offset, len, ..
                } => {
                    let n = (len as usize).min(MAX_SEND_CHUNK);
                    if !resident(cachestat, file, offset, len, n as u64, now) {
                        metrics.body_splice();
                        need_pipe = Some((file.file.as_raw_fd(), offset, len, file.drive));
                        break;
                    }
                    metrics.body_sendfile();
                    let mut off = offset;
                    (
                        sys::sendfile(sock, file.file.as_fd(), &mut off, n),
                        Some(file.drive),
                    )
                }
            };
            match result {
                Ok(0) => {
                    tracing::error!("file shrank while being sent; closing the connection");
                    hard = true;
                    break;
                }
                Ok(n) => {
                    s.conn.advance(n, now);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        // Let other connections have a turn: come back after a no-op completes.
                        wait = Some(opcode::Nop::new().build().user_data(ud(i, K_POLL)));
                        s.send_busy = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait = Some(
                        opcode::PollAdd::new(types::Fd(s.sock.as_raw_fd()), libc::POLLOUT as u32)
                            .build()
                            .user_data(ud(i, K_POLL)),
                    );
                    s.send_busy = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EIO from `sendfile`, EFAULT from a mapped page that could not be read.
                    if let (Some(d), Some(libc::EIO | libc::EFAULT)) = (drive, e.raw_os_error()) {
                        shared.svc.store().report_io_error(d);
                    }
                    hard = true;
                    break;
                }
            }
        }
        if hard {
            self.hard_close(i);
            return self.pump(i, now);
        }
        if close {
            let _ = s.sock.shutdown(std::net::Shutdown::Write);
            s.closing = Closing::Linger(now + LINGER);
            return self.pump(i, now);
        }
        let mut entries: [Option<squeue::Entry>; 2] = [wait, None];
        if let Some((fd, offset, len, drive)) = need_pipe {
            let pipe = match self.take_pipe() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "no pipe for splice; closing the connection");
                    self.hard_close(i);
                    return self.pump(i, now);
                }
            };
            let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
                return Ok(());
            };
            let n = (len as usize).min(pipe.cap).min(MAX_SEND_CHUNK);
            let e = opcode::Splice::new(
                types::Fd(fd),
                offset as i64,
                types::Fd(pipe.w.as_raw_fd()),
                -1,
                n as u32,
            )
            .flags(libc::SPLICE_F_MOVE)
            .build()
            .user_data(ud(i, K_F2P));
            s.pipe = Some(pipe);
            s.drive = Some(drive);
            s.send_busy = true;
            entries[0] = Some(e);
        }
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        if !s.recv_busy && s.conn.wants_read() {
            entries[1] = Some(recv_entry(s, i));
            s.recv_busy = true;
        }
        s.ops += entries.iter().flatten().count() as u32;
        for e in entries.into_iter().flatten() {
            self.push(e)?;
        }
        Ok(())
    }

    /// Shuts the socket down both ways (pending receives complete) and frees the slot once no
    /// operation is in flight.
    fn hard_close(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
            if s.closing != Closing::Hard {
                let _ = s.sock.shutdown(std::net::Shutdown::Both);
                s.closing = Closing::Hard;
            }
        }
    }

    fn free_slot(&mut self, i: usize) {
        if let Some(s) = self.slots[i].take() {
            if let (Some(p), 0) = (s.pipe, s.in_pipe) {
                if self.pipes.len() < PIPE_POOL {
                    self.pipes.push(p);
                }
            }
            self.shared.svc.metrics().conn_closed();
            self.free.push(i);
        }
    }

    fn sweep(&mut self, now: Instant) -> io::Result<()> {
        let t = self.shared.timeouts;
        for i in 0..self.slots.len() {
            let Some(s) = &mut self.slots[i] else {
                continue;
            };
            s.conn.trim_if_idle(now, super::TRIM_IDLE_AFTER);
            let expired = match s.closing {
                Closing::No => now >= s.conn.deadline(t),
                Closing::Linger(until) => now >= until,
                Closing::Hard => false,
            };
            if expired {
                if s.closing == Closing::No {
                    self.shared.svc.metrics().timeout();
                }
                self.hard_close(i);
                self.pump(i, now)?;
            }
        }
        Ok(())
    }

    /// One drain step; returns true when the thread may exit.
    fn drain(&mut self, now: Instant) -> io::Result<bool> {
        if let Some(l) = self.listener.take() {
            if self.accept_armed {
                let e = opcode::AsyncCancel::new(ud(0, K_ACCEPT))
                    .build()
                    .user_data(ud(0, K_CANCEL));
                self.push(e)?;
                self.ring.submit()?;
            }
            drop(l);
        }
        for i in 0..self.slots.len() {
            if let Some(s) = &mut self.slots[i] {
                s.conn.close_after_response();
                if s.closing == Closing::No && !s.conn.in_flight() {
                    self.hard_close(i);
                }
                self.pump(i, now)?;
            }
        }
        let live = self.slots.iter().filter(|s| s.is_some()).count();
        if live == 0 {
            return Ok(true);
        }
        if self.shared.drain_deadline().is_some_and(|d| now >= d) {
            for i in 0..self.slots.len() {
                self.hard_close(i);
                self.pump(i, now)?;
            }
            if self
                .slots
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| s.ops > 0))
            {
                // Operations still reference slot memory: leak it rather than free it under the
                // kernel; the process is exiting.
                std::mem::forget(std::mem::take(&mut self.slots));
                std::mem::forget(self.bufs.take());
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// Whether bytes `offset..offset + n` of `file` (a chunk of the range `offset..offset + len`)
/// are in the page cache, so sending them inline cannot wait on the disk. A file found wholly
/// resident within `RESIDENT_MEMO` is not asked again. Otherwise a response of the whole file
/// asks about the whole file (and remembers a yes); a range asks about its own pages only:
/// `cachestat` walks every page it is asked about, and asking about a whole 2 MiB file to send
/// 64 KiB of it cost 18% of the server's CPU on random ranges over 200 files (perf,
/// BENCHMARKS.md), ~30x the range's own check. A failing `cachestat` turns the check off for
/// the thread (`*cachestat = false`): every range then goes through io-wq.
fn resident(
    cachestat: &mut bool,
    file: &CachedFile,
    offset: u64,
    len: u64,
    n: u64,
    now: Instant,
) -> bool {
    if !*cachestat {
        return false;
    }
    if file.resident_memo(now) {
        return true;
    }
    let fd = file.file.as_fd();
    let whole_file = offset == 0 && len >= file.size;
    let answer = if whole_file {
        sys::resident(fd, 0, file.size).and_then(|whole| {
            if whole {
                file.note_resident(now);
                Ok(true)
            } else {
                sys::resident(fd, offset, n)
            }
        })
    } else {
        sys::resident(fd, offset, n)
    };
    answer.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cachestat failed; every file range now goes through io-wq");
        *cachestat = false;
        false
    })
}

/// A receive into the slot's own buffer when it has one (no provided-buffer ring on this kernel,
/// or the ring ran dry on its last receive), else into the thread's provided buffers.
fn recv_entry(s: &mut Slot, i: usize) -> squeue::Entry {
    let fd = types::Fd(s.sock.as_raw_fd());
    match &mut s.rbuf {
        Some(r) => {
            let room = s.conn.read_room().clamp(1, r.len());
            opcode::Recv::new(fd, r.as_mut_ptr(), room as u32)
                .build()
                .user_data(ud(i, K_RECV))
        }
        None => {
            let room = s.conn.read_room().clamp(1, PBUF_SIZE);
            opcode::Recv::new(fd, std::ptr::null_mut(), room as u32)
                .buf_group(PBUF_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(ud(i, K_RECV))
        }
    }
}

fn p2s_entry(s: &Slot, i: usize) -> squeue::Entry {
    let pipe = s.pipe.as_ref().map_or(-1, |p| p.r.as_raw_fd());
    opcode::Splice::new(
        types::Fd(pipe),
        -1,
        types::Fd(s.sock.as_raw_fd()),
        -1,
        s.in_pipe as u32,
    )
    .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
    .build()
    .user_data(ud(i, K_P2S))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    /// Submits one entry and waits for its completion: (result, flags).
    fn one(ring: &mut IoUring, e: squeue::Entry) -> (i32, u32) {
        // SAFETY: every entry here points at memory that outlives the wait below.
        unsafe { ring.submission().push(&e) }.expect("room in the SQ");
        ring.submit_and_wait(1).unwrap();
        let c = ring.completion().next().expect("a completion");
        (c.result(), c.flags())
    }

    fn recv_select(fd: RawFd, data: u64) -> squeue::Entry {
        opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), PBUF_SIZE as u32)
            .buf_group(PBUF_GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(data)
    }

    fn ring_with_buffers() -> (IoUring, BufRing) {
        let (ring, _) = build_ring(16).expect("io_uring on this kernel");
        let b = BufRing::new(&ring).expect("provided-buffer rings on this kernel (>= 5.19)");
        (ring, b)
    }

    #[test]
    fn provided_buffers_carry_the_bytes_and_are_reused_after_being_given_back() {
        let (mut ring, mut b) = ring_with_buffers();
        let (mut a, z) = UnixStream::pair().unwrap();
        // Three times as many receives as buffers: only works if each comes back.
        for n in 0..3 * u32::from(PBUF_COUNT) {
            let msg = format!("request {n}");
            a.write_all(msg.as_bytes()).unwrap();
            let (res, flags) = one(&mut ring, recv_select(z.as_raw_fd(), 1));
            assert_eq!(res as usize, msg.len(), "receive {n}");
            let bid = cqueue::buffer_select(flags).expect("a provided buffer was used");
            assert_eq!(b.filled(bid, res as usize), msg.as_bytes());
            b.give(bid);
            b.publish();
        }
        ring.submitter().unregister_buf_ring(PBUF_GROUP).unwrap();
        b.registered = false;
    }

    #[test]
    fn receives_fail_with_enobufs_when_every_buffer_is_out_and_resume_when_one_is_back() {
        let (mut ring, mut b) = ring_with_buffers();
        let (mut a, z) = UnixStream::pair().unwrap();
        let mut held = Vec::new();
        for _ in 0..PBUF_COUNT {
            a.write_all(b"x").unwrap();
            let (res, flags) = one(&mut ring, recv_select(z.as_raw_fd(), 1));
            assert_eq!(res, 1);
            held.push(cqueue::buffer_select(flags).unwrap());
        }
        a.write_all(b"y").unwrap();
        let (res, flags) = one(&mut ring, recv_select(z.as_raw_fd(), 1));
        assert_eq!(res, -libc::ENOBUFS, "no buffer left");
        assert_eq!(cqueue::buffer_select(flags), None);
        // One back: the pending byte is received into it.
        b.give(held[7]);
        b.publish();
        let (res, flags) = one(&mut ring, recv_select(z.as_raw_fd(), 1));
        assert_eq!(res, 1);
        let bid = cqueue::buffer_select(flags).unwrap();
        assert_eq!(bid, held[7]);
        assert_eq!(b.filled(bid, 1), b"y");
        ring.submitter().unregister_buf_ring(PBUF_GROUP).unwrap();
        b.registered = false;
    }

    #[test]
    fn a_cancelled_idle_receive_takes_no_buffer_and_a_rearmed_one_gets_the_data() {
        let (mut ring, mut b) = ring_with_buffers();
        let (mut a, z) = UnixStream::pair().unwrap();
        // An idle connection: the receive waits, holding no buffer; cancel it.
        // SAFETY: no memory referenced (buffer selected by the kernel).
        unsafe { ring.submission().push(&recv_select(z.as_raw_fd(), 42)) }.unwrap();
        ring.submit().unwrap();
        let cancel = opcode::AsyncCancel::new(42).build().user_data(43);
        // SAFETY: as above.
        unsafe { ring.submission().push(&cancel) }.unwrap();
        ring.submit_and_wait(2).unwrap();
        let done: Vec<(u64, i32, u32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        let recv = done
            .iter()
            .find(|c| c.0 == 42)
            .expect("the receive completed");
        assert_eq!(recv.1, -libc::ECANCELED);
        assert_eq!(cqueue::buffer_select(recv.2), None, "no buffer consumed");
        assert_eq!(done.iter().find(|c| c.0 == 43).map(|c| c.1), Some(0));
        // Re-armed, the next bytes arrive in a buffer.
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (res, flags) = one(&mut ring, recv_select(z.as_raw_fd(), 1));
        let bid = cqueue::buffer_select(flags).unwrap();
        assert_eq!(b.filled(bid, res as usize), b"GET / HTTP/1.1\r\n\r\n");
        b.give(bid);
        b.publish();
        ring.submitter().unregister_buf_ring(PBUF_GROUP).unwrap();
        b.registered = false;
    }

    #[test]
    fn a_short_nonblocking_send_reports_what_went_and_eagain_when_full() {
        // What the inline send path relies on: on a full socket buffer, a partial count, then
        // EAGAIN (never a block); the caller resubmits the rest after POLLOUT.
        let (a, mut z) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let big = vec![7u8; 8 << 20];
        let mut sent = 0;
        let err = loop {
            match sys::send(a.as_fd(), &big[sent..], false) {
                Ok(n) => {
                    assert!(n > 0 && n < big.len() - sent, "short, not whole: {n}");
                    sent += n;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // POLL_ADD(POLLOUT) through the ring fires once the peer reads.
        let (mut ring, _) = build_ring(8).unwrap();
        // SAFETY: no memory referenced.
        unsafe {
            ring.submission()
                .push(
                    &opcode::PollAdd::new(types::Fd(a.as_raw_fd()), libc::POLLOUT as u32)
                        .build()
                        .user_data(5),
                )
                .unwrap()
        };
        ring.submit().unwrap();
        let mut got = vec![0u8; sent];
        std::io::Read::read_exact(&mut z, &mut got).unwrap();
        ring.submit_and_wait(1).unwrap();
        let c = ring.completion().next().unwrap();
        assert_eq!(c.user_data(), 5);
        assert!(c.result() > 0 && c.result() & libc::POLLOUT as i32 != 0);
        assert!(got.iter().all(|&x| x == 7));
    }
}
