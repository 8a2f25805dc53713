//! The one [`Repository`] implementation. Every method body is written once and compiled for
//! each backend by `on_pool!`; only the lease insert differs (`sqlite.rs`, `postgres.rs`).

use std::sync::Arc;

use async_trait::async_trait;

use super::repository::{Pool, Repository};
use super::rows::{self, json, keep, word, RowExt as _};
use super::rows::{
    AccountRow, ApiKeyRow, ForecastRow, HeartbeatRow, KeyRow, PolicyRows, SessionRow, SnapshotRows,
    TitleRow, UsageRow, UsageTotal,
};
use crate::Error;

const SESSION_COLS: &str = "id, account_id, title, device_class, client_ip, country, tier, renditions, key_ids, steering, license_sha256, created_at, expires_at, ended_at, end_reason, idempotency_key, bitrate_bps, title_secs";

/// [`Repository::usage_totals`]: per (title, country, serving cluster), the bytes the sessions
/// live in the window `($1, $2]` streamed there: each session from `max(created_at, $1)` to
/// `min(ended_at or lease expiry, $2)` at its bit rate, capped at the title's duration for
/// `streamed_bytes` (as `popularity::Usage::total`), uncapped for `served_bytes`; `missed`
/// when one that started at or after `$3` was a content miss. Plain SQL both backends run
/// (CASE for the two-argument min and max; the range uses index `sessions_last_at`).
const USAGE_TOTALS: &str = "SELECT title, country, served_cluster, \
     CAST(SUM(CASE WHEN e > b THEN bps * (CASE WHEN d > 0 AND e - b > d THEN d ELSE e - b END) ELSE 0 END) AS DOUBLE PRECISION) AS streamed_bytes, \
     CAST(SUM(CASE WHEN e > b THEN bps * (e - b) ELSE 0 END) AS DOUBLE PRECISION) AS served_bytes, \
     CAST(MAX(CASE WHEN content_miss = 1 AND created_at >= $3 THEN 1 ELSE 0 END) AS BIGINT) AS missed \
     FROM (SELECT title, country, served_cluster, content_miss, created_at, \
             CAST(bitrate_bps AS DOUBLE PRECISION) / 8.0 AS bps, title_secs AS d, \
             CASE WHEN COALESCE(ended_at, expires_at) < $2 THEN COALESCE(ended_at, expires_at) ELSE $2 END AS e, \
             CASE WHEN created_at > $1 THEN created_at ELSE $1 END AS b \
           FROM sessions WHERE COALESCE(ended_at, expires_at) > $1 AND bitrate_bps IS NOT NULL) AS u \
     GROUP BY title, country, served_cluster";

/// Decodes `qoe_sessions` rows (QoE, issue 16).
macro_rules! decode_qoe {
    ($rows:expr) => {{
        let rows = $rows;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let u = |c: &str| r.i(c).map(|v| u64::try_from(v).unwrap_or(0));
            let ou = |c: &str| r.oi(c).map(|v| v.map(|v| u64::try_from(v).unwrap_or(0)));
            out.push(super::rows::QoeRow {
                appliance_id: r.s("appliance_id")?,
                cluster_id: r.s("cluster_id")?,
                reported_at: r.i("reported_at")?,
                moved_at: r.oi("moved_at")?,
                session: protocol::qoe::SessionQoe {
                    sid: r.s("sid")?,
                    cid: r.os("cid")?,
                    title: r.os("title")?,
                    first_ms: u("first_ms")?,
                    last_ms: u("last_ms")?,
                    requests: u("requests")?,
                    bytes: u("bytes")?,
                    startup_ms: ou("startup_ms")?,
                    starvation_events: u("starvation_events")?,
                    media_ms: u("media_ms")?,
                    avg_bitrate_kbps: ou("avg_bitrate_kbps")?,
                    buffer_ms: ou("buffer_ms")?,
                    min_buffer_ms: ou("min_buffer_ms")?,
                    avg_throughput_kbps: ou("avg_throughput_kbps")?,
                    switches: u("switches")?,
                    timed_bytes: ou("timed_bytes")?,
                    timed_us: ou("timed_us")?,
                },
            });
        }
        Ok(out)
    }};
}

