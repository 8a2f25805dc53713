//! The PostgreSQL backend: opening it, and the lease insert in a transaction that locks the
//! account row first, so concurrent starts for one account serialize.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{Pool, Repository, SessionRow, SqlRepository, INSERT_SESSION, MIGRATOR};
use crate::Error;

/// Opens PostgreSQL (options may set `search_path` to keep tests apart).
pub async fn connect_postgres(
    opts: PgConnectOptions,
    max_connections: u32,
) -> Result<Arc<dyn Repository>, Error> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Arc::new(SqlRepository::new(Pool::Postgres(pool))))
}

/// Inserts `s` if the account has fewer than `max` live leases at `now`. Locks the account row
/// so concurrent starts for one account serialize; READ COMMITTED then sees every lease
/// committed before the lock was granted.
pub(super) async fn insert_session(
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
