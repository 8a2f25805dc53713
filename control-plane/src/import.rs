//! Imports: the policy file (plans, accounts, device classes, geo prefixes, title windows, sites,
//! clusters, appliances, playback API keys; TOML or JSON), a packager title (`catalog.json` plus
//! the sibling `manifest.mpd` and `master.m3u8`) and a content-keys file. Every error names the
//! file and the field. Secrets in the policy (API keys, appliance credentials) are hashed before
//! they are stored and never logged.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use protocol::catalog::{is_valid_segment, CatalogEntry, Tier};
use protocol::content_keys::ContentKeys;
use serde::Deserialize;

use crate::crypto::{digest, MasterKey};
use crate::db::{
    AccountRow, AccountStatus, ApiKeyRow, ApplianceRow, ClusterRow, DeviceClassRow, KeyRow,
    PlanRow, PolicyRows, Repository, TitleRow, WindowRow,
};
use crate::manifest::{dash, hls, Location};
use crate::prefix::Prefix;
use crate::steering::{AdminState, ClusterKind};
use crate::Error;

/// The key system this licence server speaks.
pub const CLEAR_KEY: &str = "org.w3.clearkey";

/// A policy file.
#[derive(Debug, Clone, Default, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoDef {
    /// CIDR prefix.
    pub prefix: String,
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
}

