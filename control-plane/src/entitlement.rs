//! Whether a member may start watching a title here: the session-start decision, pure (the
//! snapshot, the account, the request and `now` in; an [`Entitlement`] or a [`Refusal`] out; no
//! I/O, no clock), so its order of checks is written once and table-tested.
//!
//! **Refusal order** of `POST /v1/playback/sessions`. [`decide`] holds steps 3–9; the handler
//! (`routes/playback.rs`) is the I/O around it:
//!
//! 1. API key (`unauthorized`), body shape (`invalid_request`): the handler.
//! 2. The client address parses (`invalid_request`, field `client_ip`), the title
//!    (`unknown_title`) and the device class (`unknown_device_class`) exist: [`resolve`], which
//!    the handler also calls first, so junk spends neither a rate-limit token nor a database read.
//! 3. The account's rate limit (`rate_limited`) and the account itself (`unknown_account`): the
//!    handler (a token bucket, a database read).
//! 4. The account is active (`account_inactive`); its plan exists (else `internal`).
//! 5. The client's country is known and the title has a window there open at `now`
//!    (`geo_blocked`).
//! 6. Effective tier = min(plan, window, device); a video title needs a video rendition within it
//!    (`tier_unavailable`).
//! 7. An encrypted title needs a device with its key system and at least one key the licence
//!    policy allows at that tier, covering a video rendition (`drm_unsupported`); renditions
//!    whose key is not allowed are dropped.
//! 8. Steering finds an appliance (`no_appliance`): the handler, through
//!    [`crate::steering::Fleet::rank`], before the lease so a refusal takes no stream.
//! 9. The lease: fewer live sessions than the plan allows (`concurrent_limit`), counted and
//!    inserted atomically by the repository.
//!
//! Where a grant is checked: not here. The control plane signs grants (`routes/playback.rs`,
//! `grant_locations`); appliances verify them offline.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use protocol::catalog::{CatalogEntry, Rendition, Tier, TrackKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{AccountRow, AccountStatus};
use crate::error::ApiError;
use crate::import::CLEAR_KEY;
use crate::state::{Device, Snapshot};

/// `POST /v1/playback/sessions` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The member's account.
    pub account_id: String,
    /// The device class of the player.
    pub device_class: String,
    /// The title to play.
    pub title: String,
    /// The player's public IP address (IPv4 or IPv6).
    #[schema(schema_with = ip_address_schema)]
    pub client_ip: String,
}

/// `client_ip`'s schema: an IPv4 or an IPv6 address.
fn ip_address_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let ip = |f| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(f)))
    };
    OneOfBuilder::new()
        .item(ip(KnownFormat::Ipv4))
        .item(ip(KnownFormat::Ipv6))
        .description(Some("The player's public IP address (IPv4 or IPv6)."))
        .into()
}

/// Why a session may not start (each maps to one [`ApiError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `client_ip` is not an address.
    BadClientIp,
    /// No such title.
    UnknownTitle(String),
    /// No such device class.
    UnknownDeviceClass(String),
    /// The account is not active (its status).
    AccountInactive(AccountStatus),
    /// The account names a plan that does not exist.
    UnknownPlan {
        /// Account id.
        account: String,
        /// Plan id.
        plan: String,
    },
    /// No country, or no open window there.
    GeoBlocked(String),
    /// No rendition within the effective tier.
    TierUnavailable(String),
    /// No usable key system or key.
    DrmUnsupported(String),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::BadClientIp => {
                ApiError::invalid("client_ip", "must be an IPv4 or IPv6 address")
            }
            Refusal::UnknownTitle(t) => ApiError::UnknownTitle(t),
            Refusal::UnknownDeviceClass(d) => ApiError::UnknownDeviceClass(d),
            Refusal::AccountInactive(s) => ApiError::AccountInactive(s.as_str().to_owned()),
            Refusal::UnknownPlan { account, plan } => {
                ApiError::Internal(format!("account {account} has unknown plan {plan}"))
            }
            Refusal::GeoBlocked(m) => ApiError::GeoBlocked(m),
            Refusal::TierUnavailable(m) => ApiError::TierUnavailable(m),
            Refusal::DrmUnsupported(m) => ApiError::DrmUnsupported(m),
        }
    }
}

