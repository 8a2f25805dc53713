//! Grant signing keys: a directory of `<kid>.key.pem` files (PKCS#8, mode 0600), generated on
//! first start, rotated with an overlap.
//!
//! Key ids are `cp-<created unix seconds>-<4 random hex>`, so a key's age is in its name (keys
//! with other names, configured by hand, take the file's modification time). Rotation, checked
//! by [`KeyStore::rotate_if_due`]:
//! - when the newest key is older than `rotate - prepublish`, a new key is made and published at
//!   once (`GET /v1/keys`), but signs only once it is `prepublish` old, so appliances that poll
//!   the key set have it before the first grant it signs reaches them;
//! - a key stays published until the key that replaced it has signed for longer than the longest
//!   grant lifetime plus the verifiers' clock leeway, so every grant in flight stays valid; then
//!   its file is renamed `<kid>.key.pem.retired`.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use protocol::fleet::{PublishedKey, KEY_ALG_ED25519};
use protocol::grant::{SigningKey, CLOCK_LEEWAY_SECS, PRIVATE_KEY_SUFFIX};
use rand::RngCore as _;

use crate::Error;

/// One key and its creation time.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Created (Unix seconds).
    pub created: u64,
    /// The key.
    pub key: Arc<SigningKey>,
}

/// Rotation timing.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Make a new key this often.
    pub rotate_secs: u64,
    /// Publish a new key this long before it signs.
    pub prepublish_secs: u64,
    /// Longest grant lifetime.
    pub grant_ttl_secs: u64,
}

/// The signing keys.
#[derive(Debug)]
pub struct KeyStore {
    dir: Option<PathBuf>,
    rotation: Rotation,
    keys: RwLock<Vec<StoredKey>>,
}

fn kid_created(kid: &str) -> Option<u64> {
    kid.strip_prefix("cp-")?.split('-').next()?.parse().ok()
}

fn new_key(now: u64) -> Result<SigningKey, Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let mut tag = [0u8; 2];
    rand::rngs::OsRng.fill_bytes(&mut tag);
    let kid = format!("cp-{now}-{:02x}{:02x}", tag[0], tag[1]);
    SigningKey::from_seed(&kid, seed).map_err(|e| Error::Key(e.to_string()))
}