/// A time: Unix seconds or `YYYY-MM-DDTHH:MM:SSZ` (quoted in TOML).
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDef {
    /// Id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A cluster.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

    /// Validates and converts to rows. References may point at rows in this file or in `known`.
    pub fn to_rows(&self, file: &str, known: &Known) -> Result<PolicyRows, Error> {
        let bad = |field: String, reason: String| Error::import(file, field, reason);
        let id_rule = "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'";
        let mut rows = PolicyRows::default();
        let mut seen = BTreeSet::new();
        let mut unique = |kind: &str, field: String, id: &str| -> Result<(), Error> {
            if !is_valid_segment(id) {
                return Err(bad(field, format!("{id:?} {id_rule}")));
            }
            if !seen.insert((kind.to_owned(), id.to_owned())) {
                return Err(bad(field, format!("{id:?} is listed twice")));
            }
            Ok(())
        };
        let plans: HashSet<&str> = self.plans.iter().map(|p| p.id.as_str()).collect();
        for (i, p) in self.plans.iter().enumerate() {
            unique("plan", format!("plans[{i}].id"), &p.id)?;
            if p.max_streams == 0 || p.max_streams > 100 {
                return Err(bad(
                    format!("plans[{i}].max_streams"),
                    "must be 1..=100".into(),
                ));
            }
            rows.plans.push(PlanRow {
                id: p.id.clone(),
                max_tier: p.max_tier,
                max_streams: p.max_streams as i64,
            });
        }
        for (i, a) in self.accounts.iter().enumerate() {
            unique("account", format!("accounts[{i}].id"), &a.id)?;
            if !plans.contains(a.plan.as_str()) && !known.plans.contains(&a.plan) {
                return Err(bad(
                    format!("accounts[{i}].plan"),
                    format!("unknown plan {:?}", a.plan),
                ));
            }
            rows.accounts.push(AccountRow {
                id: a.id.clone(),
                plan_id: a.plan.clone(),
                status: a.status,
            });
        }
        for (i, d) in self.device_classes.iter().enumerate() {
            unique("device", format!("device_classes[{i}].id"), &d.id)?;
            if let Some(j) = d
                .key_systems
                .iter()
                .position(|k| k.is_empty() || k.len() > 128 || k.contains(char::is_whitespace))
            {
                return Err(bad(
                    format!("device_classes[{i}].key_systems[{j}]"),
                    "must be a key system name like org.w3.clearkey".into(),
                ));
            }
            rows.device_classes.push(DeviceClassRow {
                id: d.id.clone(),
                key_systems: d.key_systems.clone(),
                max_tier: d.max_tier,
            });
        }
        for (i, g) in self.geo.iter().enumerate() {
            let p: Prefix = g.prefix.parse().map_err(|e: crate::prefix::PrefixError| {
                bad(format!("geo[{i}].prefix"), e.to_string())
            })?;
            if !is_country(&g.country) {
                return Err(bad(
                    format!("geo[{i}].country"),
                    format!("{:?} must be an ISO 3166-1 alpha-2 code like NZ", g.country),
                ));
            }
            rows.geo.push((p.to_string(), g.country.clone()));
        }
        let mut windows = BTreeSet::new();
        for (i, w) in self.windows.iter().enumerate() {
            if !is_valid_segment(&w.title) {
                return Err(bad(
                    format!("windows[{i}].title"),
                    format!("{:?} {id_rule}", w.title),
                ));
            }
            if !is_country(&w.country) {
                return Err(bad(
                    format!("windows[{i}].country"),
                    format!("{:?} must be an ISO 3166-1 alpha-2 code", w.country),
                ));
            }
            let start = w.start.resolve().ok_or_else(|| {
                bad(
                    format!("windows[{i}].start"),
                    "must be Unix seconds or YYYY-MM-DDTHH:MM:SSZ".into(),
                )
            })?;
            let end = w.end.resolve().ok_or_else(|| {
                bad(
                    format!("windows[{i}].end"),
                    "must be Unix seconds or YYYY-MM-DDTHH:MM:SSZ".into(),
                )
            })?;
            if end <= start {
                return Err(bad(
                    format!("windows[{i}].end"),
                    "must be after start".into(),
                ));
            }
            if !windows.insert((w.title.clone(), w.country.clone())) {
                return Err(bad(
                    format!("windows[{i}]"),
                    format!("a second window for {} in {}", w.title, w.country),
                ));
            }
            rows.windows.push(WindowRow {
                title: w.title.clone(),
                country: w.country.clone(),
                starts_at: start,
                ends_at: end,
                max_tier: w.max_tier,
            });
        }
        let sites: HashSet<&str> = self.sites.iter().map(|s| s.id.as_str()).collect();
        for (i, s) in self.sites.iter().enumerate() {
            unique("site", format!("sites[{i}].id"), &s.id)?;
            rows.sites
                .push((s.id.clone(), s.name.clone().unwrap_or_else(|| s.id.clone())));
        }
        let clusters: HashSet<&str> = self.clusters.iter().map(|c| c.id.as_str()).collect();
        let cluster_known = |c: &str| clusters.contains(c) || known.clusters.contains(c);
        for (i, c) in self.clusters.iter().enumerate() {
            unique("cluster", format!("clusters[{i}].id"), &c.id)?;
            if !sites.contains(c.site.as_str()) && !known.sites.contains(&c.site) {
                return Err(bad(
                    format!("clusters[{i}].site"),
                    format!("unknown site {:?}", c.site),
                ));
            }
            for (j, f) in c.fallbacks.iter().enumerate() {
                if f == &c.id || !cluster_known(f) {
                    return Err(bad(
                        format!("clusters[{i}].fallbacks[{j}]"),
                        format!("{f:?} is not another known cluster"),
                    ));
                }
            }
            for (j, country) in c.countries.iter().enumerate() {
                if !is_country(country) {
                    return Err(bad(
                        format!("clusters[{i}].countries[{j}]"),
                        format!("{country:?} must be an ISO 3166-1 alpha-2 code like NZ"),
                    ));
                }
            }
            rows.clusters.push(ClusterRow {
                id: c.id.clone(),
                site_id: c.site.clone(),
                kind: c.kind,
                fallbacks: c.fallbacks.clone(),
                countries: c.countries.clone(),
            });
        }
        for (i, a) in self.appliances.iter().enumerate() {
            unique("appliance", format!("appliances[{i}].id"), &a.id)?;
            if !cluster_known(&a.cluster) {
                return Err(bad(
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
                return Err(bad(
                    format!("appliances[{i}].address"),
                    "must be a host name or IP address".into(),
                ));
            }
            if a.port == 0 {
                return Err(bad(
                    format!("appliances[{i}].port"),
                    "must be 1..=65535".into(),
                ));
            }
            let mut prefixes = Vec::new();
            for (j, p) in a.prefixes.iter().enumerate() {
                let p: Prefix = p.parse().map_err(|e: crate::prefix::PrefixError| {
                    bad(format!("appliances[{i}].prefixes[{j}]"), e.to_string())
                })?;
                prefixes.push(p.to_string());
            }
            let cred = match (&a.credential, &a.credential_sha256) {
                (Some(c), None) if c.len() >= 16 => digest(c),
                (Some(_), None) => {
                    return Err(bad(
                        format!("appliances[{i}].credential"),
                        "must be at least 16 characters".into(),
                    ))
                }
                (None, Some(h)) if is_sha256_hex(h) => h.clone(),
                (None, Some(_)) => {
                    return Err(bad(
                        format!("appliances[{i}].credential_sha256"),
                        "must be 64 lowercase hex digits".into(),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(bad(
                        format!("appliances[{i}].credential"),
                        "give credential or credential_sha256, not both".into(),
                    ))
                }
                // No credential: it cannot send heartbeats (fits admin_state = online).
                (None, None) => String::new(),
            };
            if let Some(ts) = &a.titles {
                if let Some(j) = ts.iter().position(|t| !is_valid_segment(t)) {
                    return Err(bad(
                        format!("appliances[{i}].titles[{j}]"),
                        format!("not a title id: {id_rule}"),
                    ));
                }
            }
            rows.appliances.push(ApplianceRow::configured(
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
        for (i, k) in self.api_keys.iter().enumerate() {
            unique("api_key", format!("api_keys[{i}].id"), &k.id)?;
            let h = match (&k.secret, &k.secret_sha256) {
                (Some(s), None) if s.len() >= 16 => digest(s),
                (Some(_), None) => {
                    return Err(bad(
                        format!("api_keys[{i}].secret"),
                        "must be at least 16 characters".into(),
                    ))
                }
                (None, Some(h)) if is_sha256_hex(h) => h.clone(),
                (None, Some(_)) => {
                    return Err(bad(
                        format!("api_keys[{i}].secret_sha256"),
                        "must be 64 lowercase hex digits".into(),
                    ))
                }
                _ => {
                    return Err(bad(
                        format!("api_keys[{i}].secret"),
                        "give exactly one of secret or secret_sha256".into(),
                    ))
                }
            };
            rows.api_keys.push(ApiKeyRow {
                id: k.id.clone(),
                secret_sha256: h,
            });
        }
        Ok(rows)
    }
}

/// Checks that a title's manifests can be rewritten for a session (parses them with every
/// rendition allowed), so a broken manifest is refused at import, not at play time.
pub fn check_manifests(entry: &CatalogEntry, dash_text: &str, hls_text: &str) -> Result<(), Error> {
    let loc = [Location {
        id: "check".into(),
        base_url: format!("http://check.invalid/g/x/{}/", entry.title),
    }];
    let ids: HashSet<&str> = entry.renditions.iter().map(|r| r.id.as_str()).collect();
    let keep = |r: &str| ids.contains(r);
    dash::rewrite_mpd(dash_text, &keep, &loc, "http://check.invalid/s")
        .map_err(|e| Error::import(&entry.manifests.dash, "", e.to_string()))?;
    hls::rewrite_master(hls_text, &keep, &loc, "http://check.invalid/s")
        .map_err(|e| Error::import(&entry.manifests.hls, "", e.to_string()))?;
    Ok(())
}

/// Validates a title (catalog entry and manifests) into a row.
pub fn title_row(
    catalog_text: &str,
    dash_text: String,
    hls_text: String,
    file: &str,
    now: i64,
) -> Result<TitleRow, Error> {
    let entry = CatalogEntry::from_json(catalog_text).map_err(|e| match e {
        protocol::catalog::CatalogError::Invalid { field, reason } => {
            Error::import(file, field, reason)
        }
        protocol::catalog::CatalogError::Parse(m) => Error::import(file, "", m),
    })?;
    check_manifests(&entry, &dash_text, &hls_text)?;
    Ok(TitleRow {
        id: entry.title.clone(),
        catalog: entry.to_json(),
        dash: dash_text,
        hls: hls_text,
        imported_at: now,
    })
}

/// Validates content keys against the stored title and seals them under the master key.
pub fn key_rows(
    keys: &ContentKeys,
    title: Option<&CatalogEntry>,
    master: &MasterKey,
    file: &str,
) -> Result<Vec<KeyRow>, Error> {
    let Some(entry) = title else {
        return Err(Error::import(
            file,
            "title",
            format!(
                "title {:?} is not imported: import its catalog.json first",
                keys.title
            ),
        ));
    };
    let kids: HashSet<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
    for (i, r) in entry.renditions.iter().enumerate() {
        if let Some(k) = &r.key_id {
            if !kids.contains(k.as_str()) {
                return Err(Error::import(
                    file,
                    "keys",
                    format!("no key for kid {k} of rendition {} (renditions[{i}])", r.id),
                ));
            }
        }
    }
    if let Some(enc) = &entry.encryption {
        if enc.scheme != keys.scheme.as_str() {
            return Err(Error::import(
                file,
                "scheme",
                format!(
                    "{} does not match the catalog's {}",
                    keys.scheme.as_str(),
                    enc.scheme
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for k in &keys.keys {
        let aad = format!("{}/{}", keys.title, k.kid);
        out.push(KeyRow {
            title: keys.title.clone(),
            kid: k.kid.clone(),
            scheme: keys.scheme,
            tier: k.tier,
            track_type: k.track_type,
            sealed: master.seal(&k.key_bytes(), &aad)?,
        });
    }
    Ok(out)
}

/// What one imported file was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A policy file, with row counts.
    Policy(String),
    /// A title.
    Title(String),
    /// Content keys of a title.
    Keys(String, usize),
    /// A forecast feed: countries replaced, titles listed.
    Forecast(usize, usize),
}

/// Imports one file, recognized by content: TOML → policy; JSON with `renditions` → catalog
/// entry (plus sibling manifests); JSON with `keys` and `scheme` → content keys; JSON with
/// `forecast` → the popularity forecast feed; other JSON → policy.
pub async fn import_file(
    repo: &dyn Repository,
    master: &MasterKey,
    path: &Path,
    now: i64,
) -> Result<Imported, Error> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        return import_policy(repo, &text, true, &file).await;
    }
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::import(&file, "", e.to_string()))?;
    if value.get("renditions").is_some() {
        let entry = CatalogEntry::from_json(&text).map_err(|e| match e {
            protocol::catalog::CatalogError::Invalid { field, reason } => {
                Error::import(&file, field, reason)
            }
            protocol::catalog::CatalogError::Parse(m) => Error::import(&file, "", m),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dash_path = dir.join(&entry.manifests.dash);
        let hls_path = dir.join(&entry.manifests.hls);
        let dash_text =
            std::fs::read_to_string(&dash_path).map_err(|e| Error::io(&dash_path, e))?;
        let hls_text = std::fs::read_to_string(&hls_path).map_err(|e| Error::io(&hls_path, e))?;
        let row = title_row(&text, dash_text, hls_text, &file, now)?;
        repo.put_title(&row).await?;
        return Ok(Imported::Title(row.id));
    }
    if value.get("keys").is_some() && value.get("scheme").is_some() {
        return import_keys(repo, master, &text, &file).await;
    }
    if value.get("forecast").is_some() {
        return import_forecast(repo, &text, &file, now).await;
    }
    import_policy(repo, &text, false, &file).await
}

/// Imports a policy document.
pub async fn import_policy(
    repo: &dyn Repository,
    text: &str,
    is_toml: bool,
    file: &str,
) -> Result<Imported, Error> {
    let policy = Policy::parse(text, is_toml, file)?;
    let snap = repo.load_snapshot().await?;
    let known = Known {
        plans: snap.plans.iter().map(|p| p.id.clone()).collect(),
        sites: snap.sites.iter().map(|s| s.0.clone()).collect(),
        clusters: snap.clusters.iter().map(|c| c.id.clone()).collect(),
    };
    let rows = policy.to_rows(file, &known)?;
    repo.import_policy(&rows).await?;
    Ok(Imported::Policy(format!(
        "{} plans, {} accounts, {} device classes, {} geo prefixes, {} windows, {} sites, {} clusters, {} appliances, {} API keys",
        rows.plans.len(), rows.accounts.len(), rows.device_classes.len(), rows.geo.len(), rows.windows.len(),
        rows.sites.len(), rows.clusters.len(), rows.appliances.len(), rows.api_keys.len()
    )))
}

/// Imports a forecast feed ([`crate::fill::forecast`]): replaces the forecast of each country
/// it lists.
pub async fn import_forecast(
    repo: &dyn Repository,
    text: &str,
    file: &str,
    now: i64,
) -> Result<Imported, Error> {
    let feed = crate::fill::forecast::ForecastFeed::parse(text, file)?;
    let (countries, rows) = feed.to_rows(file)?;
    repo.put_forecast(&countries, &rows, now).await?;
    Ok(Imported::Forecast(countries.len(), rows.len()))
}

/// Imports a content-keys document.
pub async fn import_keys(
    repo: &dyn Repository,
    master: &MasterKey,
    text: &str,
    file: &str,
) -> Result<Imported, Error> {
    let keys = ContentKeys::from_json(text).map_err(|e| match e {
        protocol::content_keys::ContentKeysError::Invalid { field, reason } => {
            Error::import(file, field, reason)
        }
        protocol::content_keys::ContentKeysError::Parse(m) => Error::import(file, "", m),
    })?;
    let snap = repo.load_snapshot().await?;
    let entry = snap
        .titles
        .iter()
        .find(|(id, _)| id == &keys.title)
        .and_then(|(_, c)| CatalogEntry::from_json(c).ok());
    let rows = key_rows(&keys, entry.as_ref(), master, file)?;
    repo.put_keys(&keys.title, &rows).await?;
    Ok(Imported::Keys(keys.title.clone(), rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2026-11-26T03:00:00Z"), Some(1_795_662_000));
        assert_eq!(parse_utc("2000-02-29T12:00:00Z"), Some(951_825_600));
        assert_eq!(parse_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("2026-11-26 03:00:00Z"), None);
    }

    fn err_field(toml_text: &str) -> String {
        let p = Policy::parse(toml_text, true, "p.toml");
        match p.and_then(|p| p.to_rows("p.toml", &Known::default())) {
            Err(Error::Import { field, .. }) => field,
            other => panic!("expected an import error, got {other:?}"),
        }
    }

    #[test]
    fn policy_errors_name_the_field() {
        assert_eq!(
            err_field("[[plans]]\nid = \"p\"\nmax_tier = \"HD\"\nmax_streams = 0\n"),
            "plans[0].max_streams"
        );
        assert_eq!(
            err_field("[[accounts]]\nid = \"a\"\nplan = \"nope\"\nstatus = \"active\"\n"),
            "accounts[0].plan"
        );
        assert_eq!(
            err_field("[[geo]]\nprefix = \"10.0.0.1/8\"\ncountry = \"NZ\"\n"),
            "geo[0].prefix"
        );
        assert_eq!(
            err_field("[[geo]]\nprefix = \"10.0.0.0/8\"\ncountry = \"nz\"\n"),
            "geo[0].country"
        );
        assert_eq!(err_field("[[windows]]\ntitle = \"t\"\ncountry = \"NZ\"\nstart = 10\nend = 5\nmax_tier = \"HD\"\n"), "windows[0].end");
        assert_eq!(err_field("[[sites]]\nid = \"s\"\n[[clusters]]\nid = \"c\"\nsite = \"s\"\nkind = \"embedded\"\nfallbacks = [\"x\"]\n"), "clusters[0].fallbacks[0]");
        assert_eq!(
            err_field("[[api_keys]]\nid = \"k\"\nsecret = \"short\"\n"),
            "api_keys[0].secret"
        );
        assert_eq!(err_field("[[plans]]\nid = \"p\"\nmax_tier = \"HD\"\nmax_streams = 1\n[[plans]]\nid = \"p\"\nmax_tier = \"HD\"\nmax_streams = 1\n"), "plans[1].id");
        // serde-level errors carry the key name in the message.
        match Policy::parse(
            "[[plans]]\nid = \"p\"\nmax_tier = \"XD\"\nmax_streams = 1\n",
            true,
            "p.toml",
        ) {
            Err(e) => assert!(
                e.to_string().contains("max_tier") || e.to_string().contains("XD"),
                "{e}"
            ),
            Ok(_) => panic!("bad tier accepted"),
        }
        match Policy::parse(
            "[[plans]]\nid = \"p\"\nmax_tier = \"HD\"\nmax_streamz = 1\n",
            true,
            "p.toml",
        ) {
            Err(e) => assert!(e.to_string().contains("max_streamz"), "{e}"),
            Ok(_) => panic!("unknown key accepted"),
        }
    }
}
