//! The PostgreSQL lease insert: in a transaction that locks the account row first, so concurrent starts for one account serialize.

use sqlx::PgPool;

use super::repository::INSERT_SESSION;
use super::rows::SessionRow;
use crate::Error;

/// Inserts `s` if the account has fewer than `max` live leases at `now`. Locks the account row
/// so concurrent starts for one account serialize; READ COMMITTED then sees every lease
/// committed before the lock was granted.
pub(crate) async fn insert_session(
    pool: &PgPool,
    s: &SessionRow,
    max: i64,
    now: i64,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(&s.account_id)
        .fetch_optional(&mut *tx)
        .await?;
    let r = bind_session!(sqlx::query(INSERT_SESSION), s, now, max)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}
