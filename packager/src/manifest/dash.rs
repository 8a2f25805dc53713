//! The DASH MPD: static, one Period. On-demand mode uses the `isoff-on-demand` profile with one
//! self-initialising file per Representation (`BaseURL`, `SegmentBase@indexRange`,
//! `Initialization@range`); segmented mode uses `isoff-live` with a per-Representation
//! `SegmentTemplate` + `SegmentTimeline`. One AdaptationSet per video codec family and one per
//! audio codec/language/role (with `Role`, and `Accessibility` for audio description); every URL is relative.
//! Trick play renditions get a video AdaptationSet of their own per codec family, marked with
//! the DASH-IF trick mode `EssentialProperty` naming the normal set it serves.
//!
//! Encryption follows DASH-IF IOP (v4.3 §7.7.2): one `cenc:default_KID` per AdaptationSet, its
//! `ContentProtection` elements on the AdaptationSet (players such as dash.js read them nowhere
//! else). A set whose renditions use several keys (each video quality tier has its own) is
//! split into one AdaptationSet per key, and the video sets of one codec family name each other
//! in an `adaptation-set-switching` `SupplementalProperty` (ISO/IEC 23009-1 §5.3.3.5), so a
//! player still switches between tiers; a trick mode set serves the normal set with its key.

use std::fmt::Write as _;

use protocol::catalog::{PackagingMode, TrackKind};

use super::bandwidth::dash_bandwidth;
use super::{frame_rate_decimal, gcd, RenditionView, TextView};
use crate::package::AudioRole;
use crate::text::TextRole;
use crate::thumbs::ImageView;

