//! The file-system edge of the packager: parses the inputs, plans segments, writes every output
//! file into a temporary directory inside the output directory (hashing each file as it is
//! written), writes `catalog.json` last and renames the directory into place. On any error the
//! temporary directory is removed, so a title directory either is complete or does not exist.
//!
//! Memory stays bounded whatever the input size: only sample tables and fragment headers are
//! held; sample bytes stream from input to output through one fixed buffer per worker.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use protocol::catalog::{
    self, CatalogEntry, FileEntry, Manifests, PackagingMode, Rendition, Tier, TrackKind,
};
use sha2::{Digest, Sha256};

use crate::bmff::{self, Track};
use crate::cmaf::{self, Fragment};
use crate::encrypt::{self, EncryptOptions, Subsample, TrackCrypto};
use crate::error::{Error, Result};
use crate::manifest::{self, dash, hls, IFrameRef, RenditionView, SegRef};
use crate::segment;
use crate::text::{self, TextFormat, TextInput, WebVtt};
use crate::thumbs::{self, ImageView, ThumbnailInput};

/// Size of the copy buffer of each writer (see [`HashedFile`]).
const COPY_BUFFER: usize = 128 * 1024;
/// Longest accepted target segment duration, milliseconds.
pub const MAX_SEGMENT_MS: u64 = 60_000;

/// What to package.
#[derive(Debug, Clone)]
pub struct Options {
    /// Title id: the name of the directory created in `out_dir`.
    pub title: String,
    /// Output directory; the title goes to `out_dir/<title>/`.
    pub out_dir: PathBuf,
    /// On-demand (one file per track) or segmented.
    pub mode: PackagingMode,
    /// Target segment duration, milliseconds.
    pub segment_duration_ms: u64,
    /// Input MP4 files.
    pub inputs: Vec<PathBuf>,
    /// Further audio inputs with a language and a role (`--audio LANG:ROLE:PATH`); their audio
    /// tracks become renditions alongside those of `inputs`.
    pub audio: Vec<AudioInput>,
    /// Text tracks (`--text LANG:ROLE:PATH`, WebVTT or IMSC1/TTML), segmented along the video.
    pub text: Vec<TextInput>,
    /// Thumbnails (`--thumbnails`): JPEG tile grids copied into `thumbnails/`.
    pub thumbnails: Option<ThumbnailInput>,
    /// Keyframe-only video inputs (`--trick-play`), in the ladder's codec: trick play
    /// renditions, segmented along the video (a DASH trick mode AdaptationSet, an HLS I-frame
    /// playlist), never offered for normal playback.
    pub trick_play: Vec<PathBuf>,
    /// Common Encryption with these keys; `None` writes clear output.
    pub encryption: Option<EncryptOptions>,
}

/// The role of an audio rendition (DASH `Role`, HLS `CHARACTERISTICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioRole {
    /// The programme's main audio.
    #[default]
    Main,
    /// A commentary track.
    Commentary,
    /// Audio description for blind and partially sighted viewers.
    Description,
}

impl AudioRole {
    /// `main`, `commentary` or `description`.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioRole::Main => "main",
            AudioRole::Commentary => "commentary",
            AudioRole::Description => "description",
        }
    }

    /// Parses `main`, `commentary` or `description`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "main" => Some(AudioRole::Main),
            "commentary" => Some(AudioRole::Commentary),
            "description" => Some(AudioRole::Description),
            _ => None,
        }
    }
}

/// One `--audio LANG:ROLE:PATH` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInput {
    /// Language (BCP 47 / ISO 639); `None` takes the input's `elng` or `mdhd` language.
    pub language: Option<String>,
    /// Role of every audio track of the file.
    pub role: AudioRole,
    /// The MP4 file; its video tracks, if any, are ignored.
    pub path: PathBuf,
}

impl AudioInput {
    /// Parses `LANG:ROLE:PATH` (`LANG` may be empty or `-` to read it from the file).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Options(format!(
                "--audio {spec:?}: {why} (expected LANG:ROLE:PATH, role main|commentary|description)"
            ))
        };
        let mut parts = spec.splitn(3, ':');
        let (lang, role, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), Some(p)) if !p.is_empty() => (l, r, p),
            _ => return Err(bad("missing a part")),
        };
        let role = AudioRole::parse(role).ok_or_else(|| bad(&format!("unknown role {role:?}")))?;
        let language = match lang {
            "" | "-" => None,
            l if is_language_tag(l) => Some(l.to_string()),
            l => {
                return Err(bad(&format!(
                    "language {l:?} is not a BCP 47 tag such as en or pt-BR"
                )))
            }
        };
        Ok(AudioInput {
            language,
            role,
            path: PathBuf::from(path),
        })
    }
}

/// A plausible BCP 47 tag: 2-8 letter primary subtag, then 1-8 alphanumeric subtags.
pub fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or_default();
    (2..=8).contains(&first.len())
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Progress callback: `(bytes of sample data copied, total)`. Called from worker threads.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// One rendition ready to be written.
struct Planned {
    id: String,
    track: Track,
    init: Vec<u8>,
    sidx: Option<Vec<u8>>,
    fragments: Vec<Fragment>,
    /// The fragments of each segment: one each, but one per frame (CMAF chunks) for a trick
    /// play rendition.
    groups: Vec<std::ops::Range<usize>>,
    view: RenditionView,
    /// Encryption of this track and the subsample map of each of its samples.
    crypto: Option<(TrackCrypto, Vec<Vec<Subsample>>)>,
}

