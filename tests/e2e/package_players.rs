//! Real clients on packaged output: ffmpeg's framemd5 of every packaged video rendition equals
//! the source's; ffprobe and ffmpeg read and decode the DASH and HLS output of both modes over
//! loopback HTTP with Range (nginx on an ephemeral port, started and stopped by PID); Shaka
//! Player and hls.js in headless Chromium play them to the end, switching renditions and seeking,
//! with no error events. All need external tools, so they are `#[ignore]`d and run by
//! `./scripts/test`; a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{assert_same, repo, tool, Nginx};
use protocol::catalog::{CatalogEntry, TrackKind};

fn ladder(name: &str) -> Vec<PathBuf> {
    crate::support::ladder(name, false)
}

/// Packages a ladder with the real CLI into `root/<title>/`.
fn package(root: &Path, title: &str, segmented: bool, inputs: &[PathBuf]) -> CatalogEntry {
    crate::support::package(root, title, segmented, &[], inputs)
}

/// The packets of the first stream of `kind` (see [`crate::support::packets`]).
fn framemd5(file: &Path, kind: &str) -> Vec<String> {
    crate::support::packets(file, kind, None)
}

/// Joins a segmented rendition's init + media segments into one file ffmpeg can read.
fn joined(root: &Path, title: &str, files: &[String]) -> PathBuf {
    let mut all = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with(".m3u8")) {
        all.extend(std::fs::read(root.join(title).join(f)).unwrap());
    }
    let p = root.join(format!("{}.joined.mp4", files[0].replace('/', "_")));
    std::fs::write(&p, all).unwrap();
    p
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn package_players_framemd5_matches_source() {
    let root = tempfile::tempdir().unwrap();
    for (ladder_name, segmented) in [
        ("h264", false),
        ("h264", true),
        ("vp9", false),
        ("vp9", true),
    ] {
        let title = format!("{ladder_name}-{segmented}");
        let inputs = ladder(ladder_name);
        let entry = package(root.path(), &title, segmented, &inputs);
        for (r, src) in entry.renditions.iter().zip(&inputs) {
            let out = if segmented {
                joined(root.path(), &title, &r.files)
            } else {
                root.path().join(&title).join(&r.files[0])
            };
            let kind = if r.kind == TrackKind::Video { "v" } else { "a" };
            assert_same(
                &framemd5(&out, kind),
                &framemd5(src, kind),
                &format!("{title} {}", r.id),
            );
        }
    }
}

