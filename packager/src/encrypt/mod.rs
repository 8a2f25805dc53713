//! Common Encryption (ISO/IEC 23001-7), schemes `cenc` (AES-128 CTR) and `cbcs` (AES-128 CBC
//! with a pattern and a constant IV): key selection per track (one key for all audio, one per
//! video tier), the per-sample cipher, and the boxes encryption adds (`sinf` in the sample
//! entry, `pssh` in `moov`, `senc`/`saiz`/`saio` per fragment).
//!
//! Deterministic: keys and the IV seed come from the caller (the CLI draws them at random), so
//! the same inputs, keys and seed give the same bytes.
//!
//! `cenc`: per-sample IVs are 8 bytes: a per-track base derived from the seed and the rendition
//! id, plus the sample's index in the track, so no (key, IV) pair repeats within a track; with
//! CTR the low 8 bytes of the counter block count the 16-byte blocks inside a sample.
//!
//! `cbcs` (§10.4): one constant 16-byte IV per key id (derived from the seed and the kid),
//! written in `tenc` (`default_Per_Sample_IV_Size` 0), so `senc` holds only subsample maps.
//! Video follows the 1:9 pattern (one 16-byte block encrypted, nine clear, repeating from the
//! start of each protected range); audio encrypts every whole block of the sample (pattern 0:0
//! in `tenc`). The CBC chain restarts with the constant IV at each protected range (subsample;
//! whole sample for audio) and runs across its encrypted blocks only; a trailing partial block
//! stays clear.
//!
//! Here: key selection per track ([`track_crypto`], [`keys_needed`], [`generate_keys`],
//! [`check_keys`]). [`cipher`]: the cipher ([`TrackCrypto`], [`RunCipher`]). [`nal`]: the one
//! walker building subsample maps of H.264/HEVC samples, per scheme, over the parameter-set
//! syntax of [`h264`] and [`hevc`]; [`vp9`]: VP9 frames; [`av1`]: AV1 OBUs ([`FrameMaps`] picks
//! one of these two per track); [`subsample`]: the map entries.
//! [`boxes`]: the boxes encryption adds. All pure: no file I/O (the caller reads the samples).

pub mod av1;
pub mod boxes;
pub mod cipher;
pub mod h264;
pub mod hevc;
pub mod nal;
pub mod subsample;
pub mod vp9;

use protocol::catalog::{Tier, TrackKind};
use protocol::content_keys::{ContentKeys, Scheme};
use protocol::hex;
use sha2::{Digest, Sha256};

use crate::bmff::Track;
use crate::error::{Error, Result};
pub use boxes::{fragment_boxes, protect_sample_entry, pssh, COMMON_SYSTEM_ID};
pub use cipher::{Cbcs, RunCipher, TrackCrypto, CBCS_VIDEO_PATTERN, IV_SIZE};
pub use nal::NalFormat;
pub use subsample::Subsample;

/// Encryption requested for a title.
#[derive(Debug, Clone)]
pub struct EncryptOptions {
    /// The keys (validated; the scheme must be the one wanted).
    pub keys: ContentKeys,
    /// Seed of the per-track IVs (the CLI draws it at random).
    pub iv_seed: [u8; 16],
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
        b"vp09" | b"av01" => Ok(None),
        f => Err(unsupported(&format!(
            "{} samples (only H.264, HEVC, VP9, AV1 and audio are encrypted so far)",
            String::from_utf8_lossy(f)
        ))),
    }
}

/// The payload of the `tag` box (`avcC`, `hvcC`) of a sample entry (`raw`, the whole entry
/// box), if any.
pub fn config_payload<'a>(raw: &'a [u8], tag: &[u8; 4]) -> Option<&'a [u8]> {
    let at = raw.windows(4).position(|w| w == tag)?;
    let size = u32::from_be_bytes(raw.get(at.checked_sub(4)?..at)?.try_into().ok()?) as usize;
    raw.get(at + 4..(at - 4).checked_add(size)?)
}

