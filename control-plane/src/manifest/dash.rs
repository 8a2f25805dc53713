//! DASH MPD rewriting (ISO/IEC 23009-1 with DASH-IF content steering).
//!
//! Two passes over the MPD. The first (`plan`) decides which `AdaptationSet`s the session
//! keeps: a set keeps the `Representation`s whose `id` the session may play and is dropped when
//! none is left; a trick mode set (DASH-IF `EssentialProperty` trickmode) is dropped too when
//! none of the sets it serves is kept. The second streams the MPD through an XML reader and
//! writer: dropped `Representation`s and sets go with their subtree; the set ids an
//! `adaptation-set-switching` `SupplementalProperty` or a trickmode `EssentialProperty` names
//! are narrowed to the kept sets (a switching property naming none goes); MPD-level `BaseURL`s
//! are replaced by one `<BaseURL serviceLocation="<appliance>">` per location, and a
//! `<ContentSteering>` element pointing at the steering server is inserted before them (after
//! `ProgramInformation`, where the schema puts MPD-level locations). Everything else passes
//! through byte for byte.

use std::collections::HashSet;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::{Location, ManifestError};

/// Longest MPD accepted, bytes.
pub const MAX_MPD: usize = 4 << 20;

/// The DASH-IF trick mode scheme (IOP v4.3 §3.2.9): its value lists the ids of the
/// AdaptationSets a trick mode AdaptationSet serves, separated by spaces.
pub const TRICKMODE_SCHEME: &str = "http://dashif.org/guidelines/trickmode";

/// The adaptation set switching scheme (ISO/IEC 23009-1 §5.3.3.5): its value lists the ids of
/// the AdaptationSets a player may switch to from this one, separated by commas.
pub const ADAPTATION_SET_SWITCHING_SCHEME: &str = "urn:mpeg:dash:adaptation-set-switching:2016";

fn err(e: impl std::fmt::Display) -> ManifestError {
    ManifestError::Dash(e.to_string())
}

/// One AdaptationSet as the first pass sees it.
struct SetInfo {
    period: usize,
    id: Option<String>,
    kept: usize,
    trick_for: Option<String>,
}

/// What the session keeps: per AdaptationSet in document order whether it stays, and per Period
/// (in document order) the ids of the sets that stay.
struct Plan {
    keep_set: Vec<bool>,
    kept_ids: Vec<HashSet<String>>,
}

/// The first pass: which AdaptationSets keep a Representation, and which trick mode sets still
/// serve a kept set (wherever it stands in its Period).
fn plan(text: &str, keep: &dyn Fn(&str) -> bool) -> Result<Plan, ManifestError> {
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    let mut periods = 0usize;
    let mut sets: Vec<SetInfo> = Vec::new();
    // The open AdaptationSet's depth.
    let mut open: Option<usize> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| err(format!("at byte {}: {e}", reader.error_position())))?;
        let e = match &ev {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => e,
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if open == Some(depth) && e.local_name().as_ref() == b"AdaptationSet" {
                    open = None;
                }
                continue;
            }
            _ => continue,
        };
        let is_start = matches!(ev, Event::Start(_));
        match e.local_name().as_ref() {
            b"Period" => periods += 1,
            b"AdaptationSet" => {
                if open.is_some() {
                    return Err(err("nested AdaptationSet"));
                }
                sets.push(SetInfo {
                    period: periods,
                    id: attribute(e, "id")?,
                    kept: 0,
                    trick_for: None,
                });
                if is_start {
                    open = Some(depth);
                }
            }
            b"Representation" => {
                let id = attribute(e, "id")?.ok_or_else(|| err("a Representation has no id"))?;
                if keep(&id) {
                    if let Some(s) = sets.last_mut().filter(|_| open.is_some()) {
                        s.kept += 1;
                    }
                }
            }
            b"EssentialProperty"
                if open.is_some_and(|d| d + 1 == depth)
                    && attribute(e, "schemeIdUri")?.as_deref() == Some(TRICKMODE_SCHEME) =>
            {
                if let Some(s) = sets.last_mut() {
                    s.trick_for = Some(attribute(e, "value")?.unwrap_or_default());
                }
            }
            _ => {}
        }
        if is_start {
            depth += 1;
        }
    }
    let mut kept_ids: Vec<HashSet<String>> = vec![HashSet::new(); periods + 1];
    let mut keep_set: Vec<bool> = sets
        .iter()
        .map(|s| s.kept > 0 && s.trick_for.is_none())
        .collect();
    for (s, k) in sets.iter().zip(&keep_set) {
        if let (true, Some(id)) = (*k, &s.id) {
            kept_ids[s.period].insert(id.clone());
        }
    }
    for (s, k) in sets.iter().zip(keep_set.iter_mut()) {
        if let Some(ids) = &s.trick_for {
            *k = s.kept > 0
                && ids
                    .split_ascii_whitespace()
                    .any(|id| kept_ids[s.period].contains(id));
        }
    }
    for (s, k) in sets.iter().zip(&keep_set) {
        if let (true, Some(id), Some(_)) = (*k, &s.id, &s.trick_for) {
            kept_ids[s.period].insert(id.clone());
        }
    }
    Ok(Plan { keep_set, kept_ids })
}

