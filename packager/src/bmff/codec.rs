//! Codec configuration records and their RFC 6381 codec strings: `avcC` (H.264), `hvcC` (HEVC,
//! with its bit-reversed compatibility flags), `esds` (AAC), `vpcC` (VP9), `av1C` (AV1) and
//! `dOps` (Opus). Each parser takes the record's body and fails with the box path on malformed
//! bytes; the strings are what players pass to `MediaSource.isTypeSupported`.

use crate::bmff::reader::{fourcc_str, FourCc, Reader};
use crate::error::Error;

/// `avc1.PPCCLL` from an `avcC` body: profile, constraint flags and level, two hex digits each.
pub fn avc_codec(fourcc: &FourCc, r: &mut Reader<'_>) -> Result<String, Error> {
    let version = r.u8()?;
    if version != 1 {
        return Err(r.invalid(format!("configurationVersion {version}, expected 1")));
    }
    let profile = r.u8()?;
    let compat = r.u8()?;
    let level = r.u8()?;
    Ok(format!(
        "{}.{profile:02x}{compat:02x}{level:02x}",
        fourcc_str(fourcc)
    ))
}

/// `hvc1.<space><profile>.<compat reversed>.<tier><level>[.<constraint bytes>]` from an `hvcC`
/// body (ISO/IEC 14496-15 annex E).
pub fn hevc_codec(fourcc: &FourCc, r: &mut Reader<'_>) -> Result<String, Error> {
    let version = r.u8()?;
    if version != 1 {
        return Err(r.invalid(format!("configurationVersion {version}, expected 1")));
    }
    let b = r.u8()?;
    let space = b >> 6;
    let tier = (b >> 5) & 1;
    let profile = b & 0x1f;
    let compat = r.u32()?;
    let constraints = r.bytes(6)?;
    let level = r.u8()?;
    let mut s = format!(
        "{}.{}{profile}.{:X}.{}{level}",
        fourcc_str(fourcc),
        ["", "A", "B", "C"][space as usize],
        compat.reverse_bits(),
        if tier == 1 { 'H' } else { 'L' }
    );
    let keep = constraints
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |i| i + 1);
    for c in &constraints[..keep] {
        s.push_str(&format!(".{c:X}"));
    }
    Ok(s)
}

/// What an `esds` holds that the packager needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsdsInfo {
    /// `objectTypeIndication` (0x40 = MPEG-4 audio).
    pub object_type: u8,
    /// MPEG-4 audioObjectType from the AudioSpecificConfig (2 = AAC-LC).
    pub audio_object_type: u8,
    /// `avgBitrate` from the DecoderConfigDescriptor (0 when unknown).
    pub avg_bitrate: u32,
    /// `channelConfiguration` from the AudioSpecificConfig (0 = defined in the stream).
    pub channel_config: u8,
}

impl EsdsInfo {
    /// `mp4a.40.N`.
    pub fn codec(&self) -> String {
        format!("mp4a.{:02x}.{}", self.object_type, self.audio_object_type)
    }

    /// Channel count of the `channelConfiguration` (ISO/IEC 14496-3 table 1.19; 1-6 are
    /// 1.0, 2.0, 3.0, 4.0, 5.0, 5.1, 7 is 7.1), `None` when the config does not say.
    pub fn channels(&self) -> Option<u16> {
        match self.channel_config {
            1..=6 => Some(u16::from(self.channel_config)),
            7 => Some(8),
            11 => Some(7),
            12 | 14 => Some(8),
            13 => Some(24),
            _ => None,
        }
    }
}

fn descriptor<'a>(r: &mut Reader<'a>, want: u8) -> Result<Reader<'a>, Error> {
    let tag = r.u8()?;
    if tag != want {
        return Err(r.invalid(format!("descriptor tag {tag:#x}, expected {want:#x}")));
    }
    let mut len: u32 = 0;
    for i in 0..4 {
        let b = r.u8()?;
        len = (len << 7) | u32::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(r.invalid("descriptor length longer than 4 bytes"));
        }
    }
    let len = len as usize;
    if len > r.remaining() {
        return Err(r.invalid(format!(
            "descriptor {want:#x} claims {len} bytes, {} left",
            r.remaining()
        )));
    }
    let base_path = r.path().to_string();
    let off = r.offset();
    let body = r.bytes(len)?;
    Ok(Reader::new(r.file(), body, off, base_path))
}

