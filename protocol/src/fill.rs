//! Fill, the wire contract between both sides: the plan an appliance gets, what it reports back.
//!
//! | Message | Endpoint |
//! |---|---|
//! | [`FillPlan`] | `GET /v1/appliances/{id}/fill-plan` (appliance credentials) |
//! | the title's catalog entry | `GET /v1/appliances/{id}/catalog/{title}` (appliance credentials) |
//! | [`HeldTitle`], [`FillStatus`] | inside [`crate::fleet::Heartbeat`] |
//!
//! How an appliance fills one planned title:
//! 1. it fetches the title's catalog entry from the control plane (a trusted channel) and checks
//!    that its SHA-256 equals [`PlannedTitle::catalog_sha256`];
//! 2. it fetches every file the entry lists, trying [`PlannedTitle::sources`] in order (a peer of
//!    its own cluster, then the upstream tier, then origin), resuming an interrupted file with a
//!    `Range` request, and verifies each file's size and SHA-256 against the entry;
//! 3. it writes the entry itself as `catalog.json` last, and only then serves and reports the
//!    title as held.
//!
//! An appliance source is fetched at `{base_url}/g/{grant}/{title}/{path}` where the grant is a
//! *fill grant*: a stream grant with [`crate::grant::Scope::Fill`], audience the source's
//! cluster, subject `fill:<appliance id>`, prefix `/<title>/`, no client binding.

use serde::{Deserialize, Serialize};

use crate::catalog::is_valid_segment;

/// Most titles one plan may list.
pub const MAX_PLANNED_TITLES: usize = 100_000;
/// Most sources one planned title may list.
pub const MAX_SOURCES: usize = 16;
/// Most other copies one [`Removal`] may name.
pub const MAX_KEPT_AT: usize = 16;

/// Where a source sits relative to the appliance being filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SourceTier {
    /// Another appliance of the same cluster.
    Peer,
    /// An appliance of the cluster's configured upstream tier (an exchange cluster).
    Upstream,
    /// Origin: an appliance cluster of kind `origin`, or an S3-compatible bucket.
    Origin,
}

impl SourceTier {
    /// `peer`, `upstream` or `origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceTier::Peer => "peer",
            SourceTier::Upstream => "upstream",
            SourceTier::Origin => "origin",
        }
    }
}

/// One place a title can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum FillSource {
    /// An appliance serving the title over HTTP(S) with a fill grant.
    Appliance {
        /// Its tier relative to the appliance being filled.
        tier: SourceTier,
        /// The source appliance's id.
        appliance: String,
        /// The source appliance's cluster (the fill grant's audience).
        cluster: String,
        /// `http://host:port` or `https://host:port`, no trailing slash.
        base_url: String,
        /// The fill grant, compact form.
        grant: String,
    },
    /// An S3-compatible bucket holding the packager's output (`<prefix>/<title>/<path>`). The
    /// endpoint and credentials are the appliance's own configuration, never in the plan.
    S3 {
        /// Always [`SourceTier::Origin`] today.
        tier: SourceTier,
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing `/`; empty for the bucket root.
        #[serde(default)]
        prefix: String,
    },
}

impl FillSource {
    /// The source's tier.
    pub fn tier(&self) -> SourceTier {
        match self {
            FillSource::Appliance { tier, .. } | FillSource::S3 { tier, .. } => *tier,
        }
    }

    /// A short label for logs and metrics: the appliance id, or `s3:<bucket>`.
    pub fn label(&self) -> String {
        match self {
            FillSource::Appliance { appliance, .. } => appliance.clone(),
            FillSource::S3 { bucket, .. } => format!("s3:{bucket}"),
        }
    }

    /// The URL of one file of `title` at an appliance source (`None` for S3).
    pub fn file_url(&self, title: &str, path: &str) -> Option<String> {
        match self {
            FillSource::Appliance {
                base_url, grant, ..
            } => Some(format!("{base_url}/g/{grant}/{title}/{path}")),
            FillSource::S3 { .. } => None,
        }
    }

    /// The object key of one file of `title` in an S3 source (`None` for appliances).
    pub fn object_key(&self, title: &str, path: &str) -> Option<String> {
        match self {
            FillSource::S3 { prefix, .. } if prefix.is_empty() => Some(format!("{title}/{path}")),
            FillSource::S3 { prefix, .. } => Some(format!("{prefix}/{title}/{path}")),
            FillSource::Appliance { .. } => None,
        }
    }
}

