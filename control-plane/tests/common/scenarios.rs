//! Scenarios run against both backends (see `sqlite.rs` and `postgres.rs`).

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use protocol::grant::{KeyRing, Request as GrantRequest, Verifier};
use serde_json::{json, Value};

use super::{Env, ADMIN, API_KEY, PUBLIC, T0};

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// The published keys as a verifier key ring.
pub async fn key_ring(env: &Env) -> KeyRing {
    let (s, _, v) = env.call(Method::GET, "/v1/keys", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let mut ring = KeyRing::new();
    for k in v["keys"].as_array().unwrap() {
        assert_eq!(k["alg"], "Ed25519");
        let raw = URL_SAFE_NO_PAD
            .decode(k["public_key"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        ring.insert_pem(k["kid"].as_str().unwrap(), k["pem"].as_str().unwrap())
            .unwrap();
    }
    ring
}

/// A session start that passes every check: tier, renditions, steering order, grants that
/// verify for each listed appliance's cluster and not for another, and per-session manifests.
pub async fn happy_path(env: &Env) {
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-standard", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tier"], "HD");
    assert_eq!(v["country"], "NZ");
    assert_eq!(v["renditions"], json!(["v360", "v720", "a128"]));
    assert_eq!(v["lease_expires_at"], T0 + 120);
    assert!(v["license"].is_null());
    let apps = v["appliances"].as_array().unwrap();
    let clusters: Vec<&str> = apps
        .iter()
        .map(|a| a["cluster"].as_str().unwrap())
        .collect();
    // Two local appliances lead (failover stays inside the ISP), then one per upstream cluster.
    assert_eq!(clusters, ["isp-akl", "isp-akl", "ix-syd", "origin"]);
    assert!(v["miss"].is_null());

    // Grants: accepted by each listed cluster's verifier for an allowed rendition, refused by
    // another cluster, refused for a rendition above the tier.
    let ring = key_ring(env).await;
    let ip = Some("127.0.0.1".parse().unwrap());
    for a in apps {
        let grant = a["grant"].as_str().unwrap();
        let cluster = a["cluster"].as_str().unwrap();
        let ok = Verifier::new(ring.clone(), cluster);
        let path = format!("/g/{grant}/clear-title/v720/media.mp4");
        let verified = ok
            .verify(&GrantRequest {
                path: &path,
                client_ip: ip,
                now: T0 + 5,
            })
            .unwrap_or_else(|e| panic!("{cluster}: {e}"));
        assert_eq!(verified.claims.sub, v["session_id"].as_str().unwrap());
        assert!(
            verified.claims.exp - verified.claims.iat <= protocol::grant::DEFAULT_MAX_LIFETIME_SECS
        );
        let other = Verifier::new(ring.clone(), "some-other-cluster");
        assert!(other
            .verify(&GrantRequest {
                path: &path,
                client_ip: ip,
                now: T0 + 5
            })
            .is_err());
        // Bound to the client's /24: another network is refused.
        let elsewhere = Some("127.0.1.1".parse().unwrap());
        assert!(ok
            .verify(&GrantRequest {
                path: &path,
                client_ip: elsewhere,
                now: T0 + 5
            })
            .is_err());
        let hd_plus = format!("/g/{grant}/clear-title/v1080/media.mp4");
        assert!(ok
            .verify(&GrantRequest {
                path: &hd_plus,
                client_ip: ip,
                now: T0 + 5
            })
            .is_err());
        assert!(a["base_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/g/{grant}/clear-title/")));
    }

    // An IPv4-mapped client address is treated as IPv4 (geo, steering and grant binding).
    let (s, v2) = env
        .start(
            "acct-standard",
            "browser",
            "clear-title",
            "::ffff:127.0.0.1",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    let g2 = v2["appliances"][0]["grant"].as_str().unwrap();
    let c2 = v2["appliances"][0]["cluster"].as_str().unwrap();
    let p2 = format!("/g/{g2}/clear-title/v360/media.mp4");
    Verifier::new(ring.clone(), c2)
        .verify(&GrantRequest {
            path: &p2,
            client_ip: ip,
            now: T0 + 5,
        })
        .unwrap();

    // Per-session manifests.
    let hls_url = v["manifests"]["hls"]
        .as_str()
        .unwrap()
        .strip_prefix(PUBLIC)
        .unwrap()
        .to_owned();
    let (s, h, body) = env.call(Method::GET, &hls_url, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/vnd.apple.mpegurl");
    let text = body.as_str().unwrap();
    assert!(text.contains("#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://cp.test/v1/steering/"));
    assert_eq!(text.matches("#EXT-X-STREAM-INF").count(), 2 * 4, "{text}");
    assert!(!text.contains("v1080"));
    for a in apps {
        assert!(text.contains(&format!("PATHWAY-ID=\"{}\"", a["id"].as_str().unwrap())));
    }
    let dash_url = v["manifests"]["dash"]
        .as_str()
        .unwrap()
        .strip_prefix(PUBLIC)
        .unwrap()
        .to_owned();
    let (s, _, body) = env.call(Method::GET, &dash_url, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let mpd = body.as_str().unwrap();
    assert_eq!(mpd.matches("<BaseURL serviceLocation=").count(), 4, "{mpd}");
    assert!(mpd.contains("<ContentSteering defaultServiceLocation="));
    assert!(mpd.contains("id=\"v720\"") && !mpd.contains("id=\"v1080\""));
}

/// Every refusal, in the order the checks run, with its status and code.
pub async fn refusals(env: &Env) {
    env.fleet_up().await;
    let post = |auth: Option<&'static str>, body: Value| async move {
        let h: Vec<(&str, String)> = auth
            .map(|a| vec![("authorization", format!("Bearer {a}"))])
            .unwrap_or_default();
        let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, _, v) = env
            .call(Method::POST, "/v1/playback/sessions", &hr, Some(body))
            .await;
        (s, v)
    };
    let body = json!({"account_id": "acct-premium", "device_class": "browser", "title": "clear-title", "client_ip": "127.0.0.1"});
    let (s, v) = post(None, body.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = post(Some("wrong-key-0123456789"), body.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = post(
        Some(API_KEY),
        json!({"account_id": "a", "device_class": "browser", "title": "clear-title"}),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert_eq!(v["field"], "client_ip", "{v}");
    let (s, v) = post(Some(API_KEY), json!({"account_id": "a", "device_class": "browser", "title": "clear-title", "client_ip": "1.2.3", })).await;
    assert_eq!(
        (s, code(&v), v["field"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("client_ip")
        )
    );
    let (s, v) = post(Some(API_KEY), json!({"account_id": "a", "device_class": "browser", "title": "clear-title", "client_ip": "127.0.0.1", "extra": 1})).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("extra"))
    );

    let (s, v) = env
        .start("acct-premium", "browser", "no-such-title", "127.0.0.1")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_title"));
    let (s, v) = env
        .start("acct-premium", "fridge", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "unknown_device_class")
    );
    let (s, v) = env
        .start("nobody", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_account"));
    // 1. account active
    let (s, v) = env
        .start("acct-suspended", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "account_inactive"));
    // 2. geo: no window in the US; JP's window opens in 2099; an address in no country.
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "198.51.100.7")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "geo_blocked"));
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "203.0.113.9")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "geo_blocked"));
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "8.8.8.8")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "geo_blocked"));
    // 3. tier: an SD plan on a title without SD renditions; an SD device likewise.
    let (s, v) = env
        .start("acct-basic", "browser", "hd-only", "127.0.0.1")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "tier_unavailable"),
        "{v}"
    );
    let (s, v) = env
        .start("acct-premium", "phone", "hd-only", "127.0.0.1")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "tier_unavailable"));
    // The AU window caps at SD: allowed, SD only.
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "192.0.2.5")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tier"], "SD");
    // 4. DRM: a Widevine-only device on a Clear Key title.
    let (s, v) = env
        .start("acct-premium", "tv-widevine", "enc-title", "127.0.0.1")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "drm_unsupported"));
    // 5. concurrency: basic allows one stream.
    let (s, _) = env
        .start("acct-basic", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = env
        .start("acct-basic", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "concurrent_limit")
    );
    // No appliance: every reported appliance goes silent and the origin is set offline.
    env.clock.advance(31);
    let mut p = control_plane::import::Policy::parse(
        "[[appliances]]\nid = \"origin-1\"\ncluster = \"origin\"\naddress = \"127.0.0.31\"\nport = 8084\nadmin_state = \"offline\"\n",
        true,
        "inline",
    )
    .unwrap();
    let known = control_plane::import::Known {
        clusters: ["origin".to_owned()].into(),
        ..Default::default()
    };
    env.repo
        .import_policy(&p.to_rows("inline", &known).unwrap())
        .await
        .unwrap();
    env.state.invalidate();
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "no_appliance"),
        "{v}"
    );
    p.appliances.clear();

    // Every refusal is a JSON body with code and message, and counted in /metrics.
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("outpost_cp_refusals_total{code=\"geo_blocked\"} 3"),
        "{m}"
    );
    assert!(m.contains("outpost_cp_refusals_total{code=\"concurrent_limit\"} 1"));
}

