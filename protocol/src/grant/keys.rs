//! Signing keys (held by the control plane and the `outpost grant sign` command) and the key
//! ring of public keys (held by appliances). Keys travel as PEM: PKCS#8 for private keys, SPKI for
//! public keys, so `openssl pkey` can read both. Reading files is the caller's job.

use std::collections::BTreeMap;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, VerifyingKey};

use super::GrantError;

/// File name suffix of a private key: `<kid>.key.pem`.
pub const PRIVATE_KEY_SUFFIX: &str = ".key.pem";
/// File name suffix of a public key: `<kid>.pub.pem`.
pub const PUBLIC_KEY_SUFFIX: &str = ".pub.pem";

/// Whether `kid` is a valid key id: 1 to 64 characters from `[A-Za-z0-9._-]`, not starting with
/// `.` (so it is a safe file name).
pub fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && !kid.starts_with('.')
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_kid(kid: &str) -> Result<(), GrantError> {
    if is_valid_kid(kid) {
        Ok(())
    } else {
        Err(GrantError::malformed(format!(
            "key id {kid:?} must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

/// An Ed25519 signing key with its key id.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from 32 secret bytes (the caller supplies randomness: this crate has none).
    pub fn from_seed(kid: &str, seed: [u8; 32]) -> Result<Self, GrantError> {
        check_kid(kid)?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(kid: &str, pem: &str) -> Result<Self, GrantError> {
        check_kid(kid)?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            GrantError::malformed(format!(
                "private key {kid:?} is not an Ed25519 PKCS#8 PEM: {e}"
            ))
        })?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The PKCS#8 PEM encoding of the private key.
    pub fn to_pkcs8_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .unwrap_or_default()
    }

    /// The SPKI PEM encoding of the public key.
    pub fn public_key_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// The active public keys, by key id. Holding several lets signing keys rotate with an overlap:
/// add the new key everywhere, switch signing to it, remove the old key after the longest grant
/// lifetime has passed.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a raw 32-byte Ed25519 public key.
    pub fn insert_raw(&mut self, kid: &str, key: [u8; 32]) -> Result<(), GrantError> {
        check_kid(kid)?;
        let vk = VerifyingKey::from_bytes(&key).map_err(|e| {
            GrantError::malformed(format!(
                "public key {kid:?} is not a valid Ed25519 point: {e}"
            ))
        })?;
        self.keys.insert(kid.to_owned(), vk);
        Ok(())
    }

    /// Adds an SPKI PEM public key.
    pub fn insert_pem(&mut self, kid: &str, pem: &str) -> Result<(), GrantError> {
        check_kid(kid)?;
        let vk = VerifyingKey::from_public_key_pem(pem).map_err(|e| {
            GrantError::malformed(format!(
                "public key {kid:?} is not an Ed25519 SPKI PEM: {e}"
            ))
        })?;
        self.keys.insert(kid.to_owned(), vk);
        Ok(())
    }

    /// Builds a ring from `(file name, contents)` pairs, as read from a public-key directory.
    /// Files not ending in [`PUBLIC_KEY_SUFFIX`] are skipped; the key id is the file stem.
    pub fn from_pem_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, GrantError> {
        let mut ring = KeyRing::new();
        for (name, pem) in files {
            if let Some(kid) = name.strip_suffix(PUBLIC_KEY_SUFFIX) {
                ring.insert_pem(kid, pem)
                    .map_err(|e| GrantError::malformed(format!("{name}: {e}")))?;
            }
        }
        Ok(ring)
    }

    /// Removes a key id; returns whether it was present.
    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `sig` over `msg` with the key `kid`.
    pub(crate) fn verify(&self, kid: &str, msg: &[u8], sig: &[u8]) -> Result<(), GrantError> {
        let vk = self.keys.get(kid).ok_or_else(|| GrantError::UnknownKey {
            kid: kid.to_owned(),
        })?;
        let bad = || GrantError::BadSignature {
            kid: kid.to_owned(),
        };
        let sig: [u8; 64] = sig.try_into().map_err(|_| bad())?;
        vk.verify_strict(msg, &Signature::from_bytes(&sig))
            .map_err(|_| bad())
    }
}
