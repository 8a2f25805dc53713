//! CMAF writing: the init segment (`ftyp` + `moov` with `mvex`/`trex`), one fragment per segment
//! (`moof`/`mfhd`/`traf`/`tfhd`/`tfdt` v1/`trun` v1 + the `mdat` header; a trick play rendition
//! has one per frame, CMAF chunks), and the `sidx` of an on-demand track file. Pure: these functions build header bytes; sample bytes are copied by the
//! caller ([`crate::package`](mod@crate::package)) straight from the input, so a per-sample transform (encryption)
//! slots in there and extra boxes (`senc`, `saiz`, `saio`) slot into [`fragment`].
//!
//! The output timeline: a video track's edit-list shift (the B-frame delay) is baked into signed
//! `trun` v1 composition offsets, so video has no `elst` and presents from 0; audio keeps its
//! decode times and its priming (pre-skip) `elst`. Each fragment's `tfdt` (v1) is its exact
//! decode time, so fragments are continuous by construction, and `sidx` durations sum exactly to
//! the track's. Times are integers in the track's media timescale; seconds appear only in
//! manifest text.

pub mod boxes;
pub mod text;

use crate::bmff::{Track, TrackKind};
use crate::encrypt::{self, Subsample, TrackCrypto};
use crate::error::Error;
use crate::segment::{output_cts_offset, Segment};
use boxes::BoxBuf;

/// The track id written in every output file (one track per file).
pub const OUT_TRACK_ID: u32 = 1;
/// Movie timescale of the output `mvhd`/`elst`.
const MOVIE_TIMESCALE: u32 = 1000;

/// Sample flags: sync (`sample_depends_on` = 2, not a non-sync sample).
pub const FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags: non-sync (`sample_depends_on` = 1, `sample_is_non_sync_sample`).
pub const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// One planned fragment: its header bytes (`moof` + `mdat` header) and the samples to append.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// `moof` followed by the `mdat` box header.
    pub header: Vec<u8>,
    /// Bytes of sample data following the header.
    pub data_len: u64,
    /// The segment this fragment carries.
    pub segment: Segment,
}

impl Fragment {
    /// Total size: header plus sample data.
    pub fn size(&self) -> u64 {
        self.header.len() as u64 + self.data_len
    }
}

/// The init segment: `ftyp` + `moov` for one track. `duration` is the track's presentation
/// duration (media timescale), used for `elst`.
pub fn init_segment(track: &Track, duration: u64) -> Vec<u8> {
    init_segment_with(track, duration, None)
}