/// One title an appliance should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlannedTitle {
    /// Title id.
    pub title: String,
    /// SHA-256 (64 lowercase hex digits) of the catalog entry's JSON as the control plane serves
    /// it: the title's version.
    pub catalog_sha256: String,
    /// Total bytes of the title's files (for capacity and rate planning).
    pub bytes: u64,
    /// Fetch even outside the fill window (a new release, a title being steered to now).
    #[serde(default)]
    pub urgent: bool,
    /// Why the planner placed it here (for logs and `fill-plan`).
    pub reason: String,
    /// Where to fetch it from, best first. Empty when the appliance already holds it.
    #[serde(default)]
    pub sources: Vec<FillSource>,
}

/// A title the appliance holds and may delete: it left the appliance's plan and another copy
/// of it exists elsewhere ([`Removal::kept_at`] is never empty).
///
/// Deletion is opt-in: a held title that is neither planned nor listed here is kept (a plan
/// computed from a half-loaded catalog or a restored database can never empty a cache). The
/// appliance also defers each removal (a grace period and several consecutive plans) and
/// refuses a plan that would remove too large a share of what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Removal {
    /// Title id.
    pub title: String,
    /// Why it left the plan (for logs).
    pub reason: String,
    /// Where other copies of the title's current version are: source labels as in
    /// [`FillSource::label`] (appliance ids, `s3:<bucket>`), best first.
    pub kept_at: Vec<String>,
}

/// `GET /v1/appliances/{id}/fill-plan`: every title the appliance should hold, and the held
/// titles it may delete ([`FillPlan::removals`]). A held title in neither list is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FillPlan {
    /// The appliance it is for.
    pub appliance: String,
    /// Its cluster.
    pub cluster: String,
    /// Identifies this plan (changes whenever its content changes).
    pub plan_id: String,
    /// Control-plane time it was computed, Unix seconds.
    pub generated_at: u64,
    /// Fetch the plan again within this many seconds. The fill grants in it outlive this.
    pub refresh_secs: u64,
    /// The titles, most popular first.
    pub titles: Vec<PlannedTitle>,
    /// Held titles the appliance may delete, each with another copy elsewhere.
    #[serde(default)]
    pub removals: Vec<Removal>,
}

/// Problems with a plan, each naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fill plan field {field}: {reason}")]
pub struct FillError {
    /// JSON path of the field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FillPlan {
    /// Checks what the types cannot express: valid title ids, digests, bounded lists, source URLs
    /// without a path.
    pub fn validate(&self) -> Result<(), FillError> {
        let bad = |field: String, reason: &str| FillError {
            field,
            reason: reason.to_owned(),
        };
        if self.titles.len() > MAX_PLANNED_TITLES {
            return Err(bad("titles".into(), "too many titles"));
        }
        for (i, t) in self.titles.iter().enumerate() {
            if !is_valid_segment(&t.title) {
                return Err(bad(format!("titles[{i}].title"), "not a valid title id"));
            }
            if !is_sha256_hex(&t.catalog_sha256) {
                return Err(bad(
                    format!("titles[{i}].catalog_sha256"),
                    "must be 64 lowercase hex digits",
                ));
            }
            if t.sources.len() > MAX_SOURCES {
                return Err(bad(format!("titles[{i}].sources"), "too many sources"));
            }
            for (j, s) in t.sources.iter().enumerate() {
                if let FillSource::Appliance { base_url, .. } = s {
                    let rest = base_url
                        .strip_prefix("http://")
                        .or_else(|| base_url.strip_prefix("https://"));
                    if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
                        return Err(bad(
                            format!("titles[{i}].sources[{j}].base_url"),
                            "must be http(s)://host[:port] without a path",
                        ));
                    }
                }
            }
        }
        if self.removals.len() > MAX_PLANNED_TITLES {
            return Err(bad("removals".into(), "too many titles"));
        }
        for (i, r) in self.removals.iter().enumerate() {
            if !is_valid_segment(&r.title) {
                return Err(bad(format!("removals[{i}].title"), "not a valid title id"));
            }
            if self.titles.iter().any(|t| t.title == r.title) {
                return Err(bad(
                    format!("removals[{i}].title"),
                    "the title is also planned",
                ));
            }
            if r.kept_at.is_empty() {
                return Err(bad(
                    format!("removals[{i}].kept_at"),
                    "names no other copy: the last copy is never removed",
                ));
            }
            if r.kept_at.len() > MAX_KEPT_AT {
                return Err(bad(
                    format!("removals[{i}].kept_at"),
                    "too many copies listed",
                ));
            }
        }
        Ok(())
    }
}

/// One title an appliance holds completely and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeldTitle {
    /// Title id.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
    )]
    pub title: String,
    /// SHA-256 of the catalog entry it was filled from (its version).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub catalog_sha256: String,
    /// SHA-256 over the sorted `path size sha256\n` lines of the files on disk, as verified.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub files_digest: String,
}

