//! Common Encryption (ISO/IEC 23001-7), scheme `cenc` (AES-128 CTR): key selection per track
//! (one key for all audio, one per video tier), the per-sample cipher, and the boxes encryption
//! adds (`sinf` in the sample entry, `pssh` in `moov`, `senc`/`saiz`/`saio` per fragment).
//!
//! Deterministic: keys and the IV seed come from the caller (the CLI draws them at random), so
//! the same inputs, keys and seed give the same bytes. Per-sample IVs are 8 bytes: a per-track
//! base derived from the seed and the rendition id, plus the sample's index in the track, so no
//! (key, IV) pair repeats within a track; with CTR the low 8 bytes of the counter block count
//! the 16-byte blocks inside a sample.

pub mod subsample;
pub mod vp9;

use aes::cipher::{KeyIvInit, StreamCipher};
use protocol::catalog::{Tier, TrackKind};
use protocol::content_keys::{ContentKeys, Scheme};
use sha2::{Digest, Sha256};

use crate::bmff::Track;
use crate::cmaf::boxes::BoxBuf;
use crate::error::{Error, Result};
pub use subsample::{NalFormat, Subsample};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The W3C Common PSSH system id (`1077efec-c0b2-4d02-ace3-3c1e52e2fb4b`).
pub const COMMON_SYSTEM_ID: [u8; 16] = [
    0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b,
];

/// Per-sample IV size written in `tenc` and `senc` (cenc).
pub const IV_SIZE: u8 = 8;

/// Encryption requested for a title.
#[derive(Debug, Clone)]
pub struct EncryptOptions {
    /// The keys (validated; the scheme must be the one wanted).
    pub keys: ContentKeys,
    /// Seed of the per-track IVs (the CLI draws it at random).
    pub iv_seed: [u8; 16],
}

/// How one track is encrypted.
#[derive(Debug, Clone)]
pub struct TrackCrypto {
    /// Key id.
    pub kid: [u8; 16],
    /// Key.
    pub key: [u8; 16],
    /// Base of the per-sample IVs.
    pub base_iv: u64,
    /// NAL framing for subsample encryption; `None` encrypts whole samples (audio).
    pub nal: Option<NalFormat>,
    /// VP9 (`vp09`): subsample encryption per frame ([`vp9::map_with`]).
    pub vp9: bool,
    /// Every key id of the title, listed in each init segment's `pssh`, so one licence request
    /// asks for all of them and the licence server answers with those the session may have.
    pub title_kids: Vec<[u8; 16]>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TrackCrypto {
    /// The key id as 32 lowercase hex digits.
    pub fn kid_hex(&self) -> String {
        hex(&self.kid)
    }

    /// The IV of sample `index` (0-based, in the track).
    pub fn iv(&self, index: usize) -> [u8; 8] {
        self.base_iv.wrapping_add(index as u64).to_be_bytes()
    }

    /// Encrypts one sample in place following `map` (whole sample when `map` is empty).
    pub fn encrypt(&self, index: usize, sample: &mut [u8], map: &[Subsample]) {
        let mut counter = [0u8; 16];
        counter[..8].copy_from_slice(&self.iv(index));
        let mut c = Aes128Ctr::new(&self.key.into(), &counter.into());
        if map.is_empty() {
            c.apply_keystream(sample);
            return;
        }
        let mut pos = 0usize;
        for s in map {
            pos += usize::from(s.clear);
            let end = pos + s.protected as usize;
            c.apply_keystream(&mut sample[pos..end]);
            pos = end;
        }
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
        }
    }

    /// Whether samples are split into subsamples (video) rather than encrypted whole (audio).
    pub fn subsamples(&self) -> bool {
        self.nal.is_some() || self.vp9
    }

    /// The auxiliary information size of a sample (`saiz` entry).
    pub fn aux_size(&self, map: &[Subsample]) -> usize {
        usize::from(IV_SIZE)
            + if self.subsamples() {
                2 + 6 * map.len()
            } else {
                0
            }
    }
}

