//! End-to-end tests of `outpost package` through the real binary: a successful run on each
//! fixture ladder, and a clear error, a non-zero exit and an untouched output directory for
//! every broken input.

use std::path::PathBuf;
use std::process::Command;

use protocol::catalog::CatalogEntry;

use crate::support::cli::package as outpost;
use crate::support::media;

#[test]
fn package_cli_h264_ladder() {
    let out = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = ["video-240p", "video-360p", "video-540p", "audio-aac"]
        .iter()
        .map(|n| media(&format!("ladder-h264/{n}.mp4")))
        .collect();
    let o = outpost(
        &[
            "--title",
            "demo-1",
            "--out",
            out.path().to_str().unwrap(),
            "--segment-duration",
            "2",
        ],
        &inputs,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // Not a terminal: no progress bar.
    assert!(!stderr.contains('%'), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("packaged demo-1") && stdout.contains("4 renditions"),
        "{stdout}"
    );
    let dir = out.path().join("demo-1");
    let entry =
        CatalogEntry::from_json(&std::fs::read_to_string(dir.join("catalog.json")).unwrap())
            .unwrap();
    assert_eq!(entry.segment_duration_ms, 2000);
    for f in &entry.files {
        assert_eq!(std::fs::metadata(dir.join(&f.path)).unwrap().len(), f.size);
    }
    // 1.92 s GOPs with a 2 s target: every GOP is a segment, target duration 2.
    let pl = std::fs::read_to_string(dir.join("video-360p/index.m3u8")).unwrap();
    assert!(pl.contains("#EXT-X-TARGETDURATION:2\n"), "{pl}");
    assert_eq!(pl.matches("#EXTINF:1.92000,").count(), 6, "{pl}");
}

#[test]
fn package_cli_vp9_segmented() {
    let out = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = ["video-240p", "video-360p", "audio-opus"]
        .iter()
        .map(|n| media(&format!("ladder-vp9/{n}.mp4")))
        .collect();
    let o = outpost(
        &[
            "--title",
            "vp9",
            "--out",
            out.path().to_str().unwrap(),
            "--segmented",
        ],
        &inputs,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.path().join("vp9/video-360p/init.mp4").is_file());
    assert!(out.path().join("vp9/audio-opus/00001.m4s").is_file());
}

#[test]
fn package_cli_bad_inputs_fail_cleanly() {
    let good = media("ladder-h264/video-240p.mp4");
    let cases: [(&str, &[&str]); 4] = [
        ("bad/empty.mp4", &["empty.mp4", "empty (0 bytes)"]),
        ("bad/not-mp4.mp4", &["not-mp4.mp4", "not an MP4"]),
        (
            "bad/truncated.mp4",
            &["truncated.mp4", "at mdat", "truncated file"],
        ),
        ("bad/does-not-exist.mp4", &["does-not-exist.mp4"]),
    ];
    for (bad, want) in cases {
        let out = tempfile::tempdir().unwrap();
        let o = outpost(
            &["--title", "t", "--out", out.path().to_str().unwrap()],
            &[good.clone(), media(bad)],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad} succeeded");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for w in want {
            assert!(stderr.contains(w), "{bad}: {w:?} not in {stderr}");
        }
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "{bad}: output left"
        );
    }
}

