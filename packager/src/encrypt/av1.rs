//! Subsample maps of AV1 samples (`av01`) per the AV1 Codec ISO Media File Format Binding
//! (§ Common Encryption): every OBU header and `obu_size` field stays clear; temporal
//! delimiter, sequence header, frame header, redundant frame header, metadata, padding (and
//! reserved) OBUs stay clear whole; in a frame OBU or tile group OBU the frame header and the
//! tile group header (and each `tile_size_minus_1` field) stay clear and each tile's
//! `decode_tile` bytes are protected:
//! - `cbcs`: one subsample per tile whose protected range is the whole tile (the pattern
//!   leaves its trailing partial block clear, so a tile under 16 bytes is a subsample that
//!   encrypts nothing);
//! - `cenc`: the protected range is the largest whole number of 16-byte blocks at the tile's
//!   end (the partial block at its start joins the clear run); a tile under 16 bytes is clear.
//!
//! Finding where the tile data starts needs the frame header's length, so the uncompressed
//! frame header (AV1 bitstream specification §5.9) is parsed in full from the sequence header
//! (`av1C` or in band, §5.5) and per-track decoder state ([`Av1State`]: each reference slot's
//! frame size, order hint, frame type and segment quantizer deltas, which the header's syntax
//! depends on). Pure functions over sample bytes, read through a `peek` callback; every read
//! is bounded and every error names the OBU (number and byte offset in the sample).

use super::nal::Bits;
use super::subsample::{push, MapError, Peek, Subsample};

/// Most bytes of an OBU payload read to parse a frame header (the syntax needs well under
/// 1 KiB: segmentation, global motion and film grain together are about 400 bytes).
const MAX_HEADER: usize = 2048;
/// Most bytes of a sequence header OBU (the syntax needs under 100 with 32 operating points).
const MAX_SEQUENCE_HEADER: usize = 1024;

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_TILE_GROUP: u8 = 4;
const OBU_FRAME: u8 = 6;
const OBU_REDUNDANT_FRAME_HEADER: u8 = 7;
const OBU_TILE_LIST: u8 = 8;

const KEY_FRAME: u32 = 0;
const INTER_FRAME: u32 = 1;
const INTRA_ONLY_FRAME: u32 = 2;
const SWITCH_FRAME: u32 = 3;
const PRIMARY_REF_NONE: u32 = 7;
/// `seq_force_screen_content_tools` / `seq_force_integer_mv` value meaning "per frame".
const SELECT: u32 = 2;

fn obu_name(t: u8) -> &'static str {
    match t {
        1 => "OBU_SEQUENCE_HEADER",
        2 => "OBU_TEMPORAL_DELIMITER",
        3 => "OBU_FRAME_HEADER",
        4 => "OBU_TILE_GROUP",
        5 => "OBU_METADATA",
        6 => "OBU_FRAME",
        7 => "OBU_REDUNDANT_FRAME_HEADER",
        8 => "OBU_TILE_LIST",
        15 => "OBU_PADDING",
        _ => "reserved OBU type",
    }
}

/// One operating point of the sequence header (what frame headers depend on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OperatingPoint {
    idc: u32,
    decoder_model_present: bool,
}

/// The fields of a sequence header OBU (§5.5) that frame headers depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceHeader {
    /// `seq_profile`.
    pub profile: u32,
    reduced_still_picture_header: bool,
    decoder_model_info_present: bool,
    equal_picture_interval: bool,
    buffer_removal_time_length: u32,
    frame_presentation_time_length: u32,
    operating_points: Vec<OperatingPoint>,
    frame_width_bits: u32,
    frame_height_bits: u32,
    /// `max_frame_width_minus_1 + 1`.
    pub max_width: u32,
    /// `max_frame_height_minus_1 + 1`.
    pub max_height: u32,
    frame_id_numbers_present: bool,
    delta_frame_id_length_minus_2: u32,
    additional_frame_id_length_minus_1: u32,
    use_128x128_superblock: bool,
    enable_warped_motion: bool,
    enable_order_hint: bool,
    enable_ref_frame_mvs: bool,
    force_screen_content_tools: u32,
    force_integer_mv: u32,
    order_hint_bits: u32,
    enable_superres: bool,
    enable_cdef: bool,
    enable_restoration: bool,
    mono_chrome: bool,
    subsampling_x: bool,
    subsampling_y: bool,
    separate_uv_delta_q: bool,
    film_grain_params_present: bool,
}

impl SequenceHeader {
    fn num_planes(&self) -> u32 {
        if self.mono_chrome {
            1
        } else {
            3
        }
    }
}

/// `su(n)`: an `n`-bit two's complement number.
fn su(r: &mut Bits, n: u32) -> Result<i32, MapError> {
    let v = r.u(n)? as i64;
    let sign = 1i64 << (n - 1);
    Ok(if v & sign != 0 { v - 2 * sign } else { v } as i32)
}

/// `ns(n)`: a non-symmetric unsigned number below `n` (`n` ≥ 1).
fn ns(r: &mut Bits, n: u32) -> Result<u32, MapError> {
    let w = 32 - n.leading_zeros(); // FloorLog2(n) + 1
    let m = (1u64 << w) - u64::from(n);
    let v = u64::from(r.u(w - 1)?);
    if v < m {
        return Ok(v as u32);
    }
    let extra = u64::from(r.u(1)?);
    Ok(((v << 1) - m + extra) as u32)
}

/// `uvlc()`.
fn uvlc(r: &mut Bits) -> Result<u32, MapError> {
    let mut zeros = 0u32;
    while !r.flag()? {
        zeros += 1;
    }
    if zeros >= 32 {
        return Ok(u32::MAX);
    }
    r.u(zeros)
}

/// `tile_log2(blk, target)`: the smallest `k` with `blk << k >= target`.
fn tile_log2(blk: u32, target: u32) -> u32 {
    let mut k = 0;
    while (u64::from(blk) << k) < u64::from(target) {
        k += 1;
    }
    k
}

