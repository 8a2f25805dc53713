//! The TLS listener with real clients: curl over HTTPS against a self-signed certificate made by
//! openssl in the test (ALPN http/1.1, full and ranged GETs, a grant refusal), and a certificate
//! reload that swaps the certificate served to new connections.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appliance::cache::Store;
use appliance::conn::Timeouts;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, ServerConfig, TlsConfig};
use appliance::service::{Service, ServiceConfig};
use appliance::tls::CertStore;
use protocol::grant::{sign, Claims, KeyRing, SigningKey, Verifier};

fn self_signed(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
        ])
        .arg(format!("/CN={name}"))
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl is not installed: run ./scripts/test (scripts/install-deps)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(args)
        .output()
        .expect("curl is not installed: run ./scripts/test (scripts/install-deps)")
}

#[test]
#[ignore = "needs openssl and curl: run ./scripts/test"]
fn curl_over_tls_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    self_signed(&pki, "first");
    let ca1 = dir.path().join("ca1.pem");
    std::fs::copy(pki.join("cert.pem"), &ca1).unwrap();
    let cache = dir.path().join("cache");
    let seg: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::create_dir_all(cache.join("t/v")).unwrap();
    std::fs::write(cache.join("t/v/seg.m4s"), &seg).unwrap();
    let key = SigningKey::from_seed("k1", [3; 32]).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("k1", &key.public_key_pem()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: "t".into(),
        aud: vec!["c1".into()],
        sub: "s".into(),
        nbf: None,
        iat: now - 5,
        exp: now + 300,
        prefix: "/t/".into(),
        renditions: None,
        client: None,
        jti: "j".into(),
        scope: Default::default(),
    };
    let grant = sign(&key, &claims).unwrap();
    let store = Arc::new(Store::open(&[cache], Some(1 << 30)).unwrap());
    let svc = Arc::new(Service::new(
        ServiceConfig {
            id: "oca-tls".into(),
            access_log_every: 0,
        },
        Verifier::new(ring, "c1"),
        store,
        Arc::new(Metrics::default()),
    ));
    let certs = Arc::new(CertStore::open(&pki.join("cert.pem"), &pki.join("key.pem")).unwrap());
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        threads: 2,
        backend: BackendChoice::Epoll,
        max_connections: 1000,
        timeouts: Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        },
        drain_timeout: Duration::from_secs(5),
        handle_signals: false,
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            certs: certs.clone(),
        }),
    };
    let running = server::start(cfg, svc, None).unwrap();
    let tls = running.tls_addr.unwrap();
    let url = format!("https://{tls}/g/{grant}/t/v/seg.m4s");
    let ca1s = ca1.to_str().unwrap();
    let out = curl(&["-sS", "--fail", "--http1.1", "--cacert", ca1s, &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, seg);
    let out = curl(&[
        "-sS",
        "--fail",
        "--cacert",
        ca1s,
        "-r",
        "300000-300099",
        &url,
    ]);
    assert_eq!(out.stdout, &seg[300_000..300_100]);
    // ALPN: curl reports the negotiated protocol.
    let out = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        "--cacert",
        ca1s,
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 200");
    let out = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        ca1s,
        &url.replace("/t/v/", "/x/v/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    // Reload: a new certificate is served to new connections; the old CA no longer verifies.
    self_signed(&pki, "second");
    certs.reload().unwrap();
    let out = curl(&["-sS", "--fail", "--cacert", ca1s, &url]);
    assert!(!out.status.success(), "old CA still accepted after reload");
    let ca2 = pki.join("cert.pem");
    let out = curl(&["-sS", "--fail", "--cacert", ca2.to_str().unwrap(), &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, seg);
    // A broken file on reload keeps the current certificate.
    std::fs::write(pki.join("key.pem"), b"not a key").unwrap();
    assert!(certs.reload().is_err());
    let out = curl(&["-sS", "--fail", "--cacert", ca2.to_str().unwrap(), &url]);
    assert!(out.status.success());
    running.shutdown();
    running.wait().unwrap();
}
