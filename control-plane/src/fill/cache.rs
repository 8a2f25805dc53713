//! Recently computed cluster plans. The service keeps one [`PlanCache`] (`AppState::fill_plans`);
//! the edge's `cluster_plan` reads and fills it.

use std::collections::HashMap;
use std::sync::Arc;

use super::ClusterPlan;

/// Recently computed cluster plans, per cluster, each with the time it was computed.
#[derive(Debug, Default)]
pub struct PlanCache(tokio::sync::Mutex<HashMap<String, (u64, Arc<ClusterPlan>)>>);

impl PlanCache {
    /// Forgets every cached plan (after an import).
    pub async fn clear(&self) {
        self.0.lock().await.clear();
    }

    /// Holds the cache while a plan is looked up and, if stale, recomputed, so one cluster's
    /// plan is computed once however many of its appliances ask at the same time.
    pub(crate) async fn lock(
        &self,
    ) -> tokio::sync::MutexGuard<'_, HashMap<String, (u64, Arc<ClusterPlan>)>> {
        self.0.lock().await
    }
}