/// The repository over an open SQLite or PostgreSQL pool (see `db::connect`).
#[derive(Debug, Clone)]
pub struct SqlRepository {
    pool: Pool,
    // Serializes this process's SQLite writes, so writers queue on a cheap async lock instead
    // of colliding on the database lock and sleeping in SQLite's busy handler. Unused for
    // PostgreSQL, which locks rows itself.
    write: Arc<tokio::sync::Mutex<()>>,
}

impl SqlRepository {
    /// Wraps a pool (migrations must have run).
    pub(crate) fn new(pool: Pool) -> Self {
        SqlRepository {
            pool,
            write: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.write.lock().await),
            Pool::Postgres(_) => None,
        }
    }
}

#[async_trait]
impl Repository for SqlRepository {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn import_policy(&self, p: &PolicyRows) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            for r in &p.plans {
                sqlx::query("INSERT INTO plans (id, max_tier, max_streams) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET max_tier = excluded.max_tier, max_streams = excluded.max_streams")
                    .bind(&r.id)
                    .bind(word(&r.max_tier))
                    .bind(r.max_streams)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &p.accounts {
                sqlx::query("INSERT INTO accounts (id, plan_id, status) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET plan_id = excluded.plan_id, status = excluded.status")
                    .bind(&r.id)
                    .bind(&r.plan_id)
                    .bind(word(&r.status))
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &p.device_classes {
                sqlx::query("INSERT INTO device_classes (id, key_systems, max_tier) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET key_systems = excluded.key_systems, max_tier = excluded.max_tier")
                    .bind(&r.id)
                    .bind(json(&r.key_systems))
                    .bind(word(&r.max_tier))
                    .execute(&mut *tx)
                    .await?;
            }
            for (prefix, country) in &p.geo {
                sqlx::query("INSERT INTO geo_prefixes (prefix, country) VALUES ($1, $2) ON CONFLICT (prefix) DO UPDATE SET country = excluded.country")
                    .bind(prefix)
                    .bind(country)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &p.windows {
                sqlx::query("INSERT INTO windows (title, country, starts_at, ends_at, max_tier) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (title, country) DO UPDATE SET starts_at = excluded.starts_at, ends_at = excluded.ends_at, max_tier = excluded.max_tier")
                    .bind(&r.title)
                    .bind(&r.country)
                    .bind(r.starts_at)
                    .bind(r.ends_at)
                    .bind(word(&r.max_tier))
                    .execute(&mut *tx)
                    .await?;
            }
            for (id, name) in &p.sites {
                sqlx::query("INSERT INTO sites (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name")
                    .bind(id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &p.clusters {
                sqlx::query("INSERT INTO clusters (id, site_id, kind, fallbacks, countries) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET site_id = excluded.site_id, kind = excluded.kind, fallbacks = excluded.fallbacks, countries = excluded.countries")
                    .bind(&r.id)
                    .bind(&r.site_id)
                    .bind(word(&r.kind))
                    .bind(json(&r.fallbacks))
                    .bind(json(&r.countries))
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &p.appliances {
                sqlx::query("INSERT INTO appliances (id, cluster_id, address, port, prefixes, credential_sha256, admin_state, configured_titles) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET cluster_id = excluded.cluster_id, address = excluded.address, port = excluded.port, prefixes = excluded.prefixes, credential_sha256 = excluded.credential_sha256, admin_state = excluded.admin_state, configured_titles = excluded.configured_titles")
                    .bind(&r.id)
                    .bind(&r.cluster_id)
                    .bind(&r.address)
                    .bind(r.port)
                    .bind(json(&r.prefixes))
                    .bind(&r.credential_sha256)
                    .bind(word(&r.admin_state))
                    .bind(r.configured_titles.as_ref().map(json))
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &p.api_keys {
                sqlx::query("INSERT INTO api_keys (id, secret_sha256) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET secret_sha256 = excluded.secret_sha256")
                    .bind(&r.id)
                    .bind(&r.secret_sha256)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn put_title(&self, t: &TitleRow) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            sqlx::query("INSERT INTO titles (id, catalog, dash, hls, imported_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET catalog = excluded.catalog, dash = excluded.dash, hls = excluded.hls, imported_at = excluded.imported_at")
                .bind(&t.id)
                .bind(&t.catalog)
                .bind(&t.dash)
                .bind(&t.hls)
                .bind(t.imported_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn put_keys(&self, title: &str, keys: &[KeyRow]) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM content_keys WHERE title = $1")
                .bind(title)
                .execute(&mut *tx)
                .await?;
            for k in keys {
                sqlx::query("INSERT INTO content_keys (title, kid, scheme, tier, track_type, sealed) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&k.title)
                    .bind(&k.kid)
                    .bind(word(&k.scheme))
                    .bind(k.tier.as_ref().map(word))
                    .bind(word(&k.track_type))
                    .bind(&k.sealed)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn load_snapshot(&self) -> Result<SnapshotRows, Error> {
        let mut s = SnapshotRows::default();
        let bad = &mut s.bad;
        on_pool!(&self.pool, |pool| {
            let mut conn = pool.acquire().await?;
            for r in sqlx::query("SELECT id, max_tier, max_streams FROM plans")
                .fetch_all(&mut *conn)
                .await?
            {
                keep(&mut s.plans, bad, rows::plan(&r))?;
            }
            for r in sqlx::query("SELECT id, key_systems, max_tier FROM device_classes")
                .fetch_all(&mut *conn)
                .await?
            {
                keep(&mut s.device_classes, bad, rows::device_class(&r))?;
            }
            for r in sqlx::query("SELECT prefix, country FROM geo_prefixes")
                .fetch_all(&mut *conn)
                .await?
            {
                s.geo.push((r.s("prefix")?, r.s("country")?));
            }
            for r in sqlx::query("SELECT title, country, starts_at, ends_at, max_tier FROM windows")
                .fetch_all(&mut *conn)
                .await?
            {
                keep(&mut s.windows, bad, rows::window(&r))?;
            }
            for r in sqlx::query("SELECT id, catalog, imported_at FROM titles")
                .fetch_all(&mut *conn)
                .await?
            {
                s.titles.push((r.s("id")?, r.s("catalog")?));
                s.titles_imported_at.push((r.s("id")?, r.i("imported_at")?));
            }
            for r in
                sqlx::query("SELECT title, kid, scheme, tier, track_type, sealed FROM content_keys")
                    .fetch_all(&mut *conn)
                    .await?
            {
                keep(&mut s.keys, bad, rows::content_key(&r))?;
            }
            for r in sqlx::query("SELECT id, name FROM sites")
                .fetch_all(&mut *conn)
                .await?
            {
                s.sites.push((r.s("id")?, r.s("name")?));
            }
            for r in sqlx::query("SELECT id, site_id, kind, fallbacks, countries FROM clusters")
                .fetch_all(&mut *conn)
                .await?
            {
                keep(&mut s.clusters, bad, rows::cluster(&r))?;
            }
            for r in sqlx::query("SELECT * FROM appliances ORDER BY id")
                .fetch_all(&mut *conn)
                .await?
            {
                let a = rows::appliance(&r, bad);
                keep(&mut s.appliances, bad, a)?;
            }
            for r in sqlx::query("SELECT id, secret_sha256 FROM api_keys")
                .fetch_all(&mut *conn)
                .await?
            {
                s.api_keys.push(ApiKeyRow {
                    id: r.s("id")?,
                    secret_sha256: r.s("secret_sha256")?,
                });
            }
            // --- BGP (issue 14) ---
            for r in sqlx::query("SELECT appliance_id, prefix, as_path_len, med FROM bgp_routes")
                .fetch_all(&mut *conn)
                .await?
            {
                s.bgp_routes.push(rows::BgpRouteRow {
                    appliance_id: r.s("appliance_id")?,
                    prefix: r.s("prefix")?,
                    as_path_len: r.i("as_path_len")?,
                    med: r.i("med")?,
                });
            }
            for r in sqlx::query("SELECT appliance_id, sessions, steerable FROM bgp_status")
                .fetch_all(&mut *conn)
                .await?
            {
                s.bgp_status.push((
                    r.s("appliance_id")?,
                    r.s("sessions")?,
                    r.i("steerable")? != 0,
                ));
            }
            // --- end BGP ---
        });
        Ok(s)
    }

    async fn account(&self, id: &str) -> Result<Option<AccountRow>, Error> {
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("SELECT id, plan_id, status FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(r.as_ref().map(rows::account).transpose()?)
        })
    }

    async fn title_manifests(&self, id: &str) -> Result<Option<(String, String)>, Error> {
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("SELECT dash, hls FROM titles WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(match r {
                Some(r) => Some((r.s("dash")?, r.s("hls")?)),
                None => None,
            })
        })
    }

    async fn insert_session_if_under_limit(
        &self,
        s: &SessionRow,
        max: i64,
        now: i64,
        owner: Option<&str>,
    ) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        match &self.pool {
            Pool::Sqlite(pool) => super::sqlite::insert_session(pool, s, max, now, owner).await,
            Pool::Postgres(pool) => super::postgres::insert_session(pool, s, max, now, owner).await,
        }
    }

    async fn live_leases(&self, account: &str, now: i64) -> Result<i64, Error> {
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE account_id = $1 AND ended_at IS NULL AND expires_at > $2")
                .bind(account)
                .bind(now)
                .fetch_one(pool)
                .await?;
            Ok(r.i("n")?)
        })
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRow>, Error> {
        let q = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1");
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query(&q).bind(id).fetch_optional(pool).await?;
            Ok(r.as_ref().map(rows::session).transpose()?)
        })
    }

    async fn session_by_license(&self, sha256: &str) -> Result<Option<SessionRow>, Error> {
        let q = format!("SELECT {SESSION_COLS} FROM sessions WHERE license_sha256 = $1");
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query(&q).bind(sha256).fetch_optional(pool).await?;
            Ok(r.as_ref().map(rows::session).transpose()?)
        })
    }

