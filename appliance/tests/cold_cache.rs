//! The io_uring backend never reads the disk on its serving thread: a file range that is not in
//! the page cache goes through io-wq (`SPLICE`), a resident one goes out with an inline
//! `sendfile`. Served from a cold page cache (`posix_fadvise(DONTNEED)` first) through real
//! sockets, with one serving thread, while another connection's requests keep being answered.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appliance::cache::Store;
use appliance::conn::Timeouts;
use appliance::io::sys;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::grant::{sign, Claims, KeyRing, SigningKey, Verifier};

const COLD: usize = 4;
const COLD_BYTES: usize = 24 << 20;

fn claims() -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        iss: "test".into(),
        aud: vec!["c".into()],
        sub: "s".into(),
        nbf: None,
        iat: now - 10,
        exp: now + 600,
        prefix: "/t/".into(),
        renditions: None,
        client: None,
        jti: "j".into(),
        scope: Default::default(),
    }
}

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 12) ^ seed) as u8)
        .collect()
}

/// Reads one response head; returns the Content-Length.
fn read_head(s: &mut TcpStream) -> usize {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => panic!("closed mid-head: {other:?} after {head:?}"),
        }
    }
    let text = String::from_utf8(head).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cold_ranges_are_read_off_the_serving_thread_while_hot_requests_are_answered() {
    // On a disk file system beside the build (a tmpfs page cannot be dropped).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = dir.path().join("d");
    std::fs::create_dir_all(root.join("t")).unwrap();
    let hot = content(99, 300_000);
    std::fs::write(root.join("t/hot.m4s"), &hot).unwrap();
    for n in 0..COLD {
        let mut f = File::create(root.join(format!("t/cold-{n}.m4s"))).unwrap();
        f.write_all(&content(n, COLD_BYTES)).unwrap();
        f.sync_all().unwrap();
    }
    let key = SigningKey::from_seed("k", [3; 32]).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("k", &key.public_key_pem()).unwrap();
    let grant = sign(&key, &claims()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let svc = Arc::new(Service::new(
        ServiceConfig {
            id: "cold".into(),
            access_log_every: 0,
        },
        Verifier::new(ring, "c"),
        Arc::new(Store::open(std::slice::from_ref(&root), Some(1 << 30)).unwrap()),
        metrics.clone(),
    ));
    let server = server::start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: None,
            threads: 1,
            backend: BackendChoice::Uring,
            max_connections: 100,
            timeouts: Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(30),
            },
            drain_timeout: Duration::from_secs(5),
            handle_signals: false,
            tls: None,
        },
        svc,
        None,
    )
    .expect("io_uring backend starts");
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
        let f = File::open(root.join(format!("t/cold-{n}.m4s"))).unwrap();
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