/// Parses a sequence header OBU payload (§5.5.1).
pub fn parse_sequence_header(payload: &[u8]) -> Result<SequenceHeader, MapError> {
    let r = &mut Bits::new(payload, "AV1 sequence header");
    let mut s = SequenceHeader {
        profile: r.u(3)?,
        ..Default::default()
    };
    if s.profile > 2 {
        return Err(MapError(format!(
            "AV1 sequence header: seq_profile {} is not 0, 1 or 2",
            s.profile
        )));
    }
    r.u(1)?; // still_picture
    s.reduced_still_picture_header = r.flag()?;
    if s.reduced_still_picture_header {
        r.u(5)?; // seq_level_idx[0]
        s.operating_points.push(OperatingPoint::default());
    } else {
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info
            r.u(32)?;
            r.u(32)?;
            s.equal_picture_interval = r.flag()?;
            if s.equal_picture_interval {
                uvlc(r)?;
            }
            s.decoder_model_info_present = r.flag()?;
            if s.decoder_model_info_present {
                buffer_delay_length = r.u(5)? + 1;
                r.u(32)?;
                s.buffer_removal_time_length = r.u(5)? + 1;
                s.frame_presentation_time_length = r.u(5)? + 1;
            }
        }
        let initial_display_delay_present = r.flag()?;
        let count = r.u(5)? + 1;
        for _ in 0..count {
            let idc = r.u(12)?;
            if r.u(5)? > 7 {
                r.u(1)?; // seq_tier
            }
            let mut decoder_model_present = false;
            if s.decoder_model_info_present {
                decoder_model_present = r.flag()?;
                if decoder_model_present {
                    r.u(buffer_delay_length)?;
                    r.u(buffer_delay_length)?;
                    r.u(1)?;
                }
            }
            if initial_display_delay_present && r.flag()? {
                r.u(4)?;
            }
            s.operating_points.push(OperatingPoint {
                idc,
                decoder_model_present,
            });
        }
    }
    s.frame_width_bits = r.u(4)? + 1;
    s.frame_height_bits = r.u(4)? + 1;
    s.max_width = r.u(s.frame_width_bits)? + 1;
    s.max_height = r.u(s.frame_height_bits)? + 1;
    if !s.reduced_still_picture_header {
        s.frame_id_numbers_present = r.flag()?;
    }
    if s.frame_id_numbers_present {
        s.delta_frame_id_length_minus_2 = r.u(4)?;
        s.additional_frame_id_length_minus_1 = r.u(3)?;
    }
    s.use_128x128_superblock = r.flag()?;
    r.u(2)?; // enable_filter_intra, enable_intra_edge_filter
    if s.reduced_still_picture_header {
        s.force_screen_content_tools = SELECT;
        s.force_integer_mv = SELECT;
    } else {
        r.u(2)?; // enable_interintra_compound, enable_masked_compound
        s.enable_warped_motion = r.flag()?;
        r.u(1)?; // enable_dual_filter
        s.enable_order_hint = r.flag()?;
        if s.enable_order_hint {
            r.u(1)?; // enable_jnt_comp
            s.enable_ref_frame_mvs = r.flag()?;
        }
        s.force_screen_content_tools = if r.flag()? { SELECT } else { r.u(1)? };
        s.force_integer_mv = if s.force_screen_content_tools > 0 {
            if r.flag()? {
                SELECT
            } else {
                r.u(1)?
            }
        } else {
            SELECT
        };
        if s.enable_order_hint {
            s.order_hint_bits = r.u(3)? + 1;
        }
    }
    s.enable_superres = r.flag()?;
    s.enable_cdef = r.flag()?;
    s.enable_restoration = r.flag()?;
    // color_config
    let high_bitdepth = r.flag()?;
    let bit_depth = if s.profile == 2 && high_bitdepth {
        if r.flag()? {
            12
        } else {
            10
        }
    } else if high_bitdepth {
        10
    } else {
        8
    };
    s.mono_chrome = s.profile != 1 && r.flag()?;
    let (mut cp, mut tc, mut mc) = (2, 2, 2);
    if r.flag()? {
        cp = r.u(8)?;
        tc = r.u(8)?;
        mc = r.u(8)?;
    }
    if s.mono_chrome {
        r.u(1)?; // color_range
        s.subsampling_x = true;
        s.subsampling_y = true;
    } else {
        if cp == 1 && tc == 13 && mc == 0 {
            // sRGB: 4:4:4, full range.
        } else {
            r.u(1)?; // color_range
            match s.profile {
                0 => (s.subsampling_x, s.subsampling_y) = (true, true),
                1 => {}
                _ => {
                    if bit_depth == 12 {
                        s.subsampling_x = r.flag()?;
                        if s.subsampling_x {
                            s.subsampling_y = r.flag()?;
                        }
                    } else {
                        s.subsampling_x = true;
                    }
                }
            }
            if s.subsampling_x && s.subsampling_y {
                r.u(2)?; // chroma_sample_position
            }
        }
        s.separate_uv_delta_q = r.flag()?;
    }
    s.film_grain_params_present = r.flag()?;
    Ok(s)
}

/// What a reference slot holds that later frame headers read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RefSlot {
    frame_type: u32,
    upscaled_width: u32,
    frame_width: u32,
    frame_height: u32,
    order_hint: u32,
    /// Per segment, the `SEG_LVL_ALT_Q` feature value when enabled.
    alt_q: [Option<i32>; 8],
}

/// The tile layout of the frame whose tile groups are being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileInfo {
    /// `TileColsLog2`.
    pub cols_log2: u32,
    /// `TileRowsLog2`.
    pub rows_log2: u32,
    /// `TileCols * TileRows`.
    pub num_tiles: u32,
    /// `TileSizeBytes` (bytes of each `tile_size_minus_1` field).
    pub tile_size_bytes: u32,
}

/// Per-track decoder state the frame header syntax depends on.
#[derive(Debug, Clone, Default)]
pub struct Av1State {
    seq: Option<SequenceHeader>,
    refs: [RefSlot; 8],
    /// The tile layout of the frame whose header was read and whose last tile group was not
    /// (`SeenFrameHeader`).
    frame: Option<TileInfo>,
}

/// An OBU header and its place in the sample.
struct Obu {
    kind: u8,
    temporal_id: u32,
    spatial_id: u32,
    /// Bytes of header and `obu_size` field.
    header_len: usize,
    /// Bytes of payload.
    size: usize,
}

