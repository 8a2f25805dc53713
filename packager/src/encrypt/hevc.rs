//! HEVC slice segment header lengths for `cbcs` (ISO/IEC 23001-7 §10.4.2: NAL header and slice
//! header clear, protection from the first byte of slice data), for
//! the walker in [`super::nal`].
//!
//! The slice segment header (ITU-T H.265 §7.3.6.1) is parsed only as far as its length; it
//! ends with `byte_alignment()`, so slice data starts on a byte. The fields it depends on come
//! from the SPS (short-term reference picture sets, long-term pictures, SAO, temporal MVP, the
//! picture size in CTBs) and the PPS (dependent slices, extra header bits, tiles, weighted
//! prediction, deblocking, list modification, range extension), read from `hvcC` and updated by
//! in-band parameter sets. Not supported (a clear error): multi-layer, 3D and SCC extensions.

use super::nal::{unescape, Bits, ConfigRecord, NalRole, ParamSets, ParamSyntax};
use super::subsample::MapError;

#[derive(Debug, Clone, Default)]
struct StRps {
    /// NumDeltaPocs.
    num_delta_pocs: u32,
    /// Pictures used by the current picture (part of NumPicTotalCurr).
    used: u32,
}

/// What a slice header needs of a HEVC SPS.
#[derive(Debug, Clone, Default)]
pub struct Sps {
    chroma_array_type: u32,
    separate_colour_plane: bool,
    pic_size_in_ctbs: u32,
    log2_max_poc_lsb: u32,
    sao: bool,
    st_rps: Vec<StRps>,
    long_term_present: bool,
    lt_used: Vec<bool>,
    temporal_mvp: bool,
}

/// What a slice header needs of a HEVC PPS.
#[derive(Debug, Clone, Default)]
pub struct Pps {
    dependent_slices: bool,
    output_flag_present: bool,
    extra_bits: u32,
    cabac_init_present: bool,
    l0_default: u32,
    l1_default: u32,
    slice_chroma_qp_offsets: bool,
    weighted_pred: bool,
    weighted_bipred: bool,
    tiles_or_wpp: bool,
    loop_filter_across_slices: bool,
    deblocking_override: bool,
    deblocking_disabled: bool,
    lists_modification: bool,
    header_extension: bool,
    chroma_qp_offset_list: bool,
}

/// The HEVC parameter sets of a track, by id.
pub type HevcParams = ParamSets<Hevc>;

/// Ceil(Log2(x)) for x >= 1.
fn ceil_log2(x: u32) -> u32 {
    32 - x.saturating_sub(1).leading_zeros()
}

fn scaling_list_data(r: &mut Bits) -> Result<(), MapError> {
    for size_id in 0..4 {
        let step = if size_id == 3 { 3 } else { 1 };
        let mut matrix = 0;
        while matrix < 6 {
            if !r.flag()? {
                r.ue()?; // scaling_list_pred_matrix_id_delta
            } else {
                let coefs = 64.min(1 << (4 + (size_id << 1)));
                if size_id > 1 {
                    r.se()?;
                }
                for _ in 0..coefs {
                    r.se()?;
                }
            }
            matrix += step;
        }
    }
    Ok(())
}

/// `st_ref_pic_set(idx)`; `sets` are the SPS's sets so far, `in_slice` when parsed in a slice
/// header (`idx == num_short_term_ref_pic_sets`).
fn st_ref_pic_set(
    r: &mut Bits,
    idx: usize,
    sets: &[StRps],
    in_slice: bool,
) -> Result<StRps, MapError> {
    let inter = idx != 0 && r.flag()?;
    if inter {
        let delta_idx = if in_slice {
            r.ue_max(idx as u32 - 1, "delta_idx_minus1")? + 1
        } else {
            1
        };
        r.u(1)?; // delta_rps_sign
        r.ue()?; // abs_delta_rps_minus1
        let reference = sets
            .get(idx - delta_idx as usize)
            .ok_or_else(|| MapError("HEVC st_ref_pic_set refers to a missing set".into()))?;
        let mut out = StRps::default();
        for _ in 0..=reference.num_delta_pocs {
            let used = r.flag()?;
            let use_delta = used || r.flag()?;
            if use_delta {
                out.num_delta_pocs += 1;
            }
            if used {
                out.used += 1;
            }
        }
        Ok(out)
    } else {
        let neg = r.ue_max(16, "num_negative_pics")?;
        let pos = r.ue_max(16, "num_positive_pics")?;
        let mut out = StRps {
            num_delta_pocs: neg + pos,
            used: 0,
        };
        for _ in 0..neg + pos {
            r.ue()?;
            if r.flag()? {
                out.used += 1;
            }
        }
        Ok(out)
    }
}

