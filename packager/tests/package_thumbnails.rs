//! Thumbnails (issue 15 item 4): JPEG tile grids made at test time with ffmpeg's `tile` filter
//! from a committed fixture are packaged with a title; the test checks the copied images, the
//! catalog entry, the DASH image AdaptationSet and the HLS image playlists, and that bad input
//! is refused naming the file and the flag with nothing written.

use std::path::{Path, PathBuf};
use std::process::Command;

use packager::{package, Options, ThumbnailInput};
use protocol::catalog::{PackagingMode, TrackKind};

fn media(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/media")
        .join(rel)
}

fn opts(out: &Path, mode: PackagingMode, thumbnails: ThumbnailInput) -> Options {
    Options {
        title: "title-1".into(),
        out_dir: out.to_path_buf(),
        mode,
        segment_duration_ms: 4000,
        inputs: vec![
            media("ladder-h264/video-240p.mp4"),
            media("ladder-h264/audio-aac.mp4"),
        ],
        audio: Vec::new(),
        text: Vec::new(),
        thumbnails: Some(thumbnails),
        trick_play: Vec::new(),
        encryption: None,
    }
}

/// Makes tile grids of the 12 s fixture: one 160-pixel-wide thumbnail every 2 s, `cols`x`rows`
/// per image, into `dir/%03d.jpg`. Returns the files ffmpeg wrote.
fn make_tiles(dir: &Path, cols: u32, rows: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(media("ladder-h264/video-240p.mp4"))
        .args([
            "-vf",
            &format!("fps=1/2,scale=160:-2,tile={cols}x{rows}"),
            "-q:v",
            "5",
        ])
        .arg(dir.join("%03d.jpg"))
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg failed");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The attribute `name` of an HLS tag line (`NAME="x"` or `NAME=x`).
fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.split_once(':')?.1;
    for part in split_attrs(rest) {
        if let Some((k, v)) = part.split_once('=') {
            if k == name {
                return Some(v.trim_matches('"'));
            }
        }
    }
    None
}

