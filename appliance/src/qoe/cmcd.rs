//! A strict, bounded CMCD v1 parser (CTA-5004, Common Media Client Data).
//!
//! Input is the `CMCD` query argument (percent-decoded here) or the values of the
//! `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers. Both carry an RFC 8941
//! Structured Field Dictionary whose keys are typed below. A member that is malformed, of the
//! wrong type, over its size cap, or has an unknown key is ignored and counted in
//! [`Cmcd::ignored`]; nothing here ever fails the request it came with. Inputs longer than
//! [`MAX_INPUT_BYTES`] are not parsed at all (counted as one ignored member).

/// Longest CMCD input considered (query argument after decoding, or the joined headers), bytes.
pub const MAX_INPUT_BYTES: usize = 4096;
/// Most dictionary members considered in one input.
pub const MAX_MEMBERS: usize = 32;
/// Longest `sid` / `cid` string (CTA-5004: 64 characters).
pub const MAX_ID_LEN: usize = 64;
/// Longest `nor` / `nrr` string.
pub const MAX_PATH_LEN: usize = 256;
/// Largest integer accepted (kbps, ms): larger values are treated as malformed.
pub const MAX_INT: u64 = 1 << 40;

/// A string of at most `N` bytes held inline (CMCD's string keys have fixed caps, so parsing a
/// request's CMCD allocates nothing). Derefs to `str`.
#[derive(Clone, Copy)]
pub struct InlineStr<const N: usize> {
    buf: [u8; N],
    len: u16,
}

impl<const N: usize> InlineStr<N> {
    /// The empty string.
    pub const fn new() -> Self {
        InlineStr {
            buf: [0; N],
            len: 0,
        }
    }

    /// `s` when it fits in `N` bytes.
    pub fn try_from_str(s: &str) -> Option<Self> {
        let mut v = Self::new();
        v.buf.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        v.len = s.len() as u16;
        Some(v)
    }

    /// Appends one character; false (unchanged) when it does not fit.
    fn push(&mut self, c: char) -> bool {
        let mut tmp = [0u8; 4];
        let e = c.encode_utf8(&mut tmp).as_bytes();
        let at = usize::from(self.len);
        match self.buf.get_mut(at..at + e.len()) {
            Some(dst) => {
                dst.copy_from_slice(e);
                self.len += e.len() as u16;
                true
            }
            None => false,
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 sequences are ever written (`try_from_str`, `push`).
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::ops::Deref for InlineStr<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for InlineStr<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> std::fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl<const N: usize> std::fmt::Display for InlineStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> serde::Serialize for InlineStr<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `sid` / `cid`.
pub type IdStr = InlineStr<MAX_ID_LEN>;
/// `nor` / `nrr`.
pub type PathStr = InlineStr<MAX_PATH_LEN>;

/// The object type (`ot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    /// `m`: manifest or playlist.
    M,
    /// `a`: audio only.
    A,
    /// `v`: video only.
    V,
    /// `av`: muxed audio and video.
    Av,
    /// `i`: init segment.
    I,
    /// `c`: caption or subtitle.
    C,
    /// `tt`: ISOBMFF timed text track.
    Tt,
    /// `k`: cryptographic key, license or certificate.
    K,
    /// `o`: other.
    O,
}

impl ObjectType {
    /// Parses the CTA-5004 token.
    pub fn from_token(t: &str) -> Option<Self> {
        Some(match t {
            "m" => ObjectType::M,
            "a" => ObjectType::A,
            "v" => ObjectType::V,
            "av" => ObjectType::Av,
            "i" => ObjectType::I,
            "c" => ObjectType::C,
            "tt" => ObjectType::Tt,
            "k" => ObjectType::K,
            "o" => ObjectType::O,
            _ => return None,
        })
    }

    /// The CTA-5004 token.
    pub fn token(self) -> &'static str {
        match self {
            ObjectType::M => "m",
            ObjectType::A => "a",
            ObjectType::V => "v",
            ObjectType::Av => "av",
            ObjectType::I => "i",
            ObjectType::C => "c",
            ObjectType::Tt => "tt",
            ObjectType::K => "k",
            ObjectType::O => "o",
        }
    }

    /// Whether this object carries media samples (a rendition's bitrate applies).
    pub fn is_media(self) -> bool {
        matches!(self, ObjectType::A | ObjectType::V | ObjectType::Av)
    }
}

/// The CMCD keys of one request; absent keys are `None` / `false`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Cmcd {
    /// `br`: encoded bitrate of the object, kbps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub br: Option<u64>,
    /// `bl`: buffer length, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bl: Option<u64>,
    /// `bs`: the buffer was starved (rebuffering) before this request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bs: bool,
    /// `cid`: content id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<IdStr>,
    /// `d`: object duration, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<u64>,
    /// `dl`: deadline, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dl: Option<u64>,
    /// `mtp`: measured throughput, kbps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtp: Option<u64>,
    /// `nor`: next object request (relative path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nor: Option<PathStr>,
    /// `nrr`: next range request (`<start>-<end>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nrr: Option<PathStr>,
    /// `ot`: object type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ot: Option<ObjectType>,
    /// `pr`: playback rate (1.0 real time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<f64>,
    /// `rtp`: requested maximum throughput, kbps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtp: Option<u64>,
    /// `sf`: streaming format token (`d`, `h`, `s`, `o`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sf: Option<char>,
    /// `sid`: session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<IdStr>,
    /// `st`: stream type token (`v` VOD, `l` live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub st: Option<char>,
    /// `su`: startup (the player is starting or seeking).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub su: bool,
    /// `tb`: top bitrate of the ladder, kbps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tb: Option<u64>,
    /// `v`: CMCD version (1 when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<u64>,
    /// Members ignored: malformed, wrong type, over a cap, unknown key, or inputs over
    /// [`MAX_INPUT_BYTES`].
    #[serde(skip)]
    pub ignored: u32,
}

