//! The per-sample cipher of Common Encryption: how one track is encrypted ([`TrackCrypto`]:
//! key, IVs, `cbcs` pattern, subsample framing) and the encryption of a run of samples in
//! chunks of any size as they are copied ([`RunCipher`]).

use aes::cipher::{BlockEncryptMut, KeyIvInit, StreamCipher};
use protocol::hex;

use super::nal::NalFormat;
use super::subsample::Subsample;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// The `cbcs` video pattern: `crypt_byte_block` encrypted blocks, then `skip_byte_block` clear.
pub const CBCS_VIDEO_PATTERN: (u8, u8) = (1, 9);

/// Per-sample IV size written in `tenc` and `senc` (cenc).
pub const IV_SIZE: u8 = 8;

/// How one track is encrypted.
#[derive(Debug, Clone)]
pub struct TrackCrypto {
    /// Key id.
    pub kid: [u8; 16],
    /// Key.
    pub key: [u8; 16],
    /// Base of the per-sample IVs (`cenc`).
    pub base_iv: u64,
    /// `cbcs`: the constant IV and the pattern `(crypt, skip)` in 16-byte blocks (`(0, 0)`:
    /// every whole block). `None`: `cenc`.
    pub cbcs: Option<Cbcs>,
    /// NAL framing for subsample encryption; `None` encrypts whole samples (audio).
    pub nal: Option<NalFormat>,
    /// VP9 (`vp09`): subsample encryption per frame ([`super::vp9::map_with`]).
    pub vp9: bool,
    /// AV1 (`av01`): subsample encryption of tile data ([`super::av1::map_with`]).
    pub av1: bool,
    /// Every key id of the title, listed in each init segment's `pssh`, so one licence request
    /// asks for all of them and the licence server answers with those the session may have.
    pub title_kids: Vec<[u8; 16]>,
}

/// The `cbcs` parameters of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cbcs {
    /// The constant IV (`tenc` `default_constant_IV`).
    pub iv: [u8; 16],
    /// `(crypt_byte_block, skip_byte_block)`; `(0, 0)` encrypts every whole block.
    pub pattern: (u8, u8),
}

impl Cbcs {
    /// Whether block `b` (0-based, counted from the start of a protected range) is encrypted.
    fn crypts(&self, b: u64) -> bool {
        let (c, s) = (u64::from(self.pattern.0), u64::from(self.pattern.1));
        c + s == 0 || b % (c + s) < c
    }
}

impl TrackCrypto {
    /// The key id as 32 lowercase hex digits.
    pub fn kid_hex(&self) -> String {
        hex::encode(&self.kid)
    }

    /// The IV of sample `index` (0-based, in the track).
    pub fn iv(&self, index: usize) -> [u8; 8] {
        self.base_iv.wrapping_add(index as u64).to_be_bytes()
    }

    /// Encrypts one sample in place following `map` (whole sample when `map` is empty).
    pub fn encrypt(&self, index: usize, sample: &mut [u8], map: &[Subsample]) {
        let maps = [map.to_vec()];
        self.run_cipher(index, std::iter::once(sample.len() as u64), &maps)
            .apply(0, sample);
    }

