//! The rows the repository reads and writes, typed: enum columns hold the variant's serde name
//! (`SD`, `embedded`, `reported`...), list and report columns hold JSON, and both are decoded
//! here with serde, once, for both backends. A stored value that no longer decodes is a
//! [`BadRow`] naming the table, the row and the column; [`SnapshotRows::bad`] collects them so
//! [`crate::state::Snapshot::build`] can report them instead of guessing a value.

use protocol::catalog::{Tier, TrackKind};
use protocol::content_keys::Scheme;
use protocol::fill::{FillStatus, HeldTitle};
use protocol::fleet::{Drive, Health};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

pub use crate::error::BadRow;
use crate::steering::{AdminState, ClusterKind, StoredDecision};

/// Account status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// May watch.
    Active,
    /// Temporarily barred (payment, abuse).
    Suspended,
    /// Gone.
    Closed,
}

impl AccountStatus {
    /// `active`, `suspended` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Closed => "closed",
        }
    }
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    /// Id.
    pub id: String,
    /// Highest tier.
    pub max_tier: Tier,
    /// Concurrent streams.
    pub max_streams: i64,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Id.
    pub id: String,
    /// Plan id.
    pub plan_id: String,
    /// Status.
    pub status: AccountStatus,
}

/// A device class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceClassRow {
    /// Id.
    pub id: String,
    /// EME key systems (stored as a JSON array).
    pub key_systems: Vec<String>,
    /// Highest tier.
    pub max_tier: Tier,
}

/// A title window in one country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    /// Title id.
    pub title: String,
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// Opens (Unix seconds).
    pub starts_at: i64,
    /// Closes (Unix seconds, exclusive).
    pub ends_at: i64,
    /// Highest tier in this window.
    pub max_tier: Tier,
}

/// A stored title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TitleRow {
    /// Id.
    pub id: String,
    /// The catalog entry JSON (kept as text: its digest is the title's version).
    pub catalog: String,
    /// The stored MPD text.
    pub dash: String,
    /// The stored HLS master playlist text.
    pub hls: String,
    /// When imported.
    pub imported_at: i64,
}

/// A content key, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Title id.
    pub title: String,
    /// Key id, 32 hex.
    pub kid: String,
    /// Encryption scheme.
    pub scheme: Scheme,
    /// Highest tier it protects, or any.
    pub tier: Option<Tier>,
    /// Track type.
    pub track_type: TrackKind,
    /// AES-GCM sealed key ([`crate::crypto::MasterKey::seal`]).
    pub sealed: String,
}

/// A cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    /// Id.
    pub id: String,
    /// Site id.
    pub site_id: String,
    /// Kind.
    pub kind: ClusterKind,
    /// Fallback cluster ids, in order (stored as a JSON array).
    pub fallbacks: Vec<String>,
    /// The countries of its content region (ISO 3166-1 alpha-2); empty = every country.
    pub countries: Vec<String>,
}

/// An appliance: configuration and last report.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplianceRow {
    /// Id.
    pub id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Host.
    pub address: String,
    /// HTTP port.
    pub port: i64,
    /// Configured prefixes (CIDR).
    pub prefixes: Vec<String>,
    /// SHA-256 hex of the credential (empty: it cannot send heartbeats).
    pub credential_sha256: String,
    /// Operator override.
    pub admin_state: AdminState,
    /// Configured titles, or none.
    pub configured_titles: Option<Vec<String>>,
    /// `unknown` / `online` / `offline` as last marked (written by SQL, read only for display).
    pub status: String,
    /// Last reported health.
    pub health: Option<Health>,
    /// Last reported load.
    pub load: f64,
    /// Last reported egress.
    pub egress_bps: i64,
    /// The last reported drives.
    pub drives: Option<Vec<Drive>>,
    /// Titles held as last reported.
    pub titles: Option<Vec<String>>,
    /// Reported prefixes.
    pub reported_prefixes: Option<Vec<String>>,
    /// Reported software version.
    pub version: Option<String>,
    /// Last heartbeat.
    pub last_heartbeat: Option<i64>,
    /// Requests answered since the appliance started, as last reported.
    pub requests_served: i64,
    /// Payload bytes sent since the appliance started, as last reported.
    pub bytes_served: i64,
    /// Titles held with their versions as last reported (none from agents that do not report
    /// versions).
    pub held: Option<Vec<HeldTitle>>,
    /// The last reported fill status.
    pub fill_status: Option<FillStatus>,
}

