//! Fuzzes the catalog entry decoder (`catalog.json`, which appliances fetch and the control
//! plane imports): no input may panic, and an entry that decodes and validates must survive an
//! encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::catalog::CatalogEntry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entry) = CatalogEntry::from_json(text) {
        let _ = entry.total_bytes();
        if entry.validate().is_ok() {
            let again = CatalogEntry::from_json(&entry.to_json()).expect("re-decoding an encoded entry");
            assert_eq!(again, entry);
        }
    }
});
