//! The BGP-4 wire format (RFC 4271), receive side first: a frame splitter and parser for OPEN
//! (with the capabilities of RFC 5492: multiprotocol RFC 4760, route refresh RFC 2918, 4-octet AS
//! RFC 6793, graceful restart RFC 4724), UPDATE (IPv4 NLRI and MP_REACH/MP_UNREACH for IPv4 and
//! IPv6 unicast; End-of-RIB markers, RFC 4724 §2, are recognised as such), KEEPALIVE,
//! NOTIFICATION and ROUTE-REFRESH, and an encoder for all of them (the speaker sends OPEN,
//! KEEPALIVE and NOTIFICATION; tests and the fuzz target build UPDATEs with it).
//!
//! Errors follow RFC 7606: a malformed message or a malformed attribute whose RFC says "session
//! reset" is a [`WireError`] carrying the NOTIFICATION code and subcode to send; attributes that
//! RFC 7606 handles with "treat-as-withdraw" (ORIGIN, AS_PATH, NEXT_HOP, MED, COMMUNITIES,
//! missing mandatory attributes, attribute length overrun) turn the UPDATE's announcements into
//! withdrawals and set [`Update::treat_as_withdraw`]; "attribute discard" ones are dropped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the fixed header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message (RFC 4271; extended messages, RFC 8654, are not negotiated).
pub const MAX_LEN: usize = 4096;
/// AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS number.
pub const AS_TRANS: u16 = 23456;

pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313 for 7).
pub mod code {
    pub const HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// A NOTIFICATION-worthy error: code, subcode, data and a human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (NOTIFICATION {code}/{subcode})")]
pub struct WireError {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
    pub reason: String,
}

fn err(code: u8, subcode: u8, data: &[u8], reason: impl Into<String>) -> WireError {
    WireError {
        code,
        subcode,
        data: data.to_vec(),
        reason: reason.into(),
    }
}

/// An IPv4 or IPv6 prefix with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The prefix with bits past `len` cleared; `None` when `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Some(Prefix {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                })
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                Some(Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("prefix {s:?}: expected ADDR/LEN"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("prefix {s:?}: bad address"))?;
        let len: u8 = l.parse().map_err(|_| format!("prefix {s:?}: bad length"))?;
        Prefix::new(addr, len).ok_or_else(|| format!("prefix {s:?}: length too long"))
    }
}

/// A capability advertised in OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol {
        afi: u16,
        safi: u8,
    },
    RouteRefresh,
    FourOctetAs(u32),
    /// Graceful Restart (code 64, RFC 4724 §3): restart flags (high 4 bits of the first octet),
    /// restart time (12 bits), and per AFI/SAFI whether forwarding state was preserved. A
    /// receive-only speaker advertises it with everything 0 and no AFI/SAFI: it only says it
    /// understands End-of-RIB ("GR-aware").
    GracefulRestart {
        flags: u8,
        time: u16,
        families: Vec<(u16, u8, u8)>,
    },
    Other {
        code: u8,
        data: Vec<u8>,
    },
}

impl Capability {
    /// The GR-aware capability of a receive-only speaker (flags 0, time 0, no AFI/SAFI).
    pub fn graceful_restart_aware() -> Capability {
        Capability::GracefulRestart {
            flags: 0,
            time: 0,
            families: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for 4-octet ASes).
    pub my_as: u16,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The sender's AS: the 4-octet capability's value when present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(self.my_as as u32)
    }
    pub fn four_octet(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }
    /// Whether the sender advertised Graceful Restart, i.e. it sends End-of-RIB markers.
    pub fn graceful_restart(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart { .. }))
    }
    /// The AFI/SAFIs the sender advertised with the multiprotocol capability; IPv4 unicast
    /// alone when it advertised none (RFC 4760 §8).
    pub fn families(&self) -> Vec<(u16, u8)> {
        let mp: Vec<(u16, u8)> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            vec![(AFI_IPV4, SAFI_UNICAST)]
        } else {
            mp
        }
    }
}

