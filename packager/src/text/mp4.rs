//! Text in MP4 for DASH (CMAF text profiles, ISO/IEC 14496-30), one fragment per video segment:
//!
//! - WebVTT as `wvtt`: a segment's time is cut at every cue start and end (and at the segment
//!   bounds) into intervals; each interval is one sample holding a `vttc` box per active cue
//!   (`iden` for the cue id, `sttg` for its settings, `payl` for its text) or, when no cue is
//!   active, one `vtte` box. A cue spanning a boundary is so split into several samples, each
//!   carrying the whole cue; readers join them back (the cue time is the samples' time).
//! - IMSC1 as `stpp`: one sample per segment, a whole TTML document holding every cue active in
//!   the segment with its times on the track timeline (which is the presentation timeline:
//!   the text track starts at 0 like the video, without an edit list). A cue spanning a boundary
//!   appears, with the same times, in both documents.
//!
//! Pure: cues in, bytes out.

use protocol::catalog::PackagingMode;

use super::ttml::Ttml;
use super::WebVtt;
use crate::cmaf::boxes::BoxBuf;
use crate::cmaf::text::{self as ctext, TextEntry};
use crate::error::{Error, Result};

/// The TTML namespace, the `stpp` sample entry's namespace.
pub const TTML_NAMESPACE: &str = "http://www.w3.org/ns/ttml";
/// The `mime` content type of IMSC1 Text Profile samples.
pub const IMSC1_TEXT_MIME: &str = "application/ttml+xml;codecs=im1t";
/// DASH / RFC 6381 codecs of IMSC1 Text in MP4.
pub const STPP_CODECS: &str = "stpp.ttml.im1t";
/// DASH / RFC 6381 codecs of WebVTT in MP4.
pub const WVTT_CODECS: &str = "wvtt";

/// The cues of a text track, in the form its MP4 samples take.
#[derive(Debug, Clone, Copy)]
pub enum TextSource<'a> {
    /// WebVTT cues (`wvtt`).
    WebVtt(&'a WebVtt),
    /// TTML cues (`stpp`).
    Ttml(&'a Ttml),
}

impl TextSource<'_> {
    /// `wvtt` or `stpp.ttml.im1t`.
    pub fn codecs(&self) -> &'static str {
        match self {
            TextSource::WebVtt(_) => WVTT_CODECS,
            TextSource::Ttml(_) => STPP_CODECS,
        }
    }
}

/// A text track written as MP4: the init segment, one fragment per segment and, on demand, the
/// `sidx` placed between them in one file.
#[derive(Debug, Clone)]
pub struct TextMp4 {
    /// `ftyp` + `moov`.
    pub init: Vec<u8>,
    /// The `sidx` (on-demand mode only).
    pub sidx: Option<Vec<u8>>,
    /// `moof` + `mdat` of each segment.
    pub fragments: Vec<Vec<u8>>,
    /// `(start, duration)` of each segment, milliseconds.
    pub segments: Vec<(u64, u64)>,
}

fn wvtt_config(v: &WebVtt) -> String {
    let mut s = String::from("WEBVTT");
    for b in &v.header_blocks {
        s.push_str("\n\n");
        s.push_str(b);
    }
    s
}

/// The samples of a `wvtt` segment `[from, to)`: `(duration, vttc boxes or a vtte box)`.
pub fn wvtt_samples(v: &WebVtt, from: u64, to: u64) -> Vec<(u32, Vec<u8>)> {
    // Cues are in start order and do not overlap: those of the segment are one run.
    let first = v.cues.partition_point(|c| c.end_ms <= from);
    let last = v.cues.partition_point(|c| c.start_ms < to).max(first);
    let cues = &v.cues[first..last];
    let mut cuts = vec![from, to];
    for c in cues {
        cuts.extend(
            [c.start_ms, c.end_ms]
                .into_iter()
                .filter(|&t| t > from && t < to),
        );
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let mut bb = BoxBuf::new();
            let mut any = false;
            for c in cues.iter().filter(|c| c.start_ms <= a && c.end_ms >= b) {
                any = true;
                bb.open(b"vttc");
                if let Some(id) = &c.id {
                    bb.open(b"iden");
                    bb.bytes(id.as_bytes());
                    bb.close();
                }
                if !c.settings.is_empty() {
                    bb.open(b"sttg");
                    bb.bytes(c.settings.as_bytes());
                    bb.close();
                }
                bb.open(b"payl");
                bb.bytes(c.payload.as_bytes());
                bb.close();
                bb.close();
            }
            if !any {
                bb.open(b"vtte");
                bb.close();
            }
            ((b - a) as u32, bb.finish())
        })
        .collect()
}