#[test]
#[ignore = "needs ffmpeg and nginx: run ./scripts/test"]
fn package_players_ffmpeg_reads_dash_and_hls_over_http() {
    let root = tempfile::tempdir().unwrap();
    let mut titles = Vec::new();
    for (ladder_name, segmented) in [
        ("h264", false),
        ("h264", true),
        ("vp9", false),
        ("vp9", true),
    ] {
        let title = format!("{ladder_name}-{}", if segmented { "seg" } else { "od" });
        let entry = package(root.path(), &title, segmented, &ladder(ladder_name));
        titles.push((title, entry));
    }
    let nginx = Nginx::start(root.path());
    // nginx answers byte ranges (what on-demand players use).
    let probe = tool("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-r", "0-99"])
        .arg(nginx.url("h264-od/video-240p/video-240p.mp4"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout), "206");
    for (title, entry) in &titles {
        let videos = entry
            .renditions
            .iter()
            .filter(|r| r.kind == TrackKind::Video)
            .count();
        for manifest in ["manifest.mpd", "master.m3u8"] {
            let url = nginx.url(&format!("{title}/{manifest}"));
            let o = tool("ffprobe")
                .args([
                    "-v",
                    "error",
                    "-show_entries",
                    "stream=codec_type,codec_name,width,height",
                    "-of",
                    "csv=p=0",
                ])
                .arg(&url)
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "ffprobe {url}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            // Every video rendition appears (HLS lists audio once per variant program).
            for r in entry
                .renditions
                .iter()
                .filter(|r| r.kind == TrackKind::Video)
            {
                let want = format!("{},{}", r.width.unwrap(), r.height.unwrap());
                assert!(out.contains(&want), "{url}: {want} not in {out}");
            }
            assert!(out.matches("video").count() >= videos, "{url}: {out}");
            assert!(out.contains("audio"), "{url}: {out}");
            // Decode every stream to the end.
            let o = tool("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(&url)
                .args(["-map", "0", "-f", "null", "-"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() && err.trim().is_empty(),
                "ffmpeg decode {url}: {err}"
            );
        }
    }
}

fn node_harness() -> PathBuf {
    crate::support::node_harness("play.mjs")
}

#[test]
#[ignore = "needs nginx, node and chromium: run ./scripts/test"]
fn package_players_shaka_and_hlsjs_play_in_chromium() {
    let harness = node_harness();
    let root = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (ladder_name, segmented) in [("h264", false), ("h264", true), ("vp9", true)] {
        let title = format!("{ladder_name}-{}", if segmented { "seg" } else { "od" });
        let entry = package(root.path(), &title, segmented, &ladder(ladder_name));
        runs.push((title, entry));
    }
    let nginx = Nginx::start(root.path());
    for (title, entry) in &runs {
        for (player, manifest) in [("shaka", "manifest.mpd"), ("hls", "master.m3u8")] {
            let url = nginx.url(&format!("{title}/{manifest}"));
            let mut cmd = tool("node");
            cmd.arg(&harness).args(["--player", player, "--url", &url]);
            for r in &entry.renditions {
                let kind = if r.kind == TrackKind::Video {
                    "video"
                } else {
                    "audio"
                };
                cmd.args(["--codecs", &format!("{kind}/mp4; codecs=\"{}\"", r.codec)]);
            }
            let o = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{player} {url}: {}\n{stdout}",
                String::from_utf8_lossy(&o.stderr)
            );
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            let ctx = format!("{player} {url}: {v}");
            assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{ctx}");
            assert_eq!(v["ended"], true, "{ctx}");
            assert_eq!(v["seeked"], true, "{ctx}");
            assert!(v["switches"].as_u64().unwrap() >= 2, "{ctx}");
            let heights = v["heights"].as_array().unwrap();
            let distinct: std::collections::BTreeSet<u64> =
                heights.iter().map(|h| h.as_u64().unwrap()).collect();
            assert!(distinct.len() >= 2, "played only {distinct:?}: {ctx}");
            for (t, ok) in v["supported"].as_object().unwrap() {
                assert_eq!(ok, true, "{t} not supported by Chromium: {ctx}");
            }
            let dur = v["duration"].as_f64().unwrap();
            assert!(
                (dur - entry.duration_ms as f64 / 1000.0).abs() < 0.1,
                "{ctx}"
            );
        }
    }
}

