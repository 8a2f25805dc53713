//! The SQLite backend: opening it with the control plane's pragmas, and the lease insert as one
//! statement (SQLite takes the write lock before the statement's first read).

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{Pool, Repository, SessionRow, SqlRepository, INSERT_SESSION, MIGRATOR};
use crate::Error;

/// Opens SQLite with the control plane's pragmas (WAL, synchronous NORMAL, 10 s busy timeout).
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
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Arc::new(SqlRepository::new(Pool::Sqlite(pool))))
}

/// Inserts `s` if the account has fewer than `max` live leases at `now`, in one statement.
pub(super) async fn insert_session(
    pool: &SqlitePool,
    s: &SessionRow,
    max: i64,
    now: i64,
) -> Result<bool, Error> {
    let r = bind_session!(sqlx::query(INSERT_SESSION), s, now, max)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}