/// Parses an `esds` body (FullBox header included).
pub fn parse_esds(r: &mut Reader<'_>) -> Result<EsdsInfo, Error> {
    let (version, _) = r.full_header()?;
    if version != 0 {
        return Err(r.invalid(format!("version {version}, expected 0")));
    }
    let mut es = descriptor(r, 0x03)?;
    es.skip(2)?;
    let flags = es.u8()?;
    if flags & 0x80 != 0 {
        es.skip(2)?;
    }
    if flags & 0x40 != 0 {
        let n = es.u8()? as usize;
        es.skip(n)?;
    }
    if flags & 0x20 != 0 {
        es.skip(2)?;
    }
    let mut dc = descriptor(&mut es, 0x04)?;
    let object_type = dc.u8()?;
    dc.skip(1 + 3 + 4)?;
    let avg_bitrate = dc.u32()?;
    if object_type != 0x40 {
        return Err(dc.unsupported(format!(
            "objectTypeIndication {object_type:#04x} (only MPEG-4 audio, 0x40, is supported)"
        )));
    }
    let mut dsi = descriptor(&mut dc, 0x05)?;
    let asc = dsi.bytes(dsi.remaining())?;
    // Bit reader over the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
    let mut pos = 0usize;
    let mut bits = |n: usize| -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *asc.get(pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - pos % 8)) & 1);
            pos += 1;
        }
        Some(v)
    };
    let short = || dsi.invalid("AudioSpecificConfig too short");
    let mut aot = bits(5).ok_or_else(short)? as u8;
    if aot == 31 {
        aot = 32 + bits(6).ok_or_else(short)? as u8;
    }
    if aot == 0 {
        return Err(dsi.invalid("audioObjectType 0 is not valid"));
    }
    // samplingFrequencyIndex (0xf: an explicit 24-bit rate), then channelConfiguration.
    let channel_config = match bits(4) {
        Some(0xf) => bits(24).and_then(|_| bits(4)),
        Some(_) => bits(4),
        None => None,
    }
    .unwrap_or(0) as u8;
    Ok(EsdsInfo {
        object_type,
        audio_object_type: aot,
        avg_bitrate,
        channel_config,
    })
}

/// Luma sample rate and picture size caps per VP9 level (VP9 levels table), level x10.
const VP9_LEVELS: [(u8, u64, u64); 14] = [
    (10, 829_440, 36_864),
    (11, 2_764_800, 73_728),
    (20, 4_608_000, 122_880),
    (21, 9_216_000, 245_760),
    (30, 20_736_000, 552_960),
    (31, 36_864_000, 983_040),
    (40, 83_558_400, 2_228_224),
    (41, 160_432_128, 2_228_224),
    (50, 311_951_360, 8_912_896),
    (51, 588_251_136, 8_912_896),
    (52, 1_176_502_272, 8_912_896),
    (60, 1_176_502_272, 35_651_584),
    (61, 2_353_004_544, 35_651_584),
    (62, 4_706_009_088, 35_651_584),
];

/// The lowest VP9 level whose caps admit `width x height` at `fps_milli / 1000` frames per second.
pub fn vp9_level(width: u32, height: u32, fps_milli: u64) -> u8 {
    let pic = u64::from(width) * u64::from(height);
    let rate = pic.saturating_mul(fps_milli).div_ceil(1000);
    VP9_LEVELS
        .iter()
        .find(|(_, r, p)| rate <= *r && pic <= *p)
        .map_or(62, |l| l.0)
}

/// The fields of a `vpcC` (version 1) box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpcC {
    /// Profile 0-3.
    pub profile: u8,
    /// Level x10, 0 when the encoder left it unspecified.
    pub level: u8,
    /// Bit depth 8, 10 or 12.
    pub bit_depth: u8,
    /// Chroma subsampling (0 = 4:2:0 vertical, 1 = 4:2:0 colocated, 2 = 4:2:2, 3 = 4:4:4).
    pub chroma: u8,
    /// Full-range flag.
    pub full_range: bool,
    /// Colour primaries.
    pub primaries: u8,
    /// Transfer characteristics.
    pub transfer: u8,
    /// Matrix coefficients.
    pub matrix: u8,
}

