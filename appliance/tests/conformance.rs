//! The conformance suite: real sockets on 127.0.0.1 against a real server, once per backend
//! (epoll + sendfile, io_uring). Ranges, multi-range, conditionals, HEAD, keep-alive, pipelining,
//! errors, limits, grants, traversal, timeouts, connection limit, drain, admin endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appliance::cache::Store;
use appliance::conn::Timeouts;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, Running, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::grant::{sign, Claims, KeyRing, SigningKey, Verifier};

const CLUSTER: &str = "isp-a";

struct Fixture {
    _dir: tempfile::TempDir,
    key: SigningKey,
    seg: Vec<u8>,
    server: Option<Running>,
    addr: SocketAddr,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(prefix: &str) -> Claims {
    Claims {
        iss: "test".into(),
        aud: vec![CLUSTER.into()],
        sub: "session-1".into(),
        nbf: None,
        iat: now() - 10,
        exp: now() + 600,
        prefix: prefix.into(),
        renditions: None,
        client: None,
        jti: "j1".into(),
        scope: Default::default(),
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn start_with(backend: BackendChoice, max_connections: usize, header_timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d1 = dir.path().join("d1");
    let d2 = dir.path().join("d2");
    let seg: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    write(&d1, "tears/master.m3u8", b"#EXTM3U\n");
    write(&d1, "tears/v360/seg-1.m4s", &seg);
    write(&d2, "tears/v360/init.mp4", b"init-bytes");
    write(&d2, "tears/v720/seg-1.m4s", b"720p");
    write(&d2, "tears/empty.vtt", b"");
    write(&d2, "other/master.m3u8", b"#EXTM3U other\n");
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    let key = SigningKey::from_seed("k1", [7; 32]).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("k1", &key.public_key_pem()).unwrap();
    let store = Arc::new(Store::open(&[d1, d2], Some(1 << 30)).unwrap());
    let metrics = Arc::new(Metrics::default());
    let svc = Arc::new(Service::new(
        ServiceConfig {
            id: "oca-test-1".into(),
            access_log_every: 1,
        },
        Verifier::new(ring, CLUSTER),
        store,
        metrics,
    ));
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        threads: 2,
        backend,
        max_connections,
        timeouts: Timeouts {
            header: header_timeout,
            idle: Duration::from_secs(30),
        },
        drain_timeout: Duration::from_secs(10),
        handle_signals: false,
        tls: None,
    };
    let server = server::start(cfg, svc, None).unwrap();
    let addr = server.local_addr;
    Fixture {
        _dir: dir,
        key,
        seg,
        server: Some(server),
        addr,
    }
}

fn start(backend: BackendChoice) -> Fixture {
    start_with(backend, 10_000, Duration::from_secs(10))
}

impl Fixture {
    fn grant(&self, prefix: &str) -> String {
        sign(&self.key, &claims(prefix)).unwrap()
    }

    fn path(&self, file: &str) -> String {
        format!("/g/{}/tears/{file}", self.grant("/tears/"))
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    fn admin(&self, path: &str) -> Resp {
        let a = self.server.as_ref().unwrap().admin_addr.unwrap();
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        read_resp(&mut s, false).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            let _ = s.wait();
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `None` when the connection closed before any byte.
fn read_resp(s: &mut TcpStream, head_only: bool) -> Option<Resp> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => {
                assert!(head.is_empty(), "connection closed mid-head: {head:?}");
                return None;
            }
            Ok(_) => head.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut r = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = r.h("Content-Length").map_or(0, |v| v.parse().unwrap());
    if !head_only && status != 304 && status != 204 {
        r.body = vec![0; len];
        s.read_exact(&mut r.body).unwrap();
    }
    Some(r)
}

fn get(f: &Fixture, path: &str, extra: &str) -> Resp {
    let mut s = f.connect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
    read_resp(&mut s, false).unwrap()
}

fn assert_closed(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return,
            Ok(n) => panic!("expected close, got {:?}", String::from_utf8_lossy(&b[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("expected close, got {e}"),
        }
    }
}

fn full_get_and_common_headers(b: BackendChoice) {
    let f = start(b);
    let r = get(&f, &f.path("v360/seg-1.m4s"), "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, f.seg);
    assert_eq!(r.h("Content-Type"), Some("video/mp4"));
    assert_eq!(r.h("Accept-Ranges"), Some("bytes"));
    assert_eq!(r.h("Outpost-Appliance"), Some("oca-test-1"));
    assert_eq!(r.h("Access-Control-Allow-Origin"), Some("*"));
    let expose = r.h("Access-Control-Expose-Headers").unwrap();
    for h in [
        "Content-Range",
        "Content-Length",
        "Accept-Ranges",
        "ETag",
        "Outpost-Appliance",
    ] {
        assert!(expose.contains(h), "{expose}");
    }
    assert!(r.h("ETag").unwrap().starts_with('"'));
    assert!(httpdate::parse_http_date(r.h("Date").unwrap()).is_ok());
    assert!(httpdate::parse_http_date(r.h("Last-Modified").unwrap()).is_ok());
    assert!(r.h("Cache-Control").unwrap().contains("immutable"));
    let m = get(&f, &f.path("master.m3u8"), "");
    assert_eq!(m.status, 200);
    assert_eq!(m.body, b"#EXTM3U\n");
    assert_eq!(m.h("Content-Type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(m.h("Cache-Control"), Some("public, max-age=60"));
    // A file on the second drive, and an empty file.
    assert_eq!(get(&f, &f.path("v360/init.mp4"), "").body, b"init-bytes");
    let e = get(&f, &f.path("empty.vtt"), "");
    assert_eq!((e.status, e.body.len()), (200, 0));
    assert_eq!(e.h("Content-Type"), Some("text/vtt"));
}

fn head_and_keep_alive(b: BackendChoice) {
    let f = start(b);
    let mut s = f.connect();
    let p = f.path("v360/seg-1.m4s");
    write!(s, "HEAD {p} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_resp(&mut s, true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.h("Content-Length"), Some("300000"));
    for _ in 0..3 {
        write!(s, "GET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\n\r\n").unwrap();
        let r = read_resp(&mut s, false).unwrap();
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &f.seg[..4]);
    }
    write!(
        s,
        "GET {p} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_resp(&mut s, false).unwrap();
    assert_eq!(r.h("Connection"), Some("close"));
    assert_closed(&mut s);
    // HTTP/1.0 closes by default.
    let mut s = f.connect();
    write!(s, "GET {p} HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut s, false).unwrap().body, f.seg);
    assert_closed(&mut s);
}

fn ranges(b: BackendChoice) {
    let f = start(b);
    let p = f.path("v360/seg-1.m4s");
    let len = f.seg.len();
    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, len - 1),
        ("bytes=-500", len - 500, len - 1),
        ("bytes=-1000000", 0, len - 1),
        ("bytes=299990-400000", 299_990, len - 1),
    ] {
        let r = get(&f, &p, &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.h("Content-Range").unwrap(),
            format!("bytes {first}-{last}/{len}")
        );
        assert_eq!(r.body, &f.seg[first..=last], "{range}");
    }
    for range in ["bytes=300000-", "bytes=400000-500000", "bytes=-0"] {
        let r = get(&f, &p, &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.h("Content-Range").unwrap(), format!("bytes */{len}"));
    }
    // Invalid or other-unit ranges are ignored.
    for range in ["bytes=5-1", "items=0-1", "bytes=abc"] {
        let r = get(&f, &p, &format!("Range: {range}\r\n"));
        assert_eq!((r.status, r.body.len()), (200, len), "{range}");
    }
    // HEAD ignores Range.
    let mut s = f.connect();
    write!(
        s,
        "HEAD {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_resp(&mut s, true).unwrap().status, 200);
}

fn multi_range(b: BackendChoice) {
    let f = start(b);
    let p = f.path("v360/seg-1.m4s");
    let r = get(&f, &p, "Range: bytes=0-9, 100-199, -5\r\n");
    assert_eq!(r.status, 206);
    let ct = r.h("Content-Type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let body = r.body.clone();
    let delim = format!("\r\n--{boundary}");
    let text_parts: Vec<&[u8]> = split(&body, delim.as_bytes());
    // Leading empty part, three parts, closing "--\r\n".
    assert_eq!(text_parts.len(), 5, "{}", String::from_utf8_lossy(&body));
    let len = f.seg.len();
    for (part, (a, z)) in text_parts[1..4]
        .iter()
        .zip([(0, 9), (100, 199), (len - 5, len - 1)])
    {
        let sep = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&part[..sep]);
        assert!(head.contains("Content-Type: video/mp4"), "{head}");
        assert!(
            head.contains(&format!("Content-Range: bytes {a}-{z}/{len}")),
            "{head}"
        );
        assert_eq!(&part[sep + 4..], &f.seg[a..=z]);
    }
    assert_eq!(text_parts[4], b"--\r\n");
    // Ranges adding up past the file: whole body (CVE-2011-3192 shape).
    let r = get(&f, &p, "Range: bytes=0-,0-,0-\r\n");
    assert_eq!((r.status, r.body.len()), (200, len));
    // Too many ranges: whole body.
    let many: Vec<String> = (0..40).map(|i| format!("{i}-{i}")).collect();
    let r = get(&f, &p, &format!("Range: bytes={}\r\n", many.join(",")));
    assert_eq!(r.status, 200);
}

fn split<'a>(hay: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            out.push(&hay[start..i]);
            i += needle.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&hay[start..]);
    out
}

fn conditionals(b: BackendChoice) {
    let f = start(b);
    let p = f.path("v360/seg-1.m4s");
    let r = get(&f, &p, "");
    let etag = r.h("ETag").unwrap().to_owned();
    let lm = r.h("Last-Modified").unwrap().to_owned();
    let nm = get(&f, &p, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((nm.status, nm.body.len()), (304, 0));
    assert_eq!(nm.h("ETag"), Some(etag.as_str()));
    assert_eq!(
        get(&f, &p, &format!("If-Modified-Since: {lm}\r\n")).status,
        304
    );
    assert_eq!(get(&f, &p, "If-None-Match: \"other\"\r\n").status, 200);
    assert_eq!(
        get(
            &f,
            &p,
            "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        )
        .status,
        200
    );
    let ir = get(&f, &p, &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"));
    assert_eq!((ir.status, ir.body.len()), (206, 10));
    let ir = get(&f, &p, "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n");
    assert_eq!((ir.status, ir.body.len()), (200, f.seg.len()));
    let ir = get(&f, &p, &format!("Range: bytes=0-9\r\nIf-Range: {lm}\r\n"));
    assert_eq!(ir.status, 206);
    assert_eq!(get(&f, &p, "If-Match: \"other\"\r\n").status, 412);
    assert_eq!(get(&f, &p, &format!("If-Match: {etag}\r\n")).status, 200);
    assert_eq!(
        get(
            &f,
            &p,
            "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        )
        .status,
        412
    );
}

fn pipelining(b: BackendChoice) {
    let f = start(b);
    let mut s = f.connect();
    let p = f.path("v360/seg-1.m4s");
    let m = f.path("master.m3u8");
    let batch = format!(
        "GET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-4\r\n\r\nGET {m} HTTP/1.1\r\nHost: t\r\n\r\nHEAD {p} HTTP/1.1\r\nHost: t\r\n\r\nGET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=-3\r\n\r\n"
    );
    s.write_all(batch.as_bytes()).unwrap();
    let r1 = read_resp(&mut s, false).unwrap();
    assert_eq!((r1.status, r1.body.as_slice()), (206, &f.seg[..5]));
    let r2 = read_resp(&mut s, false).unwrap();
    assert_eq!(r2.body, b"#EXTM3U\n");
    let r3 = read_resp(&mut s, true).unwrap();
    assert_eq!(r3.status, 200);
    let r4 = read_resp(&mut s, false).unwrap();
    assert_eq!(r4.body, &f.seg[f.seg.len() - 3..]);
    // Byte-at-a-time delivery of a request works too.
    let req = format!("GET {m} HTTP/1.1\r\nHost: t\r\n\r\n");
    for byte in req.as_bytes() {
        s.write_all(&[*byte]).unwrap();
    }
    assert_eq!(read_resp(&mut s, false).unwrap().status, 200);
}

fn errors_and_limits(b: BackendChoice) {
    let f = start(b);
    let p = f.path("master.m3u8");
    for (req, status) in [
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"), 400),
        (format!("GET {p} HTTP/1.1\nHost: t\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.1\r\nHost : t\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.1\r\n\r\n"), 400),
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"), 400),
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: zstd9\r\n\r\n"), 501),
        (format!("GET {p} HTTP/3.0\r\nHost: t\r\n\r\n"), 505),
        (format!("GET {p} HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "a".repeat(20_000)), 431),
        (format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)), 414),
    ] {
        let mut s = f.connect();
        s.write_all(req.as_bytes()).unwrap();
        let r = read_resp(&mut s, false).unwrap();
        assert_eq!(r.status, status, "{}", &req[..req.len().min(120)]);
        assert_eq!(r.h("Connection"), Some("close"));
        assert!(String::from_utf8_lossy(&r.body).starts_with(&status.to_string()));
        assert_closed(&mut s);
    }
    // A smuggled second request after CL+TE is never answered.
    let mut s = f.connect();
    let smuggle = format!(
        "GET {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET {p} HTTP/1.1\r\nHost: t\r\n\r\n"
    );
    s.write_all(smuggle.as_bytes()).unwrap();
    assert_eq!(read_resp(&mut s, false).unwrap().status, 400);
    assert_closed(&mut s);
    let mut s = f.connect();
    write!(s, "POST {p} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_resp(&mut s, false).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.h("Allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(get(&f, "/tears/master.m3u8", "").status, 404);
    let r = get(&f, &f.path("v360/missing.m4s"), "");
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("/tears/v360/missing.m4s"));
}

fn grants(b: BackendChoice) {
    let f = start(b);
    let refused = |path: &str, code: &str| {
        let r = get(&f, path, "");
        assert_eq!(r.status, 403, "{path}");
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(body.contains(code), "{code} not in {body}");
        assert!(r.h("Outpost-Appliance").is_some());
    };
    let mut c = claims("/tears/");
    c.exp = now() - 3600;
    c.iat = now() - 7200;
    refused(
        &format!("/g/{}/tears/master.m3u8", sign(&f.key, &c).unwrap()),
        "expired",
    );
    let mut c = claims("/tears/");
    c.aud = vec!["isp-b".into()];
    refused(
        &format!("/g/{}/tears/master.m3u8", sign(&f.key, &c).unwrap()),
        "wrong_audience",
    );
    let other = SigningKey::from_seed("k1", [9; 32]).unwrap();
    refused(
        &format!(
            "/g/{}/tears/master.m3u8",
            sign(&other, &claims("/tears/")).unwrap()
        ),
        "bad_signature",
    );
    let unknown = SigningKey::from_seed("k2", [9; 32]).unwrap();
    refused(
        &format!(
            "/g/{}/tears/master.m3u8",
            sign(&unknown, &claims("/tears/")).unwrap()
        ),
        "unknown_key",
    );
    refused(
        &format!("/g/{}/other/master.m3u8", f.grant("/tears/")),
        "path_not_covered",
    );
    let mut c = claims("/tears/");
    c.renditions = Some(vec!["v360".into()]);
    let g = sign(&f.key, &c).unwrap();
    assert_eq!(
        get(&f, &format!("/g/{g}/tears/v360/init.mp4"), "").status,
        200
    );
    refused(
        &format!("/g/{g}/tears/v720/seg-1.m4s"),
        "rendition_not_allowed",
    );
    let mut c = claims("/tears/");
    c.client = Some("203.0.113.0/24".parse().unwrap());
    refused(
        &format!("/g/{}/tears/master.m3u8", sign(&f.key, &c).unwrap()),
        "client_mismatch",
    );
    let mut c = claims("/tears/");
    c.client = Some("127.0.0.0/8".parse().unwrap());
    assert_eq!(
        get(
            &f,
            &format!("/g/{}/tears/master.m3u8", sign(&f.key, &c).unwrap()),
            ""
        )
        .status,
        200
    );
    refused("/g/not-a-grant/tears/master.m3u8", "malformed");
    // Traversal in every encoding: refused before any file is opened.
    let g = f.grant("/tears/");
    for bad in [
        "/tears/../secret",
        "/tears/%2e%2e/%2e%2e/secret",
        "/tears/..%2fsecret",
        "/tears/..%2Fsecret",
        "/tears/%2E%2E/secret",
        "/tears/..%5csecret",
        "/tears/a%00b",
        "/tears//master.m3u8",
        "/tears/%252e%252e/secret",
        "/tears/./master.m3u8",
    ] {
        let r = get(&f, &format!("/g/{g}{bad}"), "");
        assert_eq!(r.status, 403, "{bad}");
        assert!(!String::from_utf8_lossy(&r.body).contains("outside"));
    }
    // The grant is checked once per token, then cached.
    let before = metric(&f, "outpost_appliance_grant_verifications_total");
    let mut c = claims("/tears/");
    c.jti = "fresh-session".into();
    let p = format!("/g/{}/tears/master.m3u8", sign(&f.key, &c).unwrap());
    for _ in 0..5 {
        assert_eq!(get(&f, &p, "").status, 200);
    }
    assert_eq!(
        metric(&f, "outpost_appliance_grant_verifications_total"),
        before + 1.0
    );
    assert!(
        metric(
            &f,
            "outpost_appliance_grant_refusals_total{reason=\"expired\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &f,
            "outpost_appliance_grant_refusals_total{reason=\"malformed\"}"
        ) >= 10.0
    );
}

fn metric(f: &Fixture, name: &str) -> f64 {
    let m = f.admin("/metrics");
    let text = String::from_utf8(m.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .parse()
        .unwrap()
}

fn preflight(b: BackendChoice) {
    let f = start(b);
    let mut s = f.connect();
    write!(
        s,
        "OPTIONS {} HTTP/1.1\r\nHost: t\r\nOrigin: http://player.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n",
        f.path("v360/seg-1.m4s")
    )
    .unwrap();
    let r = read_resp(&mut s, false).unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.h("Access-Control-Allow-Origin"), Some("*"));
    assert!(r
        .h("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Range"));
    assert!(r.h("Access-Control-Allow-Methods").unwrap().contains("GET"));
    assert!(r.h("Access-Control-Max-Age").is_some());
}

fn header_timeout_and_connection_limit(b: BackendChoice) {
    let f = start_with(b, 3, Duration::from_millis(500));
    // Slowloris: a head that never ends is cut off.
    let mut s = f.connect();
    s.write_all(b"GET /g/x/t/f HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.write_all(b"X-Slow: 1\r\n");
    }
    assert_closed(&mut s);
    assert!(metric(&f, "outpost_appliance_timeouts_total") >= 1.0);
    // Connection limit: with three open, a fourth is closed at once.
    let mut held: Vec<TcpStream> = (0..3).map(|_| f.connect()).collect();
    // Make sure all three are accepted and counted.
    for s in &mut held {
        write!(
            s,
            "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
            f.path("master.m3u8")
        )
        .unwrap();
        assert_eq!(read_resp(s, false).unwrap().status, 200);
    }
    let mut extra = f.connect();
    let _ = write!(
        extra,
        "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
        f.path("master.m3u8")
    );
    assert_closed(&mut extra);
    assert!(metric(&f, "outpost_appliance_refused_connections_total") >= 1.0);
    drop(held);
}

fn drain_finishes_in_flight(b: BackendChoice) {
    let mut f = start(b);
    let mut s = f.connect();
    let p = f.path("v360/seg-1.m4s");
    write!(s, "GET {p} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // Read only the first byte so the response is in flight, then drain.
    let mut first = [0u8; 1];
    s.read_exact(&mut first).unwrap();
    let idle = f.connect();
    let server = f.server.take().unwrap();
    assert!(server.admin_addr.is_some());
    server.shutdown();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let text_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(
        &rest[text_end + 4..],
        f.seg.as_slice(),
        "in-flight response completed"
    );
    server.wait().unwrap();
    let mut idle = idle;
    assert_closed(&mut idle);
    assert!(
        TcpStream::connect(f.addr).is_err(),
        "still accepting after drain"
    );
}

fn admin_endpoints(b: BackendChoice) {
    let f = start(b);
    assert_eq!(get(&f, &f.path("master.m3u8"), "").status, 200);
    assert_eq!(get(&f, &f.path("nope.m4s"), "").status, 404);
    assert_eq!(f.admin("/healthz").status, 200);
    assert_eq!(f.admin("/readyz").status, 200);
    let m = String::from_utf8(f.admin("/metrics").body).unwrap();
    for needle in [
        "outpost_appliance_requests_total{status=\"200\"}",
        "outpost_appliance_sent_bytes_total",
        "outpost_appliance_active_connections",
        "outpost_appliance_cache_hits_total",
        "outpost_appliance_cache_misses_total",
        "outpost_appliance_drive_used_bytes{drive=",
        "outpost_appliance_drive_healthy{drive=",
        "outpost_appliance_grant_refusals_total{reason=\"expired\"}",
        "outpost_appliance_request_duration_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(m.contains(needle), "{needle} missing");
    }
    assert!(metric(&f, "outpost_appliance_requests_total{status=\"200\"}") >= 1.0);
    assert!(metric(&f, "outpost_appliance_cache_misses_total") >= 1.0);
    assert!(metric(&f, "outpost_appliance_sent_bytes_total") > 8.0);
    let server = f.server.as_ref().unwrap();
    let backend = server.backend;
    assert!(m.contains(&format!(
        "outpost_appliance_info{{backend=\"{backend}\"}} 1"
    )));
    // A failed drive shows in metrics and its objects stop being served; others keep serving.
    server.shared().svc.store().fail(0);
    assert_eq!(get(&f, &f.path("v360/seg-1.m4s"), "").status, 404);
    assert_eq!(get(&f, &f.path("v360/init.mp4"), "").status, 200);
    let m = String::from_utf8(f.admin("/metrics").body).unwrap();
    assert!(m.contains("/d1\"} 0"), "{m}");
    assert_eq!(f.admin("/readyz").status, 200);
    server.shared().svc.store().fail(1);
    assert_eq!(f.admin("/readyz").status, 503);
}

macro_rules! suite {
    ($modname:ident, $backend:expr) => {
        mod $modname {
            use super::*;
            #[test]
            fn full_get_and_common_headers() {
                super::full_get_and_common_headers($backend)
            }
            #[test]
            fn head_and_keep_alive() {
                super::head_and_keep_alive($backend)
            }
            #[test]
            fn ranges() {
                super::ranges($backend)
            }
            #[test]
            fn multi_range() {
                super::multi_range($backend)
            }
            #[test]
            fn conditionals() {
                super::conditionals($backend)
            }
            #[test]
            fn pipelining() {
                super::pipelining($backend)
            }
            #[test]
            fn errors_and_limits() {
                super::errors_and_limits($backend)
            }
            #[test]
            fn grants() {
                super::grants($backend)
            }
            #[test]
            fn preflight() {
                super::preflight($backend)
            }
            #[test]
            fn header_timeout_and_connection_limit() {
                super::header_timeout_and_connection_limit($backend)
            }
            #[test]
            fn drain_finishes_in_flight() {
                super::drain_finishes_in_flight($backend)
            }
            #[test]
            fn admin_endpoints() {
                super::admin_endpoints($backend)
            }
        }
    };
}

suite!(epoll, BackendChoice::Epoll);
suite!(io_uring, BackendChoice::Uring);
