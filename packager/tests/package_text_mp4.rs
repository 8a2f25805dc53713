//! Text in MP4 for DASH (`wvtt`, `stpp`) and IMSC1/TTML input, end to end through `package`:
//! the cues read back from the MP4 the packager wrote — by a box reader written here from
//! ISO/IEC 14496-12/-30 and by ffmpeg — equal the cues given, times exact, across segment
//! splits, in both packaging modes; bad TTML is refused naming file, line and cue with nothing
//! written.

use std::path::{Path, PathBuf};
use std::process::Command;

use packager::{package, Error, Options, TextInput};
use protocol::catalog::{CatalogEntry, PackagingMode, Rendition, TrackKind};

fn media(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/media")
        .join(rel)
}

/// A cue spanning the ~3.84 s segment boundary, with an id and settings, and escapes.
const EN_VTT: &str = "WEBVTT\n\nintro\n00:00.500 --> 00:02.000\nHello &amp; welcome.\n\n00:03.000 --> 00:05.250 line:10% align:start\n<i>A cue</i> across\ntwo segments.\n\n00:09.000 --> 00:11.960\nThe end.\n";

/// The same cues as IMSC1, with ticks, frames, offset and clock times, a div offset, spans and
/// line breaks, and the language from `xml:lang`.
const EN_TTML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter"
    xmlns:tts="http://www.w3.org/ns/ttml#styling" xmlns:ttm="http://www.w3.org/ns/ttml#metadata"
    ttp:profile="http://www.w3.org/ns/ttml/profile/imsc1/text" ttp:frameRate="25"
    ttp:tickRate="10000000" xml:lang="en">
  <head>
    <styling><style xml:id="s1" tts:color="white" tts:backgroundColor="black"/></styling>
    <layout><region xml:id="bottom" tts:origin="10% 80%" tts:extent="80% 15%"/></layout>
  </head>
  <body style="s1" region="bottom">
    <div>
      <p xml:id="intro" begin="5000000t" end="00:00:02:00">Hello &amp; welcome.</p>
      <p begin="3s" end="5250ms"><span tts:fontStyle="italic">A cue</span> across<br/>two
         segments.</p>
    </div>
    <div begin="00:00:09.000">
      <p begin="0s" dur="2.96s">The end.</p>
    </div>
  </body>
</tt>
"#;

/// Expected `(start ms, end ms, text)` of the cues above, WebVTT-escaped as in `payl`.
fn expected_vtt() -> Vec<(u64, u64, String)> {
    vec![
        (500, 2000, "Hello &amp; welcome.".into()),
        (3000, 5250, "<i>A cue</i> across\ntwo segments.".into()),
        (9000, 11960, "The end.".into()),
    ]
}

fn opts(out: &Path, mode: PackagingMode, text: Vec<TextInput>) -> Options {
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
        text,
        thumbnails: None,
        trick_play: Vec::new(),
        encryption: None,
    }
}

fn package_text(
    mode: PackagingMode,
    texts: &[(&str, &str, &str)],
) -> (tempfile::TempDir, Result<CatalogEntry, Error>) {
    let out = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (name, head, body) in texts {
        let p = out.path().join(name);
        std::fs::write(&p, body).unwrap();
        inputs.push(TextInput::parse(&format!("{head}:{}", p.display())).unwrap());
    }
    let r = package(&opts(&out.path().join("out"), mode, inputs), None);
    (out, r)
}

// ---- A minimal ISO BMFF reader, independent of the packager's. ----

/// `(start ms, end ms, text)`.
type TextCue = (u64, u64, String);
/// A `moof` read, waiting for its `mdat`.
type Pending = (u64, Vec<(u64, usize)>, usize);