/// [`init_segment`], encrypted when `crypto` is given: the sample entry becomes `encv`/`enca`
/// with a `sinf`, and `moov` carries a common-system `pssh` listing the track's key id.
pub fn init_segment_with(track: &Track, duration: u64, crypto: Option<&TrackCrypto>) -> Vec<u8> {
    let mut b = BoxBuf::new();
    b.open(b"ftyp");
    b.fourcc(b"iso6");
    b.u32(0);
    for brand in [b"iso6", b"cmfc", b"dash", b"mp41"] {
        b.fourcc(brand);
    }
    b.close();
    let movie_dur = duration * u64::from(MOVIE_TIMESCALE) / u64::from(track.timescale);
    b.open(b"moov");
    mvhd(&mut b, MOVIE_TIMESCALE, 0x0100);
    b.open(b"trak");
    let (w, h) = display_size(track);
    let volume = if track.kind == TrackKind::Audio {
        0x0100
    } else {
        0
    };
    tkhd(&mut b, volume, w, h);
    if track.kind == TrackKind::Audio && track.edit_shift != 0 {
        // Keep the priming / pre-skip edit: the presentation starts edit_shift into the media.
        b.open(b"edts");
        b.open_full(b"elst", 1, 0);
        let entries: Vec<(u64, i64)> = if track.edit_shift > 0 {
            let d = duration.saturating_sub(track.edit_shift as u64);
            vec![(
                d * u64::from(MOVIE_TIMESCALE) / u64::from(track.timescale),
                track.edit_shift,
            )]
        } else {
            let empty = track.edit_shift.unsigned_abs() * u64::from(MOVIE_TIMESCALE)
                / u64::from(track.timescale);
            vec![(empty, -1), (movie_dur, 0)]
        };
        b.u32(entries.len() as u32);
        for (d, m) in entries {
            b.u64(d);
            b.u64(m as u64);
            b.u32(0x0001_0000);
        }
        b.close();
        b.close();
    }
    b.open(b"mdia");
    mdhd(&mut b, track.timescale, &track.language);
    b.open_full(b"hdlr", 0, 0);
    b.u32(0);
    match track.kind {
        TrackKind::Video => b.fourcc(b"vide"),
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => b.fourcc(b"soun"),
    }
    b.zeros(12);
    b.bytes(match track.kind {
        TrackKind::Video => b"Outpost video\0",
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => b"Outpost audio\0",
    });
    b.close();
    b.open(b"minf");
    match track.kind {
        TrackKind::Video => {
            b.open_full(b"vmhd", 0, 1);
            b.zeros(8);
            b.close();
        }
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => {
            b.open_full(b"smhd", 0, 0);
            b.zeros(4);
            b.close();
        }
    }
    dinf(&mut b);
    b.open(b"stbl");
    b.open_full(b"stsd", 0, 0);
    b.u32(1);
    match crypto {
        Some(c) => b.bytes(&encrypt::protect_sample_entry(
            &track.entry.raw,
            track.kind,
            c,
        )),
        None => b.bytes(&track.entry.raw),
    }
    b.close();
    finish_fragmented_trak(&mut b, movie_dur, 0);
    if let Some(c) = crypto {
        if c.title_kids.is_empty() {
            b.bytes(&encrypt::pssh(&[c.kid]));
        } else {
            b.bytes(&encrypt::pssh(&c.title_kids));
        }
    }
    b.close(); // moov
    b.finish()
}

// The header boxes every init segment writes the same way (audio, video and text tracks).

/// The identity transformation matrix of `mvhd` and `tkhd`.
fn matrix(b: &mut BoxBuf) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.u32(v);
    }
}

/// `mvhd` (version 0): no times or duration (fragmented), rate 1.0, `volume` (8.8 fixed
/// point), the output track's id + 1 as the next track id.
fn mvhd(b: &mut BoxBuf, timescale: u32, volume: u16) {
    b.open_full(b"mvhd", 0, 0);
    b.u32(0);
    b.u32(0);
    b.u32(timescale);
    b.u32(0);
    b.u32(0x0001_0000);
    b.u16(volume);
    b.zeros(10);
    matrix(b);
    b.zeros(24);
    b.u32(OUT_TRACK_ID + 1);
    b.close();
}

/// `tkhd` (version 0, enabled and in the movie) of the output track: `volume` (8.8 fixed
/// point) and the display size in pixels (written 16.16).
fn tkhd(b: &mut BoxBuf, volume: u16, width: u32, height: u32) {
    b.open_full(b"tkhd", 0, 3);
    b.u32(0);
    b.u32(0);
    b.u32(OUT_TRACK_ID);
    b.u32(0);
    b.u32(0);
    b.zeros(8);
    b.u16(0);
    b.u16(0);
    b.u16(volume);
    b.u16(0);
    matrix(b);
    b.u32(width << 16);
    b.u32(height << 16);
    b.close();
}

/// `mdhd` (version 0): `timescale`, no duration, `language` packed ([`pack_language`]).
fn mdhd(b: &mut BoxBuf, timescale: u32, language: &str) {
    b.open_full(b"mdhd", 0, 0);
    b.u32(0);
    b.u32(0);
    b.u32(timescale);
    b.u32(0);
    b.u16(pack_language(language));
    b.u16(0);
    b.close();
}

