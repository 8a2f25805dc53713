//! Fuzzes the H.264 and HEVC parameter-set and slice-header parsers and the one NAL walker
//! (`packager::encrypt::nal`) under both Common Encryption policies: the input is a decoder
//! configuration record (`avcC` or `hvcC` payload) and then samples, all untrusted. No input may
//! panic or hang; every subsample map the walker returns covers its sample exactly, and under
//! `cenc` every protected run is whole 16-byte blocks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packager::encrypt::h264::H264Params;
use packager::encrypt::hevc::HevcParams;
use packager::encrypt::nal::{self, Policy, SliceHeaders};
use packager::encrypt::{NalFormat, Subsample};

/// Checks a map against its sample: exact cover, and whole blocks when `blocks`.
fn check(map: &[Subsample], sample: &[u8], blocks: bool) {
    let covered: u64 = map
        .iter()
        .map(|s| u64::from(s.clear) + u64::from(s.protected))
        .sum();
    assert_eq!(covered, sample.len() as u64, "map does not cover the sample");
    if blocks {
        assert!(map.iter().all(|s| s.protected % 16 == 0), "cenc run not whole blocks");
    }
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: codec (bit 0: HEVC) and NAL length size (bits 1-2: 1, 2 or 4 bytes).
    // Bytes 1-2: config record length; then the record; the rest is samples, each preceded by
    // a 2-byte length.
    let [flags, hi, lo, rest @ ..] = data else {
        return;
    };
    let hevc = flags & 1 == 1;
    let length_size = [1, 2, 4, 4][usize::from((flags >> 1) & 3)];
    let cfg_len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
    let (cfg, mut samples) = rest.split_at(cfg_len);
    let fmt = NalFormat { length_size, hevc };
    let mut params: Box<dyn SliceHeaders> = if hevc {
        match HevcParams::from_hvcc(cfg) {
            Ok(p) => Box::new(p),
            Err(_) => return,
        }
    } else {
        match H264Params::from_avcc(cfg) {
            Ok(p) => Box::new(p),
            Err(_) => return,
        }
    };
    while let [a, b, tail @ ..] = samples {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (sample, next) = tail.split_at(n);
        samples = next;
        if let Ok(map) = nal::map(sample, fmt, &mut Policy::WholeBlocks) {
            check(&map, sample, true);
        }
        if let Ok(map) = nal::map(sample, fmt, &mut Policy::SliceHeaderClear(params.as_mut())) {
            check(&map, sample, false);
        }
    }
});
