//! Test harness: a control plane on a real database (a SQLite file in a temporary directory, or
//! a fresh schema in the PostgreSQL that `scripts/services` starts), loaded with the fixtures in
//! `tests/data`, driven through `app(state)` with `oneshot` (no sockets), on a manual clock.
#![allow(dead_code)]

pub mod bgp_scenarios;
pub mod fill_scenarios;
// QoE (issue 16)
pub mod qoe_scenarios;
pub mod scenarios;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use control_plane::crypto::MasterKey;
use control_plane::db::{self, Repository};
use control_plane::keys::{KeyStore, Rotation};
use control_plane::{app, AppState, Config, ManualClock};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

/// The playback API key in `policy.toml`.
pub const API_KEY: &str = "playback-secret-0123456789";
/// The admin token the test config sets.
pub const ADMIN: &str = "admin-token-0123456789";
/// The clock the tests start at (2026-11-26T00:00:00Z).
pub const T0: u64 = 1_795_651_200;
/// Public URL of the test service.
pub const PUBLIC: &str = "http://cp.test";

pub fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

pub struct Env {
    pub state: AppState,
    pub app: Router,
    pub clock: Arc<ManualClock>,
    pub repo: Arc<dyn Repository>,
    _dir: Option<tempfile::TempDir>,
    /// `(url, schema)` of a PostgreSQL test schema, dropped with the environment.
    pg_schema: Option<(String, String)>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg_schema.take() {
            // Drop the schema from a thread with its own runtime (Drop cannot await).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .execute(&pool)
                            .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn test_config() -> Config {
    Config {
        admin_token: Some(control_plane::config::Secret(ADMIN.into())),
        session_starts_per_minute: 100_000,
        session_start_burst: 10_000,
        snapshot_ttl_ms: 60_000,
        ..Config::default()
    }
}

impl Env {
    /// SQLite in a temporary directory.
    pub async fn sqlite() -> Env {
        Env::sqlite_with(test_config()).await
    }

    pub async fn sqlite_with(config: Config) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let repo = db::connect(&url, 8).await.unwrap();
        Env::assemble(repo, config, Some(dir)).await
    }

    /// A fresh schema in the test PostgreSQL. Panics (so the ignored test fails, never skips)
    /// when `OUTPOST_TEST_DATABASE_URL` is unset.
    pub async fn postgres() -> Env {
        Env::postgres_with(test_config()).await
    }

    pub async fn postgres_with(config: Config) -> Env {
        let url = std::env::var("OUTPOST_TEST_DATABASE_URL")
            .expect("needs PostgreSQL: run ./scripts/test (OUTPOST_TEST_DATABASE_URL is unset)");
        let schema = format!(
            "cp_test_{}",
            control_plane::crypto::random_hex32()[..16].to_owned()
        );
        let admin = sqlx::PgPool::connect(&url)
            .await
            .expect("connecting to PostgreSQL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let opts = sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let repo = db::connect_postgres(opts, 16).await.unwrap();
        let mut env = Env::assemble(repo, config, None).await;
        env.pg_schema = Some((url, schema));
        env
    }

    async fn assemble(
        repo: Arc<dyn Repository>,
        config: Config,
        dir: Option<tempfile::TempDir>,
    ) -> Env {
        let clock = Arc::new(ManualClock::new(T0));
        let master = MasterKey::new([42; 32]);
        for f in [
            "policy.toml",
            "clear-title/catalog.json",
            "enc-title/catalog.json",
            "hd-only/catalog.json",
            "enc-title.keys.json",
        ] {
            control_plane::import::import_file(repo.as_ref(), &master, &data(f), T0 as i64)
                .await
                .unwrap_or_else(|e| panic!("importing {f}: {e}"));
        }
        let keys = KeyStore::ephemeral(
            Rotation {
                rotate_secs: config.key_rotate_secs,
                prepublish_secs: config.key_prepublish_secs,
                grant_ttl_secs: config.grant_ttl_secs,
            },
            T0,
        )
        .unwrap();
        let state = AppState::new(
            config,
            PUBLIC.into(),
            repo.clone(),
            keys,
            master,
            clock.clone(),
        )
        .await
        .unwrap();
        Env {
            app: app(state.clone()),
            state,
            clock,
            repo,
            _dir: dir,
            pg_schema: None,
        }
    }

    /// The SQLite database file (SQLite environments only).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("cp.db"))
    }

    /// One request through the router; returns status, headers and the body (JSON when it
    /// parses, else a JSON string).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, v)
    }

    pub async fn start(
        &self,
        account: &str,
        device: &str,
        title: &str,
        ip: &str,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(
                Method::POST,
                "/v1/playback/sessions",
                &[("authorization", &format!("Bearer {API_KEY}"))],
                Some(serde_json::json!({"account_id": account, "device_class": device, "title": title, "client_ip": ip})),
            )
            .await;
        (s, v)
    }

    /// Sends a heartbeat for an appliance of `policy.toml`.
    pub async fn appliance_heartbeat(
        &self,
        id: &str,
        health: &str,
        load: f64,
        titles: &[&str],
    ) -> StatusCode {
        let cred = format!("{id}-credential-0123456789");
        let (s, _, _) = self
            .call(
                Method::POST,
                &format!("/v1/appliances/{id}/heartbeat"),
                &[("authorization", &format!("Bearer {cred}")), ("outpost-appliance", id)],
                Some(serde_json::json!({"health": health, "load": load, "titles": titles,
                    "drives": [{"path": "/cache/0", "state": "ok", "used_bytes": 10, "capacity_bytes": 100}]})),
            )
            .await;
        s
    }

    /// Every reported appliance heartbeats healthy, holding every fixture title.
    pub async fn fleet_up(&self) {
        for id in ["akl-1", "akl-2", "syd-1"] {
            assert_eq!(
                self.appliance_heartbeat(id, "ok", 0.2, &["clear-title", "enc-title", "hd-only"])
                    .await,
                StatusCode::OK
            );
        }
    }
}
