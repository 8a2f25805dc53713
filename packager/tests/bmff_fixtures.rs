//! Parses the committed media fixtures and checks the sample-table model and the errors for the
//! broken ones.

use std::path::{Path, PathBuf};

use packager::bmff::{parse_file, TrackKind};

fn media(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/media")
        .join(rel)
}

#[test]
fn h264_rendition_model() {
    let t = parse_file(&media("ladder-h264/video-240p.mp4")).unwrap();
    assert_eq!(t.len(), 1);
    let v = &t[0];
    assert_eq!(v.kind, TrackKind::Video);
    assert!(v.entry.codec.starts_with("avc1.6400"), "{}", v.entry.codec);
    assert_eq!((v.entry.width, v.entry.height), (426, 240));
    assert_eq!(v.timescale, 12800);
    assert_eq!(v.samples.len(), 300);
    let syncs: Vec<usize> = (0..300).filter(|&i| v.samples[i].sync).collect();
    assert_eq!(syncs, vec![0, 48, 96, 144, 192, 240, 288]);
    // B-frames: the edit list removes the first composition offset, so the first frame shows at 0.
    assert!(v.edit_shift > 0);
    assert_eq!(v.pts(&v.samples[0]), 0);
    assert_eq!(v.end_pts(), 12 * 12800);
    assert_eq!(v.typical_duration(), 512);
}

#[test]
fn audio_models() {
    let a = &parse_file(&media("ladder-h264/audio-aac.mp4")).unwrap()[0];
    assert_eq!(a.kind, TrackKind::Audio);
    assert_eq!(a.entry.codec, "mp4a.40.2");
    assert_eq!((a.entry.sample_rate, a.entry.channels), (48000, 2));
    assert_eq!(a.edit_shift, 1024, "AAC priming in the edit list");
    let o = &parse_file(&media("ladder-vp9/audio-opus.mp4")).unwrap()[0];
    assert_eq!(o.entry.codec, "opus");
    assert_eq!(o.timescale, 48000);
    let v = &parse_file(&media("ladder-vp9/video-360p.mp4")).unwrap()[0];
    assert!(v.entry.codec.starts_with("vp09.00."), "{}", v.entry.codec);
}

#[test]
fn broken_fixtures_name_file_and_box() {
    for (f, want) in [
        ("bad/empty.mp4", "empty"),
        ("bad/not-mp4.mp4", "not an MP4"),
        ("bad/truncated.mp4", "mdat"),
    ] {
        let err = parse_file(&media(f)).unwrap_err().to_string();
        assert!(err.contains(f.rsplit('/').next().unwrap()), "{err}");
        assert!(err.contains(want), "{f}: {err}");
    }
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

#[test]
fn missing_moov_and_corrupt_tables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // ftyp + mdat, no moov.
    let mut f = boxed(b"ftyp", b"isom\0\0\0\0isom");
    f.extend(boxed(b"mdat", &[0; 64]));
    let p = dir.path().join("no-moov.mp4");
    std::fs::write(&p, &f).unwrap();
    let err = parse_file(&p).unwrap_err().to_string();
    assert!(
        err.contains("no-moov.mp4") && err.contains("no moov box"),
        "{err}"
    );

    // A real rendition with its stsz sample count forged upwards: the sizes table is too short.
    let mut data = std::fs::read(media("ladder-h264/video-240p.mp4")).unwrap();
    let at = data.windows(4).position(|w| w == b"stsz").unwrap();
    data[at + 12..at + 16].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    let p = dir.path().join("forged-stsz.mp4");
    std::fs::write(&p, &data).unwrap();
    let err = parse_file(&p).unwrap_err().to_string();
    assert!(
        err.contains("forged-stsz.mp4") && err.contains("moov/trak[1]/mdia/minf/stbl/stsz"),
        "{err}"
    );

    // A chunk offset pointing past the end of the file.
    let mut data = std::fs::read(media("ladder-h264/video-240p.mp4")).unwrap();
    let at = data.windows(4).position(|w| w == b"stco").unwrap();
    data[at + 12..at + 16].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
    let p = dir.path().join("bad-stco.mp4");
    std::fs::write(&p, &data).unwrap();
    let err = parse_file(&p).unwrap_err().to_string();
    assert!(
        err.contains("bad-stco.mp4") && err.contains("outside every mdat"),
        "{err}"
    );
}