/// `dinf` with one self-contained `url ` data reference.
fn dinf(b: &mut BoxBuf) {
    b.open(b"dinf");
    b.open_full(b"dref", 0, 0);
    b.u32(1);
    b.open_full(b"url ", 0, 1);
    b.close();
    b.close();
    b.close();
}

/// Display size: coded size stretched horizontally by the pixel aspect ratio.
pub fn display_size(track: &Track) -> (u32, u32) {
    let (w, h) = (track.entry.width, track.entry.height);
    match track.entry.pixel_aspect {
        Some((hs, vs)) if hs != vs => (
            u32::try_from(u64::from(w) * u64::from(hs) / u64::from(vs)).unwrap_or(w),
            h,
        ),
        _ => (w, h),
    }
}

/// ISO 639-2/T packed for `mdhd` (`und` unless `lang` is three lower-case letters).
fn pack_language(lang: &str) -> u16 {
    let b = lang.as_bytes();
    if b.len() != 3 || !b.iter().all(u8::is_ascii_lowercase) {
        return 0x55c4; // "und"
    }
    b.iter()
        .fold(0u16, |acc, &c| (acc << 5) | u16::from(c - 0x60))
}

/// Builds the fragment for `segment`, with `sequence` as its `mfhd` sequence number (from 1).
pub fn fragment(track: &Track, segment: &Segment, sequence: u32) -> Result<Fragment, Error> {
    fragment_with(track, segment, sequence, None)
}

/// [`fragment`], encrypted when `crypto` is given: `saiz`, `saio` and `senc` follow the `trun`
/// (`maps` holds the subsample map of every sample of the track; empty maps for audio).
pub fn fragment_with(
    track: &Track,
    segment: &Segment,
    sequence: u32,
    crypto: Option<(&TrackCrypto, &[Vec<Subsample>])>,
) -> Result<Fragment, Error> {
    let video = track.kind == TrackKind::Video;
    let range = segment.samples.clone();
    let data_len: u64 = track.samples[range.clone()]
        .iter()
        .map(|s| u64::from(s.size))
        .sum();
    let mut b = BoxBuf::new();
    b.open(b"moof");
    b.open_full(b"mfhd", 0, 0);
    b.u32(sequence);
    b.close();
    b.open(b"traf");
    // default-base-is-moof; audio carries one default flags value for every sample.
    let tfhd_flags = 0x02_0000 | if video { 0 } else { 0x20 };
    b.open_full(b"tfhd", 0, tfhd_flags);
    b.u32(OUT_TRACK_ID);
    if !video {
        b.u32(FLAGS_SYNC);
    }
    b.close();
    b.open_full(b"tfdt", 1, 0);
    b.u64(segment.base_dts);
    b.close();
    // data-offset, duration, size (+ flags and composition offsets for video).
    let trun_flags = 0x1 | 0x100 | 0x200 | if video { 0x400 | 0x800 } else { 0 };
    b.open_full(b"trun", 1, trun_flags);
    b.u32(
        u32::try_from(range.len())
            .map_err(|_| Error::Ladder("too many samples in one segment".into()))?,
    );
    let data_offset_at = b.len();
    b.u32(0);
    for i in range.clone() {
        let s = &track.samples[i];
        b.u32(s.duration);
        b.u32(s.size);
        if video {
            b.u32(if s.sync { FLAGS_SYNC } else { FLAGS_NON_SYNC });
            let off = output_cts_offset(track, i);
            let off = i32::try_from(off).map_err(|_| {
                Error::Ladder(format!(
                    "{}: composition offset {off} of sample {} does not fit 32 bits",
                    track.file.display(),
                    i + 1
                ))
            })?;
            b.i32(off);
        }
    }
    b.close(); // trun
    if let Some((tc, maps)) = crypto {
        let slice = maps.get(range.clone()).unwrap_or(&[]);
        encrypt::fragment_boxes(&mut b, 0, tc, range.start, slice)?;
    }
    b.close(); // traf
    b.close(); // moof
    let moof_len = b.len();
    let large = data_len + 8 > u64::from(u32::MAX);
    let mdat_header = if large { 16 } else { 8 };
    let data_offset = i32::try_from(moof_len + mdat_header)
        .map_err(|_| Error::Ladder("moof too large".into()))?;
    b.patch_u32(data_offset_at, data_offset as u32);
    let mut header = b.finish();
    if large {
        header.extend_from_slice(&1u32.to_be_bytes());
        header.extend_from_slice(b"mdat");
        header.extend_from_slice(&(data_len + 16).to_be_bytes());
    } else {
        header.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
        header.extend_from_slice(b"mdat");
    }
    Ok(Fragment {
        header,
        data_len,
        segment: segment.clone(),
    })
}

