//! AV1 (`av01`) under `outpost package --encrypt cenc` and `cbcs`, per the AV1 ISOBMFF
//! binding's Common Encryption section, on AV1 renditions encoded at run time by ffmpeg with
//! libaom (320x180, 3 s, a key frame a second: one with a single tile per frame, one with 2x2
//! tiles), never committed:
//! - every encrypted rendition, in both output modes, decrypts sample for sample (with the
//!   independent decryptor in `support::cenc_decrypt`) to the clear packaging of the same
//!   input, and `cenc` also through ffmpeg's own `-decryption_key`;
//! - the clear parts stay clear: ffmpeg's `trace_headers` reads every OBU header, sequence
//!   header, frame header and tile group header of the encrypted output exactly as it reads
//!   the clear output's;
//! - the packager's parser (`packager::encrypt::av1`) puts the start of each frame's tile data
//!   where `trace_headers` ends the tile group header, on every frame of the 2x2 encode.

use std::path::{Path, PathBuf};

use crate::support::cenc_decrypt::decrypt;
use crate::support::{assert_same, packets, tool, unhex};
use packager::encrypt::av1::{map, Av1State};
use protocol::catalog::CatalogEntry;
use protocol::content_keys::ContentKeys;

/// Encodes 3 s of test pattern to AV1 in `dir/name.mp4` with libaom (`extra` options).
fn encode(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.mp4"));
    let o = tool("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=25:duration=3")
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libaom-av1",
            "-cpu-used",
            "8",
            "-g",
            "25",
            "-b:v",
            "200k",
        ])
        .args(extra)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Packages `src` as `title` (`scheme`: `None` for clear); returns the catalog and the keys.
fn package(
    root: &Path,
    title: &str,
    segmented: bool,
    scheme: Option<&str>,
    src: &Path,
) -> (CatalogEntry, Option<ContentKeys>) {
    let mut extra = vec!["--segment-duration", "2"];
    if let Some(s) = scheme {
        extra.extend(["--encrypt", s]);
    }
    let entry = crate::support::package(root, title, segmented, &extra, &[src.to_path_buf()]);
    let keys = scheme.map(|_| {
        let text = std::fs::read_to_string(root.join(format!("{title}.keys.json"))).unwrap();
        ContentKeys::from_json(&text).unwrap()
    });
    (entry, keys)
}

/// The media files of the title's single rendition as decryptable units (init + segment).
fn units(root: &Path, title: &str, entry: &CatalogEntry) -> Vec<Vec<u8>> {
    let files = &entry.renditions[0].files;
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

/// `trace_headers` output for the video of `file`: every line the filter prints, without
/// its context prefix.
fn trace(file: &Path) -> Vec<String> {
    let o = tool("ffmpeg")
        .args(["-nostdin", "-v", "debug", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-c", "copy", "-bsf:v", "trace_headers"])
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("[trace_headers @"))
        .filter_map(|l| l.split_once("] ").map(|(_, r)| r.to_string()))
        .collect();
    assert!(lines.len() > 100, "{}: no trace", file.display());
    lines
}

#[test]
#[ignore = "needs ffmpeg (libaom-av1): run ./scripts/test"]
fn encrypt_av1_cenc_and_cbcs_round_trip_with_headers_clear() {
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        ("one-tile", encode(dir.path(), "one-tile", &[])),
        (
            "tiles-2x2",
            encode(
                dir.path(),
                "tiles-2x2",
                &["-tile-columns", "1", "-tile-rows", "1"],
            ),
        ),
    ];
    let root = dir.path().join("out");
    for (name, src) in &sources {
        for segmented in [false, true] {
            let clear_title = format!("clear-{name}-{segmented}");
            let (clear, _) = package(&root, &clear_title, segmented, None, src);
            let want: Vec<Vec<u8>> = units(&root, &clear_title, &clear)
                .iter()
                .flat_map(|u| decrypt(u, &[0; 16]).samples)
                .collect();
            assert!(want.len() >= 75, "{clear_title}: {} samples", want.len());
            for scheme in ["cenc", "cbcs"] {
                let title = format!("{scheme}-{name}-{segmented}");
                let what = title.as_str();
                let (entry, keys) = package(&root, &title, segmented, Some(scheme), src);
                let r = &entry.renditions[0];
                assert!(r.codec.starts_with("av01."), "{what}: {}", r.codec);
                let keys = keys.unwrap();
                let key: [u8; 16] = unhex(&keys.keys[0].key).try_into().unwrap();
                assert_eq!(r.key_id.as_deref(), Some(keys.keys[0].kid.as_str()));
                let enc = units(&root, &title, &entry);
                let mut got = Vec::new();
                for u in &enc {
                    let d = decrypt(u, &key);
                    let p = d.protection.as_ref().expect("protected");
                    assert_eq!(p.scheme, scheme, "{what}: schm");
                    assert_eq!(p.original, "av01", "{what}: frma");
                    let pattern = if scheme == "cbcs" { (1, 9) } else { (0, 0) };
                    assert_eq!(p.pattern, pattern, "{what}: pattern");
                    assert_eq!(d.with_subsamples, d.samples.len(), "{what}: subsamples");
                    got.extend(d.samples);
                }
                assert_eq!(got.len(), want.len(), "{what}: sample count");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g == w, "{what}: sample {i} differs after decryption");
                }
                let stored: Vec<Vec<u8>> = enc
                    .iter()
                    .flat_map(|u| decrypt(u, &[0xee; 16]).samples)
                    .collect();
                // Every sample with a tile of 16 bytes or more is stored encrypted; those left
                // whole are frame-header-only ones (`show_existing_frame`: a few bytes) and
                // frames whose every tile is under a block (at most 4 x 15 bytes of tiles
                // besides their headers).
                for (i, (a, b)) in stored.iter().zip(&want).enumerate() {
                    assert!(a != b || a.len() < 128, "{what}: sample {i} stored clear");
                }
                let same = stored.iter().zip(&want).filter(|(a, b)| a == b).count();
                assert!(same * 2 < want.len(), "{what}: {same} samples stored clear");
                if segmented {
                    continue;
                }
                let file = root.join(&title).join(&r.files[0]);
                let clear_file = root.join(&clear_title).join(&clear.renditions[0].files[0]);
                // Every header ffmpeg reads is the same in the encrypted file.
                let (a, b) = (trace(&file), trace(&clear_file));
                if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
                    panic!("{what}: trace line {i}: {} vs clear {}", a[i], b[i]);
                }
                assert_eq!(a.len(), b.len(), "{what}: trace lengths");
                if scheme == "cenc" {
                    let k = &keys.keys[0].key;
                    assert_same(
                        &packets(&file, "v", Some(k)),
                        &packets(&clear_file, "v", None),
                        what,
                    );
                }
            }
        }
    }
}

