//! Conditional requests (RFC 9110 section 13): `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since` evaluated in the RFC's order, and `If-Range`.
//!
//! Validators: a strong `ETag` built from the file's inode, size and modification time (so it
//! changes whenever a file is replaced by write-then-rename) and `Last-Modified` in whole seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::parse::{Method, Request};

/// A representation's validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, with its quotes: `"<inode>-<size>-<mtime ns>"` in hex.
    pub etag: String,
    /// Last modification time, truncated to whole seconds.
    pub last_modified: SystemTime,
}

impl Validators {
    /// Validators from file metadata.
    pub fn from_meta(ino: u64, size: u64, mtime_ns: i128) -> Self {
        let secs = (mtime_ns.max(0) / 1_000_000_000) as u64;
        Validators {
            etag: format!("\"{ino:x}-{size:x}-{:x}\"", mtime_ns.max(0)),
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }
}

/// The outcome of the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Serve the request; `honor_range` says whether a `Range` header applies (false when
    /// `If-Range` did not match).
    Proceed {
        /// Whether to evaluate `Range`.
        honor_range: bool,
    },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

/// One entity tag from a list: `(weak, opaque-tag-with-quotes)`.
fn parse_etags(list: &str) -> Option<Vec<(bool, &str)>> {
    let mut out = Vec::new();
    let mut rest = list.trim_start_matches([' ', '\t', ',']);
    while !rest.is_empty() {
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        if !rest.starts_with('"') {
            return None;
        }
        let close = rest[1..].find('"')? + 1;
        out.push((weak, &rest[..=close]));
        rest = rest[close + 1..].trim_start_matches([' ', '\t']);
        if !rest.is_empty() {
            rest = rest.strip_prefix(',')?.trim_start_matches([' ', '\t', ',']);
        }
    }
    Some(out)
}

fn is_star(v: &str) -> bool {
    v.trim() == "*"
}

/// Strong comparison against a list (`If-Match`).
fn strong_match(list: &str, etag: &str) -> bool {
    is_star(list)
        || parse_etags(list).is_some_and(|tags| tags.iter().any(|&(w, t)| !w && t == etag))
}

/// Weak comparison against a list (`If-None-Match`).
fn weak_match(list: &str, etag: &str) -> bool {
    is_star(list) || parse_etags(list).is_some_and(|tags| tags.iter().any(|&(_, t)| t == etag))
}

fn date(v: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(v.trim()).ok()
}

/// Evaluates the preconditions of `req` against `v` (RFC 9110 section 13.2.2).
pub fn evaluate(req: &Request, v: &Validators) -> Outcome {
    let get_or_head = matches!(req.method, Method::Get | Method::Head);
    if let Some(im) = &req.if_match {
        if !strong_match(im, &v.etag) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(d) = req.if_unmodified_since.as_deref().and_then(date) {
        if v.last_modified > d {
            return Outcome::PreconditionFailed;
        }
    }
    if let Some(inm) = &req.if_none_match {
        if weak_match(inm, &v.etag) {
            return if get_or_head {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if get_or_head {
        if let Some(d) = req.if_modified_since.as_deref().and_then(date) {
            if v.last_modified <= d {
                return Outcome::NotModified;
            }
        }
    }
    let honor_range = match (&req.method, &req.range, &req.if_range) {
        (Method::Get, Some(_), Some(ir)) => if_range_matches(ir, v),
        (Method::Get, Some(_), None) => true,
        _ => false,
    };
    Outcome::Proceed { honor_range }
}

/// `If-Range`: a strong entity tag compared strongly, or an HTTP date equal to `Last-Modified`.
/// A weak tag never matches.
fn if_range_matches(value: &str, v: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') {
        value == v.etag
    } else if value.starts_with("W/") {
        false
    } else {
        date(value) == Some(v.last_modified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse::parse_request;

    fn eval(extra: &str, v: &Validators) -> Outcome {
        let text = format!("GET /x HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        let req: Request<'_> = parse_request(text.as_bytes()).unwrap().unwrap().0;
        evaluate(&req, v)
    }

    #[test]
    fn table() {
        let v = Validators::from_meta(0x10, 0x20, 1_700_000_000_500_000_000);
        let et = v.etag.clone();
        let lm = httpdate::fmt_http_date(v.last_modified);
        let before = httpdate::fmt_http_date(v.last_modified - Duration::from_secs(10));
        let after = httpdate::fmt_http_date(v.last_modified + Duration::from_secs(10));
        let go = Outcome::Proceed { honor_range: false };
        let ranged = Outcome::Proceed { honor_range: true };
        for (h, expect) in [
            (String::new(), go),
            (format!("If-None-Match: {et}\r\n"), Outcome::NotModified),
            (format!("If-None-Match: W/{et}\r\n"), Outcome::NotModified),
            (
                format!("If-None-Match: \"zz\", {et}\r\n"),
                Outcome::NotModified,
            ),
            ("If-None-Match: *\r\n".into(), Outcome::NotModified),
            ("If-None-Match: \"zz\"\r\n".into(), go),
            (format!("If-Modified-Since: {lm}\r\n"), Outcome::NotModified),
            (
                format!("If-Modified-Since: {after}\r\n"),
                Outcome::NotModified,
            ),
            (format!("If-Modified-Since: {before}\r\n"), go),
            ("If-Modified-Since: yesterday\r\n".into(), go),
            // If-None-Match wins over If-Modified-Since.
            (
                format!("If-None-Match: \"zz\"\r\nIf-Modified-Since: {after}\r\n"),
                go,
            ),
            (format!("If-Match: {et}\r\n"), go),
            ("If-Match: *\r\n".into(), go),
            (format!("If-Match: W/{et}\r\n"), Outcome::PreconditionFailed),
            ("If-Match: \"zz\"\r\n".into(), Outcome::PreconditionFailed),
            (
                format!("If-Unmodified-Since: {before}\r\n"),
                Outcome::PreconditionFailed,
            ),
            (format!("If-Unmodified-Since: {lm}\r\n"), go),
            ("Range: bytes=0-1\r\n".into(), ranged),
            (format!("Range: bytes=0-1\r\nIf-Range: {et}\r\n"), ranged),
            (format!("Range: bytes=0-1\r\nIf-Range: W/{et}\r\n"), go),
            ("Range: bytes=0-1\r\nIf-Range: \"zz\"\r\n".into(), go),
            (format!("Range: bytes=0-1\r\nIf-Range: {lm}\r\n"), ranged),
            (format!("Range: bytes=0-1\r\nIf-Range: {before}\r\n"), go),
        ] {
            assert_eq!(eval(&h, &v), expect, "{h:?}");
        }
    }

    #[test]
    fn etag_changes_with_any_component() {
        let a = Validators::from_meta(1, 2, 3).etag;
        assert_ne!(a, Validators::from_meta(9, 2, 3).etag);
        assert_ne!(a, Validators::from_meta(1, 9, 3).etag);
        assert_ne!(a, Validators::from_meta(1, 2, 9).etag);
    }
}
