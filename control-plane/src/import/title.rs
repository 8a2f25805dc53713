//! A packager title: `catalog.json` plus the sibling `manifest.mpd` and `master.m3u8`, checked
//! so that a manifest the session rewriter cannot handle is refused at import, not at play
//! time.

use std::collections::HashSet;

use protocol::catalog::CatalogEntry;

use crate::db::TitleRow;
use crate::manifest::{dash, hls, Location};
use crate::Error;

/// Parses a catalog entry; errors name `file` and the field.
pub fn parse_entry(text: &str, file: &str) -> Result<CatalogEntry, Error> {
    CatalogEntry::from_json(text).map_err(|e| match e {
        protocol::catalog::CatalogError::Invalid { field, reason } => {
            Error::import(file, field, reason)
        }
        protocol::catalog::CatalogError::Parse(m) => Error::import(file, "", m),
    })
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
    let entry = parse_entry(catalog_text, file)?;
    check_manifests(&entry, &dash_text, &hls_text)?;
    Ok(TitleRow {
        id: entry.title.clone(),
        catalog: entry.to_json(),
        dash: dash_text,
        hls: hls_text,
        imported_at: now,
    })
}
