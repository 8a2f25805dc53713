//! The one walker over length-prefixed NAL unit samples (H.264 `avc1`/`avc3`, HEVC
//! `hvc1`/`hev1`) that builds their subsample maps (ISO/IEC 23001-7), with what both codecs'
//! slice header parsers share: the bit reader ([`Bits`], also used by [`super::vp9`]),
//! emulation-prevention removal (`unescape`) and the stored-byte span of a slice header.
//!
//! The walker reads each NAL unit's length field and first header byte (a few bytes per NAL
//! unit, through a `peek` callback, so mapping a track does not copy its sample data) and asks
//! the scheme's [`Policy`] how much of the NAL unit to protect:
//! - every NAL length field and NAL unit header stays clear, and so do non-VCL NAL units (SPS,
//!   PPS, SEI, AUD, ...) whole;
//! - `cenc` ([`Policy::WholeBlocks`]): in a VCL NAL unit the protected range is the largest
//!   whole number of 16-byte blocks at its end; the rest (header, the first bytes of the slice
//!   header, the partial block) stays clear, so a decryptor never handles a partial block. NAL
//!   units with less than one block of payload stay clear whole;
//! - `cbcs` ([`Policy::SliceHeaderClear`], §10.4.2): the NAL header and the slice header stay
//!   clear and the rest of each slice NAL unit is protected (the pattern leaves its trailing
//!   partial block clear); slices with under one block after the header stay clear whole.
//!   The header's length depends on parameter sets ([`SliceHeaders`]: [`super::h264`],
//!   [`super::hevc`]), read from the sample entry and updated by in-band ones.
//!
//! Ranges are counted over the stored bytes, emulation prevention bytes included, as the
//! standard requires; the bit parsing reads the unescaped RBSP. Clear runs longer than 65 535
//! bytes are split into several entries (`BytesOfClearData` is 16 bits); consecutive clear NAL
//! units merge into one clear run.

use super::subsample::{push, MapError, Peek, Subsample};

/// Most bytes of a slice NAL unit read to find its header's end.
const MAX_HEADER_READ: usize = 4096;

/// How a track's samples are split into NAL units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalFormat {
    /// Size of each NAL length prefix: 1, 2 or 4 bytes.
    pub length_size: usize,
    /// HEVC (2-byte NAL header, VCL types 0-31) rather than H.264 (1 byte, VCL types 1-5).
    pub hevc: bool,
}

impl NalFormat {
    fn header_len(self) -> usize {
        if self.hevc {
            2
        } else {
            1
        }
    }

    fn is_vcl(self, first: u8) -> bool {
        if self.hevc {
            (first >> 1) & 0x3f < 32
        } else {
            matches!(first & 0x1f, 1..=5)
        }
    }
}

/// Which bytes of a VCL NAL unit a scheme protects.
pub enum Policy<'a> {
    /// `cenc`: the whole 16-byte blocks at the end of every VCL NAL unit.
    WholeBlocks,
    /// `cbcs`: everything after the slice header, which stays clear; `params` follows the
    /// track's parameter sets.
    SliceHeaderClear(&'a mut dyn SliceHeaders),
}

/// What a NAL unit is to the `cbcs` map.
pub enum NalRole {
    /// A parameter set the slice headers depend on (read whole, [`SliceHeaders::add`]).
    ParamSet,
    /// A coded slice: its header stays clear, the rest is protected.
    Slice,
    /// A NAL unit the map cannot handle (the reason).
    Unsupported(String),
    /// Anything else: clear whole.
    Other,
}