/// The one sample of an `stpp` segment `[from, to)`: a TTML document with the cues active in it.
pub fn stpp_sample(t: &Ttml, from: u64, to: u64) -> (u32, Vec<u8>) {
    let doc = t.document(t.cues.iter().filter(|c| c.start_ms < to && c.end_ms > from));
    ((to - from) as u32, doc.into_bytes())
}

/// Builds the MP4 of a text track: segments start at `bounds` (milliseconds, the first at 0) and
/// the last ends at `end_ms` (the end of the title).
pub fn build(
    src: TextSource<'_>,
    language: &str,
    bounds: &[u64],
    end_ms: u64,
    mode: PackagingMode,
) -> Result<TextMp4> {
    let entry = match src {
        TextSource::WebVtt(v) => TextEntry::Wvtt {
            config: wvtt_config(v),
        },
        TextSource::Ttml(_) => TextEntry::Stpp {
            namespace: TTML_NAMESPACE.into(),
            schema_location: String::new(),
            mime: IMSC1_TEXT_MIME.into(),
        },
    };
    let init = ctext::init_segment(&entry, language, end_ms);
    let mut segments = Vec::with_capacity(bounds.len());
    let mut fragments = Vec::with_capacity(bounds.len());
    for (k, &from) in bounds.iter().enumerate() {
        let to = bounds.get(k + 1).copied().unwrap_or(end_ms);
        if to <= from {
            return Err(Error::Ladder(format!(
                "text segment {} is empty ({from} ms to {to} ms)",
                k + 1
            )));
        }
        let samples = match src {
            TextSource::WebVtt(v) => wvtt_samples(v, from, to),
            TextSource::Ttml(t) => vec![stpp_sample(t, from, to)],
        };
        fragments.push(ctext::fragment((k + 1) as u32, from, &samples)?);
        segments.push((from, to - from));
    }
    let sidx = match mode {
        PackagingMode::OnDemand => {
            let refs: Vec<(u64, u64)> = fragments
                .iter()
                .zip(&segments)
                .map(|(f, (_, d))| (f.len() as u64, *d))
                .collect();
            Some(ctext::sidx(bounds.first().copied().unwrap_or(0), &refs)?)
        }
        PackagingMode::Segmented => None,
    };
    Ok(TextMp4 {
        init,
        sidx,
        fragments,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn wvtt_intervals_split_at_cue_edges_and_fill_gaps_with_vtte() {
        let v = super::super::parse_webvtt(
            Path::new("a.vtt"),
            "WEBVTT\n\nx\n00:00.500 --> 00:02.500 line:0\nHi\n",
            10_000,
        )
        .unwrap();
        let s = wvtt_samples(&v, 0, 2000);
        assert_eq!(s.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [500, 1500]);
        assert_eq!(&s[0].1[4..8], b"vtte");
        assert_eq!(&s[1].1[4..8], b"vttc");
        let body = &s[1].1;
        assert!(body.windows(5).any(|w| w == b"idenx"));
        assert!(body.windows(10).any(|w| w == b"sttgline:0"));
        assert!(body.ends_with(b"paylHi"));
        let s = wvtt_samples(&v, 2000, 4000);
        assert_eq!(s.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [500, 1500]);
        assert_eq!(&s[0].1[4..8], b"vttc");
        assert_eq!(&s[1].1[4..8], b"vtte");
    }
}
