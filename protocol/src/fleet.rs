//! Fleet messages between appliances (their fleet agent) and the control plane: registration,
//! the periodic heartbeat with health, load, drive state and the titles held, and the published
//! grant public keys appliances fetch and cache.
//!
//! Every request carries the appliance's id in the [`APPLIANCE_HEADER`] header and its credential
//! as `Authorization: Bearer <secret>`; the control plane stores only a SHA-256 of the secret.
//!
//! | Message | Endpoint |
//! |---|---|
//! | [`Registration`] | `POST /v1/appliances/{id}/register` |
//! | [`Heartbeat`] → [`HeartbeatAck`] | `POST /v1/appliances/{id}/heartbeat` |
//! | [`PublishedKeys`] | `GET /v1/keys` |
//! | [`crate::fill::FillPlan`] | `GET /v1/appliances/{id}/fill-plan` |

use serde::{Deserialize, Serialize};

/// The request header naming the appliance that speaks.
pub const APPLIANCE_HEADER: &str = "Outpost-Appliance";

/// The `alg` of every published key.
pub const KEY_ALG_ED25519: &str = "Ed25519";

/// Most titles one heartbeat may list.
pub const MAX_TITLES: usize = 100_000;
/// Most drives one heartbeat may list.
pub const MAX_DRIVES: usize = 256;
/// Most prefixes one appliance may announce.
pub const MAX_PREFIXES: usize = 4096;

/// Overall health, worst component wins (Open Connect's Unknown/OK/Warning/Error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Everything works.
    Ok,
    /// Degraded but serving (a drive failed, high temperature...): still steerable.
    Warning,
    /// Not serving: never steered to.
    Error,
}

impl Health {
    /// `ok`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Error => "error",
        }
    }
}

/// State of one cache drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DriveState {
    /// Reading and writing.
    Ok,
    /// Serving what it holds, not filled.
    Degraded,
    /// Out of service.
    Failed,
}

/// One cache drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The cache directory (mount point) it backs.
    pub path: String,
    /// Its state.
    pub state: DriveState,
    /// Bytes used by cached objects.
    pub used_bytes: u64,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
}

/// `POST /v1/appliances/{id}/register`: what an appliance announces when it starts. Fields
/// left out keep their configured value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Host name or IP address players reach it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 253, pattern = "^[A-Za-z0-9.:\\[\\]-]+$")
    )]
    pub address: Option<String>,
    /// Plain HTTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u16>,
    /// Client prefixes it serves (CIDR), the stand-in for its BGP announcements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<Vec<String>>,
    /// Software version, for the fleet view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `POST /v1/appliances/{id}/heartbeat`: the periodic report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Overall health.
    pub health: Health,
    /// Load as a fraction of capacity (0.0 idle, 1.0 saturated; may exceed 1.0).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub load: f64,
    /// Egress in bits per second over the last interval.
    #[serde(default)]
    pub egress_bps: u64,
    /// Requests answered since the appliance started (a counter: the control plane derives
    /// request rates from successive heartbeats).
    #[serde(default)]
    pub requests_served: u64,
    /// Payload bytes sent since the appliance started (a counter).
    #[serde(default)]
    pub bytes_served: u64,
    /// The cache drives.
    #[serde(default)]
    pub drives: Vec<Drive>,
    /// Ids of the titles held completely.
    pub titles: Vec<String>,
    /// The titles held with their version and files digest (sent by the fleet agent; every
    /// entry also appears in `titles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::fill::HeldTitle>,
    /// Fill progress, when the appliance fills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<crate::fill::FillStatus>,
    /// Prefixes announced now (replaces the configured ones while reported), CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<Vec<String>>,
    // QoE (issue 16): per-session summaries folded from CMCD since the previous heartbeat.
    /// Sessions active since the previous heartbeat (at most
    /// [`crate::qoe::MAX_SESSIONS_PER_HEARTBEAT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qoe: Vec<crate::qoe::SessionQoe>,
    // --- BGP (issue 14) ---
    /// What the appliance's BGP speaker hears, when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpReport>,
    // --- end BGP ---
}

