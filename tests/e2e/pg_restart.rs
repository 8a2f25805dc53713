//! PostgreSQL restarted under load, with real processes: a private PostgreSQL cluster (initdb and
//! pg_ctl in a temporary directory on a free loopback port; never the suite's shared instance),
//! `outpost control-plane` on it, and client threads starting and ending playback sessions in a
//! loop while the database is stopped and started again. Every answer is checked: outside the
//! outage window every call succeeds; inside it the only refusal is 503 `database_unavailable`
//! with `Retry-After` (typed and retryable, never a 500 or a hang); the control plane reconnects
//! by itself (same process) and the leases it granted are all accounted for afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cli::{bin, cp_data as data, spawn_listening};
use crate::support::pg::Postgres;

/// Client threads.
const CLIENTS: usize = 3;
/// Successful starts required after the database is back.
const AFTER: usize = 30;
/// The account of each client (one session at a time each, so no plan limit is reached) and its
/// plan's concurrent streams.
const ACCOUNTS: [(&str, usize); CLIENTS] = [
    ("acct-standard", 2),
    ("acct-family", 3),
    ("acct-premium", 4),
];

/// One call: status, `Retry-After`, body. A hang fails the test (read timeout).
fn call(
    addr: &str,
    method: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> (u16, Option<String>, String) {
    call_with(addr, method, path, &[("Authorization", auth)], body)
}

fn call_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .expect("a complete answer (a hang fails here)");
    let (head, body) = out.split_once("\r\n\r\n").expect("an answer head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let retry_after = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().to_owned())
    });
    (status, retry_after, body.to_owned())
}

fn heartbeats(addr: &str) {
    for id in ["akl-1", "akl-2"] {
        let auth = format!("Bearer {id}-credential-0123456789");
        let (s, _, b) = call_with(
            addr,
            "POST",
            &format!("/v1/appliances/{id}/heartbeat"),
            &[("Authorization", &auth), ("Outpost-Appliance", id)],
            r#"{"health":"ok","load":0.1,"titles":["clear-title","enc-title"]}"#,
        );
        assert_eq!(s, 200, "{b}");
    }
}

/// One call as the clients saw it.
struct Seen {
    what: &'static str,
    /// Phase (0 before the outage, 1 during, 2 after) when sent, and when answered.
    sent: u8,
    answered: u8,
    status: u16,
    retry_after: Option<String>,
    body: String,
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl): run ./scripts/test"]
fn postgres_restarted_under_load_gives_typed_retryable_errors_only_inside_the_outage() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("cp");
    let dd = data_dir.to_str().unwrap();
    let url = pg.url();
    let o = Command::new(bin())
        .args([
            "control-plane",
            "--data-dir",
            dd,
            "--database",
            &url,
            "import",
        ])
        .arg(data("policy.toml"))
        .arg(data("clear-title/catalog.json"))
        .env_remove("OUTPOST_MASTER_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cp = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dd, "--database", &url])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--session-starts-per-minute",
                "100000",
            ])
            .args(["--session-start-burst", "100000"])
            .args(["--appliance-offline-after-secs", "600"])
            .env_remove("OUTPOST_MASTER_KEY")
            .env("OUTPOST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    let addr = cp.addr.clone();
    heartbeats(&addr);

    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ok_after = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, phase, stop, ok_after, seen) = (
                addr.clone(),
                phase.clone(),
                stop.clone(),
                ok_after.clone(),
                seen.clone(),
            );
            std::thread::spawn(move || {
                let record = |what, sent, (status, retry_after, body): (u16, Option<String>, String)| {
                    let answered = phase.load(Ordering::SeqCst);
                    seen.lock().unwrap().push(Seen {
                        what,
                        sent,
                        answered,
                        status,
                        retry_after,
                        body,
                    });
                    status
                };
                let account = ACCOUNTS[c].0;
                while !stop.load(Ordering::SeqCst) {
                    let sent = phase.load(Ordering::SeqCst);
                    let r = call(
                        &addr,
                        "POST",
                        "/v1/playback/sessions",
                        "Bearer playback-secret-0123456789",
                        &format!(
                            r#"{{"account_id":"{account}","device_class":"browser","title":"clear-title","client_ip":"127.0.0.1"}}"#
                        ),
                    );
                    let created: Option<serde_json::Value> =
                        (r.0 == 201).then(|| serde_json::from_str(&r.2).unwrap());
                    if record("start", sent, r) != 201 {
                        continue;
                    }
                    if sent == 2 {
                        ok_after.fetch_add(1, Ordering::SeqCst);
                    }
                    // End it; a refused end is retried (as a player would) until it succeeds.
                    let v = created.unwrap();
                    let path = format!("/v1/playback/sessions/{}", v["session_id"].as_str().unwrap());
                    let token = format!("Bearer {}", v["token"].as_str().unwrap());
                    loop {
                        let sent = phase.load(Ordering::SeqCst);
                        let r = call(&addr, "DELETE", &path, &token, "");
                        if record("end", sent, r) == 204 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    let count = |f: &dyn Fn(&Seen) -> bool| seen.lock().unwrap().iter().filter(|s| f(s)).count();

    wait_for("sessions to start before the outage", || {
        count(&|s| s.what == "start" && s.status == 201) >= 20
    });
    phase.store(1, Ordering::SeqCst);
    pg.ctl_stop();
    wait_for("calls refused during the outage", || {
        count(&|s| s.sent == 1 && s.status == 503) >= CLIENTS
    });
    // Liveness says so too, typed.
    let (s, retry, body) = call(&addr, "GET", "/healthz", "-", "");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("\"database_unavailable\""), "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    pg.ctl_start();
    phase.store(2, Ordering::SeqCst);
    wait_for("sessions to start after the database is back", || {
        ok_after.load(Ordering::SeqCst) >= AFTER
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("a client thread failed");
    }

    // The same control-plane process throughout: it reconnected by itself.
    assert!(
        cp.child.try_wait().unwrap().is_none(),
        "the control plane exited"
    );
    let seen = seen.lock().unwrap();
    let mut refused = 0;
    for s in seen.iter() {
        let ok = matches!((s.what, s.status), ("start", 201) | ("end", 204));
        if ok {
            continue;
        }
        refused += 1;
        assert!(
            s.sent == 1 || s.answered == 1,
            "{} refused outside the outage window (phase {} to {}): {} {}",
            s.what,
            s.sent,
            s.answered,
            s.status,
            s.body
        );
        let v: serde_json::Value = serde_json::from_str(&s.body)
            .unwrap_or_else(|_| panic!("{} answered {} with {:?}", s.what, s.status, s.body));
        assert_eq!(
            (s.status, v["code"].as_str()),
            (503, Some("database_unavailable")),
            "{}: {}",
            s.what,
            s.body
        );
        assert_eq!(
            s.retry_after.as_deref(),
            Some("1"),
            "{}: {}",
            s.what,
            s.body
        );
    }
    assert!(refused >= CLIENTS, "the outage refused calls");
    // Every session was ended: no lease leaked, every account can start its full plan again.
    for (account, streams) in ACCOUNTS {
        for i in 0..=streams {
            let (s, _, b) = call(
                &addr,
                "POST",
                "/v1/playback/sessions",
                "Bearer playback-secret-0123456789",
                &format!(
                    r#"{{"account_id":"{account}","device_class":"browser","title":"clear-title","client_ip":"127.0.0.1"}}"#
                ),
            );
            let want = if i < streams { 201 } else { 429 };
            assert_eq!(s, want, "{account} start {}: {b}", i + 1);
        }
    }
    let status = cp.terminate();
    assert!(status.success(), "control plane exited with {status}");
}