    /// A cipher for a run of consecutive samples `first..` stored back to back (`sizes`, with
    /// their subsample `maps`), to be applied to the run's bytes in order, in chunks of any
    /// size ([`RunCipher::apply`]), so the bytes can be encrypted where they were read.
    pub fn run_cipher<'a>(
        &'a self,
        first: usize,
        sizes: impl Iterator<Item = u64>,
        maps: &[Vec<Subsample>],
    ) -> RunCipher<'a> {
        let mut ranges = Vec::new();
        let mut at = 0u64;
        for ((k, size), map) in sizes.enumerate().zip(maps) {
            if map.is_empty() {
                ranges.push((first + k, at, at + size));
            } else {
                let mut pos = at;
                for sub in map {
                    pos += u64::from(sub.clear);
                    if sub.protected > 0 {
                        ranges.push((first + k, pos, pos + u64::from(sub.protected)));
                    }
                    pos += u64::from(sub.protected);
                }
            }
            at += size;
        }
        RunCipher {
            tc: self,
            ranges,
            next: 0,
            current: None,
            chain: None,
        }
    }

    /// Whether samples are split into subsamples (video) rather than encrypted whole (audio).
    pub fn subsamples(&self) -> bool {
        self.nal.is_some() || self.vp9 || self.av1
    }

    /// The per-sample IV size: 8 for `cenc`, 0 for `cbcs` (constant IV in `tenc`).
    pub fn iv_size(&self) -> u8 {
        if self.cbcs.is_some() {
            0
        } else {
            IV_SIZE
        }
    }

    /// The auxiliary information size of a sample (`saiz` entry).
    pub fn aux_size(&self, map: &[Subsample]) -> usize {
        usize::from(self.iv_size())
            + if self.subsamples() {
                2 + 6 * map.len()
            } else {
                0
            }
    }
}

/// Encrypts a run of samples chunk by chunk (see [`TrackCrypto::run_cipher`]): the protected
/// ranges of every sample, as offsets in the run, and the cipher state of the range (`cbcs`)
/// or sample (`cenc`) in progress.
pub struct RunCipher<'a> {
    tc: &'a TrackCrypto,
    /// `(sample index, start, end)` of every protected range, in order.
    ranges: Vec<(usize, u64, u64)>,
    next: usize,
    current: Option<(usize, Aes128Ctr)>,
    /// `cbcs`: the range whose CBC chain is in progress.
    chain: Option<(usize, Aes128CbcEnc)>,
}