/// The parameter-set state of a codec whose slice headers `cbcs` leaves clear.
pub trait SliceHeaders {
    /// The role of a NAL unit from its first header byte.
    fn role(&self, first: u8) -> NalRole;
    /// Takes a parameter set NAL unit (stored bytes, header included).
    fn add(&mut self, nal: &[u8]) -> Result<(), MapError>;
    /// Bytes of NAL unit header (1 for H.264, 2 for HEVC).
    fn nal_header_len(&self) -> usize;
    /// The length in bits of slice NAL unit `nal`'s header, NAL unit header included and
    /// counted in the RBSP, up to the first bit of slice data (byte aligned for CABAC and HEVC).
    fn slice_header_bits(&self, nal: &[u8]) -> Result<usize, MapError>;
    /// The stored bytes of slice NAL unit `nal` (a prefix of it is enough) up to the first
    /// whole byte of slice data, NAL header included: the byte holding the header's last bit
    /// stays clear (with CAVLC the first slice data bits share it), so protection starts on a
    /// byte boundary.
    fn slice_header_len(&self, nal: &[u8]) -> Result<usize, MapError> {
        let hl = self.nal_header_len();
        let bits = self.slice_header_bits(nal)?;
        // RBSP bytes after the NAL header holding the header (the last one perhaps partly);
        // at least one.
        let bytes = bits.saturating_sub(8 * hl).div_ceil(8).max(1);
        let last = stored_index(nal.get(hl..).unwrap_or_default(), bytes - 1)
            .ok_or_else(|| MapError("slice header runs past the end of the NAL unit".into()))?;
        Ok(hl + last + 1)
    }
}

/// The subsample map of one in-memory sample under `policy`. The entries cover the sample
/// exactly.
pub fn map(sample: &[u8], fmt: NalFormat, policy: &mut Policy) -> Result<Vec<Subsample>, MapError> {
    map_with(sample.len(), fmt, policy, &mut |pos, out| {
        out.copy_from_slice(&sample[pos..pos + out.len()]);
        Ok(())
    })
}

/// The subsample map of a `size`-byte sample that is not in memory: `peek(pos, buf)` fills `buf`
/// with the sample's bytes from `pos`. Reads each NAL unit's length field and first header
/// byte, and under [`Policy::SliceHeaderClear`] the parameter sets and slice headers.
pub fn map_with(
    size: usize,
    fmt: NalFormat,
    policy: &mut Policy,
    peek: &mut Peek<'_>,
) -> Result<Vec<Subsample>, MapError> {
    let mut out = Vec::new();
    let mut clear: u64 = 0;
    let mut pos = 0usize;
    let ls = fmt.length_size;
    let mut head = [0u8; 5];
    while pos < size {
        if size - pos < ls {
            return Err(MapError(format!(
                "NAL length field at byte {pos} runs past the end of the {size}-byte sample"
            )));
        }
        // The length field and, when present, the NAL header's first byte in one read.
        let n = (ls + 1).min(size - pos);
        peek(pos, &mut head[..n])?;
        let len = head[..ls]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        let body = pos + ls;
        if len > size - body {
            return Err(MapError(format!(
                "NAL unit at byte {pos} claims {len} bytes but only {} remain in the sample",
                size - body
            )));
        }
        let protected = match policy {
            Policy::WholeBlocks => {
                let hl = fmt.header_len();
                if len > hl && fmt.is_vcl(head[ls]) {
                    (len - hl) / 16 * 16
                } else {
                    0
                }
            }
            Policy::SliceHeaderClear(params) if len > 0 => {
                slice_protected(&mut **params, head[ls], body, len, peek)
                    .map_err(|e| MapError(format!("NAL unit at byte {pos}: {}", e.0)))?
            }
            Policy::SliceHeaderClear(_) => 0,
        };
        clear += (ls + len - protected) as u64;
        if protected > 0 {
            push(&mut out, &mut clear, protected as u32);
        }
        pos = body + len;
    }
    if clear > 0 {
        push(&mut out, &mut clear, 0);
    }
    Ok(out)
}

/// `cbcs`: the protected bytes of the `len`-byte NAL unit at `body` whose first byte is
/// `first`, taking in parameter sets on the way.
fn slice_protected(
    params: &mut dyn SliceHeaders,
    first: u8,
    body: usize,
    len: usize,
    peek: &mut Peek<'_>,
) -> Result<usize, MapError> {
    match params.role(first) {
        NalRole::ParamSet => {
            let mut nal = vec![0u8; len];
            peek(body, &mut nal)?;
            params.add(&nal)?;
            Ok(0)
        }
        NalRole::Slice => {
            // Most slice headers fit in a few dozen bytes: read more only when needed.
            let mut want = 64;
            let hl = loop {
                let mut nal = vec![0u8; len.min(want)];
                peek(body, &mut nal)?;
                match params.slice_header_len(&nal) {
                    Ok(hl) => break hl,
                    Err(_) if want < MAX_HEADER_READ && len > want => want *= 8,
                    Err(e) => return Err(e),
                }
            };
            Ok(if len - hl >= 16 { len - hl } else { 0 })
        }
        NalRole::Unsupported(why) => Err(MapError(why)),
        NalRole::Other => Ok(0),
    }
}

