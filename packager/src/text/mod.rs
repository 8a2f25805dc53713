//! Text tracks: a strict WebVTT parser, the segmenter that cuts a cue list into segmented
//! WebVTT aligned with the video segments (HLS `EXT-X-MEDIA:TYPE=SUBTITLES` renditions),
//! [`ttml`] (IMSC1 / TTML input) and [`mp4`] (the samples of text in MP4 for DASH: WebVTT as
//! `wvtt`, IMSC1 as `stpp`).
//!
//! Pure: text in, values out. Times are integer milliseconds, WebVTT's own precision, so every
//! cue time written equals the time read. A cue that spans a segment boundary is repeated,
//! with its original times, in every segment it overlaps (RFC 8216 §3.5 / the players dedupe
//! identical cues), so no cue is cut short or shifted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod mp4;
pub mod ttml;

/// Longest text file accepted, bytes.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// The role of a text track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextRole {
    /// Subtitles: the dialogue translated or transcribed.
    #[default]
    Subtitle,
    /// Captions for deaf and hard-of-hearing viewers (dialogue plus sounds).
    Caption,
    /// Forced subtitles: shown without being selected (foreign dialogue, signs).
    Forced,
}

impl TextRole {
    /// `subtitle`, `caption` or `forced`.
    pub fn as_str(self) -> &'static str {
        match self {
            TextRole::Subtitle => "subtitle",
            TextRole::Caption => "caption",
            TextRole::Forced => "forced",
        }
    }

    /// Parses `subtitle`, `caption` or `forced`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "subtitle" => Some(TextRole::Subtitle),
            "caption" => Some(TextRole::Caption),
            "forced" => Some(TextRole::Forced),
            _ => None,
        }
    }
}

/// The format of a text input file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// WebVTT (`.vtt`).
    WebVtt,
    /// IMSC1 / TTML (`.ttml`, `.xml`, `.dfxp`).
    Ttml,
}

/// One `--text LANG:ROLE:PATH` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextInput {
    /// Language (BCP 47); `None` (`LANG` empty or `-`) takes the TTML `xml:lang` of `<tt>`.
    pub language: Option<String>,
    /// Role.
    pub role: TextRole,
    /// The WebVTT (`.vtt`) or IMSC1/TTML (`.ttml`, `.xml`, `.dfxp`) file.
    pub path: PathBuf,
    /// Its format.
    pub format: TextFormat,
}

impl TextInput {
    /// Parses `LANG:ROLE:PATH`; `LANG` may be empty or `-` for a TTML file, whose `xml:lang`
    /// on `<tt>` is then the language.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Options(format!(
                "--text {spec:?}: {why} (expected LANG:ROLE:PATH, role subtitle|caption|forced, LANG empty or - to take xml:lang from a TTML file)"
            ))
        };
        let mut parts = spec.splitn(3, ':');
        let (lang, role, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), Some(p)) if !p.is_empty() => (l, r, p),
            _ => return Err(bad("missing a part")),
        };
        let role = TextRole::parse(role).ok_or_else(|| bad(&format!("unknown role {role:?}")))?;
        let lower = path.to_ascii_lowercase();
        let format = if lower.ends_with(".vtt") {
            TextFormat::WebVtt
        } else if [".ttml", ".xml", ".dfxp"]
            .iter()
            .any(|e| lower.ends_with(e))
        {
            TextFormat::Ttml
        } else {
            return Err(bad(
                "the file must be WebVTT (.vtt) or IMSC1/TTML (.ttml, .xml, .dfxp)",
            ));
        };
        let language = match lang {
            "" | "-" if format == TextFormat::Ttml => None,
            "" | "-" => {
                return Err(bad(
                    "a WebVTT file carries no language: give LANG (only TTML has xml:lang)",
                ))
            }
            l if crate::package::is_language_tag(l) => Some(l.to_string()),
            l => {
                return Err(bad(&format!(
                    "language {l:?} is not a BCP 47 tag such as en or pt-BR"
                )))
            }
        };
        Ok(TextInput {
            language,
            role,
            path: PathBuf::from(path),
            format,
        })
    }
}

/// One cue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    /// Optional identifier line.
    pub id: Option<String>,
    /// Start, milliseconds.
    pub start_ms: u64,
    /// End, milliseconds (after the start).
    pub end_ms: u64,
    /// Cue settings after the timing (`line:0 align:start`), verbatim.
    pub settings: String,
    /// Payload lines joined by `\n`.
    pub payload: String,
}

