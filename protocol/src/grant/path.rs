//! Request paths: splitting `/g/<grant>/<rest>` and canonicalising `<rest>`.
//!
//! The canonical form is what the grant's prefix is matched against and what the appliance maps
//! onto a cache directory, so it must be impossible for two spellings to mean different files or
//! for any spelling to leave the title directory. The rules, applied in order:
//!
//! 1. The raw path is ASCII; a query string (`?...`) has been removed by the caller.
//! 2. Percent-decoding happens once. `%2F`, `%2f`, `%5C`, `%5c` and `%00` (encoded separators
//!    and NUL) are refused before decoding; a `%` not followed by two hex digits is refused.
//! 3. The decoded path must be valid UTF-8 and must not contain NUL, `\`, control characters,
//!    `//`, or a `.` or `..` segment. A `%` that survives decoding (from `%25`) is refused too,
//!    so no later layer can decode a second time into something else.
//!
//! A path without `%` is its own canonical form: [`ResourcePath`] then borrows the raw path
//! instead of copying it (no allocation per request on an appliance's hit path); only a
//! percent-encoded path is decoded into an owned string.

use std::borrow::Cow;

use super::{GrantError, GRANT_SEGMENT, MAX_TOKEN_LEN};

/// Longest request path accepted, in bytes (before decoding).
pub const MAX_PATH_LEN: usize = 8192;

/// A canonical resource path inside a title: `/<title>/<file>` or `/<title>/<rendition>/<file>`.
///
/// Files directly in the title directory (manifests, playlists, the catalog entry) belong to no
/// rendition. Files in a subdirectory belong to the rendition named by that subdirectory: this is
/// the layout contract between the packager and the grant's `renditions` claim.
///
/// It borrows the request path it was split from when that path needed no decoding
/// ([`ResourcePath::into_owned`] detaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath<'a> {
    path: Cow<'a, str>,
}

impl<'a> ResourcePath<'a> {
    /// The full canonical path, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Whether the path borrows the raw path it was canonicalised from (it needed no decoding).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.path, Cow::Borrowed(_))
    }

    /// An owned copy, independent of the raw path.
    pub fn into_owned(self) -> ResourcePath<'static> {
        ResourcePath {
            path: Cow::Owned(self.path.into_owned()),
        }
    }

    /// An owned copy written into `buf` (cleared first; its capacity is reused, so a caller
    /// that recycles buffers copies without allocating).
    pub fn to_owned_in(&self, mut buf: String) -> ResourcePath<'static> {
        buf.clear();
        buf.push_str(&self.path);
        ResourcePath {
            path: Cow::Owned(buf),
        }
    }

    /// The path as a `String` (free when owned), e.g. to recycle its buffer.
    pub fn into_string(self) -> String {
        self.path.into_owned()
    }

    /// The segments after the leading `/`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path[1..].split('/')
    }

    /// The title id (first segment).
    pub fn title(&self) -> &str {
        self.segments().next().unwrap_or("")
    }

    /// The rendition id: the second segment when the path has three or more segments.
    pub fn rendition(&self) -> Option<&str> {
        let mut s = self.segments();
        let _title = s.next();
        let second = s.next()?;
        s.next().map(|_| second)
    }

    /// The path relative to the title directory (`<file>` or `<rendition>/<file>`).
    pub fn file(&self) -> &str {
        let rest = &self.path[1..];
        rest.split_once('/').map(|(_, f)| f).unwrap_or("")
    }

    /// Whether the path lies under `prefix` (which ends in `/`), at a segment boundary.
    pub fn is_under(&self, prefix: &str) -> bool {
        prefix.ends_with('/') && self.path.starts_with(prefix) && self.path.len() > prefix.len()
    }
}