/// `PT<seconds>S` with millisecond precision.
pub fn iso_duration(secs: f64) -> String {
    format!("PT{:.3}S", secs)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the MPD. `min_buffer_time` (seconds) is both `@minBufferTime` and the bucket size of
/// every `@bandwidth`.
pub fn mpd(renditions: &[RenditionView], min_buffer_time: f64) -> String {
    mpd_with_text(renditions, &[], min_buffer_time)
}

/// [`mpd`] with text renditions: one AdaptationSet per text track, text in MP4
/// (`contentType="text"`, `application/mp4`, codecs `wvtt` or `stpp.ttml.im1t`, addressed like
/// video: `SegmentBase` on demand, `SegmentTemplate` + `SegmentTimeline` segmented), with
/// `lang`, `Role` (`subtitle`, `caption`, `forced-subtitle`) and, for captions,
/// `Accessibility`.
pub fn mpd_with_text(
    renditions: &[RenditionView],
    texts: &[TextView],
    min_buffer_time: f64,
) -> String {
    mpd_with_media(renditions, texts, None, min_buffer_time)
}

/// [`mpd_with_text`] with thumbnails: an image AdaptationSet (`contentType="image"`,
/// `image/jpeg`, a SegmentTemplate of one grid image per `cols * rows * interval`, the DASH-IF
/// `thumbnail_tile` EssentialProperty `COLSxROWS`).
pub fn mpd_with_media(
    renditions: &[RenditionView],
    texts: &[TextView],
    images: Option<&ImageView>,
    min_buffer_time: f64,
) -> String {
    let mode = renditions
        .first()
        .map_or(PackagingMode::OnDemand, |r| r.mode);
    let profile = match mode {
        PackagingMode::OnDemand => "urn:mpeg:dash:profile:isoff-on-demand:2011",
        PackagingMode::Segmented => "urn:mpeg:dash:profile:isoff-live:2011",
    };
    // The title lasts as long as its longest normal track (a trick play rendition may run a
    // fraction of its frame past the video's end).
    let duration = renditions
        .iter()
        .filter(|r| !r.trick)
        .map(|r| r.seconds())
        .fold(0f64, f64::max);
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let ns = if renditions.iter().any(|r| r.protection.is_some()) {
        r#" xmlns:cenc="urn:mpeg:cenc:2013" xmlns:dashif="https://dashif.org/CPS""#
    } else {
        ""
    };
    let _ = writeln!(
        s,
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"{ns} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:mpeg:dash:schema:mpd:2011 DASH-MPD.xsd" profiles="{profile}" type="static" mediaPresentationDuration="{}" minBufferTime="{}">"#,
        iso_duration(duration),
        iso_duration(min_buffer_time)
    );
    let _ = writeln!(s, r#"  <Period id="0" start="PT0S">"#);
    // Group into adaptation sets, keeping input order; trick play renditions in sets of their
    // own, and one set per key.
    let mut sets: Vec<Set<'_>> = Vec::new();
    for r in renditions {
        let lang = if r.kind == TrackKind::Audio {
            r.language.clone()
        } else {
            String::new()
        };
        let kid = r.protection.as_ref().map(|p| p.kid);
        match sets.iter_mut().find(|s| {
            s.kind == r.kind
                && s.family == r.family
                && s.lang == lang
                && s.role == r.role
                && s.trick == r.trick
                && s.kid == kid
        }) {
            Some(set) => set.reps.push(r),
            None => sets.push(Set {
                kind: r.kind,
                family: r.family.clone(),
                lang,
                role: r.role,
                trick: r.trick,
                kid,
                reps: vec![r],
            }),
        }
    }
    for (id, set) in sets.iter().enumerate() {
        let Set {
            kind,
            family,
            lang,
            role,
            trick,
            kid,
            reps,
        } = set;
        let mut align = match mode {
            PackagingMode::OnDemand => r#" subsegmentAlignment="true" subsegmentStartsWithSAP="1""#,
            PackagingMode::Segmented => r#" segmentAlignment="true" startWithSAP="1""#,
        };
        // Trick play: the normal video set(s) of the same codec family it serves (DASH-IF IOP
        // v4.3 §3.2.9), and how much faster than its own frame rate it may play.
        let mut trick_for = None;
        if *trick {
            let Some((main_ids, main_fps)) = trick_mode_for(&sets, family, *kid) else {
                // Nothing to serve (the packager refuses this): never offer it as normal video.
                continue;
            };
            trick_for = Some((main_ids, main_fps));
            if !aligned(reps) {
                // Several trick renditions at different frame rates cut at different frames.
                align = match mode {
                    PackagingMode::OnDemand => r#" subsegmentStartsWithSAP="1""#,
                    PackagingMode::Segmented => r#" startWithSAP="1""#,
                };
            }
        }
        match kind {
            TrackKind::Video => {
                let pars: Vec<(u64, u64)> = reps.iter().map(|r| par(r)).collect();
                let par_attr = if pars.iter().all(|p| *p == pars[0]) {
                    format!(r#" par="{}:{}""#, pars[0].0, pars[0].1)
                } else {
                    String::new()
                };
                let max_w = reps.iter().map(|r| r.width).max().unwrap_or(0);
                let max_h = reps.iter().map(|r| r.height).max().unwrap_or(0);
                let _ = writeln!(
                    s,
                    r#"    <AdaptationSet id="{id}" contentType="video" mimeType="video/mp4"{align}{par_attr} maxWidth="{max_w}" maxHeight="{max_h}">"#
                );
                if let Some(p) = &reps[0].protection {
                    content_protection(&mut s, p);
                }
                if let Some((main_ids, _)) = &trick_for {
                    let _ = writeln!(
                        s,
                        r#"      <EssentialProperty schemeIdUri="{TRICKMODE_SCHEME}" value="{main_ids}"/>"#
                    );
                } else {
                    // The other normal video sets of the family (other keys): switchable.
                    let others: Vec<String> = sets
                        .iter()
                        .enumerate()
                        .filter(|(i, o)| {
                            *i != id
                                && o.kind == TrackKind::Video
                                && !o.trick
                                && o.family == *family
                        })
                        .map(|(i, _)| i.to_string())
                        .collect();
                    if !others.is_empty() {
                        let _ = writeln!(
                            s,
                            r#"      <SupplementalProperty schemeIdUri="{ADAPTATION_SET_SWITCHING_SCHEME}" value="{}"/>"#,
                            others.join(",")
                        );
                    }
                }
            }
            TrackKind::Audio | TrackKind::Text | TrackKind::Image => {
                let _ = writeln!(
                    s,
                    r#"    <AdaptationSet id="{id}" contentType="audio" mimeType="audio/mp4" lang="{}"{align}>"#,
                    xml_escape(lang)
                );
                if let Some(p) = &reps[0].protection {
                    content_protection(&mut s, p);
                }
                let _ = writeln!(
                    s,
                    r#"      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="{}"/>"#,
                    role.as_str()
                );
                if *role == AudioRole::Description {
                    // TV-Anytime AudioPurposeCS 1: audio description for the visually impaired.
                    let _ = writeln!(
                        s,
                        r#"      <Accessibility schemeIdUri="urn:tva:metadata:cs:AudioPurposeCS:2007" value="1"/>"#
                    );
                }
            }
        }
        for r in reps {
            let extra = match &trick_for {
                Some((_, main_fps)) => format!(
                    r#" maxPlayoutRate="{}" codingDependency="false""#,
                    max_playout_rate(*main_fps, r)
                ),
                None => String::new(),
            };
            representation(&mut s, r, min_buffer_time, &extra);
        }
        let _ = writeln!(s, "    </AdaptationSet>");
    }
    for (k, t) in texts.iter().enumerate() {
        let id = sets.len() + k;
        let m = &t.mp4;
        let align = match m.mode {
            PackagingMode::OnDemand => r#" subsegmentAlignment="true" subsegmentStartsWithSAP="1""#,
            PackagingMode::Segmented => r#" segmentAlignment="true" startWithSAP="1""#,
        };
        let _ = writeln!(
            s,
            r#"    <AdaptationSet id="{id}" contentType="text" mimeType="application/mp4" codecs="{}" lang="{}"{align}>"#,
            xml_escape(&m.codecs),
            xml_escape(&t.language)
        );
        let role = match t.role {
            TextRole::Subtitle => "subtitle",
            TextRole::Caption => "caption",
            TextRole::Forced => "forced-subtitle",
        };
        let _ = writeln!(
            s,
            r#"      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="{role}"/>"#
        );
        if t.role == TextRole::Caption {
            let _ = writeln!(
                s,
                r#"      <Accessibility schemeIdUri="urn:mpeg:dash:role:2011" value="caption"/>"#
            );
        }
        text_representation(&mut s, t);
        let _ = writeln!(s, "    </AdaptationSet>");
    }
    if let Some(im) = images {
        let id = sets.len() + texts.len();
        let _ = writeln!(
            s,
            r#"    <AdaptationSet id="{id}" contentType="image" mimeType="image/jpeg">"#
        );
        let _ = writeln!(
            s,
            r#"      <SegmentTemplate media="{}/$Number%05d$.jpg" timescale="1000" duration="{}" startNumber="1"/>"#,
            xml_escape(&im.id),
            im.image_ms()
        );
        let _ = writeln!(
            s,
            r#"      <Representation id="{}" bandwidth="{}" width="{}" height="{}">"#,
            xml_escape(&im.id),
            im.bandwidth(),
            im.width,
            im.height
        );
        let _ = writeln!(
            s,
            r#"        <EssentialProperty schemeIdUri="http://dashif.org/thumbnail_tile" value="{}x{}"/>"#,
            im.cols, im.rows
        );
        let _ = writeln!(s, "      </Representation>");
        let _ = writeln!(s, "    </AdaptationSet>");
    }
    let _ = writeln!(s, "  </Period>");
    let _ = writeln!(s, "</MPD>");
    s
}

/// The licence URL written in the Clear Key `dashif:Laurl`: a placeholder the control plane
/// replaces per session (the title directory on appliances is shared by every session).
pub const CLEARKEY_LAURL_PLACEHOLDER: &str = "$OUTPOST_CLEARKEY_LICENSE_URL$";

/// The Clear Key DRM system id.
pub const CLEARKEY_SYSTEM: &str = "e2719d58-a985-b3c9-781a-b030af78d30e";

/// `ContentProtection` of an encrypted AdaptationSet (all its Representations share one key):
/// the mp4protection scheme with the default KID and a `cenc:pssh` (W3C common system) listing
/// every key id of the title, and the Clear Key system with its licence URL placeholder.
fn content_protection(s: &mut String, p: &crate::manifest::Protection) {
    use base64::Engine;
    let pssh = crate::encrypt::pssh(&p.title_kids);
    let _ = writeln!(
        s,
        r#"      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="{}" cenc:default_KID="{}">"#,
        p.scheme,
        p.kid_uuid()
    );
    let _ = writeln!(
        s,
        "        <cenc:pssh>{}</cenc:pssh>",
        base64::engine::general_purpose::STANDARD.encode(pssh)
    );
    let _ = writeln!(s, "      </ContentProtection>");
    let _ = writeln!(
        s,
        r#"      <ContentProtection schemeIdUri="urn:uuid:{CLEARKEY_SYSTEM}" value="ClearKey1.0">"#
    );
    let _ = writeln!(
        s,
        "        <dashif:Laurl>{CLEARKEY_LAURL_PLACEHOLDER}</dashif:Laurl>"
    );
    let _ = writeln!(s, "      </ContentProtection>");
}

/// One AdaptationSet being assembled: what its Representations share (kind, codec family,
/// audio language and role, trick play, key id) and the Representations, in input order.
struct Set<'a> {
    kind: TrackKind,
    family: String,
    lang: String,
    role: AudioRole,
    trick: bool,
    kid: Option<[u8; 16]>,
    reps: Vec<&'a RenditionView>,
}

/// The normal video sets a trick mode set of codec `family` and key `kid` serves, as its
/// trickmode `@value` (ids separated by spaces), and their highest frame rate: the set with the
/// same key (each tier's trick play pairs with that tier's video), else every normal video set
/// of the family. `None` when the family has no normal video.
fn trick_mode_for(sets: &[Set<'_>], family: &str, kid: Option<[u8; 16]>) -> Option<(String, f64)> {
    let normal = |s: &&Set<'_>| s.kind == TrackKind::Video && !s.trick && s.family == family;
    let same_key: Vec<usize> = sets
        .iter()
        .enumerate()
        .filter(|(_, s)| normal(s) && s.kid == kid)
        .map(|(i, _)| i)
        .collect();
    let ids = if same_key.is_empty() {
        sets.iter()
            .enumerate()
            .filter(|(_, s)| normal(s))
            .map(|(i, _)| i)
            .collect()
    } else {
        same_key
    };
    if ids.is_empty() {
        return None;
    }
    let fps = ids
        .iter()
        .flat_map(|i| sets[*i].reps.iter())
        .filter_map(|r| r.frame_rate)
        .map(|(n, d)| n as f64 / d.max(1) as f64)
        .fold(0f64, f64::max);
    let value = ids
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    Some((value, fps))
}

fn par(r: &RenditionView) -> (u64, u64) {
    let w = u64::from(r.width) * u64::from(r.sar.0);
    let h = u64::from(r.height) * u64::from(r.sar.1);
    let g = gcd(w, h).max(1);
    (w / g, h / g)
}

/// The `EssentialProperty` scheme of a trick mode AdaptationSet (DASH-IF IOP v4.3 §3.2.9); its
/// value is the id of the AdaptationSet it serves. Players that do not know it must skip the
/// set (an unknown EssentialProperty), so it is never chosen for normal playback.
pub const TRICKMODE_SCHEME: &str = "http://dashif.org/guidelines/trickmode";

/// The `SupplementalProperty` scheme of AdaptationSets a player may switch between seamlessly
/// (ISO/IEC 23009-1 §5.3.3.5); its value is the comma-separated ids of the other sets.
pub const ADAPTATION_SET_SWITCHING_SCHEME: &str = "urn:mpeg:dash:adaptation-set-switching:2016";

/// `@maxPlayoutRate` of a trick play Representation: the playout rate (a multiple of normal
/// speed) at which it decodes as many frames a second as the normal video (`main_fps`) does,
/// the rate "supported with the same decoder profile and level requirements as the normal
/// playout rate" (ISO/IEC 23009-1 §5.3.5.2): 25 for 1 fps against 25 fps. At least 1.
fn max_playout_rate(main_fps: f64, r: &RenditionView) -> u64 {
    match r.frame_rate {
        Some((n, d)) if n > 0 && main_fps > 0.0 => {
            ((main_fps * d as f64 / n as f64).round() as u64).max(1)
        }
        _ => 1,
    }
}

/// Whether every Representation's segments start at the same times (compared exactly across
/// timescales).
fn aligned(reps: &[&RenditionView]) -> bool {
    let Some(first) = reps.first() else {
        return true;
    };
    reps.iter().all(|r| {
        r.segments.len() == first.segments.len()
            && r.segments.iter().zip(&first.segments).all(|(a, b)| {
                i128::from(a.start) * i128::from(first.timescale)
                    == i128::from(b.start) * i128::from(r.timescale)
            })
    })
}

/// One Representation; `extra` is appended to its attributes (trick play's).
fn representation(s: &mut String, r: &RenditionView, mbt: f64, extra: &str) {
    let bw = dash_bandwidth(&r.seg_stats(), mbt);
    let id = xml_escape(&r.id);
    match r.kind {
        TrackKind::Video => {
            let fr = r
                .frame_rate
                .map(|(n, d)| {
                    let g = gcd(n, d).max(1);
                    if d / g == 1 {
                        format!(r#" frameRate="{}""#, n / g)
                    } else {
                        format!(r#" frameRate="{}/{}""#, n / g, d / g)
                    }
                })
                .unwrap_or_default();
            let g = gcd(u64::from(r.sar.0), u64::from(r.sar.1)).max(1);
            let _ = writeln!(
                s,
                r#"      <Representation id="{id}" bandwidth="{bw}" codecs="{}" width="{}" height="{}"{fr} sar="{}:{}"{extra}>"#,
                xml_escape(&r.codec),
                r.width,
                r.height,
                u64::from(r.sar.0) / g,
                u64::from(r.sar.1) / g
            );
        }
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => {
            let _ = writeln!(
                s,
                r#"      <Representation id="{id}" bandwidth="{bw}" codecs="{}" audioSamplingRate="{}">"#,
                xml_escape(&r.codec),
                r.sample_rate
            );
            let _ = writeln!(
                s,
                r#"        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="{}"/>"#,
                r.channels
            );
        }
    }
    match r.mode {
        PackagingMode::OnDemand => {
            let (io, il) = r.index_range.unwrap_or((0, 0));
            let (no, nl) = r.init_range.unwrap_or((0, 0));
            let _ = writeln!(
                s,
                "        <BaseURL>{}/{}</BaseURL>",
                xml_escape(&r.id),
                xml_escape(&r.init_file)
            );
            let _ = writeln!(
                s,
                r#"        <SegmentBase timescale="{}" indexRange="{}-{}" indexRangeExact="true">"#,
                r.timescale,
                io,
                io + il - 1
            );
            let _ = writeln!(
                s,
                r#"          <Initialization range="{}-{}"/>"#,
                no,
                no + nl - 1
            );
            let _ = writeln!(s, "        </SegmentBase>");
        }
        PackagingMode::Segmented => {
            let _ = writeln!(
                s,
                r#"        <SegmentTemplate timescale="{}" initialization="{id}/{}" media="{id}/$Number%05d$.m4s" startNumber="1">"#,
                r.timescale,
                xml_escape(&r.init_file)
            );
            let _ = writeln!(s, "          <SegmentTimeline>");
            let mut i = 0;
            let mut expected_t = None;
            while i < r.segments.len() {
                let seg = &r.segments[i];
                let mut rep = 0;
                while i + rep + 1 < r.segments.len()
                    && r.segments[i + rep + 1].duration == seg.duration
                {
                    rep += 1;
                }
                let t = if expected_t == Some(seg.start) {
                    String::new()
                } else {
                    format!(r#" t="{}""#, seg.start)
                };
                let r_attr = if rep > 0 {
                    format!(r#" r="{rep}""#)
                } else {
                    String::new()
                };
                let _ = writeln!(s, r#"            <S{t} d="{}"{r_attr}/>"#, seg.duration);
                expected_t = Some(seg.start + ((rep as u64 + 1) * seg.duration) as i64);
                i += rep + 1;
            }
            let _ = writeln!(s, "          </SegmentTimeline>");
            let _ = writeln!(s, "        </SegmentTemplate>");
        }
    }
    let _ = writeln!(s, "      </Representation>");
}

/// The Representation of a text track's MP4 (timescale 1000).
fn text_representation(s: &mut String, t: &TextView) {
    let m = &t.mp4;
    let id = xml_escape(&t.id);
    let _ = writeln!(
        s,
        r#"      <Representation id="{id}" bandwidth="{}">"#,
        m.bandwidth()
    );
    match m.mode {
        PackagingMode::OnDemand => {
            let (io, il) = m.index_range.unwrap_or((0, 0));
            let (no, nl) = m.init_range.unwrap_or((0, 0));
            let _ = writeln!(s, "        <BaseURL>{id}/{}</BaseURL>", xml_escape(&m.file));
            let _ = writeln!(
                s,
                r#"        <SegmentBase timescale="1000" indexRange="{}-{}" indexRangeExact="true">"#,
                io,
                io + il - 1
            );
            let _ = writeln!(
                s,
                r#"          <Initialization range="{}-{}"/>"#,
                no,
                no + nl - 1
            );
            let _ = writeln!(s, "        </SegmentBase>");
        }
        PackagingMode::Segmented => {
            let _ = writeln!(
                s,
                r#"        <SegmentTemplate timescale="1000" initialization="{id}/{}" media="{id}/$Number%05d$.m4s" startNumber="1">"#,
                xml_escape(&m.file)
            );
            let _ = writeln!(s, "          <SegmentTimeline>");
            let mut i = 0;
            let mut expected_t = None;
            while i < m.segments.len() {
                let (start, dur) = m.segments[i];
                let mut rep = 0;
                while i + rep + 1 < m.segments.len() && m.segments[i + rep + 1].1 == dur {
                    rep += 1;
                }
                let t_attr = if expected_t == Some(start) {
                    String::new()
                } else {
                    format!(r#" t="{start}""#)
                };
                let r_attr = if rep > 0 {
                    format!(r#" r="{rep}""#)
                } else {
                    String::new()
                };
                let _ = writeln!(s, r#"            <S{t_attr} d="{dur}"{r_attr}/>"#);
                expected_t = Some(start + (rep as u64 + 1) * dur);
                i += rep + 1;
            }
            let _ = writeln!(s, "          </SegmentTimeline>");
            let _ = writeln!(s, "        </SegmentTemplate>");
        }
    }
    let _ = writeln!(s, "      </Representation>");
}

/// DASH `frameRate` helper re-exported for the catalog (decimal form).
pub fn frame_rate_string(fr: (u64, u64)) -> String {
    frame_rate_decimal(fr, false)
}
