//! `outpost package --encrypt cenc` end to end through the real binary: the keys file (mode 0600,
//! beside the title, never inside it), the catalog's key ids and tiers, and a round trip through
//! an independent decryptor (ffmpeg's `-decryption_key`) whose packets equal the clear source's,
//! for every rendition of the H.264 ladder (with its HD rung) and of the VP9 ladder (Opus audio)
//! in both output modes. The VP9 frame headers the binding leaves clear are checked against
//! ffmpeg's `trace_headers`. Bad keys files fail with an error naming the field and write
//! nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::cli::package as outpost;
use crate::support::{assert_same, b64, b64url, ladder, media, packets, tool, unhex};
use protocol::catalog::{CatalogEntry, Tier, TrackKind};
use protocol::content_keys::ContentKeys;

/// The H.264 fixture ladder with its 720p (HD) rung.
fn h264_ladder() -> Vec<PathBuf> {
    ladder("h264", true)
}

/// The files ffmpeg reads for one rendition: the on-demand file itself, or in segmented mode one
/// file per movie fragment (init + one `moof` and its `mdat`). ffmpeg 5.1 reads every `moof` of
/// a file without `sidx` at open and then applies the last fragment's `senc` to every packet, so
/// fragments are decrypted one at a time (a trick play segment holds a fragment per keyframe);
/// the packet lists are concatenated for the comparison.
fn pieces(root: &Path, title: &str, files: &[String]) -> Vec<PathBuf> {
    let media: Vec<&String> = files.iter().filter(|f| !f.ends_with(".m3u8")).collect();
    if media.len() == 1 {
        return vec![root.join(title).join(media[0])];
    }
    let init = std::fs::read(root.join(title).join(media[0])).unwrap();
    let mut out = Vec::new();
    for seg in &media[1..] {
        let bytes = std::fs::read(root.join(title).join(seg)).unwrap();
        for (i, fragment) in fragments(&bytes).into_iter().enumerate() {
            let mut all = init.clone();
            all.extend_from_slice(fragment);
            let p = root.join(format!("{title}-{}-{i}.mp4", seg.replace('/', "_")));
            std::fs::write(&p, all).unwrap();
            out.push(p);
        }
    }
    out
}

/// A media segment's movie fragments: each top-level `moof` with the boxes after it up to the
/// next `moof` (its `mdat`); boxes before the first `moof` (`styp`, `sidx`) are left out.
fn fragments(segment: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= segment.len() {
        let size = u32::from_be_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        let size = if size == 1 {
            u64::from_be_bytes(segment[at + 8..at + 16].try_into().unwrap()) as usize
        } else {
            size
        };
        assert!(size >= 8 && at + size <= segment.len(), "bad box at {at}");
        if &segment[at + 4..at + 8] == b"moof" {
            starts.push(at);
        }
        at += size;
    }
    assert!(!starts.is_empty(), "a media segment without moof");
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| &segment[s..starts.get(i + 1).copied().unwrap_or(segment.len())])
        .collect()
}

fn package_encrypted(root: &Path, title: &str, segmented: bool) -> (CatalogEntry, ContentKeys) {
    package_encrypted_inputs(root, title, segmented, &h264_ladder(), &[])
}

/// The VP9 fixture ladder (two rungs, Opus audio).
fn vp9_ladder() -> Vec<PathBuf> {
    ladder("vp9", false)
}