/// `(type, body)` of each box in `b`.
fn boxes(b: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= b.len() {
        let size = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && i + size <= b.len(),
            "bad box size {size} at {i}"
        );
        out.push((b[i + 4..i + 8].try_into().unwrap(), &b[i + 8..i + size]));
        i += size;
    }
    assert_eq!(i, b.len(), "trailing bytes");
    out
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    boxes(b)
        .into_iter()
        .find(|(k, _)| k == kind)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(kind)))
        .1
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The sample entry (type, body) of an init segment.
fn sample_entry(init: &[u8]) -> ([u8; 4], Vec<u8>) {
    let moov = child(init, b"moov");
    let stbl = child(
        child(child(child(moov, b"trak"), b"mdia"), b"minf"),
        b"stbl",
    );
    let stsd = child(stbl, b"stsd");
    let (k, body) = boxes(&stsd[8..])[0];
    (k, body.to_vec())
}

/// `(decode time ms, duration ms, bytes)` of every sample of the fragments in `b`.
fn samples(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let top = boxes(b);
    let mut at = 0usize;
    // The last moof: base decode time, (duration, size) of each sample, first sample offset.
    let mut pending: Option<Pending> = None;
    for (k, body) in &top {
        let whole = body.len() + 8;
        if k == b"moof" {
            let moof_at = at;
            let traf = child(body, b"traf");
            let tfhd = child(traf, b"tfhd");
            assert_eq!(
                u32_at(tfhd, 0) & 0x02_0000,
                0x02_0000,
                "default-base-is-moof"
            );
            let tfdt = child(traf, b"tfdt");
            assert_eq!(tfdt[0], 1, "tfdt v1");
            let base = u64::from_be_bytes(tfdt[4..12].try_into().unwrap());
            let trun = child(traf, b"trun");
            let flags = u32_at(trun, 0) & 0xff_ffff;
            assert_eq!(flags, 0x301, "trun: data offset, duration, size");
            let n = u32_at(trun, 4) as usize;
            let off = u32_at(trun, 8) as usize;
            let list = (0..n)
                .map(|i| {
                    (
                        u64::from(u32_at(trun, 12 + 8 * i)),
                        u32_at(trun, 16 + 8 * i) as usize,
                    )
                })
                .collect();
            pending = Some((base, list, moof_at + off));
        } else if k == b"mdat" {
            let (mut t, list, mut pos) = pending.take().expect("mdat without moof");
            for (d, size) in list {
                out.push((t, d, b[pos..pos + size].to_vec()));
                t += d;
                pos += size;
            }
        }
        at += whole;
    }
    out
}

/// Joins `(start, end, text)` pieces of one cue split over consecutive samples or segments.
fn join(mut cues: Vec<(u64, u64, String)>) -> Vec<(u64, u64, String)> {
    cues.sort();
    cues.dedup();
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for c in cues {
        match out.last_mut() {
            Some(l) if l.1 == c.0 && l.2 == c.2 => l.1 = c.1,
            _ => out.push(c),
        }
    }
    out
}

/// Every file of a rendition, init first then segments, concatenated (segmented), or the file.
fn track_bytes(dir: &Path, r: &Rendition) -> Vec<u8> {
    let mp4: Vec<&String> = r
        .files
        .iter()
        .filter(|f| f.ends_with(".mp4") || f.ends_with(".m4s"))
        .collect();
    let mut out = Vec::new();
    for f in mp4 {
        out.extend(std::fs::read(dir.join(f)).unwrap());
    }
    out
}

fn wvtt_cues(bytes: &[u8]) -> (Vec<TextCue>, Vec<(u64, u64)>) {
    let mut cues = Vec::new();
    let mut empties = Vec::new();
    for (t, d, s) in samples(bytes) {
        for (k, body) in boxes(&s) {
            match &k {
                b"vttc" => {
                    let payl = child(body, b"payl");
                    cues.push((t, t + d, String::from_utf8(payl.to_vec()).unwrap()));
                }
                b"vtte" => {
                    assert!(body.is_empty());
                    empties.push((t, t + d));
                }
                other => panic!("unexpected {}", String::from_utf8_lossy(other)),
            }
        }
    }
    (cues, empties)
}

