//! `outpost package --encrypt cbcs` end to end through the real binary, checked by an
//! independent decryptor (`crate::support::cenc_decrypt`, written apart from the packager on the
//! RustCrypto primitives): every rendition of the H.264 ladder (with its HD rung) and of the VP9
//! ladder, in both output modes, decrypts sample for sample to the clear packaging of the same
//! inputs; the init segments carry `schm` `cbcs` and a version-1 `tenc` (1:9 pattern for video,
//! 0:0 for audio, constant 16-byte IV, no per-sample IV); the manifests signal `cbcs` (DASH)
//! and `SAMPLE-AES` (HLS). The decryptor itself is checked once against ffmpeg's `cenc`
//! decryption (`#[ignore]`d: needs ffmpeg, `./scripts/test`).

use protocol::hex::encode as hex;
use std::path::{Path, PathBuf};

use crate::support::cenc_decrypt::{decrypt, Decrypted};
use crate::support::{ladder, media, tool, unhex};
use protocol::catalog::{CatalogEntry, TrackKind};
use protocol::content_keys::ContentKeys;

/// The files of one rendition as decryptable units: the on-demand file, or init + each segment.
fn units(root: &Path, title: &str, files: &[String]) -> Vec<Vec<u8>> {
    let media: Vec<&String> = files.iter().filter(|f| !f.ends_with(".m3u8")).collect();
    let read = |f: &str| std::fs::read(root.join(title).join(f)).unwrap();
    if media.len() == 1 {
        return vec![read(media[0])];
    }
    let init = read(media[0]);
    media[1..]
        .iter()
        .map(|seg| {
            let mut all = init.clone();
            all.extend(read(seg));
            all
        })
        .collect()
}

fn key_of(keys: &ContentKeys, kid: &str) -> [u8; 16] {
    let k = &keys.keys.iter().find(|k| k.kid == kid).unwrap().key;
    unhex(k).try_into().unwrap()
}

fn decrypt_all(units: &[Vec<u8>], key: &[u8; 16]) -> Vec<Decrypted> {
    units.iter().map(|u| decrypt(u, key)).collect()
}

fn package_cbcs(
    root: &Path,
    title: &str,
    segmented: bool,
    extra: &[&str],
    inputs: &[PathBuf],
) -> ContentKeys {
    let mut args = vec!["--segment-duration", "2", "--encrypt", "cbcs"];
    args.extend(extra);
    crate::support::package(root, title, segmented, &args, inputs);
    let text = std::fs::read_to_string(root.join(format!("{title}.keys.json"))).unwrap();
    ContentKeys::from_json(&text).unwrap()
}

#[test]
fn encrypt_cbcs_round_trip_independent_decryptor() {
    let root = tempfile::tempdir().unwrap();
    for (name, inputs) in [
        ("h264", ladder("h264", true)),
        ("vp9", ladder("vp9", false)),
    ] {
        for segmented in [false, true] {
            round_trip(root.path(), name, &inputs, &[], segmented);
        }
    }
    // A keyframe-only trick play rendition is encrypted like the ladder (the SD key) and
    // decrypts to the clear packaging's samples too.
    let trick = media("ladder-h264/trick-144p.mp4");
    let trick = ["--trick-play", trick.to_str().unwrap()];
    for segmented in [false, true] {
        round_trip(
            root.path(),
            "h264-trick",
            &ladder("h264", false),
            &trick,
            segmented,
        );
    }
}