/// What a request names, looked up: step 2.
#[derive(Debug, Clone)]
pub struct Named<'s> {
    /// The client address (an IPv4-mapped IPv6 address as IPv4).
    pub client_ip: IpAddr,
    /// The title.
    pub title: &'s Arc<CatalogEntry>,
    /// The device class.
    pub device: &'s Device,
}

/// The session a member may start.
#[derive(Debug, Clone, PartialEq)]
pub struct Entitlement {
    /// The client address (an IPv4-mapped IPv6 address as IPv4).
    pub client_ip: IpAddr,
    /// The title.
    pub title: Arc<CatalogEntry>,
    /// The client's country.
    pub country: String,
    /// Effective tier.
    pub tier: Tier,
    /// Rendition ids the session may fetch.
    pub renditions: Vec<String>,
    /// Key ids the session may license, sorted (empty for clear titles).
    pub key_ids: Vec<String>,
    /// The plan's concurrent-stream limit (the lease check).
    pub max_streams: i64,
}

/// Step 2: the client address, the title and the device class.
pub fn resolve<'s>(snap: &'s Snapshot, req: &StartRequest) -> Result<Named<'s>, Refusal> {
    let client_ip: IpAddr = req.client_ip.parse().map_err(|_| Refusal::BadClientIp)?;
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; bind grants to the IPv4 /24.
    let client_ip = match client_ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client_ip, IpAddr::V4),
        v4 => v4,
    };
    let title = snap
        .titles
        .get(&req.title)
        .ok_or_else(|| Refusal::UnknownTitle(req.title.clone()))?;
    let device = snap
        .devices
        .get(&req.device_class)
        .ok_or_else(|| Refusal::UnknownDeviceClass(req.device_class.clone()))?;
    Ok(Named {
        client_ip,
        title,
        device,
    })
}

/// Steps 2 and 4–7 for `account` (already found) at `now`, Unix seconds.
pub fn decide(
    snap: &Snapshot,
    account: &AccountRow,
    req: &StartRequest,
    now: u64,
) -> Result<Entitlement, Refusal> {
    let Named {
        client_ip,
        title,
        device,
    } = resolve(snap, req)?;
    let now = now as i64;

    // 4. Account active, plan known.
    if account.status != AccountStatus::Active {
        return Err(Refusal::AccountInactive(account.status));
    }
    let &(plan_tier, max_streams) =
        snap.plans
            .get(&account.plan_id)
            .ok_or_else(|| Refusal::UnknownPlan {
                account: account.id.clone(),
                plan: account.plan_id.clone(),
            })?;

    // 5. A window for the title in the client's country, open now.
    let country = snap.country(client_ip).ok_or_else(|| {
        Refusal::GeoBlocked(format!(
            "no country is known for {client_ip}, so no window applies"
        ))
    })?;
    let &(_, _, window_tier) = snap
        .windows
        .get(&(title.title.clone(), country.to_owned()))
        .filter(|(s, e, _)| *s <= now && now < *e)
        .ok_or_else(|| {
            Refusal::GeoBlocked(format!("{} has no open window in {country}", title.title))
        })?;

    // 6. Effective tier = min(plan, window, device) and a rendition within it.
    let tier = plan_tier.min(window_tier).min(device.max_tier);
    // A trick play rendition alone plays nothing: the tier must leave a normal video rendition.
    let playable = |r: &&Rendition| r.kind == TrackKind::Video && !r.is_trick();
    let has_video = title.renditions.iter().any(|r| playable(&r));
    let mut allowed: Vec<_> = title.renditions_within(tier).collect();
    if has_video && !allowed.iter().any(playable) {
        return Err(Refusal::TierUnavailable(format!(
            "no rendition at or below {tier} (plan {plan_tier}, window {window_tier}, device {})",
            device.max_tier
        )));
    }

    // 7. Key system and licence policy.
    let mut key_ids: Vec<String> = Vec::new();
    if title.encryption.is_some() {
        if !device.key_systems.iter().any(|k| k == CLEAR_KEY) {
            return Err(Refusal::DrmUnsupported(format!(
                "device class {} supports none of the title's key systems ({CLEAR_KEY})",
                req.device_class
            )));
        }
        let keys = snap
            .keys
            .get(&title.title)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let licensable: HashSet<&str> = keys
            .iter()
            .filter(|k| k.allowed_at(tier))
            .map(|k| k.kid.as_str())
            .collect();
        allowed.retain(|r| r.key_id.as_deref().is_none_or(|k| licensable.contains(k)));
        if licensable.is_empty() || (has_video && !allowed.iter().any(playable)) {
            return Err(Refusal::DrmUnsupported(format!(
                "the licence policy yields no usable key at tier {tier}"
            )));
        }
        key_ids = licensable.into_iter().map(str::to_owned).collect();
        key_ids.sort();
    }
    Ok(Entitlement {
        client_ip,
        renditions: allowed.iter().map(|r| r.id.clone()).collect(),
        country: country.to_owned(),
        title: title.clone(),
        tier,
        key_ids,
        max_streams,
    })
}

