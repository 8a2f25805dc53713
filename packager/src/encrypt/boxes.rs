//! The boxes Common Encryption adds to CMAF output: the protected sample entry (`encv`/`enca`
//! with `sinf`: `frma`, `schm`, `schi/tenc`), the W3C common `pssh`, and the per-fragment
//! auxiliary information (`saiz`, `saio`, `senc`). Pure: bytes in, bytes out.

use protocol::catalog::TrackKind;

use super::cipher::{TrackCrypto, IV_SIZE};
use super::subsample::Subsample;
use crate::cmaf::boxes::BoxBuf;
use crate::error::{Error, Result};

/// The W3C Common PSSH system id (`1077efec-c0b2-4d02-ace3-3c1e52e2fb4b`).
pub const COMMON_SYSTEM_ID: [u8; 16] = [
    0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b,
];

/// The sample entry `raw` turned into `encv`/`enca` with a `sinf` appended: `schm` names the
/// scheme, `tenc` the default key id and, for `cbcs` (version 1), the pattern and constant IV.
pub fn protect_sample_entry(raw: &[u8], kind: TrackKind, tc: &TrackCrypto) -> Vec<u8> {
    let mut out = raw.to_vec();
    let original: [u8; 4] = raw[4..8].try_into().unwrap_or(*b"    ");
    out[4..8].copy_from_slice(match kind {
        TrackKind::Video => b"encv",
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => b"enca",
    });
    let mut b = BoxBuf::new();
    b.open(b"sinf");
    b.open(b"frma");
    b.fourcc(&original);
    b.close();
    b.open_full(b"schm", 0, 0);
    b.fourcc(if tc.cbcs.is_some() { b"cbcs" } else { b"cenc" });
    b.u32(0x0001_0000);
    b.close();
    b.open(b"schi");
    match tc.cbcs {
        None => {
            b.open_full(b"tenc", 0, 0);
            b.bytes(&[0, 0, 1, IV_SIZE]);
            b.bytes(&tc.kid);
        }
        Some(cb) => {
            b.open_full(b"tenc", 1, 0);
            b.bytes(&[0, (cb.pattern.0 << 4) | (cb.pattern.1 & 0x0f), 1, 0]);
            b.bytes(&tc.kid);
            b.bytes(&[16]);
            b.bytes(&cb.iv);
        }
    }
    b.close();
    b.close();
    b.close();
    out.extend_from_slice(&b.finish());
    let size = out.len() as u32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// A version-1 `pssh` of the W3C common system listing `kids`.
pub fn pssh(kids: &[[u8; 16]]) -> Vec<u8> {
    let mut b = BoxBuf::new();
    b.open_full(b"pssh", 1, 0);
    b.bytes(&COMMON_SYSTEM_ID);
    b.u32(kids.len() as u32);
    for k in kids {
        b.bytes(k);
    }
    b.u32(0);
    b.close();
    b.finish()
}

/// Appends `saiz`, `saio` and `senc` for samples `first..first+maps.len()` of a track to the
/// open `traf` in `b`. `moof_start` is the offset of the `moof` in `b` (the `saio` offset is
/// relative to it: `tfhd` sets default-base-is-moof).
pub fn fragment_boxes(
    b: &mut BoxBuf,
    moof_start: usize,
    tc: &TrackCrypto,
    first: usize,
    maps: &[Vec<Subsample>],
) -> Result<()> {
    let n = maps.len() as u32;
    b.open_full(b"saiz", 0, 0);
    let sizes: Vec<usize> = maps.iter().map(|m| tc.aux_size(m)).collect();
    if let Some(&big) = sizes.iter().find(|&&s| s > 255) {
        return Err(Error::Ladder(format!(
            "a sample needs {big} bytes of encryption info ({} subsamples), over the 255 a saiz entry holds",
            (big - usize::from(tc.iv_size()) - 2) / 6
        )));
    }
    let same = sizes.iter().all(|&s| s == sizes[0]);
    // A default size of 0 means "sizes follow": all-zero sizes (cbcs audio: constant IV, no
    // subsamples) are written as a table.
    if same && !sizes.is_empty() && sizes[0] > 0 {
        b.bytes(&[sizes[0] as u8]);
        b.u32(n);
    } else {
        b.bytes(&[0]);
        b.u32(n);
        for s in &sizes {
            b.bytes(&[*s as u8]);
        }
    }
    b.close();
    b.open_full(b"saio", 0, 0);
    b.u32(1);
    let saio_at = b.len();
    b.u32(0);
    b.close();
    let senc_start = b.len();
    let subs = tc.subsamples();
    b.open_full(b"senc", 0, if subs { 2 } else { 0 });
    b.u32(n);
    for (k, m) in maps.iter().enumerate() {
        if tc.cbcs.is_none() {
            b.bytes(&tc.iv(first + k));
        }
        if subs {
            b.u16(m.len() as u16);
            for s in m {
                b.u16(s.clear);
                b.u32(s.protected);
            }
        }
    }
    b.close();
    b.patch_u32(saio_at, (senc_start + 16 - moof_start) as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cipher::tests::cbcs_track;
    use super::super::cipher::CBCS_VIDEO_PATTERN;
    use super::*;

    #[test]
    fn cbcs_tenc_is_version_1_with_pattern_and_constant_iv() {
        let mut raw = 16u32.to_be_bytes().to_vec();
        raw.extend_from_slice(b"avc1");
        raw.extend_from_slice(&[9; 8]);
        let p = protect_sample_entry(&raw, TrackKind::Video, &cbcs_track(CBCS_VIDEO_PATTERN));
        let schm = p.windows(4).position(|w| w == b"schm").unwrap();
        assert_eq!(&p[schm + 8..schm + 12], b"cbcs");
        let tenc = p.windows(4).position(|w| w == b"tenc").unwrap();
        assert_eq!(&p[tenc + 4..tenc + 8], &[1, 0, 0, 0]);
        assert_eq!(&p[tenc + 8..tenc + 12], &[0, 0x19, 1, 0]);
        assert_eq!(&p[tenc + 12..tenc + 28], &[1; 16]);
        assert_eq!(p[tenc + 28], 16);
        assert_eq!(&p[tenc + 29..tenc + 45], &[4; 16]);
        let size = u32::from_be_bytes(p[tenc - 4..tenc].try_into().unwrap()) as usize;
        assert_eq!(size, 4 + 4 + 4 + 4 + 16 + 1 + 16);
    }

    #[test]
    fn sample_entry_gets_sinf_and_new_size() {
        let mut raw = 16u32.to_be_bytes().to_vec();
        raw.extend_from_slice(b"mp4a");
        raw.extend_from_slice(&[9; 8]);
        let tc = TrackCrypto {
            kid: [7; 16],
            key: [0; 16],
            base_iv: 0,
            cbcs: None,
            nal: None,
            vp9: false,
            av1: false,
            title_kids: Vec::new(),
        };
        let p = protect_sample_entry(&raw, TrackKind::Audio, &tc);
        assert_eq!(&p[4..8], b"enca");
        assert_eq!(
            u32::from_be_bytes(p[0..4].try_into().unwrap()) as usize,
            p.len()
        );
        let frma = p.windows(4).position(|w| w == b"frma").unwrap();
        assert_eq!(&p[frma + 4..frma + 8], b"mp4a");
        let tenc = p.windows(4).position(|w| w == b"tenc").unwrap();
        assert_eq!(&p[tenc + 8..tenc + 12], &[0, 0, 1, 8]);
        assert_eq!(&p[tenc + 12..tenc + 28], &[7; 16]);
    }
}