/// Reads the OBU header at `pos` of a `size`-byte buffer (`head`: its first bytes, up to 10).
fn obu_header(head: &[u8], pos: usize, size: usize) -> Result<Obu, MapError> {
    let b = head[0];
    if b & 0x80 != 0 {
        return Err(MapError("obu_forbidden_bit is set".into()));
    }
    let kind = (b >> 3) & 0xf;
    let ext = b & 4 != 0;
    let has_size = b & 2 != 0;
    let mut at = 1;
    let (mut temporal_id, mut spatial_id) = (0, 0);
    if ext {
        let e = *head
            .get(1)
            .ok_or_else(|| MapError("the OBU extension header runs past the sample".into()))?;
        temporal_id = u32::from(e >> 5);
        spatial_id = u32::from((e >> 3) & 3);
        at = 2;
    }
    let payload = if has_size {
        let mut v = 0u64;
        let mut i = 0;
        loop {
            let byte = *head
                .get(at + i)
                .ok_or_else(|| MapError("obu_size runs past the end of the sample".into()))?;
            v |= u64::from(byte & 0x7f) << (7 * i);
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if i == 8 {
                return Err(MapError("obu_size is longer than 8 bytes".into()));
            }
        }
        at += i;
        v
    } else {
        (size - pos).saturating_sub(at) as u64
    };
    let left = (size - pos).saturating_sub(at) as u64;
    if pos + at > size || payload > left {
        return Err(MapError(format!(
            "obu_size {payload} runs past the end of the {size}-byte sample ({left} bytes left)"
        )));
    }
    Ok(Obu {
        kind,
        temporal_id,
        spatial_id,
        header_len: at,
        size: payload as usize,
    })
}

impl Av1State {
    /// The state of a track whose sample entry's `av1C` payload is `av1c` (its configOBUs
    /// give the sequence header; samples may carry one too).
    pub fn from_av1c(av1c: Option<&[u8]>) -> Result<Self, MapError> {
        let mut st = Av1State::default();
        let Some(c) = av1c else {
            return Ok(st);
        };
        if c.len() < 4 || c[0] != 0x81 {
            return Err(MapError(
                "av1C: not marker 1, version 1 (first byte 0x81)".into(),
            ));
        }
        let obus = &c[4..];
        let mut pos = 0;
        while pos < obus.len() {
            let o = obu_header(&obus[pos..obus.len().min(pos + 10)], pos, obus.len())
                .map_err(|e| MapError(format!("av1C configOBUs at byte {pos}: {}", e.0)))?;
            let p = pos + o.header_len;
            if o.kind == OBU_SEQUENCE_HEADER {
                st.seq = Some(
                    parse_sequence_header(&obus[p..p + o.size])
                        .map_err(|e| MapError(format!("av1C configOBUs: {}", e.0)))?,
                );
            }
            pos = p + o.size;
        }
        Ok(st)
    }

    /// The sequence header in force, if any.
    pub fn sequence_header(&self) -> Option<&SequenceHeader> {
        self.seq.as_ref()
    }
}

/// Frame size state while reading a frame header.
#[derive(Debug, Clone, Copy, Default)]
struct FrameSize {
    width: u32,
    height: u32,
    upscaled: u32,
}

fn superres(r: &mut Bits, s: &SequenceHeader, fs: &mut FrameSize) -> Result<(), MapError> {
    fs.upscaled = fs.width;
    if s.enable_superres && r.flag()? {
        let denom = r.u(3)? + 9;
        fs.width = (fs.upscaled * 8 + denom / 2) / denom;
    }
    Ok(())
}

fn frame_size(
    r: &mut Bits,
    s: &SequenceHeader,
    override_flag: bool,
    fs: &mut FrameSize,
) -> Result<(), MapError> {
    if override_flag {
        fs.width = r.u(s.frame_width_bits)? + 1;
        fs.height = r.u(s.frame_height_bits)? + 1;
    } else {
        fs.width = s.max_width;
        fs.height = s.max_height;
    }
    superres(r, s, fs)?;
    // render_size
    if r.flag()? {
        r.u(32)?;
    }
    Ok(())
}

fn tile_info(r: &mut Bits, s: &SequenceHeader, fs: &FrameSize) -> Result<TileInfo, MapError> {
    let mi_cols = 2 * fs.width.div_ceil(8);
    let mi_rows = 2 * fs.height.div_ceil(8);
    let sb_shift = if s.use_128x128_superblock { 5 } else { 4 };
    let sb_cols = (mi_cols + (1 << sb_shift) - 1) >> sb_shift;
    let sb_rows = (mi_rows + (1 << sb_shift) - 1) >> sb_shift;
    let sb_size = sb_shift + 2;
    let max_tile_width_sb = 4096 >> sb_size;
    let mut max_tile_area_sb = (4096 * 2304) >> (2 * sb_size);
    let min_log2_cols = tile_log2(max_tile_width_sb, sb_cols);
    let max_log2_cols = tile_log2(1, sb_cols.min(64));
    let max_log2_rows = tile_log2(1, sb_rows.min(64));
    let min_log2_tiles = min_log2_cols.max(tile_log2(max_tile_area_sb, sb_rows * sb_cols));
    let (cols, rows, cols_log2, rows_log2);
    if r.flag()? {
        let mut cl = min_log2_cols;
        while cl < max_log2_cols && r.flag()? {
            cl += 1;
        }
        let w = (sb_cols + (1 << cl) - 1) >> cl;
        cols = sb_cols.div_ceil(w);
        let mut rl = min_log2_tiles.saturating_sub(cl);
        while rl < max_log2_rows && r.flag()? {
            rl += 1;
        }
        let h = (sb_rows + (1 << rl) - 1) >> rl;
        rows = sb_rows.div_ceil(h);
        (cols_log2, rows_log2) = (cl, rl);
    } else {
        let (mut widest, mut start, mut i) = (0, 0, 0);
        while start < sb_cols {
            let size = ns(r, (sb_cols - start).min(max_tile_width_sb))? + 1;
            widest = widest.max(size);
            start += size;
            i += 1;
        }
        cols = i;
        cols_log2 = tile_log2(1, cols);
        max_tile_area_sb = if min_log2_tiles > 0 {
            (sb_rows * sb_cols) >> (min_log2_tiles + 1)
        } else {
            sb_rows * sb_cols
        };
        let max_h = (max_tile_area_sb / widest).max(1);
        (start, i) = (0, 0);
        while start < sb_rows {
            start += ns(r, (sb_rows - start).min(max_h))? + 1;
            i += 1;
        }
        rows = i;
        rows_log2 = tile_log2(1, rows);
    }
    let mut tile_size_bytes = 4;
    if cols_log2 > 0 || rows_log2 > 0 {
        r.u(cols_log2 + rows_log2)?; // context_update_tile_id
        tile_size_bytes = r.u(2)? + 1;
    }
    Ok(TileInfo {
        cols_log2,
        rows_log2,
        num_tiles: cols * rows,
        tile_size_bytes,
    })
}

