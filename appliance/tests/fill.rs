//! Fill between real appliances on 127.0.0.1: each source is a real appliance (its own cache
//! directory, its own server) serving with fill grants; the filler runs on the filled appliance's
//! store while it serves. The catalog entries come from a test-local HTTP server that serves the
//! fixed entry texts at the control plane's catalog path (a fixture of that contract; the end to
//! end test with the real control plane is in the root package, `tests/fill_*.rs`).

use protocol::hex::encode as hex;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use appliance::agent::client::ControlPlane;
use appliance::cache::{Gate, Store, TitleState};
use appliance::conn::Timeouts;
use appliance::fill::{FillConfig, FillWindow, Filler, RemovalMode, RemovalPolicy};
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, Running, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::catalog::{
    CatalogEntry, FileEntry, Manifests, PackagingMode, Rendition, Tier, TrackKind,
};
use protocol::fill::{catalog_digest, FillPlan, FillSource, PlannedTitle, Removal, SourceTier};
use protocol::grant::{sign, Claims, KeyRing, Scope, SigningKey, Verifier};
use sha2::{Digest, Sha256};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key() -> SigningKey {
    SigningKey::from_seed("k1", [9; 32]).unwrap()
}

fn ring() -> KeyRing {
    let mut r = KeyRing::new();
    r.insert_pem("k1", &key().public_key_pem()).unwrap();
    r
}

fn grant(cluster: &str, title: &str, scope: Scope) -> String {
    sign(
        &key(),
        &Claims {
            iss: "test".into(),
            aud: vec![cluster.into()],
            sub: "fill:test".into(),
            nbf: None,
            iat: now() - 10,
            exp: now() + 600,
            prefix: format!("/{title}/"),
            renditions: None,
            client: None,
            jti: "j".into(),
            scope,
        },
    )
    .unwrap()
}

/// A packaged title: its files and its catalog entry text.
#[derive(Clone)]
struct Title {
    name: String,
    files: Vec<(String, Vec<u8>)>,
    catalog: String,
}

impl Title {
    fn new(name: &str, video_len: usize, seed: u32) -> Title {
        let video: Vec<u8> = (0..video_len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect();
        let audio: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(40_503).wrapping_add(seed)) as u8)
            .collect();
        let files = vec![
            ("master.m3u8".to_string(), b"#EXTM3U\n".to_vec()),
            ("manifest.mpd".to_string(), b"<MPD/>\n".to_vec()),
            ("v1/video.mp4".to_string(), video),
            ("a1/audio.mp4".to_string(), audio),
        ];
        let entry = CatalogEntry {
            version: 1,
            title: name.into(),
            duration_ms: 10_000,
            mode: PackagingMode::OnDemand,
            segment_duration_ms: 4000,
            renditions: vec![
                Rendition {
                    id: "v1".into(),
                    kind: TrackKind::Video,
                    codec: "avc1.64001e".into(),
                    bandwidth: 1_000_000,
                    average_bandwidth: 900_000,
                    width: Some(640),
                    height: Some(360),
                    frame_rate: Some("25".into()),
                    sample_rate: None,
                    channels: None,
                    language: None,
                    tier: Some(Tier::Sd),
                    key_id: None,
                    role: None,
                    files: vec!["v1/video.mp4".into()],
                },
                Rendition {
                    id: "a1".into(),
                    kind: TrackKind::Audio,
                    codec: "mp4a.40.2".into(),
                    bandwidth: 128_000,
                    average_bandwidth: 128_000,
                    width: None,
                    height: None,
                    frame_rate: None,
                    sample_rate: Some(48_000),
                    channels: Some(2),
                    language: Some("und".into()),
                    tier: None,
                    key_id: None,
                    role: None,
                    files: vec!["a1/audio.mp4".into()],
                },
            ],
            manifests: Manifests {
                hls: "master.m3u8".into(),
                dash: "manifest.mpd".into(),
            },
            files: files
                .iter()
                .map(|(p, d)| FileEntry {
                    path: p.clone(),
                    size: d.len() as u64,
                    sha256: hex(&Sha256::digest(d)),
                })
                .collect(),
            encryption: None,
        };
        entry.validate().unwrap();
        Title {
            name: name.into(),
            files,
            catalog: entry.to_json(),
        }
    }

    fn file(&self, path: &str) -> &[u8] {
        &self.files.iter().find(|(p, _)| p == path).unwrap().1
    }

    fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, d)| d.len() as u64).sum()
    }

    /// Copies the title into a cache directory by hand (with its catalog.json).
    fn place(&self, root: &Path) {
        for (p, d) in &self.files {
            let f = root.join(&self.name).join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, d).unwrap();
        }
        std::fs::write(root.join(&self.name).join("catalog.json"), &self.catalog).unwrap();
    }

    fn planned(&self, sources: Vec<FillSource>, urgent: bool) -> PlannedTitle {
        PlannedTitle {
            title: self.name.clone(),
            catalog_sha256: catalog_digest(&self.catalog),
            bytes: self.bytes(),
            urgent,
            reason: "test".into(),
            sources,
        }
    }
}

/// A real appliance on 127.0.0.1 with one cache directory.
struct App {
    id: String,
    cluster: String,
    dir: tempfile::TempDir,
    svc: Arc<Service>,
    server: Option<Running>,
    addr: SocketAddr,
}

impl App {
    fn start(id: &str, cluster: &str, titles: &[&Title]) -> App {
        let dir = tempfile::tempdir().unwrap();
        for t in titles {
            t.place(dir.path());
        }
        App::start_in(id, cluster, dir)
    }

