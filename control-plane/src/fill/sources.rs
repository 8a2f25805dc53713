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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use protocol::fleet::Health;

    use super::*;
    use crate::steering::{AdminState, Appliance, Cluster};

    fn app(id: &str, cluster: &str, titles: Option<&[&str]>) -> Appliance {
        Appliance {
            id: id.into(),
            cluster: cluster.into(),
            address: "127.0.0.1".into(),
            port: 1,
            admin_state: AdminState::Reported,
            health: Some(Health::Ok),
            load: 0.1,
            last_heartbeat: Some(1000),
            titles: titles.map(|t| t.iter().map(|s| s.to_string()).collect::<HashSet<_>>()),
            prefixes: vec![],
        }
    }

    const T: Thresholds = Thresholds {
        offline_after_secs: 30,
        load_threshold: 0.9,
        max: 3,
    };

    fn fleet(apps: Vec<Appliance>) -> Fleet {
        let c = |id: &str, kind, fallbacks: &[&str]| Cluster {
            id: id.into(),
            kind,
            fallbacks: fallbacks.iter().map(|s| s.to_string()).collect(),
        };
        Fleet::new(
            vec![
                c("isp", ClusterKind::Embedded, &["isp2", "ix"]),
                c("isp2", ClusterKind::Embedded, &[]),
                c("ix", ClusterKind::Exchange, &[]),
                c("origin", ClusterKind::Origin, &[]),
            ],
            apps,
        )
    }

    fn ids(v: &[SourceRef]) -> Vec<String> {
        v.iter()
            .map(|s| match s {
                SourceRef::Appliance {
                    appliance, tier, ..
                } => format!("{}:{appliance}", tier.as_str()),
                SourceRef::S3(o) => format!("s3:{}", o.bucket),
            })
            .collect()
    }

    #[test]
    fn peers_then_exchange_fallbacks_then_origin_then_s3() {
        let t = Some(&["t"][..]);
        let mut sick = app("isp-3", "isp", t);
        sick.health = Some(Health::Error);
        let mut busy = app("ix-2", "ix", t);
        busy.load = 0.95;
        let mut origin = app("org-1", "origin", None);
        origin.admin_state = AdminState::Online;
        let f = fleet(vec![
            app("isp-1", "isp", Some(&[])),
            app("isp-2", "isp", t),
            sick,
            app("isp-4", "isp", t),
            app("isp-5", "isp", t),
            app("isp2-1", "isp2", t),
            app("ix-1", "ix", t),
            busy,
            app("ix-3", "ix", Some(&["other"])),
            origin,
        ]);
        let s3 = S3Origin {
            bucket: "media".into(),
            prefix: String::new(),
        };
        let got = ordered_sources(&f, "isp-1", "t", 1000, &T, Some(&s3), 2);
        let names = ids(&got);
        // Two healthy peers holding it, in the title's rendezvous order; never itself, never the
        // appliance in error; the embedded fallback is not an upstream tier; the overloaded and
        // the not-holding exchange appliances are skipped; origin; S3 last.
        let peers: Vec<String> = f
            .hrw_order("isp", "t")
            .iter()
            .filter(|a| ["isp-2", "isp-4", "isp-5"].contains(&a.id.as_str()))
            .take(2)
            .map(|a| format!("peer:{}", a.id))
            .collect();
        assert_eq!(names[..2], peers[..]);
        assert_eq!(names[2..], ["upstream:ix-1", "origin:org-1", "s3:media"]);
        // Silent peers drop out; the admin-online origin stays.
        let got = ordered_sources(&f, "isp-1", "t", 1031, &T, None, 2);
        assert_eq!(ids(&got), ["origin:org-1"]);
        // Unknown appliance: nothing.
        assert!(ordered_sources(&f, "ghost", "t", 1000, &T, None, 2).is_empty());
        // An origin appliance fills from other origin appliances and S3, with no upstream.
        let f = fleet(vec![
            app("org-1", "origin", Some(&[])),
            app("org-2", "origin", t),
            app("ix-1", "ix", t),
        ]);
        let got = ordered_sources(&f, "org-1", "t", 1000, &T, Some(&s3), 2);
        assert_eq!(ids(&got), ["peer:org-2", "s3:media"]);
    }
}
