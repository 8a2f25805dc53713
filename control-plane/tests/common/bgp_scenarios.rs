//! Steering from BGP routes reported in heartbeats (issue 14): tie-breaks (longer prefix,
//! shorter AS path, lower MED), withdrawal, a site whose appliances hear different routes, a
//! session whose initial table is still arriving (not counted until End-of-RIB), a session
//! going down, and the digest check that asks for a full table.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::Env;

const TITLES: [&str; 3] = ["clear-title", "enc-title", "hd-only"];

/// A route as the test writes it: (prefix, AS-path length, MED).
type R = (&'static str, u32, u32);

fn routes(rs: &[R]) -> Vec<protocol::fleet::BgpRoute> {
    rs.iter()
        .map(|(p, l, m)| protocol::fleet::BgpRoute {
            prefix: (*p).to_owned(),
            as_path_len: *l,
            med: *m,
            communities: vec![],
        })
        .collect()
}

/// Sends a heartbeat with a BGP report: `table` is the whole table after the change, sent as
/// the deltas `announced`/`withdrawn` (or whole when `full`). Returns the ack. The session's
/// `rib_complete` is left out (an older appliance: counts as complete).
async fn report(
    env: &Env,
    id: &str,
    table: &[R],
    announced: &[R],
    withdrawn: &[&str],
    full: bool,
    up: bool,
) -> Value {
    report_rib(env, id, table, announced, withdrawn, full, up, None).await
}

/// [`report`] with the session's `rib_complete` (`None`: the field left out).
#[allow(clippy::too_many_arguments)]
async fn report_rib(
    env: &Env,
    id: &str,
    table: &[R],
    announced: &[R],
    withdrawn: &[&str],
    full: bool,
    up: bool,
    rib_complete: Option<bool>,
) -> Value {
    let digest = protocol::fleet::bgp_digest(&routes(table));
    let cred = format!("{id}-credential-0123456789");
    let mut session = json!({"peer": "127.0.0.1:179", "asn": 64500, "state": if up { "established" } else { "idle" },
                      "uptime_secs": 5, "routes": table.len()});
    if let Some(c) = rib_complete {
        session["rib_complete"] = json!(c);
    }
    let bgp = json!({
        "sessions": [session],
        "full": full,
        "announced": routes(if full { table } else { announced }),
        "withdrawn": withdrawn,
        "digest": digest,
        "routes": table.len(),
        "steerable": true,
    });
    let (s, _, v) = env
        .call(
            Method::POST,
            &format!("/v1/appliances/{id}/heartbeat"),
            &[
                ("authorization", &format!("Bearer {cred}")),
                ("outpost-appliance", id),
            ],
            Some(json!({"health": "ok", "load": 0.2, "titles": TITLES,
                "drives": [{"path": "/cache/0", "state": "ok", "used_bytes": 10, "capacity_bytes": 100}],
                "bgp": bgp})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The cluster of the first appliance a session for `ip` is steered to.
async fn first_cluster(env: &Env, ip: &str) -> String {
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", ip)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["appliances"][0]["id"].as_str().unwrap().to_owned();
    // End it so the plan's stream limit never bites.
    let sid = v["session_id"].as_str().unwrap().to_owned();
    let (s, _, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/playback/sessions/{sid}"),
            &[("authorization", &format!("Bearer {}", super::API_KEY))],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    match id.as_str() {
        "akl-1" | "akl-2" => "isp-akl",
        "syd-1" => "ix-syd",
        "origin-1" => "origin",
        o => panic!("unexpected appliance {o}"),
    }
    .to_owned()
}

pub async fn steering_follows_bgp(env: &Env) {
    env.fleet_up().await;
    // Only the policy's static 10.0.0.0/8 (Auckland) covers 10.64.1.1.
    assert_eq!(first_cluster(env, "10.64.1.1").await, "isp-akl");

    // Both Auckland appliances hear 10.64.0.0/16 with a 3-AS path; Sydney with 2: Sydney wins.
    let akl: Vec<R> = vec![("10.64.0.0/16", 3, 0), ("10.67.0.0/16", 3, 0)];
    for id in ["akl-1", "akl-2"] {
        let ack = report(env, id, &akl, &[], &[], true, true).await;
        assert!(ack.get("bgp_full_table").is_none(), "{ack}");
    }
    let ack = report(
        env,
        "syd-1",
        &[("10.64.0.0/16", 2, 0)],
        &[],
        &[],
        true,
        true,
    )
    .await;
    assert!(ack.get("bgp_full_table").is_none(), "{ack}");
    assert_eq!(first_cluster(env, "10.64.1.1").await, "ix-syd");
    // 10.67.0.0/16 is heard by Auckland only.
    assert_eq!(first_cluster(env, "10.67.0.1").await, "isp-akl");

    // Sydney prepends (path 4): Auckland wins.
    let syd = [("10.64.0.0/16", 4, 0)];
    report(env, "syd-1", &syd, &syd, &[], false, true).await;
    assert_eq!(first_cluster(env, "10.64.1.1").await, "isp-akl");

    // Equal path, lower MED wins: Sydney at path 3 MED 0, Auckland at MED 0 too -> then the
    // usual order (embedded first); Auckland raises its MED to 50 -> Sydney.
    let syd = [("10.64.0.0/16", 3, 0)];
    report(env, "syd-1", &syd, &syd, &[], false, true).await;
    assert_eq!(first_cluster(env, "10.64.1.1").await, "isp-akl");
    let akl_med: Vec<R> = vec![("10.64.0.0/16", 3, 50), ("10.67.0.0/16", 3, 0)];
    for id in ["akl-1", "akl-2"] {
        report(env, id, &akl_med, &akl_med[..1], &[], false, true).await;
    }
    assert_eq!(first_cluster(env, "10.64.1.1").await, "ix-syd");

    // A longer prefix beats any path: Auckland hears 10.64.1.0/24 with path 9.
    let akl_more: Vec<R> = vec![
        ("10.64.0.0/16", 3, 50),
        ("10.64.1.0/24", 9, 0),
        ("10.67.0.0/16", 3, 0),
    ];
    for id in ["akl-1", "akl-2"] {
        report(env, id, &akl_more, &akl_more[1..2], &[], false, true).await;
    }
    assert_eq!(first_cluster(env, "10.64.1.1").await, "isp-akl");
    assert_eq!(first_cluster(env, "10.64.2.1").await, "ix-syd");

    // Withdrawn by both: back to Sydney's /16.
    for id in ["akl-1", "akl-2"] {
        report(env, id, &akl_med, &[], &["10.64.1.0/24"], false, true).await;
    }
    assert_eq!(first_cluster(env, "10.64.1.1").await, "ix-syd");

    // Sydney also hears 10.66.0.0/16 and 10.67.0.0/16, with long paths.
    let syd: Vec<R> = vec![
        ("10.64.0.0/16", 3, 0),
        ("10.66.0.0/16", 5, 0),
        ("10.67.0.0/16", 5, 0),
    ];
    report(env, "syd-1", &syd, &syd[1..], &[], false, true).await;
    assert_eq!(first_cluster(env, "10.67.0.1").await, "isp-akl");
    assert_eq!(first_cluster(env, "10.66.0.1").await, "ix-syd");

    // akl-2's session restarts: established, but its initial table is still arriving (no
    // End-of-RIB yet) and so far holds only 10.64.0.0/16. It does not count yet: the site is
    // not flagged and keeps being steered by akl-1's routes (10.67.0.0/16 stays in Auckland).
    let partial: Vec<R> = vec![("10.64.0.0/16", 3, 50)];
    report_rib(env, "akl-2", &partial, &[], &[], true, true, Some(false)).await;
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("outpost_cp_bgp_site_inconsistent{cluster=\"isp-akl\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("outpost_cp_bgp_site_routes{cluster=\"isp-akl\"} 2"),
        "{m}"
    );
    assert_eq!(first_cluster(env, "10.67.0.1").await, "isp-akl");
    // End-of-RIB: its table is complete and the same as akl-1's; the usual rules apply.
    report_rib(
        env,
        "akl-2",
        &akl_med,
        &akl_med[1..],
        &[],
        false,
        true,
        Some(true),
    )
    .await;
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("outpost_cp_bgp_site_inconsistent{cluster=\"isp-akl\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("outpost_cp_bgp_site_routes{cluster=\"isp-akl\"} 2"),
        "{m}"
    );
    assert_eq!(first_cluster(env, "10.67.0.1").await, "isp-akl");

    // Inconsistent site: only akl-2 hears 10.66.0.0/16 (with the best path) -> Auckland is not
    // steered by it (Sydney keeps it), and the site is flagged.
    let akl2: Vec<R> = vec![
        ("10.64.0.0/16", 3, 50),
        ("10.66.0.0/16", 1, 0),
        ("10.67.0.0/16", 3, 0),
    ];
    report(env, "akl-2", &akl2, &akl2[1..2], &[], false, true).await;
    assert_eq!(first_cluster(env, "10.66.0.1").await, "ix-syd");
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("outpost_cp_bgp_site_inconsistent{cluster=\"isp-akl\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("outpost_cp_bgp_site_inconsistent{cluster=\"ix-syd\"} 0"),
        "{m}"
    );
    let admin = format!("Bearer {}", super::ADMIN);
    let (s, _, fv) = env
        .call(Method::GET, "/v1/fleet", &[("authorization", &admin)], None)
        .await;
    assert_eq!(s, StatusCode::OK, "{fv}");
    let site = fv["bgp_sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["cluster"] == "isp-akl")
        .unwrap_or_else(|| panic!("{fv}"));
    assert_eq!(site["inconsistent"], true, "{site}");
    assert_eq!(site["partial"], json!(["10.66.0.0/16"]), "{site}");
    let akl2 = fv["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "akl-2")
        .unwrap();
    assert_eq!(akl2["bgp"]["routes"], 3, "{akl2}");
    assert_eq!(akl2["bgp"]["sessions"][0]["state"], "established", "{akl2}");
    // The routes both hear still steer: 10.67.0.0/16 to Auckland.
    assert_eq!(first_cluster(env, "10.67.0.1").await, "isp-akl");

    // Sessions down on both Auckland appliances (their routes withdrawn): 10.67.0.0/16 goes to
    // Sydney.
    for id in ["akl-1", "akl-2"] {
        report(env, id, &[], &[], &[], true, false).await;
    }
    assert_eq!(first_cluster(env, "10.67.0.1").await, "ix-syd");

    // A digest that disagrees with the stored table asks for the full table.
    let ack = report(
        env,
        "syd-1",
        &[("10.64.0.0/16", 3, 0), ("10.99.0.0/16", 1, 0)],
        &[],
        &[],
        false,
        true,
    )
    .await;
    assert_eq!(ack["bgp_full_table"], true, "{ack}");

    // Sydney restarted without its BGP speaker: its heartbeats carry no BGP report, so what it
    // reported before steers no more (10.66.0.0/16 falls back to Auckland's policy 10.0.0.0/8)
    // and the fleet view shows no BGP state for it.
    assert_eq!(first_cluster(env, "10.66.0.1").await, "ix-syd");
    env.fleet_up().await;
    assert_eq!(first_cluster(env, "10.66.0.1").await, "isp-akl");
    let (s, _, fv) = env
        .call(Method::GET, "/v1/fleet", &[("authorization", &admin)], None)
        .await;
    assert_eq!(s, StatusCode::OK, "{fv}");
    let syd = fv["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "syd-1")
        .unwrap();
    assert!(syd["bgp"].is_null(), "{syd}");
    assert!(
        !fv["bgp_sites"].to_string().contains("ix-syd"),
        "{}",
        fv["bgp_sites"]
    );
}

/// No request waits on a rebuild, and a change another replica writes steers within the
/// snapshot TTL plus one background rebuild: `env` must have a short `snapshot_ttl_ms` (`ttl`).
/// Writes through this process's API are seen by its next request (the writer waits instead).
pub async fn replica_change_swaps_in_background(env: &Env, ttl: std::time::Duration) {
    use std::sync::Arc;
    use std::time::Instant;
    env.fleet_up().await;
    let syd = [("10.64.0.0/16", 1, 0)];
    report(env, "syd-1", &syd, &[], &[], true, true).await;
    // Read-your-writes: the heartbeat's answer came after the snapshot that holds it.
    assert_eq!(first_cluster(env, "10.64.1.1").await, "ix-syd");
    // A fresh snapshot (as after any write), so the TTL counts from here.
    env.state.refresh().await;
    let before = env.state.snapshot().await.unwrap();

    // Another replica records syd-1's session going down and its routes withdrawn (written
    // straight to the shared database: this process is not told).
    let down = protocol::fleet::BgpReport {
        sessions: vec![protocol::fleet::BgpSession {
            peer: "127.0.0.1:179".into(),
            asn: 64500,
            state: "idle".into(),
            last_error: None,
            uptime_secs: 0,
            routes: 0,
            rib_complete: false,
        }],
        full: true,
        announced: vec![],
        withdrawn: vec![],
        digest: protocol::fleet::bgp_digest(&[]),
        routes: 0,
        steerable: true,
    };
    assert!(env
        .repo
        .apply_bgp("syd-1", &down, env.state.now() as i64)
        .await
        .unwrap());
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    // The first request after the TTL is answered at once from the previous snapshot ...
    let first = env.state.snapshot().await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &before),
        "a request waited on a rebuild"
    );
    assert_eq!(
        first
            .fleet
            .candidate_clusters("10.64.1.1".parse().unwrap())
            .1[0],
        "ix-syd"
    );
    // ... while a rebuild in the background swaps the new one in.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = env.state.snapshot().await.unwrap();
        if !Arc::ptr_eq(&s, &before) {
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot was never rebuilt");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(first_cluster(env, "10.64.1.1").await, "isp-akl");
}
