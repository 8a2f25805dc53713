//! QoE (issue 16) scenarios run against both backends (see `sqlite.rs` and `postgres.rs`):
//! appliances report per-session summaries in heartbeats; `GET /v1/qoe` lists and aggregates
//! them per cluster and appliance; the counters move; a bad report names its field.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Env, ADMIN, PUBLIC, T0};

fn session(sid: &str, startup: u64, starved: u64, br: u64) -> Value {
    json!({"sid": sid, "cid": "clear-title", "title": "clear-title", "first_ms": T0 * 1000,
        "last_ms": T0 * 1000 + 60_000, "requests": 20, "bytes": 5_000_000, "startup_ms": startup,
        "starvation_events": starved, "media_ms": 60_000, "avg_bitrate_kbps": br,
        "buffer_ms": 12_000, "min_buffer_ms": 0, "avg_throughput_kbps": 9_000, "switches": 2})
}

async fn beat(env: &Env, id: &str, qoe: Value) -> (StatusCode, Value) {
    let cred = format!("Bearer {id}-credential-0123456789");
    let (s, _, v) = env
        .call(
            Method::POST,
            &format!("/v1/appliances/{id}/heartbeat"),
            &[("authorization", &cred), ("outpost-appliance", id)],
            Some(json!({"health": "ok", "load": 0.1, "titles": ["clear-title"], "qoe": qoe})),
        )
        .await;
    (s, v)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

pub async fn qoe_reports_are_stored_listed_and_aggregated(env: &Env) {
    let admin = format!("Bearer {ADMIN}");
    let auth = [("authorization", admin.as_str())];
    let (s, _, e) = env.call(Method::GET, "/v1/qoe", &[], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    let (s, _, v) = env.call(Method::GET, "/v1/qoe", &auth, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["sessions"], json!([]));

    let (s, v) = beat(
        env,
        "akl-1",
        json!([session("s1", 800, 0, 2000), session("s2", 1200, 3, 1000)]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    env.clock.advance(5);
    // The same session reported again replaces its row (s2 recovered its bitrate).
    let (s, v) = beat(env, "akl-1", json!([session("s2", 1200, 3, 3000)])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // s3 from an appliance that times its responses (0009): sent 4 MB in 2 s.
    let mut s3 = session("s3", 400, 0, 4000);
    s3["timed_bytes"] = json!(4_000_000);
    s3["timed_us"] = json!(2_000_000);
    s3["avg_throughput_kbps"] = json!(3_000);
    let (s, v) = beat(env, "akl-2", json!([s3])).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, _, v) = env.call(Method::GET, "/v1/qoe", &auth, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{v}");
    let s2 = sessions
        .iter()
        .find(|r| r["session"]["sid"] == "s2")
        .unwrap();
    assert_eq!(s2["appliance_id"], "akl-1");
    assert_eq!(s2["cluster_id"], "isp-akl");
    assert_eq!(s2["reported_at"], T0 + 5);
    assert_eq!(s2["session"]["avg_bitrate_kbps"], 3000);
    assert_eq!(s2["session"]["starvation_events"], 3);
    assert_eq!(s2["session"]["title"], "clear-title");
    let c = &v["clusters"][0];
    assert_eq!(c["id"], "isp-akl");
    assert_eq!(c["sessions"], 3);
    assert_eq!(c["starved_sessions"], 1);
    assert_eq!(c["startup_p50_ms"], 800);
    assert_eq!(c["startup_p95_ms"], 1200);
    assert_eq!(c["avg_bitrate_kbps"], 3000);
    let apps = v["appliances"].as_array().unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["id"], "akl-1");
    assert_eq!(apps[0]["rebuffer_ratio"], 0.5);
    assert_eq!(apps[1]["rebuffer_ratio"], 0.0);
    // Throughput: what players measured (mtp, weighted by requests), what the appliance sent at.
    assert_eq!(
        c["avg_throughput_kbps"], 7_000,
        "(9000·20·2 + 3000·20) / 60"
    );
    assert_eq!(c["served_kbps"], 16_000);
    assert_eq!(apps[0]["avg_throughput_kbps"], 9_000);
    assert_eq!(
        apps[0]["served_kbps"],
        Value::Null,
        "akl-1 reported no timing"
    );
    assert_eq!(apps[1]["served_kbps"], 16_000);
    let s3 = sessions
        .iter()
        .find(|r| r["session"]["sid"] == "s3")
        .unwrap();
    assert_eq!(s3["session"]["timed_bytes"], 4_000_000);
    assert_eq!(s3["session"]["timed_us"], 2_000_000);
    assert!(s2["session"].get("timed_bytes").is_none(), "{s2}");

    // Filters: a cluster with no reports, a window after the reports, a limit.
    let (_, _, v) = env
        .call(Method::GET, "/v1/qoe?cluster=nowhere", &auth, None)
        .await;
    assert_eq!(v["sessions"], json!([]));
    let (_, _, v) = env
        .call(
            Method::GET,
            &format!("/v1/qoe?since={}", T0 + 5),
            &auth,
            None,
        )
        .await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);
    let (_, _, v) = env.call(Method::GET, "/v1/qoe?limit=1", &auth, None).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    let (s, _, e) = env.call(Method::GET, "/v1/qoe?limit=0", &auth, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.to_string().contains("limit"), "{e}");
    let (s, _, _) = env.call(Method::GET, "/v1/qoe?bogus=1", &auth, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A bad report is refused naming the field, and nothing of it is stored.
    let (s, e) = beat(env, "akl-2", json!([session("", 1, 0, 1)])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.to_string().contains("qoe[0].sid"), "{e}");
    let mut extra = session("s9", 1, 0, 1);
    extra["bitrate"] = json!(5);
    let (s, e) = beat(env, "akl-2", json!([extra])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (_, _, v) = env.call(Method::GET, "/v1/qoe", &auth, None).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 3);

    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap().to_owned();
    assert_eq!(metric(&m, "outpost_cp_qoe_reports_total"), 4.0);
    assert_eq!(metric(&m, "outpost_cp_qoe_starved_reports_total"), 2.0);
}

/// Acting on QoE: a session that starved on its first appliance has that appliance moved behind
/// a healthy one in its steering manifests (HLS and DASH), counted by reason.
pub async fn bad_qoe_moves_the_session(env: &Env) {
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sid = v["session_id"].as_str().unwrap().to_owned();
    let url = |kind: &str| {
        v["steering"][kind]
            .as_str()
            .unwrap()
            .strip_prefix(PUBLIC)
            .unwrap()
            .to_owned()
    };
    let order = |m: &Value, key: &str| -> Vec<String> {
        m[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, before) = env.call(Method::GET, &url("hls"), &[], None).await;
    let before = order(&before, "PATHWAY-PRIORITY");
    let first = before[0].clone();
    // A healthy report from the second appliance changes nothing.
    let mut good = session(&sid, 500, 0, 1000);
    good["avg_throughput_kbps"] = json!(8000);
    let (s, e) = beat(env, &before[1], json!([good])).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, _, same) = env.call(Method::GET, &url("hls"), &[], None).await;
    assert_eq!(order(&same, "PATHWAY-PRIORITY"), before);
    // The first appliance reports starvation for this session: it moves behind the others.
    let (s, e) = beat(env, &first, json!([session(&sid, 900, 2, 3000)])).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, _, after) = env.call(Method::GET, &url("hls"), &[], None).await;
    let after = order(&after, "PATHWAY-PRIORITY");
    assert_eq!(after.len(), before.len());
    assert_eq!(after.last(), Some(&first), "{after:?}");
    assert_eq!(after[0], before[1], "{after:?}");
    let (_, _, dash) = env.call(Method::GET, &url("dash"), &[], None).await;
    assert_eq!(order(&dash, "SERVICE-LOCATION-PRIORITY"), after);
    // Reloads repeat the move (HLS and DASH, as often as players reload): counted once.
    for kind in ["hls", "dash", "hls", "dash", "hls"] {
        let (_, _, again) = env.call(Method::GET, &url(kind), &[], None).await;
        assert_eq!(order(&again, "PATHWAY-PRIORITY"), after, "{kind}");
    }
    let moves = "outpost_cp_qoe_steering_moves_total{reason=\"starvation\"}";
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    assert_eq!(
        metric(m.as_str().unwrap(), moves),
        1.0,
        "one move, however many steering manifests repeat it"
    );
    let (_, _, v) = env
        .call(
            Method::GET,
            "/v1/qoe",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        )
        .await;
    let rows = v["sessions"].as_array().unwrap();
    let row = |app: &str| {
        rows.iter()
            .find(|r| r["session"]["sid"] == sid.as_str() && r["appliance_id"] == app)
            .unwrap_or_else(|| panic!("no row of {app}: {v}"))
    };
    assert_eq!(row(&first)["moved_at"], T0, "{v}");
    assert!(row(&before[1])["moved_at"].is_null(), "{v}");
    // The appliance it moved to starves it too (later, so it is where the session went last):
    // a second, different move, to the third appliance, counted once more.
    let mut later = session(&sid, 900, 1, 3000);
    later["first_ms"] = json!(T0 * 1000 + 30_000);
    let (s, e) = beat(env, &before[1], json!([later])).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    for kind in ["dash", "hls", "dash"] {
        let (_, _, again) = env.call(Method::GET, &url(kind), &[], None).await;
        let key = if kind == "dash" {
            "SERVICE-LOCATION-PRIORITY"
        } else {
            "PATHWAY-PRIORITY"
        };
        assert_eq!(order(&again, key)[0], before[2], "{kind}: {again}");
    }
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    assert_eq!(metric(m.as_str().unwrap(), moves), 2.0);
}
