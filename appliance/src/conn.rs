//! The per-connection state machine, shared by both I/O backends: bytes in, actions out.
//!
//! A backend feeds received bytes with [`Conn::feed`], then repeatedly asks [`Conn::next`] what
//! to do: read more, send these bytes, send this file range, or close; after each send it reports
//! progress with [`Conn::advance`]. Pipelined requests are parsed one at a time, after the
//! previous response is fully handed to the kernel, so answers go out in order and a client that
//! does not read cannot make the server buffer unboundedly.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cache::CachedFile;
use crate::http1::limits::MAX_BUFFERED_INPUT;
use crate::http1::{parse_request, Status};
use crate::service::{Chunk, Response, Service};

/// What the backend should do next.
#[derive(Debug)]
pub enum Action<'a> {
    /// Wait for more input.
    Read,
    /// Send these bytes; `more` is true when further in-memory chunks follow at once
    /// (`MSG_MORE`); never before a file range.
    Send {
        /// The bytes.
        data: &'a [u8],
        /// More chunks follow.
        more: bool,
        /// The file range that comes right after these bytes (a head or multipart delimiter
        /// followed by its body), as `(file, offset, len)`: a backend may send both in one
        /// call, and [`Conn::advance`] carries a count past the bytes into the range.
        then_file: Option<(&'a Arc<CachedFile>, u64, u64)>,
    },
    /// Send `len` bytes of `file` starting at `offset`, in the kernel.
    SendFile {
        /// The open file.
        file: &'a Arc<CachedFile>,
        /// First byte.
        offset: u64,
        /// Bytes left in this range.
        len: u64,
        /// More chunks follow.
        more: bool,
    },
    /// Close the connection.
    Close,
}

#[derive(Debug)]
struct Outgoing {
    resp: Response,
    chunk: usize,
    pos: u64,
    started: Instant,
    sent: u64,
    /// QoE: the request's parsed CMCD, folded when the response is sent.
    qoe: Option<crate::qoe::Pending>,
}

/// Connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest time from the first byte of a request head to its end (slowloris).
    pub header: Duration,
    /// Longest time a connection may sit with no request and nothing to send, or make no send
    /// progress.
    pub idle: Duration,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    inbuf: Vec<u8>,
    out: Option<Outgoing>,
    peer: Option<IpAddr>,
    eof: bool,
    closing: bool,
    head_started: Option<Instant>,
    last_activity: Instant,
    /// QoE: send rate of the last large response on this connection, kbps (CMSD `etp`).
    etp_kbps: Option<u64>,
}

impl Conn {
    /// A new connection from `peer`.
    pub fn new(peer: Option<IpAddr>, now: Instant) -> Self {
        Conn {
            inbuf: Vec::new(),
            out: None,
            peer,
            eof: false,
            closing: false,
            head_started: None,
            last_activity: now,
            etp_kbps: None,
        }
    }

    /// Whether the backend should read more now (the input buffer has room and the peer has not
    /// closed its side).
    pub fn wants_read(&self) -> bool {
        !self.eof && !self.closing && self.inbuf.len() < MAX_BUFFERED_INPUT
    }

    /// Room left in the input buffer.
    pub fn read_room(&self) -> usize {
        MAX_BUFFERED_INPUT.saturating_sub(self.inbuf.len())
    }

    /// Appends received bytes; an empty slice means the peer closed its side.
    pub fn feed(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() {
            self.eof = true;
        } else {
            if self.inbuf.is_empty() && self.out.is_none() {
                self.head_started = Some(now);
            }
            self.inbuf.extend_from_slice(data);
        }
        self.last_activity = now;
    }

    /// Whether the peer closed its side.
    pub fn peer_closed(&self) -> bool {
        self.eof
    }

    /// Whether nothing is in flight: no partial request, nothing to send.
    pub fn is_idle(&self) -> bool {
        self.out.is_none() && self.inbuf.is_empty()
    }

    /// Frees the input buffer of a connection that has been idle (no partial request, nothing
    /// to send) for `after`: an idle keep-alive connection between two requests then holds no
    /// heap memory, while a busy one keeps its buffer (no allocation per request). Returns
    /// whether memory was freed. Called by the backends' periodic sweep.
    pub fn trim_if_idle(&mut self, now: Instant, after: Duration) -> bool {
        if self.is_idle()
            && self.inbuf.capacity() > 0
            && now.saturating_duration_since(self.last_activity) >= after
        {
            self.inbuf = Vec::new();
            return true;
        }
        false
    }

    /// Marks the connection to close once the current response is sent (drain).
    pub fn close_after_response(&mut self) {
        self.closing = true;
    }