/// `decode_subexp(num_syms)`, for its length only.
fn subexp(r: &mut Bits, num_syms: u32) -> Result<(), MapError> {
    let (mut i, mut mk) = (0u32, 0u32);
    loop {
        let b2 = if i > 0 { 3 + i - 1 } else { 3 };
        let a = 1u32 << b2;
        if num_syms <= mk + 3 * a {
            ns(r, num_syms - mk)?;
            return Ok(());
        }
        if r.flag()? {
            i += 1;
            mk += a;
        } else {
            r.u(b2)?;
            return Ok(());
        }
    }
}

/// The relative distance of two order hints (`get_relative_dist`).
fn relative_dist(s: &SequenceHeader, a: u32, b: u32) -> i64 {
    if !s.enable_order_hint {
        return 0;
    }
    let diff = i64::from(a) - i64::from(b);
    let m = 1i64 << (s.order_hint_bits - 1);
    (diff & (m - 1)) - (diff & m)
}

/// Whether `skip_mode_present` is coded (`skipModeAllowed`, §5.9.22).
fn skip_mode_allowed(s: &SequenceHeader, refs: &[RefSlot; 8], idx: &[usize; 7], hint: u32) -> bool {
    let (mut fwd, mut bwd): (Option<u32>, Option<u32>) = (None, None);
    for &i in idx {
        let h = refs[i].order_hint;
        if relative_dist(s, h, hint) < 0 {
            if fwd.is_none_or(|f| relative_dist(s, h, f) > 0) {
                fwd = Some(h);
            }
        } else if relative_dist(s, h, hint) > 0 && bwd.is_none_or(|b| relative_dist(s, h, b) < 0) {
            bwd = Some(h);
        }
    }
    let Some(f) = fwd else {
        return false;
    };
    if bwd.is_some() {
        return true;
    }
    idx.iter()
        .any(|&i| relative_dist(s, refs[i].order_hint, f) < 0)
}