/// Packages `inputs` (with the packager arguments `extra`, e.g. a trick play rendition) clear
/// and with cbcs and checks every rendition: the decryptor's samples equal the clear
/// packaging's, the init segments signal cbcs, the manifests too.
fn round_trip(root: &Path, name: &str, inputs: &[PathBuf], extra: &[&str], segmented: bool) {
    let clear_title = format!("clear-{name}-{segmented}");
    let mut args = vec!["--segment-duration", "2"];
    args.extend(extra);
    let clear: CatalogEntry = crate::support::package(root, &clear_title, segmented, &args, inputs);
    let title = format!("cbcs-{name}-{segmented}");
    let keys = package_cbcs(root, &title, segmented, extra, inputs);
    let entry = CatalogEntry::from_json(
        &std::fs::read_to_string(root.join(&title).join("catalog.json")).unwrap(),
    )
    .unwrap();
    let tricks = extra.iter().filter(|a| **a == "--trick-play").count();
    assert_eq!(entry.renditions.len(), inputs.len() + tricks);
    assert_eq!(
        entry.renditions.iter().filter(|r| r.is_trick()).count(),
        tricks,
        "{title}: trick play renditions"
    );
    let enc = entry.encryption.as_ref().expect("catalog encryption");
    assert_eq!(enc.scheme, "cbcs", "{title}: catalog scheme");
    // The catalog lists key ids, never a key; no output file holds a key.
    for r in &entry.renditions {
        assert!(
            enc.key_ids.contains(r.key_id.as_ref().unwrap()),
            "{title} {}",
            r.id
        );
    }
    for r in &entry.renditions {
        for f in &r.files {
            let bytes = std::fs::read(root.join(&title).join(f)).unwrap();
            for k in &keys.keys {
                let key = unhex(&k.key);
                assert!(
                    !bytes.windows(16).any(|w| w == key.as_slice()),
                    "{f} holds a key"
                );
            }
        }
    }
    for r in &entry.renditions {
        let what = format!("{title} {}", r.id);
        let kid = r.key_id.as_ref().unwrap();
        let key = key_of(&keys, kid);
        let c = clear.renditions.iter().find(|c| c.id == r.id).unwrap();
        let want: Vec<Vec<u8>> = units(root, &clear_title, &c.files)
            .iter()
            .flat_map(|u| {
                let d = decrypt(u, &[0; 16]);
                assert!(d.protection.is_none(), "{what}: clear output is protected");
                d.samples
            })
            .collect();
        let enc = units(root, &title, &r.files);
        let got = decrypt_all(&enc, &key);
        for d in &got {
            let p = d.protection.as_ref().expect("protected");
            assert_eq!(p.scheme, "cbcs", "{what}: schm");
            assert_eq!(p.tenc_version, 1, "{what}: tenc version");
            assert_eq!(p.iv_size, 0, "{what}: per-sample IV size");
            assert_eq!(p.constant_iv.len(), 16, "{what}: constant IV");
            assert_eq!(hex(&p.kid), *kid, "{what}: default_KID");
            let video = r.kind == TrackKind::Video;
            assert_eq!(
                p.pattern,
                if video { (1, 9) } else { (0, 0) },
                "{what}: pattern"
            );
            assert_eq!(
                d.with_subsamples,
                if video { d.samples.len() } else { 0 },
                "{what}: senc subsample maps"
            );
        }
        let got: Vec<Vec<u8>> = got.into_iter().flat_map(|d| d.samples).collect();
        assert_eq!(got.len(), want.len(), "{what}: sample count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "{what}: sample {i} differs after decryption");
        }
        // The stored samples are really encrypted: most differ from the clear ones.
        let stored: Vec<Vec<u8>> = enc
            .iter()
            .flat_map(|u| decrypt(u, &[0xee; 16]).samples)
            .collect();
        let same = stored.iter().zip(&want).filter(|(a, b)| a == b).count();
        assert!(
            same * 10 < want.len(),
            "{what}: {same} samples stored in clear"
        );
    }
    // Manifests signal cbcs.
    let mpd = std::fs::read_to_string(root.join(&title).join("manifest.mpd")).unwrap();
    assert!(
        mpd.contains(r#"schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cbcs""#),
        "{title}: {mpd}"
    );
    for r in &entry.renditions {
        for f in r.files.iter().filter(|f| f.ends_with(".m3u8")) {
            let m = std::fs::read_to_string(root.join(&title).join(f)).unwrap();
            assert!(m.contains("#EXT-X-KEY:METHOD=SAMPLE-AES,"), "{f}: {m}");
            assert!(m.contains(r#"KEYFORMAT="org.w3.clearkey""#), "{f}: {m}");
        }
    }
}

/// The decryptor agrees with an independent implementation, ffmpeg's `cenc` decryption: the
/// packets ffmpeg writes with `-decryption_key` are byte for byte the decryptor's samples.
#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn encrypt_decryptor_matches_ffmpeg_cenc() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let inputs = ladder("h264", true);
    crate::support::package(
        root,
        "cenc",
        false,
        &["--segment-duration", "2", "--encrypt", "cenc"],
        &inputs,
    );
    let keys =
        ContentKeys::from_json(&std::fs::read_to_string(root.join("cenc.keys.json")).unwrap())
            .unwrap();
    let entry = CatalogEntry::from_json(
        &std::fs::read_to_string(root.join("cenc").join("catalog.json")).unwrap(),
    )
    .unwrap();
    for r in &entry.renditions {
        let kid = r.key_id.as_ref().unwrap();
        let key = key_of(&keys, kid);
        let file = root
            .join("cenc")
            .join(r.files.iter().find(|f| !f.ends_with(".m3u8")).unwrap());
        let d = decrypt(&std::fs::read(&file).unwrap(), &key);
        assert_eq!(d.protection.as_ref().unwrap().scheme, "cenc");
        let kind = if r.kind == TrackKind::Video { "v" } else { "a" };
        let o = tool("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-decryption_key",
                &hex(&key),
                "-i",
            ])
            .arg(&file)
            .args([
                "-map",
                &format!("0:{kind}:0"),
                "-c",
                "copy",
                "-f",
                "data",
                "-",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = d.samples.concat();
        assert_eq!(ours.len(), o.stdout.len(), "{}: byte counts", r.id);
        assert!(
            ours == o.stdout,
            "{}: decrypted bytes differ from ffmpeg's",
            r.id
        );
    }
}

/// The NAL units of an Annex B stream (start codes removed).
fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut e = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            while e > s && data[e - 1] == 0 {
                e -= 1;
            }
            &data[s..e]
        })
        .collect()
}

