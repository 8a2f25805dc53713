//! The control plane restarted in the middle of playback (SIGTERM, then the same binary on the
//! same data directory and address): sessions, their leases and the concurrent-stream count
//! continue from the database, appliances' heartbeats are accepted again, and a session's
//! heartbeat after the restart gets fresh grants.

use std::process::{Command, Stdio};

use crate::support::cli::{
    bin, cp_data as data, heartbeat_test_appliances, http, outpost, spawn_listening, Listening,
};

/// Starts `outpost control-plane` on `listen`.
fn serve(dir: &str, listen: &str) -> Listening {
    spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dir, "--listen", listen])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::null()),
    )
}

fn start(addr: &str) -> (u16, serde_json::Value) {
    let (s, b) = http(
        addr,
        "POST",
        "/v1/playback/sessions",
        &[
            ("Authorization", "Bearer playback-secret-0123456789"),
            ("Content-Type", "application/json"),
        ],
        r#"{"account_id":"acct-standard","device_class":"browser","title":"clear-title","client_ip":"127.0.0.1"}"#,
    );
    (
        s,
        serde_json::from_str(&b).unwrap_or_else(|_| panic!("{b}")),
    )
}

/// `POST` or `DELETE` on the session with its own token.
fn session_call(addr: &str, method: &str, v: &serde_json::Value, suffix: &str) -> (u16, String) {
    let id = v["session_id"].as_str().unwrap();
    let token = format!("Bearer {}", v["token"].as_str().unwrap());
    http(
        addr,
        method,
        &format!("/v1/playback/sessions/{id}{suffix}"),
        &[("Authorization", &token)],
        "",
    )
}

#[test]
fn sessions_and_leases_continue_across_a_control_plane_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cp");
    let dd = d.to_str().unwrap();
    let o = outpost(&[
        "control-plane",
        "--data-dir",
        dd,
        "import",
        data("policy.toml").to_str().unwrap(),
        data("clear-title/catalog.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cp = serve(dd, "127.0.0.1:0");
    let addr = cp.addr.clone();
    heartbeat_test_appliances(&addr);
    // The standard plan allows two streams: both taken, a third refused.
    let (s1, a) = start(&addr);
    let (s2, b) = start(&addr);
    assert_eq!((s1, s2), (201, 201), "{a} {b}");
    let (s, v) = start(&addr);
    assert_eq!(
        (s, v["code"].as_str()),
        (429, Some("concurrent_limit")),
        "{v}"
    );

    // Restart in the middle of playback, at the same address.
    let status = cp.terminate();
    assert!(status.success(), "control plane exited with {status}");
    let again = serve(dd, &addr);
    assert_eq!(again.addr, addr);
    heartbeat_test_appliances(&addr);
    // Both sessions are still there: their heartbeats extend the lease with fresh grants.
    for v in [&a, &b] {
        let (s, body) = session_call(&addr, "POST", v, "/heartbeat");
        assert_eq!(s, 200, "{body}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            h["lease_expires_at"].as_u64().unwrap() >= v["lease_expires_at"].as_u64().unwrap(),
            "{h}"
        );
        assert!(!h["appliances"].as_array().unwrap().is_empty(), "{h}");
        let m = v["manifests"]["hls"].as_str().unwrap();
        let (s, playlist) = http(
            &addr,
            "GET",
            m.strip_prefix(&format!("http://{addr}")).unwrap(),
            &[],
            "",
        );
        assert_eq!(s, 200);
        assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    }
    // The leases outlived the restart: the account is still at its limit.
    let (s, v) = start(&addr);
    assert_eq!(
        (s, v["code"].as_str()),
        (429, Some("concurrent_limit")),
        "{v}"
    );
    // Ending one frees a stream.
    let (s, _) = session_call(&addr, "DELETE", &a, "");
    assert_eq!(s, 204);
    let (s, v) = start(&addr);
    assert_eq!(s, 201, "{v}");
}