    async fn extend_session(&self, id: &str, now: i64, expires_at: i64) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id = $2 AND ended_at IS NULL AND expires_at > $3")
                .bind(expires_at)
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn end_session(&self, id: &str, now: i64, reason: &str) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL AND expires_at > $1")
                .bind(now)
                .bind(reason)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn record_heartbeat(&self, id: &str, hb: &HeartbeatRow, now: i64) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("UPDATE appliances SET status = 'online', health = $1, load = $2, egress_bps = $3, drives = $4, titles = $5, reported_prefixes = COALESCE($6, reported_prefixes), last_heartbeat = $7, requests_served = $8, bytes_served = $9, held = $10, fill_status = COALESCE($11, fill_status) WHERE id = $12")
                .bind(word(&hb.health))
                .bind(hb.load)
                .bind(hb.egress_bps)
                .bind(json(&hb.drives))
                .bind(json(&hb.titles))
                .bind(hb.prefixes.as_ref().map(json))
                .bind(now)
                .bind(hb.requests_served)
                .bind(hb.bytes_served)
                .bind(hb.held.as_ref().map(json))
                .bind(hb.fill.as_ref().map(json))
                .bind(id)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn register_appliance(
        &self,
        id: &str,
        address: Option<&str>,
        port: Option<i64>,
        prefixes: Option<&[String]>,
        version: Option<&str>,
    ) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("UPDATE appliances SET address = COALESCE($1, address), port = COALESCE($2, port), reported_prefixes = COALESCE($3, reported_prefixes), version = COALESCE($4, version) WHERE id = $5")
                .bind(address)
                .bind(port)
                .bind(prefixes.map(json))
                .bind(version)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn mark_offline(&self, before: i64) -> Result<Vec<String>, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query("UPDATE appliances SET status = 'offline' WHERE status = 'online' AND admin_state = 'reported' AND (last_heartbeat IS NULL OR last_heartbeat < $1) RETURNING id")
                .bind(before)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(r.s("id")?);
            }
            Ok(out)
        })
    }

    // ---- idempotency keys of session starts (migration 0006) ----
    async fn claim_idempotency_key(
        &self,
        key: &str,
        request_sha256: &str,
        owner: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = $1 AND expires_at <= $2")
                .bind(key)
                .bind(now)
                .execute(pool)
                .await?;
            let r = sqlx::query("INSERT INTO idempotency_keys (idem_key, request_sha256, response, created_at, expires_at, owner) VALUES ($1, $2, NULL, $3, $4, $5) ON CONFLICT (idem_key) DO NOTHING")
                .bind(key)
                .bind(request_sha256)
                .bind(now)
                .bind(expires_at)
                .bind(owner)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn idempotency_key(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<super::rows::IdempotencyClaim>, Error> {
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("SELECT request_sha256, response, created_at, owner FROM idempotency_keys WHERE idem_key = $1 AND expires_at > $2")
                .bind(key)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            match r {
                None => Ok(None),
                Some(r) => {
                    use sqlx::Row as _;
                    Ok(Some(super::rows::IdempotencyClaim {
                        request_sha256: r.try_get("request_sha256")?,
                        response: r.try_get("response")?,
                        created_at: r.try_get("created_at")?,
                        owner: r.try_get("owner")?,
                    }))
                }
            }
        })
    }

    async fn take_over_idempotency_key(
        &self,
        key: &str,
        request_sha256: &str,
        owner: &str,
        account: &str,
        stale_before: i64,
        now: i64,
    ) -> Result<Option<u64>, Error> {
        let _w = self.write_guard().await;
        let claim = super::TakeOver {
            key,
            request_sha256,
            owner,
            account,
            stale_before,
            now,
        };
        match &self.pool {
            Pool::Sqlite(pool) => super::sqlite::take_over_idempotency_key(pool, &claim).await,
            Pool::Postgres(pool) => super::postgres::take_over_idempotency_key(pool, &claim).await,
        }
    }

    async fn store_idempotent_response(
        &self,
        key: &str,
        owner: &str,
        sealed: &str,
    ) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query(
                "UPDATE idempotency_keys SET response = $2 WHERE idem_key = $1 AND owner = $3",
            )
            .bind(key)
            .bind(sealed)
            .bind(owner)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn release_idempotency_key(&self, key: &str, owner: &str) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = $1 AND response IS NULL AND owner = $2")
                .bind(key)
                .bind(owner)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    async fn purge_idempotency_keys(&self, now: i64) -> Result<u64, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            Ok(r.rows_affected())
        })
    }

    async fn purge_sessions(&self, before: i64) -> Result<u64, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let r = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR (ended_at IS NOT NULL AND ended_at < $1)")
                .bind(before)
                .execute(pool)
                .await?;
            Ok(r.rows_affected())
        })
    }

    async fn put_forecast(
        &self,
        countries: &[String],
        rows: &[ForecastRow],
        now: i64,
    ) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            for c in countries {
                sqlx::query("DELETE FROM forecasts WHERE country = $1")
                    .bind(c)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in rows {
                sqlx::query("INSERT INTO forecasts (country, title, position, views, imported_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&r.country)
                    .bind(&r.title)
                    .bind(r.position)
                    .bind(r.views)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn forecasts(&self) -> Result<Vec<ForecastRow>, Error> {
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query(
                "SELECT country, title, position, views FROM forecasts ORDER BY country, position",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(ForecastRow {
                    country: r.s("country")?,
                    title: r.s("title")?,
                    position: r.i("position")?,
                    views: r.f("views")?,
                });
            }
            Ok(out)
        })
    }

    async fn usage_totals(
        &self,
        window_start: i64,
        now: i64,
        miss_since: i64,
    ) -> Result<Vec<UsageTotal>, Error> {
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query(USAGE_TOTALS)
                .bind(window_start)
                .bind(now)
                .bind(miss_since)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(rows::usage_total)
                .collect::<Result<_, _>>()?)
        })
    }

    async fn legacy_session_usage(&self, since: i64) -> Result<Vec<UsageRow>, Error> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query("SELECT id, title, country, renditions, steering, created_at, COALESCE(ended_at, expires_at) AS last_at FROM sessions WHERE COALESCE(ended_at, expires_at) > $1 AND bitrate_bps IS NULL")
                .bind(since)
                .fetch_all(pool)
                .await?;
            out.reserve(rows.len());
            for r in rows {
                keep(&mut out, &mut bad, rows::usage(&r))?;
            }
        });
        for b in bad {
            tracing::warn!(table = b.table, row = %b.key, column = b.column, reason = %b.reason,
                "stored value no longer decodes; session left out of popularity");
        }
        Ok(out)
    }

    async fn placements(&self, cluster: &str) -> Result<Vec<(String, String)>, Error> {
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query("SELECT appliance_id, title FROM fill_placements WHERE cluster_id = $1 ORDER BY appliance_id, title")
                .bind(cluster)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push((r.s("appliance_id")?, r.s("title")?));
            }
            Ok(out)
        })
    }

    async fn replace_placements(
        &self,
        cluster: &str,
        rows: &[(String, String)],
        now: i64,
    ) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM fill_placements WHERE cluster_id = $1")
                .bind(cluster)
                .execute(&mut *tx)
                .await?;
            for (a, t) in rows {
                sqlx::query("INSERT INTO fill_placements (cluster_id, appliance_id, title, placed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (appliance_id, title) DO UPDATE SET cluster_id = excluded.cluster_id, placed_at = excluded.placed_at")
                    .bind(cluster)
                    .bind(a)
                    .bind(t)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    // QoE (issue 16): `qoe_sessions` (0005_qoe.sql).
    async fn put_qoe(
        &self,
        appliance: &str,
        sessions: &[protocol::qoe::SessionQoe],
        now: i64,
    ) -> Result<(), Error> {
        if sessions.is_empty() {
            return Ok(());
        }
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let on = |v: Option<u64>| v.map(n);
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            for q in sessions {
                sqlx::query("INSERT INTO qoe_sessions (sid, appliance_id, cluster_id, title, cid, first_ms, last_ms, requests, bytes, startup_ms, starvation_events, media_ms, avg_bitrate_kbps, buffer_ms, min_buffer_ms, avg_throughput_kbps, switches, reported_at, timed_bytes, timed_us) \
                     SELECT $1, id, cluster_id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $18, $19 FROM appliances WHERE id = $17 \
                     ON CONFLICT (sid, appliance_id) DO UPDATE SET cluster_id = excluded.cluster_id, title = excluded.title, cid = excluded.cid, first_ms = excluded.first_ms, last_ms = excluded.last_ms, requests = excluded.requests, bytes = excluded.bytes, startup_ms = excluded.startup_ms, starvation_events = excluded.starvation_events, media_ms = excluded.media_ms, avg_bitrate_kbps = excluded.avg_bitrate_kbps, buffer_ms = excluded.buffer_ms, min_buffer_ms = excluded.min_buffer_ms, avg_throughput_kbps = excluded.avg_throughput_kbps, switches = excluded.switches, reported_at = excluded.reported_at, timed_bytes = excluded.timed_bytes, timed_us = excluded.timed_us")
                    .bind(&q.sid)
                    .bind(&q.title)
                    .bind(&q.cid)
                    .bind(n(q.first_ms))
                    .bind(n(q.last_ms))
                    .bind(n(q.requests))
                    .bind(n(q.bytes))
                    .bind(on(q.startup_ms))
                    .bind(n(q.starvation_events))
                    .bind(n(q.media_ms))
                    .bind(on(q.avg_bitrate_kbps))
                    .bind(on(q.buffer_ms))
                    .bind(on(q.min_buffer_ms))
                    .bind(on(q.avg_throughput_kbps))
                    .bind(n(q.switches))
                    .bind(now)
                    .bind(appliance)
                    .bind(on(q.timed_bytes))
                    .bind(on(q.timed_us))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn qoe(
        &self,
        since: i64,
        cluster: Option<&str>,
        limit: i64,
    ) -> Result<Vec<super::rows::QoeRow>, Error> {
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query("SELECT * FROM qoe_sessions WHERE reported_at >= $1 AND ($2 IS NULL OR cluster_id = $2) ORDER BY reported_at DESC, last_ms DESC, sid, appliance_id LIMIT $3")
                .bind(since)
                .bind(cluster)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            decode_qoe!(rows)
        })
    }

    async fn qoe_session(&self, sid: &str) -> Result<Vec<super::rows::QoeRow>, Error> {
        on_pool!(&self.pool, |pool| {
            let rows =
                sqlx::query("SELECT * FROM qoe_sessions WHERE sid = $1 ORDER BY appliance_id")
                    .bind(sid)
                    .fetch_all(pool)
                    .await?;
            decode_qoe!(rows)
        })
    }

    async fn mark_qoe_moved(&self, sid: &str, appliance: &str, now: i64) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let done = sqlx::query("UPDATE qoe_sessions SET moved_at = $1 WHERE sid = $2 AND appliance_id = $3 AND moved_at IS NULL")
                .bind(now)
                .bind(sid)
                .bind(appliance)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn clear_qoe_moved(&self, sid: &str, appliance: &str) -> Result<(), Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            sqlx::query(
                "UPDATE qoe_sessions SET moved_at = NULL WHERE sid = $1 AND appliance_id = $2",
            )
            .bind(sid)
            .bind(appliance)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
    // --- BGP (issue 14) ---
    async fn apply_bgp(
        &self,
        id: &str,
        report: &protocol::fleet::BgpReport,
        now: i64,
    ) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            if report.full {
                sqlx::query("DELETE FROM bgp_routes WHERE appliance_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for p in &report.withdrawn {
                sqlx::query("DELETE FROM bgp_routes WHERE appliance_id = $1 AND prefix = $2")
                    .bind(id)
                    .bind(p)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &report.announced {
                sqlx::query("INSERT INTO bgp_routes (appliance_id, prefix, as_path_len, med, communities) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (appliance_id, prefix) DO UPDATE SET as_path_len = excluded.as_path_len, med = excluded.med, communities = excluded.communities")
                    .bind(id)
                    .bind(&r.prefix)
                    .bind(i64::from(r.as_path_len))
                    .bind(i64::from(r.med))
                    .bind(r.communities.join(","))
                    .execute(&mut *tx)
                    .await?;
            }
            let mut stored = Vec::new();
            for r in sqlx::query("SELECT prefix, as_path_len, med, communities FROM bgp_routes WHERE appliance_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
            {
                let c = r.s("communities")?;
                stored.push(protocol::fleet::BgpRoute {
                    prefix: r.s("prefix")?,
                    as_path_len: u32::try_from(r.i("as_path_len")?).unwrap_or(u32::MAX),
                    med: u32::try_from(r.i("med")?).unwrap_or(u32::MAX),
                    communities: if c.is_empty() {
                        Vec::new()
                    } else {
                        c.split(',').map(str::to_owned).collect()
                    },
                });
            }
            let digest = protocol::fleet::bgp_digest(&stored);
            sqlx::query("INSERT INTO bgp_status (appliance_id, sessions, digest, steerable, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (appliance_id) DO UPDATE SET sessions = excluded.sessions, digest = excluded.digest, steerable = excluded.steerable, updated_at = excluded.updated_at")
                .bind(id)
                .bind(json(&report.sessions))
                .bind(&digest)
                .bind(i64::from(report.steerable))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(digest == report.digest)
        })
    }
    async fn clear_bgp(&self, id: &str) -> Result<bool, Error> {
        let _w = self.write_guard().await;
        on_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            let routes = sqlx::query("DELETE FROM bgp_routes WHERE appliance_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let status = sqlx::query("DELETE FROM bgp_status WHERE appliance_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(routes + status > 0)
        })
    }
    // --- end BGP ---
}