/// The `sidx` (version 1) indexing `fragments`, which follow it directly.
pub fn sidx(track: &Track, fragments: &[Fragment]) -> Result<Vec<u8>, Error> {
    let refs: Vec<(u64, u64)> = fragments
        .iter()
        .map(|f| (f.size(), f.segment.duration))
        .collect();
    let earliest = fragments.first().map_or(0, |f| f.segment.start);
    sidx_of(track, &refs, earliest)
}

/// The `sidx` (version 1) of subsegments given as `(bytes, duration)`, which follow it
/// directly, the first presenting at `earliest`. A subsegment may hold several fragments (the
/// CMAF chunks of a trick play rendition).
pub fn sidx_of(track: &Track, refs: &[(u64, u64)], earliest: i64) -> Result<Vec<u8>, Error> {
    let count = u16::try_from(refs.len()).map_err(|_| {
        Error::Ladder(format!(
            "{}: {} segments do not fit one sidx (65535 at most): raise --segment-duration",
            track.file.display(),
            refs.len()
        ))
    })?;
    let mut b = BoxBuf::new();
    b.open_full(b"sidx", 1, 0);
    b.u32(OUT_TRACK_ID);
    b.u32(track.timescale);
    b.u64(earliest.max(0) as u64);
    b.u64(0);
    b.u16(0);
    b.u16(count);
    for &(size, duration) in refs {
        let size = u32::try_from(size)
            .ok()
            .filter(|&s| s < 0x8000_0000)
            .ok_or_else(|| {
                Error::Ladder(format!("{}: a segment over 2 GiB", track.file.display()))
            })?;
        b.u32(size);
        b.u32(u32::try_from(duration).map_err(|_| {
            Error::Ladder(format!(
                "{}: a segment duration over 32 bits",
                track.file.display()
            ))
        })?);
        b.u32(0x9000_0000); // starts_with_SAP = 1, SAP_type = 1
    }
    b.close();
    Ok(b.finish())
}