impl VpcC {
    /// `vp09.PP.LL.DD.CC.cp.tc.mc.FF`; `level` replaces an unspecified (0) level.
    pub fn codec(&self, level: u8) -> String {
        format!(
            "vp09.{:02}.{:02}.{:02}.{:02}.{:02}.{:02}.{:02}.{:02}",
            self.profile,
            if self.level == 0 { level } else { self.level },
            self.bit_depth,
            self.chroma,
            self.primaries,
            self.transfer,
            self.matrix,
            u8::from(self.full_range)
        )
    }
}

/// Parses a `vpcC` body (FullBox header included; version 1 only).
pub fn parse_vpcc(r: &mut Reader<'_>) -> Result<VpcC, Error> {
    let (version, _) = r.full_header()?;
    if version != 1 {
        return Err(r.unsupported(format!("vpcC version {version} (only 1)")));
    }
    let profile = r.u8()?;
    let level = r.u8()?;
    let b = r.u8()?;
    let v = VpcC {
        profile,
        level,
        bit_depth: b >> 4,
        chroma: (b >> 1) & 7,
        full_range: b & 1 == 1,
        primaries: r.u8()?,
        transfer: r.u8()?,
        matrix: r.u8()?,
    };
    if !matches!(v.bit_depth, 8 | 10 | 12) {
        return Err(r.invalid(format!("bitDepth {} is not 8, 10 or 12", v.bit_depth)));
    }
    if v.profile > 3 || v.chroma > 3 {
        return Err(r.invalid(format!(
            "profile {} / chromaSubsampling {} out of range",
            v.profile, v.chroma
        )));
    }
    Ok(v)
}

