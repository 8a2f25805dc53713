//! Fill scenarios (issue 8), run on both backends: appliance authentication of the fill
//! endpoints, the catalog entry as stored, plan content for the test topology (origin `origin-1`,
//! exchange `syd-1`, embedded `akl-1` + `akl-2`) as heartbeats report holdings (sources move
//! from origin to upstream to peer), fill grants that verify only where and for what they are
//! meant, stale versions, the fleet view and the metrics.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use protocol::fill::{catalog_digest, FillPlan, FillSource, SourceTier};
use protocol::grant::{GrantError, Scope, Verifier, DEFAULT_MAX_LIFETIME_SECS};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::{Env, ADMIN};

fn cred(id: &str) -> String {
    format!("Bearer {id}-credential-0123456789")
}

/// GET with appliance headers; returns status and the raw body.
async fn get_raw(env: &Env, uri: &str, header_id: &str, bearer: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header("outpost-appliance", header_id)
        .header("authorization", bearer)
        .body(Body::empty())
        .unwrap();
    let resp = env.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn plan(env: &Env, id: &str) -> FillPlan {
    let (s, body) = get_raw(
        env,
        &format!("/v1/appliances/{id}/fill-plan"),
        id,
        &cred(id),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let p: FillPlan = serde_json::from_str(&body).unwrap();
    p.validate().unwrap();
    assert_eq!(p.appliance, id);
    p
}

/// A heartbeat with 100 GB of drives, holding `held` (title, catalog digest), optional fill
/// status.
async fn beat(env: &Env, id: &str, held: &[(&str, &str)], fill: Option<Value>) {
    let titles: Vec<&str> = held.iter().map(|(t, _)| *t).collect();
    let held: Vec<Value> = held
        .iter()
        .map(|(t, d)| json!({"title": t, "catalog_sha256": d, "files_digest": "ab".repeat(32)}))
        .collect();
    let mut body = json!({"health": "ok", "load": 0.1, "titles": titles, "held": held,
        "drives": [{"path": "/cache/0", "state": "ok", "used_bytes": 0, "capacity_bytes": 100u64 << 30}]});
    if let Some(f) = fill {
        body["fill"] = f;
    }
    let (s, _, v) = env
        .call(
            Method::POST,
            &format!("/v1/appliances/{id}/heartbeat"),
            &[("authorization", &cred(id)), ("outpost-appliance", id)],
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

fn sources(p: &FillPlan, title: &str) -> Vec<(SourceTier, String)> {
    p.titles
        .iter()
        .find(|t| t.title == title)
        .unwrap_or_else(|| panic!("{title} not planned for {}: {p:?}", p.appliance))
        .sources
        .iter()
        .map(|s| match s {
            FillSource::Appliance {
                tier, appliance, ..
            } => (*tier, appliance.clone()),
            FillSource::S3 { tier, bucket, .. } => (*tier, format!("s3:{bucket}")),
        })
        .collect()
}

fn grant_of(p: &FillPlan, title: &str, source: &str) -> String {
    p.titles
        .iter()
        .find(|t| t.title == title)
        .unwrap()
        .sources
        .iter()
        .find_map(|s| match s {
            FillSource::Appliance {
                appliance, grant, ..
            } if appliance == source => Some(grant.clone()),
            _ => None,
        })
        .unwrap()
}

async fn import_forecast(env: &Env) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("forecast.json");
    std::fs::write(
        &f,
        r#"{"forecast":[{"country":"NZ","titles":[{"title":"clear-title","views":100},{"title":"enc-title","views":60},{"title":"hd-only","views":10}]}]}"#,
    )
    .unwrap();
    let master = control_plane::crypto::MasterKey::new([42; 32]);
    let r = control_plane::import::import_file(env.repo.as_ref(), &master, &f, 0)
        .await
        .unwrap();
    assert_eq!(r, control_plane::import::Imported::Forecast(1, 3));
    // Errors name the field.
    std::fs::write(
        &f,
        r#"{"forecast":[{"country":"NZ","titles":[{"title":"a","views":1},{"title":"b","views":2}]}]}"#,
    )
    .unwrap();
    let e = control_plane::import::import_file(env.repo.as_ref(), &master, &f, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("forecast[0].titles[1].views"), "{e}");
    env.state.fill_plans.clear().await;
}

pub async fn fill_plans_follow_holdings(env: &Env) {
    // Authentication: wrong credential 401, another appliance's plan 403, no header 400.
    let (s, _) = get_raw(
        env,
        "/v1/appliances/akl-1/fill-plan",
        "akl-1",
        &cred("akl-2"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = get_raw(
        env,
        "/v1/appliances/akl-2/fill-plan",
        "akl-1",
        &cred("akl-1"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    let (s, _, _) = env
        .call(Method::GET, "/v1/appliances/akl-1/fill-plan", &[], None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get_raw(
        env,
        "/v1/appliances/akl-2/catalog/clear-title",
        "akl-1",
        &cred("akl-1"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get_raw(env, "/v1/appliances/ghost/fill-plan", "ghost", "Bearer x").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The catalog entry, byte for byte as stored; its digest is the version plans carry.
    let (s, text) = get_raw(
        env,
        "/v1/appliances/akl-1/catalog/clear-title",
        "akl-1",
        &cred("akl-1"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let stored = env.repo.load_snapshot().await.unwrap();
    let stored = &stored
        .titles
        .iter()
        .find(|(id, _)| id == "clear-title")
        .unwrap()
        .1;
    assert_eq!(&text, stored);
    let digest = catalog_digest(&text);
    let (s, _) = get_raw(
        env,
        "/v1/appliances/akl-1/catalog/nope",
        "akl-1",
        &cred("akl-1"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Before it reports its drives an appliance is not planned: an empty plan.
    let p = plan(env, "akl-1").await;
    assert!(p.titles.is_empty(), "{p:?}");
    // One that reported titles but no drives keeps what it holds (nothing is removed).
    let (s, _, _) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/heartbeat",
            &[
                ("authorization", &cred("akl-1")),
                ("outpost-appliance", "akl-1"),
            ],
            Some(json!({"health": "ok", "load": 0.1, "titles": ["hd-only"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let p = plan(env, "akl-1").await;
    assert_eq!(p.titles.len(), 1, "{p:?}");
    assert_eq!(p.titles[0].title, "hd-only");
    assert!(p.titles[0].sources.is_empty());
    assert_eq!(p.titles[0].reason, control_plane::fill::edge::NOT_PLANNED);

    // The forecast makes clear-title and enc-title head titles (2 copies: both appliances) and
    // hd-only tail (1 copy).
    import_forecast(env).await;
    beat(env, "akl-1", &[], None).await;
    beat(env, "akl-2", &[], None).await;
    let p1 = plan(env, "akl-1").await;
    let p2 = plan(env, "akl-2").await;
    for p in [&p1, &p2] {
        assert_eq!(p.cluster, "isp-akl");
        assert_eq!(
            p.titles[0].title, "clear-title",
            "most popular first: {p:#?}"
        );
        assert!(p.titles.iter().any(|t| t.title == "enc-title"));
        let ct = &p.titles[0];
        assert_eq!(ct.catalog_sha256, digest);
        assert!(ct.urgent, "imported just now: a new release");
        assert!(ct.reason.contains("2 of 2 copies"), "{}", ct.reason);
        assert!(ct.bytes > 0);
        assert!(p.refresh_secs > 0);
    }
    let hd_holders = [&p1, &p2]
        .iter()
        .filter(|p| p.titles.iter().any(|t| t.title == "hd-only"))
        .count();
    assert_eq!(hd_holders, 1, "the tail title has one copy");
    // Nobody holds anything yet: origin only (origin-1 is admin-online, holding everything).
    assert_eq!(
        sources(&p1, "clear-title"),
        [(SourceTier::Origin, "origin-1".to_owned())]
    );

    // The exchange reports clear-title held: upstream before origin.
    beat(env, "syd-1", &[("clear-title", &digest)], None).await;
    let p1 = plan(env, "akl-1").await;
    assert_eq!(
        sources(&p1, "clear-title"),
        [
            (SourceTier::Upstream, "syd-1".to_owned()),
            (SourceTier::Origin, "origin-1".to_owned())
        ]
    );
    assert_eq!(
        sources(&p1, "enc-title"),
        [(SourceTier::Origin, "origin-1".to_owned())]
    );

    // A peer reports it held (with a fill status): peer first; the holder's own plan lists it
    // without sources.
    beat(
        env,
        "akl-2",
        &[("clear-title", &digest)],
        Some(json!({"plan_id": p2.plan_id, "in_window": true, "titles_pending": 1, "bytes_filled": 5000,
            "files_verified": 7, "verify_failures": 1, "rate_bps": 8000})),
    )
    .await;
    let before = p1.plan_id.clone();
    let p1 = plan(env, "akl-1").await;
    assert_ne!(p1.plan_id, before, "new sources, new plan id");
    assert_eq!(
        sources(&p1, "clear-title"),
        [
            (SourceTier::Peer, "akl-2".to_owned()),
            (SourceTier::Upstream, "syd-1".to_owned()),
            (SourceTier::Origin, "origin-1".to_owned())
        ]
    );
    let p2 = plan(env, "akl-2").await;
    assert!(sources(&p2, "clear-title").is_empty());
    // The plan id is stable while the plan does not change.
    assert_eq!(plan(env, "akl-2").await.plan_id, p2.plan_id);

    // Fill grants: valid for the source's cluster only, fill scope, no client binding, a
    // lifetime under the verifiers' cap and longer than the refresh.
    let ring = super::scenarios::key_ring(env).await;
    let now = super::T0;
    let check = |cluster: &str, grant: &str, path: &str| {
        Verifier::new(ring.clone(), cluster).verify(&protocol::grant::Request {
            path: &format!("/g/{grant}/{path}"),
            client_ip: None,
            now,
        })
    };
    let peer_grant = grant_of(&p1, "clear-title", "akl-2");
    let v = check("isp-akl", &peer_grant, "clear-title/catalog.json").unwrap();
    assert_eq!(v.claims.scope, Scope::Fill);
    assert_eq!(v.claims.sub, "fill:akl-1");
    assert_eq!(v.claims.client, None);
    assert_eq!(v.claims.renditions, None);
    assert!(v.claims.lifetime() <= DEFAULT_MAX_LIFETIME_SECS);
    assert!(v.claims.lifetime() > p1.refresh_secs);
    assert!(matches!(
        check("ix-syd", &peer_grant, "clear-title/catalog.json"),
        Err(GrantError::WrongAudience { .. })
    ));
    assert!(matches!(
        check("isp-akl", &peer_grant, "enc-title/catalog.json"),
        Err(GrantError::PathNotCovered { .. })
    ));
    let up_grant = grant_of(&p1, "clear-title", "syd-1");
    check("ix-syd", &up_grant, "clear-title/v360/media.mp4").unwrap();
    assert!(check("isp-akl", &up_grant, "clear-title/v360/media.mp4").is_err());

    // Steering never sends a client to an appliance that has not reported the title held.
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ranked: Vec<&str> = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ranked[0], "akl-2", "{v}");
    assert!(!ranked.contains(&"akl-1"), "{ranked:?}");

    // A stale version (akl-2 holds an older catalog of clear-title) is neither steered to nor a
    // source, and akl-2's plan asks it to fetch the current one.
    let old = "00".repeat(32);
    beat(env, "akl-2", &[("clear-title", &old)], None).await;
    let p1 = plan(env, "akl-1").await;
    assert_eq!(sources(&p1, "clear-title")[0].1, "syd-1");
    let p2 = plan(env, "akl-2").await;
    assert!(!sources(&p2, "clear-title").is_empty());
    let (_, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    let ranked: Vec<&str> = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(
        !ranked.contains(&"akl-2") && !ranked.contains(&"akl-1"),
        "{ranked:?}"
    );
    assert_eq!(v["miss"], "content_miss");

    // The fleet view shows holdings, versions and fill status.
    let (s, _, view) = env
        .call(
            Method::GET,
            "/v1/fleet",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let a2 = view["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "akl-2")
        .unwrap()
        .clone();
    assert_eq!(a2["held"][0]["catalog_sha256"], old.as_str());
    assert_eq!(a2["stale_titles"], json!(["clear-title"]));
    assert_eq!(a2["fill"]["bytes_filled"], 5000, "{a2}");

    // Metrics: plans served, churn, titles planned per cluster, reported fill counters.
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap();
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert_eq!(value("outpost_cp_fill_plans_served_total"), 10);
    assert!(value("outpost_cp_fill_plan_changes_total{action=\"add\"}") >= 5);
    assert_eq!(
        value("outpost_cp_fill_titles_planned{cluster=\"isp-akl\"}"),
        3
    );
    assert_eq!(value("outpost_cp_fill_bytes_reported_total"), 5000);
    assert_eq!(value("outpost_cp_fill_verify_failures_total"), 1);
    assert!(value("outpost_cp_steering_misses_total{class=\"content\"}") >= 1);
}

/// The test configuration with 20 views per copy, so the forecast above gives 2, 2 and 1 copies.
pub fn config() -> control_plane::Config {
    let mut c = super::test_config();
    c.fill.views_per_copy = 20.0;
    c
}

/// Popularity from recorded sessions, urgency from recent content misses, the exchange tier's
/// own plan (filled from origin, then the S3 bucket), and stable plans when nothing changes.
pub async fn popularity_misses_and_tiers(env: &Env) {
    // Two days later nothing is a new release any more.
    env.clock.advance(2 * 86_400);
    beat(env, "akl-1", &[], None).await;
    beat(env, "akl-2", &[], None).await;
    beat(env, "syd-1", &[], None).await;
    let p = plan(env, "akl-1").await;
    assert!(p.titles.iter().all(|t| !t.urgent), "{p:?}");

    // Three sessions of clear-title from NZ: neither embedded appliance holds it, so steering
    // records content misses and sends the players to origin.
    for _ in 0..3 {
        let (s, v) = env
            .start("acct-premium", "browser", "clear-title", "127.0.0.1")
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["miss"], "content_miss");
        assert_eq!(v["appliances"][0]["id"], "origin-1");
    }
    env.clock.advance(60);
    beat(env, "akl-1", &[], None).await;
    env.state.fill_plans.clear().await;
    let p = plan(env, "akl-1").await;
    let ct = &p.titles[0];
    assert_eq!(ct.title, "clear-title", "{p:?}");
    assert!(ct.urgent);
    assert!(
        ct.reason.starts_with("urgent (recent content miss)"),
        "{}",
        ct.reason
    );
    // Watched for the whole title (10 s, capped) at the premium session's top rung: views > 0.
    let views: f64 = ct
        .reason
        .split("popularity ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(views > 1.0, "{}", ct.reason);
    // The S3 bucket is the last source, after the origin appliance.
    let s = sources(&p, "clear-title");
    assert_eq!(
        s,
        [
            (SourceTier::Origin, "origin-1".to_owned()),
            (SourceTier::Origin, "s3:media".to_owned())
        ]
    );
    match p.titles[0].sources.last().unwrap() {
        FillSource::S3 { prefix, .. } => assert_eq!(prefix, "titles"),
        other => panic!("{other:?}"),
    }

    // The exchange tier plans its own copy of every title (it has room), from origin.
    let px = plan(env, "syd-1").await;
    assert_eq!(px.cluster, "ix-syd");
    assert_eq!(px.titles.len(), 3, "{px:?}");
    assert_eq!(
        sources(&px, "clear-title"),
        [
            (SourceTier::Origin, "origin-1".to_owned()),
            (SourceTier::Origin, "s3:media".to_owned())
        ]
    );

    // Ten minutes later the misses are old: no longer urgent, still the most popular. The plan
    // is recomputed after plan_cache_secs and, with nothing changed, changes nothing.
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let adds = |m: &Value| -> String {
        m.as_str()
            .unwrap()
            .lines()
            .find(|l| l.starts_with("outpost_cp_fill_plan_changes_total{action=\"add\"}"))
            .unwrap()
            .to_owned()
    };
    let before = adds(&m);
    env.clock.advance(700);
    beat(env, "akl-1", &[], None).await;
    beat(env, "akl-2", &[], None).await;
    let p = plan(env, "akl-1").await;
    assert_eq!(p.titles[0].title, "clear-title");
    assert!(!p.titles[0].urgent, "{:?}", p.titles[0]);
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    assert_eq!(adds(&m), before);

    // The cluster's content region becomes Japan: only clear-title has a window there (opening
    // in 2099: pre-positioned), so the other titles leave the plan; nobody watched it from
    // Japan, so it is down to one copy.
    let (s, _, v) = env
        .call(
            Method::PUT,
            "/v1/admin/policy",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            Some(
                json!({"clusters": [{"id": "isp-akl", "site": "akl", "kind": "embedded",
                "fallbacks": ["ix-syd"], "countries": ["JP"]}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let p1 = plan(env, "akl-1").await;
    let p2 = plan(env, "akl-2").await;
    let titles: Vec<&str> = p1
        .titles
        .iter()
        .chain(&p2.titles)
        .map(|t| t.title.as_str())
        .collect();
    assert_eq!(titles, ["clear-title"], "{p1:?} {p2:?}");
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    assert!(m
        .as_str()
        .unwrap()
        .contains("outpost_cp_fill_titles_planned{cluster=\"isp-akl\"} 1"));
    // A bad country is refused by name.
    let (s, _, v) = env
        .call(
            Method::PUT,
            "/v1/admin/policy",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            Some(
                json!({"clusters": [{"id": "isp-akl", "site": "akl", "kind": "embedded",
                "countries": ["jp"]}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("clusters[0].countries[0]"),
        "{v}"
    );
}

/// The test configuration with an S3 origin bucket.
pub fn s3_config() -> control_plane::Config {
    let mut c = config();
    c.fill.s3_bucket = Some("media".into());
    c.fill.s3_prefix = "titles".into();
    c
}

/// Removals: a held title the plan leaves out is listed as removable only while another copy of
/// its current version exists, and the listing names that copy.
pub async fn removals_name_another_copy(env: &Env) {
    import_forecast(env).await;
    // Origin reports what it holds (nothing) instead of being assumed to hold everything.
    let (s, _, v) = env
        .call(
            Method::PUT,
            "/v1/admin/policy",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            Some(
                json!({"appliances": [{"id": "origin-1", "cluster": "origin",
                "address": "127.0.0.31", "port": 8084, "admin_state": "reported",
                "credential": "origin-1-credential-0123456789"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    env.state.fill_plans.clear().await;
    // No copy anywhere: origin and the exchange report nothing held.
    for id in ["origin-1", "syd-1", "akl-1", "akl-2"] {
        beat(env, id, &[], None).await;
    }
    let p1 = plan(env, "akl-1").await;
    let (holder, other) = if p1.titles.iter().any(|t| t.title == "hd-only") {
        ("akl-1", "akl-2")
    } else {
        ("akl-2", "akl-1")
    };
    let digest = plan(env, holder)
        .await
        .titles
        .iter()
        .find(|t| t.title == "hd-only")
        .unwrap()
        .catalog_sha256
        .clone();
    // `other` holds an older version of hd-only, which its plan leaves out: it is the last copy
    // of the title anywhere, so it is not listed.
    let old = "00".repeat(32);
    beat(env, other, &[("hd-only", &old)], None).await;
    env.state.fill_plans.clear().await;
    let p = plan(env, other).await;
    assert!(p.titles.iter().all(|t| t.title != "hd-only"), "{p:?}");
    assert!(p.removals.is_empty(), "the last copy is listed: {p:?}");
    // The planned holder reports the current version: now `other` may remove its copy.
    beat(env, holder, &[("hd-only", &digest)], None).await;
    env.state.fill_plans.clear().await;
    let p = plan(env, other).await;
    assert_eq!(p.removals.len(), 1, "{p:?}");
    assert_eq!(p.removals[0].title, "hd-only");
    assert_eq!(p.removals[0].kept_at, vec![holder.to_owned()]);
    let before = p.plan_id.clone();
    // The holder goes offline (stops heartbeating): the removal is withdrawn, the plan changes.
    env.clock.advance(3600);
    beat(env, other, &[("hd-only", &old)], None).await;
    beat(env, "origin-1", &[], None).await;
    env.state.fill_plans.clear().await;
    let p = plan(env, other).await;
    assert!(p.removals.is_empty(), "{p:?}");
    assert_ne!(p.plan_id, before);
    // Origin's own plan lists every title and removes nothing.
    let po = plan(env, "origin-1").await;
    assert_eq!(po.titles.len(), 3, "{po:?}");
    assert!(po.removals.is_empty());
}

/// A heartbeat with 100 GB of drives holding nothing, carrying QoE reports: `(sid, title,
/// starvation events)`, each played at 3000 kbps with 9000 kbps measured throughput.
async fn beat_qoe(env: &Env, id: &str, reports: &[(&str, &str, u64)]) {
    let now_ms = env.state.now() * 1000;
    let qoe: Vec<Value> = reports
        .iter()
        .map(|(sid, title, starved)| {
            json!({"sid": sid, "cid": title, "title": title, "first_ms": now_ms - 60_000,
                "last_ms": now_ms, "requests": 20, "bytes": 5_000_000, "startup_ms": 600,
                "starvation_events": starved, "media_ms": 60_000, "avg_bitrate_kbps": 3000,
                "buffer_ms": 4_000, "min_buffer_ms": 0, "avg_throughput_kbps": 9000,
                "switches": 1})
        })
        .collect();
    let body = json!({"health": "ok", "load": 0.1, "titles": [], "held": [], "qoe": qoe,
        "drives": [{"path": "/cache/0", "state": "ok", "used_bytes": 0, "capacity_bytes": 100u64 << 30}]});
    let (s, _, v) = env
        .call(
            Method::POST,
            &format!("/v1/appliances/{id}/heartbeat"),
            &[("authorization", &cred(id)), ("outpost-appliance", id)],
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Item 4's second signal: low QoE of a title on a cluster's appliances makes it urgent there
/// with one copy more than its demand asks for, explained in the plan's reason, bounded (a
/// title with too few or mostly good reports is not urgent) and lapsing with the window.
pub async fn low_qoe_feeds_urgency(env: &Env) {
    let mut bad = config();
    bad.fill.qoe_bad_share = 1.5;
    let e = bad.fill.validate().unwrap_err().to_string();
    assert!(e.contains("fill.qoe_bad_share"), "{e}");

    // Two days on nothing is a new release; the forecast gives hd-only one copy (10 views).
    env.clock.advance(2 * 86_400);
    import_forecast(env).await;
    beat(env, "akl-1", &[], None).await;
    beat(env, "akl-2", &[], None).await;
    let has = |p: &FillPlan, t: &str| p.titles.iter().any(|x| x.title == t);
    let p1 = plan(env, "akl-1").await;
    let p2 = plan(env, "akl-2").await;
    assert!(
        has(&p1, "hd-only") != has(&p2, "hd-only"),
        "one copy: {p1:?} {p2:?}"
    );
    let (holder, other) = if has(&p1, "hd-only") {
        ("akl-1", "akl-2")
    } else {
        ("akl-2", "akl-1")
    };
    assert!(p1.titles.iter().chain(&p2.titles).all(|t| !t.urgent));

    // The holder's players of hd-only starve (2 of 3 reports); clear-title plays well (1 of 3
    // starved: below the share); enc-title starves but on 2 reports only (too few).
    env.clock.advance(30);
    beat_qoe(
        env,
        holder,
        &[
            ("h1", "hd-only", 2),
            ("h2", "hd-only", 1),
            ("h3", "hd-only", 0),
            ("c1", "clear-title", 1),
            ("c2", "clear-title", 0),
            ("c3", "clear-title", 0),
            ("e1", "enc-title", 4),
            ("e2", "enc-title", 4),
        ],
    )
    .await;
    beat(env, other, &[], None).await;
    env.state.fill_plans.clear().await;
    let p = plan(env, other).await;
    let t = p
        .titles
        .iter()
        .find(|t| t.title == "hd-only")
        .unwrap_or_else(|| panic!("low QoE adds a second copy: {p:?}"));
    assert!(t.urgent, "{t:?}");
    assert!(
        t.reason.starts_with(
            "urgent (low QoE on this cluster: 2 of 3 recent sessions starved or played above their throughput; one extra copy); rank 1,"
        ),
        "{}",
        t.reason
    );
    assert!(t.reason.contains("2 of 2 copies"), "{}", t.reason);
    for other_title in ["clear-title", "enc-title"] {
        let x = p.titles.iter().find(|t| t.title == other_title);
        assert!(x.is_none_or(|x| !x.urgent), "{x:?}");
    }
    let ph = plan(env, holder).await;
    assert!(has(&ph, "hd-only"), "the holder keeps its copy: {ph:?}");

    // Ten minutes later the reports are out of the window: back to one copy, on the holder.
    env.clock.advance(700);
    beat(env, holder, &[], None).await;
    beat(env, other, &[], None).await;
    env.state.fill_plans.clear().await;
    let p = plan(env, other).await;
    assert!(!has(&p, "hd-only"), "{p:?}");
    assert!(p.titles.iter().all(|t| !t.urgent), "{p:?}");
    assert!(has(&plan(env, holder).await, "hd-only"));
}