/// For each packet of `trace` (a 2x2-tile encode), the byte offset of the first tile's data
/// of each frame OBU: the OBU's start plus the tile group header's end (position and size of
/// its last field) plus the first `tile_size_minus_1` field.
fn tile_data_starts(trace: &[String]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let (mut obu_start, mut next) = (0usize, 0usize);
    let (mut kind, mut leb, mut tile_size_bytes) = (0u32, 0usize, 0usize);
    let mut in_tg = false;
    let mut tg_end = 0usize;
    let field = |l: &str| -> Option<(usize, usize, u64)> {
        let f: Vec<&str> = l.split_whitespace().collect();
        let pos = f.first()?.parse().ok()?;
        let value = f.last()?.parse().ok()?;
        let bits = if f.len() >= 5 && f[f.len() - 2] == "=" {
            f[f.len() - 3].len()
        } else {
            0
        };
        Some((pos, bits, value))
    };
    let finish = |out: &mut Vec<Vec<usize>>, in_tg: bool, start: usize, end: usize, tsb| {
        if in_tg {
            out.last_mut().unwrap().push(start + end.div_ceil(8) + tsb);
        }
    };
    for l in trace {
        if l.starts_with("Packet:") {
            finish(&mut out, in_tg, obu_start, tg_end, tile_size_bytes);
            in_tg = false;
            out.push(Vec::new());
            next = 0;
            continue;
        }
        if out.is_empty() {
            continue;
        }
        if l == "OBU header" {
            finish(&mut out, in_tg, obu_start, tg_end, tile_size_bytes);
            in_tg = false;
            obu_start = next;
            leb = 0;
            continue;
        }
        if l == "Tile Group" {
            in_tg = kind == 6 || kind == 4;
            continue;
        }
        if l.contains(" leb128_byte[") {
            leb += 1; // a byte of the obu_size field
            continue;
        }
        let Some((pos, bits, value)) = field(l) else {
            continue;
        };
        if l.contains(" obu_type ") {
            kind = value as u32;
        } else if l.contains(" obu_size ") {
            next = obu_start + pos / 8 + leb + value as usize;
        } else if l.contains(" tile_size_bytes_minus1 ") {
            tile_size_bytes = value as usize + 1;
        } else if in_tg {
            tg_end = pos + bits;
        }
    }
    finish(&mut out, in_tg, obu_start, tg_end, tile_size_bytes);
    out
}

#[test]
#[ignore = "needs ffmpeg (libaom-av1): run ./scripts/test"]
fn encrypt_av1_tile_data_starts_match_ffmpeg_trace_headers() {
    let dir = tempfile::tempdir().unwrap();
    let src = encode(
        dir.path(),
        "tiles",
        &["-tile-columns", "1", "-tile-rows", "1"],
    );
    let want = tile_data_starts(&trace(&src));
    // The source's samples, as the clear packaging stores them.
    let root = dir.path().join("out");
    let (clear, _) = package(&root, "clear", false, None, &src);
    let samples: Vec<Vec<u8>> = units(&root, "clear", &clear)
        .iter()
        .flat_map(|u| decrypt(u, &[0; 16]).samples)
        .collect();
    assert_eq!(samples.len(), want.len(), "packet counts");
    let mut st = Av1State::default();
    let mut frames = 0;
    for (i, (s, w)) in samples.iter().zip(&want).enumerate() {
        let m = map(s, &mut st, true).unwrap_or_else(|e| panic!("sample {i}: {}", e.0));
        let mut starts = Vec::new();
        let mut at = 0usize;
        for e in &m {
            at += usize::from(e.clear);
            if e.protected > 0 {
                starts.push(at);
            }
            at += e.protected as usize;
        }
        assert_eq!(at, s.len(), "sample {i}: the map covers the sample");
        assert_eq!(starts.len(), 4 * w.len(), "sample {i}: 4 tiles per frame");
        let firsts: Vec<usize> = starts.iter().step_by(4).copied().collect();
        assert_eq!(&firsts, w, "sample {i}: first tile of each frame");
        frames += w.len();
    }
    assert!(frames >= 75, "{frames} frames");
}
