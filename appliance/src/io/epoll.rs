//! The portable backend: one epoll instance per thread, level-triggered, `sendfile` for file
//! bytes (zero-copy: the kernel moves page-cache pages to the socket).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sys::{self, Epoll, EV_IN, EV_OUT};
use super::{Shared, MAX_SEND_CHUNK, SEND_BUDGET};
use crate::conn::{Action, Conn};

const LISTENER: u64 = u64::MAX;
const READ_BUF: usize = 16 * 1024;

struct Entry {
    sock: TcpStream,
    conn: Conn,
    interest: u32,
    /// Set once the server closed its side: unread input is drained until the peer closes or
    /// this deadline passes, so the kernel never answers unread bytes with a reset that would
    /// destroy the response just sent (nginx's `lingering_close`).
    lingering: Option<Instant>,
}

/// How long a closed connection keeps draining unread input.
const LINGER: Duration = Duration::from_secs(2);

enum Next {
    Keep(u32),
    Close,
}

/// Runs one data-plane thread until the drain finishes.
pub fn run(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let ep = Epoll::new()?;
    ep.add(listener.as_raw_fd(), LISTENER, EV_IN)?;
    let mut listener = Some(listener);
    let mut slab: Vec<Option<Entry>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Vec::with_capacity(256);
    let mut buf = vec![0u8; READ_BUF];
    let mut last_sweep = Instant::now();
    let m = shared.svc.metrics().clone();
    loop {
        if shared.is_shutting_down() {
            if let Some(l) = listener.take() {
                let _ = ep.delete(l.as_raw_fd());
                for i in 0..slab.len() {
                    if let Some(e) = &mut slab[i] {
                        e.conn.close_after_response();
                        if !e.conn.in_flight() {
                            close(&ep, &mut slab, &mut free, i, &m);
                        }
                    }
                }
            }
            let live = slab.iter().filter(|e| e.is_some()).count();
            let late = shared.drain_deadline().is_some_and(|d| Instant::now() >= d);
            if live == 0 || late {
                for i in 0..slab.len() {
                    if slab[i].is_some() {
                        close(&ep, &mut slab, &mut free, i, &m);
                    }
                }
                return Ok(());
            }
        }
        ep.wait(&mut events, 256, 100)?;
        let now = Instant::now();
        for &(token, ev) in &events {
            if token == LISTENER {
                let Some(l) = &listener else { continue };
                accept_all(l, &ep, &shared, &mut slab, &mut free, now);
                continue;
            }
            let i = token as usize;
            let Some(entry) = slab.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if entry.lingering.is_some() {
                let done = loop {
                    match sys::recv(entry.sock.as_fd(), &mut buf) {
                        Ok(0) => break true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break true,
                    }
                };
                if done {
                    close(&ep, &mut slab, &mut free, i, &m);
                }
                continue;
            }
            let mut dead = false;
            if ev & !EV_OUT != 0 && entry.conn.wants_read() {
                let room = entry.conn.read_room().min(buf.len());
                match sys::recv(entry.sock.as_fd(), &mut buf[..room]) {
                    Ok(n) => entry.conn.feed(&buf[..n], now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => dead = true,
                }
            }
            let next = if dead {
                Next::Close
            } else {
                drive(entry, &shared, now)
            };
            match next {
                Next::Close if !dead && !entry.conn.peer_closed() => {
                    let _ = entry.sock.shutdown(std::net::Shutdown::Write);
                    if entry.interest != EV_IN {
                        let _ = ep.modify(entry.sock.as_raw_fd(), token, EV_IN);
                        entry.interest = EV_IN;
                    }
                    entry.lingering = Some(now + LINGER);
                }
                Next::Close => close(&ep, &mut slab, &mut free, i, &m),
                Next::Keep(want) => {
                    if want != entry.interest {
                        if ep.modify(entry.sock.as_raw_fd(), token, want).is_err() {
                            close(&ep, &mut slab, &mut free, i, &m);
                        } else {
                            entry.interest = want;
                        }
                    }
                }
            }
        }
        if now.duration_since(last_sweep) >= Duration::from_millis(250) {
            last_sweep = now;
            for i in 0..slab.len() {
                if let Some(e) = &mut slab[i] {
                    e.conn.trim_if_idle(now, super::TRIM_IDLE_AFTER);
                }
                if let Some(e) = &slab[i] {
                    if let Some(t) = e.lingering {
                        if now >= t {
                            close(&ep, &mut slab, &mut free, i, &m);
                        }
                    } else if now >= e.conn.deadline(shared.timeouts) {
                        m.timeout();
                        close(&ep, &mut slab, &mut free, i, &m);
                    }
                }
            }
        }
    }
}

fn accept_all(
    l: &TcpListener,
    ep: &Epoll,
    shared: &Shared,
    slab: &mut Vec<Option<Entry>>,
    free: &mut Vec<usize>,
    now: Instant,
) {
    let m = shared.svc.metrics();
    loop {
        let (sock, peer) = match l.accept() {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if !shared.admit() {
            m.conn_refused();
            drop(sock);
            continue;
        }
        if sock.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = sock.set_nodelay(true);
        let i = free.pop().unwrap_or_else(|| {
            slab.push(None);
            slab.len() - 1
        });
        if ep.add(sock.as_raw_fd(), i as u64, EV_IN).is_err() {
            free.push(i);
            continue;
        }
        m.conn_opened();
        slab[i] = Some(Entry {
            sock,
            conn: Conn::new(Some(peer.ip()), now),
            interest: EV_IN,
            lingering: None,
        });
    }
}

fn close(
    ep: &Epoll,
    slab: &mut [Option<Entry>],
    free: &mut Vec<usize>,
    i: usize,
    m: &crate::metrics::Metrics,
) {
    if let Some(e) = slab[i].take() {
        let _ = ep.delete(e.sock.as_raw_fd());
        let _ = e.sock.shutdown(std::net::Shutdown::Write);
        m.conn_closed();
        free.push(i);
    }
}

fn drive(e: &mut Entry, shared: &Shared, now: Instant) -> Next {
    let mut budget = SEND_BUDGET;
    loop {
        let read_interest = if e.conn.wants_read() { EV_IN } else { 0 };
        let (result, sent_file_drive) = match e.conn.next(&shared.svc, now) {
            Action::Read => return Next::Keep(EV_IN),
            Action::Close => return Next::Close,
            Action::Send { data, more, .. } => (sys::send(e.sock.as_fd(), data, more), None),
            Action::SendFile {
                file, offset, len, ..
            } => {
                let count = (len as usize).min(MAX_SEND_CHUNK);
                let mut off = offset;
                let r = sys::sendfile(e.sock.as_fd(), file.file.as_fd(), &mut off, count);
                (r, Some(file.drive))
            }
        };
        match result {
            Ok(0) => {
                // The file is shorter than when it was opened: never send a short body.
                tracing::error!("file shrank while being sent; closing the connection");
                return Next::Close;
            }
            Ok(n) => {
                e.conn.advance(n, now);
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return Next::Keep(EV_OUT | read_interest);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Next::Keep(EV_OUT);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                if let (Some(d), Some(libc::EIO)) = (sent_file_drive, err.raw_os_error()) {
                    shared.svc.store().report_io_error(d);
                }
                return Next::Close;
            }
        }
    }
}
