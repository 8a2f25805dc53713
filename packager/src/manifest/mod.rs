//! Manifests: the DASH MPD ([`dash`]), the HLS master and media playlists ([`hls`]) and the
//! bandwidth rules both need ([`bandwidth`]). Pure: a [`RenditionView`] per rendition in, text
//! out. Every URL written is relative (no scheme, no leading `/`), so the control plane can
//! prefix MPD `BaseURL`s and make HLS variant URIs absolute per appliance.

pub mod bandwidth;
pub mod dash;
pub mod hls;

use protocol::catalog::{PackagingMode, TrackKind};

/// A byte range of a file: `(offset, length)`.
pub type Range = (u64, u64);

/// One media segment as the manifests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegRef {
    /// File name inside the rendition directory.
    pub file: String,
    /// Byte range inside that file (on-demand mode), `None` for a whole file.
    pub range: Option<Range>,
    /// Earliest presentation time, media timescale.
    pub start: i64,
    /// Duration, media timescale.
    pub duration: u64,
    /// Bytes (`moof` + `mdat`).
    pub size: u64,
    /// Video: bytes from the segment's start through its first (sync) sample, `moof`, `mdat`
    /// header and the sample: the byte range of its I-frame in the I-frame playlist.
    pub iframe_len: Option<u64>,
    /// A trick play rendition's segment, one CMAF chunk (`moof` + `mdat`) per frame: every
    /// frame's chunk, so its I-frame playlist names each frame. Empty otherwise (the I-frame
    /// playlist names [`SegRef::iframe_len`] bytes, the segment's first frame).
    pub iframes: Vec<IFrameRef>,
}

/// One I-frame of a segment that holds several: a whole CMAF chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IFrameRef {
    /// Byte offset in the segment's file (the whole track file on demand, the segment file
    /// when segmented).
    pub offset: u64,
    /// Bytes: `moof`, `mdat` header and the frame.
    pub len: u64,
    /// Duration until the next I-frame, media timescale.
    pub duration: u64,
}

/// Everything the manifests need about one rendition.
#[derive(Debug, Clone)]
pub struct RenditionView {
    /// Rendition id, also its directory.
    pub id: String,
    /// Video or audio.
    pub kind: TrackKind,
    /// RFC 6381 codec string.
    pub codec: String,
    /// Sample entry type, to group renditions that can switch (`avc1`, `vp09`, `mp4a`, ...).
    pub family: String,
    /// Coded width (video).
    pub width: u32,
    /// Coded height (video).
    pub height: u32,
    /// Sample aspect ratio (video).
    pub sar: (u32, u32),
    /// Frame rate as a fraction (video).
    pub frame_rate: Option<(u64, u64)>,
    /// Sample rate (audio).
    pub sample_rate: u32,
    /// Channels (audio).
    pub channels: u16,
    /// ISO 639-2 language (`und` when unknown).
    pub language: String,
    /// Role (audio).
    pub role: crate::package::AudioRole,
    /// A keyframe-only trick play rendition (video): a DASH trick mode AdaptationSet and an
    /// HLS I-frame playlist only, never a normal variant.
    pub trick: bool,
    /// Media timescale.
    pub timescale: u32,
    /// Packaging mode.
    pub mode: PackagingMode,
    /// Init segment file name and range (`ftyp`+`moov`).
    pub init_file: String,
    /// Range of the init segment in on-demand mode.
    pub init_range: Option<Range>,
    /// Range of the `sidx` in on-demand mode.
    pub index_range: Option<Range>,
    /// Media segments in order.
    pub segments: Vec<SegRef>,
    /// Duration, media timescale (sum of segment durations).
    pub duration: u64,
    /// Media time at which the presentation starts (the audio edit list's priming), media
    /// timescale; 0 for video, whose offsets are baked into the samples.
    pub edit_offset: i64,
    /// Common Encryption of the rendition: scheme (`cenc`/`cbcs`) and key id.
    pub protection: Option<Protection>,
}