fn split_attrs(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check(mode: PackagingMode) {
    let tmp = tempfile::tempdir().unwrap();
    let tiles = make_tiles(&tmp.path().join("tiles"), 2, 2);
    // 6 thumbnails (0, 2, ..., 10 s) in 2x2 grids: 2 images, the second half full.
    assert_eq!(tiles.len(), 2, "{tiles:?}");
    let out = tmp.path().join("out");
    let input = ThumbnailInput {
        source: tmp.path().join("tiles/%03d.jpg"),
        interval_ms: 2000,
        cols: 2,
        rows: 2,
    };
    let entry = package(&opts(&out, mode, input), None).unwrap();
    let dir = out.join("title-1");

    // Catalog: an image rendition without a tier, listing the copied images and the playlist.
    let r = entry
        .renditions
        .iter()
        .find(|r| r.kind == TrackKind::Image)
        .expect("an image rendition");
    assert_eq!(r.id, "thumbnails");
    assert_eq!(r.codec, "jpeg");
    assert_eq!(r.tier, None);
    assert_eq!((r.width, r.height), (Some(320), Some(180)));
    assert_eq!(
        r.files,
        [
            "thumbnails/00001.jpg",
            "thumbnails/00002.jpg",
            "thumbnails/index.m3u8"
        ]
    );
    for (k, src) in tiles.iter().enumerate() {
        let copied = std::fs::read(dir.join(&r.files[k])).unwrap();
        assert_eq!(
            copied,
            std::fs::read(src).unwrap(),
            "image {k} copied unchanged"
        );
        let f = entry.files.iter().find(|f| f.path == r.files[k]).unwrap();
        assert_eq!(f.size, copied.len() as u64);
    }

    // DASH: an image AdaptationSet, one grid image per 8 s, the tile layout.
    let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    let set_start = mpd
        .find(r#"contentType="image" mimeType="image/jpeg""#)
        .expect("image AdaptationSet");
    let set = &mpd[set_start..mpd[set_start..].find("</AdaptationSet>").unwrap() + set_start];
    assert!(
        set.contains(r#"<SegmentTemplate media="thumbnails/$Number%05d$.jpg" timescale="1000" duration="8000" startNumber="1"/>"#),
        "{set}"
    );
    assert!(
        set.contains(r#"<Representation id="thumbnails" bandwidth=""#)
            && set.contains(r#"width="320" height="180">"#),
        "{set}"
    );
    assert!(
        set.contains(
            r#"<EssentialProperty schemeIdUri="http://dashif.org/thumbnail_tile" value="2x2"/>"#
        ),
        "{set}"
    );
    // Its bandwidth: the largest image over 8 s.
    let max = tiles
        .iter()
        .map(|t| std::fs::metadata(t).unwrap().len())
        .max()
        .unwrap();
    assert!(set.contains(&format!(r#"bandwidth="{}""#, (max * 8000).div_ceil(8000))));

    // HLS: the master names the image playlist; the playlist lists each image with its tiles.
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    let line = master
        .lines()
        .find(|l| l.starts_with("#EXT-X-IMAGE-STREAM-INF:"))
        .expect("EXT-X-IMAGE-STREAM-INF");
    assert_eq!(attr(line, "URI"), Some("thumbnails/index.m3u8"));
    // One thumbnail's resolution (a tile), not the grid image's.
    assert_eq!(attr(line, "RESOLUTION"), Some("160x90"));
    assert_eq!(attr(line, "CODECS"), Some("jpeg"));
    let playlist = std::fs::read_to_string(dir.join("thumbnails/index.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-IMAGES-ONLY\n"), "{playlist}");
    let tiles_lines: Vec<&str> = playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-TILES:"))
        .collect();
    assert_eq!(tiles_lines.len(), 2, "{playlist}");
    for l in &tiles_lines {
        assert_eq!(attr(l, "RESOLUTION"), Some("160x90"));
        assert_eq!(attr(l, "LAYOUT"), Some("2x2"));
        assert_eq!(attr(l, "DURATION"), Some("2.000"));
    }
    let extinf: Vec<&str> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .collect();
    // The second image ends with the title (12 s).
    assert_eq!(extinf, ["8.000,", "4.000,"]);
    let uris: Vec<&str> = playlist.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(uris, ["00001.jpg", "00002.jpg"]);
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn thumbnails_on_demand() {
    check(PackagingMode::OnDemand);
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn thumbnails_segmented() {
    check(PackagingMode::Segmented);
}

/// Packages with `input` and expects an error containing every one of `needles`, with nothing
/// written in the output directory.
fn refused(tmp: &Path, input: ThumbnailInput, needles: &[&str]) {
    let out = tmp.join("out");
    let e = package(&opts(&out, PackagingMode::OnDemand, input), None)
        .unwrap_err()
        .to_string();
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
#[ignore = "needs ffmpeg: run ./scripts/test"]
fn bad_thumbnails_are_refused_naming_file_and_flag_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let tiles = make_tiles(&tmp.path().join("tiles"), 2, 2);
    let input = |source: PathBuf, interval_ms: u64, cols: u32, rows: u32| ThumbnailInput {
        source,
        interval_ms,
        cols,
        rows,
    };
    // 320 pixels do not divide into 3 columns.
    refused(
        tmp.path(),
        input(tmp.path().join("tiles"), 2000, 3, 2),
        &["--thumbnails", &tiles[0].display().to_string(), "3x2 grid"],
    );
    // At 5 s per thumbnail, the second 2x2 image would start at 20 s, past the 12 s title.
    refused(
        tmp.path(),
        input(tmp.path().join("tiles"), 5000, 2, 2),
        &[
            "--thumbnails",
            &tiles[1].display().to_string(),
            "past the end",
        ],
    );
    // A PNG named .jpg.
    let png_dir = tmp.path().join("png");
    std::fs::create_dir(&png_dir).unwrap();
    std::fs::copy(&tiles[0], png_dir.join("001.jpg")).unwrap();
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(&tiles[1])
        .args(["-f", "image2", "-c:v", "png"])
        .arg(png_dir.join("002.jpg"))
        .status()
        .unwrap();
    assert!(st.success());
    refused(
        tmp.path(),
        input(png_dir.clone(), 2000, 2, 2),
        &["--thumbnails", "002.jpg", "SOI"],
    );
    // Images of different sizes.
    let odd_dir = tmp.path().join("odd");
    make_tiles(&odd_dir, 2, 1);
    std::fs::copy(&tiles[0], odd_dir.join("000.jpg")).unwrap();
    refused(
        tmp.path(),
        input(odd_dir, 2000, 2, 1),
        &["--thumbnails", "001.jpg", "320x90", "320x180"],
    );
    // A pattern matching nothing; an empty directory.
    refused(
        tmp.path(),
        input(tmp.path().join("none/%03d.jpg"), 2000, 2, 2),
        &["--thumbnails", "no file matches"],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(
        tmp.path(),
        input(empty, 2000, 2, 2),
        &["--thumbnails", "no .jpg"],
    );
}
