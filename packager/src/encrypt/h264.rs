//! H.264 slice header lengths for `cbcs` (ISO/IEC 23001-7 §10.4.2: the NAL unit header and the
//! slice header stay clear, the protected range starts at the first byte of slice data): the
//! [`super::nal::SliceHeaders`] of H.264 for the walker in [`super::nal`].
//!
//! The slice header (ITU-T H.264 §7.3.3) is parsed only as far as its length in bits, which
//! depends on fields of the SPS and PPS it refers to ([`H264Params`], read from `avcC` and
//! updated by in-band parameter sets). Emulation prevention bytes are removed for the bit
//! parsing, but lengths are counted in stored (escaped) bytes. The clear part of a slice NAL
//! unit ends with the byte holding the header's last bit (with CABAC the slice data is then
//! byte aligned by `cabac_alignment_one_bit`; with CAVLC the first slice data bits share that
//! byte, which stays clear), so the protected range starts on a byte boundary
//! ([`super::nal::SliceHeaders::slice_header_len`]). Pure functions
//! over sample bytes. Not supported (a clear error): MVC/SVC slices (NAL types 14, 20, 21) and
//! slice-group change cycles (FMO map types 3-5).

use super::nal::{unescape, Bits, ConfigRecord, NalRole, ParamSets, ParamSyntax};
use super::subsample::MapError;

/// What a slice header needs of a H.264 SPS.
#[derive(Debug, Clone, Default)]
pub struct Sps {
    separate_colour_plane: bool,
    chroma_array_type: u32,
    log2_max_frame_num: u32,
    poc_type: u32,
    log2_max_poc_lsb: u32,
    delta_pic_order_always_zero: bool,
    frame_mbs_only: bool,
}

/// What a slice header needs of a H.264 PPS.
#[derive(Debug, Clone, Default)]
pub struct Pps {
    entropy_coding_mode: bool,
    bottom_field_pic_order_in_frame_present: bool,
    slice_group_change: bool,
    num_ref_idx_l0_default_minus1: u32,
    num_ref_idx_l1_default_minus1: u32,
    weighted_pred: bool,
    weighted_bipred_idc: u32,
    deblocking_filter_control_present: bool,
    redundant_pic_cnt_present: bool,
}

/// The sequence and picture parameter sets of a track, by id.
pub type H264Params = ParamSets<H264>;

fn scaling_list(r: &mut Bits, size: usize) -> Result<(), MapError> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// The H.264 parameter set syntax ([`ParamSets`]).
#[derive(Debug, Clone)]
pub struct H264;