/// The parameter set syntax of a codec, as far as its slice header lengths need it.
pub trait ParamSyntax: Sized {
    /// What a slice header needs of an SPS.
    type Sps: Clone + std::fmt::Debug;
    /// What a slice header needs of a PPS.
    type Pps: Clone + std::fmt::Debug;
    /// Bytes of NAL unit header.
    const HEADER_LEN: usize;
    /// The codec, then the SPS and the PPS as errors name them (`H.264`, `H.264 SPS`, ...).
    const NAMES: [&'static str; 3];
    /// Bound and name of a PPS's first two fields: its own id, then its SPS's id.
    const PPS_IDS: [(u32, &'static str); 2];
    /// The role of a NAL unit from its first header byte.
    fn role(first: u8) -> NalRole;
    /// Whether parameter set NAL unit `first` (its first header byte) is an SPS, not a PPS.
    fn is_sps(first: u8) -> bool;
    /// Parses an SPS's RBSP into its id and what slice headers need.
    fn sps(r: &mut Bits) -> Result<(usize, Self::Sps), MapError>;
    /// Parses the rest of a PPS's RBSP, after [`ParamSyntax::PPS_IDS`].
    fn pps(r: &mut Bits) -> Result<Self::Pps, MapError>;
    /// The length in bits of slice NAL unit `nal`'s header with parameter sets `sets`
    /// ([`SliceHeaders::slice_header_bits`]).
    fn slice_header_bits(sets: &ParamSets<Self>, nal: &[u8]) -> Result<usize, MapError>;
}

/// A track's sequence and picture parameter sets by id ([`super::h264`], [`super::hevc`]);
/// each PPS keeps the id of the SPS it refers to.
#[derive(Debug, Clone)]
pub struct ParamSets<C: ParamSyntax> {
    sps: Vec<Option<C::Sps>>,
    pps: Vec<Option<(usize, C::Pps)>>,
}

impl<C: ParamSyntax> Default for ParamSets<C> {
    fn default() -> Self {
        ParamSets {
            sps: Vec::new(),
            pps: Vec::new(),
        }
    }
}

impl<C: ParamSyntax> ParamSets<C> {
    /// Takes a parameter set NAL unit (stored bytes, header included), replacing one of the
    /// same kind and id; other NAL units are ignored.
    pub fn add(&mut self, nal: &[u8]) -> Result<(), MapError> {
        match nal.first() {
            Some(&first) if nal.len() >= C::HEADER_LEN => match C::role(first) {
                NalRole::ParamSet if C::is_sps(first) => self.add_sps(nal),
                NalRole::ParamSet => self.add_pps(nal),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Takes SPS NAL unit `nal` (stored bytes, header included), replacing one of its id.
    fn add_sps(&mut self, nal: &[u8]) -> Result<(), MapError> {
        let (rbsp, _) = unescape(nal.get(C::HEADER_LEN..).unwrap_or_default());
        let (id, sps) = C::sps(&mut Bits::new(&rbsp, C::NAMES[1]))?;
        put(&mut self.sps, id, sps);
        Ok(())
    }

    /// Takes PPS NAL unit `nal` (stored bytes, header included), replacing one of its id.
    fn add_pps(&mut self, nal: &[u8]) -> Result<(), MapError> {
        let (rbsp, _) = unescape(nal.get(C::HEADER_LEN..).unwrap_or_default());
        let r = &mut Bits::new(&rbsp, C::NAMES[2]);
        let [(max_id, id_name), (max_sps, sps_name)] = C::PPS_IDS;
        let id = r.ue_max(max_id, id_name)? as usize;
        let sps_id = r.ue_max(max_sps, sps_name)? as usize;
        let pps = C::pps(r)?;
        put(&mut self.pps, id, (sps_id, pps));
        Ok(())
    }

    /// The SPS and PPS a slice naming PPS `pps_id` is parsed with.
    pub(crate) fn for_slice(&self, pps_id: usize) -> Result<(&C::Sps, &C::Pps), MapError> {
        let codec = C::NAMES[0];
        let (sps_id, pps) = self
            .pps
            .get(pps_id)
            .and_then(Option::as_ref)
            .ok_or_else(|| MapError(format!("{codec} slice refers to unknown PPS {pps_id}")))?;
        let sps = self
            .sps
            .get(*sps_id)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                MapError(format!(
                    "{codec} PPS {pps_id} refers to unknown SPS {sps_id}"
                ))
            })?;
        Ok((sps, pps))
    }
}

impl<C: ParamSyntax> SliceHeaders for ParamSets<C> {
    fn role(&self, first: u8) -> NalRole {
        C::role(first)
    }

    fn add(&mut self, nal: &[u8]) -> Result<(), MapError> {
        ParamSets::add(self, nal)
    }

    fn nal_header_len(&self) -> usize {
        C::HEADER_LEN
    }

    fn slice_header_bits(&self, nal: &[u8]) -> Result<usize, MapError> {
        C::slice_header_bits(self, nal)
    }
}

/// A reader of the parameter set arrays of a decoder configuration record (`avcC`, `hvcC`):
/// bytes, 16-bit counts and 16-bit-length-prefixed NAL units; running short is an error naming
/// the record.
pub(crate) struct ConfigRecord<'a> {
    b: &'a [u8],
    at: usize,
    name: &'static str,
}

impl<'a> ConfigRecord<'a> {
    /// A reader of record `b` (`name` in errors) from byte `at`.
    pub(crate) fn new(b: &'a [u8], name: &'static str, at: usize) -> Self {
        ConfigRecord { b, at, name }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MapError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let bytes = end.map(|e| &self.b[self.at..e]).ok_or_else(|| {
            MapError(format!(
                "{} of {} bytes is truncated",
                self.name,
                self.b.len()
            ))
        })?;
        self.at += n;
        Ok(bytes)
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Result<u8, MapError> {
        Ok(self.take(1)?[0])
    }

    /// The next big-endian 16-bit number.
    pub(crate) fn u16(&mut self) -> Result<u16, MapError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The next NAL unit, after its 16-bit length.
    pub(crate) fn nal(&mut self) -> Result<&'a [u8], MapError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

fn put<T: Clone>(sets: &mut Vec<Option<T>>, id: usize, set: T) {
    if sets.len() <= id {
        sets.resize(id + 1, None);
    }
    sets[id] = Some(set);
}

/// The RBSP of an escaped NAL unit prefix (emulation prevention bytes `00 00 03` → `00 00`
/// removed), and for each RBSP byte its index in the stored bytes.
pub(crate) fn unescape(nal: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(nal.len());
    let mut at = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for (i, &b) in nal.iter().enumerate() {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
        at.push(i);
    }
    (out, at)
}

/// The stored index of RBSP byte `rbsp` of `nal` (what [`unescape`]'s second list holds at
/// `rbsp`), found without allocating: the `cbcs` map asks it once per slice.
pub(crate) fn stored_index(nal: &[u8], rbsp: usize) -> Option<usize> {
    let mut zeros = 0;
    let mut n = 0;
    for (i, &b) in nal.iter().enumerate() {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        if n == rbsp {
            return Some(i);
        }
        n += 1;
    }
    None
}

/// A big-endian bit reader over header bytes; `what` names the structure in errors (`H.264
/// SPS`, `HEVC slice header`, `VP9 uncompressed header`).
pub struct Bits<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) what: &'static str,
}

impl<'a> Bits<'a> {
    /// A reader at the first bit of `b`.
    pub(crate) fn new(b: &'a [u8], what: &'static str) -> Self {
        Bits { b, pos: 0, what }
    }

    /// `u(n)`/`f(n)`: the next `n` bits (at most 32) as an unsigned number.
    pub(crate) fn u(&mut self, n: u32) -> Result<u32, MapError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.b.get(self.pos / 8).ok_or_else(|| {
                MapError(format!(
                    "{} runs past its {} bytes",
                    self.what,
                    self.b.len()
                ))
            })?;
            v = (v << 1) | u32::from(byte >> (7 - self.pos % 8) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    /// One bit as a flag.
    pub(crate) fn flag(&mut self) -> Result<bool, MapError> {
        Ok(self.u(1)? == 1)
    }

    /// `ue(v)`: an unsigned Exp-Golomb code.
    pub(crate) fn ue(&mut self) -> Result<u32, MapError> {
        let mut zeros = 0;
        while self.u(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(MapError(format!(
                    "{}: Exp-Golomb code longer than 32 bits",
                    self.what
                )));
            }
        }
        Ok(((1u64 << zeros) - 1 + u64::from(self.u(zeros)?)) as u32)
    }

    /// `se(v)`: a signed Exp-Golomb code.
    pub(crate) fn se(&mut self) -> Result<i32, MapError> {
        let k = self.ue()?;
        Ok(if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        })
    }

    /// `chroma_format_idc` and, for 4:4:4 (3), `separate_colour_plane_flag`, as H.264 and HEVC
    /// SPSs code them: `(chroma_format_idc, separate_colour_plane, ChromaArrayType)`.
    pub(crate) fn chroma_format(&mut self) -> Result<(u32, bool, u32), MapError> {
        let idc = self.ue_max(3, "chroma_format_idc")?;
        let separate = idc == 3 && self.flag()?;
        Ok((idc, separate, if separate { 0 } else { idc }))
    }

    /// The length in bits of a slice header read up to here, its NAL unit header
    /// (`nal_header_len` bytes) included and, when `aligned`, rounded up to a whole byte; an
    /// error when that runs past the bytes read.
    pub(crate) fn header_bits(
        &self,
        nal_header_len: usize,
        aligned: bool,
    ) -> Result<usize, MapError> {
        let bits = if aligned {
            self.pos.div_ceil(8) * 8
        } else {
            self.pos
        };
        if bits > self.b.len() * 8 {
            return Err(MapError(format!(
                "{} runs past the end of the NAL unit",
                self.what
            )));
        }
        Ok(8 * nal_header_len + bits)
    }

    /// `ue(v)` that must be at most `max` (ids, list sizes: bounds loops on untrusted input).
    pub(crate) fn ue_max(&mut self, max: u32, field: &str) -> Result<u32, MapError> {
        let v = self.ue()?;
        if v > max {
            return Err(MapError(format!(
                "{}: {field} {v} is over {max}",
                self.what
            )));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVC4: NalFormat = NalFormat {
        length_size: 4,
        hevc: false,
    };

    fn nal(header: u8, payload_len: usize, fill: u8) -> Vec<u8> {
        let mut v = ((payload_len + 1) as u32).to_be_bytes().to_vec();
        v.push(header);
        v.extend(std::iter::repeat_n(fill, payload_len));
        v
    }

    fn total(m: &[Subsample]) -> usize {
        m.iter()
            .map(|s| usize::from(s.clear) + s.protected as usize)
            .sum()
    }

    #[test]
    fn idr_slice_keeps_header_and_partial_block_clear() {
        // 4-byte length + 1-byte header + 100 payload bytes: 96 protected, 4+1+4 clear.
        let s = nal(0x65, 100, 0xaa);
        let m = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 9,
                protected: 96
            }]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn parameter_sets_and_sei_merge_into_the_next_clear_run() {
        let mut s = nal(0x67, 20, 1); // SPS
        s.extend(nal(0x68, 4, 2)); // PPS
        s.extend(nal(0x06, 30, 3)); // SEI
        s.extend(nal(0x65, 64, 4)); // IDR slice: exactly 4 blocks
        let m = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: (25 + 9 + 35 + 5) as u16,
                protected: 64
            }]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn short_slices_stay_clear() {
        // A slice with 15 payload bytes has no whole block to protect.
        let mut s = nal(0x41, 15, 7);
        s.extend(nal(0x41, 0, 0));
        let m = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: (20 + 5) as u16,
                protected: 0
            }]
        );
    }

    #[test]
    fn several_slices_per_frame_get_one_entry_each() {
        let mut s = nal(0x65, 40, 1);
        s.extend(nal(0x65, 33, 2));
        s.extend(nal(0x65, 16, 3));
        let m = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(
            m,
            vec![
                Subsample {
                    clear: 5 + 8,
                    protected: 32
                },
                Subsample {
                    clear: 5 + 1,
                    protected: 32
                },
                Subsample {
                    clear: 5,
                    protected: 16
                },
            ]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn emulation_prevention_bytes_count_as_stored_bytes() {
        // Payload with 00 00 03 sequences: ranges are over the stored (escaped) bytes.
        let payload = [
            0x88, 0, 0, 3, 1, 0, 0, 3, 0, 0x11, 0, 0, 3, 2, 9, 9, 9, 9, 9, 9,
        ];
        let mut s = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        s.push(0x25);
        s.extend_from_slice(&payload);
        let m = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 4 + 1 + 4,
                protected: 16
            }]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn long_clear_runs_split_at_16_bits() {
        let mut s = nal(0x06, 70_000, 0); // a huge SEI
        s.extend(nal(0x65, 32, 1));
        let m = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].clear, u16::MAX);
        assert_eq!(m[0].protected, 0);
        assert_eq!(m[1].protected, 32);
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn hevc_uses_two_byte_headers_and_its_vcl_types() {
        let f = NalFormat {
            length_size: 4,
            hevc: true,
        };
        // IDR_W_RADL (19) slice: header 0x26 0x01, 34 payload bytes -> 32 protected.
        let mut s = 36u32.to_be_bytes().to_vec();
        s.extend_from_slice(&[0x26, 0x01]);
        s.extend([5u8; 34]);
        // VPS (32) stays clear.
        let mut v = 6u32.to_be_bytes().to_vec();
        v.extend_from_slice(&[0x40, 0x01, 1, 2, 3, 4]);
        v.extend(s);
        let m = map(&v, f, &mut Policy::WholeBlocks).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 10 + 4 + 2 + 2,
                protected: 32
            }]
        );
    }

    #[test]
    fn truncated_nal_is_an_error_naming_the_byte() {
        let mut s = nal(0x65, 40, 1);
        s.truncate(30);
        let e = map(&s, AVC4, &mut Policy::WholeBlocks).unwrap_err();
        assert!(
            e.0.contains("byte 0") && e.0.contains("41 bytes"),
            "{}",
            e.0
        );
        let e = map(&[0, 0], AVC4, &mut Policy::WholeBlocks).unwrap_err();
        assert!(e.0.contains("length field"), "{}", e.0);
    }

    #[test]
    fn unescape_maps_rbsp_bytes_to_stored_bytes() {
        let (r, at) = unescape(&[0x11, 0, 0, 3, 1, 0, 0, 3, 0, 0x22]);
        assert_eq!(r, [0x11, 0, 0, 1, 0, 0, 0, 0x22]);
        assert_eq!(at, [0, 1, 2, 4, 5, 6, 8, 9]);
        let nal = [0x11, 0, 0, 3, 1, 0, 0, 3, 0, 0x22];
        for (k, want) in at.iter().enumerate() {
            assert_eq!(stored_index(&nal, k), Some(*want));
        }
        assert_eq!(stored_index(&nal, at.len()), None);
    }

    #[test]
    fn exp_golomb_codes() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3; then se of 00101 (4) = -2.
        let b = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let r = &mut Bits::new(&b, "test");
        assert_eq!(r.ue().unwrap(), 0);
        assert_eq!(r.ue().unwrap(), 1);
        assert_eq!(r.ue().unwrap(), 2);
        assert_eq!(r.ue().unwrap(), 3);
        assert_eq!(r.se().unwrap(), -2);
        assert!(r.ue().is_err());
    }
}