#[cfg(test)]
mod tests {
    //! One row per refusal and per boundary, over a snapshot built from the same rows the
    //! database holds (`Snapshot::build`), titles from `tests/data`.

    use super::*;
    use crate::db::{DeviceClassRow, KeyRow, PlanRow, SnapshotRows, WindowRow};
    use protocol::content_keys::Scheme;

    const NOW: u64 = 1_795_651_200;
    const KID_SD: &str = "11111111111111111111111111111111";
    const KID_HD: &str = "22222222222222222222222222222222";
    const KID_FHD: &str = "33333333333333333333333333333333";
    const KID_AUDIO: &str = "44444444444444444444444444444444";

    fn snapshot() -> Snapshot {
        Snapshot::build(rows())
    }

    fn rows() -> SnapshotRows {
        let plan = |id: &str, max_tier, max_streams| PlanRow {
            id: id.into(),
            max_tier,
            max_streams,
        };
        let device = |id: &str, systems: &[&str], max_tier| DeviceClassRow {
            id: id.into(),
            key_systems: systems.iter().map(|s| s.to_string()).collect(),
            max_tier,
        };
        let window = |title: &str, country: &str, starts_at, ends_at, max_tier| WindowRow {
            title: title.into(),
            country: country.into(),
            starts_at,
            ends_at,
            max_tier,
        };
        let key = |kid: &str, tier, track_type| KeyRow {
            title: "enc-title".into(),
            kid: kid.into(),
            scheme: Scheme::Cenc,
            tier,
            track_type,
            sealed: String::new(),
        };
        let now = NOW as i64;
        let catalog = |name| {
            let text = match name {
                "clear-title" => include_str!("../tests/data/clear-title/catalog.json"),
                "enc-title" => include_str!("../tests/data/enc-title/catalog.json"),
                _ => include_str!("../tests/data/hd-only/catalog.json"),
            };
            (name.to_owned(), text.to_owned())
        };
        SnapshotRows {
            plans: vec![
                plan("basic", Tier::Sd, 1),
                plan("standard", Tier::Hd, 2),
                plan("premium", Tier::Uhd, 4),
            ],
            device_classes: vec![
                device("browser", &[CLEAR_KEY], Tier::Fhd),
                device("phone", &[CLEAR_KEY], Tier::Sd),
                device("tv-widevine", &["com.widevine.alpha"], Tier::Uhd),
            ],
            geo: vec![
                ("127.0.0.0/8".into(), "NZ".into()),
                ("192.0.2.0/24".into(), "AU".into()),
                ("198.51.100.0/24".into(), "US".into()),
                ("203.0.113.0/24".into(), "JP".into()),
            ],
            windows: vec![
                window("clear-title", "NZ", 0, i64::MAX, Tier::Uhd),
                window("clear-title", "AU", 0, i64::MAX, Tier::Sd),
                // Opens exactly now.
                window("clear-title", "JP", now, now + 10, Tier::Uhd),
                // Closed exactly now (the end is exclusive).
                window("clear-title", "US", now - 10, now, Tier::Uhd),
                window("enc-title", "NZ", 0, i64::MAX, Tier::Uhd),
                window("enc-title", "AU", 0, i64::MAX, Tier::Uhd),
                window("hd-only", "NZ", 0, i64::MAX, Tier::Uhd),
            ],
            titles: vec![
                catalog("clear-title"),
                catalog("enc-title"),
                catalog("hd-only"),
            ],
            keys: vec![
                key(KID_SD, Some(Tier::Sd), TrackKind::Video),
                key(KID_HD, Some(Tier::Hd), TrackKind::Video),
                key(KID_FHD, Some(Tier::Fhd), TrackKind::Video),
                key(KID_AUDIO, None, TrackKind::Audio),
            ],
            ..SnapshotRows::default()
        }
    }

