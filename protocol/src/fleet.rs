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
}

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
