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
