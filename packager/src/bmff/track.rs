//! The sample-table model of one input track: what the segmenter and the CMAF writer need,
//! independent of whether the input was progressive (`stbl`) or fragmented (`moof`).

use std::path::PathBuf;

pub use protocol::catalog::TrackKind;

use crate::bmff::reader::FourCc;

/// One sample (access unit) of an input track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Absolute byte offset in the input file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u32,
    /// Decode time, media timescale.
    pub dts: u64,
    /// Decode duration, media timescale.
    pub duration: u32,
    /// Composition offset (CTS - DTS), media timescale; may be negative.
    pub cts_offset: i32,
    /// Sync sample (random access point).
    pub sync: bool,
}

impl Sample {
    /// Composition time (DTS + offset), before any edit list.
    pub fn cts(&self) -> i64 {
        self.dts as i64 + i64::from(self.cts_offset)
    }
}

/// The sample description of a track, kept byte for byte so the output describes exactly the
/// samples it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleEntry {
    /// The sample entry type (`avc1`, `hvc1`, `vp09`, `av01`, `mp4a`, `Opus`, ...).
    pub fourcc: FourCc,
    /// The whole sample entry box (header included), copied into the output `stsd`.
    pub raw: Vec<u8>,
    /// RFC 6381 codec string.
    pub codec: String,
    /// Coded width (video).
    pub width: u32,
    /// Coded height (video).
    pub height: u32,
    /// Pixel aspect ratio from `pasp` (h_spacing, v_spacing), video.
    pub pixel_aspect: Option<(u32, u32)>,
    /// Sample rate in Hz (audio).
    pub sample_rate: u32,
    /// Channel count (audio).
    pub channels: u16,
}

/// One input track.
#[derive(Debug, Clone)]
pub struct Track {
    /// The input file.
    pub file: PathBuf,
    /// `track_ID` in the input.
    pub track_id: u32,
    /// Video or audio.
    pub kind: TrackKind,
    /// Media timescale (`mdhd`).
    pub timescale: u32,
    /// ISO 639-2/T language from `mdhd` (`und` when unset).
    pub language: String,
    /// Role (audio; `main` unless given with `--audio`).
    pub role: crate::package::AudioRole,
    /// Sample description.
    pub entry: SampleEntry,
    /// Media time of the presentation start (first non-empty edit's `media_time`), minus any
    /// leading empty edit converted to media time. Presentation time = CTS - `edit_shift`.
    pub edit_shift: i64,
    /// Samples in decode order.
    pub samples: Vec<Sample>,
}

impl Track {
    /// Presentation time of a sample, media timescale.
    pub fn pts(&self, s: &Sample) -> i64 {
        s.cts() - self.edit_shift
    }

    /// End of the presentation: the latest sample's presentation end.
    pub fn end_pts(&self) -> i64 {
        self.samples
            .iter()
            .map(|s| self.pts(s) + i64::from(s.duration))
            .max()
            .unwrap_or(0)
    }

    /// Decode end: DTS of the last sample plus its duration.
    pub fn end_dts(&self) -> u64 {
        self.samples
            .last()
            .map_or(0, |s| s.dts + u64::from(s.duration))
    }

    /// The most common sample duration (the frame duration for video), 0 if no samples.
    pub fn typical_duration(&self) -> u32 {
        let mut durs: Vec<u32> = self.samples.iter().map(|s| s.duration).collect();
        durs.sort_unstable();
        let (mut best, mut best_n, mut i) = (0, 0, 0);
        while i < durs.len() {
            let j = durs[i..].iter().take_while(|&&d| d == durs[i]).count();
            if j > best_n {
                best = durs[i];
                best_n = j;
            }
            i += j;
        }
        best
    }

    /// Total sample bytes.
    pub fn media_bytes(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.size)).sum()
    }
}
