//! Catalogue features of the packager (issue 15): several audio tracks with languages, roles and
//! channel layouts; HLS I-frame playlists. Packages the committed fixtures and checks the
//! manifests, the catalog entry and the packaged samples against the inputs.

use std::path::{Path, PathBuf};

use packager::bmff::{parse_file, Track};
use packager::{package, AudioInput, AudioRole, Error, Options};
use protocol::catalog::{CatalogEntry, PackagingMode, TrackKind};

fn media(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/media")
        .join(rel)
}

fn opts(out: &Path, mode: PackagingMode, inputs: Vec<PathBuf>, audio: Vec<AudioInput>) -> Options {
    Options {
        title: "title-1".into(),
        out_dir: out.to_path_buf(),
        mode,
        segment_duration_ms: 4000,
        inputs,
        audio,
        text: Vec::new(),
        thumbnails: None,
        trick_play: Vec::new(),
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

/// The attribute `name` of an HLS tag line (`NAME="x"` or `NAME=x`).
fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let mut rest = line.split_once(':')?.1;
    while !rest.is_empty() {
        let (k, v) = rest.split_once('=')?;
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(','))
        } else {
            match v.find(',') {
                Some(i) => (&v[..i], &v[i + 1..]),
                None => (v, ""),
            }
        };
        if format!("{k}=") == key {
            return Some(val);
        }
        rest = next;
    }
    None
}

/// Packages video 240p + 360p, the English stereo track, the French 5.1 track (language read
/// from its `mdhd`) and an English audio-description track.
fn package_languages(mode: PackagingMode) -> (tempfile::TempDir, CatalogEntry, Vec<PathBuf>) {
    let out = tempfile::tempdir().unwrap();
    let ad = out.path().join("audio-en-ad.mp4");
    std::fs::copy(media("ladder-h264/audio-aac.mp4"), &ad).unwrap();
    let inputs = vec![
        media("ladder-h264/video-240p.mp4"),
        media("ladder-h264/video-360p.mp4"),
        media("ladder-h264/audio-aac.mp4"),
    ];
    let audio = vec![
        AudioInput::parse(&format!(
            "-:main:{}",
            media("languages/audio-fr-51.mp4").display()
        ))
        .unwrap(),
        AudioInput::parse(&format!("en:description:{}", ad.display())).unwrap(),
    ];
    let title_out = out.path().join("out");
    let e = package(&opts(&title_out, mode, inputs.clone(), audio), None).unwrap();
    let mut sources = inputs;
    sources.push(media("languages/audio-fr-51.mp4"));
    sources.push(ad);
    (out, e, sources)
}