/// The attributes of the announced routes that steering uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathAttrs {
    pub origin: Option<u8>,
    /// AS-path length as in the decision process: each AS of a sequence counts, a set counts one.
    pub as_path_len: Option<u32>,
    /// The AS numbers of the path, in order (for display and tests).
    pub as_path: Vec<u32>,
    pub next_hop: Option<IpAddr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Prefix>,
    pub announced: Vec<Prefix>,
    pub attrs: PathAttrs,
    /// Set when RFC 7606 treat-as-withdraw applied: `announced` was moved into `withdrawn`.
    pub treat_as_withdraw: Option<String>,
    /// Attributes discarded under RFC 7606 "attribute discard".
    pub discarded: Vec<u8>,
    /// This UPDATE is an End-of-RIB marker (RFC 4724 §2) for this AFI/SAFI: no withdrawn
    /// routes and no NLRI (IPv4 unicast), or only an empty MP_UNREACH_NLRI (other families).
    pub end_of_rib: Option<(u16, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Keepalive,
    Notification(Notification),
    RouteRefresh { afi: u16, safi: u8 },
}

/// Decoding context: whether 4-octet AS numbers were negotiated (AS_PATH encoding).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    pub four_octet: bool,
}

/// Splits one message off the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// message and the bytes it took. Header errors come back before the body arrives.
pub fn parse(buf: &[u8], ctx: Ctx) -> Result<Option<(Message, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        // A bad marker is reported as soon as it is visible.
        if buf.iter().take(16).any(|&b| b != 0xff) {
            return Err(err(code::HEADER, 1, &[], "marker is not all ones"));
        }
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(err(code::HEADER, 1, &[], "marker is not all ones"));
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
    let ty = buf[18];
    let bad_len = || {
        err(
            code::HEADER,
            2,
            &buf[16..18],
            format!("bad message length {len} for type {ty}"),
        )
    };
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(bad_len());
    }
    let ok = match ty {
        1 => len >= 29,
        2 => len >= 23,
        3 => len >= 21,
        4 => len == 19,
        5 => len == 23,
        _ => {
            return Err(err(
                code::HEADER,
                3,
                &[ty],
                format!("unknown message type {ty}"),
            ))
        }
    };
    if !ok {
        return Err(bad_len());
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match ty {
        1 => Message::Open(parse_open(body)?),
        2 => Message::Update(parse_update(body, ctx)?),
        3 => Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        }),
        4 => Message::Keepalive,
        _ => Message::RouteRefresh {
            afi: u16::from_be_bytes([body[0], body[1]]),
            safi: body[3],
        },
    };
    Ok(Some((msg, len)))
}

