//! Fuzzes the grant decoder and the request-path splitter: no input may panic, and a decoded
//! token's claims must survive validation without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = protocol::grant::decode(s) {
            let _ = d.claims.validate();
        }
        let _ = protocol::grant::split_grant_path(s);
        let _ = protocol::grant::canonicalize(s);
    }
});
