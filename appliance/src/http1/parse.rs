//! The HTTP/1.1 request-head parser: strict RFC 9112 framing, no allocation driven by untrusted
//! sizes beyond the bounded head, and a specific error (status + the header or rule it names) for
//! every refusal.
//!
//! Refused shapes (each a 400 that closes the connection unless noted): bare LF or bare CR line
//! endings, obs-fold continuation lines, whitespace before a colon, control characters in a
//! field value, `Content-Length` together with `Transfer-Encoding`, a repeated or comma-joined or
//! non-numeric `Content-Length`, any request body (this server takes GET, HEAD and OPTIONS only),
//! `Transfer-Encoding` on HTTP/1.0, an unknown transfer coding (501), a missing or repeated
//! `Host` on HTTP/1.1, a head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] fields (431), a target
//! over [`MAX_TARGET_LEN`] (414), an HTTP version other than 1.0/1.1 (505).

use std::borrow::Cow;

use super::limits::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_LEADING_EMPTY_LINES, MAX_TARGET_LEN};
use super::Status;

/// Request methods this server distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// OPTIONS (CORS preflight)
    Options,
    /// Any other syntactically valid method: answered 405.
    Other(String),
}

/// HTTP version of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: close after the response unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close`.
    Http11,
}

/// A parsed request head, borrowed from the connection's input buffer (no copy on the hit
/// path): only the fields this server acts on are kept. Header values are `Cow`s, borrowed
/// unless they had to change (repeated list fields joined with `, `, bytes that are not UTF-8
/// replaced); read them as `&str` with `as_deref()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The request target's path (before any `?`), still percent-encoded.
    pub path: &'a str,
    /// The request target's query (after the first `?`, without it), still percent-encoded.
    pub query: Option<&'a str>,
    /// The protocol version.
    pub version: Version,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `Host`.
    pub host: Option<Cow<'a, str>>,
    /// `Range`.
    pub range: Option<Cow<'a, str>>,
    /// `If-Range`.
    pub if_range: Option<Cow<'a, str>>,
    /// `If-Match` (repeated fields joined with `,`).
    pub if_match: Option<Cow<'a, str>>,
    /// `If-None-Match` (repeated fields joined with `,`).
    pub if_none_match: Option<Cow<'a, str>>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<Cow<'a, str>>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<Cow<'a, str>>,
    /// `Origin`.
    pub origin: Option<Cow<'a, str>>,
    /// `Access-Control-Request-Method` (preflight).
    pub ac_request_method: Option<Cow<'a, str>>,
    /// `User-Agent` (access log only).
    pub user_agent: Option<Cow<'a, str>>,
    /// QoE: the `CMCD-Request`, `CMCD-Object`, `CMCD-Status`, `CMCD-Session` values, in that
    /// order, each borrowed from the head (a repeated field is joined with `, `).
    pub cmcd: [Option<Cow<'a, str>>; 4],
}

/// A refused request: the status to answer with and what was wrong, naming the header or rule.
/// The connection is closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status:?}: {detail}")]
pub struct ParseError {
    /// The answer's status.
    pub status: Status,
    /// Human-readable reason, naming the header field, the limit or the rule.
    pub detail: String,
}

fn err(status: Status, detail: impl Into<String>) -> ParseError {
    ParseError {
        status,
        detail: detail.into(),
    }
}

fn bad(detail: impl Into<String>) -> ParseError {
    err(Status::BadRequest, detail)
}