fn parse_open(b: &[u8]) -> Result<Open, WireError> {
    let version = b[0];
    if version != 4 {
        return Err(err(
            code::OPEN,
            1,
            &4u16.to_be_bytes(),
            format!("unsupported BGP version {version}"),
        ));
    }
    let my_as = u16::from_be_bytes([b[1], b[2]]);
    let hold_time = u16::from_be_bytes([b[3], b[4]]);
    let router_id = Ipv4Addr::new(b[5], b[6], b[7], b[8]);
    let opt_len = b[9] as usize;
    let opts = &b[10..];
    if opts.len() != opt_len {
        return Err(err(
            code::OPEN,
            0,
            &[],
            format!("optional parameters length {opt_len} disagrees with the message"),
        ));
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(err(
            code::OPEN,
            6,
            &[],
            format!("unacceptable hold time {hold_time}"),
        ));
    }
    if router_id.is_unspecified() {
        return Err(err(code::OPEN, 3, &[], "BGP identifier 0.0.0.0"));
    }
    let mut capabilities = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        if i + 2 > opts.len() {
            return Err(err(code::OPEN, 0, &[], "truncated optional parameter"));
        }
        let (pty, plen) = (opts[i], opts[i + 1] as usize);
        let p = opts
            .get(i + 2..i + 2 + plen)
            .ok_or_else(|| err(code::OPEN, 0, &[], "optional parameter overruns OPEN"))?;
        if pty != 2 {
            return Err(err(
                code::OPEN,
                4,
                &[],
                format!("unsupported optional parameter {pty}"),
            ));
        }
        let mut j = 0;
        while j < p.len() {
            if j + 2 > p.len() {
                return Err(err(code::OPEN, 0, &[], "truncated capability"));
            }
            let (cc, cl) = (p[j], p[j + 1] as usize);
            let v = p
                .get(j + 2..j + 2 + cl)
                .ok_or_else(|| err(code::OPEN, 0, &[], "capability overruns its parameter"))?;
            capabilities.push(match (cc, cl) {
                (1, 4) => Capability::Multiprotocol {
                    afi: u16::from_be_bytes([v[0], v[1]]),
                    safi: v[3],
                },
                (2, 0) => Capability::RouteRefresh,
                (65, 4) => Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                // A malformed GR capability is kept as unknown (it then promises no End-of-RIB).
                (64, _) if cl >= 2 && (cl - 2) % 4 == 0 => Capability::GracefulRestart {
                    flags: v[0] >> 4,
                    time: u16::from_be_bytes([v[0] & 0x0f, v[1]]),
                    families: v[2..]
                        .chunks_exact(4)
                        .map(|f| (u16::from_be_bytes([f[0], f[1]]), f[2], f[3]))
                        .collect(),
                },
                (1 | 2 | 65, _) => {
                    return Err(err(
                        code::OPEN,
                        0,
                        &[],
                        format!("capability {cc} with bad length {cl}"),
                    ))
                }
                _ => Capability::Other {
                    code: cc,
                    data: v.to_vec(),
                },
            });
            j += 2 + cl;
        }
        i += 2 + plen;
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        router_id,
        capabilities,
    })
}

