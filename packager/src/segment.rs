//! The ladder check and segmentation: picks segment boundaries on the reference video
//! rendition's keyframes (snapped to the target duration), checks every other video rendition
//! has a sync sample at each boundary, and cuts audio at the frame nearest each boundary.
//!
//! Pure: tracks in, sample ranges out. Times are integers in each track's media timescale.

use std::ops::Range;

use crate::bmff::{Track, TrackKind};
use crate::error::Error;

/// One segment (one CMAF fragment) of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Samples, decode order.
    pub samples: Range<usize>,
    /// Decode time of the first sample (`tfdt`), media timescale.
    pub base_dts: u64,
    /// Earliest presentation time on the output timeline, media timescale.
    pub start: i64,
    /// Presentation duration: the next segment's start minus this one's (the track end for the
    /// last), media timescale. These sum exactly to the track's duration.
    pub duration: u64,
}

/// How the output timeline relates to the input for one track.
///
/// Video: the edit list's shift is baked into composition offsets (written as signed `trun` v1
/// offsets), so the output needs no edit list and the first frame presents at 0.
/// Audio: decode times are kept and the edit list (AAC priming, Opus pre-skip) is written in the
/// init segment, so the output timeline is the media timeline.
pub fn output_pts(track: &Track, i: usize) -> i64 {
    let s = &track.samples[i];
    match track.kind {
        TrackKind::Video => track.pts(s),
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => s.cts(),
    }
}

/// Composition offset written for sample `i` (see [`output_pts`]).
pub fn output_cts_offset(track: &Track, i: usize) -> i64 {
    output_pts(track, i) - track.samples[i].dts as i64
}

fn fmt_secs(ticks: i64, ts: u32) -> String {
    format!("{:.3} s", ticks as f64 / f64::from(ts))
}

/// Longest segment accepted when renditions share few keyframes, milliseconds (the longest
/// accepted `--segment-duration`).
pub const MAX_SHARED_SEGMENT_MS: u64 = 60_000;

/// Segments every track ([`plan_with_warnings`] without the warnings).
pub fn plan(
    tracks: &[&Track],
    names: &[String],
    target_ms: u64,
) -> Result<Vec<Vec<Segment>>, Error> {
    plan_with_warnings(tracks, names, target_ms).map(|(segs, _)| segs)
}

/// Segments every track. `names[i]` names `tracks[i]` in errors; `target_ms` is the target
/// segment duration. Boundaries are cut only at keyframes every video rendition shares (a ladder
/// whose GOPs differ in length shares one only every few GOPs); when the longest segment then
/// exceeds the target by more than 50%, a warning names it. Fails, before anything is written,
/// when the renditions do not share their first keyframe, or share so few that a segment would
/// last more than [`MAX_SHARED_SEGMENT_MS`].
///
/// Segments are cut at shared keyframes only, rather than refusing the ladder, because players
/// switch renditions only at segment boundaries: a boundary where one rendition has no
/// keyframe would make that rendition's segment undecodable.
pub fn plan_with_warnings(
    tracks: &[&Track],
    names: &[String],
    target_ms: u64,
) -> Result<(Vec<Vec<Segment>>, Vec<String>), Error> {
    if target_ms == 0 {
        return Err(Error::Options("segment duration must be positive".into()));
    }
    if tracks.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut warnings = Vec::new();
    let reference = tracks.iter().position(|t| t.kind == TrackKind::Video);
    // Boundaries as (ticks, timescale) of the reference track's presentation times.
    let (bounds, bts): (Vec<i64>, u32) = match reference {
        Some(r) => {
            let shared = shared_keyframes(tracks, r);
            let bounds = video_boundaries(tracks[r], shared, target_ms);
            if let Some(w) = longest_overrun(tracks, names, r, &bounds, target_ms)? {
                warnings.push(w);
            }
            (bounds, tracks[r].timescale)
        }
        None => {
            let a = tracks[0];
            let target = i64::try_from(target_ms * u64::from(a.timescale) / 1000)
                .unwrap_or(i64::MAX)
                .max(1);
            let end = a.end_dts() as i64;
            // Audio only: cut every target duration, merging a tail under a quarter target.
            // Never more boundaries than samples (a forged timescale cannot blow this up).
            (
                (0..)
                    .map(|n: i64| n.saturating_mul(target))
                    .take_while(|&t| t == 0 || t < end - target / 4)
                    .take(a.samples.len())
                    .collect(),
                a.timescale,
            )
        }
    };
    let mut out = Vec::with_capacity(tracks.len());
    for (k, t) in tracks.iter().enumerate() {
        let starts = match t.kind {
            TrackKind::Video => {
                let r = reference.unwrap_or(0);
                aligned_starts(t, &bounds, bts, &names[k], &names[r])?
            }
            TrackKind::Audio | TrackKind::Text | TrackKind::Image => audio_starts(t, &bounds, bts),
        };
        out.push(to_segments(t, &starts));
    }
    Ok((out, warnings))
}