impl ParamSyntax for H264 {
    type Sps = Sps;
    type Pps = Pps;
    const HEADER_LEN: usize = 1;
    const NAMES: [&'static str; 3] = ["H.264", "H.264 SPS", "H.264 PPS"];
    const PPS_IDS: [(u32, &'static str); 2] =
        [(255, "pic_parameter_set_id"), (31, "seq_parameter_set_id")];

    fn role(first: u8) -> NalRole {
        match first & 0x1f {
            7 | 8 => NalRole::ParamSet,
            1 | 5 => NalRole::Slice,
            t @ (2..=4 | 14 | 20 | 21) => NalRole::Unsupported(format!(
                "H.264 NAL unit type {t} (data partitioning, SVC or MVC) is not supported by \
                 cbcs encryption"
            )),
            _ => NalRole::Other,
        }
    }

    fn is_sps(first: u8) -> bool {
        first & 0x1f == 7
    }

    fn sps(r: &mut Bits) -> Result<(usize, Sps), MapError> {
        let profile = r.u(8)?;
        r.u(16)?;
        let id = r.ue_max(31, "seq_parameter_set_id")? as usize;
        let mut s = Sps {
            chroma_array_type: 1,
            ..Sps::default()
        };
        if matches!(
            profile,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            let chroma_format_idc;
            (
                chroma_format_idc,
                s.separate_colour_plane,
                s.chroma_array_type,
            ) = r.chroma_format()?;
            r.ue()?; // bit_depth_luma_minus8
            r.ue()?; // bit_depth_chroma_minus8
            r.u(1)?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        scaling_list(r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        s.log2_max_frame_num = r.ue_max(12, "log2_max_frame_num_minus4")? + 4;
        s.poc_type = r.ue_max(2, "pic_order_cnt_type")?;
        if s.poc_type == 0 {
            s.log2_max_poc_lsb = r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")? + 4;
        } else if s.poc_type == 1 {
            s.delta_pic_order_always_zero = r.flag()?;
            r.se()?;
            r.se()?;
            let n = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..n {
                r.se()?;
            }
        }
        r.ue()?; // max_num_ref_frames
        r.u(1)?; // gaps_in_frame_num_value_allowed_flag
        r.ue()?; // pic_width_in_mbs_minus1
        r.ue()?; // pic_height_in_map_units_minus1
        s.frame_mbs_only = r.flag()?;
        Ok((id, s))
    }

    fn pps(r: &mut Bits) -> Result<Pps, MapError> {
        let mut p = Pps {
            entropy_coding_mode: r.flag()?,
            bottom_field_pic_order_in_frame_present: r.flag()?,
            ..Pps::default()
        };
        let groups = r.ue_max(7, "num_slice_groups_minus1")?;
        if groups > 0 {
            let map_type = r.ue_max(6, "slice_group_map_type")?;
            // Slices of these maps carry slice_group_change_cycle, whose size needs the
            // picture size; refused rather than guessed.
            p.slice_group_change = (3..=5).contains(&map_type);
            match map_type {
                0 => {
                    for _ in 0..=groups {
                        r.ue()?;
                    }
                }
                2 => {
                    for _ in 0..groups {
                        r.ue()?;
                        r.ue()?;
                    }
                }
                3..=5 => {
                    r.u(1)?;
                    r.ue()?;
                }
                6 => {
                    let units = r.ue_max(1 << 20, "pic_size_in_map_units_minus1")? + 1;
                    let bits = 32 - groups.leading_zeros();
                    for _ in 0..units {
                        r.u(bits)?;
                    }
                }
                _ => {}
            }
        }
        p.num_ref_idx_l0_default_minus1 = r.ue_max(31, "num_ref_idx_l0_default_active_minus1")?;
        p.num_ref_idx_l1_default_minus1 = r.ue_max(31, "num_ref_idx_l1_default_active_minus1")?;
        p.weighted_pred = r.flag()?;
        p.weighted_bipred_idc = r.u(2)?;
        r.se()?; // pic_init_qp_minus26
        r.se()?; // pic_init_qs_minus26
        r.se()?; // chroma_qp_index_offset
        p.deblocking_filter_control_present = r.flag()?;
        r.u(1)?; // constrained_intra_pred_flag
        p.redundant_pic_cnt_present = r.flag()?;
        Ok(p)
    }

    fn slice_header_bits(sets: &ParamSets<Self>, nal: &[u8]) -> Result<usize, MapError> {
        let first = *nal
            .first()
            .ok_or_else(|| MapError("empty NAL unit".into()))?;
        let nal_type = first & 0x1f;
        let nal_ref_idc = (first >> 5) & 3;
        if !matches!(nal_type, 1 | 5) {
            return Err(MapError(format!(
                "H.264 NAL unit type {nal_type}: only slices of types 1 and 5 are supported"
            )));
        }
        let idr = nal_type == 5;
        let (rbsp, _) = unescape(&nal[1..]);
        let r = &mut Bits::new(&rbsp, "H.264 slice header");
        r.ue()?; // first_mb_in_slice
        let slice_type = r.ue_max(9, "slice_type")? % 5;
        let (p, b, i, sp, si) = (
            slice_type == 0,
            slice_type == 1,
            slice_type == 2,
            slice_type == 3,
            slice_type == 4,
        );
        let pps_id = r.ue_max(255, "pic_parameter_set_id")? as usize;
        let (sps, pps) = sets.for_slice(pps_id)?;
        if sps.separate_colour_plane {
            r.u(2)?;
        }
        r.u(sps.log2_max_frame_num)?;
        let mut field_pic = false;
        if !sps.frame_mbs_only {
            field_pic = r.flag()?;
            if field_pic {
                r.u(1)?;
            }
        }
        if idr {
            r.ue()?; // idr_pic_id
        }
        if sps.poc_type == 0 {
            r.u(sps.log2_max_poc_lsb)?;
            if pps.bottom_field_pic_order_in_frame_present && !field_pic {
                r.se()?;
            }
        }
        if sps.poc_type == 1 && !sps.delta_pic_order_always_zero {
            r.se()?;
            if pps.bottom_field_pic_order_in_frame_present && !field_pic {
                r.se()?;
            }
        }
        if pps.redundant_pic_cnt_present {
            r.ue()?;
        }
        if b {
            r.u(1)?; // direct_spatial_mv_pred_flag
        }
        let (mut l0, mut l1) = (
            pps.num_ref_idx_l0_default_minus1,
            pps.num_ref_idx_l1_default_minus1,
        );
        if (p || sp || b) && r.flag()? {
            l0 = r.ue_max(31, "num_ref_idx_l0_active_minus1")?;
            if b {
                l1 = r.ue_max(31, "num_ref_idx_l1_active_minus1")?;
            }
        }
        // ref_pic_list_modification()
        let lists = if b {
            2
        } else if !(i || si) {
            1
        } else {
            0
        };
        for _ in 0..lists {
            if r.flag()? {
                let mut n = 0;
                loop {
                    let idc = r.ue_max(5, "modification_of_pic_nums_idc")?;
                    if idc == 3 {
                        break;
                    }
                    r.ue()?;
                    n += 1;
                    if n > 64 {
                        return Err(MapError(
                            "H.264 slice header: over 64 reference list modifications".into(),
                        ));
                    }
                }
            }
        }
        if (pps.weighted_pred && (p || sp)) || (pps.weighted_bipred_idc == 1 && b) {
            r.ue()?; // luma_log2_weight_denom
            if sps.chroma_array_type != 0 {
                r.ue()?;
            }
            for count in [Some(l0), b.then_some(l1)].into_iter().flatten() {
                for _ in 0..=count {
                    if r.flag()? {
                        r.se()?;
                        r.se()?;
                    }
                    if sps.chroma_array_type != 0 && r.flag()? {
                        for _ in 0..4 {
                            r.se()?;
                        }
                    }
                }
            }
        }
        if nal_ref_idc != 0 {
            // dec_ref_pic_marking()
            if idr {
                r.u(2)?;
            } else if r.flag()? {
                let mut n = 0;
                loop {
                    let op = r.ue_max(6, "memory_management_control_operation")?;
                    if op == 0 {
                        break;
                    }
                    if op == 1 || op == 3 {
                        r.ue()?;
                    }
                    if op == 2 {
                        r.ue()?;
                    }
                    if op == 3 || op == 6 {
                        r.ue()?;
                    }
                    if op == 4 {
                        r.ue()?;
                    }
                    n += 1;
                    if n > 64 {
                        return Err(MapError(
                            "H.264 slice header: over 64 memory management operations".into(),
                        ));
                    }
                }
            }
        }
        if pps.entropy_coding_mode && !(i || si) {
            r.ue()?; // cabac_init_idc
        }
        r.se()?; // slice_qp_delta
        if sp || si {
            if sp {
                r.u(1)?;
            }
            r.se()?;
        }
        if pps.deblocking_filter_control_present {
            let idc = r.ue_max(6, "disable_deblocking_filter_idc")?;
            if idc != 1 {
                r.se()?;
                r.se()?;
            }
        }
        if pps.slice_group_change {
            return Err(MapError(
                "H.264 slice groups with change cycles (FMO map types 3-5) are not supported"
                    .into(),
            ));
        }
        r.header_bits(H264::HEADER_LEN, pps.entropy_coding_mode)
    }
}

impl ParamSets<H264> {
    /// The parameter sets of an `avcC` box payload (AVCDecoderConfigurationRecord).
    pub fn from_avcc(avcc: &[u8]) -> Result<Self, MapError> {
        let mut rec = ConfigRecord::new(avcc, "avcC", 5);
        let mut nals = Vec::new();
        for _ in 0..rec.u8()? & 0x1f {
            nals.push(rec.nal()?);
        }
        for _ in 0..rec.u8()? {
            nals.push(rec.nal()?);
        }
        let mut p = H264Params::default();
        for nal in nals {
            p.add(nal)?;
        }
        Ok(p)
    }

    /// The length in bits of slice NAL unit `nal`'s header, NAL header (8 bits) and, with
    /// CABAC, `cabac_alignment_one_bit`s included, counted in the RBSP (what ffmpeg's
    /// `trace_headers` shows as the end of the slice header).
    pub fn slice_header_bits(&self, nal: &[u8]) -> Result<usize, MapError> {
        H264::slice_header_bits(self, nal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encrypt::nal::{map, NalFormat, Policy, SliceHeaders};
    use crate::encrypt::subsample::Subsample;

    /// A bit writer for hand-made parameter sets.
    #[derive(Default)]
    struct W {
        bits: Vec<bool>,
    }

    impl W {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push(v >> i & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let x = v + 1;
            let n = 32 - x.leading_zeros();
            self.u(n - 1, 0).u(n, x)
        }
        /// rbsp_trailing_bits, then the bytes.
        fn finish(&mut self) -> Vec<u8> {
            self.bits.push(true);
            while self.bits.len() % 8 != 0 {
                self.bits.push(false);
            }
            self.bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |a, &b| a << 1 | u8::from(b)))
                .collect()
        }
    }

    fn with_length(nal: &[u8]) -> Vec<u8> {
        let mut v = (nal.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(nal);
        v
    }

    #[test]
    fn cbcs_map_keeps_slice_headers_clear_counting_escapes() {
        // Baseline SPS: 16-bit frame_num and POC lsb, CAVLC PPS with deblocking control.
        let mut sps = vec![0x67, 66, 0, 30];
        sps.extend(
            W::default()
                .ue(0)
                .ue(12)
                .ue(0)
                .ue(12)
                .ue(1)
                .u(1, 0)
                .ue(19)
                .ue(14)
                .u(1, 1)
                .u(1, 1)
                .u(1, 0)
                .u(1, 0)
                .finish(),
        );
        let mut pps = vec![0x68];
        pps.extend(
            W::default()
                .ue(0)
                .ue(0)
                .u(2, 0)
                .ue(0)
                .ue(0)
                .ue(0)
                .u(3, 0)
                .ue(0)
                .ue(0)
                .ue(0)
                .u(1, 1)
                .u(2, 0)
                .finish(),
        );
        // IDR I slice header: first_mb 0, slice_type 2, pps 0, frame_num 0 (16 bits),
        // idr_pic_id 0, POC lsb 0 (16 bits), no_output 0, long_term 0, slice_qp_delta +32,
        // deblocking idc 0, alpha 0, beta 0: RBSP B8 00 04 00 00 02 07 (56 bits), stored with
        // an emulation prevention byte before the 02.
        let header = [0xB8, 0x00, 0x04, 0x00, 0x00, 0x03, 0x02, 0x07];
        let mut idr = vec![0x65];
        idr.extend_from_slice(&header);
        idr.extend((0..40u8).map(|i| i + 0x10));
        let mut short = vec![0x65];
        short.extend_from_slice(&header);
        short.extend([0x55; 10]);
        let mut sample = with_length(&sps);
        sample.extend(with_length(&pps));
        sample.extend(with_length(&idr));
        sample.extend(with_length(&short));
        let mut params = H264Params::default();
        assert!(params
            .slice_header_bits(&idr)
            .unwrap_err()
            .0
            .contains("PPS 0"));
        params.add(&sps).unwrap();
        params.add(&pps).unwrap();
        assert_eq!(params.slice_header_bits(&idr).unwrap(), 8 + 56);
        assert_eq!(params.slice_header_len(&idr).unwrap(), 1 + 8);
        // In band parameter sets are picked up by the map itself.
        let fmt = NalFormat {
            length_size: 4,
            hevc: false,
        };
        let mut fresh = H264Params::default();
        let m = map(&sample, fmt, &mut Policy::SliceHeaderClear(&mut fresh)).unwrap();
        let lead = 4 + sps.len() + 4 + pps.len() + 4 + 9;
        assert_eq!(
            m,
            vec![
                Subsample {
                    clear: lead as u16,
                    protected: 40,
                },
                // The second slice has under one block after its header: clear whole.
                Subsample {
                    clear: (4 + short.len()) as u16,
                    protected: 0,
                },
            ]
        );
        // A slice before any PPS is an error naming the byte.
        let mut empty = H264Params::default();
        let only = with_length(&idr);
        let e = map(&only, fmt, &mut Policy::SliceHeaderClear(&mut empty)).unwrap_err();
        assert!(
            e.0.contains("byte 0") && e.0.contains("unknown PPS 0"),
            "{}",
            e.0
        );
    }
}
