//! Two `outpost control-plane` replicas on one private PostgreSQL cluster (initdb and pg_ctl in a
//! temporary directory on a free loopback port, as in `pg_restart.rs`), sharing the data
//! directory's signing keys and one master key, as replicas behind a load balancer do:
//! - 100 parallel session starts spread over both, on a plan of 3 streams: exactly 3 succeed
//!   (the lease is counted and inserted in one database transaction);
//! - both answer the same fill plan (titles) for an appliance;
//! - two starts with one `Idempotency-Key` sent to different replicas at once take one lease and
//!   get the same answer; the key with another body is 409 `idempotency_conflict`;
//! - the playback service's retrying client (`control_plane::client::PlaybackClient`) takes one
//!   lease per start when a replica takes the lease and its answer is lost on the way back, and
//!   when a replica is killed under load: every start is answered (a session or a refusal), none
//!   fails for want of a replica.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use control_plane::client::{ClientError, PlaybackClient};
use control_plane::entitlement::StartRequest;

use crate::support::cli::{bin, cp_data as data, spawn_listening, Listening};
use crate::support::pg::Postgres;

/// One HTTP/1.1 call: status and body.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
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
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an answer head");
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

const PLAYBACK: &str = "Bearer playback-secret-0123456789";

fn start_body(account: &str) -> String {
    format!(
        r#"{{"account_id":"{account}","device_class":"browser","title":"clear-title","client_ip":"127.0.0.1"}}"#
    )
}

fn start(addr: &str, account: &str, key: Option<&str>) -> (u16, String) {
    let mut headers = vec![("Authorization", PLAYBACK)];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    call(
        addr,
        "POST",
        "/v1/playback/sessions",
        &headers,
        &start_body(account),
    )
}

fn replica(dd: &str, url: &str, master: &str) -> Listening {
    spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dd, "--database", url])
            .args(["--listen", "127.0.0.1:0"])
            .args([
                "--session-starts-per-minute",
                "100000",
                "--session-start-burst",
                "100000",
            ])
            .args(["--appliance-offline-after-secs", "600"])
            .env("OUTPOST_MASTER_KEY", master)
            .env("OUTPOST_LOG", "warn")
            .stderr(Stdio::inherit()),
    )
}

