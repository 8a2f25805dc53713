//! Fuzzes `Range` evaluation: no input may panic, and every range returned lies inside the
//! representation, with multi-range answers never adding up past its length.
#![no_main]

use appliance::http1::range::{evaluate, RangeDecision};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, &str)| {
    let (len, value) = input;
    if let RangeDecision::Partial(ranges) = evaluate(value, len) {
        assert!(!ranges.is_empty());
        let mut total = 0u64;
        for r in &ranges {
            assert!(r.first <= r.last && r.last < len);
            total = total.saturating_add(r.len());
        }
        assert!(ranges.len() == 1 || total <= len);
    }
});
