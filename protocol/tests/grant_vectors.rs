//! Runs the committed grant test vectors (`fixtures/grants/vectors.json`): each case names the
//! verdict a conforming verifier must reach. Regenerate the file with
//! `cargo run -p protocol --example make_grant_vectors > fixtures/grants/vectors.json`.

use std::collections::BTreeSet;

use protocol::grant::{GrantError, KeyRing, Request, Verifier};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/grants/vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("fixtures/grants/vectors.json is readable");
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

#[test]
fn every_vector_gets_its_verdict() {
    let v = vectors();
    let mut ring = KeyRing::new();
    for k in v["public_keys"].as_array().unwrap() {
        ring.insert_pem(k["kid"].as_str().unwrap(), k["pem"].as_str().unwrap())
            .unwrap();
    }
    let mut seen = BTreeSet::new();
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let verifier = Verifier::new(ring.clone(), case["aud"].as_str().unwrap());
        let ip = case["client_ip"].as_str().map(|s| s.parse().unwrap());
        let req = Request {
            path: case["path"].as_str().unwrap(),
            client_ip: ip,
            now: case["now"].as_u64().unwrap(),
        };
        let got = match verifier.verify(&req) {
            Ok(_) => "valid",
            Err(e) => e.code(),
        };
        assert_eq!(got, case["expect"].as_str().unwrap(), "vector {name:?}");
        seen.insert(got);
    }
    // One vector at least per failure kind, plus valid ones.
    for code in GrantError::CODES.iter().chain(&["valid"]) {
        assert!(seen.contains(code), "no vector covers {code}");
    }
}
