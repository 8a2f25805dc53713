//! Fuzzes the fleet messages the control plane accepts from appliances (registration and
//! heartbeat, with held titles and fill status): no input may panic, and a heartbeat that
//! validates survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::fleet::{Heartbeat, Registration};

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = serde_json::from_slice::<Heartbeat>(data) {
        if hb.validate().is_ok() {
            let again: Heartbeat = serde_json::from_slice(&serde_json::to_vec(&hb).unwrap()).unwrap();
            assert_eq!(again, hb);
        }
    }
    let _ = serde_json::from_slice::<Registration>(data);
});
