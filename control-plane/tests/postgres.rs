//! The API scenarios on PostgreSQL (a fresh schema per test in the server `scripts/services` starts), through `oneshot`.

mod common;

use common::{scenarios, Env};

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_happy_path_grants_and_manifests() {
    scenarios::happy_path(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_every_refusal_in_order() {
    scenarios::refusals(&Env::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_100_concurrent_starts_take_exactly_the_plan_limit() {
    scenarios::concurrent_starts(&Env::postgres().await, 100).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_lease_heartbeat_lapse_and_end() {
    scenarios::lease_lifecycle(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_clearkey_licence_follows_tier() {
    scenarios::licences(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_steering_reranks_and_classifies_misses() {
    scenarios::steering_reacts(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_fleet_credentials_and_offline_marking() {
    scenarios::fleet_auth_and_offline(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_admin_imports_name_the_field() {
    scenarios::admin_imports(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_registration_and_background_tasks() {
    scenarios::registration_and_background(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_drm_refused_by_licence_policy() {
    scenarios::drm_policy_refusal(&Env::postgres().await).await;
}

/// `db::connect` picks PostgreSQL from the URL (as `--database postgres://...` does) and runs the
/// migrations; the URL's `options` keep this test in its own schema.
#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_url_selects_the_backend() {
    let url = std::env::var("OUTPOST_TEST_DATABASE_URL")
        .expect("needs PostgreSQL: run ./scripts/test (OUTPOST_TEST_DATABASE_URL is unset)");
    let schema = format!("cp_url_{}", &control_plane::crypto::random_hex32()[..12]);
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let repo =
        control_plane::db::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"), 2)
            .await
            .unwrap();
    assert_eq!(repo.backend(), "postgres");
    assert_eq!(repo.live_leases("nobody", 0).await.unwrap(), 0);
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = 'sessions'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(n, 1);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_fleet_view_lists_counters_and_rates() {
    scenarios::fleet_view(&Env::postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_fill_plans_follow_holdings() {
    common::fill_scenarios::fill_plans_follow_holdings(
        &Env::postgres_with(common::fill_scenarios::config()).await,
    )
    .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_fill_popularity_misses_and_tiers() {
    common::fill_scenarios::popularity_misses_and_tiers(
        &Env::postgres_with(common::fill_scenarios::s3_config()).await,
    )
    .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_fill_removals_name_another_copy() {
    common::fill_scenarios::removals_name_another_copy(
        &Env::postgres_with(common::fill_scenarios::config()).await,
    )
    .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_fill_low_qoe_feeds_urgency() {
    common::fill_scenarios::low_qoe_feeds_urgency(
        &Env::postgres_with(common::fill_scenarios::config()).await,
    )
    .await;
}

// QoE (issue 16)
#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_qoe_reports_are_stored_listed_and_aggregated() {
    common::qoe_scenarios::qoe_reports_are_stored_listed_and_aggregated(&Env::postgres().await)
        .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_bad_qoe_moves_the_session() {
    common::qoe_scenarios::bad_qoe_moves_the_session(&Env::postgres().await).await;
}

// --- BGP (issue 14) ---
#[tokio::test]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_steering_follows_bgp_routes() {
    common::bgp_scenarios::steering_follows_bgp(&Env::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_stale_idempotency_claim_is_taken_over() {
    scenarios::stale_idempotency_claim_is_taken_over(&Env::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_usage_totals() {
    scenarios::usage_totals(&Env::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run ./scripts/test"]
async fn postgres_replica_bgp_change_swaps_in_background() {
    let ttl = std::time::Duration::from_millis(300);
    let env = Env::postgres_with(control_plane::Config {
        snapshot_ttl_ms: ttl.as_millis() as u64,
        ..common::test_config()
    })
    .await;
    common::bgp_scenarios::replica_change_swaps_in_background(&env, ttl).await;
}