impl ApplianceRow {
    /// A newly configured appliance: the configured columns, nothing reported yet.
    #[allow(clippy::too_many_arguments)]
    pub fn configured(
        id: String,
        cluster_id: String,
        address: String,
        port: i64,
        prefixes: Vec<String>,
        credential_sha256: String,
        admin_state: AdminState,
        configured_titles: Option<Vec<String>>,
    ) -> ApplianceRow {
        ApplianceRow {
            id,
            cluster_id,
            address,
            port,
            prefixes,
            credential_sha256,
            admin_state,
            configured_titles,
            status: "unknown".into(),
            health: None,
            load: 0.0,
            egress_bps: 0,
            drives: None,
            titles: None,
            reported_prefixes: None,
            version: None,
            last_heartbeat: None,
            requests_served: 0,
            bytes_served: 0,
            held: None,
            fill_status: None,
        }
    }
}

/// One row of the popularity forecast feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRow {
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// Title id.
    pub title: String,
    /// Position in the country's ordered list, from 0.
    pub position: i64,
    /// Expected views over the planning window.
    pub views: f64,
}

/// What one session tells the popularity estimator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Title.
    pub title: String,
    /// Client country.
    pub country: String,
    /// The rendition ids the session could fetch.
    pub renditions: Vec<String>,
    /// The steering decision (its first choice's cluster served it; it carries the miss class).
    pub steering: StoredDecision,
    /// Started.
    pub created_at: i64,
    /// Ended, or the lease expiry when it did not end.
    pub last_at: i64,
}

/// A playback API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Id (for logs).
    pub id: String,
    /// SHA-256 hex of the secret.
    pub secret_sha256: String,
}

/// The cached tables, as stored.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRows {
    /// Plans.
    pub plans: Vec<PlanRow>,
    /// Device classes.
    pub device_classes: Vec<DeviceClassRow>,
    /// Prefix → country.
    pub geo: Vec<(String, String)>,
    /// Windows.
    pub windows: Vec<WindowRow>,
    /// `(id, catalog JSON)` of every title.
    pub titles: Vec<(String, String)>,
    /// `(id, imported_at)` of every title.
    pub titles_imported_at: Vec<(String, i64)>,
    /// Content keys (sealed).
    pub keys: Vec<KeyRow>,
    /// `(id, name)` of every site.
    pub sites: Vec<(String, String)>,
    /// Clusters.
    pub clusters: Vec<ClusterRow>,
    /// Appliances.
    pub appliances: Vec<ApplianceRow>,
    /// API keys.
    pub api_keys: Vec<ApiKeyRow>,
    // --- BGP (issue 14) ---
    /// Every stored BGP route.
    pub bgp_routes: Vec<BgpRouteRow>,
    /// `(appliance id, sessions JSON, steerable)` of every appliance that reported BGP.
    pub bgp_status: Vec<(String, String, bool)>,
    // --- end BGP ---
    /// Values that did not decode. A bad configured column leaves its row out; a bad reported
    /// column of an appliance reads as not reported.
    pub bad: Vec<BadRow>,
}