// --- BGP (issue 14) ---
/// Most BGP routes one heartbeat may carry (full table or deltas).
pub const MAX_BGP_ROUTES: usize = 200_000;

/// The BGP part of a heartbeat: sessions, route changes and a digest of the whole table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BgpReport {
    /// One entry per configured peer.
    pub sessions: Vec<BgpSession>,
    /// True when `announced` is the whole table (the receiver replaces what it had).
    #[serde(default)]
    pub full: bool,
    /// Routes added or changed since the table the control plane last acknowledged (or all).
    #[serde(default)]
    pub announced: Vec<BgpRoute>,
    /// Prefixes withdrawn since then (CIDR).
    #[serde(default)]
    pub withdrawn: Vec<String>,
    /// Lowercase hex SHA-256 of the whole table after these changes (see [`bgp_digest`]).
    pub digest: String,
    /// Number of routes in the whole table.
    pub routes: usize,
    /// False once no session has been up for longer than the appliance's grace period: the
    /// control plane must not steer BGP-fed prefixes here.
    pub steerable: bool,
}

/// One peer's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BgpSession {
    /// `ip:port` of the peer.
    pub peer: String,
    /// Its AS number.
    pub asn: u32,
    /// `idle`, `connect`, `open_sent`, `open_confirm` or `established`.
    pub state: String,
    /// The last error (NOTIFICATION sent or received, connection failure), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds since it became established (0 when not established).
    #[serde(default)]
    pub uptime_secs: u64,
    /// Routes learnt from it.
    #[serde(default)]
    pub routes: usize,
    /// Established and its initial table has fully arrived (End-of-RIB for every negotiated
    /// family, or, from a peer without graceful restart, a settle time without changes). The
    /// control plane does not count an appliance's routes until one of its sessions is.
    /// Absent (appliances before this field): true, i.e. the old behaviour.
    #[serde(default = "rib_complete_default")]
    pub rib_complete: bool,
}

fn rib_complete_default() -> bool {
    true
}

/// One learnt route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BgpRoute {
    /// CIDR.
    pub prefix: String,
    /// AS-path length as the decision process counts it.
    pub as_path_len: u32,
    /// MULTI_EXIT_DISC (0 when absent).
    #[serde(default)]
    pub med: u32,
    /// Standard communities as `asn:value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// The table digest both sides compute: SHA-256 over the routes sorted by prefix text, one line
