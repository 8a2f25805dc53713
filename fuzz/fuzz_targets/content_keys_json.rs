//! Fuzzes the content-keys file decoder (written by the packager, imported by the control
//! plane): no input may panic; a file that decodes and validates survives a round trip and
//! its keys decode to 16 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::content_keys::ContentKeys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = ContentKeys::from_json(text) {
        if keys.validate().is_ok() {
            for k in &keys.keys {
                let _ = (k.kid_bytes(), k.key_bytes());
            }
            let again = ContentKeys::from_json(&keys.to_json()).expect("re-decoding encoded keys");
            assert_eq!(again, keys);
        }
    }
});