/// `(begin, end, plain text)` of each `<p>` of a TTML document written by the packager
/// (clock times `hh:mm:ss.mmm`), scanning the text.
fn ttml_cues(doc: &str) -> Vec<(u64, u64, String)> {
    let ms = |s: &str| -> u64 {
        let (hms, frac) = s.split_once('.').unwrap();
        let p: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
        (p[0] * 3600 + p[1] * 60 + p[2]) * 1000 + frac.parse::<u64>().unwrap()
    };
    let attr = |tag: &str, name: &str| -> String {
        let k = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        tag[k..k + tag[k..].find('"').unwrap()].to_string()
    };
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(k) = rest.find("<p ") {
        let tag_end = k + rest[k..].find('>').unwrap();
        let tag = &rest[k..tag_end];
        let close = tag_end + rest[tag_end..].find("</p>").unwrap();
        let inner = &rest[tag_end + 1..close];
        // Plain text: <br/> is a line break, other tags dropped, whitespace collapsed.
        let mut text = String::new();
        let mut in_tag = false;
        let mut tagname = String::new();
        for ch in inner.chars() {
            match (in_tag, ch) {
                (false, '<') => {
                    in_tag = true;
                    tagname.clear();
                }
                (true, '>') => {
                    in_tag = false;
                    if tagname.starts_with("br") {
                        text.push('\n');
                    }
                }
                (true, c) => tagname.push(c),
                (false, c) => text.push(if c.is_whitespace() { ' ' } else { c }),
            }
        }
        let text: Vec<String> = text
            .split('\n')
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push((
            ms(&attr(tag, "begin")),
            ms(&attr(tag, "end")),
            text.join("\n"),
        ));
        rest = &rest[close..];
    }
    out
}

#[test]
fn wvtt_cues_read_back_equal_cues_in_across_segment_splits() {
    for mode in [PackagingMode::OnDemand, PackagingMode::Segmented] {
        let (out, e) = package_text(mode, &[("text-en.vtt", "en:subtitle", EN_VTT)]);
        let e = e.unwrap();
        let dir = out.path().join("out/title-1");
        let r = e
            .renditions
            .iter()
            .find(|r| r.kind == TrackKind::Text)
            .unwrap();
        assert_eq!(r.codec, "wvtt");
        let bytes = track_bytes(&dir, r);
        let (k, entry) = sample_entry(&bytes);
        assert_eq!(&k, b"wvtt");
        assert_eq!(child(&entry[8..], b"vttC"), b"WEBVTT");
        let moov = child(&bytes, b"moov");
        let mdia = child(child(moov, b"trak"), b"mdia");
        assert_eq!(&child(mdia, b"hdlr")[8..12], b"text");
        assert_eq!(child(mdia, b"elng"), b"\0\0\0\0en\0");
        // The segments line up with the video's and cover the title without a gap.
        let all = samples(&bytes);
        let mut t = 0;
        for (start, d, _) in &all {
            assert_eq!(*start, t, "{mode:?}: contiguous samples");
            t += d;
        }
        assert!(
            (e.duration_ms..=e.duration_ms + 1).contains(&t),
            "{mode:?}: text runs {t} ms, the title {} ms",
            e.duration_ms
        );
        // Cues out (joined over sample splits) equal cues in, times exact; gaps are vtte.
        let (cues, empties) = wvtt_cues(&bytes);
        assert!(
            cues.iter()
                .filter(|c| c.2.starts_with("<i>A cue</i>"))
                .count()
                >= 2,
            "{mode:?}: the spanning cue is split at the segment boundary: {cues:?}"
        );
        assert_eq!(join(cues), expected_vtt(), "{mode:?}");
        assert_eq!(empties.first(), Some(&(0, 500)), "{mode:?}");
        assert!(empties.contains(&(2000, 3000)), "{mode:?}: {empties:?}");
        // iden and sttg ride along with their cue.
        let s = all
            .iter()
            .find(|(t, _, _)| *t == 3000)
            .expect("a sample at 3 s");
        assert_eq!(child(boxes(&s.2)[0].1, b"sttg"), b"line:10% align:start");
        let s = all.iter().find(|(t, _, _)| *t == 500).unwrap();
        assert_eq!(child(boxes(&s.2)[0].1, b"iden"), b"intro");
        // The MPD names the MP4 track, not the sidecar.
        let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
        assert!(
            mpd.contains(
                r#"contentType="text" mimeType="application/mp4" codecs="wvtt" lang="en""#
            ),
            "{mpd}"
        );
        if mode == PackagingMode::OnDemand {
            // sidx: one reference per fragment, sizes and durations summing to the file.
            let top = boxes(&bytes);
            let sidx = top.iter().find(|(k, _)| k == b"sidx").unwrap().1;
            let n = u16::from_be_bytes([sidx[30], sidx[31]]) as usize;
            let moofs = top.iter().filter(|(k, _)| k == b"moof").count();
            assert_eq!(n, moofs);
            let total: u64 = (0..n).map(|i| u64::from(u32_at(sidx, 32 + 12 * i))).sum();
            let frag_bytes: u64 = top
                .iter()
                .filter(|(k, _)| k == b"moof" || k == b"mdat")
                .map(|(_, b)| b.len() as u64 + 8)
                .sum();
            assert_eq!(total, frag_bytes);
            let dur: u64 = (0..n).map(|i| u64::from(u32_at(sidx, 36 + 12 * i))).sum();
            assert_eq!(dur, t);
        }
    }
}

