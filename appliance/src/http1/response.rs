//! Response heads: the status line and the headers every answer carries (`Date`,
//! `Outpost-Appliance`, CORS), `Content-Type` by extension, and the multipart/byteranges framing.

use std::fmt::Write as _;

use super::range::ByteRange;
use super::Status;

/// Headers a browser script may read on a cross-origin response.
pub const EXPOSE_HEADERS: &str =
    "Content-Range, Content-Length, Accept-Ranges, ETag, Outpost-Appliance, CMSD-Static, CMSD-Dynamic";

/// Headers a preflight may ask for.
pub const ALLOW_HEADERS: &str = "Range, If-Range, If-None-Match, If-Modified-Since, If-Match";

/// How long a browser may cache a preflight answer, seconds.
pub const PREFLIGHT_MAX_AGE: u32 = 86_400;

/// `Cache-Control` for media segments and init segments: immutable once visible.
pub const CACHE_CONTROL_MEDIA: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` for manifests, playlists and the catalog entry, which may be re-packaged.
pub const CACHE_CONTROL_MANIFEST: &str = "public, max-age=60";

/// `Content-Type` by file extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    // Lower-cased into a stack buffer: no allocation per request.
    let mut buf = [0u8; 8];
    let Some(lower) = buf.get_mut(..ext.len()) else {
        return "application/octet-stream";
    };
    lower.copy_from_slice(ext.as_bytes());
    lower.make_ascii_lowercase();
    match &*lower {
        b"mp4" | b"m4s" | b"m4v" | b"cmfv" => "video/mp4",
        b"m4a" | b"cmfa" => "audio/mp4",
        b"mpd" => "application/dash+xml",
        b"m3u8" => "application/vnd.apple.mpegurl",
        b"vtt" => "text/vtt",
        b"json" => "application/json",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"m4i" | b"init" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// `Cache-Control` by file extension.
pub fn cache_control(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "mpd" | "m3u8" | "json" => CACHE_CONTROL_MANIFEST,
        _ => CACHE_CONTROL_MEDIA,
    }
}

/// Builds one response head.
#[derive(Debug)]
pub struct Head {
    buf: Vec<u8>,
}

impl Head {
    /// Starts a head with the status line and the headers every answer carries.
    pub fn new(status: Status, date: &str, appliance_id: &str) -> Self {
        let mut buf = crate::bufpool::head();
        let _ = write!(
            Bytes(&mut buf),
            "HTTP/1.1 {} {}\r\nDate: {date}\r\nOutpost-Appliance: {appliance_id}\r\n\
             Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: {EXPOSE_HEADERS}\r\n",
            status.code(),
            status.reason()
        );
        Head { buf }
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        let _ = write!(Bytes(&mut self.buf), "{name}: {value}\r\n");
        self
    }

    /// Adds header lines already rendered (each ending in CRLF).
    pub fn lines(mut self, rendered: &str) -> Self {
        self.buf.extend_from_slice(rendered.as_bytes());
        self
    }

    /// Ends the head (blank line) and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The framing of a multipart/byteranges body: for each range, the part header that precedes
/// its bytes, then the closing delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The boundary string.
    pub boundary: String,
    /// One part header per range, in order.
    pub part_heads: Vec<Vec<u8>>,
    /// The closing delimiter.
    pub tail: Vec<u8>,
    /// Total body length (part heads + range bytes + tail).
    pub body_len: u64,
}

impl Multipart {
    /// Lays out the parts for `ranges` of a `len`-byte representation of `content_type`.
    pub fn new(boundary: String, ranges: &[ByteRange], len: u64, content_type: &str) -> Self {
        let mut body_len = 0u64;
        let part_heads: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| {
                let h = format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                    r.first, r.last
                )
                .into_bytes();
                body_len += h.len() as u64 + r.len();
                h
            })
            .collect();
        let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
        body_len += tail.len() as u64;
        Multipart {
            boundary,
            part_heads,
            tail,
            body_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (p, t) in [
            ("a/b.mp4", "video/mp4"),
            ("x.m4s", "video/mp4"),
            ("x.M4A", "audio/mp4"),
            ("x.m4v", "video/mp4"),
            ("x.cmfv", "video/mp4"),
            ("x.cmfa", "audio/mp4"),
            ("manifest.mpd", "application/dash+xml"),
            ("master.m3u8", "application/vnd.apple.mpegurl"),
            ("sub.vtt", "text/vtt"),
            ("catalog.json", "application/json"),
            ("thumbnails/00001.jpg", "image/jpeg"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(p), t, "{p}");
        }
    }

    #[test]
    fn head_has_common_headers() {
        let h = Head::new(
            Status::PartialContent,
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "oca-1",
        )
        .header("Content-Length", 10)
        .finish();
        let s = String::from_utf8(h).unwrap();
        assert!(s.starts_with("HTTP/1.1 206 Partial Content\r\n"));
        assert!(s.contains("\r\nOutpost-Appliance: oca-1\r\n"));
        assert!(s.contains(
            "Access-Control-Expose-Headers: Content-Range, Content-Length, Accept-Ranges, ETag"
        ));
        assert!(s.ends_with("Content-Length: 10\r\n\r\n"));
    }

    #[test]
    fn multipart_length_adds_up() {
        let ranges = [
            ByteRange { first: 0, last: 9 },
            ByteRange {
                first: 20,
                last: 29,
            },
        ];
        let m = Multipart::new("B".into(), &ranges, 100, "video/mp4");
        let heads: u64 = m.part_heads.iter().map(|h| h.len() as u64).sum();
        assert_eq!(m.body_len, heads + 20 + m.tail.len() as u64);
        assert_eq!(
            String::from_utf8_lossy(&m.part_heads[1]),
            "\r\n--B\r\nContent-Type: video/mp4\r\nContent-Range: bytes 20-29/100\r\n\r\n"
        );
    }
}
