//! Where an appliance fetches a planned title from (pure): the ordered source list of
//! [`protocol::fill::PlannedTitle::sources`], without the grants (the edge mints those).
//!
//! Order: **peers** (other appliances of its own cluster), then **upstream** (appliances of the
//! exchange clusters among its cluster's configured fallbacks, in fallback order), then
//! **origin** (appliances of every origin cluster, then the S3 bucket when one is configured).
//! Inside each cluster appliances come in the title's rendezvous order (the order steering
//! uses), and only those steering could send a client to for this title are listed: online,
//! not in error, not overloaded, and reporting the title held in its current catalog version.
//! At most `per_cluster` appliances per cluster, at most [`protocol::fill::MAX_SOURCES`] in
//! all.

use protocol::fill::{SourceTier, MAX_SOURCES};

use crate::steering::{ClusterKind, Fleet, Thresholds};

/// An S3-compatible origin bucket (the appliance has the endpoint and credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Origin {
    /// Bucket.
    pub bucket: String,
    /// Key prefix, no leading or trailing `/`.
    pub prefix: String,
}

/// One source before its grant is minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// An appliance.
    Appliance {
        /// Tier relative to the appliance being filled.
        tier: SourceTier,
        /// Appliance id.
        appliance: String,
        /// Its cluster (the grant audience).
        cluster: String,
        /// Host.
        address: String,
        /// HTTP port.
        port: u16,
    },
    /// The S3 origin.
    S3(S3Origin),
}

impl SourceRef {
    /// The tier.
    pub fn tier(&self) -> SourceTier {
        match self {
            SourceRef::Appliance { tier, .. } => *tier,
            SourceRef::S3(_) => SourceTier::Origin,
        }
    }
}

/// The ordered sources of `title` for `appliance` (see the module documentation). Empty when
/// the appliance is unknown or nothing can serve the title.
pub fn ordered_sources(
    fleet: &Fleet,
    appliance: &str,
    title: &str,
    now: u64,
    thresholds: &Thresholds,
    s3: Option<&S3Origin>,
    per_cluster: usize,
) -> Vec<SourceRef> {
    let Some(me) = fleet.appliance(appliance) else {
        return Vec::new();
    };
    let Some(home) = fleet.cluster(&me.cluster) else {
        return Vec::new();
    };
    let mut out: Vec<SourceRef> = Vec::new();
    let add_cluster = |out: &mut Vec<SourceRef>, cluster: &str, tier: SourceTier| {
        let picked = fleet
            .hrw_order(cluster, title)
            .into_iter()
            .filter(|a| a.id != appliance)
            .filter(|a| Fleet::unavailable(a, title, now, thresholds).is_none())
            .take(per_cluster);
        for a in picked {
            if out.len() < MAX_SOURCES {
                out.push(SourceRef::Appliance {
                    tier,
                    appliance: a.id.clone(),
                    cluster: a.cluster.clone(),
                    address: a.address.clone(),
                    port: a.port,
                });
            }
        }
    };
    add_cluster(&mut out, &home.id, SourceTier::Peer);
    if home.kind != ClusterKind::Origin {
        for f in &home.fallbacks {
            if fleet
                .cluster(f)
                .is_some_and(|c| c.kind == ClusterKind::Exchange)
            {
                add_cluster(&mut out, f, SourceTier::Upstream);
            }
        }
    }
    for c in fleet.clusters() {
        if c.kind == ClusterKind::Origin && c.id != home.id {
            add_cluster(&mut out, &c.id, SourceTier::Origin);
        }
    }
    if let Some(s3) = s3 {
        if out.len() >= MAX_SOURCES {
            out.pop();
        }
        out.push(SourceRef::S3(s3.clone()));
    }
    out
}