/// `(pts ms, bytes)` of every packet of the first stream of `file` as ffprobe's MP4 demuxer
/// reads them, and the stream's duration (ms). Debian's ffmpeg 5.1 demuxes `wvtt` and `stpp`
/// as data streams (it has no decoder for them), so the cues are decoded here from the bytes.
fn ffprobe_packets(file: &Path) -> (Vec<(u64, Vec<u8>)>, u64) {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "0",
            "-show_packets",
            "-show_data",
        ])
        .args(["-show_streams", "-of", "json"])
        .arg(file)
        .output()
        .expect("ffprobe (apt install ffmpeg)");
    assert!(
        o.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stream = &v["streams"][0];
    assert_eq!(stream["time_base"], "1/1000", "{stream}");
    let duration = stream["duration_ts"].as_u64().unwrap();
    let packets = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut bytes = Vec::new();
            for line in p["data"].as_str().unwrap().lines().filter(|l| l.len() > 10) {
                let hex: String = line
                    .get(10..50)
                    .unwrap_or(&line[10..])
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                for k in (0..hex.len()).step_by(2) {
                    bytes.push(u8::from_str_radix(&hex[k..k + 2], 16).unwrap());
                }
            }
            assert_eq!(
                bytes.len(),
                p["size"].as_str().unwrap().parse::<usize>().unwrap()
            );
            (p["pts"].as_u64().unwrap(), bytes)
        })
        .collect();
    (packets, duration)
}