/// `av01.P.LLT.DD` from an `av1C` body.
pub fn av1_codec(r: &mut Reader<'_>) -> Result<String, Error> {
    let b0 = r.u8()?;
    if b0 != 0x81 {
        return Err(r.invalid(format!("marker/version byte {b0:#04x}, expected 0x81")));
    }
    let b1 = r.u8()?;
    let b2 = r.u8()?;
    let profile = b1 >> 5;
    let level = b1 & 0x1f;
    let tier = if b2 & 0x80 != 0 { 'H' } else { 'M' };
    let high = b2 & 0x40 != 0;
    let twelve = b2 & 0x20 != 0;
    let depth = match (high, twelve && profile == 2) {
        (false, _) => 8,
        (true, false) => 10,
        (true, true) => 12,
    };
    Ok(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

/// The fields of a `dOps` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DOps {
    /// Output channel count.
    pub channels: u8,
    /// Samples (at 48 kHz) to discard at the start.
    pub pre_skip: u16,
    /// The original input sample rate (informative).
    pub input_sample_rate: u32,
}

/// Parses a `dOps` body.
pub fn parse_dops(r: &mut Reader<'_>) -> Result<DOps, Error> {
    let version = r.u8()?;
    if version != 0 {
        return Err(r.invalid(format!("Version {version}, expected 0")));
    }
    let channels = r.u8()?;
    let pre_skip = r.u16()?;
    let input_sample_rate = r.u32()?;
    if channels == 0 {
        return Err(r.invalid("OutputChannelCount is 0"));
    }
    Ok(DOps {
        channels,
        pre_skip,
        input_sample_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rd(b: &[u8]) -> Reader<'_> {
        Reader::new(Path::new("t.mp4"), b, 0, "stsd/x")
    }

    #[test]
    fn avc_high_4_0() {
        let b = [1, 0x64, 0x00, 0x28, 0xff, 0xe1];
        assert_eq!(avc_codec(b"avc1", &mut rd(&b)).unwrap(), "avc1.640028");
        assert_eq!(
            avc_codec(b"avc3", &mut rd(&[1, 0x42, 0xc0, 0x0c])).unwrap(),
            "avc3.42c00c"
        );
        assert!(avc_codec(b"avc1", &mut rd(&[1, 0x64])).is_err());
    }

    #[test]
    fn hevc_main_3_1_reverses_compat_flags() {
        // general_profile_space 0, tier 0, profile 1 (Main); compat flags 0x60000000 (bits 1, 2);
        // constraint 0xB0 then zeros; level 93.
        let mut b = vec![1, 0x01, 0x60, 0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 93];
        assert_eq!(hevc_codec(b"hvc1", &mut rd(&b)).unwrap(), "hvc1.1.6.L93.B0");
        // Main 10, high tier, level 150, two constraint bytes.
        b = vec![1, 0x22, 0x20, 0, 0, 0, 0x90, 0x01, 0, 0, 0, 0, 150];
        assert_eq!(
            hevc_codec(b"hev1", &mut rd(&b)).unwrap(),
            "hev1.2.4.H150.90.1"
        );
    }

    fn esds_body(object_type: u8, asc: &[u8]) -> Vec<u8> {
        let mut dsi = vec![0x05, asc.len() as u8];
        dsi.extend_from_slice(asc);
        let mut dc = vec![0x04, (13 + dsi.len()) as u8, object_type, 0x15, 0, 0, 0];
        dc.extend_from_slice(&128_000u32.to_be_bytes());
        dc.extend_from_slice(&96_000u32.to_be_bytes());
        dc.extend_from_slice(&dsi);
        let mut es = vec![0x03, 0x80, 0x80, 0x80, (3 + dc.len()) as u8, 0, 1, 0];
        es.extend_from_slice(&dc);
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&es);
        b
    }

    #[test]
    fn esds_aac_lc_and_escape() {
        let b = esds_body(0x40, &[0x11, 0x90]);
        let e = parse_esds(&mut rd(&b)).unwrap();
        assert_eq!(e.codec(), "mp4a.40.2");
        assert_eq!(e.avg_bitrate, 96_000);
        // audioObjectType 31 escape: 32 + 6 bits (000010 -> 34).
        let b = esds_body(0x40, &[0xf8, 0x40]);
        assert_eq!(parse_esds(&mut rd(&b)).unwrap().codec(), "mp4a.40.34");
        let b = esds_body(0x6b, &[0x11, 0x90]);
        let err = parse_esds(&mut rd(&b)).unwrap_err().to_string();
        assert!(err.contains("0x6b") && err.contains("stsd/x"), "{err}");
        let b = esds_body(0x40, &[0x11, 0x90]);
        assert!(parse_esds(&mut rd(&b[..b.len() - 3])).is_err());
    }

    #[test]
    fn vp9_strings_and_levels() {
        let b = [1, 0, 0, 0, 0, 0, 0x82, 1, 1, 1, 0, 0];
        let v = parse_vpcc(&mut rd(&b)).unwrap();
        assert_eq!(v.codec(21), "vp09.00.21.08.01.01.01.01.00");
        assert_eq!(vp9_level(426, 240, 25_000), 20);
        assert_eq!(vp9_level(640, 360, 25_000), 21);
        assert_eq!(vp9_level(1920, 1080, 30_000), 40);
        assert_eq!(vp9_level(3840, 2160, 60_000), 51);
        let bad = [1, 0, 0, 0, 0, 0, 0x52, 1, 1, 1];
        assert!(parse_vpcc(&mut rd(&bad)).is_err());
    }

    #[test]
    fn av1_and_opus() {
        assert_eq!(
            av1_codec(&mut rd(&[0x81, 0x08, 0x0c, 0])).unwrap(),
            "av01.0.08M.08"
        );
        assert_eq!(
            av1_codec(&mut rd(&[0x81, 0x4d, 0xc0, 0])).unwrap(),
            "av01.2.13H.10"
        );
        assert!(av1_codec(&mut rd(&[0x01, 0, 0])).is_err());
        let d = [0, 2, 0x01, 0x38, 0, 0, 0xbb, 0x80, 0, 0, 0];
        let o = parse_dops(&mut rd(&d)).unwrap();
        assert_eq!(
            (o.channels, o.pre_skip, o.input_sample_rate),
            (2, 312, 48000)
        );
    }
}
