//! HLS playlists (RFC 8216). Media playlists use fMP4 (`EXT-X-MAP`) and, in on-demand mode,
//! `EXT-X-BYTERANGE` into the rendition's single file, so they need `EXT-X-VERSION:6` (the lowest
//! version allowing `EXT-X-MAP` outside I-frame playlists, §7). The master playlist uses no
//! version-gated feature, so it carries no `EXT-X-VERSION` (version 1). `EXT-X-TARGETDURATION`
//! is the largest EXTINF rounded to the nearest integer (§4.3.3.1), shared by every playlist.
//! `BANDWIDTH`/`AVERAGE-BANDWIDTH` of a variant add the worst audio rendition of its group.
//! Each video rendition also gets an I-frame playlist (`iframes.m3u8`, trick play) whose byte
//! ranges cover each segment's `moof`, `mdat` header and leading sync sample in the same files.
//! A keyframe-only trick play rendition is listed only that way (`EXT-X-I-FRAME-STREAM-INF`),
//! never as an `EXT-X-STREAM-INF` variant, and has no media playlist; its segments hold one
//! CMAF chunk per frame, so its I-frame playlist names every frame.

use std::fmt::Write as _;

use protocol::catalog::TrackKind;

use super::bandwidth::{hls_average, hls_peak};
use super::{frame_rate_decimal, IFrameRef, RenditionView, TextView};
use crate::package::AudioRole;
use crate::text::TextRole;
use crate::thumbs::ImageView;

/// File name of a rendition's media playlist, inside the rendition directory.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
/// File name of a video rendition's I-frame playlist, inside the rendition directory.
pub const IFRAME_PLAYLIST: &str = "iframes.m3u8";

impl RenditionView {
    /// Path of the HLS media playlist relative to the title directory.
    pub fn playlist_path(&self) -> String {
        format!("{}/{}", self.id, MEDIA_PLAYLIST)
    }

    /// Path of the HLS I-frame playlist relative to the title directory (video).
    pub fn iframe_playlist_path(&self) -> String {
        format!("{}/{}", self.id, IFRAME_PLAYLIST)
    }

    /// (I-frame bytes, seconds until the next I-frame) per I-frame playlist entry, when every
    /// segment of this rendition starts with a sync sample of known extent.
    fn iframe_stats(&self) -> Option<Vec<(u64, f64)>> {
        let ts = f64::from(self.timescale);
        let mut out = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let l = s.iframe_len?;
            if s.iframes.is_empty() {
                out.push((l, s.duration as f64 / ts));
            } else {
                out.extend(s.iframes.iter().map(|f| (f.len, f.duration as f64 / ts)));
            }
        }
        Some(out)
    }
}

