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
    owner: Option<&str>,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(&s.account_id)
        .fetch_optional(&mut *tx)
        .await?;
    let r = bind_session!(sqlx::query(INSERT_SESSION), s, now, max, owner)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Takes over a stale `Idempotency-Key` claim and ends the leases taken under it, in one
/// transaction holding the account row's lock, as the lease insert does: a lease insert by the
/// old owner either committed before (and is ended here) or runs after and finds it no longer
/// owns the key.
pub(crate) async fn take_over_idempotency_key(
    pool: &PgPool,
    t: &super::TakeOver<'_>,
) -> Result<Option<u64>, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(t.account)
        .fetch_optional(&mut *tx)
        .await?;
    let ended = take_over_in!(tx, t);
    tx.commit().await?;
    Ok(ended)
}