/// Everything a policy import writes, already validated.
#[derive(Debug, Clone, Default)]
pub struct PolicyRows {
    /// Plans.
    pub plans: Vec<PlanRow>,
    /// Accounts.
    pub accounts: Vec<AccountRow>,
    /// Device classes.
    pub device_classes: Vec<DeviceClassRow>,
    /// Prefix → country.
    pub geo: Vec<(String, String)>,
    /// Windows.
    pub windows: Vec<WindowRow>,
    /// `(id, name)` sites.
    pub sites: Vec<(String, String)>,
    /// Clusters.
    pub clusters: Vec<ClusterRow>,
    /// Appliances (only the configured columns are written; reports are kept).
    pub appliances: Vec<ApplianceRow>,
    /// API keys.
    pub api_keys: Vec<ApiKeyRow>,
}

/// A session (its lease).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Account.
    pub account_id: String,
    /// Title.
    pub title: String,
    /// Device class.
    pub device_class: String,
    /// Client address.
    pub client_ip: String,
    /// Country of the client.
    pub country: String,
    /// Effective tier.
    pub tier: Tier,
    /// Rendition ids the session may fetch.
    pub renditions: Vec<String>,
    /// Key ids the session may license.
    pub key_ids: Vec<String>,
    /// The steering decision.
    pub steering: StoredDecision,
    /// SHA-256 hex of the licence token.
    pub license_sha256: String,
    /// Started.
    pub created_at: i64,
    /// Lease expiry.
    pub expires_at: i64,
    /// Ended, if ended.
    pub ended_at: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// The `Idempotency-Key` of the start that took this lease, if it had one.
    pub idempotency_key: Option<String>,
    /// The session's bit rate for popularity ([`crate::fill::popularity::session_bitrate`]);
    /// 0 in a row stored before migration 0010.
    pub bitrate_bps: i64,
    /// The title's duration, seconds (0: unknown).
    pub title_secs: i64,
}

/// The live row of a session start's `Idempotency-Key` (migrations 0006, 0007).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// SHA-256 hex of the body of the request that claimed the key.
    pub request_sha256: String,
    /// The sealed answer, once the owner stored it.
    pub response: Option<String>,
    /// When the current owner claimed it (or took it over), Unix seconds.
    pub created_at: i64,
    /// The current owner's claim token.
    pub owner: String,
}

impl SessionRow {
    /// Whether the lease is live at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.ended_at.is_none() && self.expires_at > now
    }
}

/// What the sessions of one (title, country, serving cluster) streamed inside a popularity
/// window: [`super::Repository::usage_totals`] sums it in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageTotal {
    /// Title.
    pub title: String,
    /// Client country.
    pub country: String,
    /// The cluster the sessions' first choice steered them to (none: no choice recorded).
    pub served_cluster: Option<String>,
    /// Bytes streamed inside the window at the sessions' bit rates, each session counting at
    /// most the title's duration: the title's observed popularity.
    pub streamed_bytes: f64,
    /// The same without the duration cap: the bytes the serving cluster delivered.
    pub served_bytes: f64,
    /// Whether a session that started at or after the query's `miss_since` was a content miss.
    pub missed: bool,
}

/// An appliance report to record.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatRow {
    /// Health.
    pub health: Health,
    /// Load.
    pub load: f64,
    /// Egress.
    pub egress_bps: i64,
    /// Drives.
    pub drives: Vec<Drive>,
    /// Titles held.
    pub titles: Vec<String>,
    /// Reported prefixes, if reported.
    pub prefixes: Option<Vec<String>>,
    /// Requests answered since the appliance started.
    pub requests_served: i64,
    /// Payload bytes sent since the appliance started.
    pub bytes_served: i64,
    /// The held titles with versions, when reported.
    pub held: Option<Vec<HeldTitle>>,
    /// Fill status, when reported.
    pub fill: Option<FillStatus>,
}

// ---- Encoding: what the SQL binds. ----

/// An enum column's text: the variant's serde name.
pub(crate) fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable_word(other),
    }
}