/// Rewrites an MPD for one session. `keep(representation_id)` says whether a Representation may
/// be played.
pub fn rewrite_mpd(
    text: &str,
    keep: &dyn Fn(&str) -> bool,
    locations: &[Location],
    steering_uri: &str,
) -> Result<String, ManifestError> {
    if text.len() > MAX_MPD {
        return Err(err(format!("longer than {MAX_MPD} bytes")));
    }
    let plan = plan(text, keep)?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut writer = Writer::new(Vec::with_capacity(text.len() + 512));

    let mut depth: usize = 0;
    let mut seen_mpd = false;
    let mut inserted = false;
    // Depth at which a dropped subtree started (everything deeper is skipped).
    let mut skip_from: Option<usize> = None;
    // Periods and AdaptationSets seen so far, and the open set's depth.
    let mut periods = 0usize;
    let mut sets_seen = 0usize;
    let mut set_depth: Option<usize> = None;
    let mut kept_total = 0usize;
    let mut pending_ws: Option<Event<'static>> = None;

    let steering_block = |w: &mut Writer<Vec<u8>>| -> Result<(), ManifestError> {
        let Some(first) = locations.first() else {
            return Ok(());
        };
        let mut cs = BytesStart::new("ContentSteering");
        cs.push_attribute(("defaultServiceLocation", first.id.as_str()));
        cs.push_attribute(("queryBeforeStart", "true"));
        w.write_event(Event::Text(BytesText::new("\n  ")))
            .map_err(err)?;
        w.write_event(Event::Start(cs)).map_err(err)?;
        w.write_event(Event::Text(BytesText::new(steering_uri)))
            .map_err(err)?;
        w.write_event(Event::End(BytesEnd::new("ContentSteering")))
            .map_err(err)?;
        for l in locations {
            let mut b = BytesStart::new("BaseURL");
            b.push_attribute(("serviceLocation", l.id.as_str()));
            w.write_event(Event::Text(BytesText::new("\n  ")))
                .map_err(err)?;
            w.write_event(Event::Start(b)).map_err(err)?;
            w.write_event(Event::Text(BytesText::new(&l.base_url)))
                .map_err(err)?;
            w.write_event(Event::End(BytesEnd::new("BaseURL")))
                .map_err(err)?;
        }
        Ok(())
    };

    loop {
        let mut ev = reader
            .read_event()
            .map_err(|e| err(format!("at byte {}: {e}", reader.error_position())))?;
        if matches!(ev, Event::Eof) {
            break;
        }
        if matches!(ev, Event::DocType(_)) {
            return Err(err("DOCTYPE is not allowed"));
        }
        // Work out the event's depth and whether it is dropped.
        let (is_start, is_end) = (matches!(ev, Event::Start(_)), matches!(ev, Event::End(_)));
        let cur_depth = if is_end { depth - 1 } else { depth };
        let mut drop = skip_from.is_some_and(|d| cur_depth >= d);

        if !drop {
            let mut replace = None;
            match &ev {
                Event::Start(e) | Event::Empty(e) => {
                    let name = e.local_name();
                    let name = name.as_ref();
                    if cur_depth == 0 {
                        if name != b"MPD" {
                            return Err(err("the root element is not MPD"));
                        }
                        seen_mpd = true;
                    } else if cur_depth == 1 {
                        if !inserted && name != b"ProgramInformation" {
                            steering_block(&mut writer)?;
                            inserted = true;
                        }
                        if name == b"BaseURL" || name == b"ContentSteering" {
                            drop = true;
                        }
                    }
                    match name {
                        b"Period" => periods += 1,
                        b"AdaptationSet" => {
                            drop = !plan.keep_set.get(sets_seen).copied().unwrap_or(false);
                            sets_seen += 1;
                            if is_start {
                                set_depth = Some(cur_depth);
                            }
                        }
                        b"Representation" => {
                            let id = attribute(e, "id")?
                                .ok_or_else(|| err("a Representation has no id"))?;
                            if keep(&id) {
                                kept_total += 1;
                            } else {
                                drop = true;
                            }
                        }
                        b"SupplementalProperty" | b"EssentialProperty"
                            if set_depth.is_some_and(|d| d + 1 == cur_depth) =>
                        {
                            let kept = &plan.kept_ids[periods.min(plan.kept_ids.len() - 1)];
                            match narrow_set_ids(e, kept)? {
                                Narrowed::Same => {}
                                Narrowed::Gone => drop = true,
                                Narrowed::To(e) => replace = Some(e),
                            }
                        }
                        _ => {}
                    }
                }
                Event::End(e) => {
                    if e.local_name().as_ref() == b"AdaptationSet" && set_depth == Some(cur_depth) {
                        set_depth = None;
                    }
                    if cur_depth == 0 && !inserted {
                        steering_block(&mut writer)?;
                        inserted = true;
                    }
                }
                _ => {}
            }
            if let Some(e) = replace {
                ev = if is_start {
                    Event::Start(e)
                } else {
                    Event::Empty(e)
                };
            }
            if drop && is_start {
                skip_from = Some(cur_depth);
            }
        }
        if is_start {
            depth += 1;
        } else if is_end {
            depth -= 1;
        }
        if drop {
            pending_ws = None;
            if is_end && skip_from == Some(cur_depth) {
                skip_from = None;
                if set_depth == Some(cur_depth) {
                    set_depth = None;
                }
            }
            continue;
        }
        if let Event::Text(t) = &ev {
            if t.iter().all(|b| b.is_ascii_whitespace()) {
                pending_ws = Some(ev.into_owned());
                continue;
            }
        }
        if let Some(ws) = pending_ws.take() {
            writer.write_event(ws).map_err(err)?;
        }
        writer.write_event(ev).map_err(err)?;
    }
    if let Some(ws) = pending_ws.take() {
        writer.write_event(ws).map_err(err)?;
    }
    if !seen_mpd || depth != 0 {
        return Err(err("not a complete MPD document"));
    }
    if kept_total == 0 && !locations.is_empty() {
        return Err(err("no Representation is left for this session"));
    }
    String::from_utf8(writer.into_inner()).map_err(err)
}

