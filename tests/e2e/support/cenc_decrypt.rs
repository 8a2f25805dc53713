//! A test-only Common Encryption decryptor (ISO/IEC 23001-7 `cenc` and `cbcs`) for fragmented
//! MP4, written separately from the packager (no packager code is used): a small box walker
//! reads the init segment's `sinf` (`frma`, `schm`, `tenc`) and each fragment's `tfhd`, `trun`,
//! `senc`, `saiz` and `saio`, checks that `saiz`/`saio` describe the `senc` entries, and
//! decrypts every sample with the RustCrypto `aes` + `ctr`/`cbc` crates directly. The result is
//! the list of clear samples of the file's single track, to be compared with the clear
//! packaging of the same input.

use aes::cipher::{BlockDecryptMut, KeyIvInit, StreamCipher};

type Ctr = ctr::Ctr128BE<aes::Aes128>;
type CbcDec = cbc::Decryptor<aes::Aes128>;

/// What the init segment says about the protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// `schm` scheme type: `cenc` or `cbcs`.
    pub scheme: String,
    /// `frma`: the original sample entry type.
    pub original: String,
    /// `tenc` version.
    pub tenc_version: u8,
    /// `(crypt_byte_block, skip_byte_block)` (0, 0 for version 0).
    pub pattern: (u8, u8),
    /// `default_Per_Sample_IV_Size`.
    pub iv_size: u8,
    /// `default_KID`.
    pub kid: [u8; 16],
    /// `default_constant_IV` (empty when per-sample IVs are used).
    pub constant_iv: Vec<u8>,
}

/// A decrypted file: the protection and every sample, in order.
#[derive(Debug)]
pub struct Decrypted {
    /// From the init segment (`None`: the track is not encrypted).
    pub protection: Option<Protection>,
    /// The samples, decrypted.
    pub samples: Vec<Vec<u8>>,
    /// How many samples had a subsample map in `senc`.
    pub with_subsamples: usize,
}

/// A sample's IV (empty with a constant IV) and its `(clear, protected)` subsamples.
type SampleInfo = (Vec<u8>, Vec<(usize, usize)>);

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

/// The boxes directly inside `b[start..end]`: `(type, box start, payload start, box end)`.
fn children(b: &[u8], start: usize, end: usize) -> Vec<([u8; 4], usize, usize, usize)> {
    let mut out = Vec::new();
    let mut at = start;
    while at + 8 <= end {
        let mut size = u32_at(b, at) as usize;
        let mut header = 8;
        if size == 1 {
            size = u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap()) as usize;
            header = 16;
        } else if size == 0 {
            size = end - at;
        }
        assert!(size >= header && at + size <= end, "box at {at} overruns");
        out.push((
            b[at + 4..at + 8].try_into().unwrap(),
            at,
            at + header,
            at + size,
        ));
        at += size;
    }
    out
}

fn child(
    b: &[u8],
    start: usize,
    end: usize,
    name: &[u8; 4],
) -> Option<([u8; 4], usize, usize, usize)> {
    children(b, start, end).into_iter().find(|c| &c.0 == name)
}

fn path(b: &[u8], start: usize, end: usize, names: &[&[u8; 4]]) -> Option<(usize, usize)> {
    let (mut s, mut e) = (start, end);
    for n in names {
        let c = child(b, s, e, n)?;
        s = c.2;
        e = c.3;
    }
    Some((s, e))
}