/// What keys the tracks of `inputs` need ([`encrypt::keys_needed`]): whether there is audio,
/// and the video tiers present (sorted). Reads each input's box tree, not its samples.
pub fn keys_needed(inputs: &[PathBuf]) -> Result<(bool, Vec<Tier>)> {
    let mut tracks = Vec::new();
    for input in inputs {
        tracks.extend(bmff::parse_file(input)?);
    }
    Ok(encrypt::keys_needed(&tracks))
}

/// Packages `opts.inputs` into `opts.out_dir/<title>/` and returns the catalog entry written
/// ([`package_with_warnings`] without the warnings).
pub fn package(opts: &Options, progress: Option<Progress<'_>>) -> Result<CatalogEntry> {
    package_with_warnings(opts, progress).map(|(entry, _)| entry)
}

/// [`package`], also returning warnings about the output (e.g. a segment much longer than the
/// requested duration because the video renditions share few keyframes).
pub fn package_with_warnings(
    opts: &Options,
    progress: Option<Progress<'_>>,
) -> Result<(CatalogEntry, Vec<String>)> {
    if !catalog::is_valid_segment(&opts.title) {
        return Err(Error::Options(format!(
            "--title {:?} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'",
            opts.title
        )));
    }
    if opts.segment_duration_ms == 0 || opts.segment_duration_ms > MAX_SEGMENT_MS {
        return Err(Error::Options(format!(
            "--segment-duration must be above 0 and at most {} s",
            MAX_SEGMENT_MS / 1000
        )));
    }
    if opts.inputs.is_empty() && opts.audio.is_empty() {
        return Err(Error::Options("no input files".into()));
    }
    if let Some(e) = &opts.encryption {
        e.keys
            .validate()
            .map_err(|err| Error::Keys(err.to_string()))?;
    }
    let final_dir = opts.out_dir.join(&opts.title);
    if final_dir.exists() {
        return Err(Error::Options(format!(
            "{} already exists: remove it or choose another --title",
            final_dir.display()
        )));
    }
    let (planned, mut warnings) = plan(opts)?;
    let texts = plan_texts(opts, &planned)?;
    let images = match &opts.thumbnails {
        Some(t) => {
            let title_ms = planned
                .iter()
                .filter(|p| !p.view.trick)
                .map(|p| (p.view.seconds() * 1000.0).round() as u64)
                .max()
                .unwrap_or(0);
            let (view, warning) = thumbs::plan(t, title_ms)?;
            if planned.iter().any(|p| p.id == view.id) {
                return Err(Error::Options(format!(
                    "--thumbnails: rendition id {:?} is already used by an input: rename that file",
                    view.id
                )));
            }
            warnings.extend(warning);
            Some(view)
        }
        None => None,
    };

    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let tmp = opts
        .out_dir
        .join(format!(".{}.partial-{}", opts.title, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result =
        write_title(opts, &planned, &texts, images.as_ref(), &tmp, progress).and_then(|entry| {
            std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
            Ok(entry)
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|entry| (entry, warnings))
}

/// A text track ready to be written.
struct PlannedText {
    view: manifest::TextView,
    /// The cues as WebVTT (HLS segments and the sidecar; converted from TTML input).
    vtt: WebVtt,
    /// Segment boundaries, milliseconds.
    bounds: Vec<u64>,
    /// The DASH MP4 track (`wvtt`, or `stpp` for TTML input).
    mp4: text::mp4::TextMp4,
}

/// Reads and checks every `--text` input against the title (cue times within its duration)
/// and lines its segments up with the first video rendition's (else the first rendition's).
fn plan_texts(opts: &Options, planned: &[Planned]) -> Result<Vec<PlannedText>> {
    if opts.text.is_empty() {
        return Ok(Vec::new());
    }
    let reference = planned
        .iter()
        .find(|p| p.view.kind == TrackKind::Video && !p.view.trick)
        .or(planned.first())
        .ok_or_else(|| Error::Options("text tracks need a video or audio rendition".into()))?;
    let rv = &reference.view;
    let duration_ms = planned
        .iter()
        .filter(|p| !p.view.trick)
        .map(|p| (p.view.seconds() * 1000.0).ceil() as u64)
        .max()
        .unwrap_or(0);
    let ts = i128::from(rv.timescale);
    let bounds: Vec<u64> = rv
        .segments
        .iter()
        .map(|s| u64::try_from((i128::from(s.start) * 1000 + ts / 2) / ts).unwrap_or(0))
        .collect();
    let durations: Vec<f64> = rv
        .segments
        .iter()
        .map(|s| s.duration as f64 / f64::from(rv.timescale))
        .collect();
    let mut out: Vec<PlannedText> = Vec::new();
    for t in &opts.text {
        let ids = rendition_ids(&t.path, &[])?;
        let id = ids.into_iter().next().unwrap_or_default();
        if planned.iter().any(|p| p.id == id) || out.iter().any(|o| o.view.id == id) {
            return Err(Error::Options(format!(
                "--text {}: rendition id {id:?} (the file stem) is already used: rename the file",
                t.path.display()
            )));
        }
        let bytes = std::fs::read(&t.path).map_err(|e| Error::io(&t.path, e))?;
        let body = String::from_utf8(bytes).map_err(|e| Error::Text {
            file: t.path.clone(),
            line: 0,
            cue: "header".into(),
            reason: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        })?;
        let (vtt, ttml) = match t.format {
            TextFormat::WebVtt => (text::parse_webvtt(&t.path, &body, duration_ms)?, None),
            TextFormat::Ttml => {
                let doc = text::ttml::parse(&t.path, &body, duration_ms)?;
                (doc.to_webvtt(), Some(doc))
            }
        };
        let language = match (&t.language, ttml.as_ref().and_then(|d| d.language.clone())) {
            (Some(l), _) => l.clone(),
            (None, Some(l)) if is_language_tag(&l) => l,
            (None, Some(l)) => {
                return Err(Error::Text {
                    file: t.path.clone(),
                    line: 1,
                    cue: "document".into(),
                    reason: format!(
                        "xml:lang=\"{l}\" on <tt> is not a BCP 47 tag such as en or pt-BR: give LANG in --text"
                    ),
                })
            }
            (None, None) => {
                return Err(Error::Text {
                    file: t.path.clone(),
                    line: 1,
                    cue: "document".into(),
                    reason: "no language: <tt> has no xml:lang; give LANG in --text LANG:ROLE:PATH"
                        .into(),
                })
            }
        };
        let segs = text::segments(&vtt, &bounds);
        let src = match &ttml {
            Some(d) => text::mp4::TextSource::Ttml(d),
            None => text::mp4::TextSource::WebVtt(&vtt),
        };
        let mp4 = text::mp4::build(src, &language, &bounds, duration_ms, opts.mode)?;
        let (file, init_range, index_range) = match &mp4.sidx {
            Some(sidx) => (
                format!("{id}.mp4"),
                Some((0, mp4.init.len() as u64)),
                Some((mp4.init.len() as u64, sidx.len() as u64)),
            ),
            None => ("init.mp4".to_string(), None, None),
        };
        let view = manifest::TextView {
            id: id.clone(),
            language,
            role: t.role,
            segments: (0..segs.len())
                .map(|k| (text_segment_file(k), durations[k]))
                .collect(),
            sizes: segs.iter().map(|s| s.len() as u64).collect(),
            whole_file: format!("{id}.vtt"),
            mp4: manifest::TextMp4View {
                codecs: src.codecs().to_string(),
                mode: opts.mode,
                file,
                init_range,
                index_range,
                segments: mp4.segments.clone(),
                sizes: mp4.fragments.iter().map(|f| f.len() as u64).collect(),
            },
        };
        out.push(PlannedText {
            view,
            vtt,
            bounds: bounds.clone(),
            mp4,
        });
    }
    Ok(out)
}

/// Text segment file name (`00001.vtt`, numbers from 1).
fn text_segment_file(k: usize) -> String {
    format!("{:05}.vtt", k + 1)
}

fn rendition_ids(path: &Path, tracks: &[Track]) -> Result<Vec<String>> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let ids: Vec<String> = if tracks.len() <= 1 {
        vec![stem.clone()]
    } else {
        let mut counts = [0usize; 2];
        tracks
            .iter()
            .map(|t| {
                let (k, name) = match t.kind {
                    TrackKind::Video => (0, "video"),
                    TrackKind::Audio | TrackKind::Text | TrackKind::Image => (1, "audio"),
                };
                counts[k] += 1;
                let same = tracks.iter().filter(|o| o.kind == t.kind).count();
                if same == 1 {
                    format!("{stem}-{name}")
                } else {
                    format!("{stem}-{name}{}", counts[k])
                }
            })
            .collect()
    };
    for id in &ids {
        if !catalog::is_valid_segment(id) {
            return Err(Error::Options(format!(
                "{}: rendition id {id:?} (from the file name) must be 1-128 characters of [A-Za-z0-9._-], not starting with '.': rename the file",
                path.display()
            )));
        }
    }
    Ok(ids)
}

/// Reads and checks every `--trick-play` input: its video tracks (each a rendition, ids from
/// the file stem like any input), every sample a sync sample, the codec (sample entry type) of
/// one of the ladder's video renditions, an id no other rendition uses. `ladder` holds the
/// title's other renditions.
fn trick_tracks(opts: &Options, ladder: &[(String, Track)]) -> Result<Vec<(String, Track)>> {
    let mut out: Vec<(String, Track)> = Vec::new();
    for path in &opts.trick_play {
        let ts: Vec<Track> = bmff::parse_file(path)?
            .into_iter()
            .filter(|t| t.kind == TrackKind::Video)
            .collect();
        if ts.is_empty() {
            return Err(Error::TrickPlay {
                file: path.clone(),
                reason: "the file has no video track".into(),
            });
        }
        let ids = rendition_ids(path, &ts)?;
        for (id, t) in ids.into_iter().zip(ts) {
            if let Some(other) = ladder
                .iter()
                .chain(out.iter())
                .find(|(i, _)| *i == id)
                .map(|(_, o)| o)
            {
                return Err(Error::Options(format!(
                    "rendition id {id:?} comes from both {} and {}: rename one file",
                    other.file.display(),
                    path.display()
                )));
            }
            check_trick(&t, ladder)?;
            out.push((id, t));
        }
    }
    Ok(out)
}

/// A trick play track holds only sync samples, in the codec of one of the ladder's video
/// renditions (the same sample entry type, so it joins that AdaptationSet's trick mode set and
/// plays in the same decoder).
fn check_trick(t: &Track, ladder: &[(String, Track)]) -> Result<()> {
    let bad = |reason: String| Error::TrickPlay {
        file: t.file.clone(),
        reason,
    };
    if t.samples.is_empty() {
        return Err(bad("the video track has no samples".into()));
    }
    let videos: Vec<&Track> = ladder
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.kind == TrackKind::Video)
        .collect();
    if videos.is_empty() {
        return Err(bad(
            "the title has no video rendition for it to serve (give the ladder as inputs)".into(),
        ));
    }
    if !videos.iter().any(|v| v.entry.fourcc == t.entry.fourcc) {
        let mut ladder_codecs: Vec<String> = Vec::new();
        for v in &videos {
            let c = format!(
                "{} ({})",
                bmff::reader::fourcc_str(&v.entry.fourcc),
                v.entry.codec
            );
            if !ladder_codecs.contains(&c) {
                ladder_codecs.push(c);
            }
        }
        return Err(bad(format!(
            "its codec {} ({}) is not the video ladder's: {}. Encode it with the ladder's codec",
            bmff::reader::fourcc_str(&t.entry.fourcc),
            t.entry.codec,
            ladder_codecs.join(", ")
        )));
    }
    if let Some(i) = t.samples.iter().position(|s| !s.sync) {
        return Err(bad(format!(
            "sample {} of {} (decode order, from 1, at {:.3} s) is not a sync sample: a trick play rendition holds keyframes only (encode it with every frame a keyframe, e.g. ffmpeg -g 1)",
            i + 1,
            t.samples.len(),
            t.samples[i].dts as f64 / f64::from(t.timescale.max(1))
        )));
    }
    Ok(())
}

fn plan(opts: &Options) -> Result<(Vec<Planned>, Vec<String>)> {
    let mut tracks: Vec<(String, Track)> = Vec::new();
    for input in &opts.inputs {
        let ts = bmff::parse_file(input)?;
        let ids = rendition_ids(input, &ts)?;
        for (id, t) in ids.into_iter().zip(ts) {
            if let Some((_, other)) = tracks.iter().find(|(i, _)| *i == id) {
                return Err(Error::Options(format!(
                    "rendition id {id:?} comes from both {} and {}: rename one file",
                    other.file.display(),
                    input.display()
                )));
            }
            tracks.push((id, t));
        }
    }
    for a in &opts.audio {
        let ts: Vec<Track> = bmff::parse_file(&a.path)?
            .into_iter()
            .filter(|t| t.kind == TrackKind::Audio)
            .collect();
        if ts.is_empty() {
            return Err(Error::Options(format!(
                "--audio {}: the file has no audio track",
                a.path.display()
            )));
        }
        let ids = rendition_ids(&a.path, &ts)?;
        for (id, mut t) in ids.into_iter().zip(ts) {
            if let Some((_, other)) = tracks.iter().find(|(i, _)| *i == id) {
                return Err(Error::Options(format!(
                    "rendition id {id:?} comes from both {} and {}: rename one file",
                    other.file.display(),
                    a.path.display()
                )));
            }
            if let Some(l) = &a.language {
                t.language = l.clone();
            }
            t.role = a.role;
            tracks.push((id, t));
        }
    }
    // Video first (stable), as the catalog lists them.
    tracks.sort_by_key(|(_, t)| t.kind == TrackKind::Audio);
    let tricks = trick_tracks(opts, &tracks)?;
    let refs: Vec<&Track> = tracks.iter().map(|(_, t)| t).collect();
    let names: Vec<String> = tracks.iter().map(|(i, _)| i.clone()).collect();
    let (mut segments, warnings) =
        segment::plan_with_warnings(&refs, &names, opts.segment_duration_ms)?;
    // Trick play renditions follow the reference video's segments; they go after the ladder's
    // video renditions, before audio.
    let mut trick = vec![false; tracks.len()];
    if !tricks.is_empty() {
        let r = tracks
            .iter()
            .position(|(_, t)| t.kind == TrackKind::Video)
            .ok_or_else(|| Error::Options("--trick-play needs a video input".into()))?;
        let at = tracks
            .iter()
            .position(|(_, t)| t.kind != TrackKind::Video)
            .unwrap_or(tracks.len());
        let mut planned_tricks = Vec::with_capacity(tricks.len());
        for (id, t) in tricks {
            let segs = segment::plan_trick(&t, &id, &tracks[r].1, &tracks[r].0, &segments[r])?;
            planned_tricks.push((id, t, segs));
        }
        for (k, (id, t, segs)) in planned_tricks.into_iter().enumerate() {
            tracks.insert(at + k, (id, t));
            segments.insert(at + k, segs);
            trick.insert(at + k, true);
        }
    }

    let mut out = Vec::with_capacity(tracks.len());
    // Pick every track's key before any sample is read, so a missing key fails fast.
    let cryptos = tracks
        .iter()
        .map(|(id, t)| {
            opts.encryption
                .as_ref()
                .map(|e| encrypt::track_crypto(e, id, t))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut title_kids: Vec<[u8; 16]> = Vec::new();
    for c in cryptos.iter().flatten() {
        if !title_kids.contains(&c.kid) {
            title_kids.push(c.kid);
        }
    }
    let cryptos: Vec<Option<TrackCrypto>> = cryptos
        .into_iter()
        .map(|c| {
            c.map(|mut c| {
                c.title_kids = title_kids.clone();
                c
            })
        })
        .collect();
    for ((((id, track), segs), tc), trick) in
        tracks.into_iter().zip(segments).zip(cryptos).zip(trick)
    {
        let duration: u64 = segs.iter().map(|s| s.duration).sum();
        let crypto = match tc {
            Some(tc) => {
                let maps = subsample_maps(&track, &tc)?;
                Some((tc, maps))
            }
            None => None,
        };
        let init = cmaf::init_segment_with(&track, duration, crypto.as_ref().map(|c| &c.0));
        // One fragment per segment; a trick play rendition gets one per frame (CMAF chunks,
        // every one starting with its sync sample), so its I-frame playlist can name each.
        let mut fragments = Vec::with_capacity(segs.len());
        let mut groups = Vec::with_capacity(segs.len());
        for s in &segs {
            let first = fragments.len();
            let pieces = if trick {
                segment::chunks(&track, s)
            } else {
                vec![s.clone()]
            };
            for piece in &pieces {
                let sequence = u32::try_from(fragments.len() + 1)
                    .map_err(|_| Error::Ladder("too many fragments in one track".into()))?;
                fragments.push(cmaf::fragment_with(
                    &track,
                    piece,
                    sequence,
                    crypto.as_ref().map(|(t, m)| (t, m.as_slice())),
                )?);
            }
            groups.push(first..fragments.len());
        }
        // Each segment as (bytes, I-frames at offsets from the segment's start).
        let seg_bytes: Vec<(u64, Vec<IFrameRef>)> = groups
            .iter()
            .map(|g| {
                let mut off = 0;
                let frames = fragments[g.clone()]
                    .iter()
                    .map(|f| {
                        let r = IFrameRef {
                            offset: off,
                            len: f.size(),
                            duration: f.segment.duration,
                        };
                        off += f.size();
                        r
                    })
                    .collect();
                (off, if trick { frames } else { Vec::new() })
            })
            .collect();
        let seg_ref = |k: usize, file: String, at: Option<u64>| {
            let (size, frames) = &seg_bytes[k];
            SegRef {
                file,
                range: at.map(|o| (o, *size)),
                start: segs[k].start,
                duration: segs[k].duration,
                size: *size,
                iframe_len: iframe_len(&track, &fragments[groups[k].start]),
                iframes: frames
                    .iter()
                    .map(|f| IFrameRef {
                        offset: f.offset + at.unwrap_or(0),
                        ..f.clone()
                    })
                    .collect(),
            }
        };
        let (sidx, init_file, init_range, index_range, seg_refs) = match opts.mode {
            PackagingMode::OnDemand => {
                let sizes: Vec<(u64, u64)> = seg_bytes
                    .iter()
                    .zip(&segs)
                    .map(|((n, _), s)| (*n, s.duration))
                    .collect();
                let earliest = segs.first().map_or(0, |s| s.start);
                let sidx = cmaf::sidx_of(&track, &sizes, earliest)?;
                let file = format!("{id}.mp4");
                let init_len = init.len() as u64;
                let mut off = init_len + sidx.len() as u64;
                let refs = (0..segs.len())
                    .map(|k| {
                        let r = seg_ref(k, file.clone(), Some(off));
                        off += r.size;
                        r
                    })
                    .collect();
                let idx = (init_len, sidx.len() as u64);
                (Some(sidx), file, Some((0, init_len)), Some(idx), refs)
            }
            PackagingMode::Segmented => {
                let refs = (0..segs.len())
                    .map(|k| seg_ref(k, segment_file(k), None))
                    .collect();
                (None, "init.mp4".to_string(), None, None, refs)
            }
        };
        let fr = (track.kind == TrackKind::Video && track.typical_duration() > 0).then(|| {
            let (n, d) = (
                u64::from(track.timescale),
                u64::from(track.typical_duration()),
            );
            let g = manifest::gcd(n, d);
            (n / g, d / g)
        });
        let view = RenditionView {
            id: id.clone(),
            kind: track.kind,
            codec: track.entry.codec.clone(),
            family: bmff::reader::fourcc_str(&track.entry.fourcc),
            width: track.entry.width,
            height: track.entry.height,
            sar: track.entry.pixel_aspect.unwrap_or((1, 1)),
            frame_rate: fr,
            sample_rate: track.entry.sample_rate,
            channels: track.entry.channels,
            language: track.language.clone(),
            role: track.role,
            trick,
            timescale: track.timescale,
            mode: opts.mode,
            init_file,
            init_range,
            index_range,
            segments: seg_refs,
            duration,
            edit_offset: match track.kind {
                TrackKind::Video => 0,
                TrackKind::Audio | TrackKind::Text | TrackKind::Image => track.edit_shift,
            },
            protection: crypto.as_ref().map(|(tc, _)| manifest::Protection {
                scheme: if tc.cbcs.is_some() { "cbcs" } else { "cenc" },
                kid: tc.kid,
                title_kids: tc.title_kids.clone(),
            }),
        };
        out.push(Planned {
            id,
            track,
            init,
            sidx,
            fragments,
            groups,
            view,
            crypto,
        });
    }
    Ok((out, warnings))
}

/// The subsample map of every sample of `track` (empty maps, whole-sample encryption, for
/// tracks without NAL framing). Reads only each NAL unit's length field and header byte
/// ([`encrypt::nal::map_with`]): the sample data itself is read once, by the writer.
fn subsample_maps(track: &Track, tc: &TrackCrypto) -> Result<Vec<Vec<Subsample>>> {
    if !tc.subsamples() {
        return Ok(vec![Vec::new(); track.samples.len()]);
    }
    let src = File::open(&track.file).map_err(|e| Error::io(&track.file, e))?;
    let mut maps = Vec::with_capacity(track.samples.len());
    let mut frames = encrypt::FrameMaps::new(track, tc)?;
    // cbcs keeps H.264/HEVC slice headers clear: parse them with the track's parameter sets.
    let mut headers: Option<Box<dyn encrypt::nal::SliceHeaders>> = match tc.nal {
        Some(fmt) if tc.cbcs.is_some() => {
            let tag = if fmt.hevc { b"hvcC" } else { b"avcC" };
            let bad = |reason: String| Error::Invalid {
                file: track.file.clone(),
                box_path: format!(
                    "moov/trak/mdia/minf/stbl/stsd/{}/{}",
                    String::from_utf8_lossy(&track.entry.fourcc),
                    String::from_utf8_lossy(tag)
                ),
                offset: 0,
                reason,
            };
            let config = encrypt::config_payload(&track.entry.raw, tag).ok_or_else(|| {
                bad(format!(
                    "no {} box in the sample entry",
                    String::from_utf8_lossy(tag)
                ))
            })?;
            Some(if fmt.hevc {
                Box::new(encrypt::hevc::HevcParams::from_hvcc(config).map_err(|e| bad(e.0))?)
            } else {
                Box::new(encrypt::h264::H264Params::from_avcc(config).map_err(|e| bad(e.0))?)
            })
        }
        _ => None,
    };
    for (i, s) in track.samples.iter().enumerate() {
        let mut io_error = None;
        let mut peek = |pos: usize, buf: &mut [u8]| {
            std::os::unix::fs::FileExt::read_exact_at(&src, buf, s.offset + pos as u64).map_err(
                |e| {
                    let m = encrypt::subsample::MapError(e.to_string());
                    io_error = Some(e);
                    m
                },
            )
        };
        let m = match tc.nal {
            Some(fmt) => {
                let mut policy = match headers.as_deref_mut() {
                    Some(params) => encrypt::nal::Policy::SliceHeaderClear(params),
                    None => encrypt::nal::Policy::WholeBlocks,
                };
                encrypt::nal::map_with(s.size as usize, fmt, &mut policy, &mut peek)
            }
            None => frames.map_with(s.size as usize, &mut peek),
        };
        if let Some(e) = io_error {
            return Err(Error::io(&track.file, e));
        }
        let m = m.map_err(|e| Error::Invalid {
            file: track.file.clone(),
            box_path: "mdat".into(),
            offset: s.offset,
            reason: format!("sample {}: {}", i + 1, e.0),
        })?;
        maps.push(m);
    }
    Ok(maps)
}

/// The bytes of a video fragment up to the end of its first sample, when that sample is a sync
/// sample (every video fragment starts with one): `moof`, `mdat` header, the I-frame.
fn iframe_len(track: &Track, f: &Fragment) -> Option<u64> {
    if track.kind != TrackKind::Video {
        return None;
    }
    let first = track.samples.get(f.segment.samples.start)?;
    first
        .sync
        .then(|| f.header.len() as u64 + u64::from(first.size))
}

/// Media segment file name in segmented mode (`$Number%05d$.m4s`, numbers from 1).
fn segment_file(k: usize) -> String {
    format!("{:05}.m4s", k + 1)
}

/// A file being written: buffered (128 KiB, so the bytes just read stay in L2 for the hash and
/// the write; 1 MiB buffers measured up to 2x the system time), hashed, sized. Hashing runs
/// inline: with the SHA extensions the `sha2` crate uses at run time it costs less than the
/// copy, and a helper thread per file measured no faster on this project's 2-core machines.
struct HashedFile {
    path: PathBuf,
    rel: String,
    file: File,
    hasher: Sha256,
    buf: Vec<u8>,
    size: u64,
}

impl HashedFile {
    fn create(root: &Path, rel: &str) -> Result<Self> {
        let path = root.join(rel);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(HashedFile {
            path,
            rel: rel.to_string(),
            file,
            hasher: Sha256::new(),
            buf: Vec::with_capacity(COPY_BUFFER),
            size: 0,
        })
    }

    fn flush_buf(&mut self) -> Result<()> {
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.size += self.buf.len() as u64;
        self.hasher.update(&self.buf);
        self.buf.clear();
        Ok(())
    }

    fn write(&mut self, mut b: &[u8]) -> Result<()> {
        while !b.is_empty() {
            let room = COPY_BUFFER - self.buf.len();
            let n = room.min(b.len());
            self.buf.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.buf.len() == COPY_BUFFER {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    /// Appends `len` bytes of `src` starting at `offset`, encrypting them in the buffer they
    /// were read into when `cipher` is given (its offsets count from `offset`).
    fn copy_from(
        &mut self,
        src: &File,
        src_path: &Path,
        offset: u64,
        len: u64,
        mut cipher: Option<&mut encrypt::RunCipher<'_>>,
    ) -> Result<()> {
        let mut done = 0u64;
        while done < len {
            if self.buf.len() == COPY_BUFFER {
                self.flush_buf()?;
            }
            let start = self.buf.len();
            let mut n = ((COPY_BUFFER - start) as u64).min(len - done);
            if let Some(c) = cipher.as_deref() {
                // cbcs: never split an encrypted block across two reads.
                n = c.limit(done, n);
                if n == 0 {
                    self.flush_buf()?;
                    continue;
                }
            }
            let n = n as usize;
            self.buf.resize(start + n, 0);
            std::os::unix::fs::FileExt::read_exact_at(src, &mut self.buf[start..], offset + done)
                .map_err(|e| Error::io(src_path, e))?;
            if let Some(c) = cipher.as_deref_mut() {
                c.apply(done, &mut self.buf[start..]);
            }
            done += n as u64;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<FileEntry> {
        self.flush_buf()?;
        let digest = self.hasher.finalize();
        let sha256 = protocol::hex::encode(&digest);
        Ok(FileEntry {
            path: self.rel,
            size: self.size,
            sha256,
        })
    }
}

/// Copies the samples of `fragment` (coalescing contiguous runs) after its header, encrypting
/// them in the copy buffer when the track is encrypted: each byte is read once.
fn write_fragment(
    out: &mut HashedFile,
    src: &File,
    p: &Planned,
    f: &Fragment,
    done: &AtomicU64,
    total: u64,
    progress: Option<Progress<'_>>,
) -> Result<()> {
    out.write(&f.header)?;
    let first = f.segment.samples.start;
    let samples = &p.track.samples[f.segment.samples.clone()];
    let mut i = 0;
    while i < samples.len() {
        let start = samples[i].offset;
        let mut end = start + u64::from(samples[i].size);
        let mut j = i + 1;
        while j < samples.len() && samples[j].offset == end {
            end += u64::from(samples[j].size);
            j += 1;
        }
        let mut cipher = p.crypto.as_ref().map(|(tc, maps)| {
            tc.run_cipher(
                first + i,
                samples[i..j].iter().map(|s| u64::from(s.size)),
                &maps[first + i..first + j],
            )
        });
        out.copy_from(src, &p.track.file, start, end - start, cipher.as_mut())?;
        i = j;
    }
    let d = done.fetch_add(f.data_len, Ordering::Relaxed) + f.data_len;
    if let Some(cb) = progress {
        cb(d, total);
    }
    Ok(())
}

fn write_rendition(
    root: &Path,
    p: &Planned,
    done: &AtomicU64,
    total: u64,
    progress: Option<Progress<'_>>,
) -> Result<Vec<FileEntry>> {
    let dir = root.join(&p.id);
    std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let src = File::open(&p.track.file).map_err(|e| Error::io(&p.track.file, e))?;
    let mut files = Vec::new();
    match &p.sidx {
        Some(sidx) => {
            let mut out = HashedFile::create(root, &format!("{}/{}", p.id, p.view.init_file))?;
            out.write(&p.init)?;
            out.write(sidx)?;
            for f in &p.fragments {
                write_fragment(&mut out, &src, p, f, done, total, progress)?;
            }
            files.push(out.finish()?);
        }
        None => {
            let mut init = HashedFile::create(root, &format!("{}/{}", p.id, p.view.init_file))?;
            init.write(&p.init)?;
            files.push(init.finish()?);
            for (k, g) in p.groups.iter().enumerate() {
                let mut out = HashedFile::create(root, &format!("{}/{}", p.id, segment_file(k)))?;
                for f in &p.fragments[g.clone()] {
                    write_fragment(&mut out, &src, p, f, done, total, progress)?;
                }
                files.push(out.finish()?);
            }
        }
    }
    Ok(files)
}

fn write_text(root: &Path, rel: &str, text: &str) -> Result<FileEntry> {
    let mut f = HashedFile::create(root, rel)?;
    f.write(text.as_bytes())?;
    f.finish()
}

fn write_title(
    opts: &Options,
    planned: &[Planned],
    texts: &[PlannedText],
    images: Option<&ImageView>,
    root: &Path,
    progress: Option<Progress<'_>>,
) -> Result<CatalogEntry> {
    let total: u64 = planned.iter().map(|p| p.track.media_bytes()).sum();
    let done = AtomicU64::new(0);
    // Renditions are written in parallel, one worker per core.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(planned.len())
        .max(1);
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Option<Result<Vec<FileEntry>>>>> =
        Mutex::new((0..planned.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                if k >= planned.len() {
                    break;
                }
                let r = write_rendition(root, &planned[k], &done, total, progress);
                let failed = r.is_err();
                if let Ok(mut g) = results.lock() {
                    g[k] = Some(r);
                }
                if failed {
                    // Let the other workers stop early.
                    next.store(planned.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let mut files = Vec::new();
    let mut rendition_files: Vec<Vec<String>> = Vec::new();
    let results = results
        .into_inner()
        .map_err(|_| Error::Options("a writer thread panicked".into()))?;
    for r in results {
        let r = r.ok_or_else(|| Error::Options("packaging stopped after an error".into()));
        let fs = r??;
        rendition_files.push(fs.iter().map(|f| f.path.clone()).collect());
        files.extend(fs);
    }
    // Playlists and the MPD.
    let views: Vec<RenditionView> = planned.iter().map(|p| p.view.clone()).collect();
    let target = hls::target_duration(&views);
    // Text tracks: the segments, the whole file (DASH) and the media playlist.
    let text_views: Vec<manifest::TextView> = texts.iter().map(|t| t.view.clone()).collect();
    let mut text_renditions = Vec::new();
    for t in texts {
        let v = &t.view;
        let dir = root.join(&v.id);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut fs = Vec::new();
        for (k, seg) in text::segments(&t.vtt, &t.bounds).iter().enumerate() {
            fs.push(write_text(
                root,
                &format!("{}/{}", v.id, text_segment_file(k)),
                seg,
            )?);
        }
        fs.push(write_text(
            root,
            &format!("{}/{}", v.id, v.whole_file),
            &text::whole_file(&t.vtt),
        )?);
        fs.push(write_text(
            root,
            &format!("{}/{}", v.id, hls::MEDIA_PLAYLIST),
            &hls::text_playlist(v, target),
        )?);
        // The MP4 track (DASH): one file with sidx on demand, init + segments otherwise.
        match &t.mp4.sidx {
            Some(sidx) => {
                let mut f = HashedFile::create(root, &format!("{}/{}", v.id, v.mp4.file))?;
                f.write(&t.mp4.init)?;
                f.write(sidx)?;
                for frag in &t.mp4.fragments {
                    f.write(frag)?;
                }
                fs.push(f.finish()?);
            }
            None => {
                let mut f = HashedFile::create(root, &format!("{}/{}", v.id, v.mp4.file))?;
                f.write(&t.mp4.init)?;
                fs.push(f.finish()?);
                for (k, frag) in t.mp4.fragments.iter().enumerate() {
                    let mut f = HashedFile::create(root, &format!("{}/{}", v.id, segment_file(k)))?;
                    f.write(frag)?;
                    fs.push(f.finish()?);
                }
            }
        }
        text_renditions.push(Rendition {
            id: v.id.clone(),
            kind: TrackKind::Text,
            codec: v.mp4.codecs.clone(),
            bandwidth: v.bandwidth(),
            average_bandwidth: v.average_bandwidth(),
            width: None,
            height: None,
            frame_rate: None,
            sample_rate: None,
            channels: None,
            language: Some(v.language.clone()),
            tier: None,
            key_id: None,
            role: Some(v.role.as_str().to_string()),
            files: fs.iter().map(|f| f.path.clone()).collect(),
        });
        files.extend(fs);
    }
    // Thumbnails: the grid images, copied unchanged, and the image media playlist.
    let mut image_renditions = Vec::new();
    if let Some(im) = images {
        let dir = root.join(&im.id);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut fs = Vec::new();
        for (k, src) in im.sources.iter().enumerate() {
            let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
            let mut f = HashedFile::create(root, &format!("{}/{}", im.id, ImageView::file(k)))?;
            f.write(&bytes)?;
            fs.push(f.finish()?);
        }
        fs.push(write_text(
            root,
            &format!("{}/{}", im.id, hls::MEDIA_PLAYLIST),
            &hls::image_playlist(im),
        )?);
        let bandwidth = im.bandwidth();
        image_renditions.push(Rendition {
            id: im.id.clone(),
            kind: TrackKind::Image,
            codec: "jpeg".into(),
            bandwidth,
            average_bandwidth: bandwidth,
            width: Some(im.width),
            height: Some(im.height),
            frame_rate: None,
            sample_rate: None,
            channels: None,
            language: None,
            tier: None,
            key_id: None,
            role: None,
            files: fs.iter().map(|f| f.path.clone()).collect(),
        });
        files.extend(fs);
    }
    for (k, v) in views.iter().enumerate() {
        // A trick play rendition is only ever an I-frame variant: no media playlist.
        if !v.trick {
            let e = write_text(root, &v.playlist_path(), &hls::media_playlist(v, target))?;
            rendition_files[k].push(e.path.clone());
            files.push(e);
        }
        if let Some(text) = hls::iframe_playlist(v, target) {
            let e = write_text(root, &v.iframe_playlist_path(), &text)?;
            rendition_files[k].push(e.path.clone());
            files.push(e);
        }
    }
    files.push(write_text(
        root,
        catalog::HLS_MASTER,
        &hls::master_playlist_with_media(&views, &text_views, images, target),
    )?);
    let min_buffer = opts.segment_duration_ms as f64 / 1000.0;
    files.push(write_text(
        root,
        catalog::DASH_MANIFEST,
        &dash::mpd_with_media(&views, &text_views, images, min_buffer),
    )?);

    let renditions = views
        .iter()
        .zip(rendition_files)
        .zip(planned)
        .map(|((v, fs), p)| {
            let (peak, avg) = hls::rates(v, target);
            let video = v.kind == TrackKind::Video;
            Rendition {
                id: v.id.clone(),
                kind: v.kind,
                codec: v.codec.clone(),
                bandwidth: peak,
                average_bandwidth: avg,
                width: video.then_some(v.width),
                height: video.then_some(v.height),
                frame_rate: v.frame_rate.map(dash::frame_rate_string),
                sample_rate: (!video).then_some(v.sample_rate),
                channels: (!video).then_some(v.channels),
                language: (!video).then(|| v.language.clone()),
                tier: video.then(|| Tier::from_height(v.height)),
                key_id: p.crypto.as_ref().map(|(tc, _)| tc.kid_hex()),
                role: if v.trick {
                    Some(catalog::TRICK_ROLE.to_string())
                } else {
                    (!video).then(|| v.role.as_str().to_string())
                },
                files: fs,
            }
        })
        .chain(text_renditions)
        .chain(image_renditions)
        .collect();
    let duration_ms = views
        .iter()
        .filter(|v| !v.trick)
        .map(|v| (v.seconds() * 1000.0).round() as u64)
        .max()
        .unwrap_or(0);
    let entry = CatalogEntry {
        version: catalog::CATALOG_VERSION,
        title: opts.title.clone(),
        duration_ms,
        mode: opts.mode,
        segment_duration_ms: opts.segment_duration_ms,
        renditions,
        manifests: Manifests {
            hls: catalog::HLS_MASTER.into(),
            dash: catalog::DASH_MANIFEST.into(),
        },
        files,
        encryption: opts.encryption.as_ref().map(|e| {
            let mut key_ids: Vec<String> = Vec::new();
            for p in planned {
                if let Some((tc, _)) = &p.crypto {
                    let k = tc.kid_hex();
                    if !key_ids.contains(&k) {
                        key_ids.push(k);
                    }
                }
            }
            catalog::Encryption {
                scheme: e.keys.scheme.as_str().to_string(),
                key_ids,
            }
        }),
    };
    entry.validate()?;
    let path = root.join(catalog::CATALOG_FILE);
    std::fs::write(&path, entry.to_json()).map_err(|e| Error::io(&path, e))?;
    Ok(entry)
}
