//! `Range: bytes=...` parsing and arithmetic (RFC 9110 section 14).
//!
//! Forms `a-b`, `a-` and `-n`. A range is satisfiable when its first byte is below the length, or
//! when it is a suffix of non-zero length on a non-empty representation; a last byte past the end
//! is clamped; a suffix longer than the representation means all of it. A syntactically invalid
//! header, another unit, more than [`MAX_RANGES`] ranges, or ranges whose sizes add up past the
//! representation (the CVE-2011-3192 shape) are ignored: the answer is 200 with the whole body.
//! No satisfiable range at all: 416 with `Content-Range: bytes */LEN`.
//!
//! All arithmetic is checked: numbers that overflow `u64` make the header invalid (ignored).

use super::limits::{MAX_RANGES, MAX_RANGE_HEADER_LEN};

/// An inclusive byte range `first..=last` inside a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte offset.
    pub first: u64,
    /// Last byte offset (inclusive); `first <= last < len`.
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// At most [`MAX_RANGES`] ranges, held inline (no heap allocation per request); derefs to a
/// slice.
#[derive(Clone, Copy)]
pub struct Ranges {
    items: [ByteRange; MAX_RANGES],
    len: usize,
}

impl Ranges {
    const EMPTY: ByteRange = ByteRange { first: 0, last: 0 };

    /// No range.
    pub const fn new() -> Self {
        Ranges {
            items: [Self::EMPTY; MAX_RANGES],
            len: 0,
        }
    }

    /// These ranges (at most [`MAX_RANGES`]; the rest are left out).
    pub fn of(ranges: &[ByteRange]) -> Self {
        let mut r = Ranges::new();
        for &b in ranges {
            r.push(b);
        }
        r
    }

    /// Appends one range; false (and nothing added) when [`MAX_RANGES`] are held.
    pub fn push(&mut self, r: ByteRange) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = r;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges::new()
    }
}

impl std::ops::Deref for Ranges {
    type Target = [ByteRange];
    fn deref(&self) -> &[ByteRange] {
        &self.items[..self.len]
    }
}

impl<'a> IntoIterator for &'a Ranges {
    type Item = &'a ByteRange;
    type IntoIter = std::slice::Iter<'a, ByteRange>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Ranges {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Ranges {}

impl std::fmt::Debug for Ranges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What to do with a `Range` header for a representation of a given length.
// Large on purpose: the ranges are inline so a range request allocates nothing (it lives on
// the stack for the length of one request).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// Ignore the header: 200 with the whole body.
    Full,
    /// 206 with these ranges (one: a single part; several: `multipart/byteranges`), in the
    /// order requested.
    Partial(Ranges),
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parsed range specs, inline.
struct Specs {
    items: [Spec; MAX_RANGES],
    len: usize,
}

impl Specs {
    fn as_slice(&self) -> &[Spec] {
        &self.items[..self.len]
    }
}

fn parse_specs(value: &str) -> Option<Specs> {
    if value.len() > MAX_RANGE_HEADER_LEN {
        return None;
    }
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Specs {
        items: [Spec::From(0); MAX_RANGES],
        len: 0,
    };
    for item in set.split(',') {
        let item = item.trim_matches(|c| c == ' ' || c == '\t');
        if item.is_empty() {
            continue;
        }
        if specs.len == MAX_RANGES {
            return None;
        }
        let (a, b) = item.split_once('-')?;
        let spec = match (a.is_empty(), b.is_empty()) {
            (true, false) => Spec::Suffix(number(b)?),
            (false, true) => Spec::From(number(a)?),
            (false, false) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a {
                    return None;
                }
                Spec::FromTo(a, b)
            }
            (true, true) => return None,
        };
        specs.items[specs.len] = spec;
        specs.len += 1;
    }
    if specs.len == 0 {
        None
    } else {
        Some(specs)
    }
}

/// Evaluates a `Range` header value against a representation of `len` bytes.
pub fn evaluate(value: &str, len: u64) -> RangeDecision {
    let Some(specs) = parse_specs(value) else {
        return RangeDecision::Full;
    };
    let mut out = Ranges::new();
    for &s in specs.as_slice() {
        let r = match s {
            Spec::FromTo(a, b) if a < len => ByteRange {
                first: a,
                last: b.min(len - 1),
            },
            Spec::From(a) if a < len => ByteRange {
                first: a,
                last: len - 1,
            },
            Spec::Suffix(n) if n > 0 && len > 0 => ByteRange {
                first: len.saturating_sub(n),
                last: len - 1,
            },
            _ => continue,
        };
        out.push(r);
    }
    if out.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    let total = out.iter().try_fold(0u64, |acc, r| acc.checked_add(r.len()));
    match total {
        Some(t) if out.len() == 1 || t <= len => RangeDecision::Partial(out),
        _ => RangeDecision::Full,
    }
}