/// each `prefix as_path_len med communities,…\n`.
pub fn bgp_digest<'a>(routes: impl IntoIterator<Item = &'a BgpRoute>) -> String {
    use sha2::Digest as _;
    let mut v: Vec<&BgpRoute> = routes.into_iter().collect();
    v.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut h = sha2::Sha256::new();
    for r in v {
        h.update(
            format!(
                "{} {} {} {}\n",
                r.prefix,
                r.as_path_len,
                r.med,
                r.communities.join(",")
            )
            .as_bytes(),
        );
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
// --- end BGP ---

/// Problems with a heartbeat, each naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// A field breaks a rule.
    #[error("heartbeat field {field}: {reason}")]
    Invalid {
        /// JSON path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl Heartbeat {
    /// Checks bounds the types cannot express.
    pub fn validate(&self) -> Result<(), FleetError> {
        let bad = |field: &str, reason: &str| FleetError::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if !self.load.is_finite() || self.load < 0.0 {
            return Err(bad("load", "must be a finite number >= 0"));
        }
        if self.titles.len() > MAX_TITLES {
            return Err(bad("titles", "too many titles"));
        }
        if let Some(i) = self
            .titles
            .iter()
            .position(|t| !crate::catalog::is_valid_segment(t))
        {
            return Err(FleetError::Invalid {
                field: format!("titles[{i}]"),
                reason: "not a valid title id".to_owned(),
            });
        }
        if self.held.len() > MAX_TITLES {
            return Err(bad("held", "too many titles"));
        }
        let titles: std::collections::HashSet<&str> =
            self.titles.iter().map(String::as_str).collect();
        if let Some(i) = self
            .held
            .iter()
            .position(|h| !titles.contains(h.title.as_str()))
        {
            return Err(FleetError::Invalid {
                field: format!("held[{i}].title"),
                reason: "not listed in titles".to_owned(),
            });
        }
        if self.drives.len() > MAX_DRIVES {
            return Err(bad("drives", "too many drives"));
        }
        if self
            .prefixes
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PREFIXES)
        {
            return Err(bad("prefixes", "too many prefixes"));
        }
        // QoE (issue 16)
        if self.qoe.len() > crate::qoe::MAX_SESSIONS_PER_HEARTBEAT {
            return Err(bad("qoe", "too many sessions"));
        }
        if let Some(i) = self
            .qoe
            .iter()
            .position(|q| q.sid.is_empty() || q.sid.len() > 64)
        {
            return Err(FleetError::Invalid {
                field: format!("qoe[{i}].sid"),
                reason: "must be 1 to 64 characters".to_owned(),
            });
        }
        // --- BGP (issue 14) ---
        if let Some(b) = &self.bgp {
            if b.announced.len() + b.withdrawn.len() > MAX_BGP_ROUTES {
                return Err(bad("bgp.announced", "too many routes"));
            }
            let cidr = |p: &str| {
                p.split_once('/').is_some_and(|(a, l)| {
                    a.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                        l.parse::<u8>()
                            .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
                    })
                })
            };
            if let Some(i) = b.announced.iter().position(|r| !cidr(&r.prefix)) {
                return Err(FleetError::Invalid {
                    field: format!("bgp.announced[{i}].prefix"),
                    reason: "not a CIDR prefix".to_owned(),
                });
            }
            if let Some(i) = b.withdrawn.iter().position(|p| !cidr(p)) {
                return Err(FleetError::Invalid {
                    field: format!("bgp.withdrawn[{i}]"),
                    reason: "not a CIDR prefix".to_owned(),
                });
            }
            if b.digest.len() != 64 || !b.digest.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("bgp.digest", "not a hex SHA-256"));
            }
        }
        // --- end BGP ---
        Ok(())
    }
}

/// The control plane's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatAck {
    /// Control-plane time the heartbeat was recorded, Unix seconds.
    pub received_at: u64,
    /// Send the next heartbeat within this many seconds.
    pub interval_secs: u64,
    /// Marked offline after this many seconds without a heartbeat.
    pub offline_after_secs: u64,
    /// Key ids currently published at `GET /v1/keys`; refetch when one is unknown.
    pub key_ids: Vec<String>,
    // --- BGP (issue 14) ---
    /// The BGP digest disagreed with the control plane's copy: send the whole table next time.
    /// Only ever sent as `true` (and only to appliances that report BGP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bgp_full_table: bool,
    // --- end BGP ---
}

/// One published grant public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    /// Key id, as in the grant header.
    pub kid: String,
    /// Always [`KEY_ALG_ED25519`].
    pub alg: String,
    /// The raw 32-byte public key, base64url without padding.
    pub public_key: String,
    /// The SPKI PEM encoding of the same key.
    pub pem: String,
    /// Whether new grants are signed with it now (the others are still accepted).
    pub signing: bool,
}

/// `GET /v1/keys`: every public key whose grants may still be in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishedKeys {
    /// The keys, newest first.
    pub keys: Vec<PublishedKey>,
    /// Fetch again within this many seconds.
    pub refresh_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_round_trip_and_validation() {
        let text = r#"{"health":"warning","load":0.5,"drives":[{"path":"/c1","state":"degraded","used_bytes":1,"capacity_bytes":2}],"titles":["t1"]}"#;
        let hb: Heartbeat = serde_json::from_str(text).unwrap();
        assert_eq!(hb.health, Health::Warning);
        hb.validate().unwrap();
        let again: Heartbeat = serde_json::from_str(&serde_json::to_string(&hb).unwrap()).unwrap();
        assert_eq!(again, hb);

        let mut bad = hb.clone();
        bad.load = f64::NAN;
        assert!(bad.validate().unwrap_err().to_string().contains("load"));
        let mut bad = hb.clone();
        bad.titles.push("../etc".into());
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("titles[1]"));
        assert!(serde_json::from_str::<Heartbeat>(&text.replace("\"load\"", "\"lod\"")).is_err());
        assert!(Health::Ok < Health::Error);
    }
}