impl Cmcd {
    /// Whether no key was read.
    pub fn is_empty(&self) -> bool {
        let ignored = self.ignored;
        *self
            == Cmcd {
                ignored,
                ..Cmcd::default()
            }
    }

    /// Parses the `CMCD` argument of a query string (`a=b&CMCD=br%3D3200%2Cot%3Dv`), if any.
    pub fn from_query(query: &str) -> Cmcd {
        let mut c = Cmcd::default();
        for arg in query.split('&') {
            let Some(value) = arg.strip_prefix("CMCD=") else {
                continue;
            };
            if value.len() > MAX_INPUT_BYTES * 3 {
                c.ignored += 1;
                continue;
            }
            // Decoded on the stack: a value that decodes past the cap is ignored like one
            // handed to `add` would be.
            let mut buf = [0u8; MAX_INPUT_BYTES];
            match percent_decode(value, &mut buf) {
                Some(decoded) => c.add(decoded),
                None => c.ignored += 1,
            }
        }
        c
    }

    /// Adds one Structured Field Dictionary (a header value, or a decoded query argument).
    pub fn add(&mut self, dict: &str) {
        if dict.len() > MAX_INPUT_BYTES {
            self.ignored += 1;
            return;
        }
        let mut rest = dict;
        let mut members = 0;
        while !rest.is_empty() {
            rest = rest.trim_start_matches([' ', '\t']);
            if rest.is_empty() {
                break;
            }
            members += 1;
            if members > MAX_MEMBERS {
                self.ignored += 1;
                return;
            }
            let (member, tail) = split_member(rest);
            rest = tail;
            if !self.member(member.trim_end_matches([' ', '\t'])) {
                self.ignored += 1;
            }
        }
    }

