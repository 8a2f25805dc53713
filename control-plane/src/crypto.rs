//! Secrets at rest and random ids: content keys are sealed with AES-256-GCM under the master key
//! (a fresh 96-bit nonce per key; the title and key id are the associated data, so a sealed key
//! moved to another row does not open), and credentials are stored as SHA-256 digests.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use protocol::hex::encode as hex;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::Error;

/// The content-key master key.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Parses 64 hex digits (either case) into 32 bytes.
pub fn parse_master_key(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// 32 random bytes as 64 lowercase hex digits.
pub fn random_hex32() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex(&b)
}

/// `n` random bytes, base64url without padding (session ids, licence tokens, jti). Drawn from
/// the thread-local CSPRNG (ChaCha, seeded and periodically reseeded from the OS), which spares
/// a system call per token; key material uses the OS generator directly.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 of a secret, lowercase hex: what the database stores for API keys, appliance
/// credentials and licence tokens.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

impl MasterKey {
    /// A key from 32 bytes.
    pub fn new(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Aes256Gcm::new(&bytes.into()))
    }

    /// Seals `plain` bound to `aad`: base64url(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<String, Error> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`MasterKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, Error> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| Error::Crypto(format!("sealed key for {aad} is not base64url")))?;
        if raw.len() < 12 + 16 {
            return Err(Error::Crypto(format!("sealed key for {aad} is truncated")));
        }
        let (nonce, ct) = raw.split_at(12);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Crypto(format!(
                    "sealed key for {aad} does not open: wrong master key or corrupt row"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_binding() {
        let k = MasterKey::new([7; 32]);
        let s = k.seal(b"0123456789abcdef", "t1/kid").unwrap();
        assert!(!s.contains("0123456789abcdef"));
        assert_eq!(k.open(&s, "t1/kid").unwrap(), b"0123456789abcdef");
        assert!(k.open(&s, "t2/kid").is_err());
        assert!(MasterKey::new([8; 32]).open(&s, "t1/kid").is_err());
        assert!(k.open("AAAA", "t1/kid").is_err());
        assert_eq!(parse_master_key(&"0a".repeat(32)), Some([10; 32]));
        assert_eq!(parse_master_key("00"), None);
        assert_eq!(digest("abc").len(), 64);
    }
}