/// The HEVC parameter set syntax ([`ParamSets`]).
#[derive(Debug, Clone)]
pub struct Hevc;

impl ParamSyntax for Hevc {
    fn role(first: u8) -> NalRole {
        match (first >> 1) & 0x3f {
            33 | 34 => NalRole::ParamSet,
            0..=9 | 16..=21 => NalRole::Slice,
            t @ (10..=15 | 22..=31) => {
                NalRole::Unsupported(format!("HEVC NAL unit type {t} is a reserved VCL type"))
            }
            _ => NalRole::Other,
        }
    }

    fn is_sps(first: u8) -> bool {
        (first >> 1) & 0x3f == 33
    }

    type Sps = Sps;
    type Pps = Pps;
    const HEADER_LEN: usize = 2;
    const NAMES: [&'static str; 3] = ["HEVC", "HEVC SPS", "HEVC PPS"];
    const PPS_IDS: [(u32, &'static str); 2] = [
        (63, "pps_pic_parameter_set_id"),
        (15, "pps_seq_parameter_set_id"),
    ];

    fn sps(r: &mut Bits) -> Result<(usize, Sps), MapError> {
        r.u(4)?;
        let max_sub_layers_minus1 = r.u(3)?;
        r.u(1)?;
        // profile_tier_level(1, max_sub_layers_minus1)
        r.u(32)?;
        r.u(32)?;
        r.u(32)?;
        let mut present = Vec::new();
        for _ in 0..max_sub_layers_minus1 {
            present.push((r.flag()?, r.flag()?));
        }
        if max_sub_layers_minus1 > 0 {
            for _ in max_sub_layers_minus1..8 {
                r.u(2)?;
            }
        }
        for (profile, level) in present {
            if profile {
                r.u(32)?;
                r.u(32)?;
                r.u(24)?;
            }
            if level {
                r.u(8)?;
            }
        }
        let id = r.ue_max(15, "sps_seq_parameter_set_id")? as usize;
        let mut s = Sps::default();
        (_, s.separate_colour_plane, s.chroma_array_type) = r.chroma_format()?;
        let width = r.ue_max(1 << 16, "pic_width_in_luma_samples")?;
        let height = r.ue_max(1 << 16, "pic_height_in_luma_samples")?;
        if r.flag()? {
            for _ in 0..4 {
                r.ue()?;
            }
        }
        r.ue()?;
        r.ue()?;
        s.log2_max_poc_lsb = r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")? + 4;
        let ordering_all = r.flag()?;
        let from = if ordering_all {
            0
        } else {
            max_sub_layers_minus1
        };
        for _ in from..=max_sub_layers_minus1 {
            r.ue()?;
            r.ue()?;
            r.ue()?;
        }
        let min_cb = r.ue_max(4, "log2_min_luma_coding_block_size_minus3")? + 3;
        let ctb_log2 = min_cb + r.ue_max(6, "log2_diff_max_min_luma_coding_block_size")?;
        if ctb_log2 > 7 {
            return Err(MapError(format!(
                "HEVC SPS: CTB size 2^{ctb_log2} is over 128"
            )));
        }
        r.ue()?;
        r.ue()?;
        r.ue()?;
        r.ue()?;
        if r.flag()? && r.flag()? {
            scaling_list_data(r)?;
        }
        r.u(1)?; // amp_enabled_flag
        s.sao = r.flag()?;
        if r.flag()? {
            r.u(8)?;
            r.ue()?;
            r.ue()?;
            r.u(1)?;
        }
        let n = r.ue_max(64, "num_short_term_ref_pic_sets")? as usize;
        for i in 0..n {
            let set = st_ref_pic_set(r, i, &s.st_rps, false)?;
            s.st_rps.push(set);
        }
        s.long_term_present = r.flag()?;
        if s.long_term_present {
            let n = r.ue_max(32, "num_long_term_ref_pics_sps")?;
            for _ in 0..n {
                r.u(s.log2_max_poc_lsb)?;
                s.lt_used.push(r.flag()?);
            }
        }
        s.temporal_mvp = r.flag()?;
        let ctb = 1u32 << ctb_log2;
        s.pic_size_in_ctbs = width.div_ceil(ctb) * height.div_ceil(ctb);
        Ok((id, s))
    }

    fn pps(r: &mut Bits) -> Result<Pps, MapError> {
        let mut p = Pps {
            dependent_slices: r.flag()?,
            output_flag_present: r.flag()?,
            extra_bits: r.u(3)?,
            ..Pps::default()
        };
        r.u(1)?; // sign_data_hiding_enabled_flag
        p.cabac_init_present = r.flag()?;
        p.l0_default = r.ue_max(14, "num_ref_idx_l0_default_active_minus1")?;
        p.l1_default = r.ue_max(14, "num_ref_idx_l1_default_active_minus1")?;
        r.se()?;
        r.u(1)?;
        let transform_skip = r.flag()?;
        if r.flag()? {
            r.ue()?;
        }
        r.se()?;
        r.se()?;
        p.slice_chroma_qp_offsets = r.flag()?;
        p.weighted_pred = r.flag()?;
        p.weighted_bipred = r.flag()?;
        r.u(1)?; // transquant_bypass_enabled_flag
        let tiles = r.flag()?;
        let wpp = r.flag()?;
        p.tiles_or_wpp = tiles || wpp;
        if tiles {
            let cols = r.ue_max(63, "num_tile_columns_minus1")?;
            let rows = r.ue_max(63, "num_tile_rows_minus1")?;
            if !r.flag()? {
                for _ in 0..cols + rows {
                    r.ue()?;
                }
            }
            r.u(1)?;
        }
        p.loop_filter_across_slices = r.flag()?;
        if r.flag()? {
            p.deblocking_override = r.flag()?;
            p.deblocking_disabled = r.flag()?;
            if !p.deblocking_disabled {
                r.se()?;
                r.se()?;
            }
        }
        if r.flag()? {
            scaling_list_data(r)?;
        }
        p.lists_modification = r.flag()?;
        r.ue()?; // log2_parallel_merge_level_minus2
        p.header_extension = r.flag()?;
        if r.flag()? {
            let range = r.flag()?;
            let others = r.u(7)?;
            if others >> 4 != 0 {
                return Err(MapError(
                    "HEVC PPS: multilayer, 3D or SCC extensions are not supported".into(),
                ));
            }
            if range {
                if transform_skip {
                    r.ue()?;
                }
                r.u(1)?;
                p.chroma_qp_offset_list = r.flag()?;
            }
        }
        Ok(p)
    }

    fn slice_header_bits(sets: &ParamSets<Self>, nal: &[u8]) -> Result<usize, MapError> {
        if nal.len() < 3 {
            return Err(MapError("HEVC slice NAL unit shorter than 3 bytes".into()));
        }
        let nal_type = (nal[0] >> 1) & 0x3f;
        let (rbsp, _) = unescape(&nal[2..]);
        let r = &mut Bits::new(&rbsp, "HEVC slice header");
        let first = r.flag()?;
        if (16..=23).contains(&nal_type) {
            r.u(1)?;
        }
        let pps_id = r.ue_max(63, "slice_pic_parameter_set_id")? as usize;
        let (sps, pps) = sets.for_slice(pps_id)?;
        let mut dependent = false;
        if !first {
            if pps.dependent_slices {
                dependent = r.flag()?;
            }
            r.u(ceil_log2(sps.pic_size_in_ctbs))?;
        }
        if !dependent {
            r.u(pps.extra_bits)?;
            let slice_type = r.ue_max(2, "slice_type")?;
            let (b, p) = (slice_type == 0, slice_type == 1);
            if pps.output_flag_present {
                r.u(1)?;
            }
            if sps.separate_colour_plane {
                r.u(2)?;
            }
            let mut total_curr = 0;
            let mut temporal_mvp = false;
            if nal_type != 19 && nal_type != 20 {
                r.u(sps.log2_max_poc_lsb)?;
                let n = sps.st_rps.len();
                if !r.flag()? {
                    total_curr += st_ref_pic_set(r, n, &sps.st_rps, true)?.used;
                } else {
                    let idx = if n > 1 { r.u(ceil_log2(n as u32))? } else { 0 } as usize;
                    total_curr += sps
                        .st_rps
                        .get(idx)
                        .ok_or_else(|| {
                            MapError(format!("HEVC slice refers to missing st_ref_pic_set {idx}"))
                        })?
                        .used;
                }
                if sps.long_term_present {
                    let n_sps = sps.lt_used.len() as u32;
                    let num_sps = if n_sps > 0 {
                        r.ue_max(n_sps, "num_long_term_sps")?
                    } else {
                        0
                    };
                    let num_pics = r.ue_max(32, "num_long_term_pics")?;
                    for i in 0..num_sps + num_pics {
                        let used = if i < num_sps {
                            let idx = if n_sps > 1 { r.u(ceil_log2(n_sps))? } else { 0 };
                            sps.lt_used.get(idx as usize).copied().unwrap_or(false)
                        } else {
                            r.u(sps.log2_max_poc_lsb)?;
                            r.flag()?
                        };
                        if used {
                            total_curr += 1;
                        }
                        if r.flag()? {
                            r.ue()?;
                        }
                    }
                }
                if sps.temporal_mvp {
                    temporal_mvp = r.flag()?;
                }
            }
            let (mut sao_luma, mut sao_chroma) = (false, false);
            if sps.sao {
                sao_luma = r.flag()?;
                if sps.chroma_array_type != 0 {
                    sao_chroma = r.flag()?;
                }
            }
            if p || b {
                let (mut l0, mut l1) = (pps.l0_default, pps.l1_default);
                if r.flag()? {
                    l0 = r.ue_max(14, "num_ref_idx_l0_active_minus1")?;
                    if b {
                        l1 = r.ue_max(14, "num_ref_idx_l1_active_minus1")?;
                    }
                }
                if pps.lists_modification && total_curr > 1 {
                    let bits = ceil_log2(total_curr);
                    if r.flag()? {
                        for _ in 0..=l0 {
                            r.u(bits)?;
                        }
                    }
                    if b && r.flag()? {
                        for _ in 0..=l1 {
                            r.u(bits)?;
                        }
                    }
                }
                if b {
                    r.u(1)?; // mvd_l1_zero_flag
                }
                if pps.cabac_init_present {
                    r.u(1)?;
                }
                if temporal_mvp {
                    let from_l0 = if b { r.flag()? } else { true };
                    if (from_l0 && l0 > 0) || (!from_l0 && l1 > 0) {
                        r.ue()?;
                    }
                }
                if (pps.weighted_pred && p) || (pps.weighted_bipred && b) {
                    // pred_weight_table(): single layer, so every reference is another picture
                    // and each weight flag is present.
                    r.ue()?;
                    if sps.chroma_array_type != 0 {
                        r.se()?;
                    }
                    for count in [Some(l0), b.then_some(l1)].into_iter().flatten() {
                        let mut luma = Vec::new();
                        for _ in 0..=count {
                            luma.push(r.flag()?);
                        }
                        let mut chroma = vec![false; luma.len()];
                        if sps.chroma_array_type != 0 {
                            for c in chroma.iter_mut() {
                                *c = r.flag()?;
                            }
                        }
                        for (l, c) in luma.into_iter().zip(chroma) {
                            if l {
                                r.se()?;
                                r.se()?;
                            }
                            if c {
                                for _ in 0..4 {
                                    r.se()?;
                                }
                            }
                        }
                    }
                }
                r.ue()?; // five_minus_max_num_merge_cand
            }
            r.se()?; // slice_qp_delta
            if pps.slice_chroma_qp_offsets {
                r.se()?;
                r.se()?;
            }
            if pps.chroma_qp_offset_list {
                r.u(1)?;
            }
            let mut deblocking_disabled = pps.deblocking_disabled;
            if pps.deblocking_override && r.flag()? {
                deblocking_disabled = r.flag()?;
                if !deblocking_disabled {
                    r.se()?;
                    r.se()?;
                }
            }
            if pps.loop_filter_across_slices && (sao_luma || sao_chroma || !deblocking_disabled) {
                r.u(1)?;
            }
        }
        if pps.tiles_or_wpp {
            let n = r.ue_max(1 << 16, "num_entry_point_offsets")?;
            if n > 0 {
                let bits = r.ue_max(31, "offset_len_minus1")? + 1;
                for _ in 0..n {
                    r.u(bits)?;
                }
            }
        }
        if pps.header_extension {
            let n = r.ue_max(256, "slice_segment_header_extension_length")?;
            for _ in 0..n {
                r.u(8)?;
            }
        }
        // byte_alignment(): a one bit, then zero bits to the byte boundary.
        r.u(1)?;
        r.header_bits(Hevc::HEADER_LEN, true)
    }
}

impl ParamSets<Hevc> {
    /// The parameter sets of an `hvcC` box payload (HEVCDecoderConfigurationRecord).
    pub fn from_hvcc(hvcc: &[u8]) -> Result<Self, MapError> {
        let mut rec = ConfigRecord::new(hvcc, "hvcC", 22);
        let mut p = HevcParams::default();
        for _ in 0..rec.u8()? {
            rec.u8()?; // array_completeness, NAL_unit_type
            for _ in 0..rec.u16()? {
                p.add_nal(rec.nal()?)?;
            }
        }
        Ok(p)
    }

    /// Takes an SPS (33) or PPS (34) NAL unit; others are ignored.
    pub fn add_nal(&mut self, nal: &[u8]) -> Result<(), MapError> {
        ParamSets::add(self, nal)
    }

    /// The length in bits of slice NAL unit `nal`'s segment header, the 16-bit NAL header and
    /// `byte_alignment()` included.
    pub fn slice_header_bits(&self, nal: &[u8]) -> Result<usize, MapError> {
        Hevc::slice_header_bits(self, nal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_log2_values() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(4), 2);
        assert_eq!(ceil_log2(40), 6);
    }
}
