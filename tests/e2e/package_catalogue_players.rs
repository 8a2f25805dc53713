//! Catalogue features in real players (issue 15): a title with two audio languages (English
//! stereo, French 5.1), English subtitles and French forced subtitles, and I-frame playlists,
//! played in headless Chromium by Shaka Player (DASH) and hls.js (HLS) from nginx on loopback
//! (`tests/browser/catalogue.mjs`). The subtitles are given as WebVTT (DASH: `wvtt` in MP4) and,
//! in a third title, as IMSC1/TTML (DASH: `stpp` in MP4; HLS: converted to WebVTT). Needs nginx,
//! node and Chromium: `#[ignore]`d, run by `./scripts/test`.

use std::path::Path;

use crate::support::{media, node_harness, tool, Nginx};

const EN_VTT: &str = "WEBVTT\n\n00:00.500 --> 00:02.000\nHello.\n\n00:03.000 --> 00:05.250\nA cue across two segments.\n\n00:09.000 --> 00:11.000\nThe end.\n";
const FR_FORCED_VTT: &str =
    "WEBVTT\n\n00:01.000 --> 00:03.500\n[Panneau : SORTIE]\n\n00:07.000 --> 00:08.000\n[Lettre]\n";

/// `(start ms, end ms, text)` of every cue of a WebVTT document.
fn expected(vtt: &str) -> Vec<(u64, u64, String)> {
    packager::text::parse_webvtt(Path::new("x.vtt"), vtt, u64::MAX)
        .unwrap()
        .cues
        .into_iter()
        .map(|c| (c.start_ms, c.end_ms, c.payload))
        .collect()
}

/// The same cues as an IMSC1 document, with clock, offset (`ms`) and tick times, the language
/// in `xml:lang` (so `--text :ROLE:PATH` takes it from the file).
fn ttml(vtt: &str, lang: &str) -> String {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter" ttp:tickRate="1000" xml:lang="{lang}">
<head/>
<body><div>
"#
    );
    for (k, (a, b, text)) in expected(vtt).into_iter().enumerate() {
        let begin = match k % 3 {
            0 => packager::text::format_time(a),
            1 => format!("{a}ms"),
            _ => format!("{a}t"),
        };
        s.push_str(&format!(
            "<p begin=\"{begin}\" end=\"{}s\">{}</p>\n",
            b as f64 / 1000.0,
            text.replace('&', "&amp;").replace('<', "&lt;")
        ));
    }
    s.push_str("</div></body>\n</tt>\n");
    s
}