#[test]
fn wvtt_and_stpp_read_back_through_ffprobe() {
    let plain = |v: Vec<(u64, u64, String)>| -> Vec<(u64, u64, String)> {
        v.into_iter()
            .map(|(a, b, s)| {
                (
                    a,
                    b,
                    s.replace("<i>", "")
                        .replace("</i>", "")
                        .replace("&amp;", "&"),
                )
            })
            .collect()
    };
    for mode in [PackagingMode::OnDemand, PackagingMode::Segmented] {
        for (name, head, body) in [
            ("text-en.vtt", "en:subtitle", EN_VTT),
            ("text-en.ttml", "-:subtitle", EN_TTML),
        ] {
            let (out, e) = package_text(mode, &[(name, head, body)]);
            let e = e.unwrap();
            let dir = out.path().join("out/title-1");
            let r = e
                .renditions
                .iter()
                .find(|r| r.kind == TrackKind::Text)
                .unwrap();
            // Segmented: init + segments joined, as a player appends them.
            let file = out.path().join("track.mp4");
            std::fs::write(&file, track_bytes(&dir, r)).unwrap();
            let (packets, duration) = ffprobe_packets(&file);
            let ends: Vec<u64> = packets
                .iter()
                .skip(1)
                .map(|(t, _)| *t)
                .chain([duration])
                .collect();
            assert_eq!(packets[0].0, 0);
            let mut cues = Vec::new();
            for ((t, bytes), end) in packets.iter().zip(ends) {
                assert!(end > *t, "{mode:?} {name}: packet at {t} ends at {end}");
                if name.ends_with(".vtt") {
                    for (k, b) in boxes(bytes) {
                        if &k == b"vttc" {
                            let payl = child(b, b"payl");
                            cues.push((*t, end, String::from_utf8(payl.to_vec()).unwrap()));
                        } else {
                            assert_eq!(&k, b"vtte");
                        }
                    }
                } else {
                    let doc = std::str::from_utf8(bytes).unwrap();
                    cues.extend(
                        ttml_cues(doc)
                            .into_iter()
                            .map(|(a, b, s)| (a, b, s.replace("&amp;", "&"))),
                    );
                }
            }
            let want = if name.ends_with(".vtt") {
                expected_vtt()
            } else {
                plain(expected_vtt())
            };
            assert_eq!(join(cues), want, "{mode:?} {name}");
        }
    }
}