/// Closes a fragmented track's `stbl` with its empty sample tables (`stts`, `stsc`, `stco`,
/// `stsz`: the samples are in the fragments), closes `minf`, `mdia` and `trak`, and writes `mvex`
/// (`mehd` with the movie's `duration`, `trex` with `default_sample_flags`).
pub(crate) fn finish_fragmented_trak(b: &mut BoxBuf, duration: u64, default_sample_flags: u32) {
    for kind in [b"stts", b"stsc", b"stco"] {
        b.open_full(kind, 0, 0);
        b.u32(0);
        b.close();
    }
    b.open_full(b"stsz", 0, 0);
    b.u32(0);
    b.u32(0);
    b.close();
    b.close(); // stbl
    b.close(); // minf
    b.close(); // mdia
    b.close(); // trak
    b.open(b"mvex");
    b.open_full(b"mehd", 1, 0);
    b.u64(duration);
    b.close();
    b.open_full(b"trex", 0, 0);
    b.u32(OUT_TRACK_ID);
    b.u32(1);
    b.u32(0);
    b.u32(0);
    b.u32(default_sample_flags);
    b.close();
    b.close(); // mvex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmff::parse_source;
    use crate::bmff::{Sample, SampleEntry};

    fn track(kind: TrackKind) -> Track {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/media/ladder-h264/video-240p.mp4");
        let raw = crate::bmff::parse_file(&fixture).unwrap()[0]
            .entry
            .raw
            .clone();
        Track {
            file: "t.mp4".into(),
            track_id: 7,
            role: Default::default(),
            kind,
            timescale: 12800,
            language: "eng".into(),
            entry: SampleEntry {
                fourcc: *b"avc1",
                raw,
                codec: "avc1.64001e".into(),
                width: 640,
                height: 360,
                pixel_aspect: None,
                sample_rate: 48000,
                channels: 2,
            },
            edit_shift: 1024,
            samples: (0..4)
                .map(|i| Sample {
                    offset: 100 + i * 10,
                    size: 10,
                    dts: i * 512,
                    duration: 512,
                    cts_offset: if i == 0 { 1024 } else { 0 },
                    sync: i == 0,
                })
                .collect(),
        }
    }

    fn seg() -> Segment {
        Segment {
            samples: 0..4,
            base_dts: 0,
            start: 0,
            duration: 2048,
        }
    }

    #[test]
    fn fragment_layout_round_trips_through_the_reader() {
        let t = track(TrackKind::Video);
        let f = fragment(&t, &seg(), 3).unwrap();
        assert_eq!(f.data_len, 40);
        // Append the sample bytes and an init segment, then read it back as a fragmented MP4.
        let mut file = init_segment(&t, 2048);
        let moof_at = file.len() as u64;
        file.extend_from_slice(&f.header);
        file.extend_from_slice(&[0xab; 40]);
        let tracks = parse_source(std::path::Path::new("out.mp4"), &file[..]).unwrap();
        let back = &tracks[0];
        assert_eq!(back.track_id, OUT_TRACK_ID);
        assert_eq!(back.language, "eng");
        assert_eq!(back.samples.len(), 4);
        assert_eq!(back.samples[0].offset, moof_at + f.header.len() as u64);
        assert!(back.samples[0].sync && !back.samples[1].sync);
        // The edit shift is baked into signed composition offsets: 1024 - 1024 = 0, 0 - 1024.
        assert_eq!(back.samples[0].cts_offset, 0);
        assert_eq!(back.samples[1].cts_offset, -1024);
        assert_eq!(back.edit_shift, 0, "video output carries no edit list");
    }

    #[test]
    fn audio_keeps_its_edit_list_and_default_flags() {
        let t = track(TrackKind::Audio);
        let mut t = t;
        t.entry.raw = {
            let mut raw = 36u32.to_be_bytes().to_vec();
            raw.extend_from_slice(b"mp4a");
            raw.extend_from_slice(&[0; 28]);
            raw
        };
        let file = init_segment(&t, 2048);
        // Not parseable as a track without esds, but the elst must be there with media_time 1024.
        let pos = file.windows(4).position(|w| w == b"elst").unwrap();
        let media_time = u64::from_be_bytes(file[pos + 20..pos + 28].try_into().unwrap());
        assert_eq!(media_time, 1024);
        let f = fragment(&t, &seg(), 1).unwrap();
        let tfhd = f.header.windows(4).position(|w| w == b"tfhd").unwrap();
        assert_eq!(&f.header[tfhd + 4..tfhd + 8], &[0, 2, 0, 0x20]);
    }

    #[test]
    fn sidx_lists_every_fragment() {
        let t = track(TrackKind::Video);
        let f1 = fragment(&t, &seg(), 1).unwrap();
        let s = sidx(&t, &[f1.clone(), f1.clone()]).unwrap();
        assert_eq!(s.len(), 12 + 4 + 4 + 8 + 8 + 4 + 2 * 12);
        assert_eq!(u16::from_be_bytes([s[38], s[39]]), 2);
        assert_eq!(
            u32::from_be_bytes(s[40..44].try_into().unwrap()) as u64,
            f1.size()
        );
        assert_eq!(u32::from_be_bytes(s[44..48].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_be_bytes(s[48..52].try_into().unwrap()),
            0x9000_0000
        );
    }
}