/// The end (in bits, NAL header included) of every slice header ffmpeg's `trace_headers` shows
/// for the video of `src`: the position plus size of the last field under each `block` title.
fn trace_slice_header_ends(src: &Path, block: &str) -> Vec<usize> {
    let o = tool("ffmpeg")
        .args(["-nostdin", "-v", "debug", "-i"])
        .arg(src)
        .args(["-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut want: Vec<usize> = Vec::new();
    let mut in_slice = false;
    for l in String::from_utf8_lossy(&o.stderr).lines() {
        let Some(rest) = l.split_once("] ").map(|(_, r)| r) else {
            in_slice = false;
            continue;
        };
        if rest.starts_with(block) {
            in_slice = true;
            want.push(0);
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = in_slice && f.len() >= 5 && f[0].parse::<usize>().is_ok() && f[3] == "=";
        if field {
            let end = f[0].parse::<usize>().unwrap() + f[2].len();
            *want.last_mut().unwrap() = end;
        } else {
            in_slice = false;
        }
    }
    want
}

/// cbcs keeps each H.264 slice header clear: the packager's parser
/// (`encrypt::h264::H264Params::slice_header_bits`) must find the header length ffmpeg's
/// `trace_headers` shows (position + size of the header's last field, CABAC alignment bits
/// included) on every slice of the fixture rungs (CABAC, B-frames, weighted prediction) and of
/// a CAVLC baseline stream with three slices per frame made by libx264 at run time.
#[test]
#[ignore = "needs ffmpeg (libx264): run ./scripts/test"]
fn encrypt_h264_slice_headers_left_clear_match_ffmpeg_trace_headers() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.mp4");
    let o = tool("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25:duration=2")
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-slices",
            "3",
            "-g",
            "25",
        ])
        .arg(&baseline)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut sources: Vec<PathBuf> = ladder("h264", true)
        .into_iter()
        .filter(|p| {
            p.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("video")
        })
        .collect();
    sources.push(baseline);
    for src in &sources {
        let want = trace_slice_header_ends(src, "Slice Header");
        let h264 = dir.path().join("annexb.h264");
        let o = tool("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-i"])
            .arg(src)
            .args(["-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
            .arg(&h264)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let data = std::fs::read(&h264).unwrap();
        let mut params = packager::encrypt::h264::H264Params::default();
        let mut got = Vec::new();
        for nal in annexb_nals(&data) {
            match nal[0] & 0x1f {
                7 | 8 => params.add(nal).unwrap(),
                1 | 5 => got.push(params.slice_header_bits(nal).unwrap()),
                _ => {}
            }
        }
        let name = src.display();
        assert_eq!(got.len(), want.len(), "{name}: slice counts");
        assert!(got.len() > 40, "{name}: {} slices", got.len());
        // CABAC headers end byte aligned (cabac_alignment_one_bit); CAVLC ones mostly do not.
        let unaligned = got.iter().filter(|&&b| b % 8 != 0).count();
        if src.ends_with("baseline.mp4") {
            assert!(
                unaligned * 2 > got.len(),
                "{name}: CAVLC headers all aligned?"
            );
            assert!(got.len() >= 150, "{name}: 3 slices per frame expected");
        } else {
            assert_eq!(unaligned, 0, "{name}: CABAC headers end aligned");
        }
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("{name} slice {i}: {} bits, ffmpeg says {}", got[i], want[i]);
        }
    }
}