#[cold]
fn unreachable_word(v: Result<serde_json::Value, serde_json::Error>) -> String {
    // Only unit enum variants are stored as words; anything else is a programming error, kept
    // visible in the stored text rather than panicking.
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A JSON column's text.
pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

// ---- Decoding: column access shared by both row types. ----

/// Why a row could not be read.
#[derive(Debug)]
pub(crate) enum RowError {
    /// The driver failed (a missing column or a type mismatch).
    Sql(sqlx::Error),
    /// A value does not decode.
    Bad(BadRow),
}

impl From<sqlx::Error> for RowError {
    fn from(e: sqlx::Error) -> Self {
        RowError::Sql(e)
    }
}

impl From<RowError> for crate::Error {
    fn from(e: RowError) -> Self {
        match e {
            RowError::Sql(e) => crate::Error::Db(e),
            RowError::Bad(b) => crate::Error::BadRow(b),
        }
    }
}

/// Column access shared by both backends' row types.
pub(crate) trait RowExt {
    fn s(&self, c: &str) -> Result<String, sqlx::Error>;
    fn os(&self, c: &str) -> Result<Option<String>, sqlx::Error>;
    fn i(&self, c: &str) -> Result<i64, sqlx::Error>;
    fn oi(&self, c: &str) -> Result<Option<i64>, sqlx::Error>;
    fn f(&self, c: &str) -> Result<f64, sqlx::Error>;
}

macro_rules! row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn s(&self, c: &str) -> Result<String, sqlx::Error> {
                self.try_get(c)
            }
            fn os(&self, c: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(c)
            }
            fn i(&self, c: &str) -> Result<i64, sqlx::Error> {
                self.try_get(c)
            }
            fn oi(&self, c: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(c)
            }
            fn f(&self, c: &str) -> Result<f64, sqlx::Error> {
                self.try_get(c)
            }
        }
    };
}
row_ext!(sqlx::sqlite::SqliteRow);
row_ext!(sqlx::postgres::PgRow);

/// Decodes the columns of one row of `table` whose key is `key`.
struct Cols<'r, R> {
    r: &'r R,
    table: &'static str,
    key: String,
}

impl<'r, R: RowExt> Cols<'r, R> {
    fn new(r: &'r R, table: &'static str, key: String) -> Self {
        Cols { r, table, key }
    }

    fn bad(&self, column: &'static str, reason: String) -> BadRow {
        BadRow {
            table: self.table,
            key: self.key.clone(),
            column,
            reason,
        }
    }

    /// An enum column.
    fn word<T: DeserializeOwned>(&self, c: &'static str) -> Result<T, RowError> {
        let text = self.r.s(c)?;
        decode_word(&text).map_err(|e| RowError::Bad(self.bad(c, e)))
    }

    /// An optional enum column.
    fn oword<T: DeserializeOwned>(&self, c: &'static str) -> Result<Option<T>, RowError> {
        match self.r.os(c)? {
            Some(text) => decode_word(&text)
                .map(Some)
                .map_err(|e| RowError::Bad(self.bad(c, e))),
            None => Ok(None),
        }
    }

    /// A JSON column.
    fn json<T: DeserializeOwned>(&self, c: &'static str) -> Result<T, RowError> {
        let text = self.r.s(c)?;
        serde_json::from_str(&text).map_err(|e| RowError::Bad(self.bad(c, e.to_string())))
    }