/// Parses one request head from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((request, consumed)))` when a head is
/// complete (`consumed` counts the head and any empty lines before it), or the refusal.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, ParseError> {
    // Skip empty lines before the request line (RFC 9112 section 2.2).
    let mut start = 0;
    let mut skipped = 0;
    while buf.len() >= start + 2 && &buf[start..start + 2] == b"\r\n" {
        start += 2;
        skipped += 1;
        if skipped > MAX_LEADING_EMPTY_LINES {
            return Err(bad("too many empty lines before the request line"));
        }
    }
    let data = &buf[start..];
    if data.len() == 1 && data[0] == b'\r' {
        return Ok(None);
    }
    // Check line endings as far as we have bytes, then look for the end of the head.
    let limit = data.len().min(MAX_HEAD_BYTES);
    let mut end = None;
    let mut i = 0;
    while i < limit {
        match data[i] {
            b'\n' => {
                if i == 0 || data[i - 1] != b'\r' {
                    return Err(bad("bare LF line ending (lines must end with CRLF)"));
                }
                if i >= 3 && &data[i - 3..=i] == b"\r\n\r\n" {
                    end = Some(i + 1);
                    break;
                }
            }
            b'\r' if i + 1 < data.len() && data[i + 1] != b'\n' => {
                return Err(bad("bare CR in the request head"));
            }
            0 => return Err(bad("NUL byte in the request head")),
            _ => {}
        }
        i += 1;
    }
    let Some(end) = end else {
        if data.len() >= MAX_HEAD_BYTES {
            return Err(err(
                Status::HeaderFieldsTooLarge,
                format!("request head exceeds {MAX_HEAD_BYTES} bytes"),
            ));
        }
        return Ok(None);
    };
    let head = &data[..end - 4];
    let req = parse_head(head)?;
    Ok(Some((req, start + end)))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_head<'a>(head: &'a [u8]) -> Result<Request<'a>, ParseError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let (method, path, query, version) = parse_request_line(line)?;
    let mut req = Request {
        method,
        path,
        query,
        version,
        keep_alive: version == Version::Http11,
        host: None,
        range: None,
        if_range: None,
        if_match: None,
        if_none_match: None,
        if_modified_since: None,
        if_unmodified_since: None,
        origin: None,
        ac_request_method: None,
        user_agent: None,
        cmcd: [None, None, None, None],
    };
    let mut count = 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut host_count = 0;
    for line in lines {
        count += 1;
        if count > MAX_HEADERS {
            return Err(err(
                Status::HeaderFieldsTooLarge,
                format!("more than {MAX_HEADERS} header fields"),
            ));
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(bad(
                "obs-fold (a header line starting with whitespace) is not accepted",
            ));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("header line without ':'"))?;
        let name = &line[..colon];
        if name.is_empty() {
            return Err(bad("empty header field name"));
        }
        if name.last().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(bad(format!(
                "whitespace before ':' in header field {:?}",
                String::from_utf8_lossy(name).trim_end()
            )));
        }
        if !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad(format!(
                "invalid character in header field name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        let name = std::str::from_utf8(name).unwrap_or_default();
        let raw = &line[colon + 1..];
        if raw.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad(format!("control character in header field {name}")));
        }
        let ows = |c| c == ' ' || c == '\t';
        let value: Cow<'a, str> = match String::from_utf8_lossy(raw) {
            Cow::Borrowed(v) => Cow::Borrowed(v.trim_matches(ows)),
            Cow::Owned(v) => Cow::Owned(v.trim_matches(ows).to_owned()),
        };
        let single = |slot: &mut Option<Cow<'a, str>>, v: Cow<'a, str>| -> Result<(), ParseError> {
            if slot.is_some() {
                return Err(bad(format!("header field {name} appears more than once")));
            }
            *slot = Some(v);
            Ok(())
        };
        let list = |slot: &mut Option<Cow<'a, str>>, v: Cow<'a, str>| match slot {
            Some(s) => {
                let s = s.to_mut();
                s.push_str(", ");
                s.push_str(&v);
            }
            None => *slot = Some(v),
        };
        // Field names compared without a lowercase copy.
        const KNOWN: [&str; 17] = [
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "range",
            "if-range",
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "origin",
            "access-control-request-method",
            "user-agent",
            "cmcd-request",
            "cmcd-object",
            "cmcd-status",
            "cmcd-session",
        ];
        let lname = KNOWN
            .iter()
            .find(|k| k.eq_ignore_ascii_case(name))
            .copied()
            .unwrap_or("");
        match lname {
            "host" => {
                host_count += 1;
                if host_count > 1 {
                    return Err(bad("header field Host appears more than once"));
                }
                if value.bytes().any(|b| b == b' ' || b == b'\t' || b == b'/') {
                    return Err(bad(format!("invalid Host value {value:?}")));
                }
                req.host = Some(value);
            }
            "content-length" => {
                if content_length.is_some() {
                    return Err(bad("header field Content-Length appears more than once"));
                }
                if value.is_empty()
                    || value.len() > 19
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad(format!("invalid Content-Length {value:?}")));
                }
                content_length = Some(value.parse().map_err(|_| bad("invalid Content-Length"))?);
            }
            "transfer-encoding" => match &mut transfer_encoding {
                Some(t) => {
                    t.push_str(", ");
                    t.push_str(&value);
                }
                None => transfer_encoding = Some(value.into_owned()),
            },
            "connection" => {
                for tok in value.split(',') {
                    let tok = tok.trim();
                    if tok.eq_ignore_ascii_case("close") {
                        conn_close = true;
                    } else if tok.eq_ignore_ascii_case("keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            "range" => single(&mut req.range, value)?,
            "if-range" => single(&mut req.if_range, value)?,
            "if-match" => list(&mut req.if_match, value),
            "if-none-match" => list(&mut req.if_none_match, value),
            "if-modified-since" => single(&mut req.if_modified_since, value)?,
            "if-unmodified-since" => single(&mut req.if_unmodified_since, value)?,
            "origin" => single(&mut req.origin, value)?,
            "access-control-request-method" => single(&mut req.ac_request_method, value)?,
            "user-agent" => req.user_agent = Some(value),
            // QoE: CMCD header mode (CTA-5004); parsed later, bounded by the head size.
            "cmcd-request" => list(&mut req.cmcd[0], value),
            "cmcd-object" => list(&mut req.cmcd[1], value),
            "cmcd-status" => list(&mut req.cmcd[2], value),
            "cmcd-session" => list(&mut req.cmcd[3], value),
            _ => {}
        }
    }
    if let Some(te) = transfer_encoding {
        if version == Version::Http10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        let known = te.split(',').map(str::trim).all(|c| {
            ["chunked", "gzip", "deflate", "compress", "x-gzip"]
                .iter()
                .any(|k| c.eq_ignore_ascii_case(k))
        });
        if !known {
            return Err(err(
                Status::NotImplemented,
                format!("unknown transfer coding in Transfer-Encoding {te:?}"),
            ));
        }
        return Err(bad("Transfer-Encoding: request bodies are not accepted"));
    }
    if content_length.is_some_and(|n| n > 0) {
        return Err(bad("Content-Length: request bodies are not accepted"));
    }
    if version == Version::Http11 && host_count == 0 {
        return Err(bad("missing Host header field"));
    }
    req.keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };
    Ok(req)
}

