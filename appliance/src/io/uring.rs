//! The io_uring backend: one ring per data-plane thread (`SINGLE_ISSUER`, `COOP_TASKRUN`,
//! `DEFER_TASKRUN` when the kernel has them), multishot accept on the thread's own
//! `SO_REUSEPORT` listener, `RECV` for request heads, and the body path measured cheapest on
//! this kernel (BENCHMARKS.md, "Appliance vs nginx"):
//!
//! - Response heads and file ranges that `cachestat(2)` reports fully resident in the page cache
//!   go out inline from the ring thread with non-blocking `send` / `sendfile` (one system call
//!   per 2 MiB chunk, like nginx; no io-wq hop, no pipe). On `EAGAIN` the connection waits with
//!   `POLL_ADD(POLLOUT)`; after `SEND_BUDGET` bytes it yields with a `NOP` so one fast client
//!   cannot hog the thread.
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
use crate::conn::{Action, Conn};

const SQ_ENTRIES: u32 = 1024;
const READ_BUF: usize = 16 * 1024;
/// Capacity asked for each pooled pipe (`F_SETPIPE_SZ`).
const PIPE_SIZE: usize = 256 * 1024;
/// Most idle pipes kept per thread (the per-user pipe page budget is finite).
const PIPE_POOL: usize = 64;
/// Cap on io-wq workers per ring: [bounded (file reads), unbounded].
const IOWQ_MAX_WORKERS: [u32; 2] = [8, 32];
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

fn build_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    match IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 4)
        .build(entries)
    {
        Ok(r) => Ok((r, "single_issuer+coop_taskrun+defer_taskrun")),
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
    rbuf: Box<[u8]>,
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
    };
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
            // buffer, `self.timespec`) or at
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
            _ => self.op_done(slot, kind, res, now),
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
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
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

    fn op_done(&mut self, i: usize, kind: u64, res: i32, now: Instant) -> io::Result<()> {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        s.ops = s.ops.saturating_sub(1);
        let mut hard = false;
        match kind {
            K_RECV => {
                s.recv_busy = false;
                match s.closing {
                    Closing::No if res > 0 => s.conn.feed(&s.rbuf[..res as usize], now),
                    Closing::No if res == 0 => s.conn.feed(&[], now),
                    Closing::Linger(_) if res > 0 => {}
                    Closing::Hard => {}
                    _ => hard = true,
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
                Action::Send { data, more } => (sys::send(sock, data, more), None),
                Action::SendFile {
                    file, offset, len, ..
                } => {
                    let n = (len as usize).min(MAX_SEND_CHUNK);
                    let fd = file.file.as_fd();
                    let resident = *cachestat
                        && match sys::resident(fd, offset, n as u64) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(error = %e, "cachestat failed; every file range now goes through io-wq");
                                *cachestat = false;
                                false
                            }
                        };
                    if !resident {
                        metrics.body_splice();
                        need_pipe = Some((file.file.as_raw_fd(), offset, len, file.drive));
                        break;
                    }
                    metrics.body_sendfile();
                    let mut off = offset;
                    (sys::sendfile(sock, fd, &mut off, n), Some(file.drive))
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
                    if let (Some(d), Some(libc::EIO)) = (drive, e.raw_os_error()) {
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
            let Some(s) = &self.slots[i] else { continue };
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
            }
            return Ok(true);
        }
        Ok(false)
    }
}

fn recv_entry(s: &mut Slot, i: usize) -> squeue::Entry {
    let room = s.conn.read_room().clamp(1, s.rbuf.len());
    opcode::Recv::new(
        types::Fd(s.sock.as_raw_fd()),
        s.rbuf.as_mut_ptr(),
        room as u32,
    )
    .build()
    .user_data(ud(i, K_RECV))
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
