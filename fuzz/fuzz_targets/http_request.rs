//! Fuzzes the appliance's HTTP/1.1 request-head parser: no input may panic, a parsed head never
//! claims more bytes than it was given, and every refusal names a 4xx/5xx status.
#![no_main]

use appliance::http1::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Some((_req, used))) => assert!(used <= data.len()),
        Ok(None) => {}
        Err(e) => assert!(e.status.code() >= 400),
    }
});
