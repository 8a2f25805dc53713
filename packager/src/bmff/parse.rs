//! Turns an MP4 (progressive, or fragmented with `moof`s) into [`Track`]s.
//!
//! The top-level scan reads only box headers from the [`Source`]; `moov` and each `moof` are read
//! into memory (capped by [`limits::MAX_HEADER_BOX`]) and parsed with the bounded [`Reader`].
//! Sample data is never read here: samples are offsets and sizes, checked to lie inside the file.

use std::collections::HashMap;
use std::path::Path;

use crate::bmff::codec;
use crate::bmff::reader::{fourcc_str, FourCc, Reader};
use crate::bmff::track::{Sample, SampleEntry, Track, TrackKind};
use crate::error::Error;
use crate::limits;

/// Random-access bytes: a file or a buffer.
pub trait Source {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// True when there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; fails if the range is not all there.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= <[u8]>::len(self))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

/// Top-level box types accepted as the first box of an MP4.
const TOP_LEVEL: [&FourCc; 12] = [
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"uuid", b"moof",
    b"sidx", b"meta",
];

/// Opens and parses an input file.
pub fn parse_file(path: &Path) -> Result<Vec<Track>, Error> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    parse_source(path, &f)
}

fn invalid_at(file: &Path, box_path: &str, offset: u64, reason: impl Into<String>) -> Error {
    Error::Invalid {
        file: file.to_path_buf(),
        box_path: box_path.to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Defaults from `trex`, by track id.
#[derive(Debug, Clone, Copy, Default)]
struct Trex {
    duration: u32,
    size: u32,
    flags: u32,
}

/// Parses the tracks of `src`; `file` names it in errors.
pub fn parse_source(file: &Path, src: &(impl Source + ?Sized)) -> Result<Vec<Track>, Error> {
    let len = src.len();
    if len == 0 {
        return Err(invalid_at(
            file,
            "/",
            0,
            "the file is empty (0 bytes), not an MP4",
        ));
    }
    let mut off = 0u64;
    let mut moov: Option<(u64, Vec<u8>)> = None;
    let mut tracks: Vec<Track> = Vec::new();
    let mut trex: HashMap<u32, Trex> = HashMap::new();
    let mut mdats: Vec<(u64, u64)> = Vec::new();
    let mut moof_count = 0u64;
    while off < len {
        if len - off < 8 {
            return Err(invalid_at(
                file,
                "/",
                off,
                format!(
                    "{} trailing bytes are too few for a box header (truncated?)",
                    len - off
                ),
            ));
        }
        let mut h = [0u8; 16];
        src.read_at(off, &mut h[..8])
            .map_err(|e| Error::io(file, e))?;
        let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let kind: FourCc = [h[4], h[5], h[6], h[7]];
        let name = fourcc_str(&kind);
        if off == 0 && !TOP_LEVEL.contains(&&kind) {
            return Err(invalid_at(
                file,
                "/",
                0,
                format!(
                    "not an MP4: the first box type is {name:?}, expected ftyp, moov, mdat or another top-level box"
                ),
            ));
        }
        let (size, header) = match size32 {
            0 => (len - off, 8),
            1 => {
                if len - off < 16 {
                    return Err(invalid_at(file, &name, off, "truncated 64-bit box size"));
                }
                src.read_at(off + 8, &mut h[8..16])
                    .map_err(|e| Error::io(file, e))?;
                (
                    u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
                    16,
                )
            }
            n => (u64::from(n), 8),
        };
        if size < header {
            return Err(invalid_at(
                file,
                &name,
                off,
                format!("box size {size} is smaller than its header"),
            ));
        }
        if size > len - off {
            return Err(invalid_at(
                file,
                &name,
                off,
                format!(
                    "box declares {size} bytes but the file ends {} bytes after its start (truncated file?)",
                    len - off
                ),
            ));
        }
        let body_off = off + header;
        let body_len = size - header;
        match &kind {
            b"moov" | b"moof" => {
                if body_len > limits::MAX_HEADER_BOX {
                    return Err(Error::OverLimit {
                        file: file.to_path_buf(),
                        box_path: name,
                        offset: off,
                        what: "box size",
                        value: body_len,
                        limit: limits::MAX_HEADER_BOX,
                    });
                }
                let mut body = vec![0u8; body_len as usize];
                src.read_at(body_off, &mut body)
                    .map_err(|e| Error::io(file, e))?;
                if &kind == b"moov" {
                    if moov.is_some() {
                        return Err(invalid_at(file, "moov", off, "a second moov box"));
                    }
                    let r = Reader::new(file, &body, body_off, "moov");
                    let (t, x) = parse_moov(r, len)?;
                    tracks = t;
                    trex = x;
                    moov = Some((off, Vec::new()));
                } else {
                    moof_count += 1;
                    if moof_count > limits::MAX_FRAGMENTS {
                        return Err(Error::OverLimit {
                            file: file.to_path_buf(),
                            box_path: format!("moof[{moof_count}]"),
                            offset: off,
                            what: "fragment count",
                            value: moof_count,
                            limit: limits::MAX_FRAGMENTS,
                        });
                    }
                    let path = format!("moof[{moof_count}]");
                    if moov.is_none() {
                        return Err(invalid_at(file, &path, off, "moof before moov"));
                    }
                    let r = Reader::new(file, &body, body_off, path);
                    parse_moof(r, off, &trex, &mut tracks, len)?;
                }
            }
            b"mdat" => {
                if mdats.len() as u64 >= limits::MAX_FRAGMENTS {
                    return Err(invalid_at(file, "mdat", off, "too many mdat boxes"));
                }
                mdats.push((body_off, body_off + body_len));
            }
            _ => {}
        }
        off += size;
    }
    if moov.is_none() {
        return Err(invalid_at(
            file,
            "moov",
            len,
            "no moov box (movie header) in the file: not a complete MP4",
        ));
    }
    finish(file, tracks, &mdats)
}

fn finish(file: &Path, tracks: Vec<Track>, mdats: &[(u64, u64)]) -> Result<Vec<Track>, Error> {
    let mut out = Vec::new();
    for (i, t) in tracks.into_iter().enumerate() {
        let path = format!("moov/trak[{}]", i + 1);
        if t.samples.is_empty() {
            return Err(invalid_at(
                file,
                &path,
                0,
                format!("track {} has no samples", t.track_id),
            ));
        }
        for (n, s) in t.samples.iter().enumerate() {
            let end = s.offset + u64::from(s.size);
            let inside = mdats
                .partition_point(|&(st, _)| st <= s.offset)
                .checked_sub(1)
                .is_some_and(|k| end <= mdats[k].1);
            if !inside {
                return Err(invalid_at(
                    file,
                    &format!("{path}/mdia/minf/stbl"),
                    s.offset,
                    format!(
                        "sample {} of track {} ({} bytes at offset {}) lies outside every mdat (truncated file?)",
                        n + 1,
                        t.track_id,
                        s.size,
                        s.offset
                    ),
                ));
            }
        }
        if t.kind == TrackKind::Video && !t.samples[0].sync {
            return Err(invalid_at(
                file,
                &format!("{path}/mdia/minf/stbl/stss"),
                0,
                format!(
                    "the first sample of video track {} is not a sync sample",
                    t.track_id
                ),
            ));
        }
        out.push(t);
    }
    if out.is_empty() {
        return Err(invalid_at(file, "moov", 0, "no audio or video track"));
    }
    Ok(out)
}

fn child<'a>(r: &Reader<'a>, want: &FourCc) -> Result<Option<Reader<'a>>, Error> {
    let mut c = r.clone();
    for kid in c.children() {
        let (k, body) = kid?;
        if &k == want {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

fn need<'a>(r: &Reader<'a>, want: &FourCc) -> Result<Reader<'a>, Error> {
    child(r, want)?.ok_or_else(|| r.invalid(format!("missing required {} box", fourcc_str(want))))
}

fn parse_moov(
    mut moov: Reader<'_>,
    file_len: u64,
) -> Result<(Vec<Track>, HashMap<u32, Trex>), Error> {
    let mut mvhd = need(&moov, b"mvhd")?;
    let (v, _) = mvhd.full_header()?;
    mvhd.skip(if v == 1 { 16 } else { 8 })?;
    let movie_ts = mvhd.u32()?;
    let mut tracks = Vec::new();
    let mut trex = HashMap::new();
    for kid in moov.children() {
        let (k, r) = kid?;
        match &k {
            b"trak" => {
                if let Some(t) = parse_trak(r, movie_ts, file_len)? {
                    if tracks.len() >= limits::MAX_TRACKS {
                        return Err(Error::Unsupported {
                            file: moov.file().to_path_buf(),
                            box_path: "moov".into(),
                            reason: format!("more than {} tracks", limits::MAX_TRACKS),
                        });
                    }
                    tracks.push(t);
                }
            }
            b"mvex" => {
                let mut m = r;
                for kid in m.children() {
                    let (k, mut x) = kid?;
                    if &k == b"trex" {
                        x.full_header()?;
                        let id = x.u32()?;
                        x.u32()?;
                        trex.insert(
                            id,
                            Trex {
                                duration: x.u32()?,
                                size: x.u32()?,
                                flags: x.u32()?,
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Ok((tracks, trex))
}

fn parse_trak(trak: Reader<'_>, movie_ts: u32, file_len: u64) -> Result<Option<Track>, Error> {
    let mut tkhd = need(&trak, b"tkhd")?;
    let (v, _) = tkhd.full_header()?;
    tkhd.skip(if v == 1 { 16 } else { 8 })?;
    let track_id = tkhd.u32()?;
    let mdia = need(&trak, b"mdia")?;
    let mut hdlr = need(&mdia, b"hdlr")?;
    hdlr.full_header()?;
    hdlr.u32()?;
    let handler = hdlr.fourcc()?;
    let kind = match &handler {
        b"vide" => TrackKind::Video,
        b"soun" => TrackKind::Audio,
        _ => return Ok(None),
    };
    let mut mdhd = need(&mdia, b"mdhd")?;
    let (v, _) = mdhd.full_header()?;
    mdhd.skip(if v == 1 { 16 } else { 8 })?;
    let timescale = mdhd.u32()?;
    if timescale == 0 {
        return Err(mdhd.invalid("timescale is 0"));
    }
    mdhd.skip(if v == 1 { 8 } else { 4 })?;
    let lang = mdhd.u16()?;
    let language = if lang == 0 || lang == 0x7fff {
        "und".to_string()
    } else {
        (0..3)
            .map(|i| (((lang >> (10 - 5 * i)) & 0x1f) as u8 + 0x60) as char)
            .collect()
    };
    // An extended language tag (`elng`, BCP 47) overrides the packed ISO 639-2 code.
    let language = match child(&mdia, b"elng")? {
        Some(mut elng) => {
            elng.full_header()?;
            let rest = elng.bytes(elng.remaining())?;
            let tag: String = String::from_utf8_lossy(rest)
                .trim_end_matches('\0')
                .to_string();
            if crate::package::is_language_tag(&tag) {
                tag
            } else {
                return Err(elng.invalid(format!("extended language {tag:?} is not a BCP 47 tag")));
            }
        }
        None => language,
    };
    let minf = need(&mdia, b"minf")?;
    let stbl = need(&minf, b"stbl")?;
    let entry = parse_stsd(need(&stbl, b"stsd")?, kind)?;
    let samples = parse_stbl(&stbl, file_len)?;
    let edit_shift = match child(&trak, b"edts")? {
        Some(edts) => match child(&edts, b"elst")? {
            Some(elst) => parse_elst(elst, movie_ts, timescale)?,
            None => 0,
        },
        None => 0,
    };
    let mut t = Track {
        file: trak.file().to_path_buf(),
        track_id,
        kind,
        timescale,
        language,
        role: Default::default(),
        entry,
        edit_shift,
        samples,
    };
    fill_vp9_level(&mut t);
    Ok(Some(t))
}

/// A `vpcC` level of 0 means "unspecified"; players want a real one, so compute the lowest
/// level admitting the rendition's picture size and frame rate.
fn fill_vp9_level(t: &mut Track) {
    if &t.entry.fourcc != b"vp09" {
        return;
    }
    let mut parts: Vec<String> = t.entry.codec.split('.').map(str::to_string).collect();
    if parts.len() < 3 || parts[2] != "00" {
        return;
    }
    let d = u64::from(t.typical_duration().max(1));
    let fps_milli = u64::from(t.timescale) * 1000 / d;
    parts[2] = format!(
        "{:02}",
        codec::vp9_level(t.entry.width, t.entry.height, fps_milli)
    );
    t.entry.codec = parts.join(".");
}

fn parse_elst(mut r: Reader<'_>, movie_ts: u32, media_ts: u32) -> Result<i64, Error> {
    let (v, _) = r.full_header()?;
    let n = r.count(if v == 1 { 20 } else { 12 })?;
    let mut empty: i64 = 0;
    let mut shift = None;
    for _ in 0..n {
        let (dur, media_time) = if v == 1 {
            (r.u64()?, r.i64()?)
        } else {
            (u64::from(r.u32()?), i64::from(r.i32()?))
        };
        let rate = r.u32()?;
        if media_time == -1 {
            if shift.is_some() {
                return Err(r.unsupported(
                    "an empty edit after media: edit lists that cut or pad mid-track",
                ));
            }
            if movie_ts == 0 {
                return Err(r.invalid("empty edit with a movie timescale of 0"));
            }
            let d = i128::from(dur) * i128::from(media_ts) / i128::from(movie_ts);
            empty = empty.saturating_add(i64::try_from(d).unwrap_or(i64::MAX));
        } else {
            if media_time < 0 {
                return Err(r.invalid(format!("media_time {media_time}")));
            }
            if rate != 0x0001_0000 {
                return Err(r.unsupported(format!("edit rate {rate:#x} (only 1.0)")));
            }
            if shift.is_some() {
                return Err(r.unsupported("more than one non-empty edit"));
            }
            shift = Some(media_time);
        }
    }
    Ok(shift.unwrap_or(0) - empty)
}

fn parse_stsd(mut stsd: Reader<'_>, kind: TrackKind) -> Result<SampleEntry, Error> {
    stsd.full_header()?;
    let n = stsd.u32()?;
    if n != 1 {
        return Err(stsd.unsupported(format!("{n} sample descriptions (exactly 1 is supported)")));
    }
    let entry_off = stsd.offset();
    let mut kids = stsd.children();
    let (fourcc, mut e) = kids
        .next()
        .ok_or_else(|| stsd.invalid("no sample entry"))??;
    let raw_len = (e.remaining() as u64 + e.offset() - entry_off) as usize;
    if raw_len as u64 > limits::MAX_CODEC_CONFIG {
        return Err(e.over_limit(
            "sample entry size",
            raw_len as u64,
            limits::MAX_CODEC_CONFIG,
        ));
    }
    let name = fourcc_str(&fourcc);
    let mut entry = SampleEntry {
        fourcc,
        raw: Vec::new(),
        codec: String::new(),
        width: 0,
        height: 0,
        pixel_aspect: None,
        sample_rate: 0,
        channels: 0,
    };
    // The whole entry: header + body, rebuilt from the body with a plain 32-bit header.
    let body = e.clone().rest();
    entry.raw = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    entry.raw.extend_from_slice(&fourcc);
    entry.raw.extend_from_slice(body);
    if matches!(&fourcc, b"encv" | b"enca") {
        return Err(e.unsupported("encrypted input (encv/enca): package clear renditions"));
    }
    e.skip(6)?;
    e.u16()?; // data_reference_index
    match kind {
        TrackKind::Video => {
            e.skip(16)?;
            entry.width = u32::from(e.u16()?);
            entry.height = u32::from(e.u16()?);
            e.skip(4 + 4 + 4 + 2 + 32 + 2 + 2)?;
            let mut codec = None;
            let mut vpcc = None;
            for kid in e.children() {
                let (k, mut c) = kid?;
                match &k {
                    b"avcC" if matches!(&fourcc, b"avc1" | b"avc3") => {
                        codec = Some(codec::avc_codec(&fourcc, &mut c)?)
                    }
                    b"hvcC" if matches!(&fourcc, b"hvc1" | b"hev1") => {
                        codec = Some(codec::hevc_codec(&fourcc, &mut c)?)
                    }
                    b"vpcC" if &fourcc == b"vp09" => vpcc = Some(codec::parse_vpcc(&mut c)?),
                    b"av1C" if &fourcc == b"av01" => codec = Some(codec::av1_codec(&mut c)?),
                    b"pasp" => {
                        let h = c.u32()?;
                        let v = c.u32()?;
                        if h > 0 && v > 0 {
                            entry.pixel_aspect = Some((h, v));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(v) = vpcc {
                // Level 0 is filled in by the caller once the frame rate is known.
                codec = Some(v.codec(0));
            }
            entry.codec = codec.ok_or_else(|| {
                Error::Unsupported {
                    file: e.file().to_path_buf(),
                    box_path: e.path().to_string(),
                    reason: format!(
                        "video sample entry {name:?} without a supported configuration (avc1/avc3+avcC, hvc1/hev1+hvcC, vp09+vpcC, av01+av1C)"
                    ),
                }
            })?;
            if entry.width == 0 || entry.height == 0 {
                return Err(e.invalid("video sample entry with zero width or height"));
            }
        }
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => {
            let version = e.u16()?;
            e.skip(6)?;
            entry.channels = e.u16()?;
            e.skip(2 + 2 + 2)?;
            entry.sample_rate = e.u32()? >> 16;
            match version {
                0 => {}
                1 => e.skip(16)?,
                v => return Err(e.unsupported(format!("audio sample entry version {v}"))),
            }
            let mut codec = None;
            for kid in e.children() {
                let (k, mut c) = kid?;
                match &k {
                    b"esds" if &fourcc == b"mp4a" => {
                        let info = codec::parse_esds(&mut c)?;
                        // The AudioSpecificConfig's channel configuration is authoritative
                        // (the sample entry's channelcount is often a template 2).
                        if let Some(n) = info.channels() {
                            entry.channels = n;
                        }
                        codec = Some(info.codec())
                    }
                    b"dOps" if &fourcc == b"Opus" => {
                        let d = codec::parse_dops(&mut c)?;
                        entry.channels = u16::from(d.channels);
                        codec = Some("opus".to_string());
                    }
                    _ => {}
                }
            }
            entry.codec = codec.ok_or_else(|| Error::Unsupported {
                file: e.file().to_path_buf(),
                box_path: e.path().to_string(),
                reason: format!(
                    "audio sample entry {name:?} without a supported configuration (mp4a+esds, Opus+dOps)"
                ),
            })?;
            if entry.sample_rate == 0 {
                return Err(e.invalid("audio sample entry with a sample rate of 0"));
            }
        }
    }
    Ok(entry)
}

fn parse_stbl(stbl: &Reader<'_>, file_len: u64) -> Result<Vec<Sample>, Error> {
    // stsz / stz2: sample count and sizes.
    let (count, uniform, mut sizes_r, field_bits, stsz_r) =
        if let Some(mut r) = child(stbl, b"stsz")? {
            r.full_header()?;
            let uniform = r.u32()?;
            let n = u64::from(r.u32()?);
            let at = r.clone();
            (n, uniform, r, 32u32, at)
        } else if let Some(mut r) = child(stbl, b"stz2")? {
            r.full_header()?;
            let fs = r.u32()? & 0xff;
            if !matches!(fs, 4 | 8 | 16) {
                return Err(r.invalid(format!("field_size {fs}")));
            }
            let n = u64::from(r.u32()?);
            let at = r.clone();
            (n, 0, r, fs, at)
        } else {
            return Err(stbl.invalid("missing required stsz (or stz2) box"));
        };
    if count > limits::MAX_SAMPLES {
        return Err(stsz_r.over_limit("sample count", count, limits::MAX_SAMPLES));
    }
    if uniform == 0 {
        let need = (count * u64::from(field_bits)).div_ceil(8);
        if need > sizes_r.remaining() as u64 {
            return Err(sizes_r.invalid(format!(
                "sample count {count} needs {need} bytes of sizes, the box has {}",
                sizes_r.remaining()
            )));
        }
    } else if u64::from(uniform).saturating_mul(count) > file_len {
        return Err(sizes_r.invalid(format!(
            "{count} samples of {uniform} bytes cannot fit in the file"
        )));
    }
    let count = count as usize;
    let mut samples = Vec::with_capacity(count);
    let mut nibble = None;
    for _ in 0..count {
        let size = if uniform != 0 {
            uniform
        } else {
            match field_bits {
                32 => sizes_r.u32()?,
                16 => u32::from(sizes_r.u16()?),
                8 => u32::from(sizes_r.u8()?),
                _ => match nibble.take() {
                    Some(lo) => lo,
                    None => {
                        let b = sizes_r.u8()?;
                        nibble = Some(u32::from(b & 0x0f));
                        u32::from(b >> 4)
                    }
                },
            }
        };
        if u64::from(size) > limits::MAX_SAMPLE_SIZE {
            return Err(sizes_r.over_limit(
                "sample size",
                u64::from(size),
                limits::MAX_SAMPLE_SIZE,
            ));
        }
        samples.push(Sample {
            offset: 0,
            size,
            dts: 0,
            duration: 0,
            cts_offset: 0,
            sync: true,
        });
    }
    // stts: decode times.
    let mut stts = need(stbl, b"stts")?;
    stts.full_header()?;
    let n = stts.count(8)?;
    let mut i = 0usize;
    let mut dts = 0u64;
    for _ in 0..n {
        let c = stts.u32()? as usize;
        let d = stts.u32()?;
        if c > count - i {
            return Err(stts.invalid(format!("stts describes more samples than stsz's {count}")));
        }
        for s in &mut samples[i..i + c] {
            s.dts = dts;
            s.duration = d;
            dts += u64::from(d);
        }
        i += c;
    }
    if i != count {
        return Err(stts.invalid(format!("stts describes {i} samples, stsz {count}")));
    }
    // ctts: composition offsets (version 0 values are read as signed, as every muxer means them).
    if let Some(mut ctts) = child(stbl, b"ctts")? {
        ctts.full_header()?;
        let n = ctts.count(8)?;
        let mut i = 0usize;
        for _ in 0..n {
            let c = ctts.u32()? as usize;
            let o = ctts.i32()?;
            if c > count - i {
                return Err(
                    ctts.invalid(format!("ctts describes more samples than stsz's {count}"))
                );
            }
            for s in &mut samples[i..i + c] {
                s.cts_offset = o;
            }
            i += c;
        }
    }
    // stss: sync samples (absent = all sync).
    if let Some(mut stss) = child(stbl, b"stss")? {
        stss.full_header()?;
        let n = stss.count(4)?;
        for s in samples.iter_mut() {
            s.sync = false;
        }
        for _ in 0..n {
            let k = stss.u32()? as usize;
            if k == 0 || k > count {
                return Err(stss.invalid(format!("sync sample number {k} out of 1..={count}")));
            }
            samples[k - 1].sync = true;
        }
    }
    // stsc + stco/co64: offsets.
    let mut stsc = need(stbl, b"stsc")?;
    stsc.full_header()?;
    let runs_n = stsc.count(12)?;
    let mut runs = Vec::with_capacity(runs_n);
    for _ in 0..runs_n {
        let first = stsc.u32()?;
        let per = stsc.u32()?;
        stsc.u32()?;
        if first == 0 || runs.last().is_some_and(|&(f, _)| first <= f) {
            return Err(stsc.invalid(format!("first_chunk {first} is not increasing from 1")));
        }
        runs.push((first, per));
    }
    let (mut co, wide) = if let Some(mut r) = child(stbl, b"stco")? {
        r.full_header()?;
        (r, false)
    } else if let Some(mut r) = child(stbl, b"co64")? {
        r.full_header()?;
        (r, true)
    } else {
        return Err(stbl.invalid("missing required stco (or co64) box"));
    };
    let chunks = co.count(if wide { 8 } else { 4 })?;
    let mut i = 0usize;
    for chunk in 1..=chunks as u32 {
        let run = runs.partition_point(|&(f, _)| f <= chunk);
        let per = if run == 0 { 0 } else { runs[run - 1].1 } as usize;
        let mut off = if wide {
            co.u64()?
        } else {
            u64::from(co.u32()?)
        };
        if per > count - i {
            return Err(co.invalid(format!("chunks hold more samples than stsz's {count}")));
        }
        for s in &mut samples[i..i + per] {
            s.offset = off;
            off = off.saturating_add(u64::from(s.size));
        }
        i += per;
    }
    if i != count {
        return Err(stsc.invalid(format!("chunks hold {i} samples, stsz {count}")));
    }
    Ok(samples)
}

#[allow(clippy::too_many_lines)]
fn parse_moof(
    mut moof: Reader<'_>,
    moof_start: u64,
    trex: &HashMap<u32, Trex>,
    tracks: &mut [Track],
    file_len: u64,
) -> Result<(), Error> {
    for kid in moof.children() {
        let (k, traf) = kid?;
        if &k != b"traf" {
            continue;
        }
        let mut tfhd = need(&traf, b"tfhd")?;
        let (_, fl) = tfhd.full_header()?;
        let id = tfhd.u32()?;
        let Some(t) = tracks.iter_mut().find(|t| t.track_id == id) else {
            continue; // a track that is neither audio nor video
        };
        let d = trex.get(&id).copied().unwrap_or_default();
        let base = if fl & 0x1 != 0 {
            tfhd.u64()?
        } else {
            moof_start
        };
        if fl & 0x2 != 0 {
            let idx = tfhd.u32()?;
            if idx != 1 {
                return Err(tfhd.unsupported(format!("sample_description_index {idx}")));
            }
        }
        let def_dur = if fl & 0x8 != 0 {
            tfhd.u32()?
        } else {
            d.duration
        };
        let def_size = if fl & 0x10 != 0 { tfhd.u32()? } else { d.size };
        let def_flags = if fl & 0x20 != 0 { tfhd.u32()? } else { d.flags };
        if let Some(mut tfdt) = child(&traf, b"tfdt")? {
            let (v, _) = tfdt.full_header()?;
            let t0 = if v == 1 {
                tfdt.u64()?
            } else {
                u64::from(tfdt.u32()?)
            };
            if let Some(last) = t.samples.last() {
                let end = last.dts + u64::from(last.duration);
                if t0 < end {
                    return Err(tfdt.invalid(format!(
                        "baseMediaDecodeTime {t0} goes back before the previous fragment's end {end}"
                    )));
                }
                // Fill a gap by stretching the previous sample, keeping decode times exact.
                if t0 > end {
                    let gap = t0 - end;
                    let last = t.samples.last_mut().expect("non-empty");
                    last.duration = u32::try_from(u64::from(last.duration) + gap)
                        .map_err(|_| tfdt.invalid("gap between fragments too large"))?;
                }
            } else if t0 != 0 {
                // A first fragment starting late is handled as a decode time offset.
                t.edit_shift -= i64::try_from(t0).unwrap_or(i64::MAX);
            }
        }
        let mut data_pos = base;
        let mut trav = traf.clone();
        for kid in trav.children() {
            let (k, mut trun) = kid?;
            if &k != b"trun" {
                continue;
            }
            let (v, tf) = trun.full_header()?;
            let n = u64::from(trun.u32()?);
            if let Some(o) = (tf & 0x1 != 0).then(|| trun.i32()).transpose()? {
                data_pos = base
                    .checked_add_signed(i64::from(o))
                    .ok_or_else(|| trun.invalid("data_offset before the file start"))?;
            }
            let first_flags = if tf & 0x4 != 0 {
                Some(trun.u32()?)
            } else {
                None
            };
            let per = 4 * ((tf >> 8) & 0xf).count_ones() as usize;
            trun.check_count(n, per)?;
            if t.samples.len() as u64 + n > limits::MAX_SAMPLES {
                return Err(trun.over_limit(
                    "sample count",
                    t.samples.len() as u64 + n,
                    limits::MAX_SAMPLES,
                ));
            }
            for j in 0..n {
                let duration = if tf & 0x100 != 0 {
                    trun.u32()?
                } else {
                    def_dur
                };
                let size = if tf & 0x200 != 0 {
                    trun.u32()?
                } else {
                    def_size
                };
                let mut flags = if tf & 0x400 != 0 {
                    trun.u32()?
                } else {
                    def_flags
                };
                if j == 0 {
                    if let Some(f) = first_flags {
                        flags = f;
                    }
                }
                let cts_offset = if tf & 0x800 != 0 {
                    // Version 0 offsets are unsigned in the spec, but muxers mean them signed.
                    let _ = v;
                    trun.i32()?
                } else {
                    0
                };
                if u64::from(size) > limits::MAX_SAMPLE_SIZE {
                    return Err(trun.over_limit(
                        "sample size",
                        u64::from(size),
                        limits::MAX_SAMPLE_SIZE,
                    ));
                }
                if data_pos.saturating_add(u64::from(size)) > file_len {
                    return Err(trun.invalid(format!(
                        "sample data at offset {data_pos} ({size} bytes) runs past the end of the file"
                    )));
                }
                let dts = t
                    .samples
                    .last()
                    .map_or(0, |s| s.dts + u64::from(s.duration));
                t.samples.push(Sample {
                    offset: data_pos,
                    size,
                    dts,
                    duration,
                    cts_offset,
                    sync: flags & 0x0001_0000 == 0,
                });
                data_pos += u64::from(size);
            }
        }
    }
    Ok(())
}