/// Imports the test policy and catalog into `pg`, then starts two replicas on it.
fn two_replicas(pg: &Postgres) -> (tempfile::TempDir, Listening, Listening) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("cp");
    let dd = data_dir.to_str().unwrap();
    let url = pg.url();
    let master = "7".repeat(64);
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
        .env("OUTPOST_MASTER_KEY", &master)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = replica(dd, &url, &master);
    let b = replica(dd, &url, &master);
    (dir, a, b)
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl): run ./scripts/test"]
fn two_replicas_share_leases_fill_plans_and_idempotency_keys() {
    let pg = Postgres::start();
    let (_dir, mut a, mut b) = two_replicas(&pg);
    let addrs = [a.addr.clone(), b.addr.clone()];

    // Heartbeats, each appliance to both replicas: both accept them.
    for (i, id) in ["akl-1", "akl-2"].into_iter().enumerate() {
        let auth = format!("Bearer {id}-credential-0123456789");
        for addr in &addrs {
            let (s, body) = call(
                addr,
                "POST",
                &format!("/v1/appliances/{id}/heartbeat"),
                &[("Authorization", &auth), ("Outpost-Appliance", id)],
                r#"{"health":"ok","load":0.1,"titles":["clear-title","enc-title"]}"#,
            );
            assert_eq!(s, 200, "heartbeat {i} to {addr}: {body}");
        }
    }

    // The fill plan of one appliance, asked of each replica: the same titles.
    let plans: Vec<serde_json::Value> = addrs
        .iter()
        .map(|addr| {
            let (s, body) = call(
                addr,
                "GET",
                "/v1/appliances/akl-1/fill-plan",
                &[
                    ("Authorization", "Bearer akl-1-credential-0123456789"),
                    ("Outpost-Appliance", "akl-1"),
                ],
                "",
            );
            assert_eq!(s, 200, "{addr}: {body}");
            serde_json::from_str(&body).unwrap()
        })
        .collect();
    let titles = |p: &serde_json::Value| {
        let mut t: Vec<String> = p["titles"]
            .as_array()
            .expect("titles")
            .iter()
            .map(|t| t["title"].as_str().unwrap_or_default().to_owned())
            .collect();
        t.sort();
        t
    };
    assert_eq!(titles(&plans[0]), titles(&plans[1]), "{plans:?}");

    // 100 parallel starts over both replicas on the family plan (3 streams).
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let addr = addrs[i % 2].clone();
            std::thread::spawn(move || start(&addr, "acct-family", None))
        })
        .collect();
    let mut created = 0;
    for t in threads {
        let (s, body) = t.join().unwrap();
        match s {
            201 => created += 1,
            429 => assert!(body.contains("concurrent_limit"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 3, "the plan allows 3 streams over both replicas");

    // One Idempotency-Key sent to both replicas at once (premium: 4 streams): one lease, one
    // answer.
    let key = "replica-test-0001";
    let both: Vec<_> = addrs
        .iter()
        .cloned()
        .map(|addr| std::thread::spawn(move || start(&addr, "acct-premium", Some(key))))
        .collect();
    let answers: Vec<(u16, String)> = both.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: Vec<String> = answers
        .iter()
        .map(|(s, body)| {
            assert_eq!(*s, 201, "{body}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["session_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "both replicas answer the same session");
    // The stored answer is sealed at rest: neither the session id nor a grant in clear.
    let stored = pg.query("SELECT response FROM idempotency_keys");
    assert_eq!(stored.lines().count(), 1, "{stored}");
    let first: serde_json::Value = serde_json::from_str(&answers[0].1).unwrap();
    let grant = first["appliances"][0]["grant"]
        .as_str()
        .unwrap_or("no grant");
    assert!(
        !stored.contains(&ids[0]) && !stored.contains(grant) && !stored.contains("session_id"),
        "{stored}"
    );
    // A later retry on either replica: the stored answer again.
    let (s, body) = start(&addrs[1], "acct-premium", Some(key));
    assert_eq!(s, 201, "{body}");
    assert!(body.contains(&ids[0]), "{body}");
    // Only one of premium's 4 streams is taken: 3 more starts succeed, the next is refused.
    for i in 0..3 {
        let (s, body) = start(&addrs[i % 2], "acct-premium", None);
        assert_eq!(s, 201, "start {i}: {body}");
    }
    let (s, body) = start(&addrs[0], "acct-premium", None);
    assert_eq!(s, 429, "{body}");
    // The same key with another body: a conflict, on either replica.
    let (s, body) = start(&addrs[0], "acct-standard", Some(key));
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("idempotency_conflict"), "{body}");

    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// The same contract on the embedded SQLite database (one replica): a retry with the key gets the
/// stored answer, another body a conflict, a malformed key `invalid_request` naming the header,
/// and no key is looked at before the caller is authenticated.
#[test]
fn idempotency_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("cp");
    let dd = dd.to_str().unwrap();
    let master = "5".repeat(64);
    let o = Command::new(bin())
        .args(["control-plane", "--data-dir", dd, "import"])
        .arg(data("policy.toml"))
        .arg(data("clear-title/catalog.json"))
        .env("OUTPOST_MASTER_KEY", &master)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cp = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dd, "--listen", "127.0.0.1:0"])
            .env("OUTPOST_MASTER_KEY", &master)
            .env("OUTPOST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    let addr = cp.addr.clone();
    for id in ["akl-1", "akl-2"] {
        let auth = format!("Bearer {id}-credential-0123456789");
        let (s, body) = call(
            &addr,
            "POST",
            &format!("/v1/appliances/{id}/heartbeat"),
            &[("Authorization", &auth), ("Outpost-Appliance", id)],
            r#"{"health":"ok","load":0.1,"titles":["clear-title"]}"#,
        );
        assert_eq!(s, 200, "{body}");
    }
    // acct-basic: one stream. Twice with one key: one lease, the same answer.
    let (s1, b1) = start(&addr, "acct-basic", Some("k-1"));
    let (s2, b2) = start(&addr, "acct-basic", Some("k-1"));
    assert_eq!((s1, s2), (201, 201), "{b1}\n{b2}");
    assert_eq!(b1, b2);
    // The stream is taken: a start without the key is refused.
    let (s, body) = start(&addr, "acct-basic", None);
    assert_eq!(s, 429, "{body}");
    // The key with another body.
    let (s, body) = start(&addr, "acct-standard", Some("k-1"));
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("idempotency_conflict"), "{body}");
    // A refused start releases its key: once the stream is free, the same key starts afresh.
    let (s, body) = start(&addr, "acct-basic", Some("k-2"));
    assert_eq!(s, 429, "{body}");
    let first: serde_json::Value = serde_json::from_str(&b1).unwrap();
    let (id, token) = (
        first["session_id"].as_str().unwrap(),
        first["token"].as_str().unwrap(),
    );
    let (s, body) = call(
        &addr,
        "DELETE",
        &format!("/v1/playback/sessions/{id}"),
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert!(s == 200 || s == 204, "{s}: {body}");
    let (s, body) = start(&addr, "acct-basic", Some("k-2"));
    assert_eq!(s, 201, "{body}");
    assert!(!body.contains(id), "{body}");
    // Malformed key, and no authentication.
    let long = "x".repeat(256);
    let (s, body) = start(&addr, "acct-standard", Some(&long));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("Idempotency-Key"), "{body}");
    let (s, body) = call(
        &addr,
        "POST",
        "/v1/playback/sessions",
        &[("Idempotency-Key", "k-1")],
        &start_body("acct-basic"),
    );
    assert_eq!(s, 401, "{body}");
    assert!(cp.terminate().success());
}

/// A TCP proxy in front of one replica that forwards each request, reads the replica's whole
/// answer (so the replica has done all its work, the lease included) and then closes the
/// client's connection without a byte: an answer lost on the way back.
struct LostAnswers {
    addr: String,
    dropped: Arc<AtomicUsize>,
}

impl LostAnswers {
    fn start(upstream: &str) -> LostAnswers {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dropped = Arc::new(AtomicUsize::new(0));
        let (upstream, count) = (upstream.to_owned(), dropped.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                let (upstream, count) = (upstream.clone(), count.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_message(&mut client) else {
                        return;
                    };
                    let mut up = TcpStream::connect(&upstream).unwrap();
                    up.write_all(&req).unwrap();
                    if read_message(&mut up).is_some() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // Dropping both sockets closes the client's connection unanswered.
                });
            }
        });
        LostAnswers { addr, dropped }
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// One HTTP/1.1 message (head and a `Content-Length` body) from `s`, or `None` at EOF.
fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf)
}