/// Picks the key of `track` (rendition `id`) from `opts` and derives its IV base.
pub fn track_crypto(opts: &EncryptOptions, id: &str, track: &Track) -> Result<TrackCrypto> {
    let (nal, tier) = match track.kind {
        TrackKind::Video => (
            nal_format(track)?,
            Some(Tier::from_height(track.entry.height)),
        ),
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => (None, None),
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
                    TrackKind::Audio | TrackKind::Text | TrackKind::Image => "audio",
                },
                tier.map_or("null".to_string(), |t| t.to_string())
            ))
        })?;
    let mut h = Sha256::new();
    h.update(opts.iv_seed);
    h.update(id.as_bytes());
    let d = h.finalize();
    let base_iv = u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]));
    let kid = key.kid_bytes();
    let cbcs = (opts.keys.scheme == Scheme::Cbcs).then(|| {
        let mut h = Sha256::new();
        h.update(opts.iv_seed);
        h.update(b"cbcs constant IV");
        h.update(kid);
        let d = h.finalize();
        Cbcs {
            iv: d[..16].try_into().unwrap_or([0; 16]),
            pattern: match track.kind {
                TrackKind::Video => CBCS_VIDEO_PATTERN,
                TrackKind::Audio | TrackKind::Text | TrackKind::Image => (0, 0),
            },
        }
    });
    Ok(TrackCrypto {
        kid,
        key: key.key_bytes(),
        base_iv,
        cbcs,
        nal,
        vp9: track.kind == TrackKind::Video && &track.entry.fourcc == b"vp09",
        av1: track.kind == TrackKind::Video && &track.entry.fourcc == b"av01",
        title_kids: Vec::new(),
    })
}

/// The per-track state of the subsample mappers of codecs without NAL framing (VP9, AV1).
#[derive(Debug, Clone)]
pub enum FrameMaps {
    /// VP9 frames ([`vp9::map_with`]).
    Vp9(vp9::Vp9State),
    /// AV1 OBUs ([`av1::map_with`]); `cbcs` or `cenc` rules.
    Av1(Box<av1::Av1State>, bool),
}

impl FrameMaps {
    /// The mapper of `track` encrypted by `tc` (AV1 reads the `av1C` sequence header).
    pub fn new(track: &Track, tc: &TrackCrypto) -> Result<Self> {
        if !tc.av1 {
            return Ok(FrameMaps::Vp9(vp9::Vp9State::default()));
        }
        let st =
            av1::Av1State::from_av1c(config_payload(&track.entry.raw, b"av1C")).map_err(|e| {
                Error::Invalid {
                    file: track.file.clone(),
                    box_path: "moov/trak/mdia/minf/stbl/stsd/av01/av1C".into(),
                    offset: 0,
                    reason: e.0,
                }
            })?;
        Ok(FrameMaps::Av1(Box::new(st), tc.cbcs.is_some()))
    }

    /// The subsample map of the next sample of the track (`size` bytes read through `peek`).
    pub fn map_with(
        &mut self,
        size: usize,
        peek: &mut subsample::Peek<'_>,
    ) -> std::result::Result<Vec<Subsample>, subsample::MapError> {
        match self {
            FrameMaps::Vp9(st) => vp9::map_with(size, st, peek),
            FrameMaps::Av1(st, cbcs) => av1::map_with(size, st, *cbcs, peek),
        }
    }
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

/// What keys `tracks` need: whether there is audio, and the video tiers present (sorted).
/// Pure: [`crate::package::keys_needed`] is its file-reading edge.
pub fn keys_needed<'a>(tracks: impl IntoIterator<Item = &'a Track>) -> (bool, Vec<Tier>) {
    let mut audio = false;
    let mut tiers = Vec::new();
    for t in tracks {
        match t.kind {
            TrackKind::Audio | TrackKind::Text | TrackKind::Image => audio = true,
            TrackKind::Video => {
                let tier = Tier::from_height(t.entry.height);
                if !tiers.contains(&tier) {
                    tiers.push(tier);
                }
            }
        }
    }
    tiers.sort();
    (audio, tiers)
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
        kid: hex::encode(&random()),
        key: hex::encode(&random()),
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
    fn keys_needed_lists_audio_and_each_video_tier_once_sorted() {
        let track = |kind, height| Track {
            file: "in.mp4".into(),
            track_id: 1,
            role: Default::default(),
            kind,
            timescale: 1000,
            language: "und".into(),
            entry: crate::bmff::SampleEntry {
                fourcc: *b"avc1",
                raw: Vec::new(),
                codec: String::new(),
                width: 0,
                height,
                pixel_aspect: None,
                sample_rate: 0,
                channels: 0,
            },
            edit_shift: 0,
            samples: Vec::new(),
        };
        let v = |h| track(TrackKind::Video, h);
        assert_eq!(keys_needed(&[]), (false, vec![]));
        let (audio, tiers) = keys_needed(&[v(1080), v(240), track(TrackKind::Audio, 0), v(360)]);
        assert!(audio);
        let mut want = vec![
            Tier::from_height(1080),
            Tier::from_height(240),
            Tier::from_height(360),
        ];
        want.sort();
        want.dedup();
        assert_eq!(tiers, want);
        assert_eq!(
            keys_needed(&[v(720)]),
            (false, vec![Tier::from_height(720)])
        );
    }
}
