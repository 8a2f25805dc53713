//! On the io_uring backend a small resident range leaves with its head in one `sendmsg` from the
//! file's mapping (`io::sys::send_head_and_mapped`); larger ones use `sendfile`. Through real
//! sockets: every byte is right on both paths, across partial sends (many pipelined requests
//! that fill the socket buffers before the client reads), for multipart answers, and a mapped
//! file truncated underneath fails the kernel's copy with `EFAULT` instead of killing the process
//! with `SIGBUS`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use appliance::io::sys;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice};
use rand::{Rng as _, SeedableRng as _};

mod support;

const SIZE: usize = 1 << 20;

fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 9)) as u8)
        .collect()
}

/// Reads one response: `(status line, headers, body)` (the body by its Content-Length).
fn read_response(s: &mut TcpStream) -> (String, String, Vec<u8>) {
    let head = support::read_head(s);
    let mut body = vec![0u8; support::content_length(&head)];
    s.read_exact(&mut body).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_owned(), headers.to_owned(), body)
}

struct Setup {
    _cache: support::Cache,
    server: server::Running,
    metrics: Arc<Metrics>,
    grant: String,
    body: Vec<u8>,
}

fn setup() -> Setup {
    let cache = support::Cache::new();
    let body = content(SIZE);
    cache.put("seg.m4s", &body);
    let (ring, grant) = support::grant(7);
    let metrics = Arc::new(Metrics::default());
    let svc = Arc::new(support::service("mapped", ring, &cache, metrics.clone()));
    let config = support::server_config(
        BackendChoice::Uring,
        Duration::from_secs(30),
        Duration::from_secs(5),
    );
    let server = server::start(config, svc, None).expect("io_uring backend starts");
    Setup {
        _cache: cache,
        server,
        metrics,
        grant,
        body,
    }
}

fn connect(s: &Setup) -> TcpStream {
    let c = TcpStream::connect(s.server.local_addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

fn request(s: &Setup, range: &str) -> String {
    format!(
        "GET /g/{}/t/seg.m4s HTTP/1.1\r\nHost: x\r\nRange: bytes={range}\r\n\r\n",
        s.grant
    )
}

#[test]
fn small_ranges_go_out_with_their_head_and_every_byte_is_right() {
    let s = setup();
    let mut c = connect(&s);
    // Warm the file so every range is resident.
    write!(
        c,
        "GET /g/{}/t/seg.m4s HTTP/1.1\r\nHost: x\r\n\r\n",
        s.grant
    )
    .unwrap();
    assert_eq!(read_response(&mut c).2, s.body);
    let mapped0 = s.metrics.body_mapped_total();
    // (range, first byte, length, sent from the mapping)
    let cases: [(&str, usize, usize, bool); 6] = [
        ("0-0", 0, 1, true),
        ("4096-8191", 4096, 4096, true),
        ("1000-66535", 1000, 65536, true),
        ("1000-66536", 1000, 65537, false),
        ("-100", SIZE - 100, 100, true),
        ("1040000-", 1_040_000, SIZE - 1_040_000, true),
    ];
    let mut want_mapped = 0;
    for (range, first, len, mapped) in cases {
        c.write_all(request(&s, range).as_bytes()).unwrap();
        let (status, headers, body) = read_response(&mut c);
        assert_eq!(status, "HTTP/1.1 206 Partial Content", "{range}");
        assert!(
            headers.contains(&format!(
                "Content-Range: bytes {first}-{}/{SIZE}",
                first + len - 1
            )),
            "{range}: {headers}"
        );
        assert!(body == s.body[first..first + len], "{range}: bytes differ");
        want_mapped += u64::from(mapped);
    }
    assert_eq!(
        s.metrics.body_mapped_total() - mapped0,
        want_mapped,
        "ranges of at most 64 KiB were sent from the mapping, the larger one with sendfile"
    );
    // Two ranges: multipart, each part's delimiter followed by its bytes.
    c.write_all(request(&s, "10-19,500000-500009").as_bytes())
        .unwrap();
    let (status, _, body) = read_response(&mut c);
    assert_eq!(status, "HTTP/1.1 206 Partial Content");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("Content-Range: bytes 10-19/1048576"),
        "{text}"
    );
    let at = |needle: &[u8]| {
        body.windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    assert!(at(&s.body[10..20]) < at(&s.body[500_000..500_010]));
    s.server.shutdown();
    s.server.wait().unwrap();
}

#[test]
fn pipelined_ranges_survive_partial_sends() {
    let s = setup();
    let mut c = connect(&s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let ranges: Vec<(usize, usize)> = (0..300)
        .map(|_| {
            let len = rng.gen_range(1..=65_536);
            (rng.gen_range(0..=SIZE - len), len)
        })
        .collect();
    // 300 requests of up to 64 KiB (~10 MB of answers) before reading a byte: the socket
    // buffers fill, so `sendmsg` calls end part-way through a head or a body and the rest
    // follows when the client drains.
    let mut all = String::new();
    for &(first, len) in &ranges {
        all.push_str(&request(&s, &format!("{first}-{}", first + len - 1)));
    }
    let writer = {
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(all.as_bytes()).unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    for (i, &(first, len)) in ranges.iter().enumerate() {
        let (status, _, body) = read_response(&mut c);
        assert_eq!(status, "HTTP/1.1 206 Partial Content", "response {i}");
        assert!(
            body == s.body[first..first + len],
            "response {i}: bytes differ"
        );
    }
    writer.join().unwrap();
    assert!(
        s.metrics.body_mapped_total() > 0,
        "the small ranges took the mapped path"
    );
    s.server.shutdown();
    s.server.wait().unwrap();
}

#[test]
fn a_truncated_mapped_file_fails_the_send_with_efault_not_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, content(64 * 1024)).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = sys::Mapping::new(file.as_fd(), 64 * 1024).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut rx, _) = listener.accept().unwrap();
    // Before: head and range in one call.
    let n = sys::send_head_and_mapped(tx.as_fd(), b"head", &map, 100, 1000).unwrap();
    assert_eq!(n, 1004);
    let mut got = vec![0u8; 1004];
    rx.read_exact(&mut got).unwrap();
    assert_eq!(&got[..4], b"head");
    assert_eq!(&got[4..], &content(64 * 1024)[100..1100]);
    // Outside the mapping: refused before the kernel is asked.
    let e = sys::send_head_and_mapped(tx.as_fd(), b"", &map, 65_000, 1000).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    // After truncation the pages are gone: the kernel's copy fails (EFAULT) and this process,
    // which never touched the mapped bytes itself, gets no SIGBUS.
    file.set_len(0).unwrap();
    let e = sys::send_head_and_mapped(tx.as_fd(), b"", &map, 0, 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFAULT), "{e}");
}
