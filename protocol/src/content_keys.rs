//! The content-keys file: the clear content keys of one encrypted title, written by the packager
//! when it encrypts a title and imported by the control plane's licence server (which stores them
//! encrypted at rest). It never enters the catalog or a title directory that appliances serve.
//!
//! ```json
//! {"title": "big-buck-bunny", "scheme": "cenc",
//!  "keys": [{"kid": "<32 hex>", "key": "<32 hex>", "tier": "SD", "track_type": "video"},
//!           {"kid": "<32 hex>", "key": "<32 hex>", "tier": null, "track_type": "audio"}]}
//! ```
//!
//! `tier` is the highest video tier a key protects: a session whose effective tier is below it
//! never receives the key. `null` means the key is usable at every tier (audio keys are always
//! `null`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::{is_valid_segment, Tier, TrackKind};

/// Most keys one file may list (a ladder has one key per tier plus audio: a handful).
pub const MAX_KEYS: usize = 64;

/// A content-keys file that does not parse or breaks a rule; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContentKeysError {
    /// Not valid JSON for the schema (serde's message, with line and column).
    #[error("content keys: {0}")]
    Parse(String),
    /// A field breaks a rule; `field` is a JSON path such as `keys[1].kid`.
    #[error("content keys field {field}: {reason}")]
    Invalid {
        /// Where in the file.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ContentKeysError {
    ContentKeysError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The common-encryption scheme (ISO/IEC 23001-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// AES-CTR full-sample encryption.
    Cenc,
    /// AES-CBC pattern encryption.
    Cbcs,
}

impl Scheme {
    /// `cenc` or `cbcs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Cenc => "cenc",
            Scheme::Cbcs => "cbcs",
        }
    }
}

/// The content keys of one title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContentKeys {
    /// Title id (a catalog title).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
    )]
    pub title: String,
    /// Encryption scheme.
    pub scheme: Scheme,
    /// The keys, each kid unique.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
    pub keys: Vec<ContentKey>,
}

/// One content key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContentKey {
    /// Key id, 32 lowercase hex digits (16 bytes).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{32}$"))]
    pub kid: String,
    /// Key, 32 lowercase hex digits (16 bytes, AES-128).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{32}$"))]
    pub key: String,
    /// Highest tier the key protects; `null` = any tier (always `null` for audio).
    pub tier: Option<Tier>,
    /// The kind of track the key encrypts.
    pub track_type: TrackKind,
}

impl ContentKey {
    /// The key id as 16 bytes.
    pub fn kid_bytes(&self) -> [u8; 16] {
        hex16(&self.kid).unwrap_or([0; 16])
    }

    /// The key as 16 bytes.
    pub fn key_bytes(&self) -> [u8; 16] {
        hex16(&self.key).unwrap_or([0; 16])
    }

    /// Whether a session of effective tier `tier` may receive this key.
    pub fn allowed_at(&self, tier: Tier) -> bool {
        self.tier.is_none_or(|t| t <= tier)
    }
}

impl ContentKeys {
    /// Parses and validates a file.
    pub fn from_json(text: &str) -> Result<Self, ContentKeysError> {
        let keys: ContentKeys =
            serde_json::from_str(text).map_err(|e| ContentKeysError::Parse(e.to_string()))?;
        keys.validate()?;
        Ok(keys)
    }