/// Presentation times of the reference's keyframes at which every other video track has a
/// keyframe too (within half a frame); the reference's first keyframe is always kept, so a
/// ladder that does not share it fails in [`aligned_starts`] naming the rendition.
fn shared_keyframes(tracks: &[&Track], r: usize) -> Vec<i64> {
    let reference = tracks[r];
    let bts = i128::from(reference.timescale);
    let others: Vec<(Vec<i64>, i128, i128)> = tracks
        .iter()
        .enumerate()
        .filter(|(k, t)| *k != r && t.kind == TrackKind::Video)
        .map(|(_, t)| {
            let mut keys: Vec<i64> = keyframes(t).iter().map(|k| k.1).collect();
            keys.sort_unstable();
            let ts = i128::from(t.timescale);
            let half = (i128::from(t.typical_duration().max(1)) * bts / 2).max(1);
            (keys, ts, half)
        })
        .collect();
    let mut keys: Vec<i64> = keyframes(reference).iter().map(|k| k.1).collect();
    keys.sort_unstable();
    keys.dedup();
    let first = keys.first().copied();
    keys.retain(|&p| {
        Some(p) == first
            || others.iter().all(|(ok, ts, half)| {
                let want = i128::from(p) * ts;
                let at = ok.partition_point(|&q| i128::from(q) * bts < want);
                [at.saturating_sub(1), at]
                    .into_iter()
                    .filter_map(|i| ok.get(i))
                    .any(|&q| (i128::from(q) * bts - want).abs() < *half)
            })
    });
    keys
}

/// The warning for a segment longer than 1.5x the target (the longest one), or an error when it
/// exceeds [`MAX_SHARED_SEGMENT_MS`].
fn longest_overrun(
    tracks: &[&Track],
    names: &[String],
    r: usize,
    bounds: &[i64],
    target_ms: u64,
) -> Result<Option<String>, Error> {
    let t = tracks[r];
    let ts = i128::from(t.timescale);
    let end = t.end_pts();
    let Some((n, start, stop)) = bounds
        .iter()
        .enumerate()
        .map(|(n, &b)| (n, b, bounds.get(n + 1).copied().unwrap_or(end)))
        .max_by_key(|&(n, b, e)| (e - b, std::cmp::Reverse(n)))
    else {
        return Ok(None);
    };
    let len_ms = i128::from(stop - start) * 1000 / ts;
    let videos = tracks.iter().filter(|t| t.kind == TrackKind::Video).count();
    let why = if videos > 1 {
        "the video renditions share a keyframe only every few GOPs and segments are cut only at shared keyframes"
    } else {
        "segments are cut only at keyframes"
    };
    let what = format!(
        "segment {} ({} to {} of {}) lasts {}, {why}",
        n + 1,
        fmt_secs(start, t.timescale),
        fmt_secs(stop, t.timescale),
        names[r],
        fmt_secs(stop - start, t.timescale),
    );
    // (A single rendition with sparse keyframes keeps its long segments, as before.)
    if videos > 1 && len_ms > i128::from(MAX_SHARED_SEGMENT_MS) {
        return Err(Error::Ladder(format!(
            "{what}; longer than {} s: encode every rendition with the same GOP length (aligned, closed GOPs)",
            MAX_SHARED_SEGMENT_MS / 1000
        )));
    }
    if len_ms * 2 > i128::from(target_ms) * 3 {
        return Ok(Some(format!(
            "{what}: more than 50% over the requested {:.3} s (encode every rendition with the same GOP length, a divisor of the segment duration)",
            target_ms as f64 / 1000.0
        )));
    }
    Ok(None)
}