    fn start_in(id: &str, cluster: &str, dir: tempfile::TempDir) -> App {
        let store = Arc::new(
            Store::open_with(
                &[dir.path().to_path_buf()],
                Some(1 << 34),
                Gate::RequireCatalog,
            )
            .unwrap(),
        );
        let svc = Arc::new(Service::new(
            ServiceConfig {
                id: id.into(),
                access_log_every: 0,
            },
            Verifier::new(ring(), cluster),
            store,
            Arc::new(Metrics::default()),
        ));
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: None,
            threads: 1,
            backend: BackendChoice::Epoll,
            max_connections: 1000,
            timeouts: Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(30),
            },
            drain_timeout: Duration::from_millis(1),
            handle_signals: false,
            tls: None,
        };
        let server = server::start(cfg, svc.clone(), None).unwrap();
        let addr = server.local_addr;
        App {
            id: id.into(),
            cluster: cluster.into(),
            dir,
            svc,
            server: Some(server),
            addr,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn store(&self) -> &Arc<Store> {
        self.svc.store()
    }

    fn metrics(&self) -> &Arc<Metrics> {
        self.svc.metrics()
    }

    /// This appliance as a fill source of `title` (at `base`, default its own address).
    fn source(&self, tier: SourceTier, title: &str) -> FillSource {
        self.source_at(tier, title, self.addr)
    }

    fn source_at(&self, tier: SourceTier, title: &str, addr: SocketAddr) -> FillSource {
        FillSource::Appliance {
            tier,
            appliance: self.id.clone(),
            cluster: self.cluster.clone(),
            base_url: format!("http://{addr}"),
            grant: grant(&self.cluster, title, Scope::Fill),
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            s.wait().unwrap();
        }
    }

    fn held(&self, title: &str) -> bool {
        matches!(
            self.store().title_state(title),
            Some(TitleState::Complete(_))
        )
    }

    /// GET with a grant of `scope`: (status, body).
    fn get(&self, title: &str, path: &str, scope: Scope) -> (u16, Vec<u8>) {
        let g = grant(&self.cluster, title, scope);
        http_get(self.addr, &format!("/g/{g}/{title}/{path}"))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, out[at..].to_vec())
}

/// Serves catalog entry texts at `GET /v1/appliances/{id}/catalog/{title}` (bearer `secret`),
/// as the control plane does.
struct CatalogServer {
    url: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn catalog_server(titles: &[&Title]) -> CatalogServer {
    use axum::extract::{Path as P, State};
    use axum::http::{HeaderMap, StatusCode};
    let entries: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(
        titles
            .iter()
            .map(|t| (t.name.clone(), t.catalog.clone()))
            .collect(),
    ));
    async fn entry(
        State(e): State<Arc<Mutex<HashMap<String, String>>>>,
        P((_id, title)): P<(String, String)>,
        h: HeaderMap,
    ) -> (StatusCode, String) {
        if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer secret") {
            return (StatusCode::UNAUTHORIZED, "unauthorized".into());
        }
        match e.lock().unwrap().get(&title) {
            Some(t) => (StatusCode::OK, t.clone()),
            None => (StatusCode::NOT_FOUND, "no such title".into()),
        }
    }
    let app = axum::Router::new()
        .route(
            "/v1/appliances/{id}/catalog/{title}",
            axum::routing::get(entry),
        )
        .with_state(entries.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    CatalogServer { url, _task: task }
}

fn filler(app: &App, cp: &CatalogServer, cfg: FillConfig) -> Filler {
    let client = ControlPlane::new(
        &cp.url,
        &app.id,
        "secret",
        Duration::from_secs(60),
        app.metrics().clone(),
    )
    .unwrap();
    Filler::new(
        app.store().clone(),
        app.metrics().clone(),
        Arc::new(client),
        cfg,
    )
    .unwrap()
}

fn always() -> FillConfig {
    FillConfig {
        window: FillWindow::Always,
        rate_bps: None,
        concurrency: 2,
        pace: false,
        s3: None,
        removal: RemovalPolicy::immediate(),
    }
}

fn plan(app: &App, titles: Vec<PlannedTitle>) -> FillPlan {
    FillPlan {
        appliance: app.id.clone(),
        cluster: app.cluster.clone(),
        plan_id: format!("p{}", titles.len()),
        generated_at: now(),
        refresh_secs: 60,
        titles,
        removals: vec![],
    }
}

/// A plan of `titles` that lists `removable` as removable (another copy at `src-9`).
fn plan_removing(app: &App, titles: Vec<PlannedTitle>, removable: &[&str]) -> FillPlan {
    FillPlan {
        removals: removable
            .iter()
            .map(|t| Removal {
                title: (*t).to_owned(),
                reason: "displaced".into(),
                kept_at: vec!["src-9".into()],
            })
            .collect(),
        ..plan(app, titles)
    }
}

