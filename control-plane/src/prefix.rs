//! IP prefixes and a longest-prefix-match table: the stand-in for BGP that maps a client address
//! to the appliances announcing it, and the prefix→country table of the geo check.
//!
//! The table keeps one hash map per prefix length and probes lengths from longest to shortest,
//! so a lookup is at most 33 (IPv4) or 129 (IPv6) hash probes and usually far fewer (only lengths
//! that hold a prefix are probed). IPv4 and IPv4-mapped IPv6 addresses share the IPv4 table.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A CIDR prefix with its host bits zero (`203.0.113.0/24`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    v6: bool,
    bits: u128,
    len: u8,
}

/// Why a prefix does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a CIDR prefix: {reason}")]
pub struct PrefixError {
    input: String,
    reason: &'static str,
}

fn normalize(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u32::from(v4) as u128),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, u32::from(v4) as u128),
            None => (true, u128::from(v6)),
        },
    }
}

fn mask(bits: u128, len: u8, v6: bool) -> u128 {
    let width = if v6 { 128 } else { 32 };
    if len == 0 {
        0
    } else {
        let shift = width - len as u32;
        let m = if width == 128 {
            u128::MAX << shift
        } else {
            ((u32::MAX as u128) << shift) & (u32::MAX as u128)
        };
        bits & m
    }
}

impl Prefix {
    /// The prefix of length `len` containing `ip` (host bits cleared). `None` if `len` is too long.
    pub fn containing(ip: IpAddr, len: u8) -> Option<Prefix> {
        let (v6, bits) = normalize(ip);
        if len > if v6 { 128 } else { 32 } {
            return None;
        }
        Some(Prefix {
            v6,
            bits: mask(bits, len, v6),
            len,
        })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, bits) = normalize(ip);
        v6 == self.v6 && mask(bits, self.len, v6) == self.bits
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a zero-length (default) prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PrefixError {
            input: s.to_owned(),
            reason,
        };
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| err("expected address/length"))?;
        let ip: IpAddr = addr.parse().map_err(|_| err("bad address"))?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("bad length"));
        }
        let len: u8 = len.parse().map_err(|_| err("bad length"))?;
        let (v6, bits) = match ip {
            IpAddr::V4(v4) => (false, u32::from(v4) as u128),
            IpAddr::V6(v6) => (true, u128::from(v6)),
        };
        if len > if v6 { 128 } else { 32 } {
            return Err(err("length longer than the address"));
        }
        if mask(bits, len, v6) != bits {
            return Err(err("host bits are set"));
        }
        Ok(Prefix { v6, bits, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            write!(f, "{}/{}", Ipv6Addr::from(self.bits), self.len)
        } else {
            write!(f, "{}/{}", Ipv4Addr::from(self.bits as u32), self.len)
        }
    }
}

/// A longest-prefix-match table from prefixes to values.
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    // (is_v6, length) → network bits → value; BTreeMap so lengths iterate in order.
    by_len: BTreeMap<(bool, u8), HashMap<u128, T>>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        PrefixTable {
            by_len: BTreeMap::new(),
        }
    }
}

impl<T> PrefixTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces the value of `prefix`; returns the old one.
    pub fn insert(&mut self, prefix: Prefix, value: T) -> Option<T> {
        self.by_len
            .entry((prefix.v6, prefix.len))
            .or_default()
            .insert(prefix.bits, value)
    }

    /// The value of `prefix` itself, for in-place updates.
    pub fn get_mut(&mut self, prefix: &Prefix) -> Option<&mut T> {
        self.by_len
            .get_mut(&(prefix.v6, prefix.len))?
            .get_mut(&prefix.bits)
    }

    /// The longest prefix containing `ip`, with its value.
    pub fn lookup(&self, ip: IpAddr) -> Option<(Prefix, &T)> {
        let (v6, bits) = normalize(ip);
        let lo = (v6, 0u8);
        let hi = (v6, u8::MAX);
        for (&(_, len), map) in self.by_len.range(lo..=hi).rev() {
            let net = mask(bits, len, v6);
            if let Some(v) = map.get(&net) {
                return Some((Prefix { v6, bits: net, len }, v));
            }
        }
        None
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.by_len.values().map(HashMap::len).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes held: each per-length map's buckets (key, value and one control
    /// byte per bucket) and the length index. The values' own heap data is not counted.
    pub fn heap_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(u128, T)>() + 1;
        self.by_len
            .values()
            .map(|m| m.capacity() * bucket + std::mem::size_of::<HashMap<u128, T>>() + 16)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_display() {
        for s in [
            "203.0.113.0/24",
            "0.0.0.0/0",
            "2001:db8::/32",
            "10.1.2.3/32",
        ] {
            assert_eq!(s.parse::<Prefix>().unwrap().to_string(), s);
        }
        for s in [
            "203.0.113.1/24",
            "1.2.3.0/33",
            "1.2.3.0",
            "x/8",
            "1.2.3.0/+8",
            "::/129",
        ] {
            assert!(s.parse::<Prefix>().is_err(), "{s}");
        }
    }

    #[test]
    fn longest_match_wins_and_mapped_v4_matches_v4() {
        let mut t = PrefixTable::new();
        t.insert("10.0.0.0/8".parse().unwrap(), "a");
        t.insert("10.1.0.0/16".parse().unwrap(), "b");
        t.insert("::/0".parse().unwrap(), "v6");
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()).unwrap().1, &"b");
        assert_eq!(t.lookup("10.2.2.3".parse().unwrap()).unwrap().1, &"a");
        assert_eq!(
            t.lookup("::ffff:10.1.0.1".parse().unwrap()).unwrap().1,
            &"b"
        );
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()).unwrap().1, &"v6");
        assert!(t.lookup("11.0.0.1".parse().unwrap()).is_none());
    }

    fn brute(list: &[(Prefix, usize)], ip: IpAddr) -> Option<&(Prefix, usize)> {
        list.iter()
            .filter(|(p, _)| p.contains(ip))
            .max_by_key(|(p, _)| p.len())
    }

    proptest! {
        /// The table agrees with a brute-force scan for the longest containing prefix.
        #[test]
        fn lookup_matches_brute_force(
            raw in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..40),
            raw6 in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..20),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
            probes6 in proptest::collection::vec(any::<u128>(), 1..20),
        ) {
            let mut table = PrefixTable::new();
            let mut list: Vec<(Prefix, usize)> = Vec::new();
            let all = raw.iter().map(|&(a, l)| Prefix::containing(IpAddr::V4(Ipv4Addr::from(a)), l).unwrap())
                .chain(raw6.iter().map(|&(a, l)| {
                    let ip = Ipv6Addr::from(a);
                    Prefix::containing(IpAddr::V6(ip), l).unwrap()
                }));
            for (i, p) in all.enumerate() {
                table.insert(p, i);
                list.retain(|(q, _)| *q != p);
                list.push((p, i));
            }
            // Probe random addresses plus addresses inside each prefix.
            let mut ips: Vec<IpAddr> = probes.iter().map(|&a| IpAddr::V4(Ipv4Addr::from(a))).collect();
            ips.extend(probes6.iter().map(|&a| IpAddr::V6(Ipv6Addr::from(a))));
            ips.extend(raw.iter().map(|&(a, _)| IpAddr::V4(Ipv4Addr::from(a))));
            for ip in ips {
                let got = table.lookup(ip).map(|(p, v)| (p, *v));
                let want = brute(&list, ip).copied();
                prop_assert_eq!(got, want, "ip {}", ip);
            }
        }
    }
}
