//! End-to-end tests of `outpost keys` and `outpost grant` through the real binary.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use crate::support::cli::outpost;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn keygen(dir: &Path, kid: &str) {
    let o = outpost(&[
        "keys",
        "generate",
        "--out",
        dir.to_str().unwrap(),
        "--kid",
        kid,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn help_lists_every_subcommand() {
    let o = outpost(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for sub in [
        "package",
        "appliance",
        "control-plane",
        "demo",
        "keys",
        "grant",
    ] {
        assert!(text.contains(sub), "--help does not list {sub}:\n{text}");
        let h = outpost(&[sub, "--help"]);
        assert!(h.status.success(), "{sub} --help failed");
    }
}

#[test]
fn keys_generate_writes_private_key_0600_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "k1");
    let private = dir.path().join("k1.key.pem");
    let public = dir.path().join("k1.pub.pem");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode");
    assert!(std::fs::read_to_string(&private)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let again = outpost(&[
        "keys",
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--kid",
        "k1",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let bad = outpost(&[
        "keys",
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--kid",
        "../x",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--kid"));
}

#[test]
fn signed_grant_verifies_and_each_restriction_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    keygen(&keys, "k1");
    let key = keys.join("k1.key.pem");
    let o = outpost(&[
        "grant",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--aud",
        "isp-a,ix-1",
        "--prefix",
        "/tears/",
        "--ttl",
        "600",
        "--renditions",
        "video-240p,audio-aac",
        "--client-prefix",
        "192.0.2.0/24",
        "--sub",
        "session-1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = stdout(&o);
    let verify = |file: &str, aud: &str, ip: &str| {
        outpost(&[
            "grant",
            "verify",
            "--public-keys",
            keys.to_str().unwrap(),
            "--path",
            &format!("/g/{token}/{file}"),
            "--aud",
            aud,
            "--client-ip",
            ip,
        ])
    };
    let ok = verify("tears/video-240p/init.mp4", "ix-1", "192.0.2.77");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let claims: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(claims["claims"]["sub"], "session-1");
    assert_eq!(claims["rendition"], "video-240p");

    for (file, aud, ip, reason) in [
        (
            "tears/video-540p/init.mp4",
            "isp-a",
            "192.0.2.1",
            "rendition_not_allowed",
        ),
        ("tears/manifest.mpd", "isp-b", "192.0.2.1", "wrong_audience"),
        (
            "other/manifest.mpd",
            "isp-a",
            "192.0.2.1",
            "path_not_covered",
        ),
        (
            "tears/manifest.mpd",
            "isp-a",
            "198.51.100.1",
            "client_mismatch",
        ),
        ("tears/%2e%2e/x", "isp-a", "192.0.2.1", "malformed"),
    ] {
        let o = verify(file, aud, ip);
        assert_eq!(o.status.code(), Some(1), "{file} {aud} {ip}");
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["reason"], reason, "{file} {aud} {ip}");
    }
}

#[test]
fn sign_refuses_bad_input_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "k1");
    let key = dir.path().join("k1.key.pem");
    let k = key.to_str().unwrap();
    for (args, needle) in [
        (vec!["--aud", "a", "--prefix", "/t/", "--ttl", "0"], "--ttl"),
        (
            vec!["--aud", "a", "--prefix", "/t/", "--ttl", "999999"],
            "--ttl",
        ),
        (vec!["--aud", "a", "--prefix", "t", "--ttl", "60"], "prefix"),
        (
            vec!["--aud", "a", "--prefix", "/t/../", "--ttl", "60"],
            "prefix",
        ),
        (
            vec![
                "--aud",
                "a",
                "--prefix",
                "/t/",
                "--ttl",
                "60",
                "--client-prefix",
                "10.0.0.1/8",
            ],
            "host bits",
        ),
    ] {
        let mut full = vec!["grant", "sign", "--key", k];
        full.extend(args.iter());
        let o = outpost(&full);
        assert!(!o.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let pubkey = dir.path().join("k1.pub.pem");
    let o = outpost(&[
        "grant",
        "sign",
        "--key",
        pubkey.to_str().unwrap(),
        "--aud",
        "a",
        "--prefix",
        "/t/",
        "--ttl",
        "60",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key"));
}

/// Every committed test vector gets the same verdict through the CLI as through the library.
#[test]
fn cli_agrees_with_test_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/grants/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for k in v["public_keys"].as_array().unwrap() {
        let name = format!("{}.pub.pem", k["kid"].as_str().unwrap());
        std::fs::write(dir.path().join(name), k["pem"].as_str().unwrap()).unwrap();
    }
    for case in v["cases"].as_array().unwrap() {
        let now = case["now"].as_u64().unwrap().to_string();
        let mut args = vec![
            "grant",
            "verify",
            "--public-keys",
            dir.path().to_str().unwrap(),
            "--path",
            case["path"].as_str().unwrap(),
            "--aud",
            case["aud"].as_str().unwrap(),
            "--now",
            &now,
        ];
        if let Some(ip) = case["client_ip"].as_str() {
            args.extend(["--client-ip", ip]);
        }
        let o = outpost(&args);
        let out: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let expect = case["expect"].as_str().unwrap();
        if expect == "valid" {
            assert!(o.status.success(), "{}", case["name"]);
        } else {
            assert_eq!(o.status.code(), Some(1), "{}", case["name"]);
            assert_eq!(out["reason"], expect, "{}", case["name"]);
        }
    }
}