fn parse_request_line(line: &[u8]) -> Result<(Method, &str, Option<&str>, Version), ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            "request line is not `METHOD SP target SP HTTP-version`",
        ));
    };
    if m.is_empty() || !m.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid method token"));
    }
    let version = match v {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            return Err(err(
                Status::VersionNotSupported,
                format!("HTTP version {} not supported", String::from_utf8_lossy(v)),
            ))
        }
        _ => return Err(bad("invalid HTTP version in request line")),
    };
    if t.len() > MAX_TARGET_LEN {
        return Err(err(
            Status::UriTooLong,
            format!("request target exceeds {MAX_TARGET_LEN} bytes"),
        ));
    }
    if t.is_empty() || !t.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(bad("request target must be visible ASCII"));
    }
    if t.contains(&b'#') {
        return Err(bad("fragment in request target"));
    }
    let method = match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"OPTIONS" => Method::Options,
        other => Method::Other(String::from_utf8_lossy(other).into_owned()),
    };
    let target = std::str::from_utf8(t).unwrap_or_default();
    if target == "*" {
        if method != Method::Options {
            return Err(bad("asterisk-form target is only valid with OPTIONS"));
        }
    } else if !target.starts_with('/') {
        return Err(bad(
            "request target must be in origin-form (start with '/')",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok((method, path, query, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<(), Status>) {
        let r = parse_request(input.as_bytes());
        match (r, expect) {
            (Ok(Some(_)), Ok(())) => {}
            (Err(e), Err(s)) => assert_eq!(e.status, s, "{input:?}: {e}"),
            (other, expect) => panic!("{input:?}: got {other:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn the_request_borrows_the_buffer_and_splits_the_query() {
        let buf = b"GET /g/tok/t/seg.m4s?CMCD=br%3D3200%2Cbl%3D21300 HTTP/1.1\r\nHost: a\r\n\
                    Range: bytes=0-9\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n\r\n";
        let (r, used) = parse_request(buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(r.path, "/g/tok/t/seg.m4s");
        assert_eq!(r.query, Some("CMCD=br%3D3200%2Cbl%3D21300"));
        assert!(matches!(r.range, Some(Cow::Borrowed("bytes=0-9"))));
        assert!(matches!(r.host, Some(Cow::Borrowed("a"))));
        // Repeated list fields are joined: the one value that had to be copied.
        assert_eq!(r.if_none_match.as_deref(), Some("\"a\", \"b\""));
        let (r, _) = parse_request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.query, None);
    }

    #[test]
    fn accepts_valid_requests() {
        check("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(()));
        check("GET /x?y=1 HTTP/1.0\r\n\r\n", Ok(()));
        check("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(()));
        check(
            "HEAD /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            Ok(()),
        );
        check("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok(()));
        check("DELETE /a HTTP/1.1\r\nHost: a\r\n\r\n", Ok(()));
        check(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Bin: caf\u{e9}\r\n\r\n",
            Ok(()),
        );
    }

    #[test]
    fn refuses_smuggling_and_malformed_shapes() {
        use Status::*;
        for (input, status) in [
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: bogus\r\n\r\n", NotImplemented),
            ("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", VersionNotSupported),
            ("GET / HTTX/1.1\r\nHost: a\r\n\r\n", BadRequest),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest),
            ("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest),
            ("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n", BadRequest),
            ("G\u{e9}T / HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest),
        ] {
            check(input, Err(status));
        }
    }

    #[test]
    fn limits_are_exact() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_TARGET_LEN)
        );
        check(&long_target, Err(Status::UriTooLong));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        check(
            &format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"),
            Err(Status::HeaderFieldsTooLarge),
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
            "v".repeat(MAX_HEAD_BYTES)
        );
        check(&big, Err(Status::HeaderFieldsTooLarge));
        // Exactly at the limit of fields is fine.
        let ok: String = (1..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        check(&format!("GET / HTTP/1.1\r\nHost: a\r\n{ok}\r\n"), Ok(()));
    }

    #[test]
    fn partial_input_asks_for_more() {
        let full = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        for n in 0..full.len() {
            assert_eq!(parse_request(&full[..n]), Ok(None), "prefix {n}");
        }
        let (_, used) = parse_request(full).unwrap().unwrap();
        assert_eq!(used, full.len());
    }

    #[test]
    fn fields_and_keep_alive() {
        let input: &[u8] = b"GET /g/t/x/y.m4s?q=1 HTTP/1.1\r\nHOST: h\r\nrange: bytes=0-9\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\nConnection: close\r\n\r\nGET";
        let (r, used) = parse_request(input).unwrap().unwrap();
        assert_eq!(r.path, "/g/t/x/y.m4s");
        assert_eq!(r.range.as_deref(), Some("bytes=0-9"));
        assert_eq!(r.if_none_match.as_deref(), Some("\"a\", \"b\""));
        assert!(!r.keep_alive);
        assert_eq!(used, input.len() - 3, "the next pipelined request is left");
        let (r, _) = parse_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive);
        let (r, _) = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
    }
}
