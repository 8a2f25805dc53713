//! Session starts per second and latency percentiles, on SQLite and on PostgreSQL.
//!
//! Each start runs the whole handler path through `app(state)` (`oneshot`, no socket): API-key
//! check, account read, geo/window/tier/DRM checks, steering, the atomic lease insert and three
//! Ed25519 grant signatures. `CONCURRENCY` starts are kept in flight on a current-thread Tokio
//! runtime; run it under `taskset -c 0` (see `benches/control_plane.sh`) so the whole process,
//! database threads included, shares one core.
//!
//! ```text
//! cargo bench -p control_plane --bench session_starts             # SQLite only
//! OUTPOST_TEST_DATABASE_URL=postgres://... cargo bench -p control_plane --bench session_starts
//! ```
//! Env: `CP_BENCH_STARTS` (default 20000), `CP_BENCH_CONCURRENCY` (default 16),
//! `CP_BENCH_SQLITE_CONNECTIONS` (default 1, the service's SQLite default), `CP_BENCH_END` (set:
//! end each session at once after its start, untimed, so any number of starts fits the plans'
//! stream limits; with the RSS figures this shows whether a start and end leave memory behind).

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use control_plane::crypto::MasterKey;
use control_plane::db::{self, Repository};
use control_plane::keys::{KeyStore, Rotation};
use control_plane::{app, AppState, Config, SystemClock};
use tower::ServiceExt as _;

const API_KEY: &str = "playback-secret-0123456789";
const ACCOUNTS: usize = 25_000;

fn data(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (every thread,
/// sqlx's SQLite threads included). Unlike wall time it does not grow when other processes take
/// the core, so `starts / cpu` is the one-core capacity even on a busy machine.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `after` starts at field 3.
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// This process's resident set, MiB (VmRSS).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn setup(repo: Arc<dyn Repository>) -> AppState {
    let master = MasterKey::new([42; 32]);
    for f in [
        "policy.toml",
        "clear-title/catalog.json",
        "enc-title/catalog.json",
        "enc-title.keys.json",
    ] {
        control_plane::import::import_file(repo.as_ref(), &master, &data(f), 0)
            .await
            .unwrap();
    }
    // Many accounts so the plan limit never refuses a start.
    let accounts: Vec<serde_json::Value> = (0..ACCOUNTS)
        .map(|i| serde_json::json!({"id": format!("bench-{i}"), "plan": "premium", "status": "active"}))
        .collect();
    control_plane::import::import_policy(
        repo.as_ref(),
        &serde_json::json!({ "accounts": accounts }).to_string(),
        false,
        "bench",
    )
    .await
    .unwrap();
    let config = Config {
        session_starts_per_minute: 1_000_000,
        session_start_burst: 1_000_000,
        ..Config::default()
    };
    let now = control_plane::Clock::now(&SystemClock);
    let keys = KeyStore::ephemeral(
        Rotation {
            rotate_secs: config.key_rotate_secs,
            prepublish_secs: config.key_prepublish_secs,
            grant_ttl_secs: config.grant_ttl_secs,
        },
        now,
    )
    .unwrap();
    let state = AppState::new(
        config,
        "http://cp.bench".into(),
        repo,
        keys,
        master,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let a = app(state.clone());
    for id in ["akl-1", "akl-2", "syd-1"] {
        let req = Request::post(format!("/v1/appliances/{id}/heartbeat"))
            .header(
                "authorization",
                format!("Bearer {id}-credential-0123456789"),
            )
            .header("outpost-appliance", id)
            .body(Body::from(
                r#"{"health":"ok","load":0.1,"titles":["clear-title","enc-title"]}"#,
            ))
            .unwrap();
        assert_eq!(
            a.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
    }
    state
}

async fn run(name: &str, state: AppState, starts: usize, concurrency: usize) {
    let a = app(state);
    let end = std::env::var_os("CP_BENCH_END").is_some();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let one = move |i: usize| {
        let a = a.clone();
        async move {
            let body = format!(
                r#"{{"account_id":"bench-{}","device_class":"browser","title":"{}","client_ip":"10.{}.{}.7"}}"#,
                i % ACCOUNTS,
                if i % 2 == 0 {
                    "clear-title"
                } else {
                    "enc-title"
                },
                (i / 256) % 256,
                i % 256
            );
            let req = Request::post("/v1/playback/sessions")
                .header("authorization", format!("Bearer {API_KEY}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let t = Instant::now();
            let resp = a.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
            let took = t.elapsed();
            if end {
                // The session ended at once, as a short play would (not timed).
                use http_body_util::BodyExt as _;
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let req = Request::delete(format!(
                    "/v1/playback/sessions/{}",
                    v["session_id"].as_str().unwrap()
                ))
                .header(
                    "authorization",
                    format!("Bearer {}", v["token"].as_str().unwrap()),
                )
                .body(Body::empty())
                .unwrap();
                let s = a.oneshot(req).await.unwrap().status();
                assert_eq!(s, StatusCode::NO_CONTENT);
            }
            took
        }
    };
    // Warm up (connection pool, snapshot, page cache).
    for i in 0..200 {
        one(1_000_000 + i).await;
    }
    let rss0 = rss_mib();
    let t0 = Instant::now();
    let c0 = cpu_secs();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let one = one.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= starts {
                    break lat;
                }
                lat.push(one(i).await);
            }
        }));
    }
    let mut all: Vec<Duration> = Vec::with_capacity(starts);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_secs() - c0;
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{name:<10} starts={starts} concurrency={concurrency} elapsed={:.2}s starts/s={:.0} cpu/start={:.0}us starts/cpu-s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms rss={rss0:.1}->{:.1}MiB",
        elapsed.as_secs_f64(),
        starts as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / starts as f64,
        starts as f64 / cpu,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3,
        rss_mib(),
    );
}