fn assert_same_files(app: &App, t: &Title) {
    for (p, d) in &t.files {
        let got = std::fs::read(app.root().join(&t.name).join(p)).unwrap();
        assert!(got == *d, "{}/{p} differs", t.name);
    }
    assert_eq!(
        std::fs::read_to_string(app.root().join(&t.name).join("catalog.json")).unwrap(),
        t.catalog
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_reaches_the_embedded_appliance_through_the_exchange_tier() {
    let t = Title::new("film", 3_000_000, 1);
    let cp = catalog_server(&[&t]).await;
    let mut origin = App::start("origin-1", "origin", &[&t]);
    let exchange = App::start("ix-1", "exchange", &[]);
    let peer = App::start("isp-2", "isp", &[]);
    let embedded = App::start("isp-1", "isp", &[]);
    assert!(origin.held("film"));
    assert!(!embedded.held("film"));

    // The exchange fills from origin.
    let f = filler(&exchange, &cp, always());
    let r = f
        .pass(
            &plan(
                &exchange,
                vec![t.planned(vec![origin.source(SourceTier::Origin, "film")], false)],
            ),
            600,
        )
        .await;
    assert_eq!(r.filled, vec!["film".to_string()], "{r:?}");
    assert!(exchange.held("film"));
    assert_same_files(&exchange, &t);

    // Origin goes away: the embedded appliance can only get it from the exchange tier (its
    // peer does not hold it and answers 404).
    let origin_source = origin.source(SourceTier::Origin, "film");
    origin.stop();
    let f = filler(&embedded, &cp, always());
    let r = f
        .pass(
            &plan(
                &embedded,
                vec![t.planned(
                    vec![
                        peer.source(SourceTier::Peer, "film"),
                        exchange.source(SourceTier::Upstream, "film"),
                        origin_source,
                    ],
                    false,
                )],
            ),
            600,
        )
        .await;
    assert_eq!(r.filled, vec!["film".to_string()], "{r:?}");
    assert_same_files(&embedded, &t);
    let out = exchange.metrics().fill.bytes_out.load(Ordering::Relaxed);
    assert!(out >= t.bytes(), "exchange served {out} fill bytes");
    assert_eq!(peer.metrics().fill.bytes_out.load(Ordering::Relaxed), 0);
    let m = embedded.metrics();
    assert_eq!(m.fill.files_verified.load(Ordering::Relaxed), 4);
    assert_eq!(m.fill.bytes_in.load(Ordering::Relaxed), t.bytes());

    // The filled title is served to players; its catalog only to fill grants.
    let (st, body) = embedded.get("film", "v1/video.mp4", Scope::Play);
    assert_eq!(st, 200);
    assert!(body == t.file("v1/video.mp4"));
    assert_eq!(embedded.get("film", "catalog.json", Scope::Play).0, 403);
    let (st, body) = embedded.get("film", "catalog.json", Scope::Fill);
    assert_eq!(
        (st, String::from_utf8(body).unwrap()),
        (200, t.catalog.clone())
    );
    let held = embedded.store().held();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].catalog_sha256, catalog_digest(&t.catalog));
    let text = m.render(embedded.store(), "epoll", false);
    assert!(text.contains("outpost_appliance_titles_held 1"), "{text}");
    assert!(
        text.contains("outpost_appliance_fill_files_verified_total 4"),
        "{text}"
    );
}

/// A TCP proxy in front of a source that records every request head it forwards and cuts the
/// first connection (or every one) after `cut_after` body bytes (the source "dies" mid-body).
struct CuttingProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