/// What becomes of a property naming AdaptationSets once the session's sets are known.
enum Narrowed {
    /// Not such a property, or every set it names is kept.
    Same,
    /// A switching property naming no kept set.
    Gone,
    /// The property naming only the kept sets.
    To(BytesStart<'static>),
}

/// Narrows an `adaptation-set-switching` (comma-separated ids) or trickmode (space-separated
/// ids) property to the ids in `kept`. A trick mode set is only written when it serves a kept
/// set, so its property never becomes empty.
fn narrow_set_ids(e: &BytesStart<'_>, kept: &HashSet<String>) -> Result<Narrowed, ManifestError> {
    let sep = match attribute(e, "schemeIdUri")?.as_deref() {
        Some(ADAPTATION_SET_SWITCHING_SCHEME) => ',',
        Some(TRICKMODE_SCHEME) => ' ',
        _ => return Ok(Narrowed::Same),
    };
    let value = attribute(e, "value")?.unwrap_or_default();
    let ids: Vec<&str> = value
        .split(|c: char| c == sep || c.is_ascii_whitespace())
        .filter(|id| !id.is_empty())
        .collect();
    let left: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| kept.contains(*id))
        .collect();
    if left.len() == ids.len() {
        return Ok(Narrowed::Same);
    }
    if left.is_empty() {
        return Ok(Narrowed::Gone);
    }
    let mut out = BytesStart::new(String::from_utf8_lossy(e.name().as_ref()).into_owned());
    for a in e.attributes() {
        let a = a.map_err(err)?;
        if a.key.as_ref() != b"value" {
            out.push_attribute(a);
        }
    }
    let sep = if sep == ',' { "," } else { " " };
    out.push_attribute(("value", left.join(sep).as_str()));
    Ok(Narrowed::To(out.into_owned()))
}