/// A text rendition as the manifests see it: segmented WebVTT for HLS, text in MP4 for DASH.
#[derive(Debug, Clone)]
pub struct TextView {
    /// Rendition id, also its directory.
    pub id: String,
    /// BCP 47 language.
    pub language: String,
    /// Role.
    pub role: crate::text::TextRole,
    /// Segment files (relative to the rendition directory) with their durations in seconds:
    /// the video segments' durations, so the text playlist lines up with video.
    pub segments: Vec<(String, f64)>,
    /// Segment sizes, bytes.
    pub sizes: Vec<u64>,
    /// The whole track as one WebVTT file (relative to the rendition directory): a sidecar
    /// for download and players without MP4 text; the MPD names the MP4 track instead.
    pub whole_file: String,
    /// The MP4 track (DASH).
    pub mp4: TextMp4View,
}

/// The MP4 form of a text rendition (`wvtt` or `stpp`), DASH's text track.
#[derive(Debug, Clone)]
pub struct TextMp4View {
    /// `wvtt` or `stpp.ttml.im1t`.
    pub codecs: String,
    /// On-demand (one file with `sidx`) or segmented (`init.mp4` + `$Number%05d$.m4s`).
    pub mode: PackagingMode,
    /// The init file (segmented) or the whole file (on demand), relative to the rendition
    /// directory.
    pub file: String,
    /// On demand: byte range `(offset, length)` of the init segment.
    pub init_range: Option<(u64, u64)>,
    /// On demand: byte range `(offset, length)` of the `sidx`.
    pub index_range: Option<(u64, u64)>,
    /// `(start, duration)` of each segment, milliseconds (timescale 1000).
    pub segments: Vec<(u64, u64)>,
    /// Size of each segment's fragment, bytes.
    pub sizes: Vec<u64>,
}

impl TextMp4View {
    /// Peak bit rate over segments, bits per second (at least 1).
    pub fn bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .zip(&self.sizes)
            .map(|((_, d), n)| (*n * 8 * 1000).div_ceil((*d).max(1)))
            .max()
            .unwrap_or(1)
            .max(1)
    }
}

impl TextView {
    /// Peak bit rate over segments, bits per second (at least 1).
    pub fn bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .zip(&self.sizes)
            .map(|((_, d), n)| (*n as f64 * 8.0 / d.max(0.001)).ceil() as u64)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Average bit rate, bits per second (at least 1).
    pub fn average_bandwidth(&self) -> u64 {
        let secs: f64 = self.segments.iter().map(|(_, d)| d).sum();
        let bytes: u64 = self.sizes.iter().sum();
        ((bytes as f64 * 8.0 / secs.max(0.001)).ceil() as u64).max(1)
    }
}

/// How a rendition is encrypted, for the manifests (never a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// `cenc` or `cbcs`.
    pub scheme: &'static str,
    /// The key id.
    pub kid: [u8; 16],
    /// Every key id of the title: the DASH `cenc:pssh` lists them all, so a player's first
    /// licence request asks for every key and the licence server answers with those the
    /// session may have (Shaka Player otherwise asks only for the keys of the renditions it
    /// loads first, and drops the others as key-less).
    pub title_kids: Vec<[u8; 16]>,
}

impl Protection {
    /// The key id as a UUID string (`8-4-4-4-12` lowercase hex), as `cenc:default_KID` wants.
    pub fn kid_uuid(&self) -> String {
        protocol::hex::uuid(&self.kid)
    }
}

impl RenditionView {
    /// Segment (size in bytes, duration in seconds) pairs.
    pub fn seg_stats(&self) -> Vec<(u64, f64)> {
        self.segments
            .iter()
            .map(|s| (s.size, s.duration as f64 / f64::from(self.timescale)))
            .collect()
    }

    /// Presentation duration in seconds (after the edit list).
    pub fn seconds(&self) -> f64 {
        (self.duration as i64 - self.edit_offset).max(0) as f64 / f64::from(self.timescale)
    }
}

/// Greatest common divisor.
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Frame rate with up to three decimals, trailing zeros kept only as `FRAME-RATE` needs them:
/// `frame_rate_decimal((25, 1), false)` is `25`, `((30000, 1001), false)` is `29.970`.
pub fn frame_rate_decimal(fr: (u64, u64), always_three: bool) -> String {
    let milli = (fr.0 * 1000 + fr.1 / 2) / fr.1.max(1);
    if !always_three && milli % 1000 == 0 {
        format!("{}", milli / 1000)
    } else {
        format!("{}.{:03}", milli / 1000, milli % 1000)
    }
}