/// Encrypts a run of samples chunk by chunk (see [`TrackCrypto::run_cipher`]): the protected
/// ranges of every sample, as offsets in the run, and the CTR state of the sample in progress.
pub struct RunCipher<'a> {
    tc: &'a TrackCrypto,
    /// `(sample index, start, end)` of every protected range, in order.
    ranges: Vec<(usize, u64, u64)>,
    next: usize,
    current: Option<(usize, Aes128Ctr)>,
}

impl RunCipher<'_> {
    /// Encrypts `chunk`, the run's bytes from offset `pos`; chunks must come in order.
    pub fn apply(&mut self, pos: u64, chunk: &mut [u8]) {
        let end = pos + chunk.len() as u64;
        while let Some(&(idx, s, e)) = self.ranges.get(self.next) {
            if s >= end {
                break;
            }
            let (a, b) = (s.max(pos), e.min(end));
            if a < b {
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
            if e <= end {
                self.next += 1;
            } else {
                break;
            }
        }
    }
}

/// The NAL framing of a video track from its sample entry (`avcC`/`hvcC`), or `None` for a
/// codec that is encrypted some other way.
fn nal_format(track: &Track) -> Result<Option<NalFormat>> {
    let raw = &track.entry.raw;
    let find = |tag: &[u8; 4]| raw.windows(4).position(|w| w == tag);
    let unsupported = |what: &str| Error::Unsupported {
        file: track.file.clone(),
        box_path: "moov/trak/mdia/minf/stbl/stsd".into(),
        reason: format!("encryption of {what}"),
    };
    match &track.entry.fourcc {
        b"avc1" | b"avc3" => {
            let at = find(b"avcC").ok_or_else(|| unsupported("avc1 without avcC"))?;
            let b = raw.get(at + 8).ok_or_else(|| unsupported("a short avcC"))?;
            Ok(Some(NalFormat {
                length_size: usize::from(b & 3) + 1,
                hevc: false,
            }))
        }
        b"hvc1" | b"hev1" => {
            let at = find(b"hvcC").ok_or_else(|| unsupported("hvc1 without hvcC"))?;
            let b = raw
                .get(at + 4 + 21)
                .ok_or_else(|| unsupported("a short hvcC"))?;
            Ok(Some(NalFormat {
                length_size: usize::from(b & 3) + 1,
                hevc: true,
            }))
        }
        b"vp09" => Ok(None),
        f => Err(unsupported(&format!(
            "{} samples (only H.264, HEVC, VP9 and audio are encrypted so far)",
            String::from_utf8_lossy(f)
        ))),
    }
}

/// Picks the key of `track` (rendition `id`) from `opts` and derives its IV base.
pub fn track_crypto(opts: &EncryptOptions, id: &str, track: &Track) -> Result<TrackCrypto> {
    let (nal, tier) = match track.kind {
        TrackKind::Video => (
            nal_format(track)?,
            Some(Tier::from_height(track.entry.height)),
        ),
        TrackKind::Audio => (None, None),
    };
    let key = opts
        .keys
        .keys
        .iter()
        .find(|k| k.track_type == track.kind && k.tier == tier)
        .ok_or_else(|| {
            Error::Keys(format!(
                "field keys: no key with track_type {:?} and tier {} for rendition {id}",
                match track.kind {
                    TrackKind::Video => "video",
                    TrackKind::Audio => "audio",
                },
                tier.map_or("null".to_string(), |t| t.to_string())
            ))
        })?;
    let mut h = Sha256::new();
    h.update(opts.iv_seed);
    h.update(id.as_bytes());
    let d = h.finalize();
    let base_iv = u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]));
    Ok(TrackCrypto {
        kid: key.kid_bytes(),
        key: key.key_bytes(),
        base_iv,
        nal,
        vp9: track.kind == TrackKind::Video && &track.entry.fourcc == b"vp09",
        title_kids: Vec::new(),
    })
}

/// Checks the keys file against the wanted scheme and its own rules.
pub fn check_keys(keys: &ContentKeys, scheme: Scheme) -> Result<()> {
    keys.validate().map_err(|e| Error::Keys(e.to_string()))?;
    if keys.scheme != scheme {
        return Err(Error::Keys(format!(
            "field scheme: the keys file says {:?} but --encrypt {} was asked",
            keys.scheme.as_str(),
            scheme.as_str()
        )));
    }
    Ok(())
}

