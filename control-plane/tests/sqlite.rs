//! The API scenarios on the embedded SQLite backend (a real database file), through `oneshot`.

mod common;

use common::{scenarios, Env};

#[tokio::test]
async fn sqlite_happy_path_grants_and_manifests() {
    scenarios::happy_path(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_every_refusal_in_order() {
    scenarios::refusals(&Env::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_100_concurrent_starts_take_exactly_the_plan_limit() {
    scenarios::concurrent_starts(&Env::sqlite().await, 100).await;
}

#[tokio::test]
async fn sqlite_lease_heartbeat_lapse_and_end() {
    scenarios::lease_lifecycle(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_clearkey_licence_follows_tier() {
    scenarios::licences(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_steering_reranks_and_classifies_misses() {
    scenarios::steering_reacts(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_fleet_credentials_and_offline_marking() {
    scenarios::fleet_auth_and_offline(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_admin_imports_name_the_field() {
    scenarios::admin_imports(&Env::sqlite().await).await;
}

/// A stored value that no longer decodes is reported (a warning naming table, row and column,
/// and the `outpost_cp_snapshot_bad_rows` gauge) and its row left out; it is never guessed at
/// (an unknown cluster kind once read as origin, an unknown tier as SD). A bad reported column
/// reads as not reported and keeps the appliance.
#[tokio::test]
async fn sqlite_bad_stored_values_are_reported_not_guessed() {
    use axum::http::Method;
    use control_plane::state::Snapshot;

    let env = Env::sqlite().await;
    let url = format!("sqlite://{}", env.sqlite_path().unwrap().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in [
        "UPDATE plans SET max_tier = '8K' WHERE id = 'premium'",
        "UPDATE clusters SET kind = 'edge' WHERE id = 'ix-syd'",
        "UPDATE appliances SET drives = '{not json' WHERE id = 'akl-1'",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let rows = env.repo.load_snapshot().await.unwrap();
    let bad: Vec<(&str, &str, &str)> = rows
        .bad
        .iter()
        .map(|b| (b.table, b.key.as_str(), b.column))
        .collect();
    assert_eq!(
        bad,
        [
            ("plans", "premium", "max_tier"),
            ("clusters", "ix-syd", "kind"),
            ("appliances", "akl-1", "drives"),
        ]
    );
    assert!(rows.bad[0].reason.contains("\"8K\""), "{}", rows.bad[0]);
    let snap = Snapshot::build(rows);
    assert_eq!(snap.bad_rows, 3);
    assert!(!snap.plans.contains_key("premium"));
    assert!(snap.plans.contains_key("family"));
    assert!(snap.fleet.cluster("ix-syd").is_none());
    assert!(snap.fleet.cluster("isp-akl").is_some());
    assert!(snap.fleet.appliance("akl-1").is_some());
    assert!(!snap.capacity.contains_key("akl-1"));

    env.state.invalidate();
    env.state.snapshot().await.unwrap();
    let (_, _, m) = env.call(Method::GET, "/metrics", &[], None).await;
    let m = m.as_str().unwrap();
    assert!(m.contains("\noutpost_cp_snapshot_bad_rows 3\n"), "{m}");

    // A session counts for popularity with what its start stored (its bit rate, the cluster it
    // was steered to). One stored before migration 0010 (no bit rate) is read the old way, and
    // counts for nothing once its stored steering decision no longer decodes.
    env.fleet_up().await;
    let (s, v) = env
        .start("acct-standard", "browser", "clear-title", "127.0.0.1")
        .await;
    assert_eq!(s, axum::http::StatusCode::CREATED, "{v}");
    let totals = env.repo.usage_totals(0, i64::MAX, 0).await.unwrap();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert!(totals[0].streamed_bytes > 0.0, "{totals:?}");
    assert!(totals[0].served_cluster.is_some(), "{totals:?}");
    assert!(env.repo.legacy_session_usage(0).await.unwrap().is_empty());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE sessions SET bitrate_bps = NULL, title_secs = NULL, served_cluster = NULL, content_miss = NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert!(env
        .repo
        .usage_totals(0, i64::MAX, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(env.repo.legacy_session_usage(0).await.unwrap().len(), 1);
    sqlx::query("UPDATE sessions SET steering = 'not json'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(env.repo.legacy_session_usage(0).await.unwrap().is_empty());
}

/// Backend-independent API behaviour: rate limit, request ids, CORS, OpenAPI, metrics, secrets.
mod api_quality {
    use super::common::{test_config, Env, ADMIN, API_KEY, T0};
    use axum::http::{Method, StatusCode};

    #[tokio::test]
    async fn per_account_rate_limit_answers_429_with_retry_after() {
        let env = Env::sqlite_with(control_plane::Config {
            session_starts_per_minute: 1,
            session_start_burst: 2,
            ..test_config()
        })
        .await;
        env.fleet_up().await;
        for _ in 0..2 {
            let (s, v) = env
                .start("acct-premium", "browser", "clear-title", "127.0.0.1")
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, h, v) = env
            .call(
                Method::POST,
                "/v1/playback/sessions",
                &[("authorization", &format!("Bearer {API_KEY}"))],
                Some(serde_json::json!({"account_id": "acct-premium", "device_class": "browser", "title": "clear-title", "client_ip": "127.0.0.1"})),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
        );
        // One start per minute refills: the next token is about a minute away.
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((30..=60).contains(&retry), "{retry}");
        // Another account is not limited.
        let (s, _) = env
            .start("acct-standard", "browser", "clear-title", "127.0.0.1")
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn request_ids_cors_openapi_and_metrics() {
        let env = Env::sqlite().await;
        let (_, h, _) = env
            .call(
                Method::GET,
                "/healthz",
                &[("x-request-id", "abc-123")],
                None,
            )
            .await;
        assert_eq!(h["x-request-id"], "abc-123");
        assert_eq!(h["access-control-allow-origin"], "*");
        let (_, h, _) = env
            .call(
                Method::GET,
                "/healthz",
                &[("x-request-id", "bad id; with spaces")],
                None,
            )
            .await;
        let id = h["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.len() >= 12 && !id.contains(' '), "{id}");
        let (s, h, _) = env
            .call(
                Method::OPTIONS,
                "/v1/license/clearkey",
                &[("origin", "http://player.test")],
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert!(h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization"));
        let (s, _, v) = env.call(Method::GET, "/nope", &[], None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );

        let (s, _, doc) = env.call(Method::GET, "/openapi.json", &[], None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for p in [
            "/v1/playback/sessions",
            "/v1/playback/sessions/{id}/heartbeat",
            "/v1/playback/sessions/{id}",
            "/v1/playback/sessions/{id}/master.m3u8",
            "/v1/playback/sessions/{id}/manifest.mpd",
            "/v1/steering/{id}/hls",
            "/v1/steering/{id}/dash",
            "/v1/license/clearkey",
            "/v1/appliances/{id}/heartbeat",
            "/v1/appliances/{id}/register",
            "/v1/appliances/{id}/fill-plan",
            "/v1/appliances/{id}/catalog/{title}",
            "/v1/keys",
            "/v1/admin/policy",
            "/metrics",
        ] {
            assert!(
                doc["paths"][p].is_object(),
                "{p} missing from /openapi.json"
            );
        }
        assert!(doc["components"]["schemas"]["StartRequest"].is_object());

        env.fleet_up().await;
        let (s, _) = env
            .start("acct-premium", "browser", "clear-title", "127.0.0.1")
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, h, m) = env.call(Method::GET, "/metrics", &[], None).await;
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let m = m.as_str().unwrap();
        assert!(m.contains("outpost_cp_sessions_started_total 1"), "{m}");
        assert!(m.contains("outpost_cp_appliance_heartbeats_total 3"));
        assert!(m.contains("outpost_cp_session_start_seconds_count 1"));
    }

    #[tokio::test]
    async fn secrets_never_print() {
        let mut c = test_config();
        c.master_key = Some(control_plane::config::Secret("ab".repeat(32)));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(ADMIN) && !shown.contains(&"ab".repeat(32)),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
        let k = protocol::grant::SigningKey::from_seed("k", [9; 32]).unwrap();
        assert!(!format!("{k:?}").contains(&k.to_pkcs8_pem()));
        let mk = control_plane::crypto::MasterKey::new([1; 32]);
        assert_eq!(format!("{mk:?}"), "MasterKey(<redacted>)");
    }

    /// After rotation both keys are published; a grant signed before it still verifies, and new
    /// grants use the new key once it has been published for the prepublish period.
    #[tokio::test]
    async fn key_rotation_keeps_grants_in_flight_valid() {
        let env = Env::sqlite().await;
        env.fleet_up().await;
        let (_, v) = env
            .start("acct-premium", "browser", "clear-title", "127.0.0.1")
            .await;
        let old_grant = v["appliances"][0]["grant"].as_str().unwrap().to_owned();
        let cluster = v["appliances"][0]["cluster"].as_str().unwrap().to_owned();
        let c = test_config();
        let t1 = T0 + c.key_rotate_secs - c.key_prepublish_secs;
        env.clock.set(t1);
        let new_kid = env
            .state
            .keys
            .rotate_if_due(t1)
            .unwrap()
            .expect("rotation due");
        let ring = super::common::scenarios::key_ring(&env).await;
        assert_eq!(ring.len(), 2);
        let verifier = protocol::grant::Verifier::new(ring, cluster.as_str());
        let path = format!("/g/{old_grant}/clear-title/v360/media.mp4");
        // The old grant was issued at T0 with a 3 h lifetime; check it inside its lifetime.
        verifier
            .verify(&protocol::grant::Request {
                path: &path,
                client_ip: Some("127.0.0.1".parse().unwrap()),
                now: T0 + 60,
            })
            .unwrap();
        env.clock.set(t1 + c.key_prepublish_secs);
        assert_eq!(
            env.state.keys.signing(t1 + c.key_prepublish_secs).kid(),
            new_kid
        );
    }
}

#[tokio::test]
async fn sqlite_registration_and_background_tasks() {
    scenarios::registration_and_background(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_drm_refused_by_licence_policy() {
    scenarios::drm_policy_refusal(&Env::sqlite().await).await;
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let env = Env::sqlite_with(control_plane::Config {
        admin_token: None,
        ..common::test_config()
    })
    .await;
    let (s, _, e) = env
        .call(
            axum::http::Method::PUT,
            "/v1/admin/policy",
            &[("authorization", "Bearer anything")],
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (axum::http::StatusCode::FORBIDDEN, Some("admin_disabled"))
    );
}

#[tokio::test]
async fn sqlite_fleet_view_lists_counters_and_rates() {
    scenarios::fleet_view(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_fill_plans_follow_holdings() {
    common::fill_scenarios::fill_plans_follow_holdings(
        &Env::sqlite_with(common::fill_scenarios::config()).await,
    )
    .await;
}

#[tokio::test]
async fn sqlite_fill_popularity_misses_and_tiers() {
    common::fill_scenarios::popularity_misses_and_tiers(
        &Env::sqlite_with(common::fill_scenarios::s3_config()).await,
    )
    .await;
}

#[tokio::test]
async fn sqlite_fill_removals_name_another_copy() {
    common::fill_scenarios::removals_name_another_copy(
        &Env::sqlite_with(common::fill_scenarios::config()).await,
    )
    .await;
}

// QoE (issue 16)
#[tokio::test]
async fn sqlite_fill_low_qoe_feeds_urgency() {
    common::fill_scenarios::low_qoe_feeds_urgency(
        &Env::sqlite_with(common::fill_scenarios::config()).await,
    )
    .await;
}

#[tokio::test]
async fn sqlite_qoe_reports_are_stored_listed_and_aggregated() {
    common::qoe_scenarios::qoe_reports_are_stored_listed_and_aggregated(&Env::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_bad_qoe_moves_the_session() {
    common::qoe_scenarios::bad_qoe_moves_the_session(&Env::sqlite().await).await;
}

// --- BGP (issue 14) ---
#[tokio::test]
async fn sqlite_steering_follows_bgp_routes() {
    common::bgp_scenarios::steering_follows_bgp(&Env::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_stale_idempotency_claim_is_taken_over() {
    scenarios::stale_idempotency_claim_is_taken_over(&Env::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_usage_totals() {
    scenarios::usage_totals(&Env::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replica_bgp_change_swaps_in_background() {
    let ttl = std::time::Duration::from_millis(300);
    let env = Env::sqlite_with(control_plane::Config {
        snapshot_ttl_ms: ttl.as_millis() as u64,
        ..common::test_config()
    })
    .await;
    common::bgp_scenarios::replica_change_swaps_in_background(&env, ttl).await;
}
