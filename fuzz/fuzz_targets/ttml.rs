//! Fuzzes the IMSC1/TTML parser behind `outpost package --text` (`packager::text::ttml`):
//! subtitle files are untrusted input. No input may panic or hang; what parses has cues in
//! order, not overlapping, inside the title, and both of its outputs read back the same: the
//! WebVTT conversion (HLS) parses with the same times, and the document written for an `stpp`
//! sample parses with the same cues.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use packager::text::{parse_webvtt, ttml, whole_file};

fuzz_target!(|data: &[u8]| {
    // The first two bytes are the title's duration in tenths of a second (at least 0.1 s).
    let [a, b, rest @ ..] = data else { return };
    let duration_ms = u64::from(u16::from_be_bytes([*a, *b])).max(1) * 100;
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let file = Path::new("fuzz.ttml");
    let Ok(t) = ttml::parse(file, text, duration_ms) else { return };
    for w in t.cues.windows(2) {
        assert!(w[0].end_ms <= w[1].start_ms, "overlapping cues accepted");
    }
    for c in &t.cues {
        assert!(c.start_ms < c.end_ms && c.end_ms <= duration_ms, "cue times {c:?}");
    }
    let vtt = whole_file(&t.to_webvtt());
    let v = parse_webvtt(Path::new("fuzz.vtt"), &vtt, duration_ms)
        .unwrap_or_else(|e| panic!("the WebVTT conversion does not parse: {e}\n{vtt}"));
    let times = |it: &mut dyn Iterator<Item = (u64, u64)>| it.collect::<Vec<_>>();
    assert_eq!(
        times(&mut v.cues.iter().map(|c| (c.start_ms, c.end_ms))),
        times(&mut t.cues.iter().map(|c| (c.start_ms, c.end_ms))),
        "the WebVTT conversion changed the times"
    );
    let doc = t.document(t.cues.iter());
    let again = ttml::parse(file, &doc, duration_ms)
        .unwrap_or_else(|e| panic!("the stpp document does not parse: {e}\n{doc}"));
    assert_eq!(
        times(&mut again.cues.iter().map(|c| (c.start_ms, c.end_ms))),
        times(&mut t.cues.iter().map(|c| (c.start_ms, c.end_ms))),
        "the stpp document changed the times"
    );
    assert_eq!(
        again.cues.iter().map(|c| &c.text).collect::<Vec<_>>(),
        t.cues.iter().map(|c| &c.text).collect::<Vec<_>>(),
        "the stpp document changed the text"
    );
});
