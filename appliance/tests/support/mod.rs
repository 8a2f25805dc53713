//! Set-up shared by the appliance's socket tests: a cache directory whose files live under the
//! title directory `t/`, a key ring with a grant for `/t/`, the service over them and a server
//! configuration on an ephemeral loopback port. Each test binary includes this module
//! (`mod support;`) and uses its own part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appliance::cache::Store;
use appliance::conn::Timeouts;
use appliance::metrics::Metrics;
use appliance::server::{BackendChoice, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::grant::{sign, Claims, KeyRing, SigningKey, Verifier};

/// A cache directory (`root`) inside a temporary directory removed on drop.
pub struct Cache {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Cache {
    /// In the system's temporary directory.
    pub fn new() -> Cache {
        Cache::with(tempfile::tempdir().unwrap())
    }

    /// Under `parent`: a disk file system when the test needs one (a tmpfs page cannot be
    /// dropped).
    pub fn new_in(parent: impl AsRef<Path>) -> Cache {
        Cache::with(tempfile::tempdir_in(parent).unwrap())
    }

    fn with(dir: tempfile::TempDir) -> Cache {
        let root = dir.path().join("d");
        std::fs::create_dir_all(root.join("t")).unwrap();
        Cache { dir, root }
    }

    /// Writes `t/<name>`.
    pub fn put(&self, name: &str, body: &[u8]) -> PathBuf {
        let path = self.root.join("t").join(name);
        std::fs::write(&path, body).unwrap();
        path
    }
}

/// Claims for everything under `/t/`, audience `c`, valid from ten seconds ago for ten minutes.
pub fn claims() -> Claims {
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

/// A key ring holding key `k` made from `seed`, and a grant for [`claims`] signed with it.
pub fn grant(seed: u8) -> (KeyRing, String) {
    let key = SigningKey::from_seed("k", [seed; 32]).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("k", &key.public_key_pem()).unwrap();
    (ring, sign(&key, &claims()).unwrap())
}

/// The service of appliance `id` (audience `c`) over `cache`, counting into `metrics`.
pub fn service(id: &str, ring: KeyRing, cache: &Cache, metrics: Arc<Metrics>) -> Service {
    Service::new(
        ServiceConfig {
            id: id.into(),
            access_log_every: 0,
        },
        Verifier::new(ring, "c"),
        Arc::new(Store::open(std::slice::from_ref(&cache.root), Some(1 << 30)).unwrap()),
        metrics,
    )
}

/// Reads one response head from `s` byte by byte (so nothing past it is consumed), through the
/// blank line; panics if the connection ends first.
pub fn read_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read as _;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => panic!("closed mid-head: {other:?} after {head:?}"),
        }
    }
    String::from_utf8(head).expect("an ASCII head")
}

/// The `Content-Length` of a response head.
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .trim()
        .parse()
        .expect("a number")
}

/// One serving thread on `backend`, an ephemeral loopback port, no admin listener, no TLS, no
/// signal handling; 10 s header timeout, `idle` keep-alive timeout, `drain` deadline.
pub fn server_config(backend: BackendChoice, idle: Duration, drain: Duration) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        threads: 1,
        backend,
        max_connections: 100,
        timeouts: Timeouts {
            header: Duration::from_secs(10),
            idle,
        },
        drain_timeout: drain,
        handle_signals: false,
        tls: None,
    }
}