/// HEVC under cbcs: the packager's slice segment header parser
/// (`encrypt::hevc::HevcParams::slice_header_bits`) finds the header length ffmpeg's
/// `trace_headers` shows on every slice of two libx265 encodes made at run time (2 slices per
/// picture with wavefront entry points; B-frames, weighted prediction, no wavefronts),
/// and both encodes packaged with cbcs decrypt sample for sample to their clear packaging.
#[test]
#[ignore = "needs ffmpeg (libx265): run ./scripts/test"]
fn encrypt_hevc_cbcs_slice_headers_match_ffmpeg_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = Vec::new();
    for (name, preset, params) in [
        (
            "hevc-a",
            "ultrafast",
            "keyint=25:min-keyint=25:scenecut=0:slices=2",
        ),
        (
            "hevc-b",
            "fast",
            "keyint=25:bframes=3:weightp=1:weightb=1:wpp=0:ref=3",
        ),
    ] {
        let src = dir.path().join(format!("{name}.mp4"));
        let o = tool("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=416x240:rate=25:duration=3")
            .args(["-pix_fmt", "yuv420p", "-c:v", "libx265", "-preset", preset])
            .args(["-x265-params", &format!("{params}:log-level=error")])
            .args(["-tag:v", "hvc1"])
            .arg(&src)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        sources.push(src);
    }
    for src in &sources {
        let want = trace_slice_header_ends(src, "Slice Segment Header");
        let raw = dir.path().join("annexb.hevc");
        let o = tool("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-i"])
            .arg(src)
            .args(["-c", "copy", "-bsf:v", "hevc_mp4toannexb", "-f", "hevc"])
            .arg(&raw)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let data = std::fs::read(&raw).unwrap();
        let mut params = packager::encrypt::hevc::HevcParams::default();
        let mut got = Vec::new();
        for nal in annexb_nals(&data) {
            match (nal[0] >> 1) & 0x3f {
                33 | 34 => params.add_nal(nal).unwrap(),
                0..=9 | 16..=21 => got.push(params.slice_header_bits(nal).unwrap()),
                _ => {}
            }
        }
        let name = src.display();
        assert_eq!(got.len(), want.len(), "{name}: slice counts");
        assert!(got.len() >= 75, "{name}: {} slices", got.len());
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("{name} slice {i}: {} bits, ffmpeg says {}", got[i], want[i]);
        }
        let stem = src.file_stem().unwrap().to_str().unwrap().to_string();
        for segmented in [false, true] {
            round_trip(
                &dir.path().join("out"),
                &stem,
                std::slice::from_ref(src),
                &[],
                segmented,
            );
        }
    }
}