/// Parses an uncompressed frame header (§5.9.2) from `r`, updating the reference slots.
/// `None` for `show_existing_frame` (no tile data follows).
fn frame_header(
    r: &mut Bits,
    s: &SequenceHeader,
    refs: &mut [RefSlot; 8],
    temporal_id: u32,
    spatial_id: u32,
) -> Result<Option<TileInfo>, MapError> {
    let id_len = s.additional_frame_id_length_minus_1 + s.delta_frame_id_length_minus_2 + 3;
    let (frame_type, show_frame, showable, error_resilient);
    if s.reduced_still_picture_header {
        (frame_type, show_frame, showable, error_resilient) = (KEY_FRAME, true, false, true);
    } else {
        if r.flag()? {
            // show_existing_frame
            let idx = r.u(3)? as usize;
            if s.decoder_model_info_present && !s.equal_picture_interval {
                r.u(s.frame_presentation_time_length)?;
            }
            if s.frame_id_numbers_present {
                r.u(id_len)?;
            }
            if refs[idx].frame_type == KEY_FRAME {
                // The shown key frame refreshes every slot (frame loading process).
                let slot = refs[idx];
                refs.iter_mut().for_each(|x| *x = slot);
            }
            return Ok(None);
        }
        frame_type = r.u(2)?;
        show_frame = r.flag()?;
        if show_frame && s.decoder_model_info_present && !s.equal_picture_interval {
            r.u(s.frame_presentation_time_length)?;
        }
        showable = if show_frame {
            frame_type != KEY_FRAME
        } else {
            r.flag()?
        };
        error_resilient =
            frame_type == SWITCH_FRAME || (frame_type == KEY_FRAME && show_frame) || r.flag()?;
    }
    let intra = frame_type == KEY_FRAME || frame_type == INTRA_ONLY_FRAME;
    if frame_type == KEY_FRAME && show_frame {
        refs.iter_mut().for_each(|x| x.order_hint = 0);
    }
    let disable_cdf_update = r.flag()?;
    let allow_sct = if s.force_screen_content_tools == SELECT {
        r.u(1)?
    } else {
        s.force_screen_content_tools
    };
    let mut force_integer_mv = 0;
    if allow_sct != 0 {
        force_integer_mv = if s.force_integer_mv == SELECT {
            r.u(1)?
        } else {
            s.force_integer_mv
        };
    }
    if intra {
        force_integer_mv = 1;
    }
    if s.frame_id_numbers_present {
        r.u(id_len)?; // current_frame_id
    }
    let size_override = if frame_type == SWITCH_FRAME {
        true
    } else if s.reduced_still_picture_header {
        false
    } else {
        r.flag()?
    };
    let order_hint = r.u(s.order_hint_bits)?;
    let primary_ref_frame = if intra || error_resilient {
        PRIMARY_REF_NONE
    } else {
        r.u(3)?
    };
    if s.decoder_model_info_present && r.flag()? {
        for op in &s.operating_points {
            if op.decoder_model_present {
                let in_t = (op.idc >> temporal_id) & 1 == 1;
                let in_s = (op.idc >> (spatial_id + 8)) & 1 == 1;
                if op.idc == 0 || (in_t && in_s) {
                    r.u(s.buffer_removal_time_length)?;
                }
            }
        }
    }
    let refresh = if frame_type == SWITCH_FRAME || (frame_type == KEY_FRAME && show_frame) {
        0xff
    } else {
        r.u(8)?
    };
    if (!intra || refresh != 0xff) && error_resilient && s.enable_order_hint {
        for slot in refs.iter_mut() {
            let h = r.u(s.order_hint_bits)?;
            if h != slot.order_hint {
                *slot = RefSlot {
                    order_hint: h,
                    ..RefSlot::default()
                };
            }
        }
    }
    let mut fs = FrameSize::default();
    let mut allow_intrabc = false;
    let mut ref_idx = [0usize; 7];
    let mut allow_hp = false;
    if intra {
        frame_size(r, s, size_override, &mut fs)?;
        if allow_sct != 0 && fs.upscaled == fs.width {
            allow_intrabc = r.flag()?;
        }
    } else {
        if s.enable_order_hint && r.flag()? {
            return Err(MapError(
                "frame_refs_short_signaling is not supported by the packager".into(),
            ));
        }
        for i in &mut ref_idx {
            *i = r.u(3)? as usize;
            if s.frame_id_numbers_present {
                r.u(s.delta_frame_id_length_minus_2 + 2)?;
            }
        }
        let mut found = false;
        if size_override && !error_resilient {
            for &i in &ref_idx {
                if r.flag()? {
                    let slot = refs[i];
                    fs.upscaled = slot.upscaled_width;
                    fs.width = slot.upscaled_width;
                    fs.height = slot.frame_height;
                    found = true;
                    break;
                }
            }
        }
        if found {
            superres(r, s, &mut fs)?;
        } else {
            frame_size(r, s, size_override, &mut fs)?;
        }
        allow_hp = force_integer_mv == 0 && r.flag()?;
        if !r.flag()? {
            r.u(2)?; // interpolation_filter
        }
        r.u(1)?; // is_motion_mode_switchable
        if !error_resilient && s.enable_ref_frame_mvs {
            r.u(1)?; // use_ref_frame_mvs
        }
    }
    if fs.width == 0 || fs.height == 0 {
        return Err(MapError(
            "the frame takes its size from a reference slot no frame has filled".into(),
        ));
    }
    if !(s.reduced_still_picture_header || disable_cdf_update) {
        r.u(1)?; // disable_frame_end_update_cdf
    }
    let tiles = tile_info(r, s, &fs)?;
    // quantization_params
    let base_q_idx = r.u(8)? as i32;
    let delta_q = |r: &mut Bits| -> Result<i32, MapError> {
        if r.flag()? {
            su(r, 7)
        } else {
            Ok(0)
        }
    };
    let ydc = delta_q(r)?;
    let (mut udc, mut uac, mut vdc, mut vac) = (0, 0, 0, 0);
    if s.num_planes() > 1 {
        let diff_uv = s.separate_uv_delta_q && r.flag()?;
        udc = delta_q(r)?;
        uac = delta_q(r)?;
        (vdc, vac) = if diff_uv {
            (delta_q(r)?, delta_q(r)?)
        } else {
            (udc, uac)
        };
    }
    if r.flag()? {
        // using_qmatrix: qm_y, qm_u, qm_v
        r.u(if s.separate_uv_delta_q { 12 } else { 8 })?;
    }
    // segmentation_params
    let mut alt_q = [None; 8];
    if r.flag()? {
        let update_data = if primary_ref_frame == PRIMARY_REF_NONE {
            true
        } else {
            if r.flag()? {
                r.u(1)?; // segmentation_temporal_update
            }
            r.flag()?
        };
        if update_data {
            const BITS: [u32; 8] = [8, 6, 6, 6, 6, 3, 0, 0];
            for q in &mut alt_q {
                for (j, bits) in BITS.iter().enumerate() {
                    if r.flag()? {
                        let v = if j < 5 {
                            su(r, 1 + bits)?
                        } else {
                            r.u(*bits)? as i32
                        };
                        if j == 0 {
                            *q = Some(v.clamp(-255, 255));
                        }
                    }
                }
            }
        } else {
            alt_q = refs[ref_idx[primary_ref_frame as usize]].alt_q;
        }
    }
    // delta_q_params, delta_lf_params
    if base_q_idx > 0 && r.flag()? {
        r.u(2)?; // delta_q_res
        if !allow_intrabc && r.flag()? {
            r.u(3)?; // delta_lf_res, delta_lf_multi
        }
    }
    let coded_lossless = alt_q.iter().all(|q| {
        let qindex = q.map_or(base_q_idx, |d| (base_q_idx + d).clamp(0, 255));
        qindex == 0 && ydc == 0 && udc == 0 && uac == 0 && vdc == 0 && vac == 0
    });
    let all_lossless = coded_lossless && fs.width == fs.upscaled;
    // loop_filter_params
    if !(coded_lossless || allow_intrabc) {
        let l0 = r.u(6)?;
        let l1 = r.u(6)?;
        if s.num_planes() > 1 && (l0 != 0 || l1 != 0) {
            r.u(12)?;
        }
        r.u(3)?; // loop_filter_sharpness
        if r.flag()? && r.flag()? {
            for _ in 0..10 {
                if r.flag()? {
                    r.u(7)?;
                }
            }
        }
    }
    // cdef_params
    if !(coded_lossless || allow_intrabc || !s.enable_cdef) {
        r.u(2)?; // cdef_damping_minus_3
        let bits = r.u(2)?;
        for _ in 0..(1 << bits) {
            r.u(if s.num_planes() > 1 { 12 } else { 6 })?;
        }
    }
    // lr_params
    if !(all_lossless || allow_intrabc || !s.enable_restoration) {
        let (mut uses_lr, mut chroma_lr) = (false, false);
        for i in 0..s.num_planes() {
            if r.u(2)? != 0 {
                uses_lr = true;
                chroma_lr |= i > 0;
            }
        }
        if uses_lr {
            // lr_unit_shift, then lr_unit_extra_shift when set with 64x64 superblocks.
            if r.flag()? && !s.use_128x128_superblock {
                r.u(1)?;
            }
            if s.subsampling_x && s.subsampling_y && chroma_lr {
                r.u(1)?; // lr_uv_shift
            }
        }
    }
    if !coded_lossless {
        r.u(1)?; // tx_mode_select
    }
    let reference_select = !intra && r.flag()?;
    if reference_select && s.enable_order_hint && skip_mode_allowed(s, refs, &ref_idx, order_hint) {
        r.u(1)?; // skip_mode_present
    }
    if !(intra || error_resilient || !s.enable_warped_motion) {
        r.u(1)?; // allow_warped_motion
    }
    r.u(1)?; // reduced_tx_set
             // global_motion_params
    if !intra {
        for _ in 0..7 {
            // 0 identity, 1 translation, 2 rotzoom, 3 affine
            let ty = if !r.flag()? {
                0
            } else if r.flag()? {
                2
            } else if r.flag()? {
                1
            } else {
                3
            };
            let param = |r: &mut Bits, idx: u32| -> Result<(), MapError> {
                let abs_bits = if idx < 2 && ty == 1 {
                    9 - u32::from(!allow_hp)
                } else {
                    12
                };
                subexp(r, 2 * (1 << abs_bits) + 1)
            };
            if ty >= 2 {
                param(r, 2)?;
                param(r, 3)?;
                if ty == 3 {
                    param(r, 4)?;
                    param(r, 5)?;
                }
            }
            if ty >= 1 {
                param(r, 0)?;
                param(r, 1)?;
            }
        }
    }
    // film_grain_params
    if s.film_grain_params_present && (show_frame || showable) && r.flag()? {
        r.u(16)?; // grain_seed
        let update = frame_type != INTER_FRAME || r.flag()?;
        if !update {
            r.u(3)?; // film_grain_params_ref_idx
        } else {
            let ny = r.u(4)?;
            for _ in 0..ny {
                r.u(16)?;
            }
            let from_luma = !s.mono_chrome && r.flag()?;
            let (mut ncb, mut ncr) = (0, 0);
            if !(s.mono_chrome || from_luma || (s.subsampling_x && s.subsampling_y && ny == 0)) {
                ncb = r.u(4)?;
                for _ in 0..ncb {
                    r.u(16)?;
                }
                ncr = r.u(4)?;
                for _ in 0..ncr {
                    r.u(16)?;
                }
            }
            r.u(2)?; // grain_scaling_minus_8
            let lag = r.u(2)?;
            let luma = 2 * lag * (lag + 1);
            let chroma = if ny > 0 {
                for _ in 0..luma {
                    r.u(8)?;
                }
                luma + 1
            } else {
                luma
            };
            for n in [ncb, ncr] {
                if from_luma || n > 0 {
                    for _ in 0..chroma {
                        r.u(8)?;
                    }
                }
            }
            r.u(4)?; // ar_coeff_shift_minus_6, grain_scale_shift
            for n in [ncb, ncr] {
                if n > 0 {
                    r.u(25)?; // mult, luma_mult, offset
                }
            }
            r.u(2)?; // overlap_flag, clip_to_restricted_range
        }
    }
    for (i, slot) in refs.iter_mut().enumerate() {
        if refresh >> i & 1 == 1 {
            *slot = RefSlot {
                frame_type,
                upscaled_width: fs.upscaled,
                frame_width: fs.width,
                frame_height: fs.height,
                order_hint,
                alt_q,
            };
        }
    }
    Ok(Some(tiles))
}