/// Splits a raw request target of the form `/g/<grant>/<rest>` into the token and the canonical
/// resource path. The query string, if any, must already be removed.
pub fn split_grant_path(raw: &str) -> Result<(&str, ResourcePath<'_>), GrantError> {
    let rest = raw
        .strip_prefix('/')
        .and_then(|r| r.strip_prefix(GRANT_SEGMENT))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| GrantError::malformed("path does not start with /g/<grant>/"))?;
    let (token, resource) = rest
        .split_once('/')
        .ok_or_else(|| GrantError::malformed("path has no resource after the grant"))?;
    if token.is_empty() {
        return Err(GrantError::malformed("empty grant segment"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(GrantError::malformed(format!(
            "grant is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let resource = canonicalize(&raw[raw.len() - resource.len() - 1..])?;
    Ok((token, resource))
}

/// Canonicalises a resource path (see the module docs). The result has at least two segments
/// (`/<title>/<file>`); it borrows `raw` when `raw` holds no percent-escape.
pub fn canonicalize(raw: &str) -> Result<ResourcePath<'_>, GrantError> {
    let bad = |why: &str| GrantError::malformed(format!("path: {why}"));
    if raw.len() > MAX_PATH_LEN {
        return Err(bad("too long"));
    }
    if !raw.starts_with('/') {
        return Err(bad("must start with '/'"));
    }
    if !raw.is_ascii() {
        return Err(bad("raw path must be ASCII (percent-encode other bytes)"));
    }
    let bytes = raw.as_bytes();
    let path: Cow<'_, str> = if bytes.contains(&b'%') {
        Cow::Owned(decode(bytes)?)
    } else {
        Cow::Borrowed(raw)
    };
    if path
        .chars()
        .any(|c| c == '\0' || c == '\\' || c == '%' || c.is_control())
    {
        return Err(bad("NUL, backslash, '%' or control character"));
    }
    if path.contains("//") {
        return Err(bad("empty segment ('//')"));
    }
    let mut count = 0;
    for seg in path[1..].split('/') {
        count += 1;
        if seg.is_empty() {
            return Err(bad("empty segment (trailing '/')"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("'.' or '..' segment"));
        }
    }
    if count < 2 {
        return Err(bad("must name a title and a file"));
    }
    Ok(ResourcePath { path })
}

/// Percent-decodes an ASCII path once, refusing encoded separators and NUL.
fn decode(bytes: &[u8]) -> Result<String, GrantError> {
    let bad = |why: &str| GrantError::malformed(format!("path: {why}"));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or_else(|| bad("truncated percent-escape"))?;
            let v = hex_pair(hex).ok_or_else(|| bad("invalid percent-escape"))?;
            match v {
                b'/' | b'\\' => return Err(bad("encoded slash or backslash")),
                0 => return Err(bad("encoded NUL")),
                _ => out.push(v),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("decodes to invalid UTF-8"))
}

fn hex_pair(h: &[u8]) -> Option<u8> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    Some(d(h[0])? << 4 | d(h[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        let p = canonicalize("/tears/video-360p/seg%201.m4s").unwrap();
        assert_eq!(p.as_str(), "/tears/video-360p/seg 1.m4s");
        assert_eq!(p.title(), "tears");
        assert_eq!(p.rendition(), Some("video-360p"));
        assert_eq!(p.file(), "video-360p/seg 1.m4s");
        assert!(!p.is_borrowed(), "a decoded path is owned");
        let m = canonicalize("/tears/master.m3u8").unwrap();
        assert_eq!(m.rendition(), None);
        assert!(m.is_under("/tears/"));
        assert!(!m.is_under("/tear/"));
        assert!(!canonicalize("/tearsX/a").unwrap().is_under("/tears/"));
    }

    #[test]
    fn refuses_traversal_in_every_encoding() {
        for bad in [
            "/t/../etc/passwd",
            "/t/%2e%2e/x",
            "/t/%2E%2E/x",
            "/t/./x",
            "/t/%2e/x",
            "/t//x",
            "/t/a%2fb",
            "/t/a%2Fb",
            "/t/a%5cb",
            "/t/a\\b",
            "/t/a%00b",
            "/t/a%252e%252e/x",
            "/t/a%",
            "/t/a%zz",
            "/t/",
            "/t",
            "t/x",
            "/t/x/",
            "/t/\u{e9}",
            "/t/%ff",
            "/t/a%0ab",
        ] {
            assert!(canonicalize(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn splits_grant() {
        let (tok, p) = split_grant_path("/g/abc.def.ghi/title/file.mpd").unwrap();
        assert_eq!(tok, "abc.def.ghi");
        assert_eq!(p.as_str(), "/title/file.mpd");
        assert!(
            p.is_borrowed(),
            "a path without escapes is borrowed, not copied"
        );
        assert_eq!(
            p.to_owned_in(String::with_capacity(64)).as_str(),
            "/title/file.mpd"
        );
        assert!(split_grant_path("/x/abc/title/file").is_err());
        assert!(split_grant_path("/g//title/file").is_err());
        assert!(split_grant_path("/g/abc").is_err());
    }
}