/// `level` of the first video stream, as ffprobe reports it.
fn ffprobe_level(file: &Path) -> String {
    let o = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=level",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
#[ignore = "needs ffmpeg (libx265, libsvtav1): run ./scripts/test"]
fn package_players_hevc_and_av1_codec_strings() {
    // Encoded at run time (not committed): 2 s, 1 s closed GOPs, HEVC tagged hvc1 and AV1.
    let dir = tempfile::tempdir().unwrap();
    let hevc = dir.path().join("hevc.mp4");
    let av1 = dir.path().join("av1.mp4");
    for (out, codec) in [
        (
            &hevc,
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "keyint=25:min-keyint=25:scenecut=0:log-level=error",
                "-tag:v",
                "hvc1",
            ][..],
        ),
        (
            &av1,
            &[
                "-c:v",
                "libsvtav1",
                "-preset",
                "12",
                "-g",
                "25",
                "-svtav1-params",
                "irefresh-type=2",
            ][..],
        ),
    ] {
        let o = tool("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x180:rate=25:duration=2",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(codec)
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let root = dir.path().join("out");
    let entry = package(&root, "codecs", false, &[hevc.clone(), av1.clone()]);
    // HEVC Main: general_profile_compatibility_flags 0x60000000 bit-reversed is 6; level_idc as
    // ffprobe reports it; x265 sets progressive_source and frame_only constraint flags (0x90).
    assert_eq!(
        entry.renditions[0].codec,
        format!("hvc1.1.6.L{}.90", ffprobe_level(&hevc))
    );
    // AV1 Main, seq_level_idx 0 (level 2.0), Main tier, 8 bits.
    assert_eq!(entry.renditions[1].codec, "av01.0.00M.08");
    // ffmpeg decodes both packaged renditions.
    for r in &entry.renditions {
        let o = tool("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(root.join("codecs").join(&r.files[0]))
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{}: {}",
            r.id,
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
#[ignore = "needs nginx, node and chromium: run ./scripts/test"]
fn package_players_chromium_mse_timeline_is_continuous_and_synced() {
    let dir = repo().join("tests/browser");
    node_harness();
    let root = tempfile::tempdir().unwrap();
    let mut titles = Vec::new();
    for (ladder_name, segmented) in [("h264", false), ("h264", true), ("vp9", true)] {
        let title = format!("{ladder_name}-{}", if segmented { "seg" } else { "od" });
        titles.push((
            title.clone(),
            package(root.path(), &title, segmented, &ladder(ladder_name)),
        ));
    }
    let nginx = Nginx::start(root.path());
    for (title, entry) in &titles {
        let o = tool("node")
            .arg(dir.join("mse-timeline.mjs"))
            .args(["--title-url", &nginx.url(&format!("{title}/"))])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{title}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let end = entry.duration_ms as f64 / 1000.0;
        for r in &entry.renditions {
            let got = &v[&r.id];
            let ctx = format!("{title} {}: {got}", r.id);
            assert!(got["error"].is_null(), "{ctx}");
            let ranges = got["ranges"].as_array().unwrap();
            // One range: fragments are continuous. It starts at 0 for video (B-frame delay baked
            // into composition offsets) and for audio (Chromium applies the priming edit list),
            // so audio and video line up; both end at the title's duration.
            assert_eq!(ranges.len(), 1, "{ctx}");
            let (s, e) = (
                ranges[0][0].as_f64().unwrap(),
                ranges[0][1].as_f64().unwrap(),
            );
            assert!(s.abs() < 0.001, "{ctx}");
            assert!((e - end).abs() < 0.025, "{ctx}");
        }
    }
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn package_players_unsupported_codecs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 2] = [
        (
            "mpeg4-part2.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x90:rate=25:duration=1",
                "-c:v",
                "mpeg4",
            ],
            "stsd/mp4v",
        ),
        (
            "mp3-audio.mp4",
            &["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libmp3lame"],
            "objectTypeIndication 0x6b",
        ),
    ];
    for (name, args, want) in cases {
        let input = dir.path().join(name);
        let o = tool("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args)
            .arg(&input)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = dir.path().join(format!("out-{name}"));
        let o = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["package", "--title", "t", "--out"])
            .arg(&out)
            .arg(&input)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name} was accepted");
        assert!(
            err.contains(name) && err.contains("unsupported") && err.contains(want),
            "{err}"
        );
        assert!(!out.join("t").exists());
    }
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn package_players_muxed_input_splits_into_renditions() {
    // One file holding interleaved video and audio (ffmpeg remux of two fixtures): the packager
    // makes two renditions, <stem>-video and <stem>-audio, whose samples (taken from
    // interleaved chunks) are the same as the source files'.
    let dir = tempfile::tempdir().unwrap();
    let muxed = dir.path().join("muxed.mp4");
    let v = repo().join("fixtures/media/ladder-h264/video-360p.mp4");
    let a = repo().join("fixtures/media/ladder-h264/audio-aac.mp4");
    let o = tool("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&v)
        .arg("-i")
        .arg(&a)
        .args(["-map", "0:v", "-map", "1:a", "-c", "copy"])
        .arg(&muxed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = dir.path().join("out");
    let entry = package(&root, "muxed", false, std::slice::from_ref(&muxed));
    let ids: Vec<&str> = entry.renditions.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["muxed-video", "muxed-audio"]);
    for (r, src) in entry.renditions.iter().zip([&v, &a]) {
        let kind = if r.kind == TrackKind::Video { "v" } else { "a" };
        assert_same(
            &framemd5(&root.join("muxed").join(&r.files[0]), kind),
            &framemd5(src, kind),
            &r.id,
        );
    }
}
