//! Fuzzes the AV1 OBU walker, sequence header and uncompressed frame header parsers behind the
//! AV1 Common Encryption binding (`packager::encrypt::av1`): samples are untrusted bytes,
//! mapped in order with one track state (sequence header, reference slots) as the packager
//! does, under `cbcs` and `cenc` rules. No input may panic or hang; every map covers its sample
//! exactly, and under `cenc` protects whole 16-byte blocks only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packager::encrypt::av1::{self, Av1State};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the scheme; the second, when odd, says that the next 2-byte-length
    // item is an `av1C` payload.
    let [flags, rest @ ..] = data else {
        return;
    };
    let cbcs = flags & 1 == 1;
    let mut samples = rest;
    let mut st = Av1State::default();
    if flags & 2 == 2 {
        if let [a, b, tail @ ..] = samples {
            let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
            let (c, next) = tail.split_at(n);
            samples = next;
            match Av1State::from_av1c(Some(c)) {
                Ok(s) => st = s,
                Err(_) => return,
            }
        }
    }
    // Each sample is preceded by a 2-byte length.
    while let [a, b, tail @ ..] = samples {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (sample, next) = tail.split_at(n);
        samples = next;
        if let Ok(map) = av1::map(sample, &mut st, cbcs) {
            let covered: u64 = map
                .iter()
                .map(|s| u64::from(s.clear) + u64::from(s.protected))
                .sum();
            assert_eq!(
                covered,
                sample.len() as u64,
                "map does not cover the sample"
            );
            assert!(
                !map.is_empty(),
                "an empty map would encrypt the whole sample"
            );
            if !cbcs {
                assert!(
                    map.iter().all(|s| s.protected % 16 == 0),
                    "protected run not whole blocks"
                );
            }
        }
    }
});