/// The cues a player put in `video.textTracks` for one language key, deduplicated and sorted;
/// pieces of one cue (WebVTT in MP4 splits a cue at each segment boundary) joined.
fn cues(v: &serde_json::Value, lang: &str) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    if let Some(obj) = v.as_object() {
        for (k, list) in obj {
            if !k.starts_with(lang) {
                continue;
            }
            for c in list.as_array().unwrap() {
                let c = (
                    c[0].as_u64().unwrap(),
                    c[1].as_u64().unwrap(),
                    c[2].as_str().unwrap().to_string(),
                );
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out.sort();
    let mut joined: Vec<(u64, u64, String)> = Vec::new();
    for c in out {
        match joined.last_mut() {
            Some(l) if l.2 == c.2 && l.1.abs_diff(c.0) <= 1 => l.1 = l.1.max(c.1),
            _ => joined.push(c),
        }
    }
    joined
}

/// Times asked of Shaka's `getThumbnails` (`--thumbs`).
const THUMB_TIMES: [f64; 6] = [0.5, 3.0, 5.0, 7.9, 9.0, 11.0];

/// A thumbnail as the harness reports it: position x, y, width, height, image file, start.
type Thumb = (i64, i64, i64, i64, String, f64);

fn thumbs(v: &serde_json::Value, ctx: &str) -> Vec<Thumb> {
    v["thumbs"]
        .as_array()
        .unwrap_or_else(|| panic!("no thumbs: {ctx}"))
        .iter()
        .map(|t| {
            (
                t["positionX"].as_i64().unwrap(),
                t["positionY"].as_i64().unwrap(),
                t["width"].as_i64().unwrap(),
                t["height"].as_i64().unwrap(),
                t["uri"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                t["startTime"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Thumbnail k covers [2k, 2k+2) s: image k/4, column k%2, row (k/2)%2 of 160x90 tiles.
fn expected_thumbs() -> Vec<Thumb> {
    THUMB_TIMES
        .iter()
        .map(|&t| {
            let k = (t / 2.0).floor() as i64;
            (
                (k % 2) * 160,
                ((k / 2) % 2) * 90,
                160,
                90,
                format!("{:05}.jpg", k / 4 + 1),
                (k * 2) as f64,
            )
        })
        .collect()
}

#[test]
#[ignore = "needs nginx, node and chromium: run ./scripts/test"]
fn package_catalogue_languages_subtitles_and_trick_play_in_chromium() {
    let harness = node_harness("catalogue.mjs");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let en = work.path().join("text-en.vtt");
    let fr = work.path().join("text-fr-forced.vtt");
    std::fs::write(&en, EN_VTT).unwrap();
    std::fs::write(&fr, FR_FORCED_VTT).unwrap();
    let specs = [
        format!("en:main:{}", media("ladder-h264/audio-aac.mp4").display()),
        format!("-:main:{}", media("languages/audio-fr-51.mp4").display()),
        format!("en:subtitle:{}", en.display()),
        format!("fr:forced:{}", fr.display()),
    ];
    // Thumbnails: 2x2 grids of 160x90 tiles, one every 2 s (ffmpeg's tile filter, at test time).
    let tiles = work.path().join("tiles");
    std::fs::create_dir(&tiles).unwrap();
    let st = tool("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(media("ladder-h264/video-240p.mp4"))
        .args(["-vf", "fps=1/2,scale=160:-2,tile=2x2", "-q:v", "5"])
        .arg(tiles.join("%03d.jpg"))
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg tile");
    let tiles = tiles.display().to_string();
    let extra = [
        "--audio",
        &specs[0],
        "--audio",
        &specs[1],
        "--text",
        &specs[2],
        "--text",
        &specs[3],
        "--thumbnails",
        &tiles,
        "--thumbnail-interval",
        "2",
        "--thumbnail-grid",
        "2x2",
    ];
    let mut titles = Vec::new();
    for segmented in [false, true] {
        let title = if segmented { "cat-seg" } else { "cat-od" };
        crate::support::package(
            &root,
            title,
            segmented,
            &extra,
            &[
                media("ladder-h264/video-240p.mp4"),
                media("ladder-h264/video-360p.mp4"),
            ],
        );
        titles.push(title);
    }
    // The same subtitles as IMSC1/TTML, languages from xml:lang: stpp for DASH.
    let en_ttml = work.path().join("text-en.ttml");
    let fr_ttml = work.path().join("text-fr-forced.ttml");
    std::fs::write(&en_ttml, ttml(EN_VTT, "en")).unwrap();
    std::fs::write(&fr_ttml, ttml(FR_FORCED_VTT, "fr")).unwrap();
    let ttml_specs = [
        format!(":subtitle:{}", en_ttml.display()),
        format!("-:forced:{}", fr_ttml.display()),
    ];
    let mut extra_ttml = extra;
    extra_ttml[5] = &ttml_specs[0];
    extra_ttml[7] = &ttml_specs[1];
    crate::support::package(
        &root,
        "cat-ttml",
        false,
        &extra_ttml,
        &[
            media("ladder-h264/video-240p.mp4"),
            media("ladder-h264/video-360p.mp4"),
        ],
    );
    let ttml_mpd = std::fs::read_to_string(root.join("cat-ttml/manifest.mpd")).unwrap();
    assert!(
        ttml_mpd.contains(r#"codecs="stpp.ttml.im1t" lang="fr""#),
        "{ttml_mpd}"
    );
    let wvtt_mpd = std::fs::read_to_string(root.join("cat-od/manifest.mpd")).unwrap();
    assert!(
        wvtt_mpd.contains(r#"codecs="wvtt" lang="fr""#),
        "{wvtt_mpd}"
    );
    let nginx = Nginx::start(&root);
    let thumb_times = THUMB_TIMES.map(|t| t.to_string()).join(",");
    for title in &titles {
        // Shaka on the HLS master: the image playlist of EXT-X-IMAGE-STREAM-INF (EXT-X-TILES)
        // gives the same tiles as the DASH image AdaptationSet.
        let url = nginx.url(&format!("{title}/master.m3u8"));
        let o = tool("node")
            .arg(&harness)
            .args(["--player", "shaka", "--url", &url, "--thumbs", &thumb_times])
            .arg("--thumbs-only")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "shaka {url}: {}\n{stdout}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let ctx = format!("shaka {url}: {v}");
        assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{ctx}");
        assert_eq!(thumbs(&v, &ctx), expected_thumbs(), "{ctx}");
    }
    titles.push("cat-ttml");
    for title in &titles {
        for (player, manifest) in [("shaka", "manifest.mpd"), ("hls", "master.m3u8")] {
            let url = nginx.url(&format!("{title}/{manifest}"));
            let o = tool("node")
                .arg(&harness)
                .args(["--player", player, "--url", &url, "--audio-to", "fr"])
                .args([
                    "--text",
                    "en",
                    "--text",
                    "fr",
                    "--thumbs",
                    "0.5,3,5,7.9,9,11",
                ])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{player} {url}: {}\n{stdout}",
                String::from_utf8_lossy(&o.stderr)
            );
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            let ctx = format!("{player} {url}: {v}");
            assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{ctx}");
            // The audio language switch changes the playing track: the player reports French
            // and fetched the French rendition.
            assert!(
                v["audio"]["before"].as_str().unwrap().starts_with("en"),
                "{ctx}"
            );
            assert!(
                v["audio"]["after"].as_str().unwrap().starts_with("fr"),
                "{ctx}"
            );
            let reqs: Vec<&str> = v["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert!(
                reqs.iter()
                    .any(|r| r.contains("/audio-fr-51/") && !r.ends_with(".m3u8")),
                "{ctx}"
            );
            // DASH plays text in MP4 (wvtt, or stpp for the TTML title), HLS segmented WebVTT.
            let text_reqs: Vec<&&str> = reqs
                .iter()
                .filter(|r| r.contains("/text-en/") || r.contains("/text-fr-forced/"))
                .collect();
            if player == "shaka" {
                assert!(
                    text_reqs
                        .iter()
                        .any(|r| r.ends_with(".mp4") || r.ends_with(".m4s"))
                        && !text_reqs.iter().any(|r| r.ends_with(".vtt")),
                    "{ctx}"
                );
            } else {
                assert!(text_reqs.iter().any(|r| r.ends_with(".vtt")), "{ctx}");
            }
            // Subtitle cues appear in video.textTracks at the right times, in both languages.
            assert_eq!(cues(&v["text"]["en"], "en"), expected(EN_VTT), "{ctx}");
            assert_eq!(
                cues(&v["text"]["fr"], "fr"),
                expected(FR_FORCED_VTT),
                "{ctx}"
            );
            if player == "shaka" {
                // getThumbnails: the tile of each time, in the right grid image.
                assert_eq!(thumbs(&v, &ctx), expected_thumbs(), "{ctx}");
                // The forced track shows without being selected once the audio is French:
                // Shaka activates it and its cues reach video.textTracks.
                assert_eq!(
                    v["forced"]["activeWithoutSelection"],
                    serde_json::json!({"forced": true, "language": "fr"}),
                    "{ctx}"
                );
                assert_eq!(
                    cues(&v["forced"]["cues"], "fr"),
                    expected(FR_FORCED_VTT),
                    "{ctx}"
                );
            } else {
                // hls.js 1.7 reads FORCED=YES but does not select a forced track by itself.
                let tracks = v["text"]["tracks"].as_array().unwrap();
                assert!(
                    tracks
                        .iter()
                        .any(|t| t["lang"] == "fr" && t["forced"] == true),
                    "{ctx}"
                );
            }
            if player == "hls" {
                // hls.js parses both I-frame variants of the master.
                let iframes = v["iframes"].as_array().unwrap();
                assert_eq!(iframes.len(), 2, "{ctx}");
                let heights: Vec<u64> = iframes
                    .iter()
                    .map(|f| f["height"].as_u64().unwrap())
                    .collect();
                assert_eq!(heights, vec![240, 360], "{ctx}");
            }
        }
    }
}

/// The path of a fetched URL is media of the trick play rendition (not a playlist, not an init
/// segment).
fn is_trick_media(path: &str) -> bool {
    path.contains("/trick-144p/") && !path.ends_with(".m3u8") && !path.ends_with("/init.mp4")
}

#[test]
#[ignore = "needs nginx, node and chromium: run ./scripts/test"]
fn package_trick_play_rendition_in_chromium() {
    // The H.264 ladder (240p, 360p, audio) with a keyframe-only trick play rendition made here
    // from the 240p rung: one frame a second, every frame a keyframe, 256x144.
    let harness = node_harness("catalogue.mjs");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let trick = work.path().join("trick-144p.mp4");
    let st = tool("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(media("ladder-h264/video-240p.mp4"))
        .args([
            "-an",
            "-vf",
            "fps=1,scale=256:144,setsar=1",
            "-c:v",
            "libx264",
        ])
        .args([
            "-g",
            "1",
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
            "-crf",
            "30",
        ])
        .arg(&trick)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg");
    let trick_flag = trick.display().to_string();
    let inputs = [
        media("ladder-h264/video-240p.mp4"),
        media("ladder-h264/video-360p.mp4"),
        media("ladder-h264/audio-aac.mp4"),
    ];
    for (title, segmented) in [("trick-od", false), ("trick-seg", true)] {
        let entry = crate::support::package(
            &root,
            title,
            segmented,
            &["--segment-duration", "2", "--trick-play", &trick_flag],
            &inputs,
        );
        assert!(entry
            .renditions
            .iter()
            .any(|r| r.id == "trick-144p" && r.is_trick()));
    }
    let nginx = Nginx::start(&root);
    for title in ["trick-od", "trick-seg"] {
        let run = |player: &str, manifest: &str| {
            let url = nginx.url(&format!("{title}/{manifest}"));
            let o = tool("node")
                .arg(&harness)
                .args(["--player", player, "--url", &url, "--trick"])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{player} {url}: {}\n{stdout}",
                String::from_utf8_lossy(&o.stderr)
            );
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            let ctx = format!("{player} {url}: {v}");
            assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{ctx}");
            (v, ctx)
        };
        let paths = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect()
        };

        // Shaka Player, DASH: the trick mode AdaptationSet is no variant of its own; every
        // variant carries it as its trick mode video.
        let (v, ctx) = run("shaka", "manifest.mpd");
        let t = &v["trick"];
        let heights: Vec<u64> = t["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["height"].as_u64().unwrap())
            .collect();
        assert!(!heights.is_empty() && !heights.contains(&144), "{ctx}");
        for variant in t["variants"].as_array().unwrap() {
            assert_ne!(variant["video"]["id"], "trick-144p", "{ctx}");
            assert_eq!(variant["trickModeVideo"]["id"], "trick-144p", "{ctx}");
            assert_eq!(variant["trickModeVideo"]["height"], 144, "{ctx}");
        }
        // Normal playback plays the ladder and fetches no trick media.
        let normal = &t["normal"];
        assert!(
            [240, 360].contains(&normal["active"]["height"].as_u64().unwrap()),
            "{ctx}"
        );
        assert!(
            !paths(&normal["fetched"]).iter().any(|p| is_trick_media(p)),
            "{ctx}"
        );
        // trickPlay(4) switches the video to the trick rendition: its media is fetched.
        let during = paths(&t["during"]["fetched"]);
        assert!(during.iter().any(|p| is_trick_media(p)), "{ctx}");
        if title == "trick-seg" {
            assert!(
                during
                    .iter()
                    .any(|p| p.contains("/trick-144p/") && p.ends_with(".m4s")),
                "{ctx}"
            );
        }
        assert_eq!(t["during"]["rate"], 4, "{ctx}");
        assert_eq!(t["after"]["rate"], 1, "{ctx}");

        // hls.js, HLS: the trick rendition is an I-frame variant only, never a level.
        let (v, ctx) = run("hls", "master.m3u8");
        let t = &v["trick"];
        let levels: Vec<u64> = t["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["height"].as_u64().unwrap())
            .collect();
        assert_eq!(levels, vec![240, 360], "{ctx}");
        let iframes: Vec<(u64, String)> = v["iframes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["height"].as_u64().unwrap(),
                    f["url"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .nth(1)
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            iframes,
            vec![
                (240, "video-240p".to_string()),
                (360, "video-360p".to_string()),
                (144, "trick-144p".to_string())
            ],
            "{ctx}"
        );
        assert!(
            !paths(&t["normal"]["fetched"])
                .iter()
                .any(|p| p.contains("/trick-144p/")),
            "{ctx}"
        );
    }
}