    /// One `key[=value]` member; false when it is ignored.
    fn member(&mut self, m: &str) -> bool {
        let (key, value) = match m.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (m, None),
        };
        let int = |v: Option<&str>| -> Option<u64> {
            let v = v?;
            if v.is_empty() || v.len() > 15 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            v.parse().ok().filter(|&n| n <= MAX_INT)
        };
        let boolean = |v: Option<&str>| -> Option<bool> {
            match v {
                None | Some("?1") => Some(true),
                Some("?0") => Some(false),
                _ => None,
            }
        };
        let token_char = |v: Option<&str>, allowed: &[char]| -> Option<char> {
            let v = v?;
            let mut chars = v.chars();
            let c = chars.next()?;
            (chars.next().is_none() && allowed.contains(&c)).then_some(c)
        };
        let ok = match key {
            "br" => int(value).map(|n| self.br = Some(n)).is_some(),
            "bl" => int(value).map(|n| self.bl = Some(n)).is_some(),
            "d" => int(value).map(|n| self.d = Some(n)).is_some(),
            "dl" => int(value).map(|n| self.dl = Some(n)).is_some(),
            "mtp" => int(value).map(|n| self.mtp = Some(n)).is_some(),
            "rtp" => int(value).map(|n| self.rtp = Some(n)).is_some(),
            "tb" => int(value).map(|n| self.tb = Some(n)).is_some(),
            "v" => int(value).map(|n| self.v = Some(n)).is_some(),
            "bs" => boolean(value).map(|b| self.bs = b).is_some(),
            "su" => boolean(value).map(|b| self.su = b).is_some(),
            "cid" => sf_string::<MAX_ID_LEN>(value)
                .map(|s| self.cid = Some(s))
                .is_some(),
            "sid" => sf_string::<MAX_ID_LEN>(value)
                .map(|s| self.sid = Some(s))
                .is_some(),
            "nor" => sf_string::<MAX_PATH_LEN>(value)
                .map(|s| self.nor = Some(s))
                .is_some(),
            "nrr" => sf_string::<MAX_PATH_LEN>(value)
                .filter(|s| {
                    let (a, b) = s.split_once('-').unwrap_or((s.as_str(), ""));
                    !a.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit())
                })
                .map(|s| self.nrr = Some(s))
                .is_some(),
            "ot" => value
                .and_then(ObjectType::from_token)
                .map(|t| self.ot = Some(t))
                .is_some(),
            "sf" => token_char(value, &['d', 'h', 's', 'o'])
                .map(|c| self.sf = Some(c))
                .is_some(),
            "st" => token_char(value, &['v', 'l'])
                .map(|c| self.st = Some(c))
                .is_some(),
            "pr" => value
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= 16
                        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                        && v.bytes().filter(|&b| b == b'.').count() <= 1
                        && !v.starts_with('.')
                        && !v.ends_with('.')
                })
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|p| p.is_finite())
                .map(|p| self.pr = Some(p))
                .is_some(),
            _ => false,
        };
        ok
    }
}

/// Splits off one dictionary member, honouring quoted strings (a `,` inside quotes is data).
fn split_member(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b',' if !in_str => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
        i += 1;
    }
    (s, "")
}

/// An RFC 8941 sf-string (`"..."` with `\"` and `\\` escapes, printable ASCII), at most `N`
/// characters once unescaped.
fn sf_string<const N: usize>(v: Option<&str>) -> Option<InlineStr<N>> {
    let inner = v?.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = InlineStr::<N>::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.next()? {
                e @ ('"' | '\\') => e,
                _ => return None,
            },
            '"' => return None,
            c if (' '..='~').contains(&c) => c,
            _ => return None,
        };
        if !out.push(c) {
            return None;
        }
    }
    Some(out)
}

