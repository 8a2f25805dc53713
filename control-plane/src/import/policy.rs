//! The policy file: plans, accounts, device classes, geo prefixes, title windows, sites,
//! clusters, appliances and playback API keys (TOML or JSON), validated table by table into
//! [`PolicyRows`]. Every error names the file and the field; secrets (API keys, appliance
//! credentials) are hashed here and never logged.

use std::collections::{BTreeSet, HashSet};
use utoipa::ToSchema;

use protocol::catalog::{is_valid_segment, Tier};
use serde::Deserialize;

use crate::crypto::digest;
use crate::db::{
    AccountRow, AccountStatus, ApiKeyRow, ApplianceRow, ClusterRow, DeviceClassRow, PlanRow,
    PolicyRows, WindowRow,
};
use crate::prefix::Prefix;
use crate::steering::{AdminState, ClusterKind};
use crate::Error;

const ID_RULE: &str = "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'";

/// A policy file.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Plans.
    #[serde(default)]
    pub plans: Vec<PlanDef>,
    /// Accounts.
    #[serde(default)]
    pub accounts: Vec<AccountDef>,
    /// Device classes.
    #[serde(default)]
    pub device_classes: Vec<DeviceClassDef>,
    /// Prefix → country table.
    #[serde(default)]
    pub geo: Vec<GeoDef>,
    /// Title windows.
    #[serde(default)]
    pub windows: Vec<WindowDef>,
    /// Sites.
    #[serde(default)]
    pub sites: Vec<SiteDef>,
    /// Clusters.
    #[serde(default)]
    pub clusters: Vec<ClusterDef>,
    /// Appliances.
    #[serde(default)]
    pub appliances: Vec<ApplianceDef>,
    /// Playback-service API keys.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyDef>,
}

/// A plan.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDef {
    /// Id.
    pub id: String,
    /// Highest tier.
    pub max_tier: Tier,
    /// Concurrent streams (1..=100).
    pub max_streams: u32,
}

/// An account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountDef {
    /// Id.
    pub id: String,
    /// Plan id.
    pub plan: String,
    /// Status.
    pub status: AccountStatus,
}

/// A device class.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceClassDef {
    /// Id.
    pub id: String,
    /// EME key systems it supports, e.g. `org.w3.clearkey`, `com.widevine.alpha`.
    pub key_systems: Vec<String>,
    /// Highest tier it may play.
    pub max_tier: Tier,
}

/// One prefix → country row.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoDef {
    /// CIDR prefix.
    pub prefix: String,
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
}

/// A time: Unix seconds or `YYYY-MM-DDTHH:MM:SSZ` (quoted in TOML).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Time {
    /// Unix seconds.
    Unix(i64),
    /// RFC 3339 in UTC.
    Text(String),
}

impl Time {
    fn resolve(&self) -> Option<i64> {
        match self {
            Time::Unix(s) => Some(*s),
            Time::Text(t) => parse_utc(t),
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_utc(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d, h, mi, s) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + h * 3600 + mi * 60 + s)
}

/// A title window.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    /// Title id.
    pub title: String,
    /// Country.
    pub country: String,
    /// Opens.
    pub start: Time,
    /// Closes (exclusive).
    pub end: Time,
    /// Highest tier in this window.
    pub max_tier: Tier,
}

/// A site.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteDef {
    /// Id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A cluster.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterDef {
    /// Id (the grant audience).
    pub id: String,
    /// Site id.
    pub site: String,
    /// Kind.
    pub kind: ClusterKind,
    /// Fallback clusters, in order.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The countries of its content region (ISO 3166-1 alpha-2): the fill planner ranks titles
    /// by the popularity in these countries. Empty (the default) = every country.
    #[serde(default)]
    pub countries: Vec<String>,
}

/// An appliance.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplianceDef {
    /// Id (also its HLS pathway id).
    pub id: String,
    /// Cluster id.
    pub cluster: String,
    /// Host players reach it at.
    pub address: String,
    /// HTTP port.
    pub port: u16,
    /// Prefixes it announces (CIDR).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Heartbeat credential (stored hashed).
    #[serde(default)]
    pub credential: Option<String>,
    /// Or its SHA-256, hex.
    #[serde(default)]
    pub credential_sha256: Option<String>,
    /// Operator override.
    #[serde(default = "reported")]
    pub admin_state: AdminState,
    /// For `online` appliances without a fleet agent: the titles held (default: every title).
    #[serde(default)]
    pub titles: Option<Vec<String>>,
}

