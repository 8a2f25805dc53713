//! Fuzzes the fill-plan decoder and validator (what an appliance accepts from the control
//! plane): no input may panic; a plan that validates survives a round trip, and every removal
//! it lists names another copy and is not also planned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::fill::FillPlan;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<FillPlan>(data) else {
        return;
    };
    if plan.validate().is_ok() {
        for r in &plan.removals {
            assert!(!r.kept_at.is_empty());
            assert!(plan.titles.iter().all(|t| t.title != r.title));
        }
        for t in &plan.titles {
            for s in &t.sources {
                let _ = s.file_url(&t.title, "v1/init.mp4");
                let _ = s.object_key(&t.title, "v1/init.mp4");
            }
        }
        let text = serde_json::to_vec(&plan).unwrap();
        let again: FillPlan = serde_json::from_slice(&text).unwrap();
        assert_eq!(again, plan);
    }
});
