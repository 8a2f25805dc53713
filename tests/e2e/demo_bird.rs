//! `outpost demo` with BIRD installed: BIRD runs as the demo ISP's router, a child of the demo,
//! and the control plane steers the player page's sessions by the routes BIRD announces over BGP,
//! not by policy prefixes. The real binary, a real BIRD 2 and real BGP sessions on loopback,
//! observed through the control plane's public API (fleet view, metrics, sessions started by the
//! player page's route) and `birdc`; BIRD's announcements are changed with `birdc` to show that
//! they, and nothing else, move the sessions. The same data directory then runs `--no-bird`:
//! policy prefixes steer, and nothing of the BGP run lingers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cli::{bin, http, spawn_listening, Listening};
use crate::support::demo::{free_ports, SERIAL};

/// How long a change in BIRD may take to reach steering: the BGP update, a heartbeat (every 2 s
/// in the demo), the control plane's snapshot; generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn json(host: &str, path: &str) -> Value {
    let (s, b) = http(host, "GET", path, &[], "");
    assert_eq!(s, 200, "GET {path}: {b}");
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("GET {path}: {e}: {b}"))
}

/// Starts a session through the player page's route (the client is this test, on 127.0.0.1,
/// as a browser would be), ends it at once (the member's stream limit), and returns its steering
/// reason and the clusters of its ranked appliances.
fn session(host: &str) -> (String, Vec<String>) {
    let (s, b) = http(
        host,
        "POST",
        "/demo/api/sessions",
        &[("Content-Type", "application/json")],
        r#"{"title":"demo-h264","device":"desktop-browser"}"#,
    );
    assert_eq!(s, 201, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    crate::support::cli::end_session(host, &v);
    let clusters = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["cluster"].as_str().unwrap().to_owned())
        .collect();
    (v["steering_reason"].as_str().unwrap().to_owned(), clusters)
}

/// The fleet view's BGP site of `cluster`, if it has one.
fn site(host: &str, cluster: &str) -> Option<Value> {
    json(host, "/v1/fleet")["bgp_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cluster"] == cluster)
        .cloned()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

