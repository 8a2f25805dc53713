//! The io_uring backend never reads the disk on its serving thread: a file range that is not in
//! the page cache goes through io-wq (`SPLICE`), a resident one goes out with an inline
//! `sendfile`. Served from a cold page cache (`posix_fadvise(DONTNEED)` first) through real
//! sockets, with one serving thread, while another connection's requests keep being answered.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use appliance::io::sys;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice};

mod support;

const COLD: usize = 4;
const COLD_BYTES: usize = 24 << 20;

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 12) ^ seed) as u8)
        .collect()
}

/// Reads one `200` response head; returns the Content-Length.
fn read_head(s: &mut TcpStream) -> usize {
    let head = support::read_head(s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    support::content_length(&head)
}

#[test]
fn cold_ranges_are_read_off_the_serving_thread_while_hot_requests_are_answered() {
    // On a disk file system beside the build (a tmpfs page cannot be dropped).
    let cache = support::Cache::new_in(env!("CARGO_TARGET_TMPDIR"));
    let hot = content(99, 300_000);
    cache.put("hot.m4s", &hot);
    for n in 0..COLD {
        let path = cache.put(&format!("cold-{n}.m4s"), &content(n, COLD_BYTES));
        File::open(path).unwrap().sync_all().unwrap();
    }
    let (ring, grant) = support::grant(3);
    let metrics = Arc::new(Metrics::default());
    let svc = Arc::new(support::service("cold", ring, &cache, metrics.clone()));
    let config = support::server_config(
        BackendChoice::Uring,
        Duration::from_secs(30),
        Duration::from_secs(5),
    );
    let server = server::start(config, svc, None).expect("io_uring backend starts");
    let addr = server.local_addr;
    let connect = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };

    // Warm: the hot file is read once, so its pages are resident.
    let mut h = connect();
    let get = |s: &mut TcpStream, file: &str| {
        write!(s, "GET /g/{grant}/t/{file} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    };
    get(&mut h, "hot.m4s");
    let mut body = vec![0u8; read_head(&mut h)];
    h.read_exact(&mut body).unwrap();
    assert!(body == hot);
    let (inline0, splice0) = metrics.body_paths();
    assert!(inline0 >= 1, "the warm hot file went out inline");
    assert_eq!(splice0, 0, "nothing was cold yet");

    // Cold: drop the cold files' pages, then ask for all of them without reading the answers.
    for n in 0..COLD {
        let f = File::open(cache.root.join(format!("t/cold-{n}.m4s"))).unwrap();
        sys::drop_cached(f.as_fd()).unwrap();
        assert!(
            !sys::resident(f.as_fd(), 0, COLD_BYTES as u64).unwrap(),
            "cold-{n} still cached"
        );
    }
    let mut cold: Vec<TcpStream> = (0..COLD)
        .map(|n| {
            let mut s = connect();
            get(&mut s, &format!("cold-{n}.m4s"));
            s
        })
        .collect();
    // The cold responses are in progress (their clients have not read a byte) while the hot
    // connection keeps being answered from the same, single serving thread.
    for _ in 0..20 {
        get(&mut h, "hot.m4s");
        let mut body = vec![0u8; read_head(&mut h)];
        h.read_exact(&mut body).unwrap();
        assert!(body == hot);
    }
    // Now the cold clients read everything: every byte right.
    for (n, s) in cold.iter_mut().enumerate() {
        let len = read_head(s);
        assert_eq!(len, COLD_BYTES);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        assert!(body == content(n, COLD_BYTES), "cold-{n} bytes differ");
    }
    let (inline2, splice2) = metrics.body_paths();
    assert!(
        splice2 >= COLD as u64,
        "each cold response's first range went through io-wq: {splice2}"
    );
    assert!(
        inline2 > inline0 + 20,
        "hot ranges stayed inline: {inline0} -> {inline2}"
    );
    server.shutdown();
    server.wait().unwrap();
}
