//! `outpost control-plane` end to end: the real binary imports the fixtures into its embedded
//! SQLite default, serves on a loopback port, and answers over a real socket.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::cli::{
    bin, cp_data as data, heartbeat_test_appliances, http, outpost, spawn_listening,
};

#[test]
fn import_then_serve_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cp");
    let dd = d.to_str().unwrap();
    let policy = data("policy.toml");
    let clear = data("clear-title/catalog.json");
    let enc = data("enc-title/catalog.json");
    let keys = data("enc-title.keys.json");
    let out = outpost(&[
        "control-plane",
        "--data-dir",
        dd,
        "import",
        policy.to_str().unwrap(),
        clear.to_str().unwrap(),
        enc.to_str().unwrap(),
        keys.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported policy: 4 plans, 5 accounts"),
        "{stdout}"
    );
    assert!(stdout.contains("imported title clear-title"));
    assert!(stdout.contains("imported 4 content keys for enc-title"));
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.join("master.key")), 0o600);
    assert!(d.join("control-plane.db").exists());

    let server = spawn_listening(
        Command::new(bin())
            .args([
                "control-plane",
                "--data-dir",
                dd,
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                "admin-token-0123456789",
            ])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::null()),
    );
    let addr = server.addr.clone();

    let (s, b) = http(&addr, "GET", "/healthz", &[], "");
    assert_eq!((s, b.contains("sqlite")), (200, true), "{b}");
    // The signing key was generated into the data directory, mode 0600, and is published.
    let key_files: Vec<PathBuf> = std::fs::read_dir(d.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(key_files.len(), 1);
    assert_eq!(mode(key_files[0].clone()), 0o600);
    let (s, b) = http(&addr, "GET", "/v1/keys", &[], "");
    assert_eq!(s, 200);
    let kid = key_files[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_suffix(".key.pem")
        .unwrap()
        .to_owned();
    assert!(b.contains(&kid) && b.contains("\"alg\":\"Ed25519\""), "{b}");

    heartbeat_test_appliances(&addr);
    let (s, b) = http(
        &addr,
        "POST",
        "/v1/playback/sessions",
        &[
            ("Authorization", "Bearer playback-secret-0123456789"),
            ("Content-Type", "application/json"),
        ],
        r#"{"account_id":"acct-standard","device_class":"browser","title":"enc-title","client_ip":"127.0.0.1"}"#,
    );
    assert_eq!(s, 201, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["tier"], "HD");
    assert!(v["manifests"]["hls"]
        .as_str()
        .unwrap()
        .starts_with(&format!("http://{addr}/v1/playback/sessions/")));
    let (s, m) = http(
        &addr,
        "GET",
        v["manifests"]["dash"]
            .as_str()
            .unwrap()
            .strip_prefix(&format!("http://{addr}"))
            .unwrap(),
        &[],
        "",
    );
    assert_eq!(s, 200);
    assert!(m.contains("<ContentSteering"), "{m}");

    let (s, b) = http(&addr, "GET", "/openapi.json", &[], "");
    assert_eq!(s, 200);
    let doc: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(doc["paths"]["/v1/playback/sessions"]["post"].is_object());
    let (s, b) = http(&addr, "GET", "/metrics", &[], "");
    assert_eq!(s, 200);
    assert!(b.contains("outpost_cp_sessions_started_total 1"), "{b}");
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cp.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nlease_seconds = 5\n").unwrap();
    let out = outpost(&["control-plane", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lease_seconds") && err.contains("cp.toml"),
        "{err}"
    );

    std::fs::write(&cfg, "lease_secs = 5\n").unwrap();
    let out = outpost(&["control-plane", "--config", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease_secs"));

    let bad = dir.path().join("policy.json");
    std::fs::write(&bad, r#"{"plans":[{"id":"p","max_tier":"HD","max_streams":1}],"accounts":[{"id":"a","plan":"q","status":"active"}]}"#).unwrap();
    let dd = dir.path().join("cp");
    let out = outpost(&[
        "control-plane",
        "--data-dir",
        dd.to_str().unwrap(),
        "import",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.json") && err.contains("accounts[0].plan"),
        "{err}"
    );
}

/// The packager's real output (both modes) imports, and its manifests are rewritten per
/// session: every variant repeated per pathway, one BaseURL per appliance.
#[test]
fn packager_output_imports_and_plays() {
    let dir = tempfile::tempdir().unwrap();
    let titles = dir.path().join("titles");
    let media = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/media/ladder-h264");
    let inputs: Vec<String> = ["video-240p", "video-360p", "video-540p", "audio-aac"]
        .iter()
        .map(|n| media.join(format!("{n}.mp4")).display().to_string())
        .collect();
    for (title, extra) in [("ondemand", None), ("segmented", Some("--segmented"))] {
        let mut args = vec![
            "package",
            "--title",
            title,
            "--out",
            titles.to_str().unwrap(),
        ];
        args.extend(extra);
        args.extend(inputs.iter().map(String::as_str));
        let out = outpost(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let windows = dir.path().join("windows.json");
    std::fs::write(
        &windows,
        r#"{"windows":[{"title":"ondemand","country":"NZ","start":0,"end":4102444800,"max_tier":"UHD"},
                       {"title":"segmented","country":"NZ","start":0,"end":4102444800,"max_tier":"UHD"}]}"#,
    )
    .unwrap();
    let d = dir.path().join("cp");
    let dd = d.to_str().unwrap();
    let policy = data("policy.toml");
    let c1 = titles.join("ondemand/catalog.json");
    let c2 = titles.join("segmented/catalog.json");
    let out = outpost(&[
        "control-plane",
        "--data-dir",
        dd,
        "import",
        policy.to_str().unwrap(),
        windows.to_str().unwrap(),
        c1.to_str().unwrap(),
        c2.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dd, "--listen", "127.0.0.1:0"])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::null()),
    );
    let addr = server.addr.clone();
    for title in ["ondemand", "segmented"] {
        let (s, b) = http(
            &addr,
            "POST",
            "/v1/playback/sessions",
            &[
                ("Authorization", "Bearer playback-secret-0123456789"),
                ("Content-Type", "application/json"),
            ],
            &format!(
                r#"{{"account_id":"acct-premium","device_class":"browser","title":"{title}","client_ip":"127.0.0.1"}}"#
            ),
        );
        assert_eq!(s, 201, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        // Only the origin is online (no appliance heartbeats here): one pathway.
        assert_eq!(v["appliances"].as_array().unwrap().len(), 1);
        // Manifests carry freshly minted grants (new jti), so compare around the token.
        let host = "http://127.0.0.31:8084/g/";
        let path = |u: &serde_json::Value| {
            u.as_str()
                .unwrap()
                .strip_prefix(&format!("http://{addr}"))
                .unwrap()
                .to_owned()
        };
        let (s, m) = http(&addr, "GET", &path(&v["manifests"]["hls"]), &[], "");
        assert_eq!(s, 200);
        assert_eq!(m.matches("#EXT-X-STREAM-INF").count(), 3, "{m}");
        assert!(m.contains(&format!("URI=\"{host}")), "{m}");
        assert!(
            m.contains(&format!("/{title}/audio-aac/index.m3u8\"")),
            "{m}"
        );
        assert!(
            m.contains(&format!("/{title}/video-540p/index.m3u8\n")),
            "{m}"
        );
        let (s, m) = http(&addr, "GET", &path(&v["manifests"]["dash"]), &[], "");
        assert_eq!(s, 200);
        assert!(
            m.contains(&format!("<BaseURL serviceLocation=\"origin-1\">{host}")),
            "{m}"
        );
        assert!(m.contains(&format!("/{title}/</BaseURL>")), "{m}");
        assert_eq!(m.matches("<Representation ").count(), 4, "{m}");
    }
}