/// A ladder whose keyframes coincide only every 9.6 s (1.92 s and 1.6 s GOPs) is packaged with
/// segments at the shared keyframes, and a warning names the longest segment.
#[test]
fn package_cli_misaligned_ladder_warns() {
    let out = tempfile::tempdir().unwrap();
    let o = outpost(
        &["--title", "t", "--out", out.path().to_str().unwrap()],
        &[
            media("ladder-h264/video-240p.mp4"),
            media("bad/misaligned-keyframes.mp4"),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: segment 1 (0.000 s to 9.600 s of video-240p) lasts 9.600 s")
            && stderr.contains("more than 50% over the requested 6.000 s"),
        "{stderr}"
    );
    let pl = std::fs::read_to_string(out.path().join("t/misaligned-keyframes/index.m3u8")).unwrap();
    assert!(pl.contains("#EXTINF:9.60000,"), "{pl}");
}

/// `--audio LANG:ROLE:PATH`: a French 5.1 track (language from the file) and an English audio
/// description reach the manifests and the catalog; a bad spec is refused naming the flag.
#[test]
fn package_cli_audio_languages() {
    let out = tempfile::tempdir().unwrap();
    let ad = out.path().join("audio-en-ad.mp4");
    std::fs::copy(media("ladder-h264/audio-aac.mp4"), &ad).unwrap();
    let fr = format!("-:main:{}", media("languages/audio-fr-51.mp4").display());
    let en_ad = format!("en:description:{}", ad.display());
    let dir = out.path().join("out");
    let o = outpost(
        &[
            "--title",
            "t",
            "--out",
            dir.to_str().unwrap(),
            "--audio",
            &fr,
            "--audio",
            &en_ad,
        ],
        &[
            media("ladder-h264/video-240p.mp4"),
            media("ladder-h264/audio-aac.mp4"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entry =
        CatalogEntry::from_json(&std::fs::read_to_string(dir.join("t/catalog.json")).unwrap())
            .unwrap();
    type Audio = (String, Option<String>, Option<String>, Option<u16>);
    let audio: Vec<Audio> = entry
        .renditions
        .iter()
        .filter(|r| r.kind == protocol::catalog::TrackKind::Audio)
        .map(|r| (r.id.clone(), r.language.clone(), r.role.clone(), r.channels))
        .collect();
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        audio,
        vec![
            ("audio-aac".into(), s("und"), s("main"), Some(2)),
            ("audio-fr-51".into(), s("fra"), s("main"), Some(6)),
            ("audio-en-ad".into(), s("en"), s("description"), Some(2)),
        ]
    );
    let master = std::fs::read_to_string(dir.join("t/master.m3u8")).unwrap();
    assert_eq!(master.matches("DEFAULT=YES").count(), 1, "{master}");
    assert!(master.contains("CHARACTERISTICS=\"public.accessibility.describes-video\""));
    let o = outpost(
        &[
            "--title",
            "u",
            "--out",
            dir.to_str().unwrap(),
            "--audio",
            "en:dub:x.mp4",
        ],
        &[media("ladder-h264/video-240p.mp4")],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--audio \"en:dub:x.mp4\": unknown role \"dub\""),
        "{stderr}"
    );
    assert!(!dir.join("u").exists());
}

/// `--text`: a WebVTT file with overlapping cues is refused naming the file, line and cue, and
/// nothing is written; a good one becomes a text rendition.
#[test]
fn package_cli_text_tracks() {
    let out = tempfile::tempdir().unwrap();
    let bad = out.path().join("subs-en.vtt");
    std::fs::write(
        &bad,
        "WEBVTT\n\n00:01.000 --> 00:03.000\nA\n\n00:02.000 --> 00:04.000\nB\n",
    )
    .unwrap();
    let dir = out.path().join("out");
    let spec = format!("en:subtitle:{}", bad.display());
    let o = outpost(
        &[
            "--title",
            "t",
            "--out",
            dir.to_str().unwrap(),
            "--text",
            &spec,
        ],
        &[media("ladder-h264/video-240p.mp4")],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("subs-en.vtt: line 6, cue 2: starts at 00:00:02.000, before cue 1 ends"),
        "{stderr}"
    );
    assert!(!dir.join("t").exists());
    std::fs::write(&bad, "WEBVTT\n\n00:01.000 --> 00:03.000\nA\n").unwrap();
    let o = outpost(
        &[
            "--title",
            "t",
            "--out",
            dir.to_str().unwrap(),
            "--text",
            &spec,
        ],
        &[media("ladder-h264/video-240p.mp4")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entry =
        CatalogEntry::from_json(&std::fs::read_to_string(dir.join("t/catalog.json")).unwrap())
            .unwrap();
    let t = entry.renditions.iter().find(|r| r.id == "subs-en").unwrap();
    assert_eq!(t.kind, protocol::catalog::TrackKind::Text);
    assert_eq!(t.role.as_deref(), Some("subtitle"));
}

#[test]
fn package_cli_bad_flags() {
    let out = tempfile::tempdir().unwrap();
    let good = media("ladder-h264/video-240p.mp4");
    let dir = out.path().to_str().unwrap();
    for (args, want) in [
        (
            vec!["--title", "t", "--out", dir, "--segment-duration", "abc"],
            "--segment-duration",
        ),
        (
            vec!["--title", "t", "--out", dir, "--segment-duration", "0"],
            "--segment-duration",
        ),
        (vec!["--title", "a/b", "--out", dir], "--title"),
        // Thumbnails: a bad grid, a bad interval, a pattern matching nothing, a missing flag.
        (
            vec![
                "--title",
                "t",
                "--out",
                dir,
                "--thumbnails",
                dir,
                "--thumbnail-interval",
                "2",
                "--thumbnail-grid",
                "5",
            ],
            "--thumbnail-grid",
        ),
        (
            vec![
                "--title",
                "t",
                "--out",
                dir,
                "--thumbnails",
                dir,
                "--thumbnail-interval",
                "x",
                "--thumbnail-grid",
                "5x5",
            ],
            "--thumbnail-interval",
        ),
        (
            vec![
                "--title",
                "t",
                "--out",
                dir,
                "--thumbnails",
                "/nonexistent/%03d.jpg",
                "--thumbnail-interval",
                "2",
                "--thumbnail-grid",
                "5x5",
            ],
            "--thumbnails /nonexistent/%03d.jpg: no file matches",
        ),
        (
            vec![
                "--title",
                "t",
                "--out",
                dir,
                "--thumbnails",
                dir,
                "--thumbnail-interval",
                "2",
            ],
            "--thumbnail-grid",
        ),
    ] {
        let o = outpost(&args, std::slice::from_ref(&good));
        assert!(!o.status.success());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
        assert!(!out.path().join("t").exists(), "{want}: nothing written");
    }
}

#[test]
#[ignore = "needs script (util-linux) for a pseudo-terminal: run ./scripts/test"]
fn package_cli_progress_bar_on_a_terminal_only() {
    let out = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} package --title t --out {} {}",
        env!("CARGO_BIN_EXE_outpost"),
        out.path().display(),
        media("ladder-h264/video-540p.mp4").display()
    );
    // `script` runs the command on a pseudo-terminal, so stderr is a TTY.
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux) is not installed");
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("100%") && tty.contains('\r'), "{tty:?}");
    assert!(tty.contains("packaged t"), "{tty:?}");
}