/// Where a sample's map is being built: entries so far and the clear bytes pending.
struct Out {
    map: Vec<Subsample>,
    clear: u64,
    cbcs: bool,
}

impl Out {
    /// One tile's `decode_tile` bytes.
    fn tile(&mut self, len: u64) {
        if self.cbcs {
            push(&mut self.map, &mut self.clear, len as u32);
        } else {
            let protected = len / 16 * 16;
            self.clear += len - protected;
            if protected > 0 {
                push(&mut self.map, &mut self.clear, protected as u32);
            }
        }
    }
}

/// Reads the tile group of `len` bytes at `pos` (its header, tile sizes) and maps its tiles.
fn tile_group(
    st: &mut Av1State,
    pos: usize,
    len: usize,
    out: &mut Out,
    peek: &mut Peek<'_>,
) -> Result<(), MapError> {
    let Some(t) = st.frame else {
        return Err(MapError(
            "a tile group without a frame header before it".into(),
        ));
    };
    let mut head = [0u8; 4];
    let n = len.min(4);
    peek(pos, &mut head[..n])?;
    let r = &mut Bits::new(&head[..n], "AV1 tile group header");
    let (mut start, mut end) = (0, t.num_tiles - 1);
    if t.num_tiles > 1 && r.flag()? {
        let bits = t.cols_log2 + t.rows_log2;
        start = r.u(bits)?;
        end = r.u(bits)?;
    }
    if start > end || end >= t.num_tiles {
        return Err(MapError(format!(
            "tile group tg_start {start} tg_end {end} with {} tiles",
            t.num_tiles
        )));
    }
    let header = r.pos.div_ceil(8) as u64;
    out.clear += header;
    let mut at = (pos as u64) + header;
    let stop = (pos + len) as u64;
    let tsb = t.tile_size_bytes as usize;
    for k in start..=end {
        let size = if k == end {
            stop.saturating_sub(at)
        } else {
            if at + tsb as u64 > stop {
                return Err(MapError(format!(
                    "tile {k}'s tile_size_minus_1 runs past the end of the OBU"
                )));
            }
            let mut b = [0u8; 4];
            peek(at as usize, &mut b[..tsb])?;
            at += tsb as u64;
            out.clear += tsb as u64;
            u64::from(u32::from_le_bytes(b)) + 1
        };
        if size == 0 || at + size > stop {
            return Err(MapError(format!(
                "tile {k} of {size} bytes runs past the end of the OBU ({} bytes left)",
                stop.saturating_sub(at)
            )));
        }
        out.tile(size);
        at += size;
    }
    if end == t.num_tiles - 1 {
        st.frame = None;
    }
    Ok(())
}

/// Reads up to [`MAX_HEADER`] bytes of the OBU payload at `pos` and parses the frame header
/// there; returns its length in bits.
fn read_frame_header(
    st: &mut Av1State,
    obu: &Obu,
    pos: usize,
    peek: &mut Peek<'_>,
) -> Result<usize, MapError> {
    let s = st
        .seq
        .as_ref()
        .ok_or_else(|| MapError("a frame header before any sequence header".into()))?;
    let n = obu.size.min(MAX_HEADER);
    let mut head = vec![0u8; n];
    peek(pos, &mut head)?;
    let r = &mut Bits::new(&head, "AV1 frame header");
    let tiles = frame_header(r, s, &mut st.refs, obu.temporal_id, obu.spatial_id).map_err(|e| {
        if n < obu.size && r.pos >= 8 * n {
            MapError(format!("frame header longer than {MAX_HEADER} bytes"))
        } else {
            e
        }
    })?;
    st.frame = tiles;
    Ok(r.pos)
}

