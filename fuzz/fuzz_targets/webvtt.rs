//! Fuzzes the strict WebVTT parser behind `outpost package --text` (`packager::text`): subtitle
//! files are untrusted input. No input may panic or hang; what parses keeps the invariants the
//! segmenters rely on (cues in start order, not overlapping, each ending after it starts and no
//! later than the title), survives a round trip through the normalised file unchanged, and
//! turns into `wvtt` samples that exactly tile each segment.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use packager::text::{mp4::wvtt_samples, parse_webvtt, whole_file};

fuzz_target!(|data: &[u8]| {
    // The first two bytes are the title's duration in tenths of a second (at least 0.1 s).
    let [a, b, rest @ ..] = data else { return };
    let duration_ms = u64::from(u16::from_be_bytes([*a, *b])).max(1) * 100;
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let file = Path::new("fuzz.vtt");
    let Ok(v) = parse_webvtt(file, text, duration_ms) else { return };
    for w in v.cues.windows(2) {
        assert!(w[0].start_ms <= w[1].start_ms, "cues out of order");
        assert!(w[0].end_ms <= w[1].start_ms, "overlapping cues accepted");
    }
    for c in &v.cues {
        assert!(c.start_ms < c.end_ms && c.end_ms <= duration_ms, "cue times {c:?}");
    }
    let again = parse_webvtt(file, &whole_file(&v), duration_ms)
        .unwrap_or_else(|e| panic!("the normalised file does not parse again: {e}"));
    assert_eq!(again, v, "the round trip changed the cues");
    let mut from = 0;
    while from < duration_ms {
        let to = (from + 2_000).min(duration_ms);
        let total: u64 = wvtt_samples(&v, from, to)
            .iter()
            .map(|(d, _)| u64::from(*d))
            .sum();
        assert_eq!(total, to - from, "wvtt samples do not tile [{from}, {to})");
        from = to;
    }
});