/// Percent-decodes a query argument into `buf` (`+` stays `+`: CMCD values never contain
/// spaces). `None` on a malformed escape, a result that is not UTF-8 or one longer than `buf`.
fn percent_decode<'b>(s: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let b = s.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        let v = if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            i += 3;
            u8::from_str_radix(hex, 16).ok()?
        } else {
            i += 1;
            b[i - 1]
        };
        *buf.get_mut(n)? = v;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaka_style_query_parses() {
        let q = "x=1&CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22faec5fc2-ac30-11ea-bb37-0242ac130002%22%2Cd%3D4004%2Cdl%3D18500%2Cmtp%3D48100%2Cnor%3D%22..%252F300kbps%252Ftrack.m4v%22%2Cnrr%3D%2212323-48763%22%2Cot%3Dv%2Cpr%3D1.08%2Crtp%3D12000%2Csf%3Dd%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Cst%3Dv%2Csu%2Ctb%3D6000";
        let c = Cmcd::from_query(q);
        assert_eq!(c.ignored, 0, "{c:?}");
        assert_eq!(c.bl, Some(21300));
        assert_eq!(c.br, Some(3200));
        assert!(c.bs && c.su);
        assert_eq!(
            c.cid.as_deref(),
            Some("faec5fc2-ac30-11ea-bb37-0242ac130002")
        );
        assert_eq!(c.d, Some(4004));
        assert_eq!(c.dl, Some(18500));
        assert_eq!(c.mtp, Some(48100));
        assert_eq!(c.nor.as_deref(), Some("..%2F300kbps%2Ftrack.m4v"));
        assert_eq!(c.nrr.as_deref(), Some("12323-48763"));
        assert_eq!(c.ot, Some(ObjectType::V));
        assert_eq!(c.pr, Some(1.08));
        assert_eq!(c.rtp, Some(12000));
        assert_eq!(c.sf, Some('d'));
        assert_eq!(
            c.sid.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
        assert_eq!(c.st, Some('v'));
        assert_eq!(c.tb, Some(6000));
    }

    #[test]
    fn headers_add_up_and_false_booleans_read() {
        let mut c = Cmcd::default();
        c.add("br=3200, bs=?0, d=4004, mtp=25400, ot=v, rtp=15000");
        c.add(r#"cid="a\"b,c", sid="s1", sf=h, st=v"#);
        assert_eq!(c.ignored, 0, "{c:?}");
        assert!(!c.bs);
        assert_eq!(c.cid.as_deref(), Some("a\"b,c"));
        assert_eq!(c.sf, Some('h'));
    }

    #[test]
    fn bad_members_are_ignored_and_counted() {
        for (input, ignored) in [
            ("br=abc", 1),
            ("br=-5", 1),
            ("br=99999999999999999999", 1),
            ("bl=1.5", 1),
            ("bs=yes", 1),
            ("ot=video", 1),
            ("sid=unquoted", 1),
            (r#"sid="unterminated"#, 1),
            ("zz=1", 1),
            ("com.example-key=1", 1),
            ("sf=dd", 1),
            ("pr=1e5", 1),
            ("nrr=\"x-y\"", 1),
            ("br=1,zz,bl=2", 1),
        ] {
            let mut c = Cmcd::default();
            c.add(input);
            assert_eq!(c.ignored, ignored, "{input}");
        }
        let long_sid = format!("sid=\"{}\"", "x".repeat(65));
        let mut c = Cmcd::default();
        c.add(&long_sid);
        assert_eq!((c.sid, c.ignored), (None, 1));
        let mut c = Cmcd::default();
        c.add(&"br=1,".repeat(2000));
        assert_eq!((c.br, c.ignored), (None, 1));
        let mut c = Cmcd::default();
        c.add(&"br=1,".repeat(40));
        assert_eq!(c.ignored, 1, "members over the cap stop the parse");
        assert_eq!(Cmcd::from_query("CMCD=%zz").ignored, 1);
        assert_eq!(Cmcd::from_query("CMCD=%ff%fe").ignored, 1);
        assert!(Cmcd::from_query("a=b").is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_without_panic_within_caps(input in ".{0,600}", q in "[A-Za-z0-9%=&,;\"?-]{0,600}") {
            let mut c = Cmcd::from_query(&q);
            c.add(&input);
            c.add(&q);
            proptest::prop_assert!(c.sid.as_ref().is_none_or(|v| v.len() <= MAX_ID_LEN));
            proptest::prop_assert!(c.cid.as_ref().is_none_or(|v| v.len() <= MAX_ID_LEN));
            proptest::prop_assert!(c.nor.as_ref().is_none_or(|v| v.len() <= MAX_PATH_LEN));
        }
    }
}