#[test]
fn ttml_input_becomes_stpp_for_dash_and_webvtt_for_hls() {
    for mode in [PackagingMode::OnDemand, PackagingMode::Segmented] {
        // Empty LANG: the language comes from xml:lang on <tt>.
        let (out, e) = package_text(mode, &[("text-en.ttml", ":caption", EN_TTML)]);
        let e = e.unwrap();
        let dir = out.path().join("out/title-1");
        let r = e
            .renditions
            .iter()
            .find(|r| r.kind == TrackKind::Text)
            .unwrap();
        assert_eq!(r.codec, "stpp.ttml.im1t");
        assert_eq!(r.language.as_deref(), Some("en"));
        let bytes = track_bytes(&dir, r);
        let (k, entry) = sample_entry(&bytes);
        assert_eq!(&k, b"stpp");
        // reserved(6) + data_reference_index(2), then namespace, schema location, aux mime.
        let strings: Vec<&[u8]> = entry[8..].splitn(4, |&b| b == 0).collect();
        assert_eq!(strings[0], b"http://www.w3.org/ns/ttml");
        assert_eq!(strings[1], b"");
        assert_eq!(strings[2], b"");
        let mime = child(strings[3], b"mime");
        assert_eq!(&mime[4..], b"application/ttml+xml;codecs=im1t\0");
        let moov = child(&bytes, b"moov");
        let mdia = child(child(moov, b"trak"), b"mdia");
        assert_eq!(&child(mdia, b"hdlr")[8..12], b"subt");
        // One sample per segment, each a TTML document; cues read back equal cues in.
        let all = samples(&bytes);
        let mut got = Vec::new();
        let mut t = 0;
        for (start, d, doc) in &all {
            assert_eq!(*start, t);
            t += d;
            let doc = std::str::from_utf8(doc).unwrap();
            assert!(
                doc.contains("<tt xmlns=\"http://www.w3.org/ns/ttml\""),
                "{doc}"
            );
            assert!(doc.contains("<region xml:id=\"bottom\""), "{doc}");
            for c in ttml_cues(doc) {
                // Every cue of a document is active in its sample.
                assert!(c.0 < start + d && c.1 > *start, "{c:?} outside {start}+{d}");
                got.push(c);
            }
        }
        assert!(all.len() >= 3, "{mode:?}: one sample per segment");
        let want: Vec<(u64, u64, String)> = expected_vtt()
            .into_iter()
            .map(|(a, b, s)| {
                (
                    a,
                    b,
                    s.replace("<i>", "")
                        .replace("</i>", "")
                        .replace("&amp;", "&"),
                )
            })
            .collect();
        // The spanning cue is in two documents with the same times.
        assert_eq!(got.iter().filter(|c| c.0 == 3000).count(), 2, "{got:?}");
        let mut got_xml: Vec<_> = got
            .into_iter()
            .map(|(a, b, s)| (a, b, s.replace("&amp;", "&")))
            .collect();
        got_xml.dedup();
        assert_eq!(join(got_xml), want, "{mode:?}");
        // HLS: the cues as segmented WebVTT (plain text, same times).
        let hls: Vec<(u64, u64, String)> = r
            .files
            .iter()
            .filter(|f| f.ends_with(".vtt") && !f.ends_with("/text-en.vtt"))
            .flat_map(|f| {
                let s = std::fs::read_to_string(dir.join(f)).unwrap();
                packager::text::parse_webvtt(Path::new(f), &s, u64::MAX)
                    .unwrap()
                    .cues
                    .into_iter()
                    .map(|c| (c.start_ms, c.end_ms, c.payload))
            })
            .collect();
        let want_vtt: Vec<(u64, u64, String)> = expected_vtt()
            .into_iter()
            .map(|(a, b, s)| (a, b, s.replace("<i>", "").replace("</i>", "")))
            .collect();
        assert_eq!(join(hls), want_vtt);
        let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
        assert!(mpd.contains(
            r#"contentType="text" mimeType="application/mp4" codecs="stpp.ttml.im1t" lang="en""#
        ));
        assert!(mpd.contains(r#"<Role schemeIdUri="urn:mpeg:dash:role:2011" value="caption"/>"#));
        assert!(mpd
            .contains(r#"<Accessibility schemeIdUri="urn:mpeg:dash:role:2011" value="caption"/>"#));
    }
}

#[test]
fn bad_ttml_is_refused_naming_file_line_and_cue_with_nothing_written() {
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            EN_TTML.replace("</span> across", "</spam> across"),
            "en:subtitle",
            vec!["line 13", "not well-formed XML", "cue 2"],
        ),
        (
            EN_TTML.replace("begin=\"3s\"", "begin=\"1.9s\""),
            "en:subtitle",
            vec!["line 13", "cue 2", "overlapping", "cue 1 (\"intro\")"],
        ),
        (
            EN_TTML.replace("end=\"5250ms\"", "end=\"3s\""),
            "en:subtitle",
            vec!["line 13", "cue 2", "the end must be after the begin"],
        ),
        (
            EN_TTML.replace("dur=\"2.96s\"", "dur=\"3.5s\""),
            "en:subtitle",
            vec![
                "line 17",
                "cue 3",
                "past the end of the title at 00:00:12.000",
            ],
        ),
        (
            EN_TTML.replace("end=\"00:00:02:00\"", "end=\"00:00:02:0x\""),
            "en:subtitle",
            vec![
                "line 12",
                "cue 1 (\"intro\")",
                "end=\"00:00:02:0x\" is not a TTML time",
            ],
        ),
        (
            EN_TTML.replace(" xml:lang=\"en\"", ""),
            "-:subtitle",
            vec!["no language", "xml:lang"],
        ),
        (
            "<html><body/></html>".to_string(),
            "en:subtitle",
            vec!["line 1", "not <tt>"],
        ),
    ];
    for (body, head, want) in cases {
        let (out, r) = package_text(PackagingMode::Segmented, &[("bad.ttml", head, &body)]);
        let err = r.unwrap_err();
        assert!(matches!(err, Error::Text { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("bad.ttml"), "{msg}");
        for w in want {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
        assert!(
            !out.path().join("out").exists(),
            "output written for {body}"
        );
    }
}