fn start_request(account: &str) -> StartRequest {
    StartRequest {
        account_id: account.into(),
        device_class: "browser".into(),
        title: "clear-title".into(),
        client_ip: "127.0.0.1".into(),
    }
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl): run ./scripts/test"]
fn the_retrying_client_takes_one_lease_per_start_through_lost_answers_and_a_killed_replica() {
    let pg = Postgres::start();
    let (_dir, mut a, mut b) = two_replicas(&pg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = "playback-secret-0123456789";

    // Lost answers: replica A (behind the proxy) takes the lease and its answer never arrives;
    // the client retries on B with the same Idempotency-Key and gets A's session. Each start
    // is ended at once, so premium's 4 streams never run out and only the rows tell duplicates.
    let proxy = LostAnswers::start(&a.addr);
    let lossy = [
        format!("http://{}", proxy.addr),
        format!("http://{}", b.addr),
    ];
    let lossy: Vec<&str> = lossy.iter().map(String::as_str).collect();
    let mut sessions = Vec::new();
    for i in 0..40 {
        if proxy.dropped() >= 5 {
            break;
        }
        // A fresh client each time: its first choice between the two is a coin toss.
        let client = PlaybackClient::new(&lossy, key).unwrap();
        let r = rt
            .block_on(client.start_session(&start_request("acct-premium")))
            .unwrap_or_else(|e| panic!("start {i}: {e}"));
        let (s, body) = call(
            &b.addr,
            "DELETE",
            &format!("/v1/playback/sessions/{}", r.session_id),
            &[("Authorization", &format!("Bearer {}", r.token))],
            "",
        );
        assert_eq!(s, 204, "end {i}: {body}");
        sessions.push(r.session_id);
    }
    assert!(
        proxy.dropped() >= 1,
        "no start went to the lossy replica first"
    );
    let rows = pg.query("SELECT id FROM sessions WHERE account_id = 'acct-premium' ORDER BY id");
    let mut sessions_sorted = sessions.clone();
    sessions_sorted.sort();
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        sessions_sorted,
        "one session row per start, though {} answers were lost",
        proxy.dropped()
    );

    // A replica killed under load: 100 parallel starts on the family plan (3 streams) over
    // A and B, A killed (SIGKILL) while they run, then 20 more: every start is answered, a
    // session or `concurrent_limit`, never "no replica"; exactly 3 live leases.
    let both = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let client = Arc::new(PlaybackClient::new(&both, key).unwrap());
    let results: Vec<Result<String, ClientError>> = rt.block_on(async {
        let spawn = |n: usize| {
            (0..n)
                .map(|_| {
                    let c = client.clone();
                    tokio::spawn(async move {
                        c.start_session(&start_request("acct-family"))
                            .await
                            .map(|r| r.session_id)
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut handles = spawn(100);
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        handles.extend(spawn(20));
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    });
    let mut created = 0;
    for r in &results {
        match r {
            Ok(_) => created += 1,
            Err(e) => assert_eq!(e.code(), Some("concurrent_limit"), "{e}"),
        }
    }
    assert_eq!(created, 3, "the plan allows 3 streams");
    let stats = client.stats();
    let (_, metrics) = call(&b.addr, "GET", "/metrics", &[], "");
    let takeovers = metrics
        .lines()
        .find(|l| l.starts_with("outpost_cp_idempotency_takeovers_total "))
        .unwrap_or("none")
        .to_owned();
    eprintln!(
        "retrying client: {} answers lost and recovered; replica killed: {stats:?}; B: {takeovers}",
        proxy.dropped()
    );
    assert_eq!(stats.starts, 120);
    assert!(
        stats.transport_failures >= 1 && stats.retries >= stats.transport_failures,
        "the killed replica was tried and every failure retried: {stats:?}"
    );
    // Exactly 3 live leases. A start that A had taken a lease for when it was killed leaves
    // that lease behind; the retry on B takes the key over and ends it (migration 0007), so
    // any other row is one of those, never a second live lease for one start.
    assert_eq!(
        pg.query(
            "SELECT count(*) FROM sessions WHERE account_id = 'acct-family' AND ended_at IS NULL"
        )
        .trim(),
        "3",
        "live leases"
    );
    let others = pg.query(
        "SELECT coalesce(end_reason, 'live') FROM sessions WHERE account_id = 'acct-family' \
         AND (ended_at IS NOT NULL OR end_reason IS NOT NULL)",
    );
    for reason in others.lines() {
        assert_eq!(
            reason, "idempotency_takeover",
            "a family row that is not live was ended by a takeover"
        );
    }
    assert!(b.terminate().success());
}
