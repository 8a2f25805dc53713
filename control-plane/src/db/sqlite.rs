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
) -> Result<bool, Error> {
    let r = bind_session!(sqlx::query(INSERT_SESSION), s, now, max)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}
