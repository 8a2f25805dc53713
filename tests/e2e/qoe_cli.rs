//! QoE through the real `outpost appliance` binary (issue 16): CMCD in the query argument reaches
//! the JSON access log (`--access-log`) and the session summaries (admin `/qoe/sessions`),
//! CMSD headers come back (with `mb` under `--cmsd-overload`), `--no-qoe` turns it all off, and a
//! bad flag value is refused naming the flag.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cli::{key_pair, spawn_listening, Listening};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");

fn keys(dir: &Path) -> String {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    key_pair(dir);
    let key = dir.join("private/k1.key.pem");
    run(&[
        "grant",
        "sign",
        "--aud",
        "isp-a",
        "--prefix",
        "/tears/",
        "--ttl",
        "600",
        "--key",
        key.to_str().unwrap(),
    ])
    .trim()
    .to_owned()
}

fn start(dir: &Path, extra: &[&str]) -> Listening {
    let cache = dir.join("cache");
    spawn_listening(
        Command::new(BIN)
            .arg("appliance")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args([
                "--cluster",
                "isp-a",
                "--id",
                "oca-qoe-e2e",
                "--backend",
                "epoll",
            ])
            .args(["--public-keys", dir.join("public").to_str().unwrap()])
            .args(["--cache-dir", cache.to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::inherit()),
    )
}

/// One request over a fresh connection: the head (text) and the body.
fn get(addr: &str, target: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (
        String::from_utf8_lossy(&all[..end]).into_owned(),
        all[end..].to_vec(),
    )
}

#[test]
fn cmcd_reaches_the_access_log_and_sessions_and_cmsd_answers() {
    let dir = tempfile::tempdir().unwrap();
    let grant = keys(dir.path());
    let seg: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let rendition = dir.path().join("cache/tears/video-240p");
    std::fs::create_dir_all(&rendition).unwrap();
    std::fs::write(rendition.join("seg-1.m4s"), &seg).unwrap();
    let log = dir.path().join("access.jsonl");
    let a = start(
        dir.path(),
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--cmsd-overload",
            "1",
            "--cmsd-max-bitrate-kbps",
            "800",
        ],
    );
    // What Shaka Player sends in query mode.
    let cmcd = "CMCD=br%3D450%2Cbl%3D4000%2Ccid%3D%22tears%22%2Cd%3D2000%2Cmtp%3D12000%2Cot%3Dv%2Csf%3Dd%2Csid%3D%22e2e-session-1%22%2Cst%3Dv%2Ctb%3D1200";
    let (head, body) = get(
        &a.addr,
        &format!("/g/{grant}/tears/video-240p/seg-1.m4s?{cmcd}"),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, seg);
    assert!(head.contains("\r\nCMSD-Static: ot=v,st=v\r\n"), "{head}");
    assert!(
        head.contains("\r\nCMSD-Dynamic: \"oca-qoe-e2e\";mb=800\r\n"),
        "{head}"
    );
    let expose = head
        .lines()
        .find_map(|l| l.strip_prefix("Access-Control-Expose-Headers: "))
        .unwrap();
    assert!(
        expose.contains("CMSD-Static") && expose.contains("CMSD-Dynamic"),
        "{expose}"
    );
    // The writer thread appends the line; wait boundedly for it, then check its content.
    let mut text = String::new();
    for _ in 0..500 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.ends_with('\n') {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["cmcd"]["sid"], "e2e-session-1", "{line}");
    assert_eq!(line["cmcd"]["cid"], "tears");
    assert_eq!(line["cmcd"]["ot"], "v");
    assert_eq!(line["cmcd"]["br"], 450);
    assert_eq!(line["status"], 200);
    assert_eq!(line["path"], "/tears/video-240p/seg-1.m4s");
    let (head, body) = get(a.admin(), "/qoe/sessions");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sessions: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sessions[0]["sid"], "e2e-session-1", "{sessions}");
    assert_eq!(sessions[0]["avg_bitrate_kbps"], 450);
    let (_, metrics) = get(a.admin(), "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("outpost_appliance_cmcd_requests_total 1"),
        "{metrics}"
    );
    drop(a);

    // --no-qoe: the same bytes, no CMSD, no QoE routes.
    let b = start(dir.path(), &["--no-qoe"]);
    let (head, body) = get(
        &b.addr,
        &format!("/g/{grant}/tears/video-240p/seg-1.m4s?{cmcd}"),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, seg);
    assert!(!head.contains("CMSD-Dynamic:"), "{head}");
    assert!(get(b.admin(), "/qoe/sessions")
        .0
        .starts_with("HTTP/1.1 404"));
}

#[test]
fn bad_qoe_flags_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    for (args, needle) in [
        (vec!["--access-log-sample", "2"], "--access-log-sample"),
        (vec!["--cmsd-overload", "10"], "--cmsd-max-bitrate-kbps"),
        (
            vec!["--access-log", "/nonexistent-dir/x/access.log"],
            "--access-log",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("appliance")
            .args(["--listen", "127.0.0.1:0", "--cluster", "isp-a"])
            .args(["--public-keys", dir.path().join("public").to_str().unwrap()])
            .args(["--cache-dir", dir.path().join("cache").to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
