//! Trick play (issue 15): a keyframe-only rendition given with `--trick-play` becomes a DASH
//! trick mode AdaptationSet (DASH-IF IOP v4.3 §3.2.9) and an HLS I-frame variant, never a normal
//! variant; inputs that are not keyframe-only, or not in the ladder's codec, are refused before
//! anything is written. Uses the committed `fixtures/media/ladder-h264/trick-144p.mp4` (H.264, one
//! keyframe a second, `fixtures/make-media.sh`).

use std::path::{Path, PathBuf};

use packager::bmff::{parse_file, Track};
use packager::encrypt::{generate_keys, EncryptOptions};
use packager::{package, Error, Options};
use protocol::catalog::{CatalogEntry, PackagingMode, Tier, TrackKind, TRICK_ROLE};
use protocol::content_keys::Scheme;

fn media(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/media")
        .join(rel)
}

fn opts(out: &Path, mode: PackagingMode, trick_play: Vec<PathBuf>) -> Options {
    Options {
        title: "title-1".into(),
        out_dir: out.to_path_buf(),
        mode,
        segment_duration_ms: 4000,
        inputs: vec![
            media("ladder-h264/video-240p.mp4"),
            media("ladder-h264/video-360p.mp4"),
            media("ladder-h264/audio-aac.mp4"),
        ],
        audio: Vec::new(),
        text: Vec::new(),
        thumbnails: None,
        trick_play,
        encryption: None,
    }
}

fn sample_bytes(t: &Track) -> Vec<Vec<u8>> {
    let data = std::fs::read(&t.file).unwrap();
    t.samples
        .iter()
        .map(|s| data[s.offset as usize..(s.offset + u64::from(s.size)) as usize].to_vec())
        .collect()
}

/// `(length, offset)` of every `#EXT-X-BYTERANGE` of a playlist.
fn byte_ranges(playlist: &str) -> Vec<(usize, usize)> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-BYTERANGE:"))
        .map(|r| {
            let (len, off) = r.split_once('@').unwrap();
            (len.parse().unwrap(), off.parse().unwrap())
        })
        .collect()
}

/// The `<AdaptationSet ...>` ... `</AdaptationSet>` block holding `needle`.
fn adaptation_set<'a>(mpd: &'a str, needle: &str) -> &'a str {
    let at = mpd
        .find(needle)
        .unwrap_or_else(|| panic!("{needle}: {mpd}"));
    let start = mpd[..at].rfind("    <AdaptationSet ").unwrap();
    let end = at + mpd[at..].find("</AdaptationSet>").unwrap() + "</AdaptationSet>".len();
    &mpd[start..end]
}

fn package_trick(mode: PackagingMode) -> (tempfile::TempDir, CatalogEntry) {
    let out = tempfile::tempdir().unwrap();
    let entry = package(
        &opts(out.path(), mode, vec![media("ladder-h264/trick-144p.mp4")]),
        None,
    )
    .unwrap();
    (out, entry)
}

