//! Minting and decoding the compact token form.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use super::{Claims, GrantError, Header, SigningKey, GRANT_VERSION, MAX_TOKEN_LEN};

/// Signs `claims` with `key`, returning the token. Refuses claims that fail
/// [`Claims::validate`].
pub fn sign(key: &SigningKey, claims: &Claims) -> Result<String, GrantError> {
    claims.validate()?;
    let header = Header {
        v: GRANT_VERSION,
        kid: key.kid().to_owned(),
    };
    // Serialising these plain structs cannot fail; map the impossible error anyway.
    let h = serde_json::to_vec(&header).map_err(|e| GrantError::malformed(e.to_string()))?;
    let c = serde_json::to_vec(claims).map_err(|e| GrantError::malformed(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(h);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(c, &mut token);
    let sig = key.sign_bytes(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    if token.len() > MAX_TOKEN_LEN {
        return Err(GrantError::malformed(format!(
            "grant would be {} bytes, over the {MAX_TOKEN_LEN}-byte limit",
            token.len()
        )));
    }
    Ok(token)
}

/// A token split into its parts, before the signature is checked.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// The parsed header.
    pub header: Header,
    /// The parsed claims (not yet trusted).
    pub claims: Claims,
    /// The bytes the signature covers: `<header>.<claims>` as received.
    pub signed: &'a str,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// Decodes a token without verifying it. Every failure is [`GrantError::Malformed`] naming the
/// part that is wrong.
pub fn decode(token: &str) -> Result<Decoded<'_>, GrantError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(GrantError::malformed(format!(
            "grant is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(GrantError::malformed(
            "grant must have three '.'-separated parts",
        ));
    };
    let header: Header = json_part("header", h)?;
    if header.v != GRANT_VERSION {
        return Err(GrantError::malformed(format!(
            "header: unsupported version {} (this verifier knows {GRANT_VERSION})",
            header.v
        )));
    }
    let claims: Claims = json_part("claims", c)?;
    let signature = b64("signature", s)?;
    if signature.len() != 64 {
        return Err(GrantError::malformed("signature: must be 64 bytes"));
    }
    Ok(Decoded {
        header,
        claims,
        signed: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

fn b64(part: &str, s: &str) -> Result<Vec<u8>, GrantError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| GrantError::malformed(format!("{part}: not canonical base64url: {e}")))
}

fn json_part<T: DeserializeOwned>(part: &str, s: &str) -> Result<T, GrantError> {
    let bytes = b64(part, s)?;
    serde_json::from_slice(&bytes).map_err(|e| GrantError::malformed(format!("{part}: {e}")))
}