/// The I-frame playlist of a video rendition (RFC 8216 §4.3.3.6, `EXT-X-I-FRAMES-ONLY`): one
/// entry per segment, the byte range of its `moof`, `mdat` header and first (sync) sample in
/// the same CMAF file or segment the media playlist uses, its duration the time to the next
/// entry; for a trick play rendition, whose segments hold one CMAF chunk per frame, one entry
/// per frame (per chunk). `None` for audio.
pub fn iframe_playlist(r: &RenditionView, target: u64) -> Option<String> {
    if r.kind != TrackKind::Video || r.segments.is_empty() {
        return None;
    }
    r.iframe_stats()?;
    let mut s = String::new();
    // EXT-X-MAP in an I-frame playlist needs version 5, EXT-X-BYTERANGE 4; 6 like the others.
    s.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-I-FRAMES-ONLY\n");
    if let Some(p) = &r.protection {
        let _ = writeln!(s, "#EXT-X-KEY:{}", key_attributes(p));
    }
    match r.init_range {
        Some((o, l)) => {
            let _ = writeln!(s, r#"#EXT-X-MAP:URI="{}",BYTERANGE="{l}@{o}""#, r.init_file);
        }
        None => {
            let _ = writeln!(s, r#"#EXT-X-MAP:URI="{}""#, r.init_file);
        }
    }
    for seg in &r.segments {
        let len = seg.iframe_len?;
        let off = seg.range.map_or(0, |(o, _)| o);
        let single = [IFrameRef {
            offset: off,
            len,
            duration: seg.duration,
        }];
        let frames = if seg.iframes.is_empty() {
            &single[..]
        } else {
            &seg.iframes[..]
        };
        for f in frames {
            let _ = writeln!(
                s,
                "#EXTINF:{:.5},",
                f.duration as f64 / f64::from(r.timescale)
            );
            let _ = writeln!(s, "#EXT-X-BYTERANGE:{}@{}", f.len, f.offset);
            let _ = writeln!(s, "{}", seg.file);
        }
    }
    s.push_str("#EXT-X-ENDLIST\n");
    Some(s)
}

/// The target duration every playlist shares: max over all segments of round(EXTINF).
pub fn target_duration(renditions: &[RenditionView]) -> u64 {
    renditions
        .iter()
        .flat_map(|r| r.seg_stats())
        .map(|(_, d)| d.round() as u64)
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Peak (`BANDWIDTH`) and average bit rates of one rendition alone.
pub fn rates(r: &RenditionView, target: u64) -> (u64, u64) {
    let stats = r.seg_stats();
    (hls_peak(&stats, target), hls_average(&stats))
}

/// One media playlist. URIs are relative to the playlist (same directory).
pub fn media_playlist(r: &RenditionView, target: u64) -> String {
    let mut s = String::new();
    s.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(p) = &r.protection {
        let _ = writeln!(s, "#EXT-X-KEY:{}", key_attributes(p));
    }
    match r.init_range {
        Some((o, l)) => {
            let _ = writeln!(s, r#"#EXT-X-MAP:URI="{}",BYTERANGE="{l}@{o}""#, r.init_file);
        }
        None => {
            let _ = writeln!(s, r#"#EXT-X-MAP:URI="{}""#, r.init_file);
        }
    }
    for seg in &r.segments {
        let _ = writeln!(
            s,
            "#EXTINF:{:.5},",
            seg.duration as f64 / f64::from(r.timescale)
        );
        if let Some((o, l)) = seg.range {
            let _ = writeln!(s, "#EXT-X-BYTERANGE:{l}@{o}");
        }
        let _ = writeln!(s, "{}", seg.file);
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

/// The `KEYFORMAT` of the HLS key tags: the W3C Clear Key key system, which hls.js maps to
/// `org.w3.clearkey` (its `KeySystemFormats.CLEARKEY`).
pub const CLEARKEY_KEYFORMAT: &str = "org.w3.clearkey";

/// The attributes of `EXT-X-KEY` / `EXT-X-SESSION-KEY` for a protected rendition:
/// `SAMPLE-AES-CTR` (cenc) or `SAMPLE-AES` (cbcs), `KEYFORMAT="org.w3.clearkey"`, and the
/// 16-byte key id as a base64 data URI (hls.js takes the first 16 bytes of a Clear Key URI's
/// data as the key id, `LevelKey.getDecryptData`). No key material: the key comes from the
/// licence server. (Shaka Player 5.2's HLS parser knows no Clear Key licence-server KEYFORMAT at
/// all, only `identity`, whose URI yields the key itself; it plays these titles from the MPD.)
pub fn key_attributes(p: &crate::manifest::Protection) -> String {
    use base64::Engine;
    let method = if p.scheme == "cbcs" {
        "SAMPLE-AES"
    } else {
        "SAMPLE-AES-CTR"
    };
    format!(
        r#"METHOD={method},KEYFORMAT="{CLEARKEY_KEYFORMAT}",KEYFORMATVERSIONS="1",URI="data:text/plain;base64,{}""#,
        base64::engine::general_purpose::STANDARD.encode(p.kid)
    )
}

/// The audio group id for a codec family (`audio-mp4a`, `audio-Opus`).
pub fn audio_group(r: &RenditionView) -> String {
    format!("audio-{}", r.family)
}

/// The group id of every subtitles rendition.
pub const SUBTITLES_GROUP: &str = "subs";

/// A text rendition's media playlist: segmented WebVTT, one segment per video segment with the
/// same durations.
pub fn text_playlist(t: &TextView, target: u64) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    for (file, d) in &t.segments {
        let _ = writeln!(s, "#EXTINF:{d:.5},\n{file}");
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

/// The master playlist.
pub fn master_playlist(renditions: &[RenditionView], target: u64) -> String {
    master_playlist_with_text(renditions, &[], target)
}

/// The master playlist with text renditions: one `EXT-X-MEDIA:TYPE=SUBTITLES` each in group
/// [`SUBTITLES_GROUP`], named by every video variant. None is `DEFAULT`; a forced track has
/// `FORCED=YES` (with the `AUTOSELECT=YES` it requires), captions carry the accessibility
/// `CHARACTERISTICS`.
pub fn master_playlist_with_text(
    renditions: &[RenditionView],
    texts: &[TextView],
    target: u64,
) -> String {
    master_playlist_with_media(renditions, texts, None, target)
}

/// [`master_playlist_with_text`] with thumbnails: an `EXT-X-IMAGE-STREAM-INF` naming the image
/// media playlist ([`image_playlist`]); its `RESOLUTION` is one thumbnail's (a tile of the grid),
/// as in the Roku/Apple image playlist examples and as Shaka Player reads it.
pub fn master_playlist_with_media(
    renditions: &[RenditionView],
    texts: &[TextView],
    images: Option<&ImageView>,
    target: u64,
) -> String {
    let mut s = master_lines(renditions, texts, target);
    if let Some(im) = images {
        let _ = writeln!(
            s,
            r#"#EXT-X-IMAGE-STREAM-INF:BANDWIDTH={},RESOLUTION={}x{},CODECS="jpeg",URI="{}/{MEDIA_PLAYLIST}""#,
            im.bandwidth(),
            im.width / im.cols,
            im.height / im.rows,
            im.id
        );
    }
    s
}

/// The image media playlist of thumbnails (Roku/Apple image playlists): `EXT-X-IMAGES-ONLY`,
/// and per grid image an `EXT-X-TILES` with the thumbnail size, the layout and the duration
/// of one thumbnail.
pub fn image_playlist(im: &ImageView) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let target = (im.image_ms().div_ceil(1000)).max(1);
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    s.push_str("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-IMAGES-ONLY\n");
    for k in 0..im.sizes.len() {
        let _ = writeln!(s, "#EXTINF:{:.3},", im.duration(k));
        let _ = writeln!(
            s,
            "#EXT-X-TILES:RESOLUTION={}x{},LAYOUT={}x{},DURATION={:.3}",
            im.width / im.cols,
            im.height / im.rows,
            im.cols,
            im.rows,
            im.interval_ms as f64 / 1000.0
        );
        let _ = writeln!(s, "{}", ImageView::file(k));
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

fn master_lines(renditions: &[RenditionView], texts: &[TextView], target: u64) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut session_keys: Vec<String> = Vec::new();
    for p in renditions.iter().filter_map(|r| r.protection.as_ref()) {
        let k = key_attributes(p);
        if !session_keys.contains(&k) {
            let _ = writeln!(s, "#EXT-X-SESSION-KEY:{k}");
            session_keys.push(k);
        }
    }
    let audio: Vec<&RenditionView> = renditions
        .iter()
        .filter(|r| r.kind == TrackKind::Audio)
        .collect();
    let mut groups: Vec<String> = Vec::new();
    for a in &audio {
        let g = audio_group(a);
        if !groups.contains(&g) {
            groups.push(g.clone());
        }
    }
    for g in &groups {
        let members: Vec<&&RenditionView> = audio.iter().filter(|a| audio_group(a) == *g).collect();
        // One DEFAULT=YES per group: its first main rendition (else its first).
        let default = members
            .iter()
            .position(|a| a.role == AudioRole::Main)
            .unwrap_or(0);
        for (k, a) in members.iter().enumerate() {
            let characteristics = match a.role {
                AudioRole::Description => {
                    r#",CHARACTERISTICS="public.accessibility.describes-video""#
                }
                _ => "",
            };
            let _ = writeln!(
                s,
                r#"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{g}",NAME="{}",LANGUAGE="{}",DEFAULT={},AUTOSELECT=YES{characteristics},CHANNELS="{}",URI="{}""#,
                a.id,
                a.language,
                if k == default { "YES" } else { "NO" },
                a.channels,
                a.playlist_path()
            );
        }
    }
    for t in texts {
        let extra = match t.role {
            TextRole::Forced => ",FORCED=YES",
            TextRole::Caption => {
                r#",CHARACTERISTICS="public.accessibility.transcribes-spoken-dialog,public.accessibility.describes-music-and-sound""#
            }
            TextRole::Subtitle => "",
        };
        let _ = writeln!(
            s,
            r#"#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{SUBTITLES_GROUP}",NAME="{}",LANGUAGE="{}",DEFAULT=NO,AUTOSELECT=YES{extra},URI="{}/{MEDIA_PLAYLIST}""#,
            t.id, t.language, t.id
        );
    }
    // Trick play renditions are never variants: they appear below as I-frame variants only.
    let video: Vec<&RenditionView> = renditions
        .iter()
        .filter(|r| r.kind == TrackKind::Video && !r.trick)
        .collect();
    if video.is_empty() {
        // Audio-only title: each audio rendition is a variant.
        for a in &audio {
            let (peak, avg) = rates(a, target);
            let _ = writeln!(
                s,
                r#"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg},CODECS="{}""#,
                a.codec
            );
            let _ = writeln!(s, "{}", a.playlist_path());
        }
        return s;
    }
    let group_list: Vec<Option<&String>> = if groups.is_empty() {
        vec![None]
    } else {
        groups.iter().map(Some).collect()
    };
    for g in group_list {
        let members: Vec<&&RenditionView> = audio
            .iter()
            .filter(|a| Some(&audio_group(a)) == g)
            .collect();
        let a_peak = members
            .iter()
            .map(|a| rates(a, target).0)
            .max()
            .unwrap_or(0);
        let a_avg = members
            .iter()
            .map(|a| rates(a, target).1)
            .max()
            .unwrap_or(0);
        let mut a_codecs: Vec<&str> = Vec::new();
        for a in &members {
            if !a_codecs.contains(&a.codec.as_str()) {
                a_codecs.push(&a.codec);
            }
        }
        for v in &video {
            let (peak, avg) = rates(v, target);
            let mut codecs = vec![v.codec.as_str()];
            codecs.extend(a_codecs.iter().copied());
            let mut line = format!(
                r#"#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS="{}",RESOLUTION={}x{}"#,
                peak + a_peak,
                avg + a_avg,
                codecs.join(","),
                v.width,
                v.height
            );
            if let Some(fr) = v.frame_rate {
                let _ = write!(line, ",FRAME-RATE={}", frame_rate_decimal(fr, true));
            }
            if let Some(g) = g {
                let _ = write!(line, r#",AUDIO="{g}""#);
            }
            if !texts.is_empty() {
                let _ = write!(line, r#",SUBTITLES="{SUBTITLES_GROUP}""#);
            }
            let _ = writeln!(s, "{line}");
            let _ = writeln!(s, "{}", v.playlist_path());
        }
    }
    // Trick play: one I-frame playlist per video rendition, the ladder's and then the
    // keyframe-only trick play renditions'.
    for v in renditions.iter().filter(|r| r.kind == TrackKind::Video) {
        let Some(stats) = v.iframe_stats() else {
            continue;
        };
        let _ = writeln!(
            s,
            r#"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS="{}",RESOLUTION={}x{},URI="{}""#,
            hls_peak(&stats, target),
            hls_average(&stats),
            v.codec,
            v.width,
            v.height,
            v.iframe_playlist_path()
        );
    }
    s
}