#[test]
fn trick_rendition_is_a_trick_mode_adaptation_set_on_demand() {
    let (out, entry) = package_trick(PackagingMode::OnDemand);
    let root = out.path().join("title-1");
    let mpd = std::fs::read_to_string(root.join("manifest.mpd")).unwrap();
    // The ladder's video set, then the trick mode set naming it, then audio: exact text (the
    // inputs are committed and the output deterministic).
    let video = adaptation_set(&mpd, r#"<Representation id="video-240p""#);
    assert!(video.starts_with(r#"    <AdaptationSet id="0" contentType="video""#));
    assert!(!video.contains("trick"), "{video}");
    let trick = adaptation_set(&mpd, r#"<Representation id="trick-144p""#);
    assert_eq!(
        trick,
        r#"    <AdaptationSet id="1" contentType="video" mimeType="video/mp4" subsegmentAlignment="true" subsegmentStartsWithSAP="1" par="16:9" maxWidth="256" maxHeight="144">
      <EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>
      <Representation id="trick-144p" bandwidth="25600" codecs="avc1.64100b" width="256" height="144" frameRate="1" sar="1:1" maxPlayoutRate="25" codingDependency="false">
        <BaseURL>trick-144p/trick-144p.mp4</BaseURL>
        <SegmentBase timescale="16384" indexRange="722-797" indexRangeExact="true">
          <Initialization range="0-721"/>
        </SegmentBase>
      </Representation>
    </AdaptationSet>"#
    );
    assert!(adaptation_set(&mpd, r#"<Representation id="audio-aac""#)
        .starts_with(r#"    <AdaptationSet id="2" contentType="audio""#));
    assert_eq!(mpd.matches("trickmode").count(), 1);
    // The title lasts as long as the ladder (a trick rendition never stretches it).
    assert!(
        mpd.contains(r#"mediaPresentationDuration="PT12.000S""#),
        "{mpd}"
    );
    assert_eq!(entry.duration_ms, 12000);

    // HLS: an I-frame variant, never a normal one; no media playlist for it.
    let master = std::fs::read_to_string(root.join("master.m3u8")).unwrap();
    let mut lines = master.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("#EXT-X-STREAM-INF") {
            let uri = lines.next().unwrap();
            assert!(!uri.contains("trick"), "{master}");
        }
    }
    let iframes: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-I-FRAME-STREAM-INF"))
        .collect();
    assert_eq!(iframes.len(), 3, "{master}");
    assert!(
        iframes[2]
            .contains(r#"CODECS="avc1.64100b",RESOLUTION=256x144,URI="trick-144p/iframes.m3u8""#),
        "{master}"
    );
    assert!(!root.join("trick-144p/index.m3u8").exists());
    // Its I-frame playlist names every frame (one CMAF chunk each), not one per segment like
    // the ladder's: 12 entries of 1 s, each the byte range of one whole moof + mdat.
    let ipl = std::fs::read_to_string(root.join("trick-144p/iframes.m3u8")).unwrap();
    assert!(ipl.contains("#EXT-X-I-FRAMES-ONLY"), "{ipl}");
    let file = std::fs::read(root.join("trick-144p/trick-144p.mp4")).unwrap();
    let ranges = byte_ranges(&ipl);
    assert_eq!(ranges.len(), 12, "{ipl}");
    assert_eq!(ipl.matches("#EXTINF:1.00000,").count(), 12, "{ipl}");
    for (k, &(len, off)) in ranges.iter().enumerate() {
        assert_eq!(&file[off + 4..off + 8], b"moof", "{k}");
        let end = off + len;
        assert!(
            end == file.len() || &file[end + 4..end + 8] == b"moof",
            "{k}"
        );
        if let Some(&(_, next)) = ranges.get(k + 1) {
            assert_eq!(end, next, "the chunks follow each other");
        }
    }
    let ladder_ipl = std::fs::read_to_string(root.join("video-240p/iframes.m3u8")).unwrap();
    assert_eq!(byte_ranges(&ladder_ipl).len(), 3, "{ladder_ipl}");

    // The catalog: a video rendition with the trick role and its tier, every file listed.
    let r = entry
        .renditions
        .iter()
        .find(|r| r.id == "trick-144p")
        .unwrap();
    assert!(r.is_trick());
    assert_eq!(r.role.as_deref(), Some(TRICK_ROLE));
    assert_eq!(
        (r.kind, r.tier, r.width, r.height),
        (TrackKind::Video, Some(Tier::Sd), Some(256), Some(144))
    );
    assert_eq!(
        r.files,
        ["trick-144p/trick-144p.mp4", "trick-144p/iframes.m3u8"]
    );
    for f in &r.files {
        assert!(entry.files.iter().any(|e| &e.path == f), "{f}");
    }
    let kinds: Vec<(&str, bool)> = entry
        .renditions
        .iter()
        .map(|r| (r.id.as_str(), r.is_trick()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("video-240p", false),
            ("video-360p", false),
            ("trick-144p", true),
            ("audio-aac", false)
        ]
    );
    assert_eq!(
        CatalogEntry::from_json(&std::fs::read_to_string(root.join("catalog.json")).unwrap())
            .unwrap(),
        entry
    );

    // The packaged trick rendition: the input's samples unchanged, all sync samples, one
    // segment per ladder segment.
    let input = parse_file(&media("ladder-h264/trick-144p.mp4"))
        .unwrap()
        .remove(0);
    let output = parse_file(&root.join("trick-144p/trick-144p.mp4"))
        .unwrap()
        .remove(0);
    assert_eq!(sample_bytes(&input), sample_bytes(&output));
    assert!(output.samples.iter().all(|s| s.sync));
    let sidx_refs = |file: &Path| {
        let b = std::fs::read(file).unwrap();
        let at = b.windows(4).position(|w| w == b"sidx").unwrap();
        u16::from_be_bytes([b[at + 30], b[at + 31]])
    };
    assert_eq!(
        sidx_refs(&root.join("trick-144p/trick-144p.mp4")),
        sidx_refs(&root.join("video-240p/video-240p.mp4"))
    );
}

#[test]
fn trick_rendition_segmented_lines_up_with_the_ladder() {
    let (out, entry) = package_trick(PackagingMode::Segmented);
    let root = out.path().join("title-1");
    let mpd = std::fs::read_to_string(root.join("manifest.mpd")).unwrap();
    let trick = adaptation_set(&mpd, r#"<Representation id="trick-144p""#);
    assert!(trick.contains(
        r#"<EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>"#
    ));
    assert!(trick.contains(r#" segmentAlignment="true" startWithSAP="1""#));
    assert!(trick.contains(r#"maxPlayoutRate="25" codingDependency="false""#));
    // Ladder segments start at 0, 3.84 and 7.68 s (4 s target, 1.92 s GOPs); the trick
    // rendition's at its frames nearest them: 0, 4 and 8 s (timescale 16384), so three 4 s
    // segments to the end at 12 s.
    assert!(trick.contains(r#"<S t="0" d="65536" r="2"/>"#), "{trick}");
    let video = adaptation_set(&mpd, r#"<Representation id="video-240p""#);
    assert!(video.contains(r#"<S t="0" d="49152" r="1"/>"#), "{video}");
    // Each segment file holds one chunk per frame (4 moofs), named one by one in the I-frame
    // playlist by ranges within the segment file.
    let seg2 = std::fs::read(root.join("trick-144p/00002.m4s")).unwrap();
    assert_eq!(seg2.windows(4).filter(|w| w == b"moof").count(), 4);
    let ipl = std::fs::read_to_string(root.join("trick-144p/iframes.m3u8")).unwrap();
    assert_eq!(ipl.matches("\n00002.m4s\n").count(), 4, "{ipl}");
    let ranges = byte_ranges(&ipl);
    assert_eq!(ranges.len(), 12, "{ipl}");
    assert_eq!(ranges[4].1, 0, "{ipl}");
    assert_eq!(ranges[4..8].iter().map(|r| r.0).sum::<usize>(), seg2.len());
    // init + the segments in order read back as the input's samples, all sync samples.
    let mut whole = std::fs::read(root.join("trick-144p/init.mp4")).unwrap();
    for k in 1..=3 {
        whole.extend(std::fs::read(root.join(format!("trick-144p/{k:05}.m4s"))).unwrap());
    }
    let joined = out.path().join("joined.mp4");
    std::fs::write(&joined, whole).unwrap();
    let output = parse_file(&joined).unwrap().remove(0);
    let input = parse_file(&media("ladder-h264/trick-144p.mp4"))
        .unwrap()
        .remove(0);
    assert_eq!(sample_bytes(&input), sample_bytes(&output));
    assert!(output.samples.iter().all(|s| s.sync));
    let r = entry
        .renditions
        .iter()
        .find(|r| r.id == "trick-144p")
        .unwrap();
    assert_eq!(
        r.files,
        [
            "trick-144p/init.mp4",
            "trick-144p/00001.m4s",
            "trick-144p/00002.m4s",
            "trick-144p/00003.m4s",
            "trick-144p/iframes.m3u8"
        ]
    );
}

#[test]
fn encrypted_trick_rendition_takes_its_tier_key() {
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(
        out.path(),
        PackagingMode::OnDemand,
        vec![media("ladder-h264/trick-144p.mp4")],
    );
    let mut n = 0u8;
    let mut rng = || {
        n += 1;
        [n; 16]
    };
    let keys = generate_keys("title-1", Scheme::Cenc, true, &[Tier::Sd], &mut rng);
    o.encryption = Some(EncryptOptions {
        keys,
        iv_seed: [7; 16],
    });
    let entry = package(&o, None).unwrap();
    let kid = |id: &str| {
        entry
            .renditions
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .key_id
            .clone()
    };
    assert!(kid("trick-144p").is_some());
    assert_eq!(kid("trick-144p"), kid("video-240p"));
    let mpd = std::fs::read_to_string(out.path().join("title-1/manifest.mpd")).unwrap();
    assert!(
        adaptation_set(&mpd, r#"<Representation id="trick-144p""#).contains("<ContentProtection")
    );
}

/// Packaging fails with `want` in the message and leaves no trace in the output directory.
fn refused(o: Options, want: &[&str]) -> Error {
    let e = package(&o, None).unwrap_err();
    let msg = e.to_string();
    for w in want {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
    assert!(!o.out_dir.exists(), "{} was created", o.out_dir.display());
    e
}

#[test]
fn non_keyframe_only_input_is_refused_naming_the_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The ladder's own 360p rendition: GOPs of 48 frames, so sample 2 is not a sync sample.
    let bad = tmp.path().join("trick-360p.mp4");
    std::fs::copy(media("ladder-h264/video-360p.mp4"), &bad).unwrap();
    let e = refused(
        opts(&out, PackagingMode::OnDemand, vec![bad.clone()]),
        &[
            &bad.display().to_string(),
            "sample 2 of 300",
            "not a sync sample",
        ],
    );
    assert!(matches!(e, Error::TrickPlay { file, .. } if file == bad));
}

#[test]
fn trick_rendition_in_another_codec_or_without_a_ladder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // VP9 for an H.264 ladder.
    let mut o = opts(
        &out,
        PackagingMode::OnDemand,
        vec![media("ladder-vp9/video-240p.mp4")],
    );
    o.inputs.remove(0);
    o.inputs.remove(0);
    o.inputs.insert(0, media("ladder-h264/video-360p.mp4"));
    refused(o, &["vp09", "avc1", "not the video ladder's"]);
    // No video to serve.
    let mut o = opts(
        &out,
        PackagingMode::OnDemand,
        vec![media("ladder-h264/trick-144p.mp4")],
    );
    o.inputs = vec![media("ladder-h264/audio-aac.mp4")];
    refused(o, &["trick-144p.mp4", "no video rendition"]);
    // The same id as a ladder rendition.
    let clash = tmp.path().join("video-240p.mp4");
    std::fs::copy(media("ladder-h264/trick-144p.mp4"), &clash).unwrap();
    refused(
        opts(&out, PackagingMode::OnDemand, vec![clash]),
        &["\"video-240p\"", "rename one file"],
    );
}

/// An encrypted ladder with an SD and an HD key (DASH-IF IOP: one default KID per
/// AdaptationSet): one video set per key, each with its ContentProtection on the set and an
/// adaptation-set-switching property naming the other; the (SD) trick mode set serves the SD
/// set; audio's protection is on its set too, before its Role; no Representation carries any.
#[test]
fn encrypted_ladder_has_one_video_set_per_key_linked_for_switching() {
    for mode in [PackagingMode::OnDemand, PackagingMode::Segmented] {
        let out = tempfile::tempdir().unwrap();
        let mut o = opts(out.path(), mode, vec![media("ladder-h264/trick-144p.mp4")]);
        o.inputs.insert(2, media("ladder-h264/video-720p.mp4"));
        let mut n = 0u8;
        let mut rng = || {
            n += 1;
            [n; 16]
        };
        let keys = generate_keys(
            "title-1",
            Scheme::Cenc,
            true,
            &[Tier::Sd, Tier::Hd],
            &mut rng,
        );
        o.encryption = Some(EncryptOptions {
            keys,
            iv_seed: [7; 16],
        });
        let entry = package(&o, None).unwrap();
        let kid_uuid = |id: &str| {
            let h = entry
                .renditions
                .iter()
                .find(|r| r.id == id)
                .unwrap()
                .key_id
                .clone()
                .unwrap();
            protocol::hex::uuid(&protocol::content_keys::hex16(&h).unwrap())
        };
        let mpd = std::fs::read_to_string(out.path().join("title-1/manifest.mpd")).unwrap();
        let sd = adaptation_set(&mpd, r#"<Representation id="video-240p""#);
        let hd = adaptation_set(&mpd, r#"<Representation id="video-720p""#);
        let trick = adaptation_set(&mpd, r#"<Representation id="trick-144p""#);
        let audio = adaptation_set(&mpd, r#"<Representation id="audio-aac""#);
        assert!(
            sd.starts_with(r#"    <AdaptationSet id="0" contentType="video""#),
            "{mpd}"
        );
        assert!(sd.contains(r#"<Representation id="video-360p""#), "{sd}");
        assert!(sd.contains(r#"maxWidth="640" maxHeight="360""#), "{sd}");
        assert!(
            hd.starts_with(r#"    <AdaptationSet id="1" contentType="video""#),
            "{mpd}"
        );
        assert!(hd.contains(r#"maxWidth="1280" maxHeight="720""#), "{hd}");
        assert!(trick.starts_with(r#"    <AdaptationSet id="2" contentType="video""#));
        assert!(audio.starts_with(r#"    <AdaptationSet id="3" contentType="audio""#));
        assert_eq!(mpd.matches("<AdaptationSet ").count(), 4, "{mpd}");
        for (set, rendition) in [
            (sd, "video-240p"),
            (hd, "video-720p"),
            (trick, "trick-144p"),
            (audio, "audio-aac"),
        ] {
            let head = &set[..set.find("<Representation ").unwrap()];
            let body = &set[set.find("<Representation ").unwrap()..];
            assert!(
                head.contains(&format!(
                    r#"<ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="{}">"#,
                    kid_uuid(rendition)
                )),
                "{set}"
            );
            assert_eq!(head.matches("cenc:default_KID=").count(), 1, "{set}");
            assert!(
                head.contains(r#"<ContentProtection schemeIdUri="urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" value="ClearKey1.0">"#),
                "{set}"
            );
            assert!(!body.contains("ContentProtection"), "{set}");
        }
        assert_eq!(kid_uuid("trick-144p"), kid_uuid("video-240p"));
        assert_ne!(kid_uuid("video-720p"), kid_uuid("video-240p"));
        let switching = |v: &str| {
            format!(
                r#"      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="{v}"/>"#
            )
        };
        assert!(sd.contains(&switching("1")), "{sd}");
        assert!(hd.contains(&switching("0")), "{hd}");
        assert!(!trick.contains("SupplementalProperty") && !audio.contains("SupplementalProperty"));
        assert!(trick.contains(
            r#"<EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>"#
        ));
        // Schema order: ContentProtection before the properties, both before Role.
        let cp = sd.find("<ContentProtection").unwrap();
        assert!(cp < sd.find("<SupplementalProperty").unwrap());
        assert!(
            trick.find("<ContentProtection").unwrap() < trick.find("<EssentialProperty").unwrap()
        );
        assert!(audio.find("<ContentProtection").unwrap() < audio.find("<Role").unwrap());
    }
}

/// A clear ladder spanning SD and HD stays one video AdaptationSet (nothing to split by).
#[test]
fn clear_ladder_across_tiers_is_one_video_set() {
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(out.path(), PackagingMode::OnDemand, Vec::new());
    o.inputs.insert(2, media("ladder-h264/video-720p.mp4"));
    package(&o, None).unwrap();
    let mpd = std::fs::read_to_string(out.path().join("title-1/manifest.mpd")).unwrap();
    let video = adaptation_set(&mpd, r#"<Representation id="video-720p""#);
    assert!(
        video.contains(r#"<Representation id="video-240p""#),
        "{mpd}"
    );
    assert!(!mpd.contains("SupplementalProperty") && !mpd.contains("ContentProtection"));
    assert_eq!(mpd.matches("<AdaptationSet ").count(), 2, "{mpd}");
}