fn write_private(dir: &Path, key: &SigningKey) -> Result<(), Error> {
    let path = dir.join(format!("{}{PRIVATE_KEY_SUFFIX}", key.kid()));
    let tmp = dir.join(format!(".{}.tmp", key.kid()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(key.to_pkcs8_pem().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

impl KeyStore {
    /// Keys held in memory only (tests, benchmarks): one fresh key.
    pub fn ephemeral(rotation: Rotation, now: u64) -> Result<KeyStore, Error> {
        let key = new_key(now)?;
        Ok(KeyStore {
            dir: None,
            rotation,
            keys: RwLock::new(vec![StoredKey {
                created: now,
                key: Arc::new(key),
            }]),
        })
    }

    /// Loads every `*.key.pem` in `dir` (created with mode 0700 if missing) and generates a key if
    /// there is none.
    pub fn open(dir: &Path, rotation: Rotation, now: u64) -> Result<KeyStore, Error> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, e))?;
        }
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(kid) = name.strip_suffix(PRIVATE_KEY_SUFFIX) else {
                continue;
            };
            let path = entry.path();
            let pem = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let key = SigningKey::from_pkcs8_pem(kid, &pem)
                .map_err(|e| Error::Key(format!("{}: {e}", path.display())))?;
            let created = kid_created(kid).unwrap_or_else(|| {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs())
            });
            keys.push(StoredKey {
                created,
                key: Arc::new(key),
            });
        }
        if keys.is_empty() {
            let key = new_key(now)?;
            write_private(dir, &key)?;
            tracing::info!(kid = key.kid(), dir = %dir.display(), "generated a grant signing key");
            keys.push(StoredKey {
                created: now,
                key: Arc::new(key),
            });
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.created));
        Ok(KeyStore {
            dir: Some(dir.to_owned()),
            rotation,
            keys: RwLock::new(keys),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<StoredKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key that signs at `now`: the newest key past its prepublish period, or the oldest
    /// key when none is (first start).
    pub fn signing(&self, now: u64) -> Arc<SigningKey> {
        let keys = self.read();
        keys.iter()
            .find(|k| k.created.saturating_add(self.rotation.prepublish_secs) <= now)
            .or_else(|| keys.last())
            .map(|k| k.key.clone())
            .expect("a key store always holds a key")
    }

    /// The published keys, newest first.
    pub fn published(&self, now: u64) -> Vec<PublishedKey> {
        let signing = self.signing(now);
        self.read()
            .iter()
            .map(|k| PublishedKey {
                kid: k.key.kid().to_owned(),
                alg: KEY_ALG_ED25519.to_owned(),
                public_key: URL_SAFE_NO_PAD.encode(k.key.public_key_bytes()),
                pem: k.key.public_key_pem(),
                signing: k.key.kid() == signing.kid(),
            })
            .collect()
    }

    /// Makes a new key when due and retires keys no grant in flight can need. Returns the new
    /// key id, if any.
    pub fn rotate_if_due(&self, now: u64) -> Result<Option<String>, Error> {
        let r = self.rotation;
        let mut made = None;
        let newest = self.read().first().map_or(0, |k| k.created);
        if now >= newest.saturating_add(r.rotate_secs.saturating_sub(r.prepublish_secs)) {
            let key = new_key(now)?;
            if let Some(dir) = &self.dir {
                write_private(dir, &key)?;
            }
            tracing::info!(kid = key.kid(), "rotated: new grant signing key published");
            made = Some(key.kid().to_owned());
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            keys.insert(
                0,
                StoredKey {
                    created: now,
                    key: Arc::new(key),
                },
            );
        }
        // Retire: key i is no longer needed once key i-1 (its successor) has signed for longer
        // than a grant lives.
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let keep_after = r.grant_ttl_secs + CLOCK_LEEWAY_SECS;
        let mut i = 1;
        while i < keys.len() {
            let successor_signs_from = keys[i - 1].created + r.prepublish_secs;
            if now >= successor_signs_from + keep_after && successor_signs_from <= now {
                let old = keys.remove(i);
                tracing::info!(kid = old.key.kid(), "retired grant signing key");
                if let Some(dir) = &self.dir {
                    let p = dir.join(format!("{}{PRIVATE_KEY_SUFFIX}", old.key.kid()));
                    let q = dir.join(format!("{}{PRIVATE_KEY_SUFFIX}.retired", old.key.kid()));
                    fs::rename(&p, &q).map_err(|e| Error::io(&p, e))?;
                }
            } else {
                i += 1;
            }
        }
        Ok(made)
    }

    /// Key ids, newest first.
    pub fn kids(&self) -> Vec<String> {
        self.read().iter().map(|k| k.key.kid().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const R: Rotation = Rotation {
        rotate_secs: 1000,
        prepublish_secs: 100,
        grant_ttl_secs: 300,
    };

    #[test]
    fn generates_loads_rotates_and_retires() {
        let tmp = tempfile::tempdir().unwrap();
        let kdir = tmp.path().join("keys");
        let t0 = 1_000_000;
        let s = KeyStore::open(&kdir, R, t0).unwrap();
        let k0 = s.signing(t0).kid().to_owned();
        assert_eq!(
            fs::metadata(&kdir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = kdir.join(format!("{k0}.key.pem"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Reopening loads the same key.
        let s = KeyStore::open(&kdir, R, t0 + 1).unwrap();
        assert_eq!(s.signing(t0 + 1).kid(), k0);
        assert_eq!(s.rotate_if_due(t0 + 899).unwrap(), None);
        // Due at rotate - prepublish: published now, signing 100 s later.
        let k1 = s.rotate_if_due(t0 + 900).unwrap().unwrap();
        assert_eq!(s.published(t0 + 900).len(), 2);
        assert_eq!(s.signing(t0 + 950).kid(), k0);
        assert_eq!(s.signing(t0 + 1000).kid(), k1);
        // The old key stays while grants it signed may live: until k1 signed for ttl + leeway.
        assert_eq!(s.rotate_if_due(t0 + 1000 + 300 + 59).unwrap(), None);
        assert_eq!(s.kids().len(), 2);
        s.rotate_if_due(t0 + 1000 + 360).unwrap();
        assert_eq!(s.kids(), vec![k1.clone()]);
        assert!(&kdir.join(format!("{k0}.key.pem.retired")).exists());
        let s = KeyStore::open(&kdir, R, t0 + 2000).unwrap();
        assert_eq!(s.kids(), vec![k1]);
    }
}
