//! Fuzzes the packager's MP4 box parser and everything downstream of it that sees untrusted
//! numbers: sample tables, segmentation and the CMAF fragment writer. Any panic, hang or
//! oversized allocation is a bug; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.mp4");
    let Ok(tracks) = packager::bmff::parse_source(path, data) else {
        return;
    };
    let refs: Vec<&packager::bmff::Track> = tracks.iter().collect();
    let names: Vec<String> = (0..tracks.len()).map(|i| format!("t{i}")).collect();
    let Ok(plan) = packager::segment::plan(&refs, &names, 2000) else {
        return;
    };
    for (t, segs) in tracks.iter().zip(&plan) {
        let total: u64 = segs.iter().map(|s| s.duration).sum();
        let _ = packager::cmaf::init_segment(t, total);
        let mut frags = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            if let Ok(f) = packager::cmaf::fragment(t, s, k as u32 + 1) {
                frags.push(f);
            }
        }
        let _ = packager::cmaf::sidx(t, &frags);
    }
});
