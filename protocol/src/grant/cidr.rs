//! Client prefixes: the optional binding of a grant to the network the client was in when the
//! session started. Bound to a /24 (IPv4) or /56 (IPv6) by default so that NAT pools and IPv6
//! privacy addresses inside one subscriber line keep working.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::GrantError;

/// Default IPv4 binding: the client's /24.
pub const IPV4_BINDING_BITS: u8 = 24;
/// Default IPv6 binding: the client's /56 (a typical subscriber delegation).
pub const IPV6_BINDING_BITS: u8 = 56;

/// A network prefix in CIDR form (`203.0.113.0/24`, `2001:db8:aa00::/56`). Host bits are always
/// zero: parsing refuses a prefix with host bits set, so each prefix has one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientPrefix {
    addr: IpAddr,
    len: u8,
}

impl ClientPrefix {
    /// The prefix of length `len` that contains `addr` (host bits cleared).
    pub fn containing(addr: IpAddr, len: u8) -> Result<Self, GrantError> {
        let max = max_len(addr);
        if len > max {
            return Err(GrantError::malformed(format!(
                "client prefix length /{len} is longer than /{max}"
            )));
        }
        Ok(ClientPrefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// The default binding for a client address: its /24 or /56.
    pub fn binding_for(addr: IpAddr) -> Self {
        let len = match addr {
            IpAddr::V4(_) => IPV4_BINDING_BITS,
            IpAddr::V6(_) => IPV6_BINDING_BITS,
        };
        ClientPrefix {
            addr: mask(addr, len),
            len,
        }
    }

    /// Whether `ip` lies inside this prefix. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// compared as IPv4, since a dual-stack socket reports IPv4 clients that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this prefix has length zero (matches every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for ClientPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for ClientPrefix {
    type Err = GrantError;

    /// Parses `addr/len`. A bare address is not accepted here: callers that want the default
    /// binding use [`ClientPrefix::binding_for`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or_else(|| {
            GrantError::malformed(format!("client prefix {s:?} is not in addr/len form"))
        })?;
        let addr: IpAddr = a.parse().map_err(|_| {
            GrantError::malformed(format!("client prefix {s:?}: {a:?} is not an IP address"))
        })?;
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GrantError::malformed(format!(
                "client prefix {s:?}: {l:?} is not a prefix length"
            )));
        }
        let len: u8 = l.parse().map_err(|_| {
            GrantError::malformed(format!("client prefix {s:?}: {l:?} is not a prefix length"))
        })?;
        let p = ClientPrefix::containing(addr, len)?;
        if p.addr != addr {
            return Err(GrantError::malformed(format!(
                "client prefix {s:?} has host bits set (did you mean {p}?)"
            )));
        }
        Ok(p)
    }
}

impl Serialize for ClientPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p: ClientPrefix = "203.0.113.0/24".parse().unwrap();
        assert!(p.contains("203.0.113.77".parse().unwrap()));
        assert!(p.contains("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!p.contains("203.0.114.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let v6: ClientPrefix = "2001:db8:aa00::/56".parse().unwrap();
        assert!(v6.contains("2001:db8:aa00:ff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:aa01::1".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_spellings() {
        for bad in [
            "203.0.113.7/24",
            "203.0.113.0",
            "203.0.113.0/33",
            "203.0.113.0/-1",
            "203.0.113.0/+8",
            "x/8",
            "::/129",
        ] {
            assert!(bad.parse::<ClientPrefix>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn binding_masks_host_bits() {
        let p = ClientPrefix::binding_for("198.51.100.200".parse().unwrap());
        assert_eq!(p.to_string(), "198.51.100.0/24");
        let p = ClientPrefix::binding_for("2001:db8:1:2:3::9".parse().unwrap());
        assert_eq!(p.to_string(), "2001:db8:1::/56");
    }
}
