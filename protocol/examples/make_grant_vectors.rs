//! Writes the grant test vectors (`fixtures/grants/vectors.json`) to standard output:
//!
//! ```text
//! cargo run -p protocol --example make_grant_vectors > fixtures/grants/vectors.json
//! ```
//!
//! Everything is deterministic (fixed seeds, fixed clock, Ed25519 signatures are deterministic),
//! so the output is byte-identical on every run; `protocol/tests/grant_vectors.rs` checks both the
//! verdicts and that the committed file matches this generator.

use protocol::grant::{sign, Claims, ClientPrefix, SigningKey};
use serde_json::json;

/// The verifier's clock in every vector.
const NOW: u64 = 1_800_000_000;

fn base() -> Claims {
    Claims {
        iss: "outpost-control-plane".into(),
        aud: vec!["isp-a".into(), "ix-ams".into()],
        sub: "ps_8f14e45fceea167a".into(),
        nbf: None,
        iat: NOW - 120,
        exp: NOW + 3600,
        prefix: "/tears-of-steel/".into(),
        renditions: Some(vec![
            "video-240p".into(),
            "video-360p".into(),
            "audio-aac".into(),
        ]),
        client: Some("198.51.100.0/24".parse::<ClientPrefix>().unwrap()),
        jti: "j-0001".into(),
        scope: Default::default(),
    }
}

fn main() {
    let key = SigningKey::from_seed("k2026a", [7u8; 32]).unwrap();
    let other = SigningKey::from_seed("k2026a", [9u8; 32]).unwrap();
    let unknown = SigningKey::from_seed("k-retired", [7u8; 32]).unwrap();
    let good = sign(&key, &base()).unwrap();
    let open = sign(
        &key,
        &Claims {
            renditions: None,
            client: None,
            jti: "j-0002".into(),
            ..base()
        },
    )
    .unwrap();
    let v6 = sign(
        &key,
        &Claims {
            client: Some("2001:db8:aa00::/56".parse().unwrap()),
            jti: "j-0003".into(),
            ..base()
        },
    )
    .unwrap();
    let expired = sign(
        &key,
        &Claims {
            iat: NOW - 7200,
            exp: NOW - 61,
            ..base()
        },
    )
    .unwrap();
    let future = sign(
        &key,
        &Claims {
            nbf: Some(NOW + 61),
            ..base()
        },
    )
    .unwrap();
    let long = sign(
        &key,
        &Claims {
            exp: NOW + 7 * 3600,
            ..base()
        },
    )
    .unwrap();
    let foreign = sign(&other, &base()).unwrap();
    let by_unknown = sign(&unknown, &base()).unwrap();
    // Tampering: change one claim and keep the old signature.
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let widened = sign(
            &other,
            &Claims {
                prefix: "/other-title/".into(),
                ..base()
            },
        )
        .unwrap();
        let claims = widened.split('.').nth(1).unwrap().to_owned();
        format!("{}.{}.{}", parts[0], claims, parts[2])
    };
    let p = |tok: &str, file: &str| format!("/g/{tok}/tears-of-steel/{file}");
    let case = |name: &str, path: String, aud: &str, ip: Option<&str>, expect: &str| json!({"name": name, "path": path, "aud": aud, "client_ip": ip, "now": NOW, "expect": expect});
    let ip = Some("198.51.100.23");
    let cases = vec![
        case(
            "valid manifest",
            p(&good, "manifest.mpd"),
            "isp-a",
            ip,
            "valid",
        ),
        case(
            "valid rendition file",
            p(&good, "video-360p/video-360p.mp4"),
            "ix-ams",
            ip,
            "valid",
        ),
        case(
            "valid without restrictions",
            p(&open, "video-540p/seg-00001.m4s"),
            "isp-a",
            None,
            "valid",
        ),
        case(
            "valid ipv6 client in /56",
            p(&v6, "master.m3u8"),
            "isp-a",
            Some("2001:db8:aa00:42::9"),
            "valid",
        ),
        case(
            "valid ipv4-mapped client",
            p(&good, "master.m3u8"),
            "isp-a",
            Some("::ffff:198.51.100.200"),
            "valid",
        ),
        case(
            "expired beyond leeway",
            p(&expired, "manifest.mpd"),
            "isp-a",
            ip,
            "expired",
        ),
        case(
            "not yet valid beyond leeway",
            p(&future, "manifest.mpd"),
            "isp-a",
            ip,
            "not_yet_valid",
        ),
        case(
            "signed by another key with the same kid",
            p(&foreign, "manifest.mpd"),
            "isp-a",
            ip,
            "bad_signature",
        ),
        case(
            "claims swapped under the old signature",
            p(&tampered, "manifest.mpd"),
            "isp-a",
            ip,
            "bad_signature",
        ),
        case(
            "unknown key id",
            p(&by_unknown, "manifest.mpd"),
            "isp-a",
            ip,
            "unknown_key",
        ),
        case(
            "wrong audience",
            p(&good, "manifest.mpd"),
            "isp-b",
            ip,
            "wrong_audience",
        ),
        case(
            "path outside prefix",
            format!("/g/{good}/other-title/manifest.mpd"),
            "isp-a",
            ip,
            "path_not_covered",
        ),
        case(
            "prefix is not a segment prefix",
            format!("/g/{good}/tears-of-steel-2/manifest.mpd"),
            "isp-a",
            ip,
            "path_not_covered",
        ),
        case(
            "rendition not allowed",
            p(&good, "video-540p/video-540p.mp4"),
            "isp-a",
            ip,
            "rendition_not_allowed",
        ),
        case(
            "client outside prefix",
            p(&good, "manifest.mpd"),
            "isp-a",
            Some("198.51.101.23"),
            "client_mismatch",
        ),
        case(
            "client address missing",
            p(&good, "manifest.mpd"),
            "isp-a",
            None,
            "client_mismatch",
        ),
        case(
            "lifetime over policy",
            p(&long, "manifest.mpd"),
            "isp-a",
            ip,
            "lifetime_too_long",
        ),
        case(
            "two parts only",
            p(&good[..good.rfind('.').unwrap()], "manifest.mpd"),
            "isp-a",
            ip,
            "malformed",
        ),
        case(
            "padding in signature",
            p(&format!("{good}=="), "manifest.mpd"),
            "isp-a",
            ip,
            "malformed",
        ),
        case(
            "traversal after grant",
            p(&good, "..%2f..%2fetc/passwd"),
            "isp-a",
            ip,
            "malformed",
        ),
        case(
            "dot-dot segment",
            p(&good, "video-240p/../../secret"),
            "isp-a",
            ip,
            "malformed",
        ),
        case(
            "encoded dot-dot",
            p(&good, "%2e%2e/x"),
            "isp-a",
            ip,
            "malformed",
        ),
        case(
            "double slash",
            p(&good, "video-240p//x.m4s"),
            "isp-a",
            ip,
            "malformed",
        ),
        case(
            "missing grant prefix",
            "/tears-of-steel/manifest.mpd".to_owned(),
            "isp-a",
            ip,
            "malformed",
        ),
    ];
    let doc = json!({
        "description": "Outpost stream-grant test vectors. Verify each path with a Verifier for cluster `aud`, the given client_ip and clock `now`, the default 6 h lifetime cap and 60 s leeway; `expect` is `valid` or the GrantError code.",
        "public_keys": [{"kid": "k2026a", "pem": key.public_key_pem()}],
        "cases": cases,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}
