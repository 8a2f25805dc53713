//! Clock skew between an appliance and the control plane, with real processes: `outpost
//! control-plane` (embedded SQLite, grants living 600 s) mints playback grants; `outpost
//! appliance` verifies them with the control plane's published keys while running under
//! libfaketime with its clock offset. Within the verifiers' leeway
//! ([`protocol::grant::CLOCK_LEEWAY_SECS`], 60 s) on either side the grant is accepted and the
//! exact bytes served; beyond it the grant is refused with 403 and the documented code
//! (`not_yet_valid` for an appliance clock behind, `expired` for one ahead past `exp`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cli::{bin, cp_data as data, http, outpost, spawn_listening, Listening};

/// The grant lifetime the control plane is started with, seconds.
const TTL: u64 = 600;

/// libfaketime's multi-threaded preload library (Debian package `faketime`).
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is not installed: run ./scripts/test")
}

fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, out[at..].to_vec())
}

/// A session started now: its grant for the `isp-akl` cluster, and the session ended again.
fn fresh_grant(cp: &str) -> String {
    let (s, b) = http(
        cp,
        "POST",
        "/v1/playback/sessions",
        &[
            ("Authorization", "Bearer playback-secret-0123456789"),
            ("Content-Type", "application/json"),
        ],
        r#"{"account_id":"acct-premium","device_class":"browser","title":"clear-title","client_ip":"127.0.0.1"}"#,
    );
    assert_eq!(s, 201, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let grant = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["cluster"] == "isp-akl")
        .unwrap_or_else(|| panic!("no isp-akl appliance in {v}"))["grant"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::support::cli::end_session(cp, &v);
    grant
}

#[test]
#[ignore = "needs libfaketime (Debian package faketime): run ./scripts/test"]
fn grants_are_accepted_within_the_clock_leeway_and_refused_beyond_it() {
    let faketime = libfaketime();
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
    let ttl = TTL.to_string();
    let cp: Listening = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dd, "--listen", "127.0.0.1:0"])
            .args(["--grant-ttl-secs", &ttl])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::null()),
    );
    for id in ["akl-1", "akl-2"] {
        let (s, b) = http(
            &cp.addr,
            "POST",
            &format!("/v1/appliances/{id}/heartbeat"),
            &[
                (
                    "Authorization",
                    &format!("Bearer {id}-credential-0123456789"),
                ),
                ("Outpost-Appliance", id),
                ("Content-Type", "application/json"),
            ],
            r#"{"health":"ok","load":0.1,"titles":["clear-title"]}"#,
        );
        assert_eq!(s, 200, "{b}");
    }
    // The appliance's key directory: the control plane's published keys, as its agent writes it.
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (s, b) = http(&cp.addr, "GET", "/v1/keys", &[], "");
    assert_eq!(s, 200, "{b}");
    let published: serde_json::Value = serde_json::from_str(&b).unwrap();
    for k in published["keys"].as_array().unwrap() {
        std::fs::write(
            keys.join(format!("{}.pub.pem", k["kid"].as_str().unwrap())),
            k["pem"].as_str().unwrap(),
        )
        .unwrap();
    }
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("clear-title")).unwrap();
    let playlist = b"#EXTM3U\n#EXT-X-VERSION:7\n# clock skew test\n";
    std::fs::write(cache.join("clear-title/master.m3u8"), playlist).unwrap();

    let leeway = protocol::grant::CLOCK_LEEWAY_SECS as i64;
    let ttl = TTL as i64;
    // (appliance clock offset in seconds, the refusal code expected; None: accepted)
    let cases: [(i64, Option<&str>); 5] = [
        (0, None),
        (-(leeway - 10), None),
        (ttl + leeway - 30, None),
        (-(leeway * 5), Some("not_yet_valid")),
        (ttl + leeway + 60, Some("expired")),
    ];
    for (offset, refusal) in cases {
        let appliance = spawn_listening(
            Command::new(bin())
                .args(["appliance", "--id", "akl-1", "--cluster", "isp-akl"])
                .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
                .args(["--threads", "1", "--backend", "epoll", "--public-keys"])
                .arg(&keys)
                .arg("--cache-dir")
                .arg(&cache)
                .env("LD_PRELOAD", &faketime)
                .env("FAKETIME", format!("{offset:+}s"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .stderr(Stdio::null()),
        );
        // Minted after the appliance is up: the offset alone separates the two clocks.
        let grant = fresh_grant(&cp.addr);
        let (s, body) = get(
            &appliance.addr,
            &format!("/g/{grant}/clear-title/master.m3u8"),
        );
        match refusal {
            None => {
                assert_eq!(
                    s,
                    200,
                    "offset {offset:+} s: {}",
                    String::from_utf8_lossy(&body)
                );
                assert_eq!(body, playlist, "offset {offset:+} s");
            }
            Some(code) => {
                let text = String::from_utf8_lossy(&body);
                assert_eq!(s, 403, "offset {offset:+} s: {text}");
                assert!(text.contains(code), "offset {offset:+} s: {text}");
                let (_, m) = get(appliance.admin(), "/metrics");
                let m = String::from_utf8(m).unwrap();
                let line = format!("outpost_appliance_grant_refusals_total{{reason=\"{code}\"}} 1");
                assert!(m.contains(&line), "offset {offset:+} s: no {line}");
            }
        }
        drop(appliance);
    }
}