/// Parses NLRI (length byte + minimal address bytes) of one family.
fn parse_nlri(mut b: &[u8], v6: bool, out: &mut Vec<Prefix>) -> Result<(), WireError> {
    let max = if v6 { 128 } else { 32 };
    while let Some((&len, rest)) = b.split_first() {
        if len > max {
            return Err(err(
                code::UPDATE,
                10,
                &[],
                format!("NLRI prefix length {len} exceeds {max}"),
            ));
        }
        let n = (len as usize).div_ceil(8);
        if rest.len() < n {
            return Err(err(code::UPDATE, 10, &[], "truncated NLRI"));
        }
        let addr = if v6 {
            let mut o = [0u8; 16];
            o[..n].copy_from_slice(&rest[..n]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let mut o = [0u8; 4];
            o[..n].copy_from_slice(&rest[..n]);
            IpAddr::V4(Ipv4Addr::from(o))
        };
        out.push(Prefix::new(addr, len).expect("length checked"));
        b = &rest[n..];
    }
    Ok(())
}

fn parse_update(b: &[u8], ctx: Ctx) -> Result<Update, WireError> {
    let malformed = |r: &str| err(code::UPDATE, 1, &[], r.to_string());
    let wlen = u16::from_be_bytes([b[0], b[1]]) as usize;
    if 2 + wlen + 2 > b.len() {
        return Err(malformed("withdrawn routes length overruns the message"));
    }
    let mut u = Update::default();
    if b.len() == 4 && b.iter().all(|&x| x == 0) {
        // The shortest UPDATE: End-of-RIB for IPv4 unicast.
        u.end_of_rib = Some((AFI_IPV4, SAFI_UNICAST));
        return Ok(u);
    }
    parse_nlri(&b[2..2 + wlen], false, &mut u.withdrawn)?;
    let a = 2 + wlen;
    let alen = u16::from_be_bytes([b[a], b[a + 1]]) as usize;
    if a + 2 + alen > b.len() {
        return Err(malformed(
            "total path attribute length overruns the message",
        ));
    }
    let attrs = &b[a + 2..a + 2 + alen];
    parse_nlri(&b[a + 2 + alen..], false, &mut u.announced)?;
    // Only an MP_UNREACH_NLRI with no withdrawn routes: End-of-RIB for its AFI/SAFI.
    if wlen == 0 && a + 2 + alen == b.len() && attrs.len() >= 3 && attrs[1] == 15 {
        let flags = attrs[0];
        let (hl, len) = if flags & 0x10 != 0 && attrs.len() >= 4 {
            (4, u16::from_be_bytes([attrs[2], attrs[3]]) as usize)
        } else {
            (3, attrs[2] as usize)
        };
        if flags & 0xc0 == 0x80 && len == 3 && attrs.len() == hl + 3 {
            let v = &attrs[hl..];
            u.end_of_rib = Some((u16::from_be_bytes([v[0], v[1]]), v[2]));
            return Ok(u);
        }
    }
    let mut withdraw: Option<String> = None;
    let mut seen = [false; 256];
    let mut mp_reach = false;
    let mut i = 0;
    while i < attrs.len() {
        if i + 3 > attrs.len() {
            withdraw.get_or_insert_with(|| "truncated attribute header".into());
            break;
        }
        let (flags, ty) = (attrs[i], attrs[i + 1]);
        let ext = flags & 0x10 != 0;
        let (hl, len) = if ext {
            if i + 4 > attrs.len() {
                withdraw.get_or_insert_with(|| "truncated attribute header".into());
                break;
            }
            (4, u16::from_be_bytes([attrs[i + 2], attrs[i + 3]]) as usize)
        } else {
            (3, attrs[i + 2] as usize)
        };
        let Some(v) = attrs.get(i + hl..i + hl + len) else {
            withdraw.get_or_insert_with(|| {
                format!("attribute {ty} length {len} overruns the attributes")
            });
            break;
        };
        i += hl + len;
        let optional = flags & 0x80 != 0;
        let transitive = flags & 0x40 != 0;
        if seen[ty as usize] {
            if ty == 14 || ty == 15 {
                return Err(malformed("MP_REACH_NLRI or MP_UNREACH_NLRI repeated"));
            }
            continue; // RFC 7606 §3.g: discard all but the first
        }
        seen[ty as usize] = true;
        // Well-known attributes must be transitive and not optional; optional ones optional.
        let flags_ok = match ty {
            1..=3 | 5 | 6 => !optional && transitive,
            4 => optional && !transitive,
            7 | 8 => optional && transitive,
            14 | 15 => optional && !transitive,
            _ => true,
        };
        match ty {
            1 => {
                if !flags_ok || len != 1 || v[0] > 2 {
                    withdraw.get_or_insert_with(|| "malformed ORIGIN".into());
                } else {
                    u.attrs.origin = Some(v[0]);
                }
            }
            2 => match (flags_ok, parse_as_path(v, ctx.four_octet)) {
                (true, Some(path)) => {
                    u.attrs.as_path_len = Some(path.0);
                    u.attrs.as_path = path.1;
                }
                _ => {
                    withdraw.get_or_insert_with(|| "malformed AS_PATH".into());
                }
            },
            3 => {
                if !flags_ok || len != 4 {
                    withdraw.get_or_insert_with(|| "malformed NEXT_HOP".into());
                } else {
                    u.attrs.next_hop = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])));
                }
            }
            4 => {
                if !flags_ok || len != 4 {
                    withdraw.get_or_insert_with(|| "malformed MULTI_EXIT_DISC".into());
                } else {
                    u.attrs.med = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                }
            }
            5 => {
                // LOCAL_PREF from an external peer: discarded (RFC 7606 §7.5); kept for display.
                if flags_ok && len == 4 {
                    u.attrs.local_pref = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                } else {
                    u.discarded.push(ty);
                }
            }
            // ATOMIC_AGGREGATE, AGGREGATOR: malformed ones are discarded (RFC 7606 §7.6, §7.7).
            6 | 7 if !flags_ok || (ty == 6 && len != 0) || (ty == 7 && len != 6 && len != 8) => {
                u.discarded.push(ty);
            }
            6 | 7 => {}
            8 => {
                if !flags_ok || len % 4 != 0 {
                    withdraw.get_or_insert_with(|| "malformed COMMUNITIES".into());
                } else {
                    u.attrs.communities = v
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                }
            }
            14 => {
                if !flags_ok {
                    return Err(err(code::UPDATE, 4, &[], "MP_REACH_NLRI flags"));
                }
                mp_reach = true;
                parse_mp_reach(v, &mut u)?;
            }
            15 => {
                if !flags_ok {
                    return Err(err(code::UPDATE, 4, &[], "MP_UNREACH_NLRI flags"));
                }
                if v.len() < 3 {
                    return Err(err(code::UPDATE, 9, &[], "MP_UNREACH_NLRI too short"));
                }
                let afi = u16::from_be_bytes([v[0], v[1]]);
                if v[2] == SAFI_UNICAST && (afi == AFI_IPV4 || afi == AFI_IPV6) {
                    parse_nlri(&v[3..], afi == AFI_IPV6, &mut u.withdrawn)?;
                }
            }
            _ if !optional => {
                let end = i;
                let start = end - hl - len;
                return Err(err(
                    code::UPDATE,
                    2,
                    &attrs[start..end],
                    format!("unrecognized well-known attribute {ty}"),
                ));
            }
            _ => {} // unknown optional: ignored (not passed on: we never announce)
        }
    }
    let has_v4 = !u.announced.is_empty();
    if withdraw.is_none() && (has_v4 || mp_reach) && (has_v4 || !u.announced.is_empty()) {
        let missing = if u.attrs.origin.is_none() {
            Some("ORIGIN")
        } else if u.attrs.as_path_len.is_none() {
            Some("AS_PATH")
        } else if has_v4 && u.attrs.next_hop.is_none() {
            Some("NEXT_HOP")
        } else {
            None
        };
        if let Some(m) = missing {
            withdraw = Some(format!("missing well-known attribute {m}"));
        }
    }
    if let Some(r) = withdraw {
        let ann = std::mem::take(&mut u.announced);
        u.withdrawn.extend(ann);
        u.treat_as_withdraw = Some(r);
    }
    Ok(u)
}