fn protection(b: &[u8], moov: (usize, usize)) -> Option<Protection> {
    let (s, e) = path(
        b,
        moov.0,
        moov.1,
        &[b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
    )
    .expect("moov/trak/mdia/minf/stbl/stsd");
    let entry = children(b, s + 8, e)
        .into_iter()
        .next()
        .expect("a sample entry");
    if &entry.0 != b"encv" && &entry.0 != b"enca" {
        return None;
    }
    // The sinf is the last child of the sample entry; find it by scanning its boxes after the
    // fixed fields (78 bytes for visual, 28 for audio entries).
    let fixed = if &entry.0 == b"encv" { 78 } else { 28 };
    let (ss, se) = path(b, entry.2 + fixed, entry.3, &[b"sinf"]).expect("sinf in the sample entry");
    let frma = child(b, ss, se, b"frma").expect("frma");
    let schm = child(b, ss, se, b"schm").expect("schm");
    let (ts, te) = path(b, ss, se, &[b"schi", b"tenc"]).expect("schi/tenc");
    let version = b[ts];
    let pattern_byte = b[ts + 5];
    let iv_size = b[ts + 7];
    let kid: [u8; 16] = b[ts + 8..ts + 24].try_into().unwrap();
    let mut constant_iv = Vec::new();
    if b[ts + 6] == 1 && iv_size == 0 {
        let n = usize::from(b[ts + 24]);
        constant_iv = b[ts + 25..ts + 25 + n].to_vec();
        assert_eq!(ts + 25 + n, te, "tenc size");
    } else {
        assert_eq!(ts + 24, te, "tenc size");
    }
    Some(Protection {
        scheme: String::from_utf8_lossy(&b[schm.2 + 4..schm.2 + 8]).into_owned(),
        original: String::from_utf8_lossy(&b[frma.2..frma.2 + 4]).into_owned(),
        tenc_version: version,
        pattern: if version == 0 {
            (0, 0)
        } else {
            (pattern_byte >> 4, pattern_byte & 0x0f)
        },
        iv_size,
        kid,
        constant_iv,
    })
}

/// Decrypts `range` of `sample` in CBC with `iv`, following `pattern` from the range's start;
/// a trailing partial block stays as it is.
fn cbc_range(key: &[u8; 16], iv: &[u8; 16], pattern: (u8, u8), data: &mut [u8]) {
    let mut d = CbcDec::new(key.into(), iv.into());
    let (c, s) = (usize::from(pattern.0), usize::from(pattern.1));
    for (k, block) in data.chunks_exact_mut(16).enumerate() {
        if c + s == 0 || k % (c + s) < c {
            d.decrypt_block_mut(block.into());
        }
    }
}

/// Decrypts every sample of `file` (an init segment followed by fragments: an on-demand file,
/// or an init segment and a media segment concatenated) with `key`.
pub fn decrypt(file: &[u8], key: &[u8; 16]) -> Decrypted {
    let top = children(file, 0, file.len());
    let moov = top.iter().find(|c| &c.0 == b"moov").expect("moov");
    let prot = protection(file, (moov.2, moov.3));
    let mut samples = Vec::new();
    let mut with_subsamples = 0;
    for (name, moof_start, ms, me) in &top {
        if name != b"moof" {
            continue;
        }
        let (ts, te) = path(file, *ms, *me, &[b"traf"]).expect("moof/traf");
        let tfhd = child(file, ts, te, b"tfhd").expect("tfhd");
        let flags = u32_at(file, tfhd.2) & 0xff_ffff;
        let mut at = tfhd.2 + 8;
        let mut base = *moof_start as u64;
        if flags & 1 != 0 {
            base = u64::from_be_bytes(file[at..at + 8].try_into().unwrap());
            at += 8;
        }
        if flags & 2 != 0 {
            at += 4;
        }
        if flags & 8 != 0 {
            at += 4;
        }
        let default_size = (flags & 0x10 != 0).then(|| u32_at(file, at));
        let trun = child(file, ts, te, b"trun").expect("trun");
        let tf = u32_at(file, trun.2) & 0xff_ffff;
        let count = u32_at(file, trun.2 + 4) as usize;
        let mut p = trun.2 + 8;
        let mut data = base;
        if tf & 1 != 0 {
            data = (base as i64 + i64::from(u32_at(file, p) as i32)) as u64;
            p += 4;
        }
        if tf & 4 != 0 {
            p += 4;
        }
        let mut sizes = Vec::with_capacity(count);
        for _ in 0..count {
            if tf & 0x100 != 0 {
                p += 4;
            }
            let size = if tf & 0x200 != 0 {
                p += 4;
                u32_at(file, p - 4)
            } else {
                default_size.expect("sample size in trun or tfhd")
            };
            sizes.push(size as usize);
            if tf & 0x400 != 0 {
                p += 4;
            }
            if tf & 0x800 != 0 {
                p += 4;
            }
        }
        // Per-sample encryption info: IV and subsample map from senc, checked against
        // saiz/saio.
        let mut infos: Vec<SampleInfo> = vec![(Vec::new(), Vec::new()); count];
        if let Some(pr) = &prot {
            let senc = child(file, ts, te, b"senc").expect("senc in an encrypted fragment");
            let sflags = u32_at(file, senc.2) & 0xff_ffff;
            assert_eq!(
                u32_at(file, senc.2 + 4) as usize,
                count,
                "senc sample_count"
            );
            let iv_size = usize::from(pr.iv_size);
            let mut q = senc.2 + 8;
            let mut aux_sizes = Vec::with_capacity(count);
            for info in infos.iter_mut() {
                let start = q;
                info.0 = file[q..q + iv_size].to_vec();
                q += iv_size;
                if sflags & 2 != 0 {
                    let n = usize::from(u16_at(file, q));
                    q += 2;
                    for _ in 0..n {
                        info.1
                            .push((usize::from(u16_at(file, q)), u32_at(file, q + 2) as usize));
                        q += 6;
                    }
                }
                aux_sizes.push(q - start);
            }
            assert_eq!(q, senc.3, "senc entries fill the box");
            let saiz = child(file, ts, te, b"saiz").expect("saiz");
            let default = usize::from(file[saiz.2 + 4]);
            assert_eq!(
                u32_at(file, saiz.2 + 5) as usize,
                count,
                "saiz sample_count"
            );
            for (k, &s) in aux_sizes.iter().enumerate() {
                let want = if default == 0 {
                    usize::from(file[saiz.2 + 9 + k])
                } else {
                    default
                };
                assert_eq!(want, s, "saiz entry {k}");
            }
            let saio = child(file, ts, te, b"saio").expect("saio");
            assert_eq!(u32_at(file, saio.2 + 4), 1, "saio entry_count");
            let off = u32_at(file, saio.2 + 8) as usize;
            assert_eq!(
                *moof_start + off,
                senc.2 + 8,
                "saio points at the senc entries"
            );
            if sflags & 2 != 0 {
                with_subsamples += count;
            }
        }
        let mut at = data as usize;
        for (size, (iv, subs)) in sizes.iter().zip(&infos) {
            let mut s = file[at..at + size].to_vec();
            at += size;
            if let Some(pr) = &prot {
                let ranges: Vec<(usize, usize)> = if subs.is_empty() {
                    vec![(0, s.len())]
                } else {
                    let mut pos = 0;
                    let mut r = Vec::new();
                    for &(clear, protected) in subs {
                        pos += clear;
                        r.push((pos, pos + protected));
                        pos += protected;
                    }
                    assert_eq!(pos, s.len(), "subsamples cover the sample");
                    r
                };
                match pr.scheme.as_str() {
                    "cenc" => {
                        let mut counter = [0u8; 16];
                        counter[..iv.len()].copy_from_slice(iv);
                        let mut c = Ctr::new(key.into(), &counter.into());
                        for (a, b) in ranges {
                            c.apply_keystream(&mut s[a..b]);
                        }
                    }
                    "cbcs" => {
                        let iv: [u8; 16] = if pr.iv_size == 0 {
                            pr.constant_iv
                                .as_slice()
                                .try_into()
                                .expect("16-byte constant IV")
                        } else {
                            iv.as_slice().try_into().expect("16-byte IV")
                        };
                        for (a, b) in ranges {
                            cbc_range(key, &iv, pr.pattern, &mut s[a..b]);
                        }
                    }
                    other => panic!("scheme {other} is not supported by this decryptor"),
                }
            }
            samples.push(s);
        }
    }
    Decrypted {
        protection: prot,
        samples,
        with_subsamples,
    }
}