/// Keyframe indices of `t` (decode order) and their presentation times.
fn keyframes(t: &Track) -> Vec<(usize, i64)> {
    (0..t.samples.len())
        .filter(|&i| t.samples[i].sync)
        .map(|i| (i, output_pts(t, i)))
        .collect()
}

/// Picks boundaries among `keys` (sorted presentation times of keyframes of `t`): for each n, the keyframe nearest
/// `first + n * target`, always moving forward; a final remainder that would be shorter than a
/// tenth of the target is merged into the previous segment.
fn video_boundaries(t: &Track, keys: Vec<i64>, target_ms: u64) -> Vec<i64> {
    let ts = i64::from(t.timescale);
    let target = (i64::try_from(target_ms).unwrap_or(i64::MAX / ts) * ts / 1000).max(1);
    let first = keys[0];
    let end = t.end_pts();
    let mut bounds = vec![first];
    let mut n = 1i64;
    loop {
        let ideal = first.saturating_add(n.saturating_mul(target));
        let prev = *bounds.last().expect("non-empty");
        // Keyframes after prev: keys[lo..]; the nearest to ideal is at or next to its slot.
        let lo = keys.partition_point(|&p| p <= prev);
        if lo == keys.len() {
            break;
        }
        let at = keys.partition_point(|&p| p < ideal).max(lo);
        let best = [at.saturating_sub(1).max(lo), at.min(keys.len() - 1)]
            .into_iter()
            .map(|i| keys[i])
            .min_by_key(|&p| ((p - ideal).abs(), p))
            .expect("two candidates");
        if best >= end {
            break;
        }
        bounds.push(best);
        // The next ideal boundary is the first grid point more than half a target after best.
        n = (best.saturating_add(target / 2) - first) / target + 1;
    }
    // Merge a short tail into the previous segment when the result stays near the target.
    if bounds.len() >= 2 {
        let last = bounds[bounds.len() - 1];
        let prev = bounds[bounds.len() - 2];
        if end - last < target / 4 && end - prev <= target + target / 10 {
            bounds.pop();
        }
    }
    bounds
}

fn aligned_starts(
    t: &Track,
    bounds: &[i64],
    bts: u32,
    name: &str,
    ref_name: &str,
) -> Result<Vec<usize>, Error> {
    let mut keys = keyframes(t);
    keys.sort_by_key(|k| (k.1, k.0));
    let ts = i128::from(t.timescale);
    let half_frame = i128::from(t.typical_duration().max(1)) * i128::from(bts) / 2;
    let mut starts = Vec::with_capacity(bounds.len());
    for (n, &b) in bounds.iter().enumerate() {
        // Compare p/ts with b/bts in units of 1/(ts*bts).
        let want = i128::from(b) * ts;
        let at = keys.partition_point(|k| i128::from(k.1) * i128::from(bts) < want);
        let found = [at.saturating_sub(1), at]
            .into_iter()
            .filter_map(|i| keys.get(i))
            .find(|k| (i128::from(k.1) * i128::from(bts) - want).abs() < half_frame.max(1));
        match found {
            Some(k) => starts.push(k.0),
            None => {
                let before = keys
                    .iter()
                    .rev()
                    .find(|k| i128::from(k.1) * i128::from(bts) < want);
                let after = keys
                    .iter()
                    .find(|k| i128::from(k.1) * i128::from(bts) > want);
                let near = [before, after]
                    .iter()
                    .flatten()
                    .map(|k| fmt_secs(k.1, t.timescale))
                    .collect::<Vec<_>>()
                    .join(" and ");
                return Err(Error::Ladder(format!(
                    "rendition {name} ({}) has no keyframe at {}, where {ref_name} starts segment {}; its nearest keyframes are at {near}. Every video rendition needs keyframes at the same times (encode with aligned, closed GOPs)",
                    t.file.display(),
                    fmt_secs(b, bts),
                    n + 1
                )));
            }
        }
    }
    Ok(starts)
}

