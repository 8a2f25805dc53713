//! A content-keys file: checked against the stored title (every encrypted rendition's kid has a
//! key, the scheme matches the catalog) and sealed under the master key.

use std::collections::HashSet;

use protocol::catalog::CatalogEntry;
use protocol::content_keys::ContentKeys;

use crate::crypto::MasterKey;
use crate::db::KeyRow;
use crate::Error;

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