impl RunCipher<'_> {
    /// How many of the `n` bytes from `pos` can be handed to [`RunCipher::apply`] in one chunk:
    /// `n`, or less so that no `cbcs` encrypted block is split across chunks (0 when the first
    /// such block starts at `pos`: hand at least 16 bytes then).
    pub fn limit(&self, pos: u64, n: u64) -> u64 {
        let Some(cb) = self.tc.cbcs else {
            return n;
        };
        let b = pos + n;
        for &(_, s, e) in &self.ranges[self.next..] {
            if s >= b {
                break;
            }
            if e <= b {
                continue;
            }
            let k = (b - s) / 16;
            let bs = s + 16 * k;
            if bs < b && bs + 16 <= e && cb.crypts(k) {
                return bs.saturating_sub(pos);
            }
            break;
        }
        n
    }

    /// Encrypts `chunk`, the run's bytes from offset `pos`; chunks must come in order and, for
    /// `cbcs`, end where [`RunCipher::limit`] allows.
    pub fn apply(&mut self, pos: u64, chunk: &mut [u8]) {
        let end = pos + chunk.len() as u64;
        while let Some(&(idx, s, e)) = self.ranges.get(self.next) {
            if s >= end {
                break;
            }
            let (a, b) = (s.max(pos), e.min(end));
            if a < b {
                match self.tc.cbcs {
                    Some(cb) => {
                        if self.chain.as_ref().is_none_or(|(r, _)| *r != self.next) {
                            self.chain = Some((
                                self.next,
                                Aes128CbcEnc::new(&self.tc.key.into(), &cb.iv.into()),
                            ));
                        }
                        if let Some((_, c)) = self.chain.as_mut() {
                            // Whole blocks of the range that start in [a, b), jumping over
                            // the skipped ones.
                            let (crypt, skip) = (u64::from(cb.pattern.0), u64::from(cb.pattern.1));
                            let mut k = (a - s).div_ceil(16);
                            while s + 16 * k + 16 <= e && s + 16 * k < b {
                                if cb.crypts(k) {
                                    let from = (s + 16 * k - pos) as usize;
                                    let block = &mut chunk[from..from + 16];
                                    c.encrypt_block_mut(block.into());
                                    k += 1;
                                } else {
                                    k = (k / (crypt + skip) + 1) * (crypt + skip);
                                }
                            }
                        }
                    }
                    None => {
                        if self.current.as_ref().is_none_or(|(i, _)| *i != idx) {
                            let mut counter = [0u8; 16];
                            counter[..8].copy_from_slice(&self.tc.iv(idx));
                            self.current =
                                Some((idx, Aes128Ctr::new(&self.tc.key.into(), &counter.into())));
                        }
                        if let Some((_, c)) = self.current.as_mut() {
                            c.apply_keystream(&mut chunk[(a - pos) as usize..(b - pos) as usize]);
                        }
                    }
                }
            }
            if e <= end {
                self.next += 1;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn ctr_counter_runs_across_subsamples() {
        let tc = cenc_track(2, 5);
        let clear: Vec<u8> = (0..80u8).collect();
        let map = [sub(8, 32), sub(8, 32)];
        let mut enc = clear.clone();
        tc.encrypt(0, &mut enc, &map);
        assert_eq!(enc[..8], clear[..8]);
        assert_eq!(enc[40..48], clear[40..48]);
        // The protected bytes, joined, equal one CTR stream over the joined clear bytes.
        let mut joined: Vec<u8> = clear[8..40].iter().chain(&clear[48..80]).copied().collect();
        let mut counter = [0u8; 16];
        counter[..8].copy_from_slice(&5u64.to_be_bytes());
        Aes128Ctr::new(&[2u8; 16].into(), &counter.into()).apply_keystream(&mut joined);
        let got: Vec<u8> = enc[8..40].iter().chain(&enc[48..80]).copied().collect();
        assert_eq!(got, joined);
        assert_ne!(tc.iv(0), tc.iv(1));
    }

    #[test]
    fn run_cipher_in_any_chunks_equals_per_sample_encryption() {
        let tc = cenc_track(3, 77);
        let sizes = [80u64, 50, 70];
        let maps = vec![
            vec![sub(8, 32), sub(8, 32)],
            vec![sub(50, 0)],
            vec![sub(6, 64)],
        ];
        let clear: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let mut want = clear.clone();
        let mut at = 0usize;
        for (k, (size, map)) in sizes.iter().zip(&maps).enumerate() {
            let n = *size as usize;
            tc.encrypt(4 + k, &mut want[at..at + n], map);
            at += n;
        }
        for chunk in [1usize, 7, 16, 33, 200] {
            let mut got = clear.clone();
            let mut rc = tc.run_cipher(4, sizes.iter().copied(), &maps);
            for (i, c) in got.chunks_mut(chunk).enumerate() {
                rc.apply((i * chunk) as u64, c);
            }
            assert_eq!(got, want, "chunks of {chunk}");
        }
        // Whole-sample (audio) maps.
        let mut want = clear.clone();
        tc.encrypt(0, &mut want[..120], &[]);
        tc.encrypt(1, &mut want[120..], &[]);
        let mut got = clear.clone();
        let mut rc = tc.run_cipher(0, [120u64, 80].into_iter(), &[vec![], vec![]]);
        for (i, c) in got.chunks_mut(13).enumerate() {
            rc.apply((i * 13) as u64, c);
        }
        assert_eq!(got, want);
    }

    /// A `cenc` video track with 4-byte NAL lengths.
    fn cenc_track(key: u8, base_iv: u64) -> TrackCrypto {
        TrackCrypto {
            key: [key; 16],
            base_iv,
            cbcs: None,
            ..cbcs_track(CBCS_VIDEO_PATTERN)
        }
    }

    fn sub(clear: u16, protected: u32) -> Subsample {
        Subsample { clear, protected }
    }

    pub(crate) fn cbcs_track(pattern: (u8, u8)) -> TrackCrypto {
        TrackCrypto {
            kid: [1; 16],
            key: [9; 16],
            base_iv: 0,
            cbcs: Some(Cbcs {
                iv: [4; 16],
                pattern,
            }),
            title_kids: Vec::new(),
            vp9: false,
            av1: false,
            nal: Some(NalFormat {
                length_size: 4,
                hevc: false,
            }),
        }
    }

    #[test]
    fn cbcs_pattern_chains_crypt_blocks_and_restarts_per_subsample() {
        let tc = cbcs_track(CBCS_VIDEO_PATTERN);
        // Subsample 1: 5 clear, 16 * 21 + 7 protected (blocks 0, 10, 20 encrypted, partial
        // block clear); subsample 2: 3 clear, 40 protected (block 0 encrypted).
        let p1 = 16 * 21 + 7;
        let map = [sub(5, p1 as u32), sub(3, 40)];
        let clear: Vec<u8> = (0..(5 + p1 + 3 + 40)).map(|i| (i * 13 + 1) as u8).collect();
        let mut enc = clear.clone();
        tc.encrypt(0, &mut enc, &map);
        let chain = |blocks: &[&[u8]]| -> Vec<u8> {
            let mut c = Aes128CbcEnc::new(&[9u8; 16].into(), &[4u8; 16].into());
            let mut out = Vec::new();
            for b in blocks {
                let mut x: [u8; 16] = (*b).try_into().unwrap();
                c.encrypt_block_mut((&mut x).into());
                out.push(x);
            }
            out.concat()
        };
        let want1 = chain(&[&clear[5..21], &clear[165..181], &clear[325..341]]);
        assert_eq!(
            [&enc[5..21], &enc[165..181], &enc[325..341]].concat(),
            want1
        );
        let s2 = 5 + p1 + 3;
        assert_eq!(&enc[s2..s2 + 16], &chain(&[&clear[s2..s2 + 16]])[..]);
        // Everything else is clear.
        let mut masked = enc.clone();
        for r in [5..21, 165..181, 325..341, s2..s2 + 16] {
            masked[r.clone()].copy_from_slice(&clear[r]);
        }
        assert_eq!(masked, clear);
        assert_ne!(enc, clear);
    }

    #[test]
    fn cbcs_audio_encrypts_every_whole_block_and_leaves_the_tail() {
        let tc = cbcs_track((0, 0));
        let clear: Vec<u8> = (0..75u8).collect();
        let mut enc = clear.clone();
        tc.encrypt(3, &mut enc, &[]);
        let mut want = clear.clone();
        let mut c = Aes128CbcEnc::new(&[9u8; 16].into(), &[4u8; 16].into());
        for b in want[..64].chunks_mut(16) {
            c.encrypt_block_mut(b.into());
        }
        assert_eq!(enc, want);
        assert_eq!(enc[64..], clear[64..]);
    }

    #[test]
    fn cbcs_run_cipher_in_limited_chunks_equals_per_sample_encryption() {
        for pattern in [CBCS_VIDEO_PATTERN, (0, 0)] {
            let mut tc = cbcs_track(pattern);
            if pattern == (0, 0) {
                tc.nal = None;
            }
            let sizes = [400u64, 37, 900];
            let maps: Vec<Vec<Subsample>> = if tc.nal.is_some() {
                vec![
                    vec![sub(7, 200), sub(9, 184)],
                    vec![sub(37, 0)],
                    vec![sub(11, 889)],
                ]
            } else {
                vec![vec![]; 3]
            };
            let clear: Vec<u8> = (0..1337u32).map(|i| (i * 7 + 3) as u8).collect();
            let mut want = clear.clone();
            let mut at = 0usize;
            for (k, (size, map)) in sizes.iter().zip(&maps).enumerate() {
                let n = *size as usize;
                tc.encrypt(k, &mut want[at..at + n], map);
                at += n;
            }
            for chunk in [1u64, 7, 16, 33, 100, 1337] {
                let mut got = clear.clone();
                let mut rc = tc.run_cipher(0, sizes.iter().copied(), &maps);
                let mut pos = 0u64;
                while pos < 1337 {
                    let mut n = chunk.min(1337 - pos);
                    n = rc.limit(pos, n);
                    if n == 0 {
                        n = rc.limit(pos, 16.max(chunk).min(1337 - pos));
                    }
                    assert!(n > 0, "{pattern:?} chunk {chunk} at {pos}");
                    rc.apply(pos, &mut got[pos as usize..(pos + n) as usize]);
                    pos += n;
                }
                assert_eq!(got, want, "{pattern:?} chunks of {chunk}");
            }
        }
    }
}