/// The fill part of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FillStatus {
    /// The plan being worked on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Whether the fill window is open now.
    pub in_window: bool,
    /// Titles of the plan not held yet.
    pub titles_pending: u64,
    /// Bytes fetched by fill since start (a counter).
    pub bytes_filled: u64,
    /// Files fetched and verified since start (a counter).
    pub files_verified: u64,
    /// Files whose size or SHA-256 did not match, since start (a counter).
    pub verify_failures: u64,
    /// Fill rate over the last interval, bits per second.
    pub rate_bps: u64,
    /// Seconds the control plane has been unreachable (0 when the last call succeeded); an
    /// appliance that comes back reports the length of the outage it went through here once.
    #[serde(default)]
    pub control_plane_unreachable_secs: u64,
}

/// SHA-256 hex of `text`, the way [`PlannedTitle::catalog_sha256`] is computed.
pub fn catalog_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::hex::encode(&Sha256::digest(text.as_bytes()))
}

/// [`HeldTitle::files_digest`] of `(path, size, sha256)` triples, in any order.
pub fn files_digest<'a>(files: impl IntoIterator<Item = (&'a str, u64, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = files
        .into_iter()
        .map(|(p, s, h)| format!("{p} {s} {h}\n"))
        .collect();
    lines.sort();
    let mut d = Sha256::new();
    for l in &lines {
        d.update(l.as_bytes());
    }
    crate::hex::encode(&d.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> FillPlan {
        FillPlan {
            appliance: "isp-1".into(),
            cluster: "isp".into(),
            plan_id: "p1".into(),
            generated_at: 1,
            refresh_secs: 60,
            titles: vec![PlannedTitle {
                title: "t1".into(),
                catalog_sha256: catalog_digest("{}"),
                bytes: 10,
                urgent: false,
                reason: "rank 1".into(),
                sources: vec![
                    FillSource::Appliance {
                        tier: SourceTier::Peer,
                        appliance: "isp-2".into(),
                        cluster: "isp".into(),
                        base_url: "http://127.0.0.1:8080".into(),
                        grant: "GRANT".into(),
                    },
                    FillSource::S3 {
                        tier: SourceTier::Origin,
                        bucket: "media".into(),
                        prefix: "titles".into(),
                    },
                ],
            }],
            removals: vec![Removal {
                title: "t0".into(),
                reason: "displaced".into(),
                kept_at: vec!["isp-2".into()],
            }],
        }
    }

    #[test]
    fn plan_round_trip_urls_and_validation() {
        let p = plan();
        p.validate().unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""kind":"appliance""#), "{text}");
        let back: FillPlan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        let s = &p.titles[0].sources;
        assert_eq!(
            s[0].file_url("t1", "v1/init.mp4").as_deref(),
            Some("http://127.0.0.1:8080/g/GRANT/t1/v1/init.mp4")
        );
        assert_eq!(
            s[1].object_key("t1", "catalog.json").as_deref(),
            Some("titles/t1/catalog.json")
        );
        assert_eq!(s[1].label(), "s3:media");

        let mut bad = p.clone();
        bad.titles[0].catalog_sha256 = "ABC".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("titles[0].catalog_sha256"));
        let mut bad = p.clone();
        if let FillSource::Appliance { base_url, .. } = &mut bad.titles[0].sources[0] {
            *base_url = "http://h/x".into();
        }
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sources[0].base_url"));
        assert!(
            serde_json::from_str::<FillPlan>(&text.replace("\"bucket\"", "\"bukket\"")).is_err()
        );
    }

    #[test]
    fn a_removal_must_name_another_copy_and_not_be_planned() {
        let mut p = plan();
        p.removals[0].kept_at.clear();
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("removals[0].kept_at"));
        let mut p = plan();
        p.removals[0].title = "t1".into();
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("removals[0].title") && e.contains("also planned"),
            "{e}"
        );
        // Older control planes send no removals: nothing is deleted.
        let mut v = serde_json::to_value(plan()).unwrap();
        v.as_object_mut().unwrap().remove("removals");
        let back: FillPlan = serde_json::from_value(v).unwrap();
        assert!(back.removals.is_empty());
    }

    #[test]
    fn files_digest_ignores_order() {
        let a = files_digest([("a", 1, "x"), ("b", 2, "y")]);
        let b = files_digest([("b", 2, "y"), ("a", 1, "x")]);
        assert_eq!(a, b);
        assert_ne!(a, files_digest([("a", 1, "x"), ("b", 3, "y")]));
    }
}