fn cutting_proxy(upstream: SocketAddr, cut_after: usize, every: bool) -> CuttingProxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let reqs = requests.clone();
    std::thread::spawn(move || {
        for (n, client) in l.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let reqs = reqs.clone();
            std::thread::spawn(move || {
                let mut up = TcpStream::connect(upstream).unwrap();
                // Forward requests (recording them) in one thread...
                let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                let reqs2 = reqs.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match c2.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = u2.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => n,
                        };
                        reqs2
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        if u2.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
                // ...and responses back, cutting the first connection mid-body.
                let mut buf = [0u8; 16384];
                let mut seen: Vec<u8> = Vec::new();
                let mut budget: Option<usize> = None;
                loop {
                    let k = match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => k,
                    };
                    let mut chunk = &buf[..k];
                    if n == 0 || every {
                        if budget.is_none() {
                            seen.extend_from_slice(chunk);
                            if let Some(p) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                budget = Some(p + 4 + cut_after);
                            }
                        }
                        if let Some(b) = budget.as_mut() {
                            let take = chunk.len().min(*b);
                            chunk = &chunk[..take];
                            *b -= take;
                        }
                    }
                    if client.write_all(chunk).is_err() {
                        break;
                    }
                    if budget == Some(0) {
                        // The source "dies": both sides closed.
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = up.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    CuttingProxy { addr, requests }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fill_resumes_from_the_byte_where_it_stopped() {
    // Only the big file is missing, so the first request is for it.
    let t = Title::new("resume", 4_000_000, 2);
    let cp = catalog_server(&[&t]).await;
    let source = App::start("src-1", "ix", &[&t]);
    let target = App::start("isp-1", "isp", &[]);
    for (p, d) in &t.files {
        if p != "v1/video.mp4" {
            let f = target.root().join("resume").join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, d).unwrap();
        }
    }
    // Re-open the target's store so it indexes the hand-placed files (no catalog yet).
    let target_store =
        Arc::new(Store::open_with(&[target.root()], Some(1 << 34), Gate::RequireCatalog).unwrap());
    let cut = 1_234_567;
    let proxy = cutting_proxy(source.addr, cut, false);
    let metrics = Arc::new(Metrics::default());
    let client = ControlPlane::new(
        &cp.url,
        "isp-1",
        "secret",
        Duration::from_secs(60),
        metrics.clone(),
    )
    .unwrap();
    let f = Filler::new(
        target_store.clone(),
        metrics.clone(),
        Arc::new(client),
        always(),
    )
    .unwrap();
    let p = plan(
        &target,
        vec![t.planned(
            vec![source.source_at(SourceTier::Upstream, "resume", proxy.addr)],
            false,
        )],
    );
    let r = f.pass(&p, 0).await;
    assert_eq!(r.filled, vec!["resume".to_string()], "{r:?}");
    let reqs = proxy.requests.lock().unwrap().join("");
    let heads: Vec<&str> = reqs.split("GET ").filter(|s| !s.is_empty()).collect();
    assert_eq!(heads.len(), 2, "requests seen: {reqs}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("range:"),
        "{}",
        heads[0]
    );
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains(&format!("range: bytes={cut}-\r\n")),
        "second request: {}",
        heads[1]
    );
    // Only the missing bytes crossed twice: the first cut part and the rest.
    assert_eq!(
        metrics.fill.bytes_in.load(Ordering::Relaxed),
        t.file("v1/video.mp4").len() as u64
    );
    assert_eq!(
        std::fs::read(target.root().join("resume/v1/video.mp4")).unwrap(),
        t.file("v1/video.mp4")
    );
    assert!(matches!(
        target_store.title_state("resume"),
        Some(TitleState::Complete(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_byte_is_caught_by_sha256_and_the_next_source_used() {
    let t = Title::new("corrupt", 1_000_000, 3);
    let cp = catalog_server(&[&t]).await;
    // The bad source holds a copy with one byte flipped in the middle of the video (same
    // size: its own size check passes, so it serves it).
    let data = {
        let mut d = t.file("v1/video.mp4").to_vec();
        d[500_000] ^= 0x01;
        d
    };
    let bad_dir = tempfile::tempdir().unwrap();
    t.place(bad_dir.path());
    std::fs::write(bad_dir.path().join("corrupt/v1/video.mp4"), &data).unwrap();
    let bad = App::start_in("bad-1", "ix", bad_dir);
    assert!(bad.held("corrupt"));
    let good = App::start("good-1", "origin", &[&t]);
    let target = App::start("isp-1", "isp", &[]);
    let f = filler(&target, &cp, always());
    let r = f
        .pass(
            &plan(
                &target,
                vec![t.planned(
                    vec![
                        bad.source(SourceTier::Upstream, "corrupt"),
                        good.source(SourceTier::Origin, "corrupt"),
                    ],
                    false,
                )],
            ),
            0,
        )
        .await;
    assert_eq!(r.filled, vec!["corrupt".to_string()], "{r:?}");
    assert_same_files(&target, &t);
    let m = target.metrics();
    let text = m.render(target.store(), "epoll", false);
    assert!(
        text.contains("outpost_appliance_fill_verify_failures_total{source=\"bad-1\"} 1"),
        "{text}"
    );
    assert!(!text.contains("source=\"good-1\""), "{text}");
    // No partial file is left behind.
    let left: Vec<_> = std::fs::read_dir(target.root().join(".fill"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_is_not_served_before_all_its_files_are_verified() {
    let t = Title::new("gated", 2_000_000, 4);
    let cp = catalog_server(&[&t]).await;
    let source = App::start("src-1", "ix", &[&t]);
    let target = Arc::new(App::start("isp-1", "isp", &[]));
    // 8 Mb/s: the 2 MB video takes about 2 s, one file at a time.
    let cfg = FillConfig {
        rate_bps: Some(8_000_000),
        concurrency: 1,
        ..always()
    };
    let f = filler(&target, &cp, cfg);
    let p = plan(
        &target,
        vec![t.planned(vec![source.source(SourceTier::Upstream, "gated")], false)],
    );
    let probe = {
        let target = target.clone();
        std::thread::spawn(move || {
            // Until the title is complete every file answers 404, even those already in place.
            let mut saw_placed_but_hidden = false;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !target.held("gated") && Instant::now() < deadline {
                for path in [
                    "master.m3u8",
                    "manifest.mpd",
                    "a1/audio.mp4",
                    "v1/video.mp4",
                ] {
                    let placed = target
                        .store()
                        .object_size(&format!("/gated/{path}"))
                        .is_some();
                    let (st, _) = target.get("gated", path, Scope::Play);
                    if target.held("gated") {
                        break;
                    }
                    assert_eq!(st, 404, "{path} served before the title was complete");
                    saw_placed_but_hidden |= placed;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            saw_placed_but_hidden
        })
    };
    let r = f.pass(&p, 0).await;
    assert_eq!(r.filled, vec!["gated".to_string()], "{r:?}");
    assert!(
        probe.join().unwrap(),
        "no file was ever in place while the title was incomplete: the check proved nothing"
    );
    let (st, body) = target.get("gated", "v1/video.mp4", Scope::Play);
    assert_eq!(st, 200);
    assert!(body == t.file("v1/video.mp4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_only_urgent_titles_are_fetched() {
    let normal = Title::new("normal", 300_000, 5);
    let urgent = Title::new("urgent", 200_000, 6);
    let cp = catalog_server(&[&normal, &urgent]).await;
    let source = App::start("src-1", "ix", &[&normal, &urgent]);
    let target = App::start("isp-1", "isp", &[]);
    let cfg = FillConfig {
        window: "02:00-14:00".parse().unwrap(),
        ..always()
    };
    let f = filler(&target, &cp, cfg);
    let p = plan(
        &target,
        vec![
            normal.planned(vec![source.source(SourceTier::Upstream, "normal")], false),
            urgent.planned(vec![source.source(SourceTier::Upstream, "urgent")], true),
        ],
    );
    // 20:00 local: outside.
    let r = f.pass(&p, 20 * 60).await;
    assert_eq!(r.filled, vec!["urgent".to_string()]);
    assert_eq!(r.pending, vec!["normal".to_string()]);
    let m = target.metrics();
    assert_eq!(m.fill.bytes_in.load(Ordering::Relaxed), urgent.bytes());
    assert_eq!(
        source.metrics().fill.bytes_out.load(Ordering::Relaxed),
        urgent.bytes()
    );
    assert!(!target.root().join("normal").exists());
    assert!(!m.fill.in_window.load(Ordering::Relaxed));
    assert_eq!(m.fill.titles_pending.load(Ordering::Relaxed), 1);
    // 01:59 still outside, 02:00 inside.
    assert!(f.pass(&p, 119).await.filled.is_empty());
    let r = f.pass(&p, 120).await;
    assert_eq!(r.filled, vec!["normal".to_string()]);
    assert!(target.held("normal") && target.held("urgent"));
    assert_eq!(m.fill.titles_pending.load(Ordering::Relaxed), 0);
}

/// Watches the fill's byte counter of `target` until `goal` bytes have arrived (or the run ends,
/// which fails the test), checking at every sample that the bytes so far fit the limiter's
/// budget: `burst` plus `bytes_per_sec` for every second since `start` (taken before the filler
/// and its limiter were made). The limiter makes each chunk wait until the budget covers it
/// before it is counted, so the bound holds exactly whatever the machine's load: a slow machine
/// only moves fewer bytes, never more. No time is asserted: the clock only widens the bound.
/// Reaching `goal` within the bound proves the downloads ran at no more than the rate; the
/// long-run rate being exact (not slower) is the token bucket's unit test, with a simulated
/// clock (`fill::rate::tests`).
async fn assert_fill_within_budget(
    target: &App,
    start: Instant,
    bytes_per_sec: f64,
    burst: f64,
    goal: u64,
    run: &tokio::task::JoinHandle<appliance::fill::PassReport>,
) {
    // One 64 KiB chunk of slack per sample for float rounding; far below what a missing or
    // wrong limit would add (several hundred KB per sample at the rates below).
    const SLACK: f64 = 65_536.0;
    loop {
        let got = target.metrics().fill.bytes_in.load(Ordering::Relaxed);
        // The clock is read after the counter: the bound can only be wider than the truth.
        let elapsed = start.elapsed().as_secs_f64();
        let budget = burst + bytes_per_sec * elapsed + SLACK;
        assert!(
            got as f64 <= budget,
            "{got} bytes filled after {elapsed:.3} s: more than the budget of {budget:.0} \
             ({burst:.0} burst + {bytes_per_sec:.0} B/s)"
        );
        if got >= goal {
            break;
        }
        assert!(
            !run.is_finished(),
            "the fill pass ended after {got} bytes, before reaching {goal}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_bounds_the_bytes_filled_by_every_download_together() {
    let t = Title::new("rated", 8_000_000, 7);
    let cp = catalog_server(&[&t]).await;
    let source = App::start("src-1", "ix", &[&t]);
    let target = App::start("isp-1", "isp", &[]);
    // 16 Mb/s = 2 MB/s over every download together (two at once); burst 50 ms = 100 kB.
    let cfg = FillConfig {
        rate_bps: Some(16_000_000),
        concurrency: 2,
        ..always()
    };
    let start = Instant::now();
    let f = Arc::new(filler(&target, &cp, cfg));
    let p = plan(
        &target,
        vec![t.planned(vec![source.source(SourceTier::Upstream, "rated")], false)],
    );
    let run = {
        let f = f.clone();
        tokio::spawn(async move { f.pass(&p, 0).await })
    };
    // 5 MB: at least 2.45 s of budget; unlimited, loopback moves it in a few milliseconds.
    assert_fill_within_budget(&target, start, 2e6, 100_000.0, 5_000_000, &run).await;
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_fill_spreads_over_the_window_instead_of_the_full_rate() {
    let t = Title::new("paced", 8_000_000, 10);
    let cp = catalog_server(&[&t]).await;
    let source = App::start("src-1", "ix", &[&t]);
    let target = App::start("isp-1", "isp", &[]);
    // A 100 Mb/s cap, but 8 MB left with an hour of window to go: the pace is far below the
    // floor, so the fill runs at the floor (10 Mb/s = 1.25 MB/s), not at the cap (12.5 MB/s).
    let cfg = FillConfig {
        window: "00:00-01:00".parse().unwrap(),
        rate_bps: Some(100_000_000),
        concurrency: 2,
        pace: true,
        ..always()
    };
    let start = Instant::now();
    let f = Arc::new(filler(&target, &cp, cfg));
    let p = plan(
        &target,
        vec![t.planned(vec![source.source(SourceTier::Upstream, "paced")], false)],
    );
    let run = {
        let f = f.clone();
        tokio::spawn(async move { f.pass(&p, 0).await })
    };
    let floor = appliance::fill::rate::PACE_FLOOR_BPS as f64 / 8.0;
    // The burst allowed is the cap's (625 kB, before the pass paces the limiter down to the
    // floor's 62.5 kB): generous. 2.5 MB at the floor takes at least 1.5 s of budget; at the
    // cap's rate it would arrive in 0.2 s, far over the bound.
    assert_fill_within_budget(&target, start, floor, 625_000.0, 2_500_000, &run).await;
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_dropped_from_the_plan_is_removed_without_breaking_a_response_in_flight() {
    let t = Title::new("dropped", 24_000_000, 8);
    let keep = Title::new("kept", 100_000, 9);
    let cp = catalog_server(&[&t, &keep]).await;
    let target = App::start("isp-1", "isp", &[&t, &keep]);
    assert!(target.held("dropped"));
    // Start a large response and read only its beginning.
    let g = grant("isp", "dropped", Scope::Play);
    let mut s = TcpStream::connect(target.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /g/{g}/dropped/v1/video.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = vec![0u8; 4096];
    s.read_exact(&mut first).unwrap();
    // The new plan keeps only `kept` and lists `dropped` as removable.
    let f = filler(&target, &cp, always());
    let r = f
        .pass(
            &plan_removing(&target, vec![keep.planned(vec![], false)], &["dropped"]),
            0,
        )
        .await;
    assert_eq!(r.removed, vec!["dropped".to_string()]);
    assert!(!target.root().join("dropped").exists(), "files not removed");
    assert_eq!(target.get("dropped", "v1/video.mp4", Scope::Play).0, 404);
    assert!(target.held("kept"));
    // The response in flight completes, byte for byte.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let at = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(first.starts_with(b"HTTP/1.1 200"));
    assert_eq!(first.len() - at, t.file("v1/video.mp4").len());
    assert!(first[at..] == *t.file("v1/video.mp4"), "body differs");
}

/// Puts every file of `t` into `bucket` under `prefix/<title>/`, creating the bucket, on the
/// S3-compatible test server; `corrupt` flips one byte of the video.
async fn put_title(endpoint: &str, bucket: &str, prefix: &str, t: &Title, corrupt: bool) {
    use object_store::aws::AmazonS3Builder;
    use object_store::{ObjectStoreExt as _, PutPayload};
    let (st, body) = {
        let host = endpoint.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(host).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        (out[9..12].to_string(), out)
    };
    assert_eq!(st, "200", "CreateBucket {bucket}: {body}");
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    for (p, d) in &t.files {
        let mut d = d.clone();
        if corrupt && p == "v1/video.mp4" {
            d[1000] ^= 0x80;
        }
        let key = format!("{prefix}/{}/{p}", t.name);
        store
            .put(
                &object_store::path::Path::parse(&key).unwrap(),
                PutPayload::from(d),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the S3 test server: run ./scripts/test"]
async fn s3_origin_fills_a_title_and_a_corrupt_bucket_is_skipped() {
    let endpoint = std::env::var("OUTPOST_TEST_S3_ENDPOINT")
        .expect("OUTPOST_TEST_S3_ENDPOINT is unset: run ./scripts/test (it starts the S3 server)");
    let t = Title::new("from-s3", 700_000, 11);
    let cp = catalog_server(&[&t]).await;
    let tag = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let (bad, good) = (format!("fill-bad-{tag}"), format!("fill-good-{tag}"));
    put_title(&endpoint, &bad, "titles", &t, true).await;
    put_title(&endpoint, &good, "titles", &t, false).await;
    let target = App::start("isp-1", "isp", &[]);
    let cfg = FillConfig {
        s3: Some(appliance::fill::S3Settings {
            endpoint: endpoint.clone(),
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            allow_http: true,
        }),
        ..always()
    };
    let f = filler(&target, &cp, cfg);
    let s3 = |bucket: &str| FillSource::S3 {
        tier: SourceTier::Origin,
        bucket: bucket.into(),
        prefix: "titles".into(),
    };
    let r = f
        .pass(
            &plan(&target, vec![t.planned(vec![s3(&bad), s3(&good)], false)]),
            0,
        )
        .await;
    assert_eq!(r.filled, vec!["from-s3".to_string()], "{r:?}");
    assert_same_files(&target, &t);
    let text = target.metrics().render(target.store(), "epoll", false);
    assert!(
        text.contains(&format!(
            "outpost_appliance_fill_verify_failures_total{{source=\"s3:{bad}\"}} 1"
        )),
        "{text}"
    );
    assert_eq!(target.get("from-s3", "v1/video.mp4", Scope::Play).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_downloads_of_a_title_that_left_the_plan_are_removed() {
    let t = Title::new("flaky", 4_000_000, 12);
    let cp = catalog_server(&[&t]).await;
    let source = App::start("src-1", "ix", &[&t]);
    // Every connection dies after 100 000 body bytes: the resumes never reach the end.
    let proxy = cutting_proxy(source.addr, 100_000, true);
    let target = App::start("isp-1", "isp", &[]);
    let cfg = FillConfig {
        concurrency: 1,
        ..always()
    };
    let f = filler(&target, &cp, cfg);
    let src = source.source_at(SourceTier::Upstream, "flaky", proxy.addr);
    let r = f
        .pass(&plan(&target, vec![t.planned(vec![src], false)]), 0)
        .await;
    assert_eq!(r.pending, vec!["flaky".to_string()], "{r:?}");
    let parts = || part_files(&target.root());
    let left = parts();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(std::fs::metadata(&left[0]).unwrap().len() >= 100_000);
    assert!(!target.held("flaky"));
    // The title leaves the plan (a partial title is no copy anyone is served from: it needs no
    // listing as removable): its committed files and its partial download go.
    let r = f.pass(&plan(&target, vec![]), 0).await;
    assert_eq!(r.removed, vec!["flaky".to_string()], "{r:?}");
    assert!(parts().is_empty(), "{:?}", parts());
    assert!(!target.root().join("flaky").exists());
}

/// Every partial download file under `root/.fill` (one directory per title).
fn part_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(root.join(".fill"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if f.path().to_string_lossy().ends_with(".part") {
                out.push(f.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_downloads_survive_a_restart_resume_when_planned_and_go_when_not() {
    let a = Title::new("resumed", 3_000_000, 21);
    let b = Title::new("abandoned", 3_000_000, 22);
    let cp = catalog_server(&[&a, &b]).await;
    let source = App::start("src-1", "ix", &[&a, &b]);
    let proxy = cutting_proxy(source.addr, 200_000, true);
    let target = App::start("isp-1", "isp", &[]);
    let cfg = FillConfig {
        concurrency: 1,
        ..always()
    };
    let planned = |t: &Title, addr| {
        t.planned(
            vec![source.source_at(SourceTier::Upstream, &t.name, addr)],
            false,
        )
    };
    {
        // The first run: both downloads die part way (every connection is cut).
        let f = filler(&target, &cp, cfg.clone());
        let r = f
            .pass(
                &plan(
                    &target,
                    vec![planned(&a, proxy.addr), planned(&b, proxy.addr)],
                ),
                0,
            )
            .await;
        assert_eq!(r.pending.len(), 2, "{r:?}");
        // The process dies here: the filler and its memory are gone, the files stay.
    }
    let left = part_files(&target.root());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!target.held("resumed") && !target.held("abandoned"));
    assert_eq!(target.get("resumed", "v1/video.mp4", Scope::Play).0, 404);
    let before = target.metrics().fill.bytes_in.load(Ordering::Relaxed);
    // The restart: only `resumed` is planned, straight from the source. It resumes from what
    // the first run left; `abandoned`'s partial download is found and removed.
    let f = filler(&target, &cp, cfg);
    let r = f
        .pass(&plan(&target, vec![planned(&a, source.addr)]), 0)
        .await;
    assert_eq!(r.filled, vec!["resumed".to_string()], "{r:?}");
    assert_eq!(r.removed, vec!["abandoned".to_string()], "{r:?}");
    assert_same_files(&target, &a);
    let fetched = target.metrics().fill.bytes_in.load(Ordering::Relaxed) - before;
    assert!(
        fetched < a.bytes(),
        "fetched {fetched} bytes after the restart: the download started over"
    );
    assert!(
        part_files(&target.root()).is_empty(),
        "{:?}",
        part_files(&target.root())
    );
    assert!(!target.root().join("abandoned").exists());
}

/// `n` small titles, each placed on `app`'s drive.
fn held_titles(n: usize) -> Vec<Title> {
    (0..n)
        .map(|i| Title::new(&format!("t{i}"), 20_000, 100 + i as u32))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_leaves_titles_out_deletes_nothing_it_does_not_list() {
    // The demo's start-up stall: origin asked for its plan before the catalog was loaded and got
    // a plan of no titles; it used to delete everything it held.
    let titles = held_titles(3);
    let refs: Vec<&Title> = titles.iter().collect();
    let cp = catalog_server(&refs).await;
    let origin = App::start("origin-1", "origin", &refs);
    let f = filler(&origin, &cp, always());
    for round in 0..3 {
        let mut p = plan(&origin, vec![]);
        p.generated_at += round;
        let r = f.pass(&p, 0).await;
        assert!(r.removed.is_empty(), "{r:?}");
    }
    for t in &titles {
        assert!(origin.held(&t.name));
        assert_same_files(&origin, t);
        assert_eq!(origin.get(&t.name, "v1/video.mp4", Scope::Play).0, 200);
    }
    let m = &origin.metrics().fill;
    assert_eq!(m.titles_kept_unplanned.load(Ordering::Relaxed), 3);
    assert_eq!(m.titles_removed.load(Ordering::Relaxed), 0);

    // Removals off (an origin appliance): even a title listed as removable stays.
    let never = FillConfig {
        removal: RemovalPolicy {
            mode: RemovalMode::Never,
            ..RemovalPolicy::immediate()
        },
        ..always()
    };
    let f = filler(&origin, &cp, never);
    let r = f.pass(&plan_removing(&origin, vec![], &["t0"]), 0).await;
    assert!(r.removed.is_empty(), "{r:?}");
    assert!(origin.held("t0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_drops_ninety_percent_of_the_titles_is_refused_as_suspect() {
    let titles = held_titles(10);
    let refs: Vec<&Title> = titles.iter().collect();
    let cp = catalog_server(&refs).await;
    let app = App::start("isp-1", "isp", &refs);
    let f = filler(&app, &cp, always());
    let names: Vec<&str> = titles.iter().map(|t| t.name.as_str()).collect();
    let suspect = plan_removing(&app, vec![titles[0].planned(vec![], false)], &names[1..]);
    for _ in 0..2 {
        let r = f.pass(&suspect, 0).await;
        assert!(r.removed.is_empty(), "{r:?}");
    }
    let m = &app.metrics().fill;
    assert_eq!(
        m.plans_suspect.load(Ordering::Relaxed),
        1,
        "counted once per plan"
    );
    for t in &titles {
        assert!(app.held(&t.name), "{} removed", t.name);
        assert_same_files(&app, t);
    }
    // A plan removing half (the default share) is carried out.
    let keep: Vec<PlannedTitle> = titles[..5]
        .iter()
        .map(|t| t.planned(vec![], false))
        .collect();
    let mut half = plan_removing(&app, keep, &names[5..]);
    half.plan_id = "half".into();
    let r = f.pass(&half, 0).await;
    assert_eq!(r.removed, names[5..].to_vec());
    for t in &titles[5..] {
        assert!(!app.held(&t.name));
        assert!(!app.root().join(&t.name).exists());
    }
    for t in &titles[..5] {
        assert!(app.held(&t.name));
    }
    assert_eq!(m.titles_removed.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_waits_for_consecutive_plans() {
    let titles = held_titles(4);
    let refs: Vec<&Title> = titles.iter().collect();
    let cp = catalog_server(&refs).await;
    let app = App::start("isp-1", "isp", &refs);
    let cfg = FillConfig {
        removal: RemovalPolicy {
            min_plans: 3,
            ..RemovalPolicy::immediate()
        },
        ..always()
    };
    let f = filler(&app, &cp, cfg);
    let keep: Vec<PlannedTitle> = titles[1..]
        .iter()
        .map(|t| t.planned(vec![], false))
        .collect();
    let mut p = plan_removing(&app, keep, &["t0"]);
    for n in 1..=3u64 {
        p.generated_at += 1;
        // Several passes over one plan count once.
        for _ in 0..2 {
            let r = f.pass(&p, 0).await;
            if n < 3 {
                assert!(r.removed.is_empty(), "plan {n}: {r:?}");
                assert!(app.held("t0"));
            }
        }
    }
    assert!(!app.held("t0"));
    assert!(!app.root().join("t0").exists());
}

/// A tmpfs of `size` mounted over `at` for a test; lazily unmounted and its mount point removed
/// when dropped, whatever happened.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "outpost-test"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs on {} (needs root)",
            at.display()
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `root/<title>` (relative path, bytes).
fn files_under(root: &Path, title: &str) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &rel, out);
            } else {
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(title), "", &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount tmpfs: run ./scripts/test"]
async fn a_drive_filling_up_during_fill_loses_nothing_and_fill_proceeds_once_space_frees() {
    let kept = Title::new("kept", 1_000_000, 31);
    let big = Title::new("big", 3_000_000, 32);
    let cp = catalog_server(&[&kept, &big]).await;
    let source = App::start("src-1", "ix", &[&big]);
    // The drive: a 6 MiB tmpfs holding `kept` and 3.5 MB of ballast the cache does not index
    // (a dot file), so `big` runs out of space part-way through its video. The configured
    // capacity (16 GiB) is far above the real space: the file system says no first.
    let dir = tempfile::tempdir().unwrap();
    let _mount = Tmpfs::mount(dir.path(), "6m");
    let root = dir.path().to_path_buf();
    kept.place(&root);
    let ballast = root.join(".ballast");
    std::fs::write(&ballast, vec![0u8; 3_500_000]).unwrap();
    let target = App::start_in("isp-1", "isp", dir);
    assert!(target.held("kept"));
    let f = filler(&target, &cp, always());
    // A second source behind a recording proxy: a full drive is no reason to try it.
    let second = cutting_proxy(source.addr, usize::MAX, false);
    let planned = big.planned(
        vec![
            source.source(SourceTier::Upstream, "big"),
            source.source_at(SourceTier::Upstream, "big", second.addr),
        ],
        false,
    );

    // The fill fails with an error naming the drive and the cause, not blaming the source.
    let e = f.fill_title(&planned).await.unwrap_err().to_string();
    assert!(e.contains("No space left on device"), "{e}");
    assert!(
        e.contains(&format!("cache drive {}", root.display())),
        "{e}"
    );
    assert!(!e.contains("every source failed"), "{e}");
    // The agent's pass leaves the title pending, to be retried.
    let r = f.pass(&plan(&target, vec![planned.clone()]), 0).await;
    assert_eq!(r.pending, vec!["big".to_string()], "{r:?}");
    assert!(r.filled.is_empty(), "{r:?}");

    // Nothing half-written is visible: the title is not held nor served, and whatever reached
    // its final name is a whole, verified file (the partial download stays under .fill).
    assert!(!target.held("big"));
    for (p, _) in &big.files {
        assert_eq!(target.get("big", p, Scope::Play).0, 404, "{p}");
    }
    for (p, d) in files_under(&root, "big") {
        assert!(p != "catalog.json", "catalog.json of an incomplete title");
        assert!(d == big.file(&p), "big/{p}: not the catalog's bytes");
    }
    assert!(
        !part_files(&root).is_empty(),
        "the partial download is kept to resume"
    );
    assert!(
        second.requests.lock().unwrap().is_empty(),
        "the second source was asked for a file the drive had no room for"
    );
    // What was held is intact and still served.
    assert_same_files(&target, &kept);
    for (p, d) in &kept.files {
        let (st, body) = target.get("kept", p, Scope::Play);
        assert_eq!(st, 200, "{p}");
        assert!(body == *d, "kept/{p} served wrong bytes");
    }

    // Space frees: the next pass resumes and completes the title.
    std::fs::remove_file(&ballast).unwrap();
    let r = f.pass(&plan(&target, vec![planned]), 0).await;
    assert_eq!(r.filled, vec!["big".to_string()], "{r:?}");
    assert_same_files(&target, &big);
    assert_same_files(&target, &kept);
    assert!(part_files(&root).is_empty(), "{:?}", part_files(&root));
    let (st, body) = target.get("big", "v1/video.mp4", Scope::Play);
    assert_eq!(st, 200);
    assert!(body == big.file("v1/video.mp4"));
    drop(target);
}