/// The subsample map of one AV1 sample of `size` bytes read through `peek`, for `cbcs` or
/// (`cbcs` false) `cenc`.
pub fn map_with(
    size: usize,
    st: &mut Av1State,
    cbcs: bool,
    peek: &mut Peek<'_>,
) -> Result<Vec<Subsample>, MapError> {
    let mut out = Out {
        map: Vec::new(),
        clear: 0,
        cbcs,
    };
    let mut pos = 0usize;
    let mut k = 0usize;
    let mut head = [0u8; 10];
    while pos < size {
        k += 1;
        let n = (size - pos).min(10);
        peek(pos, &mut head[..n])?;
        let at = |e: MapError, kind: Option<u8>| {
            MapError(format!(
                "OBU {k}{} at byte {pos}: {}",
                kind.map(|t| format!(" ({})", obu_name(t)))
                    .unwrap_or_default(),
                e.0
            ))
        };
        let obu = obu_header(&head[..n], pos, size).map_err(|e| at(e, None))?;
        let p = pos + obu.header_len;
        out.clear += obu.header_len as u64;
        let kind = Some(obu.kind);
        match obu.kind {
            OBU_SEQUENCE_HEADER => {
                if obu.size > MAX_SEQUENCE_HEADER {
                    return Err(at(
                        MapError(format!("{} bytes is too long", obu.size)),
                        kind,
                    ));
                }
                let mut b = vec![0u8; obu.size];
                peek(p, &mut b)?;
                st.seq = Some(parse_sequence_header(&b).map_err(|e| at(e, kind))?);
                out.clear += obu.size as u64;
            }
            OBU_FRAME_HEADER if st.frame.is_none() => {
                read_frame_header(st, &obu, p, peek).map_err(|e| at(e, kind))?;
                out.clear += obu.size as u64;
            }
            OBU_FRAME => {
                if st.frame.is_some() {
                    return Err(at(
                        MapError("a frame OBU while the previous frame lacks tile groups".into()),
                        kind,
                    ));
                }
                let bits = read_frame_header(st, &obu, p, peek).map_err(|e| at(e, kind))?;
                if st.frame.is_none() {
                    return Err(at(
                        MapError("show_existing_frame in a frame OBU".into()),
                        kind,
                    ));
                }
                let hb = bits.div_ceil(8);
                if hb > obu.size {
                    return Err(at(
                        MapError("the frame header runs past the end of the OBU".into()),
                        kind,
                    ));
                }
                out.clear += hb as u64;
                tile_group(st, p + hb, obu.size - hb, &mut out, peek).map_err(|e| at(e, kind))?;
            }
            OBU_TILE_GROUP => {
                tile_group(st, p, obu.size, &mut out, peek).map_err(|e| at(e, kind))?;
            }
            OBU_TILE_LIST => {
                return Err(at(
                    MapError("tile list OBUs are not supported in ISOBMFF".into()),
                    kind,
                ))
            }
            // Frame header copies (a frame header OBU within a frame's tile groups).
            OBU_FRAME_HEADER | OBU_REDUNDANT_FRAME_HEADER => out.clear += obu.size as u64,
            // Temporal delimiter, metadata, padding, reserved types: clear whole.
            _ => out.clear += obu.size as u64,
        }
        pos = p + obu.size;
    }
    if out.clear > 0 || out.map.is_empty() {
        push(&mut out.map, &mut out.clear, 0);
    }
    Ok(out.map)
}