impl Cue {
    fn write(&self, out: &mut String) {
        out.push('\n');
        if let Some(id) = &self.id {
            out.push_str(id);
            out.push('\n');
        }
        let _ = write!(
            out,
            "{} --> {}",
            format_time(self.start_ms),
            format_time(self.end_ms)
        );
        if !self.settings.is_empty() {
            out.push(' ');
            out.push_str(&self.settings);
        }
        out.push('\n');
        if !self.payload.is_empty() {
            out.push_str(&self.payload);
            out.push('\n');
        }
    }
}

/// A parsed WebVTT file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebVtt {
    /// `STYLE` and `REGION` blocks, verbatim, repeated at the top of every segment.
    pub header_blocks: Vec<String>,
    /// Cues in order of start time.
    pub cues: Vec<Cue>,
}

/// `hh:mm:ss.ttt`.
pub fn format_time(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Parses a WebVTT timestamp: `[hh:]mm:ss.ttt`, minutes and seconds below 60.
pub fn parse_time(s: &str) -> Option<u64> {
    let (hms, frac) = s.split_once('.')?;
    if frac.len() != 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let parts: Vec<&str> = hms.split(':').collect();
    let num = |p: &str, exact2: bool| -> Option<u64> {
        if p.is_empty() || (exact2 && p.len() != 2) || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (h, m, sec) = match parts.as_slice() {
        [m, sec] => (0, num(m, true)?, num(sec, true)?),
        [h, m, sec] if h.len() >= 2 => (num(h, false)?, num(m, true)?, num(sec, true)?),
        _ => return None,
    };
    if m > 59 || sec > 59 {
        return None;
    }
    let ms: u64 = frac.parse().ok()?;
    h.checked_mul(3_600_000)?
        .checked_add(m * 60_000 + sec * 1000 + ms)
}

/// The lines of a WebVTT file: CRLF, LF and a lone CR each end one (WebVTT, "line terminator"),
/// so a lone CR never stays inside a line where the normalised output would read it as a break.
fn vtt_lines(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => {
                out.push(&text[start..i]);
                i += if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push(&text[start..]);
    out
}

/// Whether [`parse_webvtt`] reads `id`, written on the line before a cue's timing, back as that
/// cue's identifier: one line without "-->", and not a line that opens a NOTE comment or a
/// STYLE or REGION block (which would swallow the cue).
pub fn is_cue_identifier(id: &str) -> bool {
    let note = id.starts_with("NOTE") && (id.len() == 4 || id[4..].starts_with([' ', '\t']));
    !id.is_empty()
        && !id.contains("-->")
        && !id.contains(['\n', '\r'])
        && !note
        && id != "STYLE"
        && id != "REGION"
}

/// Parses `text` (the contents of `file`) strictly: the `WEBVTT` signature, well-formed cue
/// timings with the end after the start, cues in start order and not overlapping, and every
/// cue ending by `duration_ms` (the end of the title). Errors name the file, line and cue.
pub fn parse_webvtt(file: &Path, text: &str, duration_ms: u64) -> Result<WebVtt> {
    let err = |line: usize, cue: String, reason: String| Error::Text {
        file: file.to_path_buf(),
        line,
        cue,
        reason,
    };
    if text.len() > MAX_TEXT_BYTES {
        return Err(err(
            0,
            "header".into(),
            format!("larger than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = vtt_lines(text);
    let first = lines.first().copied().unwrap_or_default();
    if !(first == "WEBVTT" || first.starts_with("WEBVTT ") || first.starts_with("WEBVTT\t")) {
        return Err(err(
            1,
            "header".into(),
            "the file must start with \"WEBVTT\"".into(),
        ));
    }
    // Skip the rest of the header block.
    let mut i = 1;
    while i < lines.len() && !lines[i].is_empty() {
        if lines[i].contains("-->") {
            return Err(err(
                i + 1,
                "header".into(),
                "a cue timing inside the header: a blank line must follow the WEBVTT line".into(),
            ));
        }
        i += 1;
    }
    let mut out = WebVtt {
        header_blocks: Vec::new(),
        cues: Vec::new(),
    };
    let mut prev: Option<(u64, u64, usize)> = None; // start, end, cue number
    while i < lines.len() {
        if lines[i].is_empty() {
            i += 1;
            continue;
        }
        let block_start = i;
        let mut end = i;
        while end < lines.len() && !lines[end].is_empty() {
            end += 1;
        }
        let block = &lines[block_start..end];
        i = end;
        if block[0].starts_with("NOTE")
            && (block[0].len() == 4 || block[0][4..].starts_with([' ', '\t']))
        {
            continue;
        }
        if (block[0] == "STYLE" || block[0] == "REGION") && !block[0].contains("-->") {
            if !out.cues.is_empty() {
                return Err(err(
                    block_start + 1,
                    format!("{} block", block[0]),
                    "STYLE and REGION blocks must come before the first cue".into(),
                ));
            }
            out.header_blocks.push(block.join("\n"));
            continue;
        }
        let n = out.cues.len() + 1;
        let (id, timing_at) = if block[0].contains("-->") {
            (None, 0)
        } else {
            (Some(block[0].to_string()), 1)
        };
        let name = match &id {
            Some(id) => format!("cue {n} ({id:?})"),
            None => format!("cue {n}"),
        };
        let line_no = block_start + timing_at + 1;
        let Some(timing) = block.get(timing_at) else {
            return Err(err(
                block_start + 1,
                name,
                "a block that is neither a cue (no \"-->\" timing line), NOTE, STYLE nor REGION"
                    .into(),
            ));
        };
        let Some((start_s, rest)) = timing.split_once("-->") else {
            return Err(err(
                line_no,
                name,
                format!("expected a timing line \"start --> end\", found {timing:?}"),
            ));
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        let (end_s, settings) = match rest.find([' ', '\t']) {
            Some(k) => (&rest[..k], rest[k..].trim_matches([' ', '\t'])),
            None => (rest, ""),
        };
        let start_s = start_s.trim_matches([' ', '\t']);
        let start = parse_time(start_s).ok_or_else(|| {
            err(
                line_no,
                name.clone(),
                format!("start time {start_s:?} is not hh:mm:ss.ttt or mm:ss.ttt"),
            )
        })?;
        let end_ms = parse_time(end_s).ok_or_else(|| {
            err(
                line_no,
                name.clone(),
                format!("end time {end_s:?} is not hh:mm:ss.ttt or mm:ss.ttt"),
            )
        })?;
        if end_ms <= start {
            return Err(err(
                line_no,
                name,
                format!(
                    "ends at {} but starts at {}: the end must be after the start",
                    format_time(end_ms),
                    format_time(start)
                ),
            ));
        }
        if let Some((ps, pe, pn)) = prev {
            if start < ps {
                return Err(err(
                    line_no,
                    name,
                    format!(
                        "starts at {}, before cue {pn} (at {}): cues must be in start order",
                        format_time(start),
                        format_time(ps)
                    ),
                ));
            }
            if start < pe {
                return Err(err(
                    line_no,
                    name,
                    format!(
                        "starts at {}, before cue {pn} ends (at {}): overlapping cues are refused",
                        format_time(start),
                        format_time(pe)
                    ),
                ));
            }
        }
        if end_ms > duration_ms {
            return Err(err(
                line_no,
                name,
                format!(
                    "ends at {}, past the end of the title at {}",
                    format_time(end_ms),
                    format_time(duration_ms)
                ),
            ));
        }
        let payload = &block[timing_at + 1..];
        if let Some(k) = payload.iter().position(|l| l.contains("-->")) {
            return Err(err(
                line_no + 1 + k,
                name,
                "\"-->\" inside a cue payload (a missing blank line between cues?)".into(),
            ));
        }
        prev = Some((start, end_ms, n));
        out.cues.push(Cue {
            id,
            start_ms: start,
            end_ms,
            settings: settings.to_string(),
            payload: payload.join("\n"),
        });
    }
    Ok(out)
}

/// The header of every WebVTT segment: signature, `X-TIMESTAMP-MAP` (the cue times are on the
/// presentation timeline, which starts at 0 in the CMAF video too: MPEG-TS time 0 is local time
/// 0) and the STYLE/REGION blocks.
fn segment_header(v: &WebVtt) -> String {
    let mut s = String::from("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n");
    for b in &v.header_blocks {
        s.push('\n');
        s.push_str(b);
        s.push('\n');
    }
    s
}

/// The whole track as one normalised WebVTT document (DASH sidecar).
pub fn whole_file(v: &WebVtt) -> String {
    let mut s = String::from("WEBVTT\n");
    for b in &v.header_blocks {
        s.push('\n');
        s.push_str(b);
        s.push('\n');
    }
    for c in &v.cues {
        c.write(&mut s);
    }
    s
}

/// Cuts the cues into segments `[bounds[k], bounds[k+1])` (milliseconds; the last segment runs
/// to the end): each segment holds every cue overlapping it, with its original times.
pub fn segments(v: &WebVtt, bounds: &[u64]) -> Vec<String> {
    let header = segment_header(v);
    (0..bounds.len())
        .map(|k| {
            let (from, to) = (bounds[k], bounds.get(k + 1).copied().unwrap_or(u64::MAX));
            let mut s = header.clone();
            for c in v.cues.iter().filter(|c| c.start_ms < to && c.end_ms > from) {
                c.write(&mut s);
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr_lf_and_lone_cr_all_end_lines() {
        let f = Path::new("x.vtt");
        for text in [
            "WEBVTT\n\n00:01.000 --> 00:02.000\nhello\nworld\n",
            "WEBVTT\r\n\r\n00:01.000 --> 00:02.000\r\nhello\r\nworld\r\n",
            "WEBVTT\r\r00:01.000 --> 00:02.000\rhello\rworld\r",
        ] {
            let v = parse_webvtt(f, text, 5_000).unwrap();
            assert_eq!(v.cues.len(), 1, "{text:?}");
            assert_eq!(v.cues[0].payload, "hello\nworld", "{text:?}");
            assert_eq!(parse_webvtt(f, &whole_file(&v), 5_000).unwrap(), v);
        }
    }

    #[test]
    fn text_input_specs() {
        let t = TextInput::parse("pt-BR:caption:a/b.vtt").unwrap();
        assert_eq!(t.language.as_deref(), Some("pt-BR"));
        assert_eq!((t.role, t.format), (TextRole::Caption, TextFormat::WebVtt));
        // LANG empty or '-': from the TTML file's xml:lang.
        for spec in [":subtitle:x.ttml", "-:forced:x.XML", "-:subtitle:x.dfxp"] {
            let t = TextInput::parse(spec).unwrap();
            assert_eq!((t.language, t.format), (None, TextFormat::Ttml), "{spec}");
        }
        // A path may hold colons.
        let t = TextInput::parse("en:subtitle:/tmp/a:b.ttml").unwrap();
        assert_eq!(t.path, PathBuf::from("/tmp/a:b.ttml"));
        for bad in [
            "-:subtitle:x.vtt",
            "en:subtitle:x.srt",
            "en:sdh:x.ttml",
            "en:subtitle:",
        ] {
            assert!(TextInput::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("00:01.500"), Some(1500));
        assert_eq!(parse_time("01:02:03.004"), Some(3_723_004));
        assert_eq!(parse_time("100:00:00.000"), Some(360_000_000));
        for bad in [
            "1.500",
            "00:60.000",
            "00:01.5",
            "0:01.500",
            "a0:01.500",
            "00:01,500",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(format_time(3_723_004), "01:02:03.004");
    }

    #[test]
    fn cues_spanning_a_boundary_are_repeated_with_their_times() {
        let v = parse_webvtt(
            Path::new("a.vtt"),
            "WEBVTT\n\n1\n00:00.500 --> 00:02.500 line:0\nHello\nworld\n\nNOTE x\n\n00:03.000 --> 00:04.000\nBye\n",
            10_000,
        )
        .unwrap();
        assert_eq!(v.cues.len(), 2);
        let segs = segments(&v, &[0, 2000, 4000]);
        assert_eq!(segs.len(), 3);
        assert!(segs[0].contains("1\n00:00:00.500 --> 00:00:02.500 line:0\nHello\nworld\n"));
        assert!(segs[1].contains("00:00:00.500 --> 00:00:02.500"));
        assert!(segs[1].contains("00:00:03.000 --> 00:00:04.000\nBye\n"));
        // A cue ending exactly at a boundary is not repeated in the next segment.
        assert!(!segs[2].contains("-->"), "{}", segs[2]);
        assert!(segs
            .iter()
            .all(|s| s.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n")));
    }
}