#[test]
fn audio_input_spec_is_parsed_and_checked() {
    let a = AudioInput::parse("pt-BR:commentary:dir/a:b.mp4").unwrap();
    assert_eq!(a.language.as_deref(), Some("pt-BR"));
    assert_eq!(a.role, AudioRole::Commentary);
    assert_eq!(a.path, PathBuf::from("dir/a:b.mp4"));
    assert_eq!(AudioInput::parse("-:main:x.mp4").unwrap().language, None);
    for (bad, want) in [
        ("en:dub:x.mp4", "unknown role \"dub\""),
        ("e:main:x.mp4", "not a BCP 47 tag"),
        ("en:main", "missing a part"),
        ("en:main:", "missing a part"),
    ] {
        let err = AudioInput::parse(bad).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("--audio"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn several_audio_languages_and_roles() {
    let (out, e, sources) = package_languages(PackagingMode::OnDemand);
    let dir = out.path().join("out/title-1");
    // The catalog lists every audio rendition with language, role and channels.
    let audio: Vec<_> = e
        .renditions
        .iter()
        .filter(|r| r.kind == TrackKind::Audio)
        .map(|r| {
            (
                r.id.as_str(),
                r.language.as_deref().unwrap(),
                r.role.as_deref().unwrap(),
                r.channels.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        audio,
        vec![
            ("audio-aac", "und", "main", 2),
            ("audio-fr-51", "fra", "main", 6),
            ("audio-en-ad", "en", "description", 2),
        ]
    );
    assert!(e
        .renditions
        .iter()
        .filter(|r| r.kind == TrackKind::Video)
        .all(|r| r.role.is_none()));
    // The catalog round-trips through JSON as written.
    let text = std::fs::read_to_string(dir.join("catalog.json")).unwrap();
    assert_eq!(CatalogEntry::from_json(&text).unwrap(), e);

    // Audio samples byte-exact per track.
    for (r, src) in e.renditions.iter().zip(&sources) {
        let src = parse_file(src)
            .unwrap()
            .into_iter()
            .find(|t| t.kind == r.kind)
            .unwrap();
        let packaged = parse_file(&dir.join(&r.files[0])).unwrap().remove(0);
        assert_eq!(sample_bytes(&packaged), sample_bytes(&src), "{}", r.id);
        assert_eq!(packaged.language, src.language, "{}: mdhd language", r.id);
    }

    // HLS: one audio group (one codec), exactly one DEFAULT=YES, the description track marked.
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    let media_lines: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=AUDIO"))
        .collect();
    assert_eq!(media_lines.len(), 3, "{master}");
    assert!(media_lines
        .iter()
        .all(|l| attr(l, "GROUP-ID") == Some("audio-mp4a")));
    let defaults: Vec<_> = media_lines
        .iter()
        .filter(|l| attr(l, "DEFAULT") == Some("YES"))
        .map(|l| attr(l, "NAME").unwrap())
        .collect();
    assert_eq!(defaults, vec!["audio-aac"]);
    let fr = media_lines
        .iter()
        .find(|l| attr(l, "NAME") == Some("audio-fr-51"))
        .unwrap();
    assert_eq!(attr(fr, "LANGUAGE"), Some("fra"));
    assert_eq!(attr(fr, "CHANNELS"), Some("6"));
    assert_eq!(attr(fr, "CHARACTERISTICS"), None);
    let ad = media_lines
        .iter()
        .find(|l| attr(l, "NAME") == Some("audio-en-ad"))
        .unwrap();
    assert_eq!(attr(ad, "LANGUAGE"), Some("en"));
    assert_eq!(
        attr(ad, "CHARACTERISTICS"),
        Some("public.accessibility.describes-video")
    );
    for l in &media_lines {
        let uri = attr(l, "URI").unwrap();
        assert!(dir.join(uri).is_file(), "{uri}");
    }
    // Every variant names the group.
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(variants.len(), 2);
    assert!(variants
        .iter()
        .all(|l| attr(l, "AUDIO") == Some("audio-mp4a")));

    // DASH: one AdaptationSet per language/role with lang, Role, Accessibility for the
    // description, and the channel configuration per Representation.
    let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    let sets: Vec<&str> = mpd
        .split("<AdaptationSet ")
        .skip(1)
        .filter(|s| s.contains(r#"contentType="audio""#))
        .collect();
    assert_eq!(sets.len(), 3, "{mpd}");
    let find = |lang: &str, role: &str| {
        sets.iter()
            .find(|s| {
                s.contains(&format!(r#"lang="{lang}""#))
                    && s.contains(&format!(
                        r#"<Role schemeIdUri="urn:mpeg:dash:role:2011" value="{role}"/>"#
                    ))
            })
            .unwrap_or_else(|| panic!("no {lang}/{role} set in {mpd}"))
    };
    let und = find("und", "main");
    let fra = find("fra", "main");
    let en_ad = find("en", "description");
    assert!(fra.contains(r#"audio_channel_configuration:2011" value="6""#));
    assert!(und.contains(r#"audio_channel_configuration:2011" value="2""#));
    assert!(en_ad.contains(
        r#"<Accessibility schemeIdUri="urn:tva:metadata:cs:AudioPurposeCS:2007" value="1"/>"#
    ));
    assert!(!und.contains("<Accessibility") && !fra.contains("<Accessibility"));
    assert!(fra.contains(r#"<Representation id="audio-fr-51""#));
}

#[test]
fn several_audio_languages_segmented() {
    let (out, e, _) = package_languages(PackagingMode::Segmented);
    let dir = out.path().join("out/title-1");
    let fr = e.renditions.iter().find(|r| r.id == "audio-fr-51").unwrap();
    assert!(fr.files.iter().any(|f| f == "audio-fr-51/init.mp4"));
    for f in &fr.files {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    assert!(mpd.contains(r#"media="audio-fr-51/$Number%05d$.m4s""#));
}

#[test]
fn audio_input_without_audio_is_refused_with_nothing_written() {
    let out = tempfile::tempdir().unwrap();
    let audio = vec![AudioInput {
        language: Some("en".into()),
        role: AudioRole::Main,
        path: media("ladder-h264/video-240p.mp4"),
    }];
    let err = package(
        &opts(
            out.path(),
            PackagingMode::OnDemand,
            vec![media("ladder-h264/video-360p.mp4")],
            audio,
        ),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Options(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("video-240p.mp4") && msg.contains("no audio track"),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Checks every video rendition's I-frame playlist: one entry per segment, each byte range
/// covering a `moof`, the `mdat` header and exactly the segment's first sample, a sync sample
/// whose bytes are the source's; the master lists each with `EXT-X-I-FRAME-STREAM-INF`.
fn check_iframe_playlists(mode: PackagingMode) {
    let out = tempfile::tempdir().unwrap();
    let inputs = vec![
        media("ladder-h264/video-240p.mp4"),
        media("ladder-h264/video-360p.mp4"),
        media("ladder-h264/audio-aac.mp4"),
    ];
    let e = package(&opts(out.path(), mode, inputs.clone(), Vec::new()), None).unwrap();
    let dir = out.path().join("title-1");
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    let iframe_lines: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-I-FRAME-STREAM-INF:"))
        .collect();
    assert_eq!(iframe_lines.len(), 2, "{master}");
    for (r, input) in e.renditions.iter().zip(&inputs) {
        if r.kind != TrackKind::Video {
            assert!(!r.files.iter().any(|f| f.ends_with("iframes.m3u8")));
            continue;
        }
        let rel = format!("{}/iframes.m3u8", r.id);
        assert!(r.files.contains(&rel), "{:?}", r.files);
        let line = iframe_lines
            .iter()
            .find(|l| attr(l, "URI") == Some(rel.as_str()))
            .unwrap();
        assert_eq!(attr(line, "CODECS"), Some(r.codec.as_str()));
        let peak: u64 = attr(line, "BANDWIDTH").unwrap().parse().unwrap();
        assert!(peak > 0 && peak < r.bandwidth, "{peak} vs {}", r.bandwidth);
        let src = parse_file(input).unwrap().remove(0);
        let src_bytes = sample_bytes(&src);
        let keyframes: Vec<usize> = src
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sync)
            .map(|(i, _)| i)
            .collect();
        let pl = std::fs::read_to_string(dir.join(&rel)).unwrap();
        assert!(pl.contains("#EXT-X-I-FRAMES-ONLY\n") && pl.ends_with("#EXT-X-ENDLIST\n"));
        assert!(pl.contains("#EXT-X-MAP:URI="));
        let media_pl = std::fs::read_to_string(dir.join(&r.id).join("index.m3u8")).unwrap();
        let extinf = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("#EXTINF:"))
                .map(String::from)
                .collect()
        };
        // Same entries as the media playlist: one I-frame per segment, same durations.
        assert_eq!(extinf(&pl), extinf(&media_pl));
        let mut range = None;
        let mut seen = Vec::new();
        for l in pl.lines() {
            if let Some(br) = l.strip_prefix("#EXT-X-BYTERANGE:") {
                let (len, off) = br.split_once('@').unwrap();
                range = Some((len.parse::<usize>().unwrap(), off.parse::<usize>().unwrap()));
            } else if !l.starts_with('#') {
                let (len, off) = range.take().unwrap();
                let b = std::fs::read(dir.join(&r.id).join(l)).unwrap();
                let b = &b[off..off + len];
                assert_eq!(&b[4..8], b"moof");
                let moof = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
                assert_eq!(&b[moof + 4..moof + 8], b"mdat");
                seen.push(b[moof + 8..].to_vec());
            }
        }
        // The I-frames are keyframes of the source, in order, one per segment start.
        assert_eq!(seen.len(), extinf(&pl).len());
        let mut k = keyframes.iter();
        for frame in &seen {
            assert!(
                k.by_ref().any(|&i| &src_bytes[i] == frame),
                "{}: an I-frame range is not a source keyframe",
                r.id
            );
        }
        assert_eq!(&seen[0], &src_bytes[keyframes[0]]);
    }
}

#[test]
fn iframe_playlists_on_demand() {
    check_iframe_playlists(PackagingMode::OnDemand);
}

#[test]
fn iframe_playlists_segmented() {
    check_iframe_playlists(PackagingMode::Segmented);
}

/// Item 8: a ladder whose keyframes coincide only every few GOPs (1.92 s GOPs beside the
/// ffmpeg-made 1.6 s GOPs of `bad/misaligned-keyframes.mp4`: shared every 9.6 s) is packaged
/// with segments at the shared keyframes, and a warning names the longest segment.
#[test]
fn ladder_sharing_few_keyframes_is_cut_there_with_a_warning() {
    let out = tempfile::tempdir().unwrap();
    let inputs = vec![
        media("ladder-h264/video-240p.mp4"),
        media("bad/misaligned-keyframes.mp4"),
        media("ladder-h264/audio-aac.mp4"),
    ];
    let (e, warnings) = packager::package::package_with_warnings(
        &opts(
            out.path(),
            PackagingMode::OnDemand,
            inputs.clone(),
            Vec::new(),
        ),
        None,
    )
    .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    for want in [
        "segment 1 (0.000 s to 9.600 s of video-240p) lasts 9.600 s",
        "share a keyframe only every few GOPs",
        "more than 50% over the requested 4.000 s",
    ] {
        assert!(w.contains(want), "{want:?} not in {w:?}");
    }
    let dir = out.path().join("title-1");
    // Both video renditions have the same boundaries, at 0 and 9.6 s, each on a keyframe.
    for r in e.renditions.iter().filter(|r| r.kind == TrackKind::Video) {
        let pl = std::fs::read_to_string(dir.join(&r.id).join("index.m3u8")).unwrap();
        let extinf: Vec<&str> = pl
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .collect();
        assert_eq!(extinf, vec!["9.60000,", "2.40000,"], "{}", r.id);
    }
    // The same ladder at a 10 s target: no warning (9.6 s is within 50%).
    let out2 = tempfile::tempdir().unwrap();
    let mut o = opts(out2.path(), PackagingMode::OnDemand, inputs, Vec::new());
    o.segment_duration_ms = 10_000;
    let (_, warnings) = packager::package::package_with_warnings(&o, None).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// The aligned fixture ladder at its natural target warns about nothing.
#[test]
fn aligned_ladder_has_no_warning() {
    let out = tempfile::tempdir().unwrap();
    let (_, warnings) = packager::package::package_with_warnings(
        &opts(
            out.path(),
            PackagingMode::OnDemand,
            vec![
                media("ladder-h264/video-240p.mp4"),
                media("ladder-h264/video-360p.mp4"),
            ],
            Vec::new(),
        ),
        None,
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

const EN_VTT: &str = "WEBVTT - English\n\nSTYLE\n::cue { color: yellow }\n\nNOTE the second cue spans the 3.84 s boundary\n\nintro\n00:00.500 --> 00:02.000\nHello.\n\n00:03.000 --> 00:05.250 line:10%\n<i>A cue</i> across\ntwo segments.\n\n00:09.000 --> 00:11.960\nThe end.\n";
const FR_FORCED_VTT: &str = "WEBVTT\n\n00:01.000 --> 00:01.900\n[Panneau : SORTIE]\n";

/// Cues of every segment of a packaged text rendition, identical repeats (a cue spanning a
/// boundary is written in each segment it overlaps) merged, as players do.
fn cues_out(dir: &Path, r: &protocol::catalog::Rendition) -> Vec<packager::text::Cue> {
    let mut cues: Vec<packager::text::Cue> = Vec::new();
    let segs: Vec<&String> = r
        .files
        .iter()
        .filter(|f| f.ends_with(".vtt") && !f.ends_with(&format!("/{}.vtt", r.id)))
        .collect();
    for f in segs {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(
            text.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"),
            "{f}: {text}"
        );
        let v = packager::text::parse_webvtt(Path::new(f), &text, u64::MAX).unwrap();
        for c in v.cues {
            if !cues.contains(&c) {
                cues.push(c);
            }
        }
    }
    cues
}

fn package_with_text(
    mode: PackagingMode,
    texts: &[(&str, &str, &str)],
) -> (tempfile::TempDir, Result<CatalogEntry, Error>) {
    let out = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (name, spec_head, body) in texts {
        let p = out.path().join(name);
        std::fs::write(&p, body).unwrap();
        inputs.push(packager::TextInput::parse(&format!("{spec_head}:{}", p.display())).unwrap());
    }
    let mut o = opts(
        &out.path().join("out"),
        mode,
        vec![
            media("ladder-h264/video-240p.mp4"),
            media("ladder-h264/video-360p.mp4"),
            media("ladder-h264/audio-aac.mp4"),
        ],
        Vec::new(),
    );
    o.text = inputs;
    let r = package(&o, None);
    (out, r)
}

#[test]
fn webvtt_subtitles_round_trip_and_manifests() {
    for mode in [PackagingMode::OnDemand, PackagingMode::Segmented] {
        let (out, e) = package_with_text(
            mode,
            &[
                ("text-en.vtt", "en:subtitle", EN_VTT),
                ("text-fr-forced.vtt", "fr:forced", FR_FORCED_VTT),
            ],
        );
        let e = e.unwrap();
        let dir = out.path().join("out/title-1");
        let texts: Vec<_> = e
            .renditions
            .iter()
            .filter(|r| r.kind == TrackKind::Text)
            .collect();
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0].id, "text-en");
        assert_eq!(texts[0].language.as_deref(), Some("en"));
        assert_eq!(texts[0].role.as_deref(), Some("subtitle"));
        assert_eq!(texts[0].codec, "wvtt");
        assert_eq!(texts[1].role.as_deref(), Some("forced"));
        assert_eq!(texts[1].tier, None);
        // Cues out == cues in, times exact.
        for (r, body) in texts.iter().zip([EN_VTT, FR_FORCED_VTT]) {
            let input = packager::text::parse_webvtt(Path::new("in.vtt"), body, 12_000).unwrap();
            assert_eq!(cues_out(&dir, r), input.cues, "{}", r.id);
            let whole =
                std::fs::read_to_string(dir.join(&r.id).join(format!("{}.vtt", r.id))).unwrap();
            let whole = packager::text::parse_webvtt(Path::new("w.vtt"), &whole, 12_000).unwrap();
            assert_eq!(whole, input);
        }
        // The spanning cue is in both segments around 3.84 s, with its original times.
        let s1 = std::fs::read_to_string(dir.join("text-en/00001.vtt")).unwrap();
        let s2 = std::fs::read_to_string(dir.join("text-en/00002.vtt")).unwrap();
        for s in [&s1, &s2] {
            assert!(
                s.contains(
                    "00:00:03.000 --> 00:00:05.250 line:10%\n<i>A cue</i> across\ntwo segments.\n"
                ),
                "{s}"
            );
            assert!(s.contains("::cue { color: yellow }"));
        }
        assert!(s1.contains("intro\n00:00:00.500 --> 00:00:02.000\nHello.\n"));
        assert!(!s2.contains("Hello."));
        // Text segments line up with video: same EXTINF list.
        let video_pl = std::fs::read_to_string(dir.join("video-240p/index.m3u8")).unwrap();
        let text_pl = std::fs::read_to_string(dir.join("text-en/index.m3u8")).unwrap();
        let extinf = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("#EXTINF:") || l.starts_with("#EXT-X-TARGETDURATION"))
                .map(String::from)
                .collect()
        };
        assert_eq!(extinf(&text_pl), extinf(&video_pl));
        // HLS master: the SUBTITLES group, FORCED on the forced track, every variant names it.
        let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
        let subs: Vec<&str> = master
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES"))
            .collect();
        assert_eq!(subs.len(), 2, "{master}");
        assert_eq!(attr(subs[0], "LANGUAGE"), Some("en"));
        assert_eq!(attr(subs[0], "FORCED"), None);
        assert_eq!(attr(subs[1], "FORCED"), Some("YES"));
        assert_eq!(attr(subs[1], "AUTOSELECT"), Some("YES"));
        assert_eq!(attr(subs[1], "URI"), Some("text-fr-forced/index.m3u8"));
        assert!(master
            .lines()
            .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
            .all(|l| attr(l, "SUBTITLES") == Some("subs")));
        // DASH: a text-in-MP4 AdaptationSet per track with lang and Role; the WebVTT sidecar
        // stays in the title directory but the MPD names the MP4 track only.
        let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
        assert!(mpd
            .contains(r#"contentType="text" mimeType="application/mp4" codecs="wvtt" lang="fr""#));
        assert!(mpd
            .contains(r#"<Role schemeIdUri="urn:mpeg:dash:role:2011" value="forced-subtitle"/>"#));
        assert!(!mpd.contains("text-en/text-en.vtt"));
        match mode {
            PackagingMode::OnDemand => {
                assert!(
                    mpd.contains("<BaseURL>text-en/text-en.mp4</BaseURL>"),
                    "{mpd}"
                )
            }
            PackagingMode::Segmented => assert!(
                mpd.contains(
                    r#"initialization="text-en/init.mp4" media="text-en/$Number%05d$.m4s""#
                ),
                "{mpd}"
            ),
        }
        // Every text file is in the catalog under its rendition.
        for r in &texts {
            assert!(r.files.iter().all(|f| f.starts_with(&format!("{}/", r.id))));
            assert!(r.files.contains(&format!("{}/index.m3u8", r.id)));
        }
    }
}

#[test]
fn captions_carry_accessibility() {
    let (out, e) = package_with_text(
        PackagingMode::OnDemand,
        &[("cc-en.vtt", "en:caption", FR_FORCED_VTT)],
    );
    e.unwrap();
    let dir = out.path().join("out/title-1");
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    assert!(master.contains(r#"CHARACTERISTICS="public.accessibility.transcribes-spoken-dialog,public.accessibility.describes-music-and-sound""#), "{master}");
    let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    assert!(
        mpd.contains(r#"<Accessibility schemeIdUri="urn:mpeg:dash:role:2011" value="caption"/>"#)
    );
}

#[test]
fn broken_webvtt_is_refused_naming_file_line_and_cue_with_nothing_written() {
    for (body, want) in [
        (
            "WEBVTT\n\n00:01.000 --> 00:03.000\nA\n\nsecond\n00:02.000 --> 00:04.000\nB\n",
            vec![
                "line 7",
                "cue 2 (\"second\")",
                "overlapping",
                "00:00:03.000",
            ],
        ),
        (
            "WEBVTT\n\n00:01.000 --> 00:03.000\nA\n\n00:04.000 --> 00:0x.000\nB\n",
            vec!["line 6", "cue 2", "end time \"00:0x.000\""],
        ),
        (
            "WEBVTT\n\n00:01.000 --> 00:13.000\nA\n",
            vec![
                "line 3",
                "cue 1",
                "past the end of the title at 00:00:12.000",
            ],
        ),
        (
            "1\n00:01.000 --> 00:02.000\nA\n",
            vec!["line 1", "header", "WEBVTT"],
        ),
        (
            "WEBVTT\n\n00:02.000 --> 00:01.000\nA\n",
            vec!["line 3", "cue 1", "the end must be after the start"],
        ),
        (
            "WEBVTT\n\n00:01.000 --> 00:02.000\nA\n00:03.000 --> 00:04.000\nB\n",
            vec!["line 5", "cue 1", "\"-->\" inside a cue payload"],
        ),
    ] {
        let (out, r) =
            package_with_text(PackagingMode::OnDemand, &[("bad.vtt", "en:subtitle", body)]);
        let err = r.unwrap_err();
        assert!(matches!(err, Error::Text { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("bad.vtt"), "{msg}");
        for w in want {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
        assert!(
            !out.path().join("out").exists(),
            "output written for {body:?}"
        );
    }
    // A bad --text spec.
    for (spec, want) in [
        ("en:sdh:a.vtt", "unknown role \"sdh\""),
        ("en:subtitle:a.srt", "must be WebVTT (.vtt) or IMSC1/TTML"),
        (":subtitle:a.vtt", "a WebVTT file carries no language"),
        ("x:subtitle:a.vtt", "not a BCP 47 tag"),
    ] {
        let msg = packager::TextInput::parse(spec).unwrap_err().to_string();
        assert!(
            msg.contains(want) && msg.contains("--text"),
            "{spec}: {msg}"
        );
    }
}

/// A copy of the single-track, faststart `src` with an `elng` box (BCP 47 `tag`) appended to its
/// `mdia`: parent sizes grow and every `stco` chunk offset moves by the box's size.
fn with_elng(src: &Path, dst: &Path, tag: &str) {
    let mut b = std::fs::read(src).unwrap();
    let mut elng = Vec::new();
    let len = 8 + 4 + tag.len() + 1;
    elng.extend_from_slice(&(len as u32).to_be_bytes());
    elng.extend_from_slice(b"elng\0\0\0\0");
    elng.extend_from_slice(tag.as_bytes());
    elng.push(0);
    let find = |b: &[u8], name: &[u8; 4]| b.windows(4).position(|w| w == name).unwrap() - 4;
    let size_at = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let (moov, trak, mdia) = (find(&b, b"moov"), find(&b, b"trak"), find(&b, b"mdia"));
    assert!(moov < find(&b, b"mdat"), "fixture is not faststart");
    let mdia_end = mdia + size_at(&b, mdia) as usize;
    for at in [moov, trak, mdia] {
        let s = size_at(&b, at) + len as u32;
        b[at..at + 4].copy_from_slice(&s.to_be_bytes());
    }
    let stco = find(&b, b"stco");
    let n = size_at(&b, stco + 12) as usize;
    for k in 0..n {
        let at = stco + 16 + 4 * k;
        let o = size_at(&b, at) + len as u32;
        b[at..at + 4].copy_from_slice(&o.to_be_bytes());
    }
    b.splice(mdia_end..mdia_end, elng);
    std::fs::write(dst, b).unwrap();
}

/// With LANG `-`, the language comes from the input: its `elng` (BCP 47) when present, which
/// wins over the packed `mdhd` code.
#[test]
fn audio_language_from_elng() {
    let out = tempfile::tempdir().unwrap();
    let pt = out.path().join("audio-pt.mp4");
    with_elng(&media("ladder-h264/audio-aac.mp4"), &pt, "pt-BR");
    let t = parse_file(&pt).unwrap().remove(0);
    assert_eq!(t.language, "pt-BR");
    let src = parse_file(&media("ladder-h264/audio-aac.mp4"))
        .unwrap()
        .remove(0);
    assert_eq!(
        sample_bytes(&t),
        sample_bytes(&src),
        "samples moved with the offsets"
    );
    let e = package(
        &opts(
            &out.path().join("out"),
            PackagingMode::OnDemand,
            vec![media("ladder-h264/video-240p.mp4")],
            vec![AudioInput::parse(&format!("-:commentary:{}", pt.display())).unwrap()],
        ),
        None,
    )
    .unwrap();
    let a = e.renditions.iter().find(|r| r.id == "audio-pt").unwrap();
    assert_eq!(a.language.as_deref(), Some("pt-BR"));
    assert_eq!(a.role.as_deref(), Some("commentary"));
    // A malformed elng is refused naming the box.
    let bad = out.path().join("audio-bad.mp4");
    with_elng(&media("ladder-h264/audio-aac.mp4"), &bad, "not a tag!");
    let err = parse_file(&bad).unwrap_err().to_string();
    assert!(
        err.contains("elng") && err.contains("not a BCP 47 tag"),
        "{err}"
    );
}
