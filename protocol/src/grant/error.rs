//! Why a grant is refused. One variant per failure kind so that appliances can count refusals by
//! reason and answer with a body that names it.

use thiserror::Error;

/// A grant that cannot be minted or is refused by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrantError {
    /// `exp` (plus leeway) is in the past.
    #[error("grant expired at {exp} (now {now})")]
    Expired {
        /// The grant's `exp`, Unix seconds.
        exp: u64,
        /// The verifier's clock, Unix seconds.
        now: u64,
    },
    /// `nbf` or `iat` (minus leeway) is in the future.
    #[error("grant not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The grant's `nbf` (or `iat` when `nbf` is absent), Unix seconds.
        nbf: u64,
        /// The verifier's clock, Unix seconds.
        now: u64,
    },
    /// The signature does not verify under the key named by `kid`.
    #[error("bad signature for key id {kid:?}")]
    BadSignature {
        /// The key id from the header.
        kid: String,
    },
    /// No active public key has this key id.
    #[error("unknown key id {kid:?}")]
    UnknownKey {
        /// The key id from the header.
        kid: String,
    },
    /// This appliance's cluster is not in `aud`.
    #[error("wrong audience: grant is for {aud:?}, this is {cluster:?}")]
    WrongAudience {
        /// The grant's audiences.
        aud: Vec<String>,
        /// The verifier's cluster id.
        cluster: String,
    },
    /// The requested path is not under the grant's `prefix`.
    #[error("path {path:?} is not covered by prefix {prefix:?}")]
    PathNotCovered {
        /// The canonical request path (without the grant).
        path: String,
        /// The grant's prefix.
        prefix: String,
    },
    /// The requested file belongs to a rendition the grant does not list.
    #[error("rendition {rendition:?} is not allowed by this grant")]
    RenditionNotAllowed {
        /// The rendition id taken from the path.
        rendition: String,
    },
    /// The client address is outside the grant's client prefix, or no address was given.
    #[error("client {client} is outside the grant's client prefix {prefix}")]
    ClientMismatch {
        /// The client's address as seen by the appliance (`unknown` when absent).
        client: String,
        /// The grant's client prefix.
        prefix: String,
    },
    /// The token's lifetime (`exp - iat`) exceeds the verifier's policy.
    #[error("grant lifetime {lifetime}s exceeds the policy maximum {max}s")]
    LifetimeTooLong {
        /// `exp - iat`, seconds.
        lifetime: u64,
        /// The verifier's cap, seconds.
        max: u64,
    },
    /// The token or the request path cannot be parsed; the string names the field or rule.
    #[error("malformed grant: {0}")]
    Malformed(String),
}

impl GrantError {
    /// A stable, machine-readable reason code (for metrics labels and response bodies).
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::Expired { .. } => "expired",
            GrantError::NotYetValid { .. } => "not_yet_valid",
            GrantError::BadSignature { .. } => "bad_signature",
            GrantError::UnknownKey { .. } => "unknown_key",
            GrantError::WrongAudience { .. } => "wrong_audience",
            GrantError::PathNotCovered { .. } => "path_not_covered",
            GrantError::RenditionNotAllowed { .. } => "rendition_not_allowed",
            GrantError::ClientMismatch { .. } => "client_mismatch",
            GrantError::LifetimeTooLong { .. } => "lifetime_too_long",
            GrantError::Malformed(_) => "malformed",
        }
    }

    /// Every reason code, in a fixed order (for pre-registering metric series).
    pub const CODES: [&'static str; 10] = [
        "expired",
        "not_yet_valid",
        "bad_signature",
        "unknown_key",
        "wrong_audience",
        "path_not_covered",
        "rendition_not_allowed",
        "client_mismatch",
        "lifetime_too_long",
        "malformed",
    ];

    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        GrantError::Malformed(msg.into())
    }
}
