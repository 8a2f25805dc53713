//! HLS master playlist rewriting (RFC 8216 plus Apple's content steering).
//!
//! Every variant (`#EXT-X-STREAM-INF` + URI line), I-frame and image variant and rendition
//! (`#EXT-X-MEDIA`) is repeated once per pathway, with `PATHWAY-ID`, an absolute URI on that
//! pathway's appliance, and rendition-group ids suffixed with the pathway (`audio` becomes
//! `audio-<pathway>`) so each pathway's variants reference their own audio group. Entries whose
//! rendition the session may not play are dropped. Other tags are kept once, in order, before
//! the steering tag.

use super::{is_safe_relative, rendition_of, Location, ManifestError};

/// Longest master playlist accepted, bytes.
pub const MAX_PLAYLIST: usize = 1 << 20;

/// A parsed attribute list: `(name, raw value)` pairs, values kept with their quotes.
fn parse_attrs(s: &str, line: usize) -> Result<Vec<(String, String)>, ManifestError> {
    let bad = |reason: &str| ManifestError::Hls {
        line,
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..]
            .find('=')
            .map(|p| p + i)
            .ok_or_else(|| bad("attribute without '='"))?;
        let name = &s[i..eq];
        if name.is_empty()
            || !name
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(bad("bad attribute name"));
        }
        let mut j = eq + 1;
        if b.get(j) == Some(&b'"') {
            let close = s[j + 1..]
                .find('"')
                .ok_or_else(|| bad("unterminated quoted string"))?;
            j = j + 1 + close + 1;
        } else {
            while j < b.len() && b[j] != b',' {
                j += 1;
            }
        }
        out.push((name.to_owned(), s[eq + 1..j].to_owned()));
        if j < b.len() {
            if b[j] != b',' {
                return Err(bad("expected ',' after attribute value"));
            }
            j += 1;
        }
        i = j;
    }
    Ok(out)
}

fn unquote(v: &str) -> Option<&str> {
    v.strip_prefix('"')?.strip_suffix('"')
}