fn package_encrypted_inputs(
    root: &Path,
    title: &str,
    segmented: bool,
    inputs: &[PathBuf],
    extra: &[&str],
) -> (CatalogEntry, ContentKeys) {
    let mut args = vec!["--title", title, "--out", root.to_str().unwrap()];
    args.extend(["--segment-duration", "2", "--encrypt", "cenc"]);
    args.extend(extra);
    if segmented {
        args.push("--segmented");
    }
    let o = outpost(&args, inputs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys_path = root.join(format!("{title}.keys.json"));
    let mode = std::fs::metadata(&keys_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "keys file mode");
    let keys = ContentKeys::from_json(&std::fs::read_to_string(&keys_path).unwrap()).unwrap();
    let entry = CatalogEntry::from_json(
        &std::fs::read_to_string(root.join(title).join("catalog.json")).unwrap(),
    )
    .unwrap();
    (entry, keys)
}

#[test]
fn encrypt_cenc_keys_and_catalog() {
    let root = tempfile::tempdir().unwrap();
    let (entry, keys) = package_encrypted(root.path(), "enc", false);
    // One key for audio, one per video tier present: SD (240/360/540p) and HD (720p).
    assert_eq!(keys.keys.len(), 3);
    let tiers: Vec<Option<Tier>> = keys.keys.iter().map(|k| k.tier).collect();
    assert!(tiers.contains(&Some(Tier::Sd)) && tiers.contains(&Some(Tier::Hd)));
    assert!(tiers.contains(&None));
    let enc = entry.encryption.as_ref().expect("catalog encryption");
    assert_eq!(enc.scheme, "cenc");
    assert_eq!(enc.key_ids.len(), 3);
    for r in &entry.renditions {
        let kid = r.key_id.as_ref().expect("every rendition has a key id");
        let k = keys.keys.iter().find(|k| &k.kid == kid).unwrap();
        assert_eq!(k.track_type, r.kind, "{}", r.id);
        assert_eq!(k.tier, r.tier, "{}", r.id);
    }
    let sd = entry
        .renditions
        .iter()
        .find(|r| r.id == "video-240p")
        .unwrap();
    let hd = entry
        .renditions
        .iter()
        .find(|r| r.id == "video-720p")
        .unwrap();
    assert_eq!(hd.tier, Some(Tier::Hd));
    assert_ne!(sd.key_id, hd.key_id, "SD and HD use different keys");
    // No key material anywhere inside the title directory (it is copied to appliances).
    let dir = root.path().join("enc");
    let mut files = vec!["catalog.json".to_string()];
    files.extend(entry.files.iter().map(|f| f.path.clone()));
    for f in files {
        let bytes = std::fs::read(dir.join(&f)).unwrap();
        for k in &keys.keys {
            let key = k.key_bytes();
            assert!(
                !bytes.windows(16).any(|w| w == key),
                "{f} holds a key in binary"
            );
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&k.key), "{f} holds a key in hex");
            // Nor in base64 (data URIs, cenc:pssh) or base64url (Clear Key JSON).
            let b = b64(&key);
            assert!(
                !text.contains(b.trim_end_matches('=')),
                "{f} holds a key in base64"
            );
            assert!(
                !text.contains(&b64url(&key)),
                "{f} holds a key in base64url"
            );
        }
    }
    // Manifests: DASH ContentProtection per AdaptationSet (DASH-IF IOP: one default KID each,
    // mp4protection with the default KID, Clear Key with the licence URL placeholder), so the SD
    // and HD video renditions are in two sets naming each other for switching; HLS EXT-X-KEY and
    // EXT-X-SESSION-KEY.
    let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    let uuid = |h: &str| protocol::hex::uuid(&protocol::content_keys::hex16(h).unwrap());
    // The cenc:pssh lists every key id of the title (the catalog's order), so one licence
    // request asks for all of them.
    let title_kids: Vec<[u8; 16]> = entry
        .encryption
        .as_ref()
        .unwrap()
        .key_ids
        .iter()
        .map(|k| unhex(k).try_into().unwrap())
        .collect();
    assert_eq!(title_kids.len(), 3);
    let pssh = b64(&packager::encrypt::pssh(&title_kids));
    // Each AdaptationSet, as text.
    let sets: Vec<&str> = mpd
        .split("<AdaptationSet ")
        .skip(1)
        .map(|s| s.split("</AdaptationSet>").next().unwrap())
        .collect();
    for r in &entry.renditions {
        let kid = r.key_id.as_ref().unwrap();
        let want = format!(
            "<ContentProtection schemeIdUri=\"urn:mpeg:dash:mp4protection:2011\" value=\"cenc\" cenc:default_KID=\"{}\">\n        <cenc:pssh>{pssh}</cenc:pssh>\n      </ContentProtection>",
            uuid(kid)
        );
        let set = sets
            .iter()
            .find(|s| s.contains(&format!("<Representation id=\"{}\"", r.id)))
            .unwrap_or_else(|| panic!("{} is in no AdaptationSet: {mpd}", r.id));
        assert!(set.contains(&want), "{} missing {want} in\n{mpd}", r.id);
        assert_eq!(set.matches("cenc:default_KID=").count(), 1, "{set}");
        let pl = std::fs::read_to_string(dir.join(&r.id).join("index.m3u8")).unwrap();
        // hls.js's Clear Key signalling: KEYFORMAT org.w3.clearkey, the key id as a data URI.
        let want = format!(
            r#"#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT="org.w3.clearkey",KEYFORMATVERSIONS="1",URI="data:text/plain;base64,{}""#,
            b64(&unhex(kid))
        );
        assert!(pl.contains(&want), "{want} not in {pl}");
    }
    // Three sets, one per key: SD video, HD video, audio; nothing is protected per
    // Representation.
    assert_eq!(sets.len(), 3, "{mpd}");
    for s in &sets {
        let body = &s[s.find("<Representation ").unwrap()..];
        assert!(!body.contains("<ContentProtection"), "{s}");
    }
    assert_eq!(
        mpd.matches(
            r#"schemeIdUri="urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" value="ClearKey1.0""#
        )
        .count(),
        3
    );
    let switching = |v: &str| {
        format!(
            r#"<SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="{v}"/>"#
        )
    };
    assert!(
        sets[0].starts_with(r#"id="0" contentType="video""#)
            && sets[0].contains(r#"<Representation id="video-240p""#)
            && sets[0].contains(&switching("1")),
        "{mpd}"
    );
    assert!(
        sets[1].starts_with(r#"id="1" contentType="video""#)
            && sets[1].contains(r#"<Representation id="video-720p""#)
            && sets[1].contains(&switching("0")),
        "{mpd}"
    );
    assert!(mpd.contains("<dashif:Laurl>"), "{mpd}");
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    assert_eq!(
        master
            .matches("#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES-CTR")
            .count(),
        3,
        "{master}"
    );
    // The init segment signals protection and the common-system pssh.
    let init = std::fs::read(dir.join("video-720p/video-720p.mp4")).unwrap();
    for tag in [
        &b"encv"[..],
        b"sinf",
        b"frma",
        b"schm",
        b"tenc",
        b"pssh",
        b"senc",
    ] {
        assert!(
            init.windows(4).any(|w| w == tag),
            "{}",
            String::from_utf8_lossy(tag)
        );
    }
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn encrypt_cenc_round_trip_ffmpeg() {
    let root = tempfile::tempdir().unwrap();
    // A keyframe-only trick play rendition beside the H.264 ladder: encrypted with the SD key
    // and decrypted like every other rendition.
    let trick = media("ladder-h264/trick-144p.mp4");
    let trick_args = ["--trick-play", trick.to_str().unwrap()];
    for (ladder, inputs, segmented, extra) in [
        ("h264", h264_ladder(), false, &[][..]),
        ("h264", h264_ladder(), true, &[]),
        ("vp9", vp9_ladder(), false, &[]),
        ("vp9", vp9_ladder(), true, &[]),
        ("h264-trick", ladder("h264", false), false, &trick_args[..]),
        ("h264-trick", ladder("h264", false), true, &trick_args),
    ] {
        let title = format!("cenc-{ladder}-{segmented}");
        let (entry, keys) =
            package_encrypted_inputs(root.path(), &title, segmented, &inputs, extra);
        let sources: Vec<PathBuf> = inputs
            .iter()
            .cloned()
            .chain((!extra.is_empty()).then(|| trick.clone()))
            .collect();
        assert_eq!(entry.renditions.len(), sources.len());
        for r in &entry.renditions {
            let src = sources
                .iter()
                .find(|p| p.file_stem().unwrap().to_str() == Some(r.id.as_str()))
                .unwrap();
            let kid = r.key_id.as_ref().unwrap();
            let key = &keys.keys.iter().find(|k| &k.kid == kid).unwrap().key;
            let outs = pieces(root.path(), &title, &r.files);
            let kind = if r.kind == TrackKind::Video { "v" } else { "a" };
            // ffmpeg starts each separately read segment at time 0, so segmented pieces are
            // compared without the pts column (on-demand files keep it).
            let strip = |v: Vec<String>| -> Vec<String> {
                if outs.len() == 1 || kind == "a" {
                    return v;
                }
                v.into_iter()
                    .map(|l| l.split_once(',').map_or(l.clone(), |(_, r)| r.to_string()))
                    .collect()
            };
            let clear = strip(packets(src, kind, None));
            let what = format!("{title} {}", r.id);
            let read = |key: Option<&str>| -> Vec<String> {
                strip(outs.iter().flat_map(|o| packets(o, kind, key)).collect())
            };
            assert_same(&read(Some(key)), &clear, &what);
            // And the stored packets are really encrypted: without the key most differ.
            let raw = read(None);
            let same = raw.iter().zip(&clear).filter(|(a, b)| a == b).count();
            assert!(
                same * 10 < clear.len(),
                "{what}: {same} packets stored in clear"
            );
        }
    }
}

/// Writes `keys` as JSON to a file beside `root` and runs the packager with `--keys` on it.
fn package_with_keys(root: &Path, scheme: &str, keys_json: &str) -> Output {
    let path = root.join("given.keys.json");
    std::fs::write(&path, keys_json).unwrap();
    outpost(
        &[
            "--title",
            "given",
            "--out",
            root.to_str().unwrap(),
            "--encrypt",
            scheme,
            "--keys",
            path.to_str().unwrap(),
        ],
        &[
            media("ladder-h264/video-360p.mp4"),
            media("ladder-h264/video-720p.mp4"),
            media("ladder-h264/audio-aac.mp4"),
        ],
    )
}

const SD: &str = r#"{"kid": "00112233445566778899aabbccddeeff", "key": "0123456789abcdef0123456789abcdef", "tier": "SD", "track_type": "video"}"#;
const HD: &str = r#"{"kid": "10112233445566778899aabbccddeeff", "key": "1123456789abcdef0123456789abcdef", "tier": "HD", "track_type": "video"}"#;
const AUDIO: &str = r#"{"kid": "20112233445566778899aabbccddeeff", "key": "2123456789abcdef0123456789abcdef", "tier": null, "track_type": "audio"}"#;

fn keys_json(scheme: &str, keys: &[&str]) -> String {
    format!(
        r#"{{"title": "given", "scheme": "{scheme}", "keys": [{}]}}"#,
        keys.join(",")
    )
}

#[test]
fn encrypt_cenc_given_keys_are_used() {
    let root = tempfile::tempdir().unwrap();
    let o = package_with_keys(root.path(), "cenc", &keys_json("cenc", &[SD, HD, AUDIO]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entry = CatalogEntry::from_json(
        &std::fs::read_to_string(root.path().join("given/catalog.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = entry
        .renditions
        .iter()
        .map(|r| r.key_id.as_deref().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "00112233445566778899aabbccddeeff",
            "10112233445566778899aabbccddeeff",
            "20112233445566778899aabbccddeeff"
        ]
    );
    // No new keys file is written when keys are given.
    assert!(!root.path().join("given.keys.json.new").exists());
    let names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn encrypt_bad_keys_name_the_field_and_write_nothing() {
    let short_key = SD.replace("0123456789abcdef0123456789abcdef", "0123");
    let cases: Vec<(&str, String, &[&str])> = vec![
        // The title has an HD rendition but the file has no HD key.
        (
            "cenc",
            keys_json("cenc", &[SD, AUDIO]),
            &["keys", "tier HD", "video-720p"],
        ),
        (
            "cenc",
            keys_json("cenc", &[&short_key, HD, AUDIO]),
            &["keys[0].key"],
        ),
        (
            "cenc",
            keys_json("cbcs", &[SD, HD, AUDIO]),
            &["scheme", "cbcs"],
        ),
        (
            "cenc",
            keys_json("ctr", &[SD, HD, AUDIO]),
            &["unknown variant", "ctr"],
        ),
        (
            "aes",
            keys_json("cenc", &[SD, HD, AUDIO]),
            &["--encrypt", "aes"],
        ),
    ];
    for (scheme, json, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let o = package_with_keys(root.path(), scheme, &json);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{json} was accepted");
        for w in want {
            assert!(stderr.contains(w), "{w:?} not in: {stderr}");
        }
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["given.keys.json"], "{json}: something was written");
    }
}

#[test]
fn encrypt_keys_out_inside_the_title_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("t/keys.json");
    let o = outpost(
        &[
            "--title",
            "t",
            "--out",
            root.path().to_str().unwrap(),
            "--encrypt",
            "cenc",
            "--keys-out",
            inside.to_str().unwrap(),
        ],
        &[media("ladder-h264/video-360p.mp4")],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--keys-out") && stderr.contains("inside the title directory"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn encrypt_vp9_headers_left_clear_match_ffmpeg_trace_headers() {
    // The VP9 binding leaves each frame's uncompressed header clear: the packager's parser
    // (`encrypt::vp9::uncompressed_header_len`) must find the same header length as ffmpeg's
    // `trace_headers` (bit position of header_size_in_bytes + 16, in whole bytes) on every frame
    // of both VP9 fixture rungs.
    let dir = tempfile::tempdir().unwrap();
    for rung in ["video-240p", "video-360p"] {
        let src = media(&format!("ladder-vp9/{rung}.mp4"));
        let o = tool("ffmpeg")
            .args(["-nostdin", "-v", "debug", "-i"])
            .arg(&src)
            .args(["-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
            .output()
            .unwrap();
        assert!(o.status.success());
        let want: Vec<usize> = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.contains("header_size_in_bytes"))
            .map(|l| {
                let bit: usize = l
                    .split(']')
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap()
                    .parse()
                    .unwrap();
                (bit + 16).div_ceil(8)
            })
            .collect();
        let ivf = dir.path().join(format!("{rung}.ivf"));
        let o = tool("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-i"])
            .arg(&src)
            .args(["-c", "copy", "-f", "ivf"])
            .arg(&ivf)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let data = std::fs::read(&ivf).unwrap();
        let mut st = packager::encrypt::vp9::Vp9State::default();
        let mut got = Vec::new();
        let mut p = 32;
        while p + 12 <= data.len() {
            let n = u32::from_le_bytes(data[p..p + 4].try_into().unwrap()) as usize;
            let frame = &data[p + 12..p + 12 + n];
            let hl = packager::encrypt::vp9::uncompressed_header_len(frame, &mut st).unwrap();
            if hl > 0 {
                got.push(hl);
            }
            p += 12 + n;
        }
        assert_eq!(got.len(), want.len(), "{rung}: frame counts");
        assert!(got.len() > 100);
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{rung} frame {i}: {} bytes, ffmpeg says {}",
                got[i], want[i]
            );
        }
    }
}

#[test]
#[ignore = "needs ffmpeg (libx265): run ./scripts/test"]
fn encrypt_cenc_round_trip_hevc() {
    // HEVC (hvc1, 2-byte NAL headers, VPS/SPS/PPS/SEI clear) encoded at run time (not
    // committed): ffmpeg decrypts the packaged rendition back to the source's packets, in both
    // modes.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("hevc-360p.mp4");
    let o = tool("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25:duration=4",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=25:min-keyint=25:scenecut=0:slices=2:log-level=error",
            "-tag:v",
            "hvc1",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = dir.path().join("out");
    for segmented in [false, true] {
        let title = format!("hevc-{segmented}");
        let (entry, keys) =
            package_encrypted_inputs(&root, &title, segmented, std::slice::from_ref(&src), &[]);
        let r = &entry.renditions[0];
        assert!(r.codec.starts_with("hvc1."), "{}", r.codec);
        let key = &keys.keys[0].key;
        let outs = pieces(&root, &title, &r.files);
        let strip = |v: Vec<String>| -> Vec<String> {
            if outs.len() == 1 {
                return v;
            }
            v.into_iter()
                .map(|l| l.split_once(',').map_or(l.clone(), |(_, r)| r.to_string()))
                .collect()
        };
        let clear = strip(packets(&src, "v", None));
        let read = |key: Option<&str>| -> Vec<String> {
            strip(outs.iter().flat_map(|o| packets(o, "v", key)).collect())
        };
        assert_same(&read(Some(key)), &clear, &title);
        let raw = read(None);
        let same = raw.iter().zip(&clear).filter(|(a, b)| a == b).count();
        assert!(same * 10 < clear.len(), "{title}: {same} packets in clear");
    }
}
