//! The automatic fallback to epoll when io_uring is forbidden, as a container runtime's seccomp
//! profile or `kernel.io_uring_disabled=2` forbids it: this process installs a seccomp filter
//! that makes `io_uring_setup(2)` fail with `EPERM` (no privilege needed), then starts the real
//! server with the `auto` backend and fetches a real file through a real socket; `io_uring`
//! asked for explicitly fails with an error naming the cause.
//!
//! The filter cannot be removed, so this binary holds this one test only: every other test
//! runs in processes where io_uring is allowed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use appliance::io::sys;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, ServerConfig, ServerError};

mod support;

fn config(backend: BackendChoice) -> ServerConfig {
    support::server_config(backend, Duration::from_secs(30), Duration::from_secs(5))
}

#[test]
fn with_io_uring_forbidden_auto_serves_on_epoll_and_io_uring_is_refused_by_name() {
    let cache = support::Cache::new();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + (i >> 9)) as u8).collect();
    cache.put("seg.m4s", &body);
    let (ring, grant) = support::grant(5);
    let svc = Arc::new(support::service(
        "fallback",
        ring,
        &cache,
        Arc::new(Metrics::default()),
    ));

    // Before the filter, on this machine, the probe succeeds: the test would prove nothing on
    // a kernel without io_uring, so it says so instead of passing.
    appliance::io::uring::probe().expect("io_uring available before the filter");
    sys::forbid_io_uring().expect("seccomp filter installed");
    let e = appliance::io::uring::probe().expect_err("io_uring forbidden after the filter");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "probe error under the filter: {e}"
    );

    // Explicit io_uring: refused, naming the backend and the cause.
    match server::start(config(BackendChoice::Uring), svc.clone(), None) {
        Err(e @ ServerError::UringUnavailable(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("io_uring"), "{msg}");
            assert!(msg.contains("not permitted"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(r) => panic!("io_uring started under the filter: {r:?}"),
    }

    // Auto: epoll, and a real request served whole.
    let server = server::start(config(BackendChoice::Auto), svc, None).expect("auto starts");
    assert_eq!(server.backend, "epoll");
    let mut s = TcpStream::connect(server.local_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /g/{grant}/t/seg.m4s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&resp[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 200000\r\n"), "{head}");
    assert!(resp[split..] == body[..], "body differs");
    server.shutdown();
    server.wait().unwrap();
}
