//! The SQLite lease insert: one statement (SQLite takes the write lock before the statement's
//! first read).

use sqlx::SqlitePool;

use super::repository::INSERT_SESSION;
use super::rows::SessionRow;
use crate::Error;

/// Inserts `s` if the account has fewer than `max` live leases at `now`, in one statement.
pub(crate) async fn insert_session(
    pool: &SqlitePool,
    s: &SessionRow,
    max: i64,
    now: i64,
    owner: Option<&str>,
) -> Result<bool, Error> {
    let r = bind_session!(sqlx::query(INSERT_SESSION), s, now, max, owner)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Takes over a stale `Idempotency-Key` claim and ends the leases taken under it, in one
/// transaction (SQLite has one writer: nothing interleaves).
pub(crate) async fn take_over_idempotency_key(
    pool: &SqlitePool,
    t: &super::TakeOver<'_>,
) -> Result<Option<u64>, Error> {
    let mut tx = pool.begin().await?;
    let ended = take_over_in!(tx, t);
    tx.commit().await?;
    Ok(ended)
}
