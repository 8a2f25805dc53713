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
    let cases: [(&str, &[&str]); 5] = [
        ("bad/empty.mp4", &["empty.mp4", "empty (0 bytes)"]),
        ("bad/not-mp4.mp4", &["not-mp4.mp4", "not an MP4"]),
        (
            "bad/truncated.mp4",
            &["truncated.mp4", "at mdat", "truncated file"],
        ),
        (
            "bad/misaligned-keyframes.mp4",
            &["misaligned-keyframes", "no keyframe at 5.760 s"],
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
    ] {
        let o = outpost(&args, std::slice::from_ref(&good));
        assert!(!o.status.success());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
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