/// (decision length, ASes) or `None` when malformed.
fn parse_as_path(mut v: &[u8], four: bool) -> Option<(u32, Vec<u32>)> {
    let w = if four { 4 } else { 2 };
    let (mut n, mut ases) = (0u32, Vec::new());
    while !v.is_empty() {
        if v.len() < 2 {
            return None;
        }
        let (ty, count) = (v[0], v[1] as usize);
        if !(1..=4).contains(&ty) || count == 0 || v.len() < 2 + count * w {
            return None;
        }
        for k in 0..count {
            let s = &v[2 + k * w..2 + (k + 1) * w];
            ases.push(if four {
                u32::from_be_bytes([s[0], s[1], s[2], s[3]])
            } else {
                u16::from_be_bytes([s[0], s[1]]) as u32
            });
        }
        n += match ty {
            2 => count as u32,
            1 => 1,
            _ => 0, // confederation segments do not count (RFC 5065)
        };
        v = &v[2 + count * w..];
    }
    Some((n, ases))
}

fn parse_mp_reach(v: &[u8], u: &mut Update) -> Result<(), WireError> {
    let bad = |r: &str| err(code::UPDATE, 9, &[], format!("MP_REACH_NLRI: {r}"));
    if v.len() < 5 {
        return Err(bad("too short"));
    }
    let afi = u16::from_be_bytes([v[0], v[1]]);
    let safi = v[2];
    let nhl = v[3] as usize;
    if v.len() < 4 + nhl + 1 {
        return Err(bad("next hop overruns the attribute"));
    }
    if safi != SAFI_UNICAST || (afi != AFI_IPV4 && afi != AFI_IPV6) {
        return Ok(()); // a family not negotiated: ignored
    }
    let nh = &v[4..4 + nhl];
    u.attrs.next_hop = match (afi, nhl) {
        (AFI_IPV4, 4) => Some(IpAddr::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3]))),
        (AFI_IPV6, 16 | 32) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&nh[..16]);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => return Err(bad("next hop length does not fit the family")),
    };
    parse_nlri(&v[4 + nhl + 1..], afi == AFI_IPV6, &mut u.announced)
}

fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    m
}

fn put_nlri(out: &mut Vec<u8>, p: &Prefix) {
    out.push(p.len);
    let n = (p.len as usize).div_ceil(8);
    match p.addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

fn put_attr(out: &mut Vec<u8>, flags: u8, ty: u8, v: &[u8]) {
    if v.len() > 255 {
        out.extend_from_slice(&[flags | 0x10, ty]);
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, ty, v.len() as u8]);
    }
    out.extend_from_slice(v);
}

/// Encodes a message. IPv4 routes go in the classic fields, IPv6 ones in MP_REACH/MP_UNREACH;
/// the AS_PATH is one AS_SEQUENCE of `attrs.as_path` (4-octet when `ctx.four_octet`).
pub fn encode(msg: &Message, ctx: Ctx) -> Vec<u8> {
    match msg {
        Message::Keepalive => frame(4, &[]),
        Message::Notification(n) => {
            let mut b = vec![n.code, n.subcode];
            b.extend_from_slice(&n.data);
            frame(3, &b)
        }
        Message::RouteRefresh { afi, safi } => {
            let a = afi.to_be_bytes();
            frame(5, &[a[0], a[1], 0, *safi])
        }
        Message::Open(o) => {
            let mut caps = Vec::new();
            for c in &o.capabilities {
                match c {
                    Capability::Multiprotocol { afi, safi } => {
                        let a = afi.to_be_bytes();
                        caps.extend_from_slice(&[1, 4, a[0], a[1], 0, *safi]);
                    }
                    Capability::RouteRefresh => caps.extend_from_slice(&[2, 0]),
                    Capability::FourOctetAs(asn) => {
                        caps.extend_from_slice(&[65, 4]);
                        caps.extend_from_slice(&asn.to_be_bytes());
                    }
                    Capability::GracefulRestart {
                        flags,
                        time,
                        families,
                    } => {
                        let ft = (u16::from(*flags & 0x0f) << 12) | (*time & 0x0fff);
                        caps.extend_from_slice(&[64, 2 + 4 * families.len() as u8]);
                        caps.extend_from_slice(&ft.to_be_bytes());
                        for (afi, safi, f) in families {
                            caps.extend_from_slice(&afi.to_be_bytes());
                            caps.extend_from_slice(&[*safi, *f]);
                        }
                    }
                    Capability::Other { code, data } => {
                        caps.extend_from_slice(&[*code, data.len() as u8]);
                        caps.extend_from_slice(data);
                    }
                }
            }
            let mut b = vec![o.version];
            b.extend_from_slice(&o.my_as.to_be_bytes());
            b.extend_from_slice(&o.hold_time.to_be_bytes());
            b.extend_from_slice(&o.router_id.octets());
            if caps.is_empty() {
                b.push(0);
            } else {
                b.push(caps.len() as u8 + 2);
                b.extend_from_slice(&[2, caps.len() as u8]);
                b.extend_from_slice(&caps);
            }
            frame(1, &b)
        }
        Message::Update(u) => {
            let (mut w4, mut w6, mut a4, mut a6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for p in &u.withdrawn {
                put_nlri(if p.addr.is_ipv4() { &mut w4 } else { &mut w6 }, p);
            }
            for p in &u.announced {
                put_nlri(if p.addr.is_ipv4() { &mut a4 } else { &mut a6 }, p);
            }
            let mut attrs = Vec::new();
            if !u.announced.is_empty() {
                put_attr(&mut attrs, 0x40, 1, &[u.attrs.origin.unwrap_or(0)]);
                let mut path = Vec::new();
                if !u.attrs.as_path.is_empty() {
                    path.extend_from_slice(&[2, u.attrs.as_path.len() as u8]);
                    for a in &u.attrs.as_path {
                        if ctx.four_octet {
                            path.extend_from_slice(&a.to_be_bytes());
                        } else {
                            path.extend_from_slice(&(*a as u16).to_be_bytes());
                        }
                    }
                }
                put_attr(&mut attrs, 0x40, 2, &path);
                if !a4.is_empty() {
                    let nh = match u.attrs.next_hop {
                        Some(IpAddr::V4(a)) => a,
                        _ => Ipv4Addr::new(127, 0, 0, 1),
                    };
                    put_attr(&mut attrs, 0x40, 3, &nh.octets());
                }
                if let Some(med) = u.attrs.med {
                    put_attr(&mut attrs, 0x80, 4, &med.to_be_bytes());
                }
                if !u.attrs.communities.is_empty() {
                    let c: Vec<u8> = u
                        .attrs
                        .communities
                        .iter()
                        .flat_map(|c| c.to_be_bytes())
                        .collect();
                    put_attr(&mut attrs, 0xc0, 8, &c);
                }
                if !a6.is_empty() {
                    let nh = match u.attrs.next_hop {
                        Some(IpAddr::V6(a)) => a,
                        _ => Ipv6Addr::LOCALHOST,
                    };
                    let mut v = vec![0, 2, SAFI_UNICAST, 16];
                    v.extend_from_slice(&nh.octets());
                    v.push(0);
                    v.extend_from_slice(&a6);
                    put_attr(&mut attrs, 0x80, 14, &v);
                }
            }
            if !w6.is_empty() {
                let mut v = vec![0, 2, SAFI_UNICAST];
                v.extend_from_slice(&w6);
                put_attr(&mut attrs, 0x80, 15, &v);
            } else if let Some((afi, safi)) = u.end_of_rib {
                // End-of-RIB: nothing else in the UPDATE; IPv4 unicast is the empty UPDATE.
                if (afi, safi) != (AFI_IPV4, SAFI_UNICAST) && attrs.is_empty() && w4.is_empty() {
                    let a = afi.to_be_bytes();
                    put_attr(&mut attrs, 0x80, 15, &[a[0], a[1], safi]);
                }
            }
            let mut b = Vec::new();
            b.extend_from_slice(&(w4.len() as u16).to_be_bytes());
            b.extend_from_slice(&w4);
            b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
            b.extend_from_slice(&attrs);
            b.extend_from_slice(&a4);
            frame(2, &b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn update_round_trips_v4_and_v6() {
        let u = Update {
            withdrawn: vec![p("10.9.0.0/16"), p("2001:db8:9::/48")],
            announced: vec![p("10.1.0.0/16"), p("192.0.2.0/24"), p("2001:db8:1::/48")],
            attrs: PathAttrs {
                origin: Some(0),
                as_path_len: Some(3),
                as_path: vec![64500, 4_200_000_000, 64500],
                next_hop: Some("127.0.0.2".parse().unwrap()),
                med: Some(50),
                local_pref: None,
                communities: vec![0xfde8_0001],
            },
            ..Default::default()
        };
        let ctx = Ctx { four_octet: true };
        let bytes = encode(&Message::Update(u.clone()), ctx);
        let (m, n) = parse(&bytes, ctx).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        let Message::Update(got) = m else {
            panic!("{m:?}")
        };
        assert_eq!(got.announced, u.announced);
        assert_eq!(got.withdrawn, u.withdrawn);
        assert_eq!(got.attrs.as_path, u.attrs.as_path);
        assert_eq!(got.attrs.as_path_len, Some(3));
        assert_eq!(got.attrs.med, Some(50));
        assert_eq!(got.attrs.communities, vec![0xfde8_0001]);
        assert!(got.treat_as_withdraw.is_none());
    }

    fn parse_update_body(body: &[u8]) -> Update {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        m.push(2);
        m.extend_from_slice(body);
        match parse(&m, Ctx::default()).unwrap().unwrap() {
            (Message::Update(u), n) if n == m.len() => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn end_of_rib_is_recognised_for_ipv4_and_ipv6_unicast() {
        // IPv4 unicast: the minimum-length UPDATE (RFC 4724 §2), as BIRD sends it.
        let u = parse_update_body(&[0, 0, 0, 0]);
        assert_eq!(u.end_of_rib, Some((AFI_IPV4, SAFI_UNICAST)));
        assert!(u.withdrawn.is_empty() && u.announced.is_empty());
        assert!(u.treat_as_withdraw.is_none());
        // IPv6 unicast: only an empty MP_UNREACH_NLRI (flags optional, AFI 2, SAFI 1).
        let u = parse_update_body(&[0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
        assert_eq!(u.end_of_rib, Some((AFI_IPV6, SAFI_UNICAST)));
        assert!(u.withdrawn.is_empty() && u.announced.is_empty());
        // The same with an extended-length attribute header.
        let u = parse_update_body(&[0, 0, 0, 7, 0x90, 15, 0, 3, 0, 2, 1]);
        assert_eq!(u.end_of_rib, Some((AFI_IPV6, SAFI_UNICAST)));
        // An MP_UNREACH_NLRI that withdraws something is not End-of-RIB.
        let u = parse_update_body(&[0, 0, 0, 9, 0x80, 15, 6, 0, 2, 1, 16, 0x20, 0x01]);
        assert_eq!(u.end_of_rib, None);
        assert_eq!(u.withdrawn, vec![p("2001::/16")]);
        // Nor is an UPDATE withdrawing an IPv4 prefix.
        let u = parse_update_body(&[0, 2, 8, 10, 0, 0]);
        assert_eq!(u.end_of_rib, None);
        assert_eq!(u.withdrawn, vec![p("10.0.0.0/8")]);
        // Both markers re-encode to themselves.
        for fam in [(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)] {
            let eor = Update {
                end_of_rib: Some(fam),
                ..Default::default()
            };
            let bytes = encode(&Message::Update(eor.clone()), Ctx::default());
            let (m, _) = parse(&bytes, Ctx::default()).unwrap().unwrap();
            assert_eq!(m, Message::Update(eor));
        }
        assert_eq!(
            encode(
                &Message::Update(Update {
                    end_of_rib: Some((AFI_IPV4, SAFI_UNICAST)),
                    ..Default::default()
                }),
                Ctx::default()
            )
            .len(),
            23
        );
    }

    #[test]
    fn graceful_restart_capability_round_trips() {
        let open = Open {
            version: 4,
            my_as: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::graceful_restart_aware(),
                Capability::GracefulRestart {
                    flags: 0x8,
                    time: 120,
                    families: vec![(AFI_IPV6, SAFI_UNICAST, 0x80)],
                },
            ],
        };
        let bytes = encode(&Message::Open(open.clone()), Ctx::default());
        // The aware-only capability: code 64, length 2, flags and time 0.
        assert!(bytes.windows(4).any(|w| w == [64, 2, 0, 0]));
        assert!(bytes
            .windows(8)
            .any(|w| w == [64, 6, 0x80, 120, 0, 2, 1, 0x80]));
        let (m, _) = parse(&bytes, Ctx::default()).unwrap().unwrap();
        let Message::Open(got) = m else {
            panic!("{m:?}")
        };
        assert_eq!(got, open);
        assert!(got.graceful_restart());
        assert_eq!(got.families(), vec![(AFI_IPV4, SAFI_UNICAST)]);
    }

    #[test]
    fn partial_input_waits_and_header_errors_are_immediate() {
        let bytes = encode(&Message::Keepalive, Ctx::default());
        assert_eq!(parse(&bytes[..10], Ctx::default()).unwrap(), None);
        let mut bad = bytes.clone();
        bad[3] = 0;
        assert_eq!(parse(&bad[..5], Ctx::default()).unwrap_err().subcode, 1);
        let mut long = bytes.clone();
        long[17] = 20;
        let e = parse(&long, Ctx::default()).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, e.data.as_slice()),
            (1, 2, &[0u8, 20][..])
        );
    }

    #[test]
    fn prefix_masks_host_bits_and_refuses_long_lengths() {
        assert_eq!(p("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert_eq!(p("2001:db8::1/32").to_string(), "2001:db8::/32");
    }
}
