//! Clients that stop reading, on both backends, through real sockets: a response far larger
//! than the socket buffers makes every send short and then `EAGAIN`; a client reading it in
//! small slow pieces still gets every byte right, and a drain whose deadline passes while a
//! client reads nothing (operations still in flight on io_uring) ends the server anyway,
//! closing that connection, instead of waiting forever.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, Running};

mod support;

/// Larger than loopback's socket buffers on both sides together.
const BIG: usize = 64 << 20;

fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(13) ^ (i >> 10)) as u8)
        .collect()
}

struct Fixture {
    _cache: support::Cache,
    server: Option<Running>,
    path: String,
    body: Vec<u8>,
}

fn start(backend: BackendChoice) -> Fixture {
    let cache = support::Cache::new();
    let body = content(BIG);
    cache.put("big.m4s", &body);
    let (ring, grant) = support::grant(9);
    let svc = Arc::new(support::service(
        "stuck",
        ring,
        &cache,
        Arc::new(Metrics::default()),
    ));
    let config =
        support::server_config(backend, Duration::from_secs(60), Duration::from_millis(500));
    let server = server::start(config, svc, None).unwrap();
    Fixture {
        _cache: cache,
        server: Some(server),
        path: format!("/g/{grant}/t/big.m4s"),
        body,
    }
}

impl Fixture {
    fn request(&self) -> TcpStream {
        let addr = self.server.as_ref().unwrap().local_addr;
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "GET {} HTTP/1.1\r\nHost: x\r\n\r\n", self.path).unwrap();
        s
    }
}

/// One `read`, retried on `EINTR` (the io_uring server in this process interrupts blocking
/// system calls of other threads when it runs task work).
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r.unwrap(),
        }
    }
}

/// Reads up to the end of the head; returns the bytes after it.
fn skip_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_some(s, &mut chunk);
        assert!(n > 0, "closed before the head ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).into_owned();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(head.contains(&format!("Content-Length: {BIG}")), "{head}");
            return buf[p + 4..].to_vec();
        }
    }
}

fn a_slow_small_reader_gets_every_byte(b: BackendChoice) {
    let f = start(b);
    let mut s = f.request();
    let mut got = skip_head(&mut s);
    // Let the server fill both socket buffers and hit EAGAIN, then read in small pieces (each
    // read frees a little room: the server's sends are short).
    std::thread::sleep(Duration::from_millis(200));
    let mut piece = vec![0u8; 1500];
    while got.len() < BIG {
        let want = piece.len().min(BIG - got.len());
        let n = read_some(&mut s, &mut piece[..want]);
        assert!(n > 0, "closed after {} of {BIG} bytes", got.len());
        got.extend_from_slice(&piece[..n]);
        if got.len() % (8 << 20) < 1500 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(got == f.body, "body differs");
    let (_cache, server) = (f._cache, f.server);
    let server = server.unwrap();
    server.shutdown();
    server.wait().unwrap();
}

fn a_drain_deadline_ends_the_server_with_a_client_reading_nothing(b: BackendChoice) {
    let mut f = start(b);
    let mut stuck = f.request();
    let _ = skip_head(&mut stuck);
    // The client reads nothing more: more than both socket buffers can hold (receive buffers grow to 32 MB here) stays to send, the server's send waits.
    let server = f.server.take().unwrap();
    server.shutdown();
    // Returns once the 500 ms drain deadline passes (no timing asserted: a server that waited
    // for the client would never return, and the read timeout below would fail the test).
    server.wait().unwrap();
    // The stuck connection was cut: reading ends (EOF or reset) short of the whole body.
    let mut rest = Vec::new();
    let got = loop {
        match stuck.read_to_end(&mut rest) {
            Ok(_) => break rest.len(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "still open after the drain: {e}"
                );
                break rest.len();
            }
        }
    };
    assert!(
        got < BIG,
        "the whole body arrived ({got}); nothing was stuck"
    );
}

mod epoll {
    use super::*;
    #[test]
    fn a_slow_small_reader_gets_every_byte() {
        super::a_slow_small_reader_gets_every_byte(BackendChoice::Epoll)
    }
    #[test]
    fn a_drain_deadline_ends_the_server_with_a_client_reading_nothing() {
        super::a_drain_deadline_ends_the_server_with_a_client_reading_nothing(BackendChoice::Epoll)
    }
}

mod io_uring {
    use super::*;
    #[test]
    fn a_slow_small_reader_gets_every_byte() {
        super::a_slow_small_reader_gets_every_byte(BackendChoice::Uring)
    }
    #[test]
    fn a_drain_deadline_ends_the_server_with_a_client_reading_nothing() {
        super::a_drain_deadline_ends_the_server_with_a_client_reading_nothing(BackendChoice::Uring)
    }
}