/// Segments a keyframe-only trick play rendition `t` (every sample a sync sample) along the
/// segments `ref_segments` of the reference video rendition `reference`: one segment per
/// reference segment, starting at the trick frame nearest the reference segment's start.
///
/// A trick rendition usually has a far lower frame rate than the ladder (one frame a second,
/// say), so its frames rarely fall exactly on the ladder's boundaries: a boundary may move by
/// less than one trick frame duration. It fails, naming `name`, when it cannot line up: its
/// first frame or its end more than one of its frames away from the video's, a boundary with no
/// frame within one frame duration, or frames so sparse that two boundaries would start at the
/// same frame (fewer frames than segments). Nothing is dropped or invented.
pub fn plan_trick(
    t: &Track,
    name: &str,
    reference: &Track,
    ref_name: &str,
    ref_segments: &[Segment],
) -> Result<Vec<Segment>, Error> {
    let bad = |reason: String| Error::TrickPlay {
        file: t.file.clone(),
        reason: format!("rendition {name}: {reason}"),
    };
    if t.samples.is_empty() || ref_segments.is_empty() {
        return Err(bad("no samples".into()));
    }
    let pts: Vec<i64> = (0..t.samples.len()).map(|i| output_pts(t, i)).collect();
    if let Some(i) = (1..pts.len()).find(|&i| pts[i] <= pts[i - 1]) {
        return Err(bad(format!(
            "sample {} presents at {}, not after sample {} ({}): a keyframe-only rendition presents its frames in decode order",
            i + 1,
            fmt_secs(pts[i], t.timescale),
            i,
            fmt_secs(pts[i - 1], t.timescale)
        )));
    }
    let frame = i128::from(
        t.samples
            .iter()
            .map(|s| s.duration)
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let (ts, bts) = (i128::from(t.timescale), i128::from(reference.timescale));
    // Distances in units of 1/(ts*bts) s.
    let dist = |p: i64, b: i64| (i128::from(p) * bts - i128::from(b) * ts).abs();
    let limit = frame * bts;
    let frame_s = fmt_secs(i64::try_from(frame).unwrap_or(i64::MAX), t.timescale);
    if dist(pts[0], ref_segments[0].start) >= limit {
        return Err(bad(format!(
            "its first frame presents at {}, the video ({ref_name}) at {}: more than one of its frames ({frame_s}) apart",
            fmt_secs(pts[0], t.timescale),
            fmt_secs(ref_segments[0].start, reference.timescale)
        )));
    }
    let (end, ref_end) = (t.end_pts(), reference.end_pts());
    if dist(end, ref_end) > limit {
        return Err(bad(format!(
            "it ends at {}, the video ({ref_name}) at {}: more than one of its frames ({frame_s}) apart (a trick play rendition covers the whole title)",
            fmt_secs(end, t.timescale),
            fmt_secs(ref_end, reference.timescale)
        )));
    }
    let mut starts = vec![0usize];
    for (n, seg) in ref_segments.iter().enumerate().skip(1) {
        let b = seg.start;
        let at = pts.partition_point(|&p| i128::from(p) * bts < i128::from(b) * ts);
        let best = [at.saturating_sub(1), at.min(pts.len() - 1)]
            .into_iter()
            .min_by_key(|&i| (dist(pts[i], b), i))
            .unwrap_or(0);
        if dist(pts[best], b) >= limit {
            return Err(bad(format!(
                "no frame within {frame_s} of {}, where segment {} of the video ({ref_name}) starts; its nearest frame is at {}",
                fmt_secs(b, reference.timescale),
                n + 1,
                fmt_secs(pts[best], t.timescale)
            )));
        }
        let prev = *starts.last().unwrap_or(&0);
        if best <= prev {
            return Err(bad(format!(
                "its frames ({frame_s} apart) are too sparse for the video's segments: segments {n} and {} ({} and {}) would both start at its frame at {}. Encode it with at least one frame per segment, or raise --segment-duration",
                n + 1,
                fmt_secs(ref_segments[n - 1].start, reference.timescale),
                fmt_secs(b, reference.timescale),
                fmt_secs(pts[prev], t.timescale)
            )));
        }
        starts.push(best);
    }
    Ok(to_segments(t, &starts))
}

/// `seg` of `t` cut into one-sample pieces (the CMAF chunks of a trick play rendition, one
/// frame each, so an I-frame playlist can name every frame): each piece starts at its sample's
/// presentation time and lasts until the next piece's start (the last one until the segment's
/// end), so the pieces' durations sum to the segment's.
pub fn chunks(t: &Track, seg: &Segment) -> Vec<Segment> {
    let starts: Vec<i64> = seg.samples.clone().map(|i| output_pts(t, i)).collect();
    let end = seg.start + i64::try_from(seg.duration).unwrap_or(i64::MAX);
    seg.samples
        .clone()
        .enumerate()
        .map(|(k, i)| {
            let start = if k == 0 { seg.start } else { starts[k] };
            let next = starts.get(k + 1).copied().unwrap_or(end);
            Segment {
                samples: i..i + 1,
                base_dts: t.samples[i].dts,
                start,
                duration: u64::try_from(next - start).unwrap_or(0),
            }
        })
        .collect()
}

fn audio_starts(t: &Track, bounds: &[i64], bts: u32) -> Vec<usize> {
    // Presentation times (after the edit list) are what must line up with video.
    let pts: Vec<i64> = t.samples.iter().map(|s| t.pts(s)).collect();
    let mut starts = vec![0usize];
    for &b in bounds.iter().skip(1) {
        let want = i64::try_from(i128::from(b) * i128::from(t.timescale) / i128::from(bts))
            .unwrap_or(i64::MAX);
        let i = pts.partition_point(|&p| p < want);
        let cand = [i.saturating_sub(1), i.min(pts.len() - 1)];
        let best = cand
            .iter()
            .copied()
            .min_by_key(|&c| (pts[c] - want).abs())
            .unwrap_or(i);
        if best > *starts.last().expect("non-empty") && best < pts.len() {
            starts.push(best);
        }
    }
    starts
}

fn to_segments(t: &Track, starts: &[usize]) -> Vec<Segment> {
    let n = t.samples.len();
    let mut segs: Vec<Segment> = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(n);
        let start = (s..e).map(|i| output_pts(t, i)).min().unwrap_or(0);
        segs.push(Segment {
            samples: s..e,
            base_dts: t.samples[s].dts,
            start,
            duration: 0,
        });
    }
    let end = match t.kind {
        TrackKind::Video => (0..n)
            .map(|i| output_pts(t, i) + i64::from(t.samples[i].duration))
            .max()
            .unwrap_or(0),
        TrackKind::Audio | TrackKind::Text | TrackKind::Image => {
            t.end_dts() as i64 + i64::from(t.samples.last().map_or(0, |s| s.cts_offset))
        }
    };
    for k in 0..segs.len() {
        let next = segs.get(k + 1).map_or(end, |s| s.start);
        segs[k].duration = u64::try_from(next - segs[k].start).unwrap_or(0);
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmff::{Sample, SampleEntry};

    fn video(gop: usize, frames: usize, ts: u32, dur: u32) -> Track {
        Track {
            role: Default::default(),
            file: "v.mp4".into(),
            track_id: 1,
            kind: TrackKind::Video,
            timescale: ts,
            language: "und".into(),
            entry: SampleEntry {
                fourcc: *b"avc1",
                raw: vec![],
                codec: "avc1.64001e".into(),
                width: 640,
                height: 360,
                pixel_aspect: None,
                sample_rate: 0,
                channels: 0,
            },
            edit_shift: 0,
            samples: (0..frames)
                .map(|i| Sample {
                    offset: 0,
                    size: 100,
                    dts: i as u64 * u64::from(dur),
                    duration: dur,
                    cts_offset: 0,
                    sync: i % gop == 0,
                })
                .collect(),
        }
    }

    fn audio(frames: usize, shift: i64) -> Track {
        let mut t = video(1, frames, 48000, 1024);
        t.kind = TrackKind::Audio;
        t.edit_shift = shift;
        t
    }

    #[test]
    fn snaps_to_keyframes_and_merges_short_tail() {
        // 25 fps, GOP 48 (1.92 s), 12 s, target 6 s: boundaries 0, 5.76; the 0.48 s tail after
        // 11.52 is merged (6.24 s last segment).
        let v = video(48, 300, 12800, 512);
        let plan = plan(&[&v], &["v".into()], 6000).unwrap();
        let starts: Vec<i64> = plan[0].iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 73728]);
        assert_eq!(plan[0][1].duration, 153600 - 73728);
        assert_eq!(plan[0].iter().map(|s| s.duration).sum::<u64>(), 153600);
        // Target 2 s: every GOP; the 0.48 s tail stays separate (merged it would be 2.4 s).
        let plan2 = super::plan(&[&v], &["v".into()], 2000).unwrap();
        assert_eq!(plan2[0].len(), 7);
        assert_eq!(plan2[0][6].samples, 288..300);
    }

    #[test]
    fn misaligned_ladder_is_cut_at_shared_keyframes_with_a_warning() {
        // GOPs of 1.92 s and 1.6 s coincide every 9.6 s.
        let a = video(48, 300, 12800, 512);
        let b = video(40, 300, 90000, 3600);
        let (p, w) = plan_with_warnings(&[&a, &b], &["a".into(), "b".into()], 6000).unwrap();
        assert_eq!(
            p[0].iter().map(|s| s.start).collect::<Vec<_>>(),
            [0, 122880]
        );
        assert_eq!(
            p[1].iter().map(|s| s.start).collect::<Vec<_>>(),
            [0, 864000]
        );
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("segment 1 (0.000 s to 9.600 s of a) lasts 9.600 s"),
            "{w:?}"
        );
        // Same GOP in another timescale: every keyframe is shared, no warning.
        let c = video(48, 300, 90000, 3600);
        let (p, w) = plan_with_warnings(&[&a, &c], &["a".into(), "c".into()], 6000).unwrap();
        assert_eq!(p[1][1].start, 5 * 90000 + 68400);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn misaligned_rendition_is_named_with_the_time() {
        // b has no keyframe at 0, where a starts segment 1.
        let a = video(48, 300, 12800, 512);
        let mut b = video(40, 300, 90000, 3600);
        b.file = "mis.mp4".into();
        b.samples[0].sync = false;
        let err = plan(&[&a, &b], &["a".into(), "mis".into()], 6000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mis") && err.contains("no keyframe at 0.000 s"),
            "{err}"
        );
        assert!(err.contains("1.600 s"), "{err}");
        // GOPs of 48 and 47 frames coincide every 90.24 s: a segment over 60 s is refused.
        let long_a = video(48, 48 * 47 * 2, 12800, 512);
        let long_b = video(47, 48 * 47 * 2, 12800, 512);
        let err = plan(&[&long_a, &long_b], &["a".into(), "b".into()], 6000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lasts 90.240 s") && err.contains("60 s"),
            "{err}"
        );
    }

    /// A keyframe-only track of `frames` frames of `dur` ticks at timescale `ts`.
    fn trick(frames: usize, ts: u32, dur: u32) -> Track {
        let mut t = video(1, frames, ts, dur);
        t.file = "trick.mp4".into();
        t
    }

    #[test]
    fn trick_rendition_follows_the_video_segments() {
        // Ladder: 25 fps, GOP 1.92 s, 12 s. Trick: 1 fps, 12 frames (timescale 1000).
        let v = video(48, 300, 12800, 512);
        let t = trick(12, 1000, 1000);
        let names = ["v".to_string()];
        for target in [2000, 6000] {
            let segs = plan(&[&v], &names, target).unwrap();
            let ts = plan_trick(&t, "t", &v, "v", &segs[0]).unwrap();
            assert_eq!(ts.len(), segs[0].len(), "target {target}");
            assert_eq!(ts.iter().map(|s| s.duration).sum::<u64>(), 12000);
            for (a, b) in ts.iter().zip(&segs[0]) {
                // Within one trick frame of the video's boundary.
                let d = (a.start as f64 / 1000.0 - b.start as f64 / 12800.0).abs();
                assert!(d < 1.0, "target {target}: {a:?} vs {b:?}");
            }
        }
        // 6 s: boundaries 0 and 5.76 s; the trick frame nearest 5.76 s is the one at 6 s.
        let segs = plan(&[&v], &names, 6000).unwrap();
        let ts = plan_trick(&t, "t", &v, "v", &segs[0]).unwrap();
        assert_eq!(
            ts.iter().map(|s| s.samples.clone()).collect::<Vec<_>>(),
            [0..6, 6..12]
        );
        // 2 s: 11.52 s is nearest the last frame (11 s), within one frame.
        let segs = plan(&[&v], &names, 2000).unwrap();
        let ts = plan_trick(&t, "t", &v, "v", &segs[0]).unwrap();
        assert_eq!(ts.last().unwrap().samples, 11..12);
    }

    #[test]
    fn chunks_split_a_segment_per_frame() {
        let v = video(48, 300, 12800, 512);
        let t = trick(12, 1000, 1000);
        let segs = plan(&[&v], &["v".into()], 6000).unwrap();
        let ts = plan_trick(&t, "t", &v, "v", &segs[0]).unwrap();
        for s in &ts {
            let c = chunks(&t, s);
            assert_eq!(c.len(), s.samples.len());
            assert_eq!(c[0].start, s.start);
            assert_eq!(c.iter().map(|c| c.duration).sum::<u64>(), s.duration);
            for (k, piece) in c.iter().enumerate() {
                assert_eq!(piece.samples, s.samples.start + k..s.samples.start + k + 1);
                assert_eq!(piece.base_dts, t.samples[s.samples.start + k].dts);
            }
        }
    }

    #[test]
    fn trick_rendition_that_cannot_align_is_refused() {
        let v = video(48, 300, 12800, 512);
        let segs = plan(&[&v], &["v".into()], 2000).unwrap();
        // One frame every 4 s: two 1.92 s segments would start at the same frame.
        let sparse = trick(3, 1000, 4000);
        let e = plan_trick(&sparse, "t", &v, "v", &segs[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("too sparse") && e.contains("trick.mp4"), "{e}");
        // Half as long as the video.
        let short = trick(6, 1000, 1000);
        let e = plan_trick(&short, "t", &v, "v", &segs[0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ends at 6.000 s") && e.contains("12.000 s"),
            "{e}"
        );
        // Starting 2 s late.
        let mut late = trick(12, 1000, 1000);
        for s in &mut late.samples {
            s.dts += 2000;
        }
        let e = plan_trick(&late, "t", &v, "v", &segs[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("first frame presents at 2.000 s"), "{e}");
    }

    #[test]
    fn audio_follows_video_boundaries() {
        let v = video(48, 300, 12800, 512);
        let a = audio(564, 1024);
        let p = plan(&[&v, &a], &["v".into(), "a".into()], 2000).unwrap();
        let a_segs = &p[1];
        assert_eq!(a_segs.len(), 7);
        for (k, s) in a_segs.iter().enumerate().skip(1) {
            // Presentation start (media time - priming) within half an AAC frame of k * 1.92 s.
            let pts = s.start - 1024;
            let want = k as i64 * 92160;
            assert!((pts - want).abs() <= 512, "segment {k}: {pts} vs {want}");
        }
        let total: u64 = a_segs.iter().map(|s| s.duration).sum();
        assert_eq!(total, 564 * 1024);
    }
}
