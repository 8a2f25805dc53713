//! Imports: the policy file ([`policy`]), a packager title ([`title`]) and a content-keys file
//! ([`keys`]), plus the forecast feed ([`crate::fill::forecast`]); [`import_file`] recognizes
//! which by content and writes the validated rows. Every error names the file and the field.
//! Secrets in the policy (API keys, appliance credentials) are hashed before they are stored
//! and never logged.

use std::path::Path;

use protocol::catalog::CatalogEntry;
use protocol::content_keys::ContentKeys;

use crate::crypto::MasterKey;
use crate::db::Repository;
use crate::Error;

pub mod keys;
pub mod policy;
pub mod title;

pub use keys::key_rows;
pub use policy::{
    parse_utc, AccountDef, ApiKeyDef, ApplianceDef, ClusterDef, DeviceClassDef, GeoDef, Known,
    PlanDef, Policy, SiteDef, Time, WindowDef,
};
pub use title::{check_manifests, parse_entry, title_row};

/// The key system this licence server speaks.
pub const CLEAR_KEY: &str = "org.w3.clearkey";

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
        let entry = parse_entry(&text, &file)?;
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
