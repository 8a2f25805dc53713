//! The offline verifier appliances run on every content request.
//!
//! Checks run in a fixed order and the first failure is returned:
//! 1. decode the token (malformed);
//! 2. find the key id (unknown key) and check the signature (bad signature): nothing in the
//!    claims is trusted before this;
//! 3. the claims' own shape (malformed) and the lifetime cap;
//! 4. time: `nbf` (or `iat`) and `exp`, each with [`CLOCK_LEEWAY_SECS`] of leeway;
//! 5. audience, path prefix, rendition, client prefix.

use std::net::IpAddr;

use super::{decode, split_grant_path, Claims, GrantError, KeyRing, ResourcePath};

/// Clock leeway applied to `nbf`/`iat` and `exp`, seconds.
pub const CLOCK_LEEWAY_SECS: u64 = 60;

/// Default cap on `exp - iat`: six hours, longer than any film and short enough that a leaked URL
/// dies within a day.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 6 * 3600;

/// One request to check.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The raw request path, `/g/<grant>/<title>/<file>`, without the query string.
    pub path: &'a str,
    /// The client's address, when known. A grant bound to a client prefix is refused without it.
    pub client_ip: Option<IpAddr>,
    /// The verifier's clock, Unix seconds.
    pub now: u64,
}

/// An accepted request.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The grant's claims.
    pub claims: Claims,
    /// The key id that signed it.
    pub kid: String,
    /// The canonical resource path the request names.
    pub resource: ResourcePath<'static>,
}

/// Checks grants for one cluster against a key ring.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeyRing,
    cluster: String,
    max_lifetime: u64,
    leeway: u64,
}

impl Verifier {
    /// A verifier for appliances of `cluster`, with the default lifetime cap and leeway.
    pub fn new(keys: KeyRing, cluster: impl Into<String>) -> Self {
        Verifier {
            keys,
            cluster: cluster.into(),
            max_lifetime: DEFAULT_MAX_LIFETIME_SECS,
            leeway: CLOCK_LEEWAY_SECS,
        }
    }

    /// Sets the cap on `exp - iat`.
    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime = secs;
        self
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Replaces the key ring (rotation).
    pub fn set_keys(&mut self, keys: KeyRing) {
        self.keys = keys;
    }

    /// The cluster id this verifier accepts in `aud`.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Checks a full request path.
    pub fn verify(&self, req: &Request<'_>) -> Result<Verified, GrantError> {
        let (token, resource) = split_grant_path(req.path)?;
        let (claims, kid) = self.verify_token(token, req.now)?;
        authorize(&claims, &resource, req.client_ip)?;
        Ok(Verified {
            claims,
            kid,
            resource: resource.into_owned(),
        })
    }

    /// Steps 1-4 and the audience check: everything that depends only on the token and the clock.
    /// Appliances cache the result per token until `exp`, then run [`authorize`] per request.
    pub fn verify_token(&self, token: &str, now: u64) -> Result<(Claims, String), GrantError> {
        let d = decode(token)?;
        self.keys
            .verify(&d.header.kid, d.signed.as_bytes(), &d.signature)?;
        let c = d.claims;
        c.validate()?;
        if c.lifetime() > self.max_lifetime {
            return Err(GrantError::LifetimeTooLong {
                lifetime: c.lifetime(),
                max: self.max_lifetime,
            });
        }
        let start = c.nbf.unwrap_or(c.iat).max(c.iat);
        if now.saturating_add(self.leeway) < start {
            return Err(GrantError::NotYetValid { nbf: start, now });
        }
        if now >= c.exp.saturating_add(self.leeway) {
            return Err(GrantError::Expired { exp: c.exp, now });
        }
        if !c.aud.iter().any(|a| a == &self.cluster) {
            return Err(GrantError::WrongAudience {
                aud: c.aud.clone(),
                cluster: self.cluster.clone(),
            });
        }
        Ok((c, d.header.kid))
    }
}

/// The per-request checks on already verified claims: path prefix, rendition and client prefix.
pub fn authorize(
    claims: &Claims,
    resource: &ResourcePath<'_>,
    client_ip: Option<IpAddr>,
) -> Result<(), GrantError> {
    if !resource.is_under(&claims.prefix) {
        return Err(GrantError::PathNotCovered {
            path: resource.as_str().to_owned(),
            prefix: claims.prefix.clone(),
        });
    }
    if let (Some(allowed), Some(r)) = (&claims.renditions, resource.rendition()) {
        if !allowed.iter().any(|a| a == r) {
            return Err(GrantError::RenditionNotAllowed {
                rendition: r.to_owned(),
            });
        }
    }
    if let Some(prefix) = &claims.client {
        match client_ip {
            Some(ip) if prefix.contains(ip) => {}
            other => {
                return Err(GrantError::ClientMismatch {
                    client: other.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
                    prefix: prefix.to_string(),
                })
            }
        }
    }
    Ok(())
}
