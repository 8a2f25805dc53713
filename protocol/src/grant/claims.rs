//! The grant header and claims.

use serde::{Deserialize, Serialize};

use super::{ClientPrefix, GrantError};

/// The only grant format version this crate mints and accepts.
pub const GRANT_VERSION: u8 = 1;

/// The token header: format version and key id. No algorithm field: the algorithm is fixed per
/// key id by the verifier's key ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version; must be [`GRANT_VERSION`].
    pub v: u8,
    /// The id of the signing key.
    pub kid: String,
}

/// What a grant allows. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer (the control plane that minted it).
    pub iss: String,
    /// Appliance cluster ids where the grant is valid. Never empty.
    pub aud: Vec<String>,
    /// Opaque playback-session id. Never an account id.
    pub sub: String,
    /// Not valid before this time; absent means `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    pub iat: u64,
    /// Expires at. Required.
    pub exp: u64,
    /// Path prefix the grant covers, matched at a segment boundary: `/<title>/` covers
    /// `/<title>/<anything>`.
    pub prefix: String,
    /// Rendition ids whose files may be fetched; absent means every rendition. Title-level files
    /// (manifests, playlists) are always covered by the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renditions: Option<Vec<String>>,
    /// Client network the grant is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientPrefix>,
    /// Unique token id (for logs and revocation lists).
    pub jti: String,
    /// What the grant may be used for; absent means [`Scope::Play`].
    #[serde(default, skip_serializing_if = "Scope::is_play")]
    pub scope: Scope,
}

/// What a grant may be used for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A player streaming the title's manifests and media segments.
    #[default]
    Play,
    /// An appliance filling the title from this one (see [`crate::fill`]): may also fetch the
    /// title's `catalog.json`, is never bound to a client network, and is served as fill
    /// traffic (counted apart, lower priority).
    Fill,
}

impl Scope {
    /// Whether this is [`Scope::Play`] (the default, left out of the token).
    pub fn is_play(&self) -> bool {
        *self == Scope::Play
    }

    /// `play` or `fill`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Play => "play",
            Scope::Fill => "fill",
        }
    }
}

/// Longest string accepted in any claim, in bytes.
const MAX_FIELD: usize = 256;
/// Most audiences or renditions in one grant.
const MAX_LIST: usize = 64;

impl Claims {
    /// Checks the claims' own shape (independent of any request): non-empty audience, a prefix of
    /// the form `/seg/.../`, `exp > iat`, bounded sizes. Both [`super::sign`] and the verifier call
    /// it, so a malformed grant can neither be minted nor accepted.
    pub fn validate(&self) -> Result<(), GrantError> {
        let field = |name: &str, v: &str| -> Result<(), GrantError> {
            if v.is_empty() || v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return Err(GrantError::malformed(format!(
                    "claim {name} must be 1..={MAX_FIELD} bytes without control characters"
                )));
            }
            Ok(())
        };
        field("iss", &self.iss)?;
        field("sub", &self.sub)?;
        field("jti", &self.jti)?;
        if self.aud.is_empty() || self.aud.len() > MAX_LIST {
            return Err(GrantError::malformed(format!(
                "claim aud must list 1..={MAX_LIST} clusters"
            )));
        }
        for a in &self.aud {
            field("aud", a)?;
        }
        if let Some(r) = &self.renditions {
            if r.is_empty() || r.len() > MAX_LIST {
                return Err(GrantError::malformed(format!(
                    "claim renditions must list 1..={MAX_LIST} ids when present"
                )));
            }
            for id in r {
                field("renditions", id)?;
                if id.contains('/') {
                    return Err(GrantError::malformed(
                        "claim renditions: an id cannot contain '/'",
                    ));
                }
            }
        }
        validate_prefix(&self.prefix)?;
        if self.scope == Scope::Fill && self.client.is_some() {
            return Err(GrantError::malformed(
                "a fill grant is never bound to a client network",
            ));
        }
        if self.exp <= self.iat {
            return Err(GrantError::malformed("claim exp must be after iat"));
        }
        if let Some(nbf) = self.nbf {
            if nbf >= self.exp {
                return Err(GrantError::malformed("claim nbf must be before exp"));
            }
        }
        Ok(())
    }

    /// `exp - iat`, seconds.
    pub fn lifetime(&self) -> u64 {
        self.exp.saturating_sub(self.iat)
    }
}

/// A prefix is an absolute, canonical directory path: starts and ends with `/`, at least one
/// segment, and no empty, `.` or `..` segments.
fn validate_prefix(prefix: &str) -> Result<(), GrantError> {
    let bad = |why: &str| GrantError::malformed(format!("claim prefix {prefix:?}: {why}"));
    if prefix.len() > MAX_FIELD {
        return Err(bad("too long"));
    }
    let inner = prefix
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .ok_or_else(|| bad("must start and end with '/'"))?;
    if inner.is_empty() {
        return Err(bad(
            "must name at least one segment (a grant never covers '/')",
        ));
    }
    for seg in inner.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(bad("empty, '.' or '..' segment"));
        }
        if seg.chars().any(|c| c.is_control() || c == '\\' || c == '%') {
            return Err(bad("segments cannot hold control characters, '\\' or '%'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "cp".into(),
            aud: vec!["isp".into()],
            sub: "fill:isp-1".into(),
            nbf: None,
            iat: 10,
            exp: 20,
            prefix: "/t1/".into(),
            renditions: None,
            client: None,
            jti: "j".into(),
            scope: Scope::Fill,
        }
    }

    #[test]
    fn scope_is_left_out_when_play_and_fill_is_never_client_bound() {
        let fill = claims();
        fill.validate().unwrap();
        assert!(serde_json::to_string(&fill)
            .unwrap()
            .contains(r#""scope":"fill""#));
        let play = Claims {
            scope: Scope::Play,
            ..claims()
        };
        assert!(!serde_json::to_string(&play).unwrap().contains("scope"));
        let bound = Claims {
            client: Some(ClientPrefix::binding_for("192.0.2.7".parse().unwrap())),
            ..claims()
        };
        assert!(bound
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fill grant"));
        assert!(serde_json::from_str::<Claims>(
            &serde_json::to_string(&fill)
                .unwrap()
                .replace("fill", "push")
        )
        .is_err());
    }
}