fn reported() -> AdminState {
    AdminState::Reported
}

/// A playback-service API key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyDef {
    /// Id.
    pub id: String,
    /// The secret (stored hashed).
    #[serde(default)]
    pub secret: Option<String>,
    /// Or its SHA-256, hex.
    #[serde(default)]
    pub secret_sha256: Option<String>,
}

/// What is already stored, for reference checks.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Plan ids.
    pub plans: HashSet<String>,
    /// Site ids.
    pub sites: HashSet<String>,
    /// Cluster ids.
    pub clusters: HashSet<String>,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_country(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl Policy {
    /// Parses TOML or JSON (by `is_toml`); errors name the file and the key.
    pub fn parse(text: &str, is_toml: bool, file: &str) -> Result<Policy, Error> {
        if is_toml {
            toml::from_str(text)
                .map_err(|e| Error::import(file, "", e.to_string().trim_end().to_owned()))
        } else {
            serde_json::from_str(text).map_err(|e| Error::import(file, "", e.to_string()))
        }
    }

    /// Validates and converts to rows, table by table. References may point at rows in this
    /// file or in `known`.
    pub fn to_rows(&self, file: &str, known: &Known) -> Result<PolicyRows, Error> {
        let mut v = Validator {
            policy: self,
            file,
            known,
            seen: BTreeSet::new(),
            rows: PolicyRows::default(),
        };
        v.plans()?;
        v.accounts()?;
        v.device_classes()?;
        v.geo()?;
        v.windows()?;
        v.sites()?;
        v.clusters()?;
        v.appliances()?;
        v.api_keys()?;
        Ok(v.rows)
    }
}

/// One policy's validation: the ids seen so far (per kind) and the rows made.
struct Validator<'a> {
    policy: &'a Policy,
    file: &'a str,
    known: &'a Known,
    seen: BTreeSet<(&'static str, String)>,
    rows: PolicyRows,
}

impl Validator<'_> {
    fn bad(&self, field: String, reason: String) -> Error {
        Error::import(self.file, field, reason)
    }

    /// A valid id not listed before among the `kind`s.
    fn unique(&mut self, kind: &'static str, field: String, id: &str) -> Result<(), Error> {
        if !is_valid_segment(id) {
            return Err(self.bad(field, format!("{id:?} {ID_RULE}")));
        }
        if !self.seen.insert((kind, id.to_owned())) {
            return Err(self.bad(field, format!("{id:?} is listed twice")));
        }
        Ok(())
    }

    /// Plans: unique ids, 1..=100 streams.
    fn plans(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        for (i, p) in pol.plans.iter().enumerate() {
            self.unique("plan", format!("plans[{i}].id"), &p.id)?;
            if p.max_streams == 0 || p.max_streams > 100 {
                return Err(self.bad(format!("plans[{i}].max_streams"), "must be 1..=100".into()));
            }
            self.rows.plans.push(PlanRow {
                id: p.id.clone(),
                max_tier: p.max_tier,
                max_streams: p.max_streams as i64,
            });
        }
        Ok(())
    }

    /// Accounts: unique ids, a known plan.
    fn accounts(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        let known = self.known;
        let plans: HashSet<&str> = pol.plans.iter().map(|p| p.id.as_str()).collect();
        for (i, a) in pol.accounts.iter().enumerate() {
            self.unique("account", format!("accounts[{i}].id"), &a.id)?;
            if !plans.contains(a.plan.as_str()) && !known.plans.contains(&a.plan) {
                return Err(self.bad(
                    format!("accounts[{i}].plan"),
                    format!("unknown plan {:?}", a.plan),
                ));
            }
            self.rows.accounts.push(AccountRow {
                id: a.id.clone(),
                plan_id: a.plan.clone(),
                status: a.status,
            });
        }
        Ok(())
    }

    /// Device classes: unique ids, key system names.
    fn device_classes(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        for (i, d) in pol.device_classes.iter().enumerate() {
            self.unique("device", format!("device_classes[{i}].id"), &d.id)?;
            if let Some(j) = d
                .key_systems
                .iter()
                .position(|k| k.is_empty() || k.len() > 128 || k.contains(char::is_whitespace))
            {
                return Err(self.bad(
                    format!("device_classes[{i}].key_systems[{j}]"),
                    "must be a key system name like org.w3.clearkey".into(),
                ));
            }
            self.rows.device_classes.push(DeviceClassRow {
                id: d.id.clone(),
                key_systems: d.key_systems.clone(),
                max_tier: d.max_tier,
            });
        }
        Ok(())
    }

    /// Geo prefixes: canonical CIDR, ISO country codes.
    fn geo(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        for (i, g) in pol.geo.iter().enumerate() {
            let p: Prefix = g.prefix.parse().map_err(|e: crate::prefix::PrefixError| {
                self.bad(format!("geo[{i}].prefix"), e.to_string())
            })?;
            if !is_country(&g.country) {
                return Err(self.bad(
                    format!("geo[{i}].country"),
                    format!("{:?} must be an ISO 3166-1 alpha-2 code like NZ", g.country),
                ));
            }
            self.rows.geo.push((p.to_string(), g.country.clone()));
        }
        Ok(())
    }

    /// Windows: a valid title id, a country, start before end, one per title and country.
    fn windows(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        let mut windows = BTreeSet::new();
        for (i, w) in pol.windows.iter().enumerate() {
            if !is_valid_segment(&w.title) {
                return Err(self.bad(
                    format!("windows[{i}].title"),
                    format!("{:?} {ID_RULE}", w.title),
                ));
            }
            if !is_country(&w.country) {
                return Err(self.bad(
                    format!("windows[{i}].country"),
                    format!("{:?} must be an ISO 3166-1 alpha-2 code", w.country),
                ));
            }
            let start = w.start.resolve().ok_or_else(|| {
                self.bad(
                    format!("windows[{i}].start"),
                    "must be Unix seconds or YYYY-MM-DDTHH:MM:SSZ".into(),
                )
            })?;
            let end = w.end.resolve().ok_or_else(|| {
                self.bad(
                    format!("windows[{i}].end"),
                    "must be Unix seconds or YYYY-MM-DDTHH:MM:SSZ".into(),
                )
            })?;
            if end <= start {
                return Err(self.bad(format!("windows[{i}].end"), "must be after start".into()));
            }
            if !windows.insert((w.title.clone(), w.country.clone())) {
                return Err(self.bad(
                    format!("windows[{i}]"),
                    format!("a second window for {} in {}", w.title, w.country),
                ));
            }
            self.rows.windows.push(WindowRow {
                title: w.title.clone(),
                country: w.country.clone(),
                starts_at: start,
                ends_at: end,
                max_tier: w.max_tier,
            });
        }
        Ok(())
    }

    /// Sites: unique ids; the name defaults to the id.
    fn sites(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        for (i, s) in pol.sites.iter().enumerate() {
            self.unique("site", format!("sites[{i}].id"), &s.id)?;
            self.rows
                .sites
                .push((s.id.clone(), s.name.clone().unwrap_or_else(|| s.id.clone())));
        }
        Ok(())
    }

    /// Clusters: unique ids, a known site, fallbacks to other known clusters, country codes.
    fn clusters(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        let known = self.known;
        let sites: HashSet<&str> = pol.sites.iter().map(|s| s.id.as_str()).collect();
        let clusters: HashSet<&str> = pol.clusters.iter().map(|c| c.id.as_str()).collect();
        let cluster_known = |c: &str| clusters.contains(c) || known.clusters.contains(c);
        for (i, c) in pol.clusters.iter().enumerate() {
            self.unique("cluster", format!("clusters[{i}].id"), &c.id)?;
            if !sites.contains(c.site.as_str()) && !known.sites.contains(&c.site) {
                return Err(self.bad(
                    format!("clusters[{i}].site"),
                    format!("unknown site {:?}", c.site),
                ));
            }
            for (j, f) in c.fallbacks.iter().enumerate() {
                if f == &c.id || !cluster_known(f) {
                    return Err(self.bad(
                        format!("clusters[{i}].fallbacks[{j}]"),
                        format!("{f:?} is not another known cluster"),
                    ));
                }
            }
            for (j, country) in c.countries.iter().enumerate() {
                if !is_country(country) {
                    return Err(self.bad(
                        format!("clusters[{i}].countries[{j}]"),
                        format!("{country:?} must be an ISO 3166-1 alpha-2 code like NZ"),
                    ));
                }
            }
            self.rows.clusters.push(ClusterRow {
                id: c.id.clone(),
                site_id: c.site.clone(),
                kind: c.kind,
                fallbacks: c.fallbacks.clone(),
                countries: c.countries.clone(),
            });
        }
        Ok(())
    }

    /// Appliances: unique ids, a known cluster, host, port, prefixes, one credential form, title ids.
    fn appliances(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        let known = self.known;
        let clusters: HashSet<&str> = pol.clusters.iter().map(|c| c.id.as_str()).collect();
        let cluster_known = |c: &str| clusters.contains(c) || known.clusters.contains(c);
        for (i, a) in pol.appliances.iter().enumerate() {
            self.unique("appliance", format!("appliances[{i}].id"), &a.id)?;
            if !cluster_known(&a.cluster) {
                return Err(self.bad(
                    format!("appliances[{i}].cluster"),
                    format!("unknown cluster {:?}", a.cluster),
                ));
            }
            if a.address.is_empty()
                || a.address.len() > 253
                || !a.address.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
            {
                return Err(self.bad(
                    format!("appliances[{i}].address"),
                    "must be a host name or IP address".into(),
                ));
            }
            if a.port == 0 {
                return Err(self.bad(format!("appliances[{i}].port"), "must be 1..=65535".into()));
            }
            let mut prefixes = Vec::new();
            for (j, p) in a.prefixes.iter().enumerate() {
                let p: Prefix = p.parse().map_err(|e: crate::prefix::PrefixError| {
                    self.bad(format!("appliances[{i}].prefixes[{j}]"), e.to_string())
                })?;
                prefixes.push(p.to_string());
            }
            let cred = match (&a.credential, &a.credential_sha256) {
                (Some(c), None) if c.len() >= 16 => digest(c),
                (Some(_), None) => {
                    return Err(self.bad(
                        format!("appliances[{i}].credential"),
                        "must be at least 16 characters".into(),
                    ))
                }
                (None, Some(h)) if is_sha256_hex(h) => h.clone(),
                (None, Some(_)) => {
                    return Err(self.bad(
                        format!("appliances[{i}].credential_sha256"),
                        "must be 64 lowercase hex digits".into(),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(self.bad(
                        format!("appliances[{i}].credential"),
                        "give credential or credential_sha256, not both".into(),
                    ))
                }
                // No credential: it cannot send heartbeats (fits admin_state = online).
                (None, None) => String::new(),
            };
            if let Some(ts) = &a.titles {
                if let Some(j) = ts.iter().position(|t| !is_valid_segment(t)) {
                    return Err(self.bad(
                        format!("appliances[{i}].titles[{j}]"),
                        format!("not a title id: {ID_RULE}"),
                    ));
                }
            }
            self.rows.appliances.push(ApplianceRow::configured(
                a.id.clone(),
                a.cluster.clone(),
                a.address.clone(),
                a.port as i64,
                prefixes,
                cred,
                a.admin_state,
                a.titles.clone(),
            ));
        }
        Ok(())
    }

    /// Playback API keys: unique ids, exactly one of secret or its SHA-256.
    fn api_keys(&mut self) -> Result<(), Error> {
        let pol = self.policy;
        for (i, k) in pol.api_keys.iter().enumerate() {
            self.unique("api_key", format!("api_keys[{i}].id"), &k.id)?;
            let h = match (&k.secret, &k.secret_sha256) {
                (Some(s), None) if s.len() >= 16 => digest(s),
                (Some(_), None) => {
                    return Err(self.bad(
                        format!("api_keys[{i}].secret"),
                        "must be at least 16 characters".into(),
                    ))
                }
                (None, Some(h)) if is_sha256_hex(h) => h.clone(),
                (None, Some(_)) => {
                    return Err(self.bad(
                        format!("api_keys[{i}].secret_sha256"),
                        "must be 64 lowercase hex digits".into(),
                    ))
                }
                _ => {
                    return Err(self.bad(
                        format!("api_keys[{i}].secret"),
                        "give exactly one of secret or secret_sha256".into(),
                    ))
                }
            };
            self.rows.api_keys.push(ApiKeyRow {
                id: k.id.clone(),
                secret_sha256: h,
            });
        }
        Ok(())
    }
}