/// Whether an `If-Range`-free request's `Range` value is a CORS-safelisted single range (used only
/// for documentation of the preflight rule; browsers decide this themselves).
pub fn is_single_simple(value: &str) -> bool {
    matches!(
        parse_specs(value).as_ref().map(Specs::as_slice),
        Some([Spec::FromTo(..)] | [Spec::From(_)])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    fn check(value: &str, len: u64, expect: RangeDecision) {
        assert_eq!(evaluate(value, len), expect, "{value:?} len {len}");
    }

    #[test]
    fn table() {
        use RangeDecision::*;
        check("bytes=0-9", 100, Partial(Ranges::of(&[r(0, 9)])));
        check("bytes=0-", 100, Partial(Ranges::of(&[r(0, 99)])));
        check("bytes=90-200", 100, Partial(Ranges::of(&[r(90, 99)])));
        check("bytes=-10", 100, Partial(Ranges::of(&[r(90, 99)])));
        check("bytes=-1000", 100, Partial(Ranges::of(&[r(0, 99)])));
        check("bytes=99-99", 100, Partial(Ranges::of(&[r(99, 99)])));
        check("bytes=100-", 100, Unsatisfiable);
        check("bytes=100-200", 100, Unsatisfiable);
        check("bytes=-0", 100, Unsatisfiable);
        check("bytes=0-0", 0, Unsatisfiable);
        check("bytes=-5", 0, Unsatisfiable);
        check("BYTES = 0-1", 100, Partial(Ranges::of(&[r(0, 1)])));
        check(
            "bytes=0-1, 5-6",
            100,
            Partial(Ranges::of(&[r(0, 1), r(5, 6)])),
        );
        check(
            "bytes=0-1,,5-6,",
            100,
            Partial(Ranges::of(&[r(0, 1), r(5, 6)])),
        );
        check("bytes=0-1, 200-300", 100, Partial(Ranges::of(&[r(0, 1)])));
        check("bytes=200-300, 300-", 100, Unsatisfiable);
        // Invalid syntax or other units: ignored.
        check("items=0-1", 100, Full);
        check("bytes=1-0", 100, Full);
        check("bytes=a-b", 100, Full);
        check("bytes=-", 100, Full);
        check("bytes=", 100, Full);
        check("bytes=0-1-2", 100, Full);
        check("bytes=+1-2", 100, Full);
        check("bytes=99999999999999999999999-", 100, Full);
        check("bytes=0-99999999999999999999999", 100, Full);
        check("bytes 0-1", 100, Full);
        // Overlap abuse and the range cap.
        check("bytes=0-99,0-99", 100, Full);
        let many = (0..=MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        check(&format!("bytes={many}"), 100, Full);
        let cap = (0..MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            matches!(evaluate(&format!("bytes={cap}"), 100), Partial(v) if v.len() == MAX_RANGES)
        );
        check("bytes=18446744073709551615-", 100, Unsatisfiable);
        check(
            "bytes=-18446744073709551615",
            100,
            Partial(Ranges::of(&[r(0, 99)])),
        );
        assert!(is_single_simple("bytes=0-5"));
        assert!(!is_single_simple("bytes=-5"));
    }

    proptest! {
        #[test]
        fn ranges_stay_inside(len in 0u64..10_000, a in 0u64..20_000, b in 0u64..20_000, n in 0u64..20_000) {
            // A reference model of satisfiability for each single form.
            let from_to_ok = a <= b && a < len;
            let from_ok = a < len;
            let suffix_ok = n > 0 && len > 0;
            for (value, ok, valid) in [
                (format!("bytes={a}-{b}"), from_to_ok, a <= b),
                (format!("bytes={a}-"), from_ok, true),
                (format!("bytes=-{n}"), suffix_ok, true),
            ] {
                match evaluate(&value, len) {
                    RangeDecision::Partial(v) => {
                        prop_assert!(ok && valid);
                        prop_assert_eq!(v.len(), 1);
                        prop_assert!(v[0].first <= v[0].last && v[0].last < len);
                    }
                    RangeDecision::Unsatisfiable => prop_assert!(!ok && valid),
                    RangeDecision::Full => prop_assert!(!valid),
                }
            }
            let two = format!("bytes={a}-,-{n}");
            match evaluate(&two, len) {
                RangeDecision::Partial(v) => {
                    let total: u64 = v.iter().map(ByteRange::len).sum();
                    prop_assert!(v.len() == 1 || total <= len);
                    for r in &v {
                        prop_assert!(r.first <= r.last && r.last < len);
                    }
                }
                RangeDecision::Unsatisfiable => prop_assert!(!from_ok && !suffix_ok),
                RangeDecision::Full => prop_assert!(from_ok && suffix_ok),
            }
        }

        #[test]
        fn suffix_is_the_tail(len in 1u64..1_000_000, n in 1u64..2_000_000) {
            let RangeDecision::Partial(v) = evaluate(&format!("bytes=-{n}"), len) else {
                return Err(TestCaseError::fail("suffix not satisfiable"));
            };
            prop_assert_eq!(&v[..], &[ByteRange { first: len.saturating_sub(n), last: len - 1 }][..]);
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,64}", len in any::<u64>()) {
            let _ = evaluate(&s, len);
        }
    }
}
