//! Property tests: every grant the signer mints verifies for its own request, and any single bit
//! flip anywhere in the token makes it fail.

use proptest::prelude::*;
use protocol::grant::{sign, Claims, ClientPrefix, KeyRing, Request, SigningKey, Verifier};

const NOW: u64 = 1_800_000_000;

fn seg() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,15}"
}

fn claims() -> impl Strategy<Value = (Claims, String, String)> {
    (
        seg(),
        prop::collection::vec(seg(), 1..4),
        seg(),
        seg(),
        1u64..21_600,
        proptest::option::of(prop::collection::vec(seg(), 1..4)),
        any::<[u8; 4]>(),
        any::<bool>(),
    )
        .prop_map(|(title, aud, sub, jti, ttl, renditions, ip, bind)| {
            let client_ip = std::net::IpAddr::from(ip);
            let file = match &renditions {
                Some(r) => format!("{}/seg-1.m4s", r[0]),
                None => "manifest.mpd".to_owned(),
            };
            let c = Claims {
                iss: "cp".into(),
                aud,
                sub,
                nbf: None,
                iat: NOW,
                exp: NOW + ttl,
                prefix: format!("/{title}/"),
                renditions,
                client: bind.then(|| ClientPrefix::binding_for(client_ip)),
                jti,
                scope: Default::default(),
            };
            (c, format!("/{title}/{file}"), client_ip.to_string())
        })
}

fn setup(seed: [u8; 32]) -> (SigningKey, KeyRing) {
    let key = SigningKey::from_seed("kp", seed).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_raw("kp", key.public_key_bytes()).unwrap();
    (key, ring)
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips((claims, resource, ip) in claims(), seed in any::<[u8; 32]>()) {
        let (key, ring) = setup(seed);
        let token = sign(&key, &claims).unwrap();
        let path = format!("/g/{token}{resource}");
        for aud in &claims.aud {
            let v = Verifier::new(ring.clone(), aud.clone());
            let got = v.verify(&Request { path: &path, client_ip: Some(ip.parse().unwrap()), now: NOW + 1 });
            prop_assert!(got.is_ok(), "{got:?}");
            prop_assert_eq!(&got.unwrap().claims, &claims);
        }
    }

    #[test]
    fn any_bit_flip_fails(
        (claims, resource, ip) in claims(),
        seed in any::<[u8; 32]>(),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (key, ring) = setup(seed);
        let token = sign(&key, &claims).unwrap();
        let mut bytes = token.into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // A flip may produce non-UTF-8 bytes; a request line with those never reaches the
        // verifier as a string, so only valid strings are checked.
        if let Ok(flipped) = String::from_utf8(bytes) {
            let path = format!("/g/{flipped}{resource}");
            let v = Verifier::new(ring, claims.aud[0].clone());
            let got = v.verify(&Request { path: &path, client_ip: Some(ip.parse().unwrap()), now: NOW + 1 });
            prop_assert!(got.is_err(), "flipped token accepted: {}", flipped);
        }
    }
}
