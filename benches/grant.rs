//! Cost of minting and checking stream grants: signing (control plane, per session and
//! appliance), a full verification (appliance, first request of a session), and the per-request
//! work once the token's verification is cached (path canonicalisation + `authorize`).
//!
//! `cargo bench --bench grant`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use protocol::grant::{
    authorize, sign, split_grant_path, Claims, ClientPrefix, KeyRing, Request, SigningKey, Verifier,
};

const NOW: u64 = 1_800_000_000;

fn claims() -> Claims {
    Claims {
        iss: "outpost-control-plane".into(),
        aud: vec!["isp-a".into(), "ix-ams".into()],
        sub: "ps_8f14e45fceea167a".into(),
        nbf: None,
        iat: NOW,
        exp: NOW + 3600,
        prefix: "/tears-of-steel/".into(),
        renditions: Some(vec![
            "video-240p".into(),
            "video-360p".into(),
            "audio-aac".into(),
        ]),
        client: Some(ClientPrefix::binding_for("198.51.100.7".parse().unwrap())),
        jti: "j-0001".into(),
        scope: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_seed("k1", [7; 32]).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_raw("k1", key.public_key_bytes()).unwrap();
    let verifier = Verifier::new(ring, "isp-a");
    let claims = claims();
    let token = sign(&key, &claims).unwrap();
    let path = format!("/g/{token}/tears-of-steel/video-360p/seg-00042.m4s");
    let ip = "198.51.100.77".parse().unwrap();

    c.bench_function("grant/sign", |b| {
        b.iter(|| sign(&key, black_box(&claims)).unwrap())
    });
    c.bench_function("grant/verify_full", |b| {
        b.iter(|| {
            verifier
                .verify(&Request {
                    path: black_box(&path),
                    client_ip: Some(ip),
                    now: NOW + 5,
                })
                .unwrap()
        })
    });
    c.bench_function("grant/per_request_cached", |b| {
        b.iter(|| {
            let (_tok, res) = split_grant_path(black_box(&path)).unwrap();
            authorize(&claims, &res, Some(ip)).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
