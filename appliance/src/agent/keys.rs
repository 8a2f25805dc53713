//! The on-disk key cache: the published grant public keys written as `<kid>.pub.pem` into the
//! appliance's key directory (the one `--public-keys` names, which [`crate::keys::load_dir`]
//! reads at start-up and on SIGHUP), each atomically (temporary name, fsync, rename). Keys that
//! are no longer published are removed. So an appliance that restarts during a control-plane
//! outage starts with the last keys it fetched.

use std::io::Write as _;
use std::path::Path;

use protocol::fleet::{PublishedKeys, KEY_ALG_ED25519};
use protocol::grant::PUBLIC_KEY_SUFFIX;

/// Why the published keys were not written.
#[derive(Debug, thiserror::Error)]
pub enum KeyCacheError {
    /// A published key is unusable (the field is named).
    #[error("GET /v1/keys: keys[{index}].{field}: {reason}")]
    Invalid {
        /// Position in `keys`.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Writing the cache failed.
    #[error("key cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn safe_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && !kid.starts_with('.')
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Writes `keys` into `dir`; returns whether anything on disk changed.
pub fn write(dir: &Path, keys: &PublishedKeys) -> Result<bool, KeyCacheError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| KeyCacheError::Io { path, source }
    };
    if keys.keys.is_empty() {
        return Err(KeyCacheError::Invalid {
            index: 0,
            field: "keys",
            reason: "no key published".into(),
        });
    }
    // Check every key before touching the directory.
    let mut ring = protocol::grant::KeyRing::new();
    for (index, k) in keys.keys.iter().enumerate() {
        if !safe_kid(&k.kid) {
            return Err(KeyCacheError::Invalid {
                index,
                field: "kid",
                reason: "not a safe file name ([A-Za-z0-9._-], not starting with a dot)".into(),
            });
        }
        if k.alg != KEY_ALG_ED25519 {
            return Err(KeyCacheError::Invalid {
                index,
                field: "alg",
                reason: format!("{:?} is not {KEY_ALG_ED25519}", k.alg),
            });
        }
        ring.insert_pem(&k.kid, &k.pem)
            .map_err(|e| KeyCacheError::Invalid {
                index,
                field: "pem",
                reason: e.to_string(),
            })?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut changed = false;
    for k in &keys.keys {
        let name = format!("{}{PUBLIC_KEY_SUFFIX}", k.kid);
        let path = dir.join(&name);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == k.pem) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(k.pem.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        changed = true;
    }
    let published: std::collections::HashSet<String> = keys
        .keys
        .iter()
        .map(|k| format!("{}{PUBLIC_KEY_SUFFIX}", k.kid))
        .collect();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(PUBLIC_KEY_SUFFIX) && !published.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            tracing::info!(
                file = name,
                "key no longer published: removed from the key cache"
            );
            changed = true;
        }
    }
    if changed {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::fleet::PublishedKey;
    use protocol::grant::SigningKey;

    fn published(kids: &[&str]) -> PublishedKeys {
        PublishedKeys {
            keys: kids
                .iter()
                .map(|kid| {
                    let k = SigningKey::from_seed(kid, [kid.len() as u8; 32]).unwrap();
                    PublishedKey {
                        kid: (*kid).into(),
                        alg: KEY_ALG_ED25519.into(),
                        public_key: String::new(),
                        pem: k.public_key_pem(),
                        signing: true,
                    }
                })
                .collect(),
            refresh_secs: 60,
        }
    }

    #[test]
    fn writes_replaces_and_refuses_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path(), &published(&["k1", "k22"])).unwrap());
        assert!(!write(dir.path(), &published(&["k1", "k22"])).unwrap());
        let ring = crate::keys::load_dir(dir.path()).unwrap();
        assert_eq!(ring.kids().count(), 2);
        assert!(write(dir.path(), &published(&["k22"])).unwrap());
        assert!(!dir.path().join("k1.pub.pem").exists());
        let mut bad = published(&["k3"]);
        bad.keys[0].kid = "../k3".into();
        let e = write(dir.path(), &bad).unwrap_err().to_string();
        assert!(e.contains("keys[0].kid"), "{e}");
        let mut bad = published(&["k3"]);
        bad.keys[0].pem = "junk".into();
        let e = write(dir.path(), &bad).unwrap_err().to_string();
        assert!(e.contains("keys[0].pem"), "{e}");
        assert!(
            dir.path().join("k22.pub.pem").exists(),
            "bad answer changed the cache"
        );
    }
}