/// The sample entry `raw` turned into `encv`/`enca` with a `sinf` appended.
pub fn protect_sample_entry(raw: &[u8], kind: TrackKind, kid: &[u8; 16]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let original: [u8; 4] = raw[4..8].try_into().unwrap_or(*b"    ");
    out[4..8].copy_from_slice(match kind {
        TrackKind::Video => b"encv",
        TrackKind::Audio => b"enca",
    });
    let mut b = BoxBuf::new();
    b.open(b"sinf");
    b.open(b"frma");
    b.fourcc(&original);
    b.close();
    b.open_full(b"schm", 0, 0);
    b.fourcc(b"cenc");
    b.u32(0x0001_0000);
    b.close();
    b.open(b"schi");
    b.open_full(b"tenc", 0, 0);
    b.bytes(&[0, 0, 1, IV_SIZE]);
    b.bytes(kid);
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
            (big - 10) / 6
        )));
    }
    let same = sizes.iter().all(|&s| s == sizes[0]);
    if same && !sizes.is_empty() {
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
        b.bytes(&tc.iv(first + k));
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

/// What keys `inputs` need: whether there is audio, and the video tiers present (sorted).
pub fn keys_needed(inputs: &[std::path::PathBuf]) -> Result<(bool, Vec<Tier>)> {
    let mut audio = false;
    let mut tiers = Vec::new();
    for input in inputs {
        for t in crate::bmff::parse_file(input)? {
            match t.kind {
                TrackKind::Audio => audio = true,
                TrackKind::Video => {
                    let tier = Tier::from_height(t.entry.height);
                    if !tiers.contains(&tier) {
                        tiers.push(tier);
                    }
                }
            }
        }
    }
    tiers.sort();
    Ok((audio, tiers))
}

/// Fresh keys for a title: one audio key (when `audio`) and one per video tier in `tiers`,
/// each kid and key drawn from `random`.
pub fn generate_keys(
    title: &str,
    scheme: Scheme,
    audio: bool,
    tiers: &[Tier],
    random: &mut dyn FnMut() -> [u8; 16],
) -> ContentKeys {
    let mut keys = Vec::new();
    let mut make = |tier: Option<Tier>, kind: TrackKind| protocol::content_keys::ContentKey {
        kid: hex(&random()),
        key: hex(&random()),
        tier,
        track_type: kind,
    };
    for t in tiers {
        keys.push(make(Some(*t), TrackKind::Video));
    }
    if audio {
        keys.push(make(None, TrackKind::Audio));
    }
    ContentKeys {
        title: title.to_string(),
        scheme,
        keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_counter_runs_across_subsamples() {
        let tc = TrackCrypto {
            kid: [1; 16],
            key: [2; 16],
            base_iv: 5,
            title_kids: Vec::new(),
            vp9: false,
            nal: Some(NalFormat {
                length_size: 4,
                hevc: false,
            }),
        };
        let clear: Vec<u8> = (0..80u8).collect();
        let map = [
            Subsample {
                clear: 8,
                protected: 32,
            },
            Subsample {
                clear: 8,
                protected: 32,
            },
        ];
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
        let tc = TrackCrypto {
            kid: [1; 16],
            key: [3; 16],
            base_iv: 77,
            title_kids: Vec::new(),
            vp9: false,
            nal: Some(NalFormat {
                length_size: 4,
                hevc: false,
            }),
        };
        let sizes = [80u64, 50, 70];
        let maps = vec![
            vec![
                Subsample {
                    clear: 8,
                    protected: 32,
                },
                Subsample {
                    clear: 8,
                    protected: 32,
                },
            ],
            vec![Subsample {
                clear: 50,
                protected: 0,
            }],
            vec![Subsample {
                clear: 6,
                protected: 64,
            }],
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

    #[test]
    fn sample_entry_gets_sinf_and_new_size() {
        let mut raw = 16u32.to_be_bytes().to_vec();
        raw.extend_from_slice(b"mp4a");
        raw.extend_from_slice(&[9; 8]);
        let p = protect_sample_entry(&raw, TrackKind::Audio, &[7; 16]);
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
