//! Storage: the [`Repository`] trait and its two backends, SQLite (the embedded default, a file in
//! the data directory) and PostgreSQL (for several replicas).
//!
//! - [`rows`]: the typed rows; enum and JSON columns are encoded and decoded there, with serde,
//!   for both backends. A stored value that no longer decodes is a [`BadRow`], never a guess.
//! - `sql.rs`: the one implementation, [`SqlRepository`]. Both backends run the same migrations
//!   (`migrations/`) and, but for the lease insert, the same SQL text: `$n` placeholders work on
//!   both and the schema uses only portable types. Each method's body is written once and run on
//!   whichever pool is open, so the backends cannot drift apart.
//! - `repository.rs`: the [`Repository`] trait; `sqlite.rs` / `postgres.rs`: the one statement
//!   that differs (opening each backend is here).
//!
//! **Lease invariant:** [`Repository::insert_session_if_under_limit`] counts the account's live
//! leases and inserts the new one atomically. SQLite runs it as one `INSERT … SELECT … WHERE
//! count < max` statement (a write statement holds the database write lock from its first step);
//! PostgreSQL runs the same statement in a transaction that first locks the account row
//! (`SELECT … FOR UPDATE`), so concurrent starts for one account serialize.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::Error;
use repository::Pool;

/// Runs `$body` with `$p` bound to the open pool, whichever backend it is (the body is
/// compiled once per backend).
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:block) => {
        match $pool {
            $crate::db::repository::Pool::Sqlite($p) => $body,
            $crate::db::repository::Pool::Postgres($p) => $body,
        }
    };
}

/// Binds a [`SessionRow`] and the lease check's `now` and `max` to [`INSERT_SESSION`].
macro_rules! bind_session {
    ($q:expr, $s:expr, $now:expr, $max:expr, $owner:expr) => {
        $q.bind(&$s.id)
            .bind(&$s.account_id)
            .bind(&$s.title)
            .bind(&$s.device_class)
            .bind(&$s.client_ip)
            .bind(&$s.country)
            .bind($crate::db::rows::word(&$s.tier))
            .bind($crate::db::rows::json(&$s.renditions))
            .bind($crate::db::rows::json(&$s.key_ids))
            .bind($crate::db::rows::json(&$s.steering))
            .bind(&$s.license_sha256)
            .bind($s.created_at)
            .bind($s.expires_at)
            .bind($now)
            .bind($max)
            .bind(&$s.idempotency_key)
            .bind($owner)
            .bind($s.bitrate_bps)
            .bind($s.title_secs)
            .bind($s.steering.served_cluster())
            .bind(i64::from($s.steering.content_miss()))
    };
}

/// A stale `Idempotency-Key` claim to take over (see
/// [`Repository::take_over_idempotency_key`]).
pub(crate) struct TakeOver<'a> {
    key: &'a str,
    request_sha256: &'a str,
    owner: &'a str,
    account: &'a str,
    stale_before: i64,
    now: i64,
}

/// The takeover's claim update: `$1` key, `$2` new owner, `$3` now, `$4` stale before, `$5` the
/// request's hash.
const TAKE_OVER_CLAIM: &str = "UPDATE idempotency_keys SET owner = $2, created_at = $3 \
     WHERE idem_key = $1 AND response IS NULL AND created_at <= $4 AND request_sha256 = $5";

/// The takeover's lease release: `$1` key, `$2` now.
const END_LEASES_OF_KEY: &str =
    "UPDATE sessions SET ended_at = $2, end_reason = 'idempotency_takeover' \
     WHERE idempotency_key = $1 AND ended_at IS NULL";

