//! Fuzzes the appliance's CMCD parser (QoE, issue 16): no input may panic, as a query string or
//! a header value, and every string it keeps stays within its cap.
#![no_main]

use appliance::qoe::cmcd::{Cmcd, MAX_ID_LEN, MAX_PATH_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let mut c = Cmcd::from_query(&s);
    c.add(&s);
    assert!(c.sid.as_ref().is_none_or(|v| v.len() <= MAX_ID_LEN));
    assert!(c.cid.as_ref().is_none_or(|v| v.len() <= MAX_ID_LEN));
    assert!(c.nor.as_ref().is_none_or(|v| v.len() <= MAX_PATH_LEN));
});
