//! Fuzzes the VP9 uncompressed-header parser and superframe-index reader behind the VP9 Common
//! Encryption binding (`packager::encrypt::vp9`): samples are untrusted bytes, parsed in order
//! with one track state (reference widths) as the packager does. No input may panic or hang;
//! every map covers its sample exactly and protects whole 16-byte blocks only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packager::encrypt::vp9::{self, Vp9State};
use packager::encrypt::subsample::MapError;

fuzz_target!(|data: &[u8]| {
    let mut st = Vp9State::default();
    let mut samples = data;
    // Each sample is preceded by a 2-byte length.
    while let [a, b, tail @ ..] = samples {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (sample, next) = tail.split_at(n);
        samples = next;
        let _ = vp9::uncompressed_header_len(sample, &mut Vp9State::default());
        let mut peek = |pos: usize, out: &mut [u8]| -> Result<(), MapError> {
            let src = sample
                .get(pos..pos + out.len())
                .ok_or_else(|| MapError("read past the sample".into()))?;
            out.copy_from_slice(src);
            Ok(())
        };
        if let Ok(map) = vp9::map_with(sample.len(), &mut st, &mut peek) {
            let covered: u64 = map
                .iter()
                .map(|s| u64::from(s.clear) + u64::from(s.protected))
                .sum();
            assert_eq!(covered, sample.len() as u64, "map does not cover the sample");
            assert!(map.iter().all(|s| s.protected % 16 == 0), "protected run not whole blocks");
        }
    }
});