/// [`map_with`] over an in-memory sample.
pub fn map(sample: &[u8], st: &mut Av1State, cbcs: bool) -> Result<Vec<Subsample>, MapError> {
    map_with(sample.len(), st, cbcs, &mut |pos, out| {
        let s = sample
            .get(pos..pos + out.len())
            .ok_or_else(|| MapError(format!("read past the {}-byte sample", sample.len())))?;
        out.copy_from_slice(s);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six temporal units (256x128, 2x2 tiles, key frames 0 and 3) encoded by
    /// libaom through ffmpeg (`-f obu`, low-overhead format: each unit starts with a temporal
    /// delimiter; the key frames carry the sequence header in band).
    const TINY: &[u8] = include_bytes!("testdata/av1-2x2-tiles.obu");

    /// Splits `TINY` into temporal units at each temporal delimiter OBU.
    fn units() -> Vec<&'static [u8]> {
        let mut starts = Vec::new();
        let mut pos = 0;
        while pos < TINY.len() {
            let o = obu_header(&TINY[pos..TINY.len().min(pos + 10)], pos, TINY.len()).unwrap();
            if o.kind == 2 {
                starts.push(pos);
            }
            pos += o.header_len + o.size;
        }
        starts.push(TINY.len());
        starts.windows(2).map(|w| &TINY[w[0]..w[1]]).collect()
    }

    fn total(m: &[Subsample]) -> usize {
        m.iter()
            .map(|s| usize::from(s.clear) + s.protected as usize)
            .sum()
    }

    /// Frame header bytes (payload, byte alignment included) of each unit's frame OBU, from
    /// ffmpeg's `trace_headers` (the bit where "Tile Group" starts, less the 3-byte OBU
    /// header): 128, 176, 160, 128, 160, 160 bits.
    const HEADER_BYTES: [usize; 6] = [13, 19, 17, 13, 17, 17];
    /// `TileSizeBytes` of each unit's frame (`tile_size_bytes_minus1` + 1 in the same trace).
    const TILE_SIZE_BYTES: [u16; 6] = [2, 1, 1, 2, 1, 1];

    #[test]
    fn sequence_header_fields_match_ffmpeg_trace_headers() {
        let u = units();
        // TD (2 bytes), then the sequence header OBU: 1-byte header, 1-byte size 10.
        let s = parse_sequence_header(&u[0][4..14]).unwrap();
        assert_eq!((s.max_width, s.max_height), (256, 128));
        assert_eq!(s.profile, 0);
        assert!(s.enable_order_hint && s.enable_ref_frame_mvs && s.enable_cdef);
        assert_eq!(s.order_hint_bits, 7);
        assert_eq!((s.force_screen_content_tools, s.force_integer_mv), (2, 2));
        assert!(!s.use_128x128_superblock && !s.film_grain_params_present);
        assert_eq!(s.num_planes(), 3);
    }

    #[test]
    fn cbcs_protects_each_tile_whole_after_the_headers_ffmpeg_shows() {
        let mut st = Av1State::default();
        for (k, u) in units().into_iter().enumerate() {
            let m = map(u, &mut st, true).unwrap();
            assert_eq!(total(&m), u.len(), "unit {k}");
            // One subsample per tile (2x2), then the trailing empty clear entry never appears:
            // the last tile ends the sample.
            assert_eq!(m.len(), 4, "unit {k}: {m:?}");
            let seq = if k % 3 == 0 { 12 } else { 0 };
            // TD 2 + sequence header + frame OBU header 3 + frame header + tile group header
            // 1 + tile_size_minus_1.
            let tsb = TILE_SIZE_BYTES[k];
            assert_eq!(
                m[0].clear,
                2 + seq + 3 + HEADER_BYTES[k] as u16 + 1 + tsb,
                "unit {k}"
            );
            // Later tiles: only their size field is clear (the last tile has none).
            assert_eq!(
                [m[1].clear, m[2].clear, m[3].clear],
                [tsb, tsb, 0],
                "unit {k}"
            );
            assert!(m.iter().all(|s| s.protected > 0));
        }
        assert!(st.frame.is_none());
    }

    #[test]
    fn cenc_protects_whole_blocks_ending_each_tile() {
        let mut cbcs = Av1State::default();
        let mut cenc = Av1State::default();
        for (k, u) in units().into_iter().enumerate() {
            let tiles = map(u, &mut cbcs, true).unwrap();
            let m = map(u, &mut cenc, false).unwrap();
            assert_eq!(total(&m), u.len(), "unit {k}");
            // Each cbcs tile range [s, e) becomes the whole blocks ending at e.
            let mut want = Vec::new();
            let mut at = 0;
            for t in &tiles {
                at += usize::from(t.clear);
                let e = at + t.protected as usize;
                want.push((e - t.protected as usize / 16 * 16, e));
                at = e;
            }
            let mut got = Vec::new();
            let mut at = 0;
            for s in &m {
                at += usize::from(s.clear);
                assert_eq!(s.protected % 16, 0);
                if s.protected > 0 {
                    got.push((at, at + s.protected as usize));
                }
                at += s.protected as usize;
            }
            want.retain(|(a, b)| a < b);
            assert_eq!(got, want, "unit {k}");
        }
    }

    #[test]
    fn av1c_sequence_header_is_used_and_checked() {
        let u = units();
        // av1C: marker/version, profile/level, flags, delay, then the sequence header OBU.
        let mut c = vec![0x81, 0x00, 0x0c, 0x00];
        c.extend_from_slice(&u[0][2..14]);
        let mut st = Av1State::from_av1c(Some(&c)).unwrap();
        assert_eq!(st.sequence_header().unwrap().max_width, 256);
        // The second unit alone (no sequence header in band) maps with av1C's, once a key
        // frame filled the reference slots.
        map(u[0], &mut st, true).unwrap();
        assert_eq!(map(u[1], &mut st, true).unwrap().len(), 4);
        let e = Av1State::from_av1c(Some(&[0x01, 0, 0, 0])).unwrap_err();
        assert!(e.0.contains("av1C"), "{e:?}");
    }

    #[test]
    fn bad_samples_are_errors_naming_the_obu() {
        let u = units();
        // No sequence header yet: the frame cannot be parsed.
        let e = map(u[1], &mut Av1State::default(), true).unwrap_err();
        assert!(e.0.contains("OBU 2 (OBU_FRAME) at byte 2"), "{e:?}");
        assert!(e.0.contains("sequence header"), "{e:?}");
        // Truncated: the frame OBU's obu_size runs past the sample.
        let cut = &u[0][..u[0].len() - 100];
        let e = map(cut, &mut Av1State::default(), false).unwrap_err();
        assert!(
            e.0.contains("OBU 3 at byte 14") && e.0.contains("obu_size"),
            "{e:?}"
        );
        // A truncated OBU header (size field cut).
        let e = map(&u[0][..16], &mut Av1State::default(), false).unwrap_err();
        assert!(e.0.contains("obu_size"), "{e:?}");
        // Tiles past the OBU: the frame OBU's obu_size (2-byte leb128 at 15) cut to 40.
        let mut bad = u[0].to_vec();
        bad[15..17].copy_from_slice(&[0xa8, 0x00]);
        let e = map(&bad, &mut Av1State::default(), true).unwrap_err();
        assert!(e.0.contains("OBU_FRAME") && e.0.contains("tile"), "{e:?}");
        // forbidden bit.
        let e = map(&[0x80, 0], &mut Av1State::default(), true).unwrap_err();
        assert!(e.0.contains("obu_forbidden_bit"), "{e:?}");
        // Tile list OBUs are refused.
        let e = map(&[0x42, 0], &mut Av1State::default(), true).unwrap_err();
        assert!(e.0.contains("tile list"), "{e:?}");
    }

    #[test]
    fn clear_only_samples_get_one_clear_entry() {
        // A temporal delimiter and a padding OBU: nothing to protect, but a non-empty map
        // (an empty one would mean whole-sample encryption).
        let s = [0x12, 0x00, 0x7a, 0x03, 1, 2, 3];
        let m = map(&s, &mut Av1State::default(), false).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 7,
                protected: 0
            }]
        );
    }

    #[test]
    fn helpers_follow_the_spec_definitions() {
        // ns(5): w = 3, m = 3; values 0..2 in 2 bits, 3..4 in 3 bits.
        let mut r = Bits::new(&[0b1110_0000], "t");
        assert_eq!(ns(&mut r, 5).unwrap(), 4);
        assert_eq!(r.pos, 3);
        let mut r = Bits::new(&[0b0100_0000], "t");
        assert_eq!(ns(&mut r, 5).unwrap(), 1);
        assert_eq!(r.pos, 2);
        let mut r = Bits::new(&[0b1111_1110], "t");
        assert_eq!(su(&mut r, 7).unwrap(), -1);
        assert_eq!(tile_log2(1, 1), 0);
        assert_eq!(tile_log2(1, 5), 3);
        assert_eq!(tile_log2(64, 4), 0);
    }
}