/// Runs the takeover's two statements in `tx`: the leases ended, or `None` if not taken.
macro_rules! take_over_in {
    ($tx:expr, $t:expr) => {{
        let taken = sqlx::query($crate::db::TAKE_OVER_CLAIM)
            .bind($t.key)
            .bind($t.owner)
            .bind($t.now)
            .bind($t.stale_before)
            .bind($t.request_sha256)
            .execute(&mut *$tx)
            .await?;
        if taken.rows_affected() == 1 {
            let ended = sqlx::query($crate::db::END_LEASES_OF_KEY)
                .bind($t.key)
                .bind($t.now)
                .execute(&mut *$tx)
                .await?;
            Some(ended.rows_affected())
        } else {
            None
        }
    }};
}

mod postgres;
mod repository;
pub mod rows;
mod sql;
mod sqlite;

pub use repository::Repository;
pub use rows::{
    AccountRow, AccountStatus, ApiKeyRow, ApplianceRow, BadRow, BgpRouteRow, ClusterRow,
    DeviceClassRow, ForecastRow, HeartbeatRow, IdempotencyClaim, KeyRow, PlanRow, PolicyRows,
    SessionRow, SnapshotRows, TitleRow, UsageRow, UsageTotal, WindowRow,
};
// QoE (issue 16)
pub use rows::QoeRow;
pub use sql::SqlRepository;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the database a URL names, runs the migrations and returns the repository.
/// `sqlite:` URLs (or plain paths) create the file if missing, in WAL mode.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn Repository>, Error> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = PgConnectOptions::from_str(url)?;
        connect_postgres(opts, max_connections).await
    } else {
        let opts = SqliteConnectOptions::from_str(url)?;
        connect_sqlite(opts, max_connections).await
    }
}

/// Opens SQLite with the control plane's pragmas (WAL, synchronous NORMAL, 10 s busy timeout).
/// Its connections are kept for the life of the pool: an embedded database has no server-side
/// session to recycle, and each replacement (sqlx's default is every 30 minutes, and after 10
/// idle) costs a new worker thread and a page cache filled again from the file.
pub async fn connect_sqlite(
    opts: SqliteConnectOptions,
    max_connections: u32,
) -> Result<Arc<dyn Repository>, Error> {
    let opts = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Arc::new(SqlRepository::new(Pool::Sqlite(pool))))
}

/// How long a request waits for a PostgreSQL connection before it is answered
/// `database_unavailable` (503, retryable): short, so a database restart is a brief window of
/// fast, typed refusals rather than requests hanging.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens PostgreSQL (options may set `search_path` to keep tests apart). Connections are checked
/// before use, so after a database restart the pool replaces its dead connections by itself.
pub async fn connect_postgres(
    opts: PgConnectOptions,
    max_connections: u32,
) -> Result<Arc<dyn Repository>, Error> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Arc::new(SqlRepository::new(Pool::Postgres(pool))))
}

// ---- `outpost control-plane check` (src/commands/check.rs) ----

/// What [`probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The database answered a query.
    Ready,
    /// The SQLite file does not exist yet; [`connect`] creates it.
    WillCreate,
}

/// Whether the database a URL names answers, within `timeout`: one connection, `SELECT 1`, no
/// migrations, nothing created (a missing SQLite file is [`Probe::WillCreate`]).
pub async fn probe(url: &str, timeout: Duration) -> Result<Probe, Error> {
    use sqlx::Connection as _;
    let run = async {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let mut c = sqlx::PgConnection::connect_with(&opts).await?;
            sqlx::query("SELECT 1").execute(&mut c).await?;
            let _ = c.close().await;
        } else {
            let opts = SqliteConnectOptions::from_str(url)?;
            if !opts.get_filename().exists() {
                return Ok(Probe::WillCreate);
            }
            let mut c = sqlx::SqliteConnection::connect_with(&opts.read_only(true)).await?;
            sqlx::query("SELECT 1").execute(&mut c).await?;
            let _ = c.close().await;
        }
        Ok(Probe::Ready)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(Error::Db(sqlx::Error::PoolTimedOut)),
    }
}
// ---- end of `check` block ----