/// The floor: only the three Ed25519 grant signatures a start makes (one per cluster).
fn signing_floor(n: usize) {
    use protocol::grant::{sign, Claims, ClientPrefix, SigningKey};
    let key = SigningKey::from_seed("bench", [7; 32]).unwrap();
    let t = Instant::now();
    let c0 = cpu_secs();
    for i in 0..n {
        for aud in ["isp-akl", "ix-syd", "origin"] {
            let c = Claims {
                iss: "outpost-control-plane".into(),
                aud: vec![aud.into()],
                sub: format!("session-{i}"),
                nbf: None,
                iat: 1_000_000,
                exp: 1_010_800,
                prefix: "/clear-title/".into(),
                renditions: Some(vec![
                    "v360".into(),
                    "v720".into(),
                    "v1080".into(),
                    "a128".into(),
                ]),
                client: Some(ClientPrefix::binding_for("10.0.0.7".parse().unwrap())),
                jti: format!("jti-{i}"),
                scope: Default::default(),
            };
            std::hint::black_box(sign(&key, &c).unwrap());
        }
    }
    let e = t.elapsed();
    let cpu = cpu_secs() - c0;
    println!(
        "{:<10} starts={n} elapsed={:.2}s starts/s={:.0} cpu/start={:.0}us starts/cpu-s={:.0} (3 grant signatures per start, nothing else)",
        "sign-only",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64(),
        cpu * 1e6 / n as f64,
        n as f64 / cpu
    );
}

fn main() {
    let starts = env_usize("CP_BENCH_STARTS", 20_000);
    signing_floor(starts.min(5000));
    let concurrency = env_usize("CP_BENCH_CONCURRENCY", 16);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let conns = env_usize("CP_BENCH_SQLITE_CONNECTIONS", 1) as u32;
        let repo = db::connect(&url, conns).await.unwrap();
        let state = setup(repo).await;
        run("sqlite", state, starts, concurrency).await;

        match std::env::var("OUTPOST_TEST_DATABASE_URL") {
            Ok(url) => {
                let schema = format!("cp_bench_{}", &control_plane::crypto::random_hex32()[..12]);
                let admin = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                let opts = sqlx::postgres::PgConnectOptions::from_str(&url)
                    .unwrap()
                    .options([("search_path", schema.as_str())]);
                let repo = db::connect_postgres(opts, 16).await.unwrap();
                let state = setup(repo).await;
                run("postgres", state, starts, concurrency).await;
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&admin)
                    .await
                    .unwrap();
            }
            Err(_) => println!("postgres   skipped: OUTPOST_TEST_DATABASE_URL is unset"),
        }
    });
}
