//! CMAF text tracks (ISO/IEC 14496-30, CMAF text profiles): the init segment of a `wvtt`
//! (WebVTT, handler `text`, `nmhd`) or `stpp` (TTML/IMSC1, handler `subt`, `sthd`) track, its
//! fragments and the `sidx` of an on-demand file. Unlike audio and video the samples are built in
//! memory ([`crate::text::mp4`]), so these functions take the sample bytes and return whole
//! fragments. Timescale 1000: text times are integer milliseconds.

use super::boxes::BoxBuf;
use super::{FLAGS_SYNC, OUT_TRACK_ID};
use crate::error::Error;

/// Timescale of every text track.
pub const TEXT_TIMESCALE: u32 = 1000;

/// The sample entry of a text track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextEntry {
    /// `wvtt` with its `vttC` configuration (the WebVTT header: signature, STYLE, REGION).
    Wvtt {
        /// `vttC` text.
        config: String,
    },
    /// `stpp` with the TTML namespace, the schema location and the `mime` box content type.
    Stpp {
        /// XML namespace of the documents' root (`http://www.w3.org/ns/ttml`).
        namespace: String,
        /// Space-separated schema locations (may be empty).
        schema_location: String,
        /// `mime` box content type (`application/ttml+xml;codecs=im1t`).
        mime: String,
    },
}

fn cstring(b: &mut BoxBuf, s: &str) {
    b.bytes(s.as_bytes());
    b.bytes(&[0]);
}

/// The init segment (`ftyp` + `moov`) of a text track lasting `duration_ms`, language `lang`
/// (BCP 47, written in `elng`; `mdhd` holds it when it is an ISO 639-2 code, else `und`).
pub fn init_segment(entry: &TextEntry, lang: &str, duration_ms: u64) -> Vec<u8> {
    let mut b = BoxBuf::new();
    b.open(b"ftyp");
    b.fourcc(b"iso6");
    b.u32(0);
    let brand: &[u8; 4] = match entry {
        TextEntry::Wvtt { .. } => b"cwvt",
        TextEntry::Stpp { .. } => b"im1t",
    };
    for brand in [b"iso6", b"cmfc", brand, b"dash"] {
        b.fourcc(brand);
    }
    b.close();
    b.open(b"moov");
    super::mvhd(&mut b, TEXT_TIMESCALE, 0);
    b.open(b"trak");
    super::tkhd(&mut b, 0, 0, 0);
    b.open(b"mdia");
    super::mdhd(&mut b, TEXT_TIMESCALE, lang);
    b.open_full(b"hdlr", 0, 0);
    b.u32(0);
    let (handler, name): (&[u8; 4], &[u8]) = match entry {
        TextEntry::Wvtt { .. } => (b"text", b"Outpost WebVTT\0"),
        TextEntry::Stpp { .. } => (b"subt", b"Outpost IMSC1\0"),
    };
    b.fourcc(handler);
    b.zeros(12);
    b.bytes(name);
    b.close();
    b.open_full(b"elng", 0, 0);
    cstring(&mut b, lang);
    b.close();
    b.open(b"minf");
    match entry {
        TextEntry::Wvtt { .. } => b.open_full(b"nmhd", 0, 0),
        TextEntry::Stpp { .. } => b.open_full(b"sthd", 0, 0),
    }
    b.close();
    super::dinf(&mut b);
    b.open(b"stbl");
    b.open_full(b"stsd", 0, 0);
    b.u32(1);
    match entry {
        TextEntry::Wvtt { config } => {
            b.open(b"wvtt");
            b.zeros(6);
            b.u16(1);
            b.open(b"vttC");
            b.bytes(config.as_bytes());
            b.close();
            b.close();
        }
        TextEntry::Stpp {
            namespace,
            schema_location,
            mime,
        } => {
            b.open(b"stpp");
            b.zeros(6);
            b.u16(1);
            cstring(&mut b, namespace);
            cstring(&mut b, schema_location);
            cstring(&mut b, "");
            b.open_full(b"mime", 0, 0);
            cstring(&mut b, mime);
            b.close();
            b.close();
        }
    }
    b.close(); // stsd
    super::finish_fragmented_trak(&mut b, duration_ms, FLAGS_SYNC);
    b.close(); // moov
    b.finish()
}

/// One whole fragment (`moof` + `mdat`) holding `samples` (`(duration ms, bytes)`, every one a
/// sync sample) from decode time `base_ms`, with `mfhd` sequence number `sequence`.
pub fn fragment(sequence: u32, base_ms: u64, samples: &[(u32, Vec<u8>)]) -> Result<Vec<u8>, Error> {
    let data_len: usize = samples.iter().map(|(_, d)| d.len()).sum();
    let mut b = BoxBuf::new();
    b.open(b"moof");
    b.open_full(b"mfhd", 0, 0);
    b.u32(sequence);
    b.close();
    b.open(b"traf");
    b.open_full(b"tfhd", 0, 0x02_0000 | 0x20);
    b.u32(OUT_TRACK_ID);
    b.u32(FLAGS_SYNC);
    b.close();
    b.open_full(b"tfdt", 1, 0);
    b.u64(base_ms);
    b.close();
    b.open_full(b"trun", 0, 0x1 | 0x100 | 0x200);
    b.u32(u32::try_from(samples.len()).map_err(|_| Error::Ladder("too many text samples".into()))?);
    let data_offset_at = b.len();
    b.u32(0);
    for (d, bytes) in samples {
        b.u32(*d);
        b.u32(
            u32::try_from(bytes.len())
                .map_err(|_| Error::Ladder("a text sample over 4 GiB".into()))?,
        );
    }
    b.close(); // trun
    b.close(); // traf
    b.close(); // moof
    let moof_len = b.len();
    b.patch_u32(data_offset_at, (moof_len + 8) as u32);
    b.open(b"mdat");
    for (_, bytes) in samples {
        b.bytes(bytes);
    }
    b.close();
    debug_assert_eq!(b.len(), moof_len + 8 + data_len);
    Ok(b.finish())
}

/// The `sidx` (version 1) of an on-demand text file: `refs` are `(size, duration ms)` of the
/// fragments that follow it, the first presenting at `earliest_ms`.
pub fn sidx(earliest_ms: u64, refs: &[(u64, u64)]) -> Result<Vec<u8>, Error> {
    let count = u16::try_from(refs.len()).map_err(|_| {
        Error::Ladder("more than 65535 text segments: raise --segment-duration".into())
    })?;
    let mut b = BoxBuf::new();
    b.open_full(b"sidx", 1, 0);
    b.u32(OUT_TRACK_ID);
    b.u32(TEXT_TIMESCALE);
    b.u64(earliest_ms);
    b.u64(0);
    b.u16(0);
    b.u16(count);
    for &(size, dur) in refs {
        let size = u32::try_from(size)
            .ok()
            .filter(|&s| s < 0x8000_0000)
            .ok_or_else(|| Error::Ladder("a text segment over 2 GiB".into()))?;
        b.u32(size);
        b.u32(
            u32::try_from(dur)
                .map_err(|_| Error::Ladder("a text segment duration over 32 bits".into()))?,
        );
        b.u32(0x9000_0000);
    }
    b.close();
    Ok(b.finish())
}