fn join_attrs(attrs: &[(String, String)]) -> String {
    attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

const GROUP_ATTRS: [&str; 4] = ["AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS"];

/// Tags naming a variant playlist in their `URI` attribute: I-frame (trick play) playlists and
/// image (thumbnail) playlists. Each is filtered by the rendition its URI is in and repeated per
/// pathway with a granted absolute URI, like `#EXT-X-STREAM-INF`.
const URI_VARIANTS: [&str; 2] = ["#EXT-X-I-FRAME-STREAM-INF", "#EXT-X-IMAGE-STREAM-INF"];

enum Entry {
    /// A tag kept once, verbatim.
    Other(String),
    /// `#EXT-X-MEDIA` attributes.
    Media(Vec<(String, String)>),
    /// `#EXT-X-STREAM-INF` attributes and its URI.
    Variant(Vec<(String, String)>, String),
    /// `#EXT-X-I-FRAME-STREAM-INF` or `#EXT-X-IMAGE-STREAM-INF` (the tag without its `:`)
    /// and its attributes: a variant whose playlist is named by its `URI` attribute.
    UriVariant(&'static str, Vec<(String, String)>),
}

/// Rewrites a master playlist. `keep(rendition_id)` says whether a rendition may be played;
/// `steering_uri` is the steering server's URL. Fails on anything that is not a well-formed
/// master playlist with relative URIs.
pub fn rewrite_master(
    text: &str,
    keep: &dyn Fn(&str) -> bool,
    locations: &[Location],
    steering_uri: &str,
) -> Result<String, ManifestError> {
    if text.len() > MAX_PLAYLIST {
        return Err(ManifestError::Hls {
            line: 0,
            reason: format!("longer than {MAX_PLAYLIST} bytes"),
        });
    }
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => {
            return Err(ManifestError::Hls {
                line: 1,
                reason: "must start with #EXTM3U".into(),
            })
        }
    }
    let mut entries = Vec::new();
    let mut pending: Option<(usize, Vec<(String, String)>)> = None;
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        if let Some((vn, attrs)) = pending.take() {
            if line.starts_with('#') {
                return Err(ManifestError::Hls {
                    line: vn,
                    reason: "#EXT-X-STREAM-INF is not followed by a URI".into(),
                });
            }
            if !is_safe_relative(line) {
                return Err(ManifestError::Hls {
                    line: n,
                    reason: format!("variant URI {line:?} must be a relative path"),
                });
            }
            entries.push(Entry::Variant(attrs, line.to_owned()));
            continue;
        }
        let check_uri = |attrs: &[(String, String)]| -> Result<(), ManifestError> {
            if let Some((_, v)) = attrs.iter().find(|(k, _)| k == "URI") {
                let u = unquote(v).unwrap_or("");
                if !is_safe_relative(u) {
                    return Err(ManifestError::Hls {
                        line: n,
                        reason: format!("URI {v} must be a quoted relative path"),
                    });
                }
            }
            Ok(())
        };
        if let Some(rest) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            pending = Some((n, parse_attrs(rest, n)?));
        } else if let Some(rest) = line.strip_prefix("#EXT-X-MEDIA:") {
            let a = parse_attrs(rest, n)?;
            check_uri(&a)?;
            entries.push(Entry::Media(a));
        } else if let Some((tag, rest)) = URI_VARIANTS
            .iter()
            .find_map(|t| Some((*t, line.strip_prefix(t)?.strip_prefix(':')?)))
        {
            let a = parse_attrs(rest, n)?;
            check_uri(&a)?;
            entries.push(Entry::UriVariant(tag, a));
        } else if line.starts_with("#EXT-X-CONTENT-STEERING") {
            // Replaced by ours.
        } else if line.starts_with("#EXTINF") || line.starts_with("#EXT-X-TARGETDURATION") {
            return Err(ManifestError::Hls {
                line: n,
                reason: "a media playlist tag in a master playlist".into(),
            });
        } else if line.starts_with('#') {
            entries.push(Entry::Other(line.to_owned()));
        } else {
            return Err(ManifestError::Hls {
                line: n,
                reason: format!("URI {line:?} without #EXT-X-STREAM-INF"),
            });
        }
    }
    if let Some((vn, _)) = pending {
        return Err(ManifestError::Hls {
            line: vn,
            reason: "#EXT-X-STREAM-INF is not followed by a URI".into(),
        });
    }
    let allowed = |attrs: &[(String, String)], uri: Option<&str>| -> bool {
        let uri = uri.or_else(|| {
            attrs
                .iter()
                .find(|(k, _)| k == "URI")
                .and_then(|(_, v)| unquote(v))
        });
        uri.and_then(rendition_of).is_none_or(keep)
    };

    let mut out = String::with_capacity(text.len() * (locations.len() + 1));
    out.push_str("#EXTM3U\n");
    for e in &entries {
        if let Entry::Other(l) = e {
            out.push_str(l);
            out.push('\n');
        }
    }
    if let Some(first) = locations.first() {
        out.push_str(&format!(
            "#EXT-X-CONTENT-STEERING:SERVER-URI=\"{steering_uri}\",PATHWAY-ID=\"{}\"\n",
            first.id
        ));
    }
    let retarget = |attrs: &[(String, String)], loc: &Location| -> Vec<(String, String)> {
        attrs
            .iter()
            .map(|(k, v)| {
                if k == "URI" {
                    let u = unquote(v).unwrap_or("");
                    (k.clone(), format!("\"{}{}\"", loc.base_url, u))
                } else if (k == "GROUP-ID" || GROUP_ATTRS.contains(&k.as_str()))
                    && v.starts_with('"')
                {
                    let g = unquote(v).unwrap_or("");
                    (k.clone(), format!("\"{g}-{}\"", loc.id))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    };
    let mut kept_variants = 0;
    for loc in locations {
        for e in &entries {
            if let Entry::Media(a) = e {
                if allowed(a, None) {
                    out.push_str(&format!("#EXT-X-MEDIA:{}\n", join_attrs(&retarget(a, loc))));
                }
            }
        }
        for e in &entries {
            match e {
                Entry::Variant(a, uri) if allowed(a, Some(uri)) => {
                    kept_variants += 1;
                    let mut a = retarget(a, loc);
                    a.retain(|(k, _)| k != "PATHWAY-ID");
                    a.push(("PATHWAY-ID".into(), format!("\"{}\"", loc.id)));
                    out.push_str(&format!(
                        "#EXT-X-STREAM-INF:{}\n{}{}\n",
                        join_attrs(&a),
                        loc.base_url,
                        uri
                    ));
                }
                Entry::UriVariant(tag, a) if allowed(a, None) => {
                    let mut a = retarget(a, loc);
                    a.retain(|(k, _)| k != "PATHWAY-ID");
                    a.push(("PATHWAY-ID".into(), format!("\"{}\"", loc.id)));
                    out.push_str(&format!("{tag}:{}\n", join_attrs(&a)));
                }
                _ => {}
            }
        }
    }
    if kept_variants == 0 && !locations.is_empty() {
        return Err(ManifestError::Hls {
            line: 0,
            reason: "no variant is left for this session".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"a1/playlist.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=500000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"aud\"\n\
v360/playlist.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"aud\"\n\
v720/playlist.m3u8\n";

    fn locs() -> Vec<Location> {
        vec![
            Location {
                id: "oca-1".into(),
                base_url: "http://10.0.0.1:8080/g/TOKEN1/t1/".into(),
            },
            Location {
                id: "oca-2".into(),
                base_url: "http://10.0.0.2:8080/g/TOKEN2/t1/".into(),
            },
        ]
    }

    #[test]
    fn filters_and_repeats_per_pathway() {
        let keep = |r: &str| r != "v720";
        let out = rewrite_master(MASTER, &keep, &locs(), "http://cp/steer").unwrap();
        assert!(out.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://cp/steer\",PATHWAY-ID=\"oca-1\"\n"), "{out}");
        assert!(!out.contains("v720"));
        assert_eq!(out.matches("#EXT-X-STREAM-INF").count(), 2);
        assert!(out.contains("#EXT-X-STREAM-INF:BANDWIDTH=500000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"aud-oca-2\",PATHWAY-ID=\"oca-2\"\nhttp://10.0.0.2:8080/g/TOKEN2/t1/v360/playlist.m3u8\n"), "{out}");
        assert!(out.contains("GROUP-ID=\"aud-oca-1\""));
        assert!(out.contains("URI=\"http://10.0.0.1:8080/g/TOKEN1/t1/a1/playlist.m3u8\""));
    }

    proptest::proptest! {
        /// For any subset of renditions and any number of pathways: every kept variant appears
        /// once per pathway, every URI is absolute on one of the pathways, nothing dropped leaks.
        #[test]
        fn variants_times_pathways(keep360 in proptest::bool::ANY, keep720 in proptest::bool::ANY, n in 1usize..5) {
            let locs: Vec<Location> = (0..n).map(|i| Location {
                id: format!("p{i}"),
                base_url: format!("http://10.0.0.{i}:80/g/T{i}/t1/"),
            }).collect();
            let keep = |r: &str| match r { "v360" => keep360, "v720" => keep720, _ => true };
            let kept = keep360 as usize + keep720 as usize;
            match rewrite_master(MASTER, &keep, &locs, "http://cp/s") {
                Ok(out) => {
                    proptest::prop_assert!(kept > 0);
                    proptest::prop_assert_eq!(out.matches("#EXT-X-STREAM-INF").count(), kept * n);
                    proptest::prop_assert_eq!(out.matches("#EXT-X-MEDIA").count(), n);
                    for line in out.lines().filter(|l| !l.starts_with('#')) {
                        proptest::prop_assert!(locs.iter().any(|l| line.starts_with(&l.base_url)), "{}", line);
                    }
                    proptest::prop_assert_eq!(out.contains("v360"), keep360);
                    proptest::prop_assert_eq!(out.contains("v720"), keep720);
                }
                Err(_) => proptest::prop_assert_eq!(kept, 0),
            }
        }
    }

    /// A catalogue title as the packager writes it: two audio languages (one audio
    /// description), subtitles in two languages (one forced), I-frame and image playlists per
    /// video rendition.
    const CATALOGUE_MASTER: &str = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-mp4a\",NAME=\"audio-en\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio-en/index.m3u8\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-mp4a\",NAME=\"audio-fr\",LANGUAGE=\"fr\",DEFAULT=NO,AUTOSELECT=YES,CHARACTERISTICS=\"public.accessibility.describes-video\",CHANNELS=\"6\",URI=\"audio-fr/index.m3u8\"\n\
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"text-en\",LANGUAGE=\"en\",DEFAULT=NO,AUTOSELECT=YES,URI=\"text-en/index.m3u8\"\n\
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"text-fr-forced\",LANGUAGE=\"fr\",DEFAULT=NO,AUTOSELECT=YES,FORCED=YES,URI=\"text-fr-forced/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=500000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio-mp4a\",SUBTITLES=\"subs\"\n\
video-360p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"audio-mp4a\",SUBTITLES=\"subs\"\n\
video-720p/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=16498,CODECS=\"avc1.64001e\",RESOLUTION=640x360,URI=\"video-360p/iframes.m3u8\"\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=30000,CODECS=\"avc1.64001f\",RESOLUTION=1280x720,URI=\"video-720p/iframes.m3u8\"\n\
#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=8000,RESOLUTION=640x360,CODECS=\"jpeg\",URI=\"thumbs-360p/index.m3u8\"\n\
#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=9000,RESOLUTION=1280x720,CODECS=\"jpeg\",URI=\"video-720p/thumbs.m3u8\"\n";

    #[test]
    fn sd_session_gets_text_iframe_and_image_playlists_granted_never_hd() {
        // What entitlement allows an SD-only device: every rendition without a tier (audio,
        // text, thumbnails) and the SD video.
        let allowed = [
            "audio-en",
            "audio-fr",
            "text-en",
            "text-fr-forced",
            "thumbs-360p",
            "video-360p",
        ];
        let keep = |r: &str| allowed.contains(&r);
        let l = locs();
        let out = rewrite_master(CATALOGUE_MASTER, &keep, &l, "http://cp/steer").unwrap();
        assert!(!out.contains("video-720p"), "{out}");
        assert!(!out.contains("1280x720"), "{out}");
        for loc in &l {
            let b = &loc.base_url;
            for uri in [
                "audio-en/index.m3u8",
                "audio-fr/index.m3u8",
                "text-en/index.m3u8",
                "text-fr-forced/index.m3u8",
                "video-360p/iframes.m3u8",
                "thumbs-360p/index.m3u8",
            ] {
                assert_eq!(
                    out.matches(&format!("URI=\"{b}{uri}\"")).count(),
                    1,
                    "{uri} on {}: {out}",
                    loc.id
                );
            }
            assert!(out.contains(&format!("SUBTITLES=\"subs-{}\"", loc.id)));
            assert!(out.contains(&format!(
                "TYPE=SUBTITLES,GROUP-ID=\"subs-{}\",NAME=\"text-fr-forced\",LANGUAGE=\"fr\",DEFAULT=NO,AUTOSELECT=YES,FORCED=YES,URI=\"{b}text-fr-forced/index.m3u8\"",
                loc.id
            )));
            assert!(out.contains(&format!(
                "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=16498,CODECS=\"avc1.64001e\",RESOLUTION=640x360,URI=\"{b}video-360p/iframes.m3u8\",PATHWAY-ID=\"{}\"",
                loc.id
            )));
        }
        // No relative URI is left anywhere: each one is on a pathway, so carries a grant.
        for line in out.lines() {
            if let Some(i) = line.find("URI=\"") {
                let uri = &line[i + 5..];
                if line.starts_with("#EXT-X-CONTENT-STEERING") {
                    continue;
                }
                assert!(l.iter().any(|loc| uri.starts_with(&loc.base_url)), "{line}");
            }
        }
        assert_eq!(out.matches("#EXT-X-IMAGE-STREAM-INF").count(), l.len());
        assert_eq!(out.matches("#EXT-X-I-FRAME-STREAM-INF").count(), l.len());
        // An HD device gets the HD I-frame and image playlists too.
        let all = |_: &str| true;
        let hd = rewrite_master(CATALOGUE_MASTER, &all, &l, "http://cp/steer").unwrap();
        assert_eq!(hd.matches("#EXT-X-I-FRAME-STREAM-INF").count(), 2 * l.len());
        assert!(hd.contains(&format!("URI=\"{}video-720p/thumbs.m3u8\"", l[1].base_url)));
    }

    #[test]
    fn trick_play_iframe_variants_follow_the_tier() {
        // The packager lists keyframe-only trick play renditions as I-frame variants only.
        let master = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-STREAM-INF:BANDWIDTH=500000,CODECS=\"avc1.64001e\",RESOLUTION=640x360\n\
video-360p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS=\"avc1.64001f\",RESOLUTION=1280x720\n\
video-720p/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=16498,CODECS=\"avc1.64001e\",RESOLUTION=640x360,URI=\"video-360p/iframes.m3u8\"\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=40000,CODECS=\"avc1.64000c\",RESOLUTION=320x180,URI=\"trick-180p/iframes.m3u8\"\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=200000,CODECS=\"avc1.64001f\",RESOLUTION=1280x720,URI=\"trick-720p/iframes.m3u8\"\n";
        let l = locs();
        let sd = |r: &str| ["video-360p", "trick-180p"].contains(&r);
        let out = rewrite_master(master, &sd, &l, "http://cp/steer").unwrap();
        assert!(!out.contains("720"), "{out}");
        for loc in &l {
            assert!(out.contains(&format!(
                "RESOLUTION=320x180,URI=\"{}trick-180p/iframes.m3u8\",PATHWAY-ID=\"{}\"",
                loc.base_url, loc.id
            )));
        }
        assert_eq!(
            out.matches("#EXT-X-I-FRAME-STREAM-INF").count(),
            2 * l.len()
        );
    }

    #[test]
    fn refuses_malformed_playlists() {
        let keep = |_: &str| true;
        let l = locs();
        for (bad, line) in [
            ("#EXT-X-VERSION:7\n", 1),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", 2),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://evil/x.m3u8\n",
                3,
            ),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n../x.m3u8\n", 3),
            ("#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"/abs\"\n", 2),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"x\n", 2),
            ("#EXTM3U\nv/x.m3u8\n", 2),
        ] {
            match rewrite_master(bad, &keep, &l, "s") {
                Err(ManifestError::Hls { line: got, .. }) => assert_eq!(got, line, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let none = |_: &str| false;
        assert!(rewrite_master(MASTER, &none, &l, "s").is_err());
    }
}
