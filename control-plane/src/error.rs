//! Errors: [`Error`] for start-up, storage and import failures, and [`ApiError`], every refusal
//! the HTTP API gives, mapped to a status and a stable JSON `code` in one `IntoResponse`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Start-up, storage and import failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong.
    #[error("config key {key}: {reason}")]
    Config {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value no longer decodes (the row names table, key and column).
    #[error("database: {0}")]
    BadRow(BadRow),
    /// Migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An imported file is invalid; `field` names the bad field.
    #[error("{file}: field {field}: {reason}")]
    Import {
        /// The file (or API body) being imported.
        file: String,
        /// JSON path of the field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A signing key could not be loaded or made.
    #[error("signing key: {0}")]
    Key(String),
    /// Content-key encryption failed (wrong master key or corrupt data).
    #[error("content key store: {0}")]
    Crypto(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn import(
        file: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Import {
            file: file.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A stored value that no longer decodes (see [`crate::db::rows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The table.
    pub table: &'static str,
    /// The row's key (id, or `title/country`...).
    pub key: String,
    /// The column.
    pub column: &'static str,
    /// Why it does not decode.
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {:?} column {}: {}",
            self.table, self.key, self.column, self.reason
        )
    }
}

/// An API refusal. Each variant has one status and one stable `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong credential.
    #[error("missing or invalid credential")]
    Unauthorized,
    /// The request body or a parameter is invalid.
    #[error("{field}: {reason}")]
    InvalidRequest {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// Unknown title.
    #[error("unknown title {0:?}")]
    UnknownTitle(String),
    /// Unknown device class.
    #[error("unknown device class {0:?}")]
    UnknownDeviceClass(String),
    /// Unknown account.
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    /// The account is not active.
    #[error("account is {0}")]
    AccountInactive(String),
    /// No window for this title in the client's country now.
    #[error("{0}")]
    GeoBlocked(String),
    /// No rendition within the effective tier.
    #[error("{0}")]
    TierUnavailable(String),
    /// The device cannot decrypt the title, or the licence policy yields no key.
    #[error("{0}")]
    DrmUnsupported(String),
    /// The plan's concurrent streams are all in use.
    #[error("the plan allows {0} concurrent streams and all are in use")]
    ConcurrentLimit(i64),
    /// Too many session starts for this account.
    #[error("too many session starts; retry in {0} s")]
    RateLimited(u64),
    /// No appliance can serve the title to this client.
    #[error("{0}")]
    NoAppliance(String),
    /// Unknown session.
    #[error("unknown session")]
    SessionNotFound,
    /// The session ended or its lease lapsed.
    #[error("the session has ended or its lease lapsed")]
    SessionEnded,
    /// The licence request yields no key this session may use.
    #[error("{0}")]
    NoKeys(String),
    /// Unknown appliance.
    #[error("unknown appliance {0:?}")]
    UnknownAppliance(String),
    /// No fill plan is published while the catalog holds no title: a plan built from it would
    /// place nothing (retry later).
    #[error("the catalog holds no title yet: no fill plan is published from an empty catalog")]
    CatalogEmpty,
    /// An authenticated caller asked for something that is not its own (another appliance's
    /// plan).
    #[error("{0}")]
    Forbidden(String),
    /// The admin API is disabled (no admin token configured).
    #[error("the admin API is disabled: configure admin_token")]
    AdminDisabled,
    /// An import through the admin API failed.
    #[error("{0}")]
    Import(String),
    /// The database cannot be reached (restarting, connection lost, pool exhausted): nothing was
    /// decided, the same request can be retried (503 with `Retry-After`); details are logged.
    #[error("the database is unavailable; retry in {DB_RETRY_AFTER_SECS} s")]
    DatabaseUnavailable(String),
    /// The request body is larger than the service accepts.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Something broke inside; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
    /// An `Idempotency-Key` reused with a different request, or whose first request is still
    /// being answered.
    #[error("{0}")]
    IdempotencyConflict(String),
}

/// `Retry-After` of a `database_unavailable` answer, seconds.
pub const DB_RETRY_AFTER_SECS: u64 = 1;

/// Whether `e` means the database could not be reached or dropped the connection (I/O, TLS,
/// pool timeout, SQLSTATE class 08 connection exception, 57P01-03 shutting down / starting up,
/// 53300 too many connections), as opposed to a query's own failure.
pub fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::UnknownTitle(_) => "unknown_title",
            ApiError::UnknownDeviceClass(_) => "unknown_device_class",
            ApiError::UnknownAccount(_) => "unknown_account",
            ApiError::AccountInactive(_) => "account_inactive",
            ApiError::GeoBlocked(_) => "geo_blocked",
            ApiError::TierUnavailable(_) => "tier_unavailable",
            ApiError::DrmUnsupported(_) => "drm_unsupported",
            ApiError::ConcurrentLimit(_) => "concurrent_limit",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::NoAppliance(_) => "no_appliance",
            ApiError::SessionNotFound => "session_not_found",
            ApiError::SessionEnded => "session_ended",
            ApiError::NoKeys(_) => "no_keys",
            ApiError::UnknownAppliance(_) => "unknown_appliance",
            ApiError::CatalogEmpty => "catalog_empty",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::Import(_) => "import_failed",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Internal(_) => "internal",
            ApiError::IdempotencyConflict(_) => "idempotency_conflict",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRequest { .. } | ApiError::Import(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownTitle(_)
            | ApiError::UnknownDeviceClass(_)
            | ApiError::UnknownAccount(_)
            | ApiError::SessionNotFound
            | ApiError::UnknownAppliance(_) => StatusCode::NOT_FOUND,
            ApiError::AccountInactive(_)
            | ApiError::GeoBlocked(_)
            | ApiError::TierUnavailable(_)
            | ApiError::DrmUnsupported(_)
            | ApiError::NoKeys(_)
            | ApiError::Forbidden(_)
            | ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::ConcurrentLimit(_) | ApiError::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NoAppliance(_)
            | ApiError::CatalogEmpty
            | ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SessionEnded => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::IdempotencyConflict(_) => StatusCode::CONFLICT,
        }
    }

    /// Every code, for documentation and tests.
    pub const CODES: [&'static str; 24] = [
        "unauthorized",
        "invalid_request",
        "unknown_title",
        "unknown_device_class",
        "unknown_account",
        "account_inactive",
        "geo_blocked",
        "tier_unavailable",
        "drm_unsupported",
        "concurrent_limit",
        "rate_limited",
        "no_appliance",
        "session_not_found",
        "session_ended",
        "no_keys",
        "unknown_appliance",
        "catalog_empty",
        "forbidden",
        "admin_disabled",
        "import_failed",
        "database_unavailable",
        "payload_too_large",
        "internal",
        "idempotency_conflict",
    ];

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if db_unavailable(&e) {
            ApiError::DatabaseUnavailable(format!("database: {e}"))
        } else {
            ApiError::Internal(format!("database: {e}"))
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Import { .. } => ApiError::Import(e.to_string()),
            Error::Db(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        if let ApiError::DatabaseUnavailable(detail) = &self {
            tracing::warn!(error = %detail, "database unavailable: answered 503, retryable");
        }
        let mut body = json!({ "code": self.code(), "message": message });
        if let ApiError::InvalidRequest { field, .. } = &self {
            body["field"] = json!(field);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            ApiError::RateLimited(secs) => Some(secs),
            ApiError::DatabaseUnavailable(_) => Some(DB_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