    /// An optional JSON column.
    fn ojson<T: DeserializeOwned>(&self, c: &'static str) -> Result<Option<T>, RowError> {
        match self.r.os(c)? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| RowError::Bad(self.bad(c, e.to_string()))),
            None => Ok(None),
        }
    }

    /// A reported column: a value that does not decode is recorded in `bad` and reads as
    /// absent (the report is the appliance's, not the operator's; the next heartbeat replaces
    /// it).
    fn reported<T>(
        &self,
        v: Result<Option<T>, RowError>,
        bad: &mut Vec<BadRow>,
    ) -> Result<Option<T>, RowError> {
        match v {
            Ok(v) => Ok(v),
            Err(RowError::Bad(b)) => {
                bad.push(b);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn decode_word<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    T::deserialize(serde_json::Value::String(text.to_owned())).map_err(|e| format!("{text:?}: {e}"))
}

pub(crate) fn plan(r: &impl RowExt) -> Result<PlanRow, RowError> {
    let c = Cols::new(r, "plans", r.s("id")?);
    Ok(PlanRow {
        max_tier: c.word("max_tier")?,
        max_streams: r.i("max_streams")?,
        id: c.key.clone(),
    })
}

pub(crate) fn account(r: &impl RowExt) -> Result<AccountRow, RowError> {
    let c = Cols::new(r, "accounts", r.s("id")?);
    Ok(AccountRow {
        plan_id: r.s("plan_id")?,
        status: c.word("status")?,
        id: c.key.clone(),
    })
}

pub(crate) fn device_class(r: &impl RowExt) -> Result<DeviceClassRow, RowError> {
    let c = Cols::new(r, "device_classes", r.s("id")?);
    Ok(DeviceClassRow {
        key_systems: c.json("key_systems")?,
        max_tier: c.word("max_tier")?,
        id: c.key.clone(),
    })
}

pub(crate) fn window(r: &impl RowExt) -> Result<WindowRow, RowError> {
    let (title, country) = (r.s("title")?, r.s("country")?);
    let c = Cols::new(r, "windows", format!("{title}/{country}"));
    Ok(WindowRow {
        starts_at: r.i("starts_at")?,
        ends_at: r.i("ends_at")?,
        max_tier: c.word("max_tier")?,
        title,
        country,
    })
}

pub(crate) fn content_key(r: &impl RowExt) -> Result<KeyRow, RowError> {
    let (title, kid) = (r.s("title")?, r.s("kid")?);
    let c = Cols::new(r, "content_keys", format!("{title}/{kid}"));
    Ok(KeyRow {
        scheme: c.word("scheme")?,
        tier: c.oword("tier")?,
        track_type: c.word("track_type")?,
        sealed: r.s("sealed")?,
        title,
        kid,
    })
}

pub(crate) fn cluster(r: &impl RowExt) -> Result<ClusterRow, RowError> {
    let c = Cols::new(r, "clusters", r.s("id")?);
    Ok(ClusterRow {
        site_id: r.s("site_id")?,
        kind: c.word("kind")?,
        fallbacks: c.json("fallbacks")?,
        countries: c.json("countries")?,
        id: c.key.clone(),
    })
}

/// An appliance row; bad reported columns go to `bad` and read as absent.
pub(crate) fn appliance(r: &impl RowExt, bad: &mut Vec<BadRow>) -> Result<ApplianceRow, RowError> {
    let c = Cols::new(r, "appliances", r.s("id")?);
    Ok(ApplianceRow {
        cluster_id: r.s("cluster_id")?,
        address: r.s("address")?,
        port: r.i("port")?,
        prefixes: c.json("prefixes")?,
        credential_sha256: r.s("credential_sha256")?,
        admin_state: c.word("admin_state")?,
        configured_titles: c.ojson("configured_titles")?,
        status: r.s("status")?,
        health: c.reported(c.oword("health"), bad)?,
        load: r.f("load")?,
        egress_bps: r.i("egress_bps")?,
        drives: c.reported(c.ojson("drives"), bad)?,
        titles: c.reported(c.ojson("titles"), bad)?,
        reported_prefixes: c.reported(c.ojson("reported_prefixes"), bad)?,
        version: r.os("version")?,
        last_heartbeat: r.oi("last_heartbeat")?,
        requests_served: r.i("requests_served")?,
        bytes_served: r.i("bytes_served")?,
        held: c.reported(c.ojson("held"), bad)?,
        fill_status: c.reported(c.ojson("fill_status"), bad)?,
        id: c.key.clone(),
    })
}

pub(crate) fn usage(r: &impl RowExt) -> Result<UsageRow, RowError> {
    let c = Cols::new(r, "sessions", r.s("id")?);
    Ok(UsageRow {
        title: r.s("title")?,
        country: r.s("country")?,
        renditions: c.json("renditions")?,
        steering: c.json("steering")?,
        created_at: r.i("created_at")?,
        last_at: r.i("last_at")?,
    })
}

pub(crate) fn session(r: &impl RowExt) -> Result<SessionRow, RowError> {
    let c = Cols::new(r, "sessions", r.s("id")?);
    Ok(SessionRow {
        account_id: r.s("account_id")?,
        title: r.s("title")?,
        device_class: r.s("device_class")?,
        client_ip: r.s("client_ip")?,
        country: r.s("country")?,
        tier: c.word("tier")?,
        renditions: c.json("renditions")?,
        key_ids: c.json("key_ids")?,
        steering: c.json("steering")?,
        license_sha256: r.s("license_sha256")?,
        created_at: r.i("created_at")?,
        expires_at: r.i("expires_at")?,
        ended_at: r.oi("ended_at")?,
        end_reason: r.os("end_reason")?,
        idempotency_key: r.os("idempotency_key")?,
        bitrate_bps: r.oi("bitrate_bps")?.unwrap_or(0),
        title_secs: r.oi("title_secs")?.unwrap_or(0),
        id: c.key.clone(),
    })
}

pub(crate) fn usage_total(r: &impl RowExt) -> Result<UsageTotal, sqlx::Error> {
    Ok(UsageTotal {
        title: r.s("title")?,
        country: r.s("country")?,
        served_cluster: r.os("served_cluster")?,
        streamed_bytes: r.f("streamed_bytes")?,
        served_bytes: r.f("served_bytes")?,
        missed: r.i("missed")? != 0,
    })
}

/// Pushes a decoded row, or records why it did not decode; driver errors propagate.
pub(crate) fn keep<T>(
    out: &mut Vec<T>,
    bad: &mut Vec<BadRow>,
    row: Result<T, RowError>,
) -> Result<(), sqlx::Error> {
    match row {
        Ok(v) => out.push(v),
        Err(RowError::Bad(b)) => bad.push(b),
        Err(RowError::Sql(e)) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_the_serde_names() {
        assert_eq!(word(&Tier::Fhd), "FHD");
        assert_eq!(word(&ClusterKind::Exchange), "exchange");
        assert_eq!(word(&AdminState::Reported), "reported");
        assert_eq!(word(&AccountStatus::Suspended), "suspended");
        assert_eq!(word(&TrackKind::Audio), "audio");
        assert_eq!(word(&Scheme::Cbcs), "cbcs");
        assert_eq!(word(&Health::Warning), "warning");
        assert_eq!(decode_word::<Tier>("UHD"), Ok(Tier::Uhd));
        let e = decode_word::<ClusterKind>("edge").unwrap_err();
        assert!(e.starts_with("\"edge\": unknown variant"), "{e}");
    }
}

// QoE (issue 16): per-session summaries reported by appliances (`qoe_sessions`, 0005_qoe.sql).
/// One session as one appliance reported it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct QoeRow {
    /// The reporting appliance.
    pub appliance_id: String,
    /// Its cluster.
    pub cluster_id: String,
    /// When the control plane stored the report, Unix seconds.
    pub reported_at: i64,
    /// When steering first moved this session off this appliance for its QoE, Unix seconds
    /// (migration 0008); absent while it has not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_at: Option<i64>,
    /// The summary.
    pub session: protocol::qoe::SessionQoe,
}
// --- BGP (issue 14) ---
/// One stored BGP route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpRouteRow {
    /// The appliance that hears it.
    pub appliance_id: String,
    /// CIDR.
    pub prefix: String,
    /// AS-path length.
    pub as_path_len: i64,
    /// MULTI_EXIT_DISC.
    pub med: i64,
}
// --- end BGP ---