    fn account(id: &str, plan: &str, status: AccountStatus) -> AccountRow {
        AccountRow {
            id: id.into(),
            plan_id: plan.into(),
            status,
        }
    }

    /// What a row expects: the refusal's API code, or the tier, renditions and keys granted.
    #[derive(Debug, PartialEq)]
    enum Want {
        Refused(&'static str),
        Granted(Tier, &'static [&'static str], &'static [&'static str]),
    }
    use Want::{Granted, Refused};

    /// Name, (plan, account status), device class, title, client address, now, expected.
    type Row = (
        &'static str,
        (&'static str, AccountStatus),
        &'static str,
        &'static str,
        &'static str,
        u64,
        Want,
    );

    #[test]
    fn decide_refuses_in_order_and_grants_within_the_effective_tier() {
        use AccountStatus::{Active, Closed, Suspended};
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // name, (plan, status), device, title, client ip, now, expected
            ("granted: premium browser in NZ, capped by the FHD device", ("premium", Active), "browser", "clear-title", "127.0.0.1", NOW,
                Granted(Tier::Fhd, &["v360", "v720", "v1080", "a128"], &[])),
            ("bad address", ("premium", Active), "browser", "clear-title", "1.2.3", NOW, Refused("invalid_request")),
            ("unknown title before anything about the account", ("premium", Suspended), "browser", "no-such-title", "127.0.0.1", NOW, Refused("unknown_title")),
            ("unknown device before anything about the account", ("premium", Suspended), "fridge", "clear-title", "127.0.0.1", NOW, Refused("unknown_device_class")),
            ("suspended account before geo", ("premium", Suspended), "browser", "clear-title", "8.8.8.8", NOW, Refused("account_inactive")),
            ("closed account", ("premium", Closed), "browser", "clear-title", "127.0.0.1", NOW, Refused("account_inactive")),
            ("unknown plan", ("gold", Active), "browser", "clear-title", "127.0.0.1", NOW, Refused("internal")),
            ("address in no country", ("premium", Active), "browser", "clear-title", "8.8.8.8", NOW, Refused("geo_blocked")),
            ("no window in the country", ("premium", Active), "browser", "hd-only", "192.0.2.5", NOW, Refused("geo_blocked")),
            ("window opens exactly now", ("premium", Active), "browser", "clear-title", "203.0.113.9", NOW,
                Granted(Tier::Fhd, &["v360", "v720", "v1080", "a128"], &[])),
            ("window opens a second later", ("premium", Active), "browser", "clear-title", "203.0.113.9", NOW - 1, Refused("geo_blocked")),
            ("window closed exactly now", ("premium", Active), "browser", "clear-title", "198.51.100.7", NOW, Refused("geo_blocked")),
            ("window's last second", ("premium", Active), "browser", "clear-title", "198.51.100.7", NOW - 1,
                Granted(Tier::Fhd, &["v360", "v720", "v1080", "a128"], &[])),
            ("SD window caps the tier", ("premium", Active), "browser", "clear-title", "192.0.2.5", NOW,
                Granted(Tier::Sd, &["v360", "a128"], &[])),
            ("SD plan on a title without SD", ("basic", Active), "browser", "hd-only", "127.0.0.1", NOW, Refused("tier_unavailable")),
            ("SD device on a title without SD", ("premium", Active), "phone", "hd-only", "127.0.0.1", NOW, Refused("tier_unavailable")),
            ("HD plan: HD is within", ("standard", Active), "browser", "hd-only", "127.0.0.1", NOW,
                Granted(Tier::Hd, &["v720", "a128"], &[])),
            ("IPv4-mapped IPv6 is the IPv4 client", ("premium", Active), "browser", "clear-title", "::ffff:127.0.0.1", NOW,
                Granted(Tier::Fhd, &["v360", "v720", "v1080", "a128"], &[])),
            ("device without the title's key system", ("premium", Active), "tv-widevine", "enc-title", "127.0.0.1", NOW, Refused("drm_unsupported")),
            ("encrypted at SD: the SD and audio keys only", ("basic", Active), "browser", "enc-title", "127.0.0.1", NOW,
                Granted(Tier::Sd, &["v360", "a128"], &[KID_SD, KID_AUDIO])),
            ("encrypted at FHD: every key", ("premium", Active), "browser", "enc-title", "127.0.0.1", NOW,
                Granted(Tier::Fhd, &["v360", "v720", "v1080", "a128"], &[KID_SD, KID_HD, KID_FHD, KID_AUDIO])),
        ];
        let snap = snapshot();
        for (name, (plan, status), device, title, ip, now, want) in rows {
            let req = StartRequest {
                account_id: "acct".into(),
                device_class: device.to_string(),
                title: title.to_string(),
                client_ip: ip.to_string(),
            };
            let got = decide(&snap, &account("acct", plan, *status), &req, *now)
                .map(|e| {
                    assert_eq!(e.country, snap.country(e.client_ip).unwrap(), "{name}");
                    assert!(e.client_ip.is_ipv4(), "{name}");
                    (e.tier, e.renditions, e.key_ids)
                })
                .map_err(|r| ApiError::from(r).code());
            let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let want = match want {
                Granted(t, r, k) => Ok((*t, owned(r), owned(k))),
                Refused(code) => Err(*code),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    /// `base`'s catalog (a title of `tests/data`) renamed `title`, with keyframe-only trick play
    /// renditions of the given heights (`trick-<height>`).
    fn with_tricks(base: &str, title: &str, heights: &[u32]) -> (String, String) {
        let text = match base {
            "clear-title" => include_str!("../tests/data/clear-title/catalog.json"),
            _ => include_str!("../tests/data/hd-only/catalog.json"),
        };
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["title"] = title.into();
        for h in heights {
            let id = format!("trick-{h}");
            let file = format!("{id}/{id}.mp4");
            v["renditions"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "id": id, "kind": "video", "codec": "avc1.64000d", "bandwidth": 90000,
                    "average_bandwidth": 80000, "width": h * 16 / 9, "height": h, "frame_rate": "1",
                    "tier": Tier::from_height(*h), "role": protocol::catalog::TRICK_ROLE,
                    "files": [file],
                }));
            v["files"].as_array_mut().unwrap().push(serde_json::json!({
                "path": file, "size": 1000, "sha256": "0".repeat(64),
            }));
        }
        (title.to_owned(), v.to_string())
    }

    #[test]
    fn trick_renditions_follow_the_tier_and_never_stand_in_for_video() {
        let mut rows = rows();
        rows.titles
            .push(with_tricks("clear-title", "trick-title", &[180, 720]));
        rows.titles.push(with_tricks("hd-only", "hd-trick", &[180]));
        for (title, country, tier) in [
            ("trick-title", "NZ", Tier::Uhd),
            ("trick-title", "AU", Tier::Sd),
            ("hd-trick", "NZ", Tier::Uhd),
        ] {
            rows.windows.push(WindowRow {
                title: title.into(),
                country: country.into(),
                starts_at: 0,
                ends_at: i64::MAX,
                max_tier: tier,
            });
        }
        let snap = Snapshot::build(rows);
        let decide_for = |plan: &str, device: &str, title: &str, ip: &str| {
            let req = StartRequest {
                account_id: "a".into(),
                device_class: device.into(),
                title: title.into(),
                client_ip: ip.into(),
            };
            decide(&snap, &account("a", plan, AccountStatus::Active), &req, NOW)
                .map(|e| e.renditions)
                .map_err(|r| ApiError::from(r).code())
        };
        // An SD session gets the SD trick rendition, never the HD one.
        assert_eq!(
            decide_for("premium", "phone", "trick-title", "127.0.0.1"),
            Ok(["v360", "a128", "trick-180"].map(String::from).to_vec())
        );
        assert_eq!(
            decide_for("premium", "browser", "trick-title", "192.0.2.5"),
            Ok(["v360", "a128", "trick-180"].map(String::from).to_vec())
        );
        // HD: both.
        assert_eq!(
            decide_for("standard", "browser", "trick-title", "127.0.0.1"),
            Ok(["v360", "v720", "a128", "trick-180", "trick-720"]
                .map(String::from)
                .to_vec())
        );
        // An SD trick rendition is no SD video: an HD-only title stays unavailable at SD.
        assert_eq!(
            decide_for("basic", "browser", "hd-trick", "127.0.0.1"),
            Err("tier_unavailable")
        );
    }

    #[test]
    fn encrypted_title_without_usable_keys_is_drm_unsupported() {
        let mut snap = snapshot();
        // Only the FHD key is stored: nothing is licensable at SD.
        snap.keys
            .get_mut("enc-title")
            .unwrap()
            .retain(|k| k.kid == KID_FHD);
        let req = StartRequest {
            account_id: "a".into(),
            device_class: "browser".into(),
            title: "enc-title".into(),
            client_ip: "192.0.2.5".into(),
        };
        let basic = account("a", "basic", AccountStatus::Active);
        assert_eq!(
            decide(&snap, &basic, &req, NOW).map(|e| e.tier),
            Err(Refusal::DrmUnsupported(
                "the licence policy yields no usable key at tier SD".into()
            ))
        );
        // No keys stored at all.
        snap.keys.clear();
        let premium = account("a", "premium", AccountStatus::Active);
        assert!(matches!(
            decide(&snap, &premium, &req, NOW),
            Err(Refusal::DrmUnsupported(_))
        ));
    }

    #[test]
    fn resolve_is_the_first_steps_of_decide() {
        let snap = snapshot();
        let req = StartRequest {
            account_id: "a".into(),
            device_class: "browser".into(),
            title: "no-such-title".into(),
            client_ip: "127.0.0.1".into(),
        };
        assert_eq!(
            resolve(&snap, &req).err(),
            Some(Refusal::UnknownTitle("no-such-title".into()))
        );
        let named = resolve(
            &snap,
            &StartRequest {
                title: "clear-title".into(),
                client_ip: "::ffff:10.1.2.3".into(),
                ..req
            },
        )
        .unwrap();
        assert_eq!(named.client_ip, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(named.title.title, "clear-title");
    }
}
