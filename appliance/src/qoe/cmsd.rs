//! CMSD response headers (CTA-5006, Common Media Server Data).
//!
//! - `CMSD-Static`: keys that do not change while the object is cached: `ot` (object type, from
//!   the file name and rendition directory) and `st` (stream type: titles are VOD, `v`).
//! - `CMSD-Dynamic`: one Structured Field List item per server: this appliance's name as an
//!   sf-string, with `etp` (estimated throughput to this client, kbps) when known and `mb` (max
//!   suggested bitrate, kbps) when the appliance is overloaded.

use super::cmcd::ObjectType;

/// The object type of a resource path (`/title/v360/seg-1.m4s`), for `CMSD-Static`.
pub fn object_type(path: &str) -> ObjectType {
    let file = path.rsplit('/').next().unwrap_or("");
    let dir = path.rsplit('/').nth(1).unwrap_or("");
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "mpd" | "m3u8" => ObjectType::M,
        "vtt" => ObjectType::C,
        "m4a" | "cmfa" => ObjectType::A,
        "json" => ObjectType::O,
        _ if file.starts_with("init") || ext == "m4i" => ObjectType::I,
        "mp4" | "m4s" | "m4v" | "cmfv" if dir.starts_with('a') => ObjectType::A,
        "mp4" | "m4s" | "m4v" | "cmfv" => ObjectType::V,
        _ => ObjectType::O,
    }
}

/// The CMSD header lines (each ending in CRLF) for an object at `path` served by `name`.
pub fn header_lines(path: &str, name: &str, etp_kbps: Option<u64>, mb_kbps: Option<u64>) -> String {
    let mut out = Vec::with_capacity(96 + name.len());
    write_lines(&mut out, path, &sf_name(name), etp_kbps, mb_kbps);
    String::from_utf8(out).unwrap_or_default()
}

/// `name` as an sf-string (quoted; printable ASCII with `"` and `\` escaped; anything else is
/// dropped): rendered once per appliance, not per response.
pub fn sf_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Appends the CMSD header lines to `out` (a response head being built: its capacity is reused,
/// so nothing is allocated per response). `sf_name` comes from [`sf_name`].
pub fn write_lines(
    out: &mut Vec<u8>,
    path: &str,
    sf_name: &str,
    etp_kbps: Option<u64>,
    mb_kbps: Option<u64>,
) {
    use std::io::Write as _;
    out.extend_from_slice(b"CMSD-Static: ot=");
    out.extend_from_slice(object_type(path).token().as_bytes());
    out.extend_from_slice(b",st=v\r\nCMSD-Dynamic: ");
    out.extend_from_slice(sf_name.as_bytes());
    // Writing into a `Vec` cannot fail.
    if let Some(etp) = etp_kbps {
        let _ = write!(out, ";etp={etp}");
    }
    if let Some(mb) = mb_kbps {
        let _ = write!(out, ";mb={mb}");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_types_by_path() {
        for (p, t) in [
            ("/t/master.m3u8", "m"),
            ("/t/manifest.mpd", "m"),
            ("/t/v360/init.mp4", "i"),
            ("/t/v360/seg-1.m4s", "v"),
            ("/t/audio/seg-1.m4s", "a"),
            ("/t/sub.vtt", "c"),
            ("/t/catalog.json", "o"),
            ("/t/odd.bin", "o"),
        ] {
            assert_eq!(object_type(p).token(), t, "{p}");
        }
    }

    #[test]
    fn headers_render() {
        assert_eq!(
            header_lines("/t/v1/seg-1.m4s", "oca \"1\"", Some(5000), Some(3000)),
            "CMSD-Static: ot=v,st=v\r\nCMSD-Dynamic: \"oca \\\"1\\\"\";etp=5000;mb=3000\r\n"
        );
        assert_eq!(
            header_lines("/t/a.m3u8", "oca-1", None, None),
            "CMSD-Static: ot=m,st=v\r\nCMSD-Dynamic: \"oca-1\"\r\n"
        );
    }
}