    /// When this connection times out: header deadline while a head is arriving, idle deadline
    /// otherwise.
    pub fn deadline(&self, t: Timeouts) -> Instant {
        match (self.out.is_some(), self.head_started) {
            (false, Some(start)) => start + t.header,
            _ => self.last_activity + t.idle,
        }
    }

    /// What to do next.
    pub fn next(&mut self, svc: &Service, now: Instant) -> Action<'_> {
        loop {
            if let Some(o) = &self.out {
                if o.chunk < o.resp.chunks.len() {
                    break;
                }
                let o = self.out.take().expect("checked above");
                self.finish(svc, o, now);
                if self.closing {
                    return Action::Close;
                }
                continue;
            }
            if self.closing {
                return Action::Close;
            }
            match parse_request(&self.inbuf) {
                Ok(Some((req, used))) => {
                    // The request borrows the input buffer: answered before the buffer moves.
                    let wall = SystemTime::now();
                    let mut resp = svc.respond(&req, self.peer, wall);
                    // QoE: parse CMCD, append CMSD headers; folded in `finish`.
                    let qoe = svc.qoe().map(|q| {
                        let active = svc.metrics().active_connections();
                        q.begin(req.query, &req.cmcd, &mut resp, self.etp_kbps, active, wall)
                    });
                    self.inbuf.drain(..used);
                    self.head_started = (!self.inbuf.is_empty()).then_some(now);
                    if !resp.keep_alive {
                        self.closing = true;
                    }
                    self.start(resp, now);
                    if let Some(o) = &mut self.out {
                        o.qoe = qoe;
                    }
                }
                Ok(None) => {
                    if self.eof {
                        return Action::Close;
                    }
                    return Action::Read;
                }
                Err(e) => {
                    tracing::debug!(peer = ?self.peer, status = e.status.code(), detail = %e.detail, "bad request");
                    let resp = svc.error(e.status, &e.detail, false, false, SystemTime::now());
                    self.inbuf.clear();
                    self.closing = true;
                    self.start(resp, now);
                }
            }
        }
        let o = self.out.as_ref().expect("set above");
        // `MSG_MORE` only when in-memory bytes follow. A head corked in front of a file range
        // makes the kernel build one skb of head + body that it splits in two, and with BBR's
        // internal pacing (no `fq` qdisc) the second half waits for a pacing hrtimer: one timer
        // interrupt per response, which doubled the server's CPU per request and per GB
        // (BENCHMARKS.md, "Appliance vs nginx"). nginx (`tcp_nopush off`) sends its head alone
        // too.
        let more = matches!(o.resp.chunks.get(o.chunk + 1), Some(Chunk::Mem(_)));
        match &o.resp.chunks[o.chunk] {
            Chunk::Mem(b) => Action::Send {
                data: &b[o.pos as usize..],
                more,
                then_file: match (o.resp.chunks.get(o.chunk + 1), &o.resp.file) {
                    (Some(&Chunk::File { offset, len }), Some(file)) => Some((file, offset, len)),
                    _ => None,
                },
            },
            Chunk::File { offset, len } => match &o.resp.file {
                Some(file) => Action::SendFile {
                    file,
                    offset: offset + o.pos,
                    len: len - o.pos,
                    more,
                },
                None => Action::Close,
            },
        }
    }

    fn start(&mut self, resp: Response, now: Instant) {
        self.out = Some(Outgoing {
            resp,
            chunk: 0,
            pos: 0,
            started: now,
            sent: 0,
            qoe: None,
        });
    }

    /// Reports that `n` bytes were handed to the kernel: those of the current chunk first, then
    /// (after a [`Action::Send`] whose `then_file` went out in the same call) the next ones.
    pub fn advance(&mut self, n: usize, now: Instant) {
        self.last_activity = now;
        let Some(o) = &mut self.out else {
            return;
        };
        let mut n = n as u64;
        o.sent += n;
        while let Some(chunk) = o.resp.chunks.get(o.chunk) {
            let len = match chunk {
                Chunk::Mem(b) => b.len() as u64,
                Chunk::File { len, .. } => *len,
            };
            let step = n.min(len - o.pos);
            o.pos += step;
            n -= step;
            if o.pos < len {
                break;
            }
            o.chunk += 1;
            o.pos = 0;
            if n == 0 {
                break;
            }
        }
    }

    fn finish(&mut self, svc: &Service, mut o: Outgoing, now: Instant) {
        let m = svc.metrics();
        m.sent(o.sent);
        // The loop's `now` is from before the sends: read the clock for the end time.
        let _ = now;
        let us = Instant::now()
            .saturating_duration_since(o.started)
            .as_micros() as u64;
        m.latency_us(us);
        // QoE: the connection's throughput estimate, the session summary, the JSON access log.
        if o.sent >= crate::qoe::ETP_MIN_BYTES && us > 0 {
            self.etp_kbps = Some(o.sent * 8_000 / us);
        }
        if let (Some(q), Some(p)) = (svc.qoe(), o.qoe) {
            q.finish(p, &o.resp, o.sent, us, self.peer);
        }
        if o.resp.status == Status::InternalError || svc.sample_access_log() {
            tracing::info!(
                target: "outpost::access",
                peer = ?self.peer,
                status = o.resp.status.code(),
                path = o.resp.log_path.as_ref().map_or("", |p| p.as_str()),
                sub = o.resp.claims.as_ref().map_or("", |c| c.sub.as_str()),
                bytes = o.sent,
                us,
                "request"
            );
        }
        // The head and chunk list go back to this thread's pools for the next response.
        crate::bufpool::give(o.resp.chunks);
        if let Some(p) = o.resp.log_path.take() {
            crate::bufpool::give_path(p.into_string());
        }
        self.last_activity = now;
    }

    /// Whether a response is being sent (a drain closes only connections between responses).
    pub fn in_flight(&self) -> bool {
        self.out.is_some()
    }

    /// Drive index of the file being sent, if any (to report I/O errors).
    pub fn current_drive(&self) -> Option<usize> {
        self.out.as_ref()?.resp.file.as_ref().map(|f| f.drive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Store;
    use crate::metrics::Metrics;
    use crate::service::ServiceConfig;
    use protocol::grant::{KeyRing, Verifier};

    fn service(dir: &std::path::Path) -> Service {
        Service::new(
            ServiceConfig {
                id: "t".into(),
                access_log_every: 0,
            },
            Verifier::new(KeyRing::new(), "c"),
            Arc::new(Store::open(&[dir.to_path_buf()], Some(1 << 20)).unwrap()),
            Arc::new(Metrics::default()),
        )
    }

    /// Drives the machine like a backend that can send everything at once; returns the bytes.
    fn drain(c: &mut Conn, svc: &Service, now: Instant) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        loop {
            match c.next(svc, now) {
                Action::Read => return (out, false),
                Action::Close => return (out, true),
                Action::Send { data, .. } => {
                    let n = data.len();
                    out.extend_from_slice(data);
                    c.advance(n, now);
                }
                Action::SendFile { len, .. } => {
                    out.extend(std::iter::repeat_n(b'F', len as usize));
                    c.advance(len as usize, now);
                }
            }
        }
    }

    #[test]
    fn an_idle_connection_gives_its_input_buffer_back_after_the_delay_only() {
        let t0 = Instant::now();
        let mut c = Conn::new(None, t0);
        c.feed(b"GET /x HTTP/1.1\r\n", t0);
        // A partial request is never trimmed.
        assert!(!c.trim_if_idle(t0 + Duration::from_secs(60), Duration::from_secs(1)));
        let mut idle = Conn::new(None, t0);
        idle.feed(b"x", t0);
        idle.inbuf.clear();
        assert!(!idle.trim_if_idle(t0 + Duration::from_millis(500), Duration::from_secs(1)));
        assert!(idle.inbuf.capacity() > 0, "kept while recently active");
        assert!(idle.trim_if_idle(t0 + Duration::from_secs(1), Duration::from_secs(1)));
        assert_eq!(idle.inbuf.capacity(), 0);
        assert!(!idle.trim_if_idle(t0 + Duration::from_secs(2), Duration::from_secs(1)));
    }

    #[test]
    fn pipelined_requests_answer_in_order_and_partial_heads_wait() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let now = Instant::now();
        let mut c = Conn::new(None, now);
        c.feed(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HT",
            now,
        );
        let (out, closed) = drain(&mut c, &svc, now);
        let text = String::from_utf8(out).unwrap();
        let first = text.find("404 Not Found").unwrap();
        let second = text.find("405 Method Not Allowed").unwrap();
        assert!(first < second, "{text}");
        assert!(!closed);
        assert!(!c.is_idle(), "partial third request is buffered");
        let t = Timeouts {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(60),
        };
        assert_eq!(
            c.deadline(t),
            now + t.header,
            "a partial head runs the header deadline"
        );
        c.feed(b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", now);
        let (out, closed) = drain(&mut c, &svc, now);
        assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.1 404"));
        assert!(closed, "Connection: close ends the connection");
    }

    #[test]
    fn a_bad_request_is_answered_then_closed_and_the_rest_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let now = Instant::now();
        let mut c = Conn::new(None, now);
        c.feed(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", now);
        let (out, closed) = drain(&mut c, &svc, now);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "smuggled request answered: {text}"
        );
        assert!(closed);
    }
}