/// `n` concurrent starts on the family plan (3 streams): exactly 3 succeed.
pub async fn concurrent_starts(env: &Env, n: usize) {
    env.fleet_up().await;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let app = env.app.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt as _;
            let req = axum::http::Request::builder()
                .method("POST")
                .uri("/v1/playback/sessions")
                .header("authorization", format!("Bearer {API_KEY}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    json!({"account_id": "acct-family", "device_class": "browser", "title": "clear-title", "client_ip": "10.1.2.3"}).to_string(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }));
    }
    let mut created = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, limited), (3, n - 3));
    assert_eq!(
        env.repo
            .live_leases("acct-family", T0 as i64)
            .await
            .unwrap(),
        3
    );
}

/// Heartbeats extend the lease from now with fresh grants; a lapsed lease frees its stream;
/// DELETE ends a session once.
pub async fn lease_lifecycle(env: &Env) {
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-basic", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["session_id"].as_str().unwrap().to_owned();
    let token = v["token"].as_str().unwrap().to_owned();
    let hb = format!("/v1/playback/sessions/{id}/heartbeat");
    let auth = format!("Bearer {token}");

    env.clock.advance(100);
    let (s, _, h) = env
        .call(Method::POST, &hb, &[("authorization", &auth)], None)
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["lease_expires_at"], T0 + 100 + 120);
    let g = &h["appliances"][0];
    assert_eq!(g["grant_expires_at"], T0 + 100 + 3 * 3600);
    // Wrong credential.
    let (s, _, _) = env
        .call(Method::POST, &hb, &[("authorization", "Bearer nope")], None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = env
        .call(
            Method::POST,
            "/v1/playback/sessions/unknown/heartbeat",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Lapse: no heartbeat for longer than the lease.
    env.clock.advance(121);
    let (s, _, e) = env
        .call(Method::POST, &hb, &[("authorization", &auth)], None)
        .await;
    assert_eq!((s, code(&e)), (StatusCode::GONE, "session_ended"));
    let (s, _, _) = env
        .call(
            Method::GET,
            &format!("/v1/playback/sessions/{id}/master.m3u8"),
            &[],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::GONE);
    // The stream is free again.
    let (s, v) = env
        .start("acct-basic", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id2 = v["session_id"].as_str().unwrap().to_owned();
    let del = format!("/v1/playback/sessions/{id2}");
    let key = format!("Bearer {API_KEY}");
    let (s, _, _) = env
        .call(Method::DELETE, &del, &[("authorization", &key)], None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = env
        .call(Method::DELETE, &del, &[("authorization", &key)], None)
        .await;
    assert_eq!(s, StatusCode::GONE);
    let (s, _) = env
        .start("acct-basic", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

fn kid(hex: &str) -> String {
    URL_SAFE_NO_PAD.encode(protocol::content_keys::hex16(hex).unwrap())
}

/// Clear Key licences follow the session's tier: an SD session asking for HD keys gets none.
pub async fn licences(env: &Env) {
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-basic", "browser", "enc-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tier"], "SD");
    assert_eq!(v["renditions"], json!(["v360", "a128"]));
    let token = v["token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let url = "/v1/license/clearkey";
    let sd = kid("11111111111111111111111111111111");
    let hd = kid("22222222222222222222222222222222");
    let audio = kid("44444444444444444444444444444444");

    let (s, _, e) = env
        .call(
            Method::POST,
            url,
            &[("authorization", &auth)],
            Some(json!({"kids": [hd], "type": "temporary"})),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::FORBIDDEN, "no_keys"));
    let (s, _, lic) = env
        .call(
            Method::POST,
            url,
            &[("authorization", &auth)],
            Some(json!({"kids": [sd, hd, audio], "type": "temporary"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{lic}");
    let keys = lic["keys"].as_array().unwrap();
    let kids: HashSet<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, HashSet::from([sd.as_str(), audio.as_str()]));
    let sd_key = keys.iter().find(|k| k["kid"] == sd.as_str()).unwrap();
    assert_eq!(sd_key["kty"], "oct");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(super::data("enc-title.keys.json")).unwrap())
            .unwrap();
    let want = protocol::content_keys::hex16(file["keys"][0]["key"].as_str().unwrap()).unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(sd_key["k"].as_str().unwrap())
            .unwrap(),
        want
    );
    // Token in the query works too; a wrong token does not; bad kids are named.
    let (s, _, _) = env
        .call(
            Method::POST,
            &format!("{url}?token={token}"),
            &[],
            Some(json!({"kids": [sd]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = env
        .call(
            Method::POST,
            url,
            &[("authorization", "Bearer forged")],
            Some(json!({"kids": [sd]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, e) = env
        .call(
            Method::POST,
            url,
            &[("authorization", &auth)],
            Some(json!({"kids": [sd, "!!"]})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kids[1]"))
    );
    // An FHD session gets the FHD key.
    let (s, v) = env
        .start("acct-premium", "browser", "enc-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let fhd = kid("33333333333333333333333333333333");
    let (s, _, lic) = env
        .call(
            Method::POST,
            url,
            &[(
                "authorization",
                &format!("Bearer {}", v["token"].as_str().unwrap()),
            )],
            Some(json!({"kids": [fhd]})),
        )
        .await;
    assert_eq!(
        (s, lic["keys"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    // Ended session: no licence.
    let id = v["session_id"].as_str().unwrap();
    let (s, _, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/playback/sessions/{id}"),
            &[(
                "authorization",
                &format!("Bearer {}", v["token"].as_str().unwrap()),
            )],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, e) = env
        .call(
            Method::POST,
            url,
            &[(
                "authorization",
                &format!("Bearer {}", v["token"].as_str().unwrap()),
            )],
            Some(json!({"kids": [fhd]})),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::GONE, "session_ended"));
}

/// The steering manifest drops an appliance that turns unhealthy; new sessions record a health
/// or content miss when the best local appliance is skipped.
pub async fn steering_reacts(env: &Env) {
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let first = v["appliances"][0]["id"].as_str().unwrap().to_owned();
    let other = if first == "akl-1" { "akl-2" } else { "akl-1" };
    let url = v["steering"]["hls"]
        .as_str()
        .unwrap()
        .strip_prefix(PUBLIC)
        .unwrap()
        .to_owned();
    let (s, _, st) = env.call(Method::GET, &url, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["VERSION"], 1);
    assert_eq!(st["PATHWAY-PRIORITY"][0], first.as_str());
    assert_eq!(st["PATHWAY-PRIORITY"][1], other);
    assert_eq!(st["PATHWAY-PRIORITY"].as_array().unwrap().len(), 4);

    assert_eq!(
        env.appliance_heartbeat(&first, "error", 0.1, &["clear-title"])
            .await,
        StatusCode::OK
    );
    let (_, _, st) = env.call(Method::GET, &url, &[], None).await;
    let p: Vec<&str> = st["PATHWAY-PRIORITY"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(!p.contains(&first.as_str()), "{p:?}");
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], other, "the other local appliance leads: {p:?}");
    let dash_url = v["steering"]["dash"]
        .as_str()
        .unwrap()
        .strip_prefix(PUBLIC)
        .unwrap()
        .to_owned();
    let (_, _, sd) = env.call(Method::GET, &dash_url, &[], None).await;
    assert_eq!(sd["SERVICE-LOCATION-PRIORITY"].as_array().unwrap().len(), 3);

    // A new session: best local skipped for health.
    let (_, v2) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(v2["miss"], "health_miss", "{v2}");
    assert_eq!(v2["appliances"][0]["id"], other);
    // Healthy again but without the title: a content miss.
    assert_eq!(
        env.appliance_heartbeat(&first, "ok", 0.1, &["enc-title"])
            .await,
        StatusCode::OK
    );
    let (_, v3) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(v3["miss"], "content_miss", "{v3}");
    // Overloaded: health miss.
    assert_eq!(
        env.appliance_heartbeat(&first, "ok", 0.95, &["clear-title"])
            .await,
        StatusCode::OK
    );
    let (_, v4) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(v4["miss"], "health_miss");
    // After the session ends the steering server answers 410 so players stop polling.
    let id = v["session_id"].as_str().unwrap();
    env.call(
        Method::DELETE,
        &format!("/v1/playback/sessions/{id}"),
        &[("authorization", &format!("Bearer {API_KEY}"))],
        None,
    )
    .await;
    let (s, _, _) = env.call(Method::GET, &url, &[], None).await;
    assert_eq!(s, StatusCode::GONE);
}

/// Appliance heartbeats need the right credential and header; silent appliances are marked
/// offline and not steered to.
pub async fn fleet_auth_and_offline(env: &Env) {
    let hb = json!({"health": "ok", "load": 0.1, "titles": ["clear-title"]});
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/heartbeat",
            &[
                ("authorization", "Bearer akl-2-credential-0123456789"),
                ("outpost-appliance", "akl-1"),
            ],
            Some(hb.clone()),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/heartbeat",
            &[("authorization", "Bearer akl-1-credential-0123456789")],
            Some(hb.clone()),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Outpost-Appliance"))
    );
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/ghost/heartbeat",
            &[
                ("authorization", "Bearer x"),
                ("outpost-appliance", "ghost"),
            ],
            Some(hb.clone()),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, "unknown_appliance"));
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/heartbeat",
            &[
                ("authorization", "Bearer akl-1-credential-0123456789"),
                ("outpost-appliance", "akl-1"),
            ],
            Some(json!({"health": "ok", "load": -1, "titles": []})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("load"))
    );

    env.fleet_up().await;
    let (s, _, ack) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/heartbeat",
            &[
                ("authorization", "Bearer akl-1-credential-0123456789"),
                ("outpost-appliance", "akl-1"),
            ],
            Some(hb),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ack["received_at"], T0);
    assert_eq!(ack["key_ids"].as_array().unwrap().len(), 1);

    // Only akl-1 keeps reporting; 31 s later the others are silent.
    env.clock.advance(25);
    assert_eq!(
        env.appliance_heartbeat("akl-1", "ok", 0.1, &["clear-title"])
            .await,
        StatusCode::OK
    );
    env.clock.advance(10);
    let marked = env.repo.mark_offline((T0 + 35 - 30) as i64).await.unwrap();
    let marked: HashSet<String> = marked.into_iter().collect();
    assert_eq!(
        marked,
        HashSet::from(["akl-2".to_owned(), "syd-1".to_owned()])
    );
    env.state.invalidate();
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let ids: Vec<&str> = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["akl-1", "origin-1"]);
    let (s, _, view) = env
        .call(
            Method::GET,
            "/v1/admin/appliances",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let serving: Vec<&str> = view["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["serving"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(serving, ["akl-1", "origin-1"]);
}

/// Admin imports: errors name the field; success invalidates the cache.
pub async fn admin_imports(env: &Env) {
    let admin = format!("Bearer {ADMIN}");
    let (s, _, e) = env
        .call(
            Method::PUT,
            "/v1/admin/policy",
            &[("authorization", "Bearer nope")],
            Some(json!({})),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _, e) = env
        .call(
            Method::PUT,
            "/v1/admin/policy",
            &[("authorization", &admin)],
            Some(json!({"accounts": [{"id": "new", "plan": "gold", "status": "active"}]})),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "import_failed"));
    assert!(
        e["message"].as_str().unwrap().contains("accounts[0].plan"),
        "{e}"
    );
    let (s, _, r) = env
        .call(
            Method::PUT,
            "/v1/admin/policy",
            &[("authorization", &admin)],
            Some(
                json!({"accounts": [{"id": "acct-basic", "plan": "premium", "status": "active"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    env.fleet_up().await;
    // acct-basic is premium now: FHD on a browser.
    let (s, v) = env
        .start("acct-basic", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!((s, v["tier"].as_str()), (StatusCode::CREATED, Some("FHD")));
    // A title upload with a broken manifest is refused with the file named.
    let catalog: Value = serde_json::from_str(
        &std::fs::read_to_string(super::data("clear-title/catalog.json")).unwrap(),
    )
    .unwrap();
    let (s, _, e) = env
        .call(
            Method::PUT,
            "/v1/admin/titles/clear-title",
            &[("authorization", &admin)],
            Some(json!({"catalog": catalog, "dash": "<MPD>", "hls": "#EXTM3U\n"})),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "import_failed"));
    assert!(
        e["message"].as_str().unwrap().contains("manifest.mpd"),
        "{e}"
    );
    let dash = std::fs::read_to_string(super::data("clear-title/manifest.mpd")).unwrap();
    let hls = std::fs::read_to_string(super::data("clear-title/master.m3u8")).unwrap();
    let (s, _, r) = env
        .call(
            Method::PUT,
            "/v1/admin/titles/clear-title",
            &[("authorization", &admin)],
            Some(json!({"catalog": catalog, "dash": dash, "hls": hls})),
        )
        .await;
    assert_eq!(
        (s, r["title"].as_str()),
        (StatusCode::OK, Some("clear-title")),
        "{r}"
    );
    let (s, _, e) = env
        .call(
            Method::PUT,
            "/v1/admin/titles/other-name",
            &[("authorization", &admin)],
            Some(json!({"catalog": catalog, "dash": dash, "hls": hls})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("catalog.title"))
    );
    let mut bad = catalog.clone();
    bad["renditions"][0]["tier"] = json!("UHD");
    let (s, _, e) = env
        .call(
            Method::PUT,
            "/v1/admin/titles/clear-title",
            &[("authorization", &admin)],
            Some(json!({"catalog": bad, "dash": "", "hls": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("renditions[0].tier"),
        "{e}"
    );
}

/// Waits (bounded) until `f` holds; panics with `what` if it never does.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Registration updates the address and the announced prefixes (reported ones replace the
/// configured ones); the background task marks silent appliances offline and purges old sessions.
pub async fn registration_and_background(env: &Env) {
    let auth = [
        ("authorization", "Bearer akl-1-credential-0123456789"),
        ("outpost-appliance", "akl-1"),
    ];
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/register",
            &auth,
            Some(json!({"prefixes": ["10.9.0.1/16"]})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("prefixes[0]"))
    );
    // A body is a JSON object: serde alone would read a struct from an array of its fields
    // (schemathesis found `[null, null]` registered).
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/register",
            &auth,
            Some(json!([null, null])),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body")),
        "{e}"
    );
    // A counter the database cannot hold (signed 64 bits) is refused by name, not clamped.
    let (s, _, e) = env
        .call(
            Method::POST,
            "/v1/appliances/akl-1/heartbeat",
            &auth,
            Some(json!({"health": "ok", "load": 0.1, "titles": [],
                "fill": {"in_window": true, "titles_pending": 0, "bytes_filled": 1u64 << 63,
                    "files_verified": 0, "verify_failures": 0, "rate_bps": 0}})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("fill.bytes_filled")),
        "{e}"
    );
    let (s, _, _) = env.call(Method::POST, "/v1/appliances/akl-1/register", &auth,
        Some(json!({"address": "127.0.0.99", "port": 9999, "prefixes": ["10.9.0.0/16"], "version": "0.1.0"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-premium", "browser", "clear-title", "10.9.1.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["appliances"][0]["id"], "akl-1");
    assert!(v["appliances"][0]["base_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.99:9999/g/"));
    let first_session = v["session_id"].as_str().unwrap().to_owned();
    let (_, v) = env
        .start("acct-premium", "browser", "clear-title", "127.0.0.1")
        .await;
    let ids: Vec<&str> = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["akl-2", "syd-1", "origin-1"]);

    env.clock.advance(40);
    let task = tokio::spawn(control_plane::background(env.state.clone()));
    eventually("silent appliances marked offline", || async {
        let snap = env.repo.load_snapshot().await.unwrap();
        snap.appliances
            .iter()
            .filter(|a| a.status == "offline")
            .count()
            == 3
    })
    .await;
    task.abort();
    env.clock
        .advance(control_plane::SESSION_RETENTION_SECS + 200);
    let task = tokio::spawn(control_plane::background(env.state.clone()));
    eventually("lapsed sessions purged", || async {
        env.repo.session(&first_session).await.unwrap().is_none()
    })
    .await;
    task.abort();
}

/// The licence-policy half of `drm_unsupported`: the device speaks Clear Key but no key is
/// allowed at the session's tier. Also `admin_disabled` without an admin token.
pub async fn drm_policy_refusal(env: &Env) {
    env.fleet_up().await;
    let mut keys: Value =
        serde_json::from_str(&std::fs::read_to_string(super::data("enc-title.keys.json")).unwrap())
            .unwrap();
    // The SD rendition's key now needs an HD session.
    keys["keys"][0]["tier"] = json!("HD");
    let (s, _, r) = env
        .call(
            Method::PUT,
            "/v1/admin/content-keys",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            Some(keys),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, v) = env
        .start("acct-basic", "browser", "enc-title", "127.0.0.1")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "drm_unsupported"),
        "{v}"
    );
    // An HD session still plays, with both video keys.
    let (s, v) = env
        .start("acct-standard", "browser", "enc-title", "127.0.0.1")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["renditions"], json!(["v360", "v720", "a128"]));
    // Content keys for an unknown title are refused, naming the field.
    let (s, _, e) = env.call(Method::PUT, "/v1/admin/content-keys", &[("authorization", &format!("Bearer {ADMIN}"))],
        Some(json!({"title": "nope", "scheme": "cenc", "keys": [{"kid": "11111111111111111111111111111111", "key": "0f0e0d0c0b0a09080706050403020100", "tier": null, "track_type": "audio"}]}))).await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "import_failed"));
    assert!(
        e["message"].as_str().unwrap().contains("field title"),
        "{e}"
    );
}

/// `GET /v1/fleet`: admin-only by default; lists every appliance with its cluster kind, drives,
/// titles, counters and a request-rate history derived from successive heartbeats.
pub async fn fleet_view(env: &Env) {
    let (s, _, e) = env.call(Method::GET, "/v1/fleet", &[], None).await;
    assert_eq!((s, code(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let beat = |requests: u64, bytes: u64| {
        json!({"health": "ok", "load": 0.25, "titles": ["clear-title"], "requests_served": requests,
            "bytes_served": bytes,
            "drives": [{"path": "/cache/0", "state": "ok", "used_bytes": 10, "capacity_bytes": 100}]})
    };
    let headers = [
        ("authorization", "Bearer akl-1-credential-0123456789"),
        ("outpost-appliance", "akl-1"),
    ];
    let path = "/v1/appliances/akl-1/heartbeat";
    let (s, _, _) = env
        .call(Method::POST, path, &headers, Some(beat(100, 1_000)))
        .await;
    assert_eq!(s, StatusCode::OK);
    env.clock.advance(2);
    let (s, _, _) = env
        .call(Method::POST, path, &headers, Some(beat(140, 9_000)))
        .await;
    assert_eq!(s, StatusCode::OK);
    let admin = format!("Bearer {}", ADMIN);
    let (s, _, v) = env
        .call(Method::GET, "/v1/fleet", &[("authorization", &admin)], None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let list = v["appliances"].as_array().unwrap();
    let a = list.iter().find(|a| a["id"] == "akl-1").unwrap();
    assert_eq!(a["online"], true, "{a}");
    assert_eq!(a["requests_served"], 140);
    assert_eq!(a["bytes_served"], 9_000);
    assert_eq!(a["titles"], json!(["clear-title"]));
    assert_eq!(a["drives"][0]["capacity_bytes"], 100);
    assert!(a["cluster_kind"].is_string());
    // Two heartbeats two seconds apart, 40 requests between them: 20 requests per second.
    assert_eq!(
        a["rps_history"].as_array().unwrap().last().unwrap()[1],
        20.0
    );
    // An appliance that never reported is listed, and not online.
    let silent = list.iter().find(|a| a["id"] == "syd-1").unwrap();
    assert_eq!(silent["online"], false, "{silent}");
}

/// A start whose first request died after claiming its `Idempotency-Key` and taking the lease
/// (a replica killed mid-start): once the claim is stale the retry takes it over, ends the
/// orphaned lease and answers; the dead owner can neither take a lease nor store an answer
/// under the key any more; later retries get the stored answer; one live lease throughout.
pub async fn stale_idempotency_claim_is_taken_over(env: &Env) {
    use control_plane::db::SessionRow;
    use control_plane::steering::StoredDecision;
    env.fleet_up().await;
    let body = json!({"account_id": "acct-premium", "device_class": "browser", "title": "clear-title", "client_ip": "10.1.2.3"});
    let hash = control_plane::crypto::digest(&body.to_string());
    let now = T0 as i64;
    assert!(env
        .repo
        .claim_idempotency_key("k-dead", &hash, "dead-owner", now, now + 86_400)
        .await
        .unwrap());
    let orphan = |id: &str| SessionRow {
        id: id.into(),
        account_id: "acct-premium".into(),
        title: "clear-title".into(),
        device_class: "browser".into(),
        client_ip: "10.1.2.3".into(),
        country: "NZ".into(),
        tier: protocol::catalog::Tier::Sd,
        renditions: vec![],
        key_ids: vec![],
        steering: StoredDecision {
            ranked: vec![],
            reason: "test".into(),
            miss: None,
        },
        license_sha256: "0".repeat(64),
        created_at: now,
        expires_at: now + 600,
        ended_at: None,
        end_reason: None,
        idempotency_key: Some("k-dead".into()),
        bitrate_bps: 0,
        title_secs: 0,
    };
    assert!(env
        .repo
        .insert_session_if_under_limit(&orphan("orphan-1"), 4, now, Some("dead-owner"))
        .await
        .unwrap());
    assert_eq!(env.repo.live_leases("acct-premium", now).await.unwrap(), 1);

    // Stale: the retry takes the key over.
    env.clock
        .advance(control_plane::routes::playback::IDEMPOTENCY_STALE_SECS + 1);
    let now = now + control_plane::routes::playback::IDEMPOTENCY_STALE_SECS as i64 + 1;
    let headers = [
        ("authorization", format!("Bearer {API_KEY}")),
        ("idempotency-key", "k-dead".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let post = |body: Value| env.call(Method::POST, "/v1/playback/sessions", &headers, Some(body));
    let (s, _, first) = post(body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let sid = first["session_id"].as_str().unwrap().to_owned();
    assert_ne!(sid, "orphan-1");
    let orphan_row = env.repo.session("orphan-1").await.unwrap().unwrap();
    assert_eq!(
        orphan_row.end_reason.as_deref(),
        Some("idempotency_takeover")
    );
    assert_eq!(env.repo.live_leases("acct-premium", now).await.unwrap(), 1);
    let new_row = env.repo.session(&sid).await.unwrap().unwrap();
    assert_eq!(new_row.idempotency_key.as_deref(), Some("k-dead"));

    // The dead owner, were it only slow, can no longer take a lease or store an answer.
    assert!(!env
        .repo
        .insert_session_if_under_limit(&orphan("orphan-2"), 4, now, Some("dead-owner"))
        .await
        .unwrap());
    assert!(!env
        .repo
        .store_idempotent_response("k-dead", "dead-owner", "sealed")
        .await
        .unwrap());

    // A later retry: the stored answer; another body: a conflict.
    let (s, _, again) = post(body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["session_id"], first["session_id"]);
    let mut other = body.clone();
    other["account_id"] = json!("acct-standard");
    let (s, _, v) = post(other).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(env.repo.live_leases("acct-premium", now).await.unwrap(), 1);
    let (_, _, metrics) = env.call(Method::GET, "/metrics", &[], None).await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("outpost_cp_idempotency_takeovers_total 1")),
        "{metrics}"
    );
}

/// The database sums what the window's sessions streamed (`Repository::usage_totals`) exactly as
/// the planner's Rust formula does for one session (`popularity::Usage::total`): clipped to the
/// window, capped at the title's duration for popularity, uncapped for the serving cluster,
/// grouped per (title, country, serving cluster), a content miss counted only from `miss_since`.
pub async fn usage_totals(env: &Env) {
    use control_plane::db::{SessionRow, UsageTotal};
    use control_plane::fill::popularity::Usage;
    use control_plane::steering::{Choice, MissClass, StoredDecision};

    let t0 = T0 as i64;
    let (window_start, now, miss_since) = (t0, t0 + 1000, t0 + 500);
    // (id, title, country, serving cluster, miss, bit rate, title seconds, created, ended)
    type Spec<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        bool,
        i64,
        i64,
        i64,
        i64,
    );
    #[rustfmt::skip]
    let specs: [Spec; 5] = [
        // 150 s in the window at 100 kB/s, the title lasts 100 s.
        ("a", "t1", "NZ", Some("isp-a"), false, 800_000, 100, t0 - 50, t0 + 150),
        // A content miss after miss_since, still live at `now`: 100 s at 200 kB/s.
        ("b", "t1", "NZ", Some("isp-a"), true, 1_600_000, 0, t0 + 900, 0),
        // A content miss before miss_since, served past the cluster: 10 s.
        ("c", "t1", "NZ", Some("ix"), true, 800_000, 100, t0 + 100, t0 + 110),
        // Steered nowhere.
        ("d", "t2", "AU", None, false, 8_000, 60, t0 + 10, t0 + 20),
        // Over before the window.
        ("e", "t1", "NZ", Some("isp-a"), false, 800_000, 100, t0 - 100, t0 - 10),
    ];
    let mut expected: Vec<UsageTotal> = Vec::new();
    for (id, title, country, cluster, miss, bps, secs, created, ended) in specs {
        let row = SessionRow {
            id: id.into(),
            account_id: "acct-premium".into(),
            title: title.into(),
            device_class: "browser".into(),
            client_ip: "10.1.2.3".into(),
            country: country.into(),
            tier: protocol::catalog::Tier::Sd,
            renditions: vec![],
            key_ids: vec![],
            steering: StoredDecision {
                ranked: cluster
                    .map(|c| Choice {
                        appliance: format!("{c}-1"),
                        cluster: c.into(),
                        address: "127.0.0.1".into(),
                        port: 1,
                    })
                    .into_iter()
                    .collect(),
                reason: "test".into(),
                miss: miss.then_some(MissClass::ContentMiss),
            },
            license_sha256: format!("{id:0>64}"),
            created_at: created,
            expires_at: created + 300,
            ended_at: None,
            end_reason: None,
            idempotency_key: None,
            bitrate_bps: bps,
            title_secs: secs,
        };
        assert!(env
            .repo
            .insert_session_if_under_limit(&row, 100, created, None)
            .await
            .unwrap());
        if ended > 0 {
            assert!(env.repo.end_session(id, ended, "stopped").await.unwrap());
        }
        let usage = Usage {
            title: title.into(),
            country: country.into(),
            bitrate_bps: bps as u64,
            start: created as u64,
            end: if ended > 0 { ended } else { created + 300 } as u64,
        };
        if usage.end as i64 <= window_start {
            continue;
        }
        let one = usage.total(
            secs as u64,
            cluster.map(str::to_owned),
            miss && created >= miss_since,
            window_start as u64,
            now as u64,
        );
        match expected.iter_mut().find(|t| {
            (&t.title, &t.country, &t.served_cluster)
                == (&one.title, &one.country, &one.served_cluster)
        }) {
            Some(t) => {
                t.streamed_bytes += one.streamed_bytes;
                t.served_bytes += one.served_bytes;
                t.missed |= one.missed;
            }
            None => expected.push(one),
        }
    }
    let mut got = env
        .repo
        .usage_totals(window_start, now, miss_since)
        .await
        .unwrap();
    let key = |t: &UsageTotal| (t.title.clone(), t.country.clone(), t.served_cluster.clone());
    got.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(got, expected);
    // The numbers, by hand: "a" counts 100 of its 150 s (10 MB of 15 MB served), "b" 100 s.
    let isp_a = &got[0];
    assert_eq!(isp_a.served_cluster.as_deref(), Some("isp-a"));
    assert_eq!((isp_a.streamed_bytes, isp_a.served_bytes), (30e6, 35e6));
    assert!(isp_a.missed);
    assert_eq!((got[1].served_bytes, got[1].missed), (1e6, false));
    assert_eq!(
        (got[2].title.as_str(), got[2].served_cluster.as_ref()),
        ("t2", None)
    );
    assert_eq!(got[2].streamed_bytes, 1e4);
}
