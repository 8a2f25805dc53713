//! Stream grants: the signed token that lets one playback session fetch one title's files from a
//! set of appliance clusters.
//!
//! # Wire form
//!
//! A grant is carried as the first segment of the request path, `/g/<grant>/<title>/<file>`, so
//! that relative URLs inside manifests inherit it without cookies or query strings. The token is
//! three base64url fields (no padding) joined by `.`, which keeps it inside one path segment:
//!
//! ```text
//! <header>.<claims>.<signature>
//! header    = base64url(JSON {"v":1,"kid":"<key id>"})
//! claims    = base64url(JSON Claims)
//! signature = base64url(Ed25519(signing key of kid, "<header>.<claims>"))
//! ```
//!
//! The signature covers the exact bytes received, so no canonical JSON is needed. The algorithm
//! is never named in the token: it is a property of the key id in the verifier's [`KeyRing`]
//! (only Ed25519 exists), so there is nothing to negotiate and no `none`.
//!
//! # Strictness
//!
//! Header and claims reject unknown fields: a claim this verifier does not understand might be a
//! restriction, and ignoring a restriction would widen access. Base64 with non-zero trailing bits
//! is rejected, so every token has exactly one spelling and any bit flip fails.

mod cidr;
mod claims;
mod encode;
mod error;
mod keys;
mod path;
mod verify;

pub use cidr::{ClientPrefix, IPV4_BINDING_BITS, IPV6_BINDING_BITS};
pub use claims::{Claims, Header, Scope, GRANT_VERSION};
pub use encode::{decode, sign, Decoded};
pub use error::GrantError;
pub use keys::{is_valid_kid, KeyRing, SigningKey, PRIVATE_KEY_SUFFIX, PUBLIC_KEY_SUFFIX};
pub use path::{canonicalize, split_grant_path, ResourcePath, MAX_PATH_LEN};
pub use verify::{
    authorize, Request, Verified, Verifier, CLOCK_LEEWAY_SECS, DEFAULT_MAX_LIFETIME_SECS,
};

/// The first path segment that introduces a grant: `/g/<grant>/...`.
pub const GRANT_SEGMENT: &str = "g";

/// Longest token accepted, in bytes. Real grants are a few hundred bytes; the cap keeps a hostile
/// request from driving large decodes.
pub const MAX_TOKEN_LEN: usize = 4096;