/// An attribute's unescaped value.
fn attribute(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, ManifestError> {
    match e.try_get_attribute(name).map_err(err)? {
        Some(a) => Ok(Some(a.unescape_value().map_err(err)?.into_owned())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" type="static" mediaPresentationDuration="PT10S" minBufferTime="PT2S">
  <ProgramInformation><Title>t1</Title></ProgramInformation>
  <BaseURL>http://old.example/</BaseURL>
  <Period id="0">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <Representation id="v360" bandwidth="500000" width="640" height="360" codecs="avc1.64001e">
        <BaseURL>v360/media.mp4</BaseURL>
        <SegmentBase indexRange="800-900"><Initialization range="0-799"/></SegmentBase>
      </Representation>
      <Representation id="v720" bandwidth="3000000" width="1280" height="720" codecs="avc1.64001f">
        <BaseURL>v720/media.mp4</BaseURL>
        <SegmentBase indexRange="800-900"><Initialization range="0-799"/></SegmentBase>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4">
      <Representation id="v2160" bandwidth="9000000" width="3840" height="2160" codecs="avc1.640033"/>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" mimeType="audio/mp4" lang="en">
      <Representation id="a1" bandwidth="128000" codecs="mp4a.40.2"><BaseURL>a1/media.mp4</BaseURL></Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;

    fn locs() -> Vec<Location> {
        vec![
            Location {
                id: "oca-1".into(),
                base_url: "http://10.0.0.1:8080/g/T1/t1/".into(),
            },
            Location {
                id: "oca-2".into(),
                base_url: "http://10.0.0.2:8080/g/T2/t1/".into(),
            },
        ]
    }

    #[test]
    fn keeps_allowed_representations_and_adds_locations() {
        let keep = |id: &str| id == "v360" || id == "a1";
        let out = rewrite_mpd(MPD, &keep, &locs(), "http://cp/steer?x=1&y=2").unwrap();
        assert!(out.contains("<Representation id=\"v360\""));
        assert!(!out.contains("v720"), "{out}");
        assert!(!out.contains("v2160"), "{out}");
        assert!(!out.contains("AdaptationSet id=\"1\""), "{out}");
        assert!(out.contains("AdaptationSet id=\"2\""));
        assert!(!out.contains("old.example"));
        assert!(out.contains(
            "<ContentSteering defaultServiceLocation=\"oca-1\" queryBeforeStart=\"true\">http://cp/steer?x=1&amp;y=2</ContentSteering>"
        ), "{out}");
        assert!(out.contains(
            "<BaseURL serviceLocation=\"oca-2\">http://10.0.0.2:8080/g/T2/t1/</BaseURL>"
        ));
        let pi = out.find("</ProgramInformation>").unwrap();
        let cs = out.find("<ContentSteering").unwrap();
        let period = out.find("<Period").unwrap();
        assert!(pi < cs && cs < period);
        // Relative per-representation BaseURLs are untouched.
        assert!(out.contains("<BaseURL>v360/media.mp4</BaseURL>"));
        // The output is itself rewritable (well-formed) and stable.
        let again = rewrite_mpd(&out, &keep, &locs(), "http://cp/steer?x=1&y=2").unwrap();
        assert_eq!(again, out);
    }

    /// A catalogue title as the packager writes it: two audio languages with Role and
    /// Accessibility, a text AdaptationSet per subtitle language (one forced).
    const CATALOGUE_MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" type="static" mediaPresentationDuration="PT12.000S" minBufferTime="PT6.000S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" subsegmentAlignment="true" subsegmentStartsWithSAP="1" par="16:9" maxWidth="1280" maxHeight="720">
      <Representation id="video-360p" bandwidth="452853" codecs="avc1.64001e" width="640" height="360" frameRate="25" sar="1:1">
        <BaseURL>video-360p/video-360p.mp4</BaseURL>
        <SegmentBase timescale="12800" indexRange="726-789" indexRangeExact="true">
          <Initialization range="0-725"/>
        </SegmentBase>
      </Representation>
      <Representation id="video-720p" bandwidth="900000" codecs="avc1.64001f" width="1280" height="720" frameRate="25" sar="1:1">
        <BaseURL>video-720p/video-720p.mp4</BaseURL>
        <SegmentBase timescale="12800" indexRange="726-789" indexRangeExact="true">
          <Initialization range="0-725"/>
        </SegmentBase>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="en" subsegmentAlignment="true" subsegmentStartsWithSAP="1">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>
      <Representation id="audio-en" bandwidth="99383" codecs="mp4a.40.2" audioSamplingRate="48000">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <BaseURL>audio-en/audio-en.mp4</BaseURL>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" mimeType="audio/mp4" lang="fr" subsegmentAlignment="true" subsegmentStartsWithSAP="1">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="description"/>
      <Accessibility schemeIdUri="urn:tva:metadata:cs:AudioPurposeCS:2007" value="1"/>
      <Representation id="audio-fr-ad" bandwidth="70000" codecs="mp4a.40.2" audioSamplingRate="48000">
        <BaseURL>audio-fr-ad/audio-fr-ad.mp4</BaseURL>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="3" contentType="text" mimeType="application/mp4" codecs="wvtt" lang="en" subsegmentAlignment="true" subsegmentStartsWithSAP="1">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="subtitle"/>
      <Representation id="text-en" bandwidth="300">
        <BaseURL>text-en/text-en.mp4</BaseURL>
        <SegmentBase timescale="1000" indexRange="610-677" indexRangeExact="true">
          <Initialization range="0-609"/>
        </SegmentBase>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="4" contentType="text" mimeType="application/mp4" codecs="stpp.ttml.im1t" lang="fr" subsegmentAlignment="true" subsegmentStartsWithSAP="1">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="forced-subtitle"/>
      <Representation id="text-fr-forced" bandwidth="100">
        <BaseURL>text-fr-forced/text-fr-forced.mp4</BaseURL>
        <SegmentBase timescale="1000" indexRange="640-707" indexRangeExact="true">
          <Initialization range="0-639"/>
        </SegmentBase>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="5" contentType="image" mimeType="image/jpeg">
      <SegmentTemplate media="thumbnails/$Number%05d$.jpg" timescale="1000" duration="8000" startNumber="1"/>
      <Representation id="thumbnails" bandwidth="9000" width="320" height="180">
        <EssentialProperty schemeIdUri="http://dashif.org/thumbnail_tile" value="2x2"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;

    #[test]
    fn sd_session_keeps_text_and_audio_languages_never_hd() {
        // Entitlement's rendition list for an SD-only device: everything without a tier.
        let allowed = [
            "video-360p",
            "audio-en",
            "audio-fr-ad",
            "text-en",
            "text-fr-forced",
            "thumbnails",
        ];
        let keep = |id: &str| allowed.contains(&id);
        let out = rewrite_mpd(CATALOGUE_MPD, &keep, &locs(), "http://cp/steer").unwrap();
        assert!(!out.contains("video-720p"), "{out}");
        for id in allowed {
            assert!(
                out.contains(&format!("<Representation id=\"{id}\"")),
                "{id}: {out}"
            );
        }
        // Roles, accessibility and the relative text BaseURLs survive; the granted location
        // BaseURLs at MPD level resolve them.
        assert!(out
            .contains(r#"<Role schemeIdUri="urn:mpeg:dash:role:2011" value="forced-subtitle"/>"#));
        assert!(out.contains(
            r#"<Accessibility schemeIdUri="urn:tva:metadata:cs:AudioPurposeCS:2007" value="1"/>"#
        ));
        assert!(out.contains("<BaseURL>text-fr-forced/text-fr-forced.mp4</BaseURL>"));
        assert!(out.contains(r#"codecs="stpp.ttml.im1t" lang="fr""#));
        assert!(out.contains(r#"<Initialization range="0-639"/>"#));
        assert!(out.contains(
            r#"<BaseURL serviceLocation="oca-1">http://10.0.0.1:8080/g/T1/t1/</BaseURL>"#
        ));
        // The thumbnails' image AdaptationSet is carried with its template and tile layout.
        assert!(out.contains(
            r#"<SegmentTemplate media="thumbnails/$Number%05d$.jpg" timescale="1000" duration="8000" startNumber="1"/>"#
        ));
        assert!(out.contains(
            r#"<EssentialProperty schemeIdUri="http://dashif.org/thumbnail_tile" value="2x2"/>"#
        ));
        assert_eq!(out.matches("<AdaptationSet ").count(), 6);
    }

    /// A title with keyframe-only trick play renditions (SD and HD) in a trick mode set serving
    /// the video set, as the packager writes it.
    const TRICK_MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT12.000S" minBufferTime="PT2.000S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="1280" maxHeight="720">
      <Representation id="video-360p" bandwidth="452853" codecs="avc1.64001e" width="640" height="360" frameRate="25" sar="1:1"/>
      <Representation id="video-720p" bandwidth="900000" codecs="avc1.64001f" width="1280" height="720" frameRate="25" sar="1:1"/>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="1280" maxHeight="720">
      <EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>
      <Representation id="trick-180p" bandwidth="40000" codecs="avc1.64000c" width="320" height="180" frameRate="1" sar="1:1" maxPlayoutRate="25" codingDependency="false"/>
      <Representation id="trick-720p" bandwidth="200000" codecs="avc1.64001f" width="1280" height="720" frameRate="1" sar="1:1" maxPlayoutRate="25" codingDependency="false"/>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" mimeType="audio/mp4" lang="en" segmentAlignment="true" startWithSAP="1">
      <Representation id="a1" bandwidth="128000" codecs="mp4a.40.2" audioSamplingRate="48000"/>
    </AdaptationSet>
  </Period>
</MPD>
"#;

    #[test]
    fn trick_mode_set_follows_the_tier_and_the_set_it_serves() {
        let l = locs();
        // SD: the SD trick rendition stays in its trick mode set, with the property; no HD.
        let sd = |id: &str| ["video-360p", "trick-180p", "a1"].contains(&id);
        let out = rewrite_mpd(TRICK_MPD, &sd, &l, "http://cp/s").unwrap();
        assert!(!out.contains("720p"), "{out}");
        assert!(out.contains(r#"<Representation id="trick-180p""#), "{out}");
        assert!(out.contains(
            r#"<EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>"#
        ));
        assert_eq!(out.matches("<AdaptationSet ").count(), 3, "{out}");
        // Every rendition: unchanged but for the locations.
        let all = |_: &str| true;
        let out = rewrite_mpd(TRICK_MPD, &all, &l, "http://cp/s").unwrap();
        assert!(out.contains(r#"<Representation id="trick-720p""#), "{out}");
        // A trick mode set whose video set is gone goes too: nothing left for it to serve.
        let no_video = |id: &str| ["trick-180p", "a1"].contains(&id);
        let out = rewrite_mpd(TRICK_MPD, &no_video, &l, "http://cp/s").unwrap();
        assert!(!out.contains("trick-180p"), "{out}");
        assert!(!out.contains("trickmode"), "{out}");
        assert_eq!(out.matches("<AdaptationSet ").count(), 1, "{out}");
    }

    /// An encrypted title as the packager writes it: one video AdaptationSet per key (SD, HD,
    /// FHD), each with its ContentProtection and an adaptation-set-switching property naming the
    /// others, a trick mode set per key serving its tier's set, one serving two sets, and audio.
    const MULTI_KEY_MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:cenc="urn:mpeg:cenc:2013" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT12.000S" minBufferTime="PT2.000S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="960" maxHeight="540">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="11111111-1111-1111-1111-111111111111"/>
      <ContentProtection schemeIdUri="urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" value="ClearKey1.0"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="1,2"/>
      <Representation id="video-360p" bandwidth="452853" codecs="avc1.64001e" width="640" height="360"/>
      <Representation id="video-540p" bandwidth="700000" codecs="avc1.64001f" width="960" height="540"/>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="1280" maxHeight="720">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="22222222-2222-2222-2222-222222222222"/>
      <ContentProtection schemeIdUri="urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" value="ClearKey1.0"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="0,2"/>
      <Representation id="video-720p" bandwidth="900000" codecs="avc1.64001f" width="1280" height="720"/>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="1920" maxHeight="1080">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="33333333-3333-3333-3333-333333333333"/>
      <ContentProtection schemeIdUri="urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" value="ClearKey1.0"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="0,1"/>
      <Representation id="video-1080p" bandwidth="2000000" codecs="avc1.640028" width="1920" height="1080"/>
    </AdaptationSet>
    <AdaptationSet id="3" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="320" maxHeight="180">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="11111111-1111-1111-1111-111111111111"/>
      <EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>
      <Representation id="trick-180p" bandwidth="40000" codecs="avc1.64000c" width="320" height="180" maxPlayoutRate="25" codingDependency="false"/>
    </AdaptationSet>
    <AdaptationSet id="4" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" par="16:9" maxWidth="1280" maxHeight="720">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="22222222-2222-2222-2222-222222222222"/>
      <EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="1 2"/>
      <Representation id="trick-720p" bandwidth="200000" codecs="avc1.64001f" width="1280" height="720" maxPlayoutRate="25" codingDependency="false"/>
    </AdaptationSet>
    <AdaptationSet id="5" contentType="audio" mimeType="audio/mp4" lang="en" segmentAlignment="true" startWithSAP="1">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="44444444-4444-4444-4444-444444444444"/>
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>
      <Representation id="audio-en" bandwidth="128000" codecs="mp4a.40.2" audioSamplingRate="48000"/>
    </AdaptationSet>
  </Period>
</MPD>
"#;

    /// The `<AdaptationSet ...>` element with `id`, up to its end.
    fn set_with_id<'a>(mpd: &'a str, id: &str) -> Option<&'a str> {
        let at = mpd.find(&format!("<AdaptationSet id=\"{id}\""))?;
        let end = at + mpd[at..].find("</AdaptationSet>")?;
        Some(&mpd[at..end])
    }

    #[test]
    fn sd_session_of_a_multi_key_title_keeps_the_sd_set_alone() {
        let l = locs();
        let sd = |id: &str| ["video-360p", "video-540p", "trick-180p", "audio-en"].contains(&id);
        let out = rewrite_mpd(MULTI_KEY_MPD, &sd, &l, "http://cp/s").unwrap();
        // The HD and FHD sets go whole, with their keys; so does the trick set serving them.
        for gone in ["video-720p", "video-1080p", "trick-720p", "2222", "3333"] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
        assert_eq!(out.matches("<AdaptationSet ").count(), 3, "{out}");
        // The SD set keeps its protection; with no set left to switch to, the property goes.
        let video = set_with_id(&out, "0").unwrap();
        assert!(video.contains(r#"cenc:default_KID="11111111-1111-1111-1111-111111111111""#));
        assert!(video.contains("ClearKey1.0"), "{video}");
        assert!(!out.contains("adaptation-set-switching"), "{out}");
        assert!(set_with_id(&out, "3").unwrap().contains(
            r#"<EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="0"/>"#
        ));
        // No blank line is left where the property stood.
        assert!(
            video.contains("ClearKey1.0\"/>\n      <Representation id=\"video-360p\""),
            "{video}"
        );
        let again = rewrite_mpd(&out, &sd, &l, "http://cp/s").unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn switching_properties_name_only_the_kept_sets() {
        let l = locs();
        // HD: the SD and HD sets stay and name each other only.
        let hd = |id: &str| !["video-1080p"].contains(&id);
        let out = rewrite_mpd(MULTI_KEY_MPD, &hd, &l, "http://cp/s").unwrap();
        assert!(
            !out.contains("video-1080p") && !out.contains("3333"),
            "{out}"
        );
        assert!(set_with_id(&out, "0").unwrap().contains(
            r#"<SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="1"/>"#
        ));
        assert!(set_with_id(&out, "1").unwrap().contains(
            r#"<SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="0"/>"#
        ));
        // The trick set serving HD and FHD now serves HD only.
        assert!(set_with_id(&out, "4").unwrap().contains(
            r#"<EssentialProperty schemeIdUri="http://dashif.org/guidelines/trickmode" value="1"/>"#
        ));
        assert_eq!(out.matches("<AdaptationSet ").count(), 5, "{out}");
        assert_eq!(rewrite_mpd(&out, &hd, &l, "http://cp/s").unwrap(), out);

        // Everything: every property as the packager wrote it.
        let all = |_: &str| true;
        let out = rewrite_mpd(MULTI_KEY_MPD, &all, &l, "http://cp/s").unwrap();
        for v in ["1,2", "0,2", "0,1"] {
            assert!(
                out.contains(&format!(
                    r#"<SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="{v}"/>"#
                )),
                "{v}: {out}"
            );
        }
        assert!(out.contains(r#"trickmode" value="1 2"/>"#), "{out}");

        // Without the SD set (a filter keeping the top tiers only), its trick set goes too and
        // the others no longer name set 0.
        let top = |id: &str| ["video-720p", "video-1080p", "trick-180p", "audio-en"].contains(&id);
        let out = rewrite_mpd(MULTI_KEY_MPD, &top, &l, "http://cp/s").unwrap();
        assert!(
            set_with_id(&out, "0").is_none() && set_with_id(&out, "3").is_none(),
            "{out}"
        );
        assert!(set_with_id(&out, "1")
            .unwrap()
            .contains(r#"2016" value="2"/>"#));
        assert!(set_with_id(&out, "2")
            .unwrap()
            .contains(r#"2016" value="1"/>"#));
        assert!(!out.contains("1111"), "{out}");
    }

    proptest::proptest! {
        /// For any subset of Representations and any number of locations: exactly the kept
        /// Representations remain, one BaseURL per location, empty AdaptationSets vanish, and
        /// rewriting the output again changes nothing.
        #[test]
        fn keeps_exactly_the_allowed(mask in 0u8..16, n in 1usize..5) {
            let ids = ["v360", "v720", "v2160", "a1"];
            let kept: Vec<&str> = ids.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, id)| *id).collect();
            let keep = |id: &str| kept.contains(&id);
            let locs: Vec<Location> = (0..n).map(|i| Location {
                id: format!("loc{i}"),
                base_url: format!("http://10.0.0.{i}/g/T/t1/"),
            }).collect();
            match rewrite_mpd(MPD, &keep, &locs, "http://cp/s") {
                Ok(out) => {
                    proptest::prop_assert_eq!(out.matches("<Representation ").count(), kept.len());
                    for id in ids {
                        proptest::prop_assert_eq!(out.contains(&format!("id=\"{id}\"")), kept.contains(&id));
                    }
                    proptest::prop_assert_eq!(out.matches("<BaseURL serviceLocation=").count(), n);
                    proptest::prop_assert_eq!(out.contains("AdaptationSet id=\"1\""), kept.contains(&"v2160"));
                    let again = rewrite_mpd(&out, &keep, &locs, "http://cp/s").unwrap();
                    proptest::prop_assert_eq!(again, out);
                }
                Err(_) => proptest::prop_assert!(kept.is_empty()),
            }
        }
    }

    #[test]
    fn refuses_broken_documents() {
        let keep = |_: &str| true;
        let l = locs();
        assert!(rewrite_mpd("<MPD><Period>", &keep, &l, "s").is_err());
        assert!(rewrite_mpd("<NotMPD/>", &keep, &l, "s").is_err());
        assert!(rewrite_mpd(
            "<MPD><Period><AdaptationSet><Representation bandwidth=\"1\"/></AdaptationSet></Period></MPD>",
            &keep,
            &l,
            "s"
        )
        .is_err());
        assert!(rewrite_mpd(
            "<!DOCTYPE x [<!ENTITY a \"b\">]><MPD></MPD>",
            &keep,
            &l,
            "s"
        )
        .is_err());
        let none = |_: &str| false;
        assert!(rewrite_mpd(MPD, &none, &l, "s").is_err());
    }
}
