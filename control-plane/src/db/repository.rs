//! The storage API both backends implement, and what the implementation shares: the open pool
//! and the lease insert's SQL.

use async_trait::async_trait;

use super::rows::{
    AccountRow, ForecastRow, HeartbeatRow, KeyRow, PolicyRows, SessionRow, SnapshotRows, TitleRow,
    UsageRow, UsageTotal,
};
use crate::Error;

/// An open pool of either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    /// SQLite.
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
}

/// The lease insert: the row goes in only while the account has fewer than `$15` live leases,
/// and, for a start under an `Idempotency-Key` (`$16`), only while `$17` still owns the key.
/// `$18`-`$21` are what popularity reads (migration 0010).
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (id, account_id, title, device_class, client_ip, country, tier, renditions, key_ids, steering, license_sha256, created_at, expires_at, idempotency_key, bitrate_bps, title_secs, served_cluster, content_miss) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $16, $18, $19, $20, $21 \
     WHERE (SELECT COUNT(*) FROM sessions WHERE account_id = $2 AND ended_at IS NULL AND expires_at > $14) < $15 \
     AND ($16 IS NULL OR EXISTS (SELECT 1 FROM idempotency_keys WHERE idem_key = $16 AND owner = $17))";

/// The storage API. Every method is one short transaction or statement.
#[async_trait]
pub trait Repository: Send + Sync + std::fmt::Debug + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Writes a validated policy in one transaction (upserts).
    async fn import_policy(&self, p: &PolicyRows) -> Result<(), Error>;
    /// Stores or replaces a title.
    async fn put_title(&self, t: &TitleRow) -> Result<(), Error>;
    /// Replaces the content keys of a title.
    async fn put_keys(&self, title: &str, keys: &[KeyRow]) -> Result<(), Error>;
    /// Loads the cached tables.
    async fn load_snapshot(&self) -> Result<SnapshotRows, Error>;
    /// One account.
    async fn account(&self, id: &str) -> Result<Option<AccountRow>, Error>;
    /// A title's stored manifests `(dash, hls)`.
    async fn title_manifests(&self, id: &str) -> Result<Option<(String, String)>, Error>;
    /// Inserts `s` if the account has fewer than `max` live leases at `now` and, when
    /// `s.idempotency_key` is set, `owner` still owns that key; false otherwise.
    async fn insert_session_if_under_limit(
        &self,
        s: &SessionRow,
        max: i64,
        now: i64,
        owner: Option<&str>,
    ) -> Result<bool, Error>;
    /// Live leases of an account.
    async fn live_leases(&self, account: &str, now: i64) -> Result<i64, Error>;
    /// One session.
    async fn session(&self, id: &str) -> Result<Option<SessionRow>, Error>;
    /// The session a licence token belongs to.
    async fn session_by_license(&self, sha256: &str) -> Result<Option<SessionRow>, Error>;
    /// Extends a live lease to `expires_at`; false if it had lapsed or ended.
    async fn extend_session(&self, id: &str, now: i64, expires_at: i64) -> Result<bool, Error>;
    /// Ends a live session; false if it was not live.
    async fn end_session(&self, id: &str, now: i64, reason: &str) -> Result<bool, Error>;
    /// Records a heartbeat (a heartbeat without a fill status keeps the last one); false if the
    /// appliance is unknown.
    async fn record_heartbeat(&self, id: &str, hb: &HeartbeatRow, now: i64) -> Result<bool, Error>;
    /// Records a registration (address, port, prefixes, version; `None` keeps the value).
    async fn register_appliance(
        &self,
        id: &str,
        address: Option<&str>,
        port: Option<i64>,
        prefixes: Option<&[String]>,
        version: Option<&str>,
    ) -> Result<bool, Error>;
    /// Marks appliances with a heartbeat older than `before` offline; returns their ids.
    async fn mark_offline(&self, before: i64) -> Result<Vec<String>, Error>;
    /// Deletes sessions that ended or lapsed before `before`; returns how many.
    async fn purge_sessions(&self, before: i64) -> Result<u64, Error>;
    /// Replaces the forecast of each country in `countries` with `rows` (one transaction).
    async fn put_forecast(
        &self,
        countries: &[String],
        rows: &[ForecastRow],
        now: i64,
    ) -> Result<(), Error>;
    /// The whole forecast feed.
    async fn forecasts(&self) -> Result<Vec<ForecastRow>, Error>;
    /// What the sessions live at some point in `(window_start, now]` streamed there, summed
    /// per (title, country, serving cluster) by the database; `missed` for a session started
    /// at or after `miss_since`. Sessions stored before migration 0010 are not in it (see
    /// [`Repository::legacy_session_usage`]).
    async fn usage_totals(
        &self,
        window_start: i64,
        now: i64,
        miss_since: i64,
    ) -> Result<Vec<UsageTotal>, Error>;
    /// Sessions stored before migration 0010 (no stored bit rate) that were live at some point
    /// after `since`, for the caller to weigh with the catalog (one whose stored values no
    /// longer decode is left out, with a warning). Empty once they left the window.
    async fn legacy_session_usage(&self, since: i64) -> Result<Vec<UsageRow>, Error>;
    /// The last published placement of a cluster: `(appliance, title)` pairs.
    async fn placements(&self, cluster: &str) -> Result<Vec<(String, String)>, Error>;
    /// Replaces the published placement of a cluster (one transaction).
    async fn replace_placements(
        &self,
        cluster: &str,
        rows: &[(String, String)],
        now: i64,
    ) -> Result<(), Error>;
    // QoE (issue 16)
    /// Stores (replaces) the session summaries an appliance reported, under its cluster.
    async fn put_qoe(
        &self,
        appliance: &str,
        sessions: &[protocol::qoe::SessionQoe],
        now: i64,
    ) -> Result<(), Error>;
    /// Session summaries reported at or after `since`, of one cluster or all, most recent
    /// first, at most `limit`.
    async fn qoe(
        &self,
        since: i64,
        cluster: Option<&str>,
        limit: i64,
    ) -> Result<Vec<super::rows::QoeRow>, Error>;
    /// Every appliance's report of one session (for steering).
    async fn qoe_session(&self, sid: &str) -> Result<Vec<super::rows::QoeRow>, Error>;
    /// Records that steering moved session `sid` off `appliance` at `now` (migration 0008):
    /// `true` only for the call that set it, `false` when it was already set (or no report).
    async fn mark_qoe_moved(&self, sid: &str, appliance: &str, now: i64) -> Result<bool, Error>;
    /// Forgets that move: steering puts `appliance` in front of the session again.
    async fn clear_qoe_moved(&self, sid: &str, appliance: &str) -> Result<(), Error>;

    // ---- idempotency keys of session starts (migration 0006) ----
    /// Claims `key` for `owner`, a request whose body hashes to `request_sha256` (an expired
    /// row of the key is dropped first): `true` when `owner` now owns it and must answer,
    /// `false` when another request holds it.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        request_sha256: &str,
        owner: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, Error>;
    /// The live row of `key`.
    async fn idempotency_key(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<super::rows::IdempotencyClaim>, Error>;
    /// Takes over a claim of `key` (same `request_sha256`) that has had no answer since
    /// `stale_before` or earlier: its owner is taken to have died. In one transaction (on
    /// PostgreSQL under the account row's lock, as the lease insert), `owner` becomes the owner
    /// and every live lease taken under the key is ended (`idempotency_takeover`). Returns the
    /// number of leases ended, or `None` when the claim was not stale (or is gone).
    async fn take_over_idempotency_key(
        &self,
        key: &str,
        request_sha256: &str,
        owner: &str,
        account: &str,
        stale_before: i64,
        now: i64,
    ) -> Result<Option<u64>, Error>;
    /// Stores the sealed answer of a key `owner` still owns; false when it no longer does.
    async fn store_idempotent_response(
        &self,
        key: &str,
        owner: &str,
        sealed: &str,
    ) -> Result<bool, Error>;
    /// Drops `owner`'s claim whose request was refused (a retry may then succeed).
    async fn release_idempotency_key(&self, key: &str, owner: &str) -> Result<(), Error>;
    /// Deletes expired keys; returns how many.
    async fn purge_idempotency_keys(&self, now: i64) -> Result<u64, Error>;
    // --- BGP (issue 14) ---
    /// Applies an appliance's BGP report (a full table replaces, deltas update) and records its
    /// sessions; returns whether the stored table's digest equals the reported one (when not,
    /// the appliance is asked for its full table).
    async fn apply_bgp(
        &self,
        id: &str,
        report: &protocol::fleet::BgpReport,
        now: i64,
    ) -> Result<bool, Error>;
    /// Forgets an appliance's BGP routes and sessions (its heartbeats carry no BGP report any
    /// more: it runs no BGP speaker); returns whether there was anything to forget.
    async fn clear_bgp(&self, id: &str) -> Result<bool, Error>;
    // --- end BGP ---
}