fn birdc(data: &Path, args: &[&str]) -> String {
    let o = Command::new("birdc")
        .arg("-s")
        .arg(data.join("bird/bird.ctl"))
        .args(args)
        .output()
        .expect("birdc is not installed (Debian package bird2): run ./scripts/test");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "birdc {args:?}: {out}");
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[test]
#[ignore = "needs BIRD 2 (Debian package bird2): run ./scripts/test"]
fn the_demo_steers_by_what_bird_announces() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (mut demo, said) = start(&data, &[]);
    let host = demo.addr.trim_start_matches("http://").to_owned();

    // It said at start that BIRD steers, and printed its URL only once BGP steered.
    assert!(
        said.contains("demo: steering: BIRD 2.")
            && said.contains("announces 0.0.0.0/0 and ::/0 over BGP to isp-ams-1, isp-ams-2"),
        "{said}"
    );
    assert!(
        said.contains("the control plane steers from BIRD's routes"),
        "{said}"
    );
    // The policy carries no prefix: only BGP can steer.
    let policy = std::fs::read_to_string(data.join("control-plane/demo-policy.toml")).unwrap();
    let prefixes: Vec<&str> = policy
        .lines()
        .filter(|l| l.starts_with("prefixes"))
        .collect();
    assert!(
        prefixes.len() == 4 && prefixes.iter().all(|l| *l == "prefixes = []"),
        "{policy}"
    );

    // Every embedded appliance and the exchange report an established session with BIRD and
    // its two routes; the control plane steers both sites by them.
    let fleet = json(&host, "/v1/fleet");
    for a in fleet["appliances"].as_array().unwrap() {
        if a["cluster_kind"] == "origin" {
            assert!(a["bgp"].is_null(), "{a}");
            continue;
        }
        let sessions = a["bgp"]["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1, "{a}");
        assert_eq!(sessions[0]["state"], "established", "{a}");
        assert_eq!(sessions[0]["asn"], 64500, "{a}");
        assert_eq!(sessions[0]["routes"], 2, "{a}");
    }
    let isp = site(&host, "isp-ams").expect("no BGP site isp-ams");
    assert_eq!(
        isp["appliances"],
        serde_json::json!(["isp-ams-1", "isp-ams-2"])
    );
    assert_eq!(isp["routes"], 2, "{isp}");
    assert_eq!(isp["inconsistent"], false, "{isp}");
    let (_, m) = http(&host, "GET", "/metrics", &[], "");
    for line in [
        "outpost_cp_bgp_sessions{state=\"established\"} 3",
        "outpost_cp_bgp_site_routes{cluster=\"isp-ams\"} 2",
        "outpost_cp_bgp_site_routes{cluster=\"ix-ams\"} 2",
        "outpost_cp_bgp_site_inconsistent{cluster=\"isp-ams\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line} in\n{m}");
    }

    // The page's session (client 127.0.0.1) is steered by BIRD's default route to the embedded
    // cluster, then the exchange, which hears it with a longer AS path, then origin.
    let (reason, clusters) = session(&host);
    assert!(
        reason.starts_with("prefix 0.0.0.0/0 -> cluster isp-ams ->"),
        "{reason}"
    );
    assert_eq!(
        clusters,
        ["isp-ams", "isp-ams", "ix-ams", "origin"],
        "{reason}"
    );

    // BIRD stops announcing to the embedded cluster: its clients go to the exchange.
    for p in ["isp_ams_1", "isp_ams_2"] {
        birdc(&data, &["disable", p]);
    }
    wait_for("isp-ams without BGP routes in the fleet view", || {
        site(&host, "isp-ams").is_none()
    });
    let (reason, clusters) = session(&host);
    assert!(
        reason.starts_with("prefix 0.0.0.0/0 -> cluster ix-ams ->"),
        "{reason}"
    );
    assert_eq!(
        clusters.first().map(String::as_str),
        Some("ix-ams"),
        "{reason}"
    );

    // And back once BIRD announces to it again.
    for p in ["isp_ams_1", "isp_ams_2"] {
        birdc(&data, &["enable", p]);
    }
    wait_for("isp-ams steered by both appliances again", || {
        site(&host, "isp-ams").is_some_and(|s| {
            s["appliances"].as_array().is_some_and(|a| a.len() == 2) && s["routes"] == 2
        })
    });
    let (reason, _) = session(&host);
    assert!(
        reason.starts_with("prefix 0.0.0.0/0 -> cluster isp-ams ->"),
        "{reason}"
    );

    // Ctrl-C stops BIRD with the rest.
    let bird: u32 = std::fs::read_to_string(data.join("bird/bird.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(bird), "BIRD {bird} is not running");
    let pid = nix::unistd::Pid::from_raw(demo.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exit status {status}");
    assert!(
        !alive(bird),
        "BIRD {bird} still runs after the demo stopped"
    );

    // The same data directory without BIRD: the policy's loopback prefixes steer, and the BGP
    // state the appliances reported in the first run is gone from the control plane.
    let (demo, said) = start(&data, &["--no-bird"]);
    let host = demo.addr.trim_start_matches("http://").to_owned();
    assert!(
        said.contains(
            "demo: steering: policy prefixes 127.0.0.0/8, ::1/128 on the embedded cluster (--no-bird)"
        ),
        "{said}"
    );
    let (reason, _) = session(&host);
    assert!(
        reason.starts_with("prefix 127.0.0.0/8 -> cluster isp-ams ->"),
        "{reason}"
    );
    wait_for("no BGP state left in the fleet view", || {
        let fleet = json(&host, "/v1/fleet");
        fleet["bgp_sites"] == serde_json::json!([])
            && fleet["appliances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["bgp"].is_null())
    });
}

/// Starts `outpost demo` on `data` with two embedded appliances and `extra` flags; returns it
/// once it printed its URL, with what it wrote to standard error until then.
fn start(data: &Path, extra: &[&str]) -> (Listening, String) {
    let stderr = data.with_extension(format!("{}stderr.log", extra.join("")));
    let port = free_ports(1);
    let base = free_ports(4);
    let demo = spawn_listening(
        Command::new(bin())
            .arg("demo")
            .arg("--data-dir")
            .arg(data)
            .args(["--port", &port.to_string(), "--appliances", "2"])
            .args(["--appliance-base-port", &base.to_string()])
            .arg("--no-browser-assets")
            .args(extra)
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap())),
    );
    let said = std::fs::read_to_string(&stderr).unwrap();
    eprintln!("{said}");
    (demo, said)
}