    /// Pretty JSON, newline-terminated.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks every rule the types cannot express: a safe title id, 1..=[`MAX_KEYS`] keys, hex
    /// kids and keys of 16 bytes, unique kids, no all-zero key, audio keys without a tier.
    pub fn validate(&self) -> Result<(), ContentKeysError> {
        if !is_valid_segment(&self.title) {
            return Err(invalid(
                "title",
                format!(
                    "{:?} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'",
                    self.title
                ),
            ));
        }
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return Err(invalid("keys", format!("must list 1..={MAX_KEYS} keys")));
        }
        let mut kids = BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let field = format!("keys[{i}]");
            if hex16(&k.kid).is_none() {
                return Err(invalid(
                    format!("{field}.kid"),
                    "must be 32 lowercase hex digits",
                ));
            }
            match hex16(&k.key) {
                None => {
                    return Err(invalid(
                        format!("{field}.key"),
                        "must be 32 lowercase hex digits",
                    ))
                }
                Some(b) if b == [0; 16] => {
                    return Err(invalid(
                        format!("{field}.key"),
                        "an all-zero key is refused",
                    ))
                }
                Some(_) => {}
            }
            if !kids.insert(k.kid.as_str()) {
                return Err(invalid(
                    format!("{field}.kid"),
                    format!("{:?} is listed twice", k.kid),
                ));
            }
            if k.track_type == TrackKind::Audio && k.tier.is_some() {
                return Err(invalid(
                    format!("{field}.tier"),
                    "audio keys have no tier (use null)",
                ));
            }
        }
        Ok(())
    }

    /// The keys a session of effective tier `tier` may receive.
    pub fn allowed_at(&self, tier: Tier) -> impl Iterator<Item = &ContentKey> {
        self.keys.iter().filter(move |k| k.allowed_at(tier))
    }
}

/// Parses 32 lowercase hex digits into 16 bytes.
pub fn hex16(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"title":"t1","scheme":"cenc","keys":[
        {"kid":"00112233445566778899aabbccddeeff","key":"0f0e0d0c0b0a09080706050403020100","tier":"SD","track_type":"video"},
        {"kid":"10112233445566778899aabbccddeeff","key":"1f0e0d0c0b0a09080706050403020100","tier":"HD","track_type":"video"},
        {"kid":"20112233445566778899aabbccddeeff","key":"2f0e0d0c0b0a09080706050403020100","tier":null,"track_type":"audio"}]}"#;

    fn check_err(text: &str, field: &str) {
        match ContentKeys::from_json(text) {
            Err(ContentKeysError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected an error on {field}, got {other:?}"),
        }
    }

    #[test]
    fn parses_and_filters_by_tier() {
        let k = ContentKeys::from_json(GOOD).unwrap();
        assert_eq!(k.scheme, Scheme::Cenc);
        let sd: Vec<_> = k.allowed_at(Tier::Sd).map(|k| k.kid.as_str()).collect();
        assert_eq!(
            sd,
            [
                "00112233445566778899aabbccddeeff",
                "20112233445566778899aabbccddeeff"
            ]
        );
        assert_eq!(k.allowed_at(Tier::Uhd).count(), 3);
        assert_eq!(k.keys[0].kid_bytes()[0], 0x00);
        assert_eq!(k.keys[0].key_bytes()[0], 0x0f);
        assert_eq!(ContentKeys::from_json(&k.to_json()).unwrap(), k);
    }

    #[test]
    fn rejects_bad_fields() {
        check_err(&GOOD.replace("\"t1\"", "\"../x\""), "title");
        check_err(
            &GOOD.replace("00112233445566778899aabbccddeeff", "0011"),
            "keys[0].kid",
        );
        check_err(
            &GOOD.replace(
                "0f0e0d0c0b0a09080706050403020100",
                "0F0E0D0C0B0A09080706050403020100",
            ),
            "keys[0].key",
        );
        check_err(
            &GOOD.replace("0f0e0d0c0b0a09080706050403020100", &"0".repeat(32)),
            "keys[0].key",
        );
        check_err(
            &GOOD.replace(
                "10112233445566778899aabbccddeeff",
                "00112233445566778899aabbccddeeff",
            ),
            "keys[1].kid",
        );
        check_err(
            &GOOD.replace("\"tier\":null", "\"tier\":\"HD\""),
            "keys[2].tier",
        );
        check_err(r#"{"title":"t","scheme":"cbcs","keys":[]}"#, "keys");
        assert!(matches!(
            ContentKeys::from_json(&GOOD.replace("\"cenc\"", "\"cens\"")),
            Err(ContentKeysError::Parse(_))
        ));
        assert!(matches!(
            ContentKeys::from_json(&GOOD.replace("\"scheme\"", "\"extra\":1,\"scheme\"")),
            Err(ContentKeysError::Parse(_))
        ));
    }
}
