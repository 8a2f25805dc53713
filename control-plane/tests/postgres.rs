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
