//! Playback sessions: start (the I/O around [`crate::entitlement::decide`]: the API key, the
//! rate limit, the account read, steering, the lease, grants),
//! heartbeat, end, the per-session manifests and the steering manifests they point to.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::grant::{sign, Claims, ClientPrefix};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{bearer, parse_body, require_api_key, Body, ErrorBody, Path};
use crate::crypto::{digest, random_token};
use crate::db::SessionRow;
use crate::entitlement::{self, Entitlement};
use crate::error::ApiError;
use crate::import::CLEAR_KEY;
use crate::manifest::{dash, hls, Location};
use crate::state::AppState;
use crate::steering::{Choice, Fleet, MissClass, StoredDecision};

pub use crate::entitlement::StartRequest;

/// One alternative location with its grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantedAppliance {
    /// Appliance id (HLS pathway id, DASH service location).
    pub id: String,
    /// Its cluster (the grant's audience).
    pub cluster: String,
    /// `http://host:port/g/<grant>/<title>/`.
    pub base_url: String,
    /// The grant.
    pub grant: String,
    /// Grant expiry, Unix seconds.
    pub grant_expires_at: u64,
}

/// Heartbeat instructions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatInfo {
    /// `POST` here (with the session token) to keep the lease.
    pub url: String,
    /// Send one at least this often, seconds.
    pub interval_secs: u64,
}

/// Manifest URLs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ManifestUrls {
    /// HLS master playlist.
    pub hls: String,
    /// DASH MPD.
    pub dash: String,
}

/// Licence server details (encrypted titles only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LicenseInfo {
    /// Key system.
    pub key_system: String,
    /// `POST` the CDM's Clear Key request here with `Authorization: Bearer <token>`.
    pub url: String,
    /// The same URL with the token as a query parameter, for players that cannot set headers.
    pub url_with_token: String,
}

/// `201` answer to a session start.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartResponse {
    /// Session id.
    pub session_id: String,
    /// Bearer token of this session: heartbeats, end and licence requests.
    pub token: String,
    /// Title.
    pub title: String,
    /// Client country.
    pub country: String,
    /// Effective tier.
    pub tier: String,
    /// Rendition ids the session may fetch.
    pub renditions: Vec<String>,
    /// Lease expiry, Unix seconds.
    pub lease_expires_at: u64,
    /// Heartbeat.
    pub heartbeat: HeartbeatInfo,
    /// Licence server, for encrypted titles.
    pub license: Option<LicenseInfo>,
    /// Per-session manifests.
    pub manifests: ManifestUrls,
    /// Steering manifests.
    pub steering: ManifestUrls,
    /// Ranked appliances with grants, best first.
    pub appliances: Vec<GrantedAppliance>,
    /// Why this ranking.
    pub steering_reason: String,
    /// `content_miss` / `health_miss` when the best local appliance was skipped.
    pub miss: Option<String>,
}

/// `200` answer to a session heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionHeartbeatResponse {
    /// Session id.
    pub session_id: String,
    /// New lease expiry (now + lease length).
    pub lease_expires_at: u64,
    /// Fresh grants, expiry counted from now.
    pub appliances: Vec<GrantedAppliance>,
}

/// Mints one grant per cluster of `ranked`, valid from `now`.
pub(crate) fn grant_locations(
    st: &AppState,
    session_id: &str,
    title: &str,
    renditions: &[String],
    client_ip: IpAddr,
    ranked: &[Choice],
    now: u64,
) -> Result<Vec<GrantedAppliance>, ApiError> {
    let key = st.keys.signing(now);
    let exp = now + st.config.grant_ttl_secs;
    let mut by_cluster: BTreeMap<&str, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(ranked.len());
    for c in ranked {
        let grant = match by_cluster.get(c.cluster.as_str()) {
            Some(g) => g.clone(),
            None => {
                let claims = Claims {
                    iss: st.config.issuer.clone(),
                    aud: vec![c.cluster.clone()],
                    sub: session_id.to_owned(),
                    nbf: None,
                    iat: now,
                    exp,
                    prefix: format!("/{title}/"),
                    renditions: Some(renditions.to_vec()),
                    client: Some(ClientPrefix::binding_for(client_ip)),
                    jti: random_token(12),
                    scope: Default::default(),
                };
                let g = sign(&key, &claims)
                    .map_err(|e| ApiError::Internal(format!("minting a grant: {e}")))?;
                by_cluster.insert(&c.cluster, g.clone());
                g
            }
        };
        let host = if c.address.contains(':') && !c.address.starts_with('[') {
            format!("[{}]", c.address)
        } else {
            c.address.clone()
        };
        out.push(GrantedAppliance {
            id: c.appliance.clone(),
            cluster: c.cluster.clone(),
            base_url: format!("http://{host}:{}/g/{grant}/{title}/", c.port),
            grant,
            grant_expires_at: exp,
        });
    }
    Ok(out)
}

/// Starts a playback session.
#[utoipa::path(post, path = "/v1/playback/sessions", tag = "playback",
    request_body = StartRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes a retried start safe: the same key with the same body within 24 h answers the stored 201 again (no second lease); with a different body, 409 idempotency_conflict. A first request that never answered (its replica died) is taken over after 3 s, ending any lease it took. 1 to 255 visible ASCII characters.",
        pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255)),
    security(("playback_api_key" = [])),
    responses(
        (status = 201, description = "Session started (or, with an Idempotency-Key already used with this body, the stored answer)", body = StartResponse),
        (status = 400, description = "invalid_request (the body or the Idempotency-Key header, naming the field)", body = ErrorBody),
        (status = 401, description = "unauthorized: no or an unknown playback API key", body = ErrorBody),
        (status = 403, description = "account_inactive, geo_blocked, tier_unavailable or drm_unsupported", body = ErrorBody),
        (status = 404, description = "unknown_account, unknown_title or unknown_device_class", body = ErrorBody),
        (status = 409, description = "idempotency_conflict: the Idempotency-Key was used with a different body, or its first request is still being answered", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 429, description = "concurrent_limit, or rate_limited with Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (rate_limited only)"))),
        (status = 500, description = "internal", body = ErrorBody),
        (status = 503, description = "no_appliance, or database_unavailable with Retry-After", body = ErrorBody),
    ))]
pub async fn start_session(
    State(st): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<StartResponse>), ApiError> {
    let t0 = Instant::now();
    // ---- Idempotency-Key (migration 0006) ----
    let r = match headers.contains_key("idempotency-key") {
        false => start(&st, &headers, &body, None).await,
        true => match start_idempotent(&st, &headers, &body).await {
            // A replay is the stored answer again: no new session is counted.
            Ok((resp, true)) => return Ok((StatusCode::CREATED, Json(resp))),
            Ok((resp, false)) => Ok(resp),
            Err(e) => Err(e),
        },
    };
    match &r {
        Ok(_) => {
            st.metrics
                .sessions_started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            st.metrics.observe_start(t0.elapsed().as_secs_f64());
        }
        Err(e) => st.metrics.refused(e),
    }
    r.map(|b| (StatusCode::CREATED, Json(b)))
}

// ---- Idempotency-Key of session starts (migration 0006) ----

/// How long an `Idempotency-Key` and its stored answer are kept.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// How long a request waits for another one holding the same key to finish answering.
const IDEMPOTENCY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The request's `Idempotency-Key`, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_owned()))
}

/// A claim older than this with no answer belongs to a request that died (its replica was
/// killed or lost its database mid-start): a retry takes it over. A start is answered in
/// milliseconds (p99 11 ms in `benches/control_plane.sh`), so a live owner is never this slow
/// but under a database outage, and then its lease insert fails on the ownership check.
pub const IDEMPOTENCY_STALE_SECS: u64 = 3;

/// The claim a start answers under: its `Idempotency-Key` and this request's owner token.
#[derive(Clone, Copy)]
struct Claim<'a> {
    key: &'a str,
    owner: &'a str,
}

/// A start under an `Idempotency-Key`: the first request with the key answers and stores its
/// answer sealed with the master key (it holds grants and the licence token); a later one with
/// the same body gets it again (`true`: replayed), one with another body `idempotency_conflict`.
/// The claim is one insert, so two replicas racing on one key take one lease. A refused start
/// releases the key so that a retry is answered afresh. A claim left without an answer for
/// [`IDEMPOTENCY_STALE_SECS`] is taken over by the retry, which ends the lease the dead owner
/// may have taken (migration 0007): one live lease per key, whoever answers.
async fn start_idempotent(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StartResponse, bool), ApiError> {
    use sha2::Digest as _;
    let snap = st.snapshot().await?;
    // The caller is authenticated before its key is looked at.
    require_api_key(&snap, headers)?;
    let Some(key) = idempotency_key(headers)? else {
        return start(st, headers, body, None).await.map(|r| (r, false));
    };
    let key = key.as_str();
    let owner = random_token(12);
    let claim = Claim { key, owner: &owner };
    let hash = protocol::hex::encode(&sha2::Sha256::digest(body));
    let deadline = Instant::now() + IDEMPOTENCY_WAIT;
    loop {
        let now = st.now() as i64;
        if st
            .repo
            .claim_idempotency_key(key, &hash, &owner, now, now + IDEMPOTENCY_TTL_SECS as i64)
            .await?
        {
            return answer_claimed(st, headers, body, claim)
                .await
                .map(|r| (r, false));
        }
        match st.repo.idempotency_key(key, now).await? {
            Some(c) if c.request_sha256 != hash => {
                return Err(ApiError::IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body".into(),
                ))
            }
            Some(crate::db::rows::IdempotencyClaim {
                response: Some(sealed),
                ..
            }) => {
                let plain = st
                    .master
                    .open(&sealed, &idempotency_aad(key))
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let resp: StartResponse = serde_json::from_slice(&plain)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                return Ok((resp, true));
            }
            // Held with no answer for too long: its owner died. Take it over.
            Some(c) if c.created_at <= now - IDEMPOTENCY_STALE_SECS as i64 => {
                // A body that does not parse is refused by `start` without a lease; the
                // account only scopes the takeover's lock.
                let account = parse_body::<StartRequest>(body)
                    .map(|r| r.account_id)
                    .unwrap_or_default();
                let stale_before = now - IDEMPOTENCY_STALE_SECS as i64;
                if let Some(ended) = st
                    .repo
                    .take_over_idempotency_key(key, &hash, &owner, &account, stale_before, now)
                    .await?
                {
                    tracing::warn!(
                        idempotency_key = key,
                        held_since = c.created_at,
                        leases_ended = ended,
                        "took over an Idempotency-Key whose first request never answered \
                         (its replica died mid-start); ended the lease it had taken, if any"
                    );
                    st.metrics
                        .idempotency_takeovers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return answer_claimed(st, headers, body, claim)
                        .await
                        .map(|r| (r, false));
                }
            }
            // Held by a request still being answered (here or on another replica), or released
            // or expired in between: look again shortly.
            Some(_) | None => {}
        }
        if Instant::now() >= deadline {
            return Err(ApiError::IdempotencyConflict(
                "the first request with this Idempotency-Key is still being answered; retry".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The associated data sealing a key's stored answer.
fn idempotency_aad(key: &str) -> String {
    format!("idempotency-key:{key}")
}

/// Answers a start whose key `claim.owner` owns: the start, then its answer stored sealed (or,
/// on a refusal, the claim released).
async fn answer_claimed(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    claim: Claim<'_>,
) -> Result<StartResponse, ApiError> {
    let r = start(st, headers, body, Some(claim)).await;
    match &r {
        Ok(resp) => {
            let stored = serde_json::to_vec(resp)
                .map_err(|e| ApiError::Internal(e.to_string()))
                .and_then(|json| {
                    st.master
                        .seal(&json, &idempotency_aad(claim.key))
                        .map_err(|e| ApiError::Internal(e.to_string()))
                });
            match stored {
                Ok(sealed) => {
                    if !st
                        .repo
                        .store_idempotent_response(claim.key, claim.owner, &sealed)
                        .await?
                    {
                        tracing::warn!(
                            idempotency_key = claim.key,
                            "a retry took this Idempotency-Key over before the answer was stored"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "storing an idempotent answer"),
            }
        }
        Err(_) => {
            if let Err(e) = st
                .repo
                .release_idempotency_key(claim.key, claim.owner)
                .await
            {
                tracing::warn!(error = %e, "releasing an Idempotency-Key after a refusal");
            }
        }
    }
    r
}

async fn start(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    claim: Option<Claim<'_>>,
) -> Result<StartResponse, ApiError> {
    let snap = st.snapshot().await?;
    require_api_key(&snap, headers)?;
    let req: StartRequest = parse_body(body)?;
    // Refuse what the request names before spending a rate-limit token or a database read.
    entitlement::resolve(&snap, &req)?;
    st.limiter
        .check(&req.account_id)
        .map_err(ApiError::RateLimited)?;
    let account = st
        .repo
        .account(&req.account_id)
        .await?
        .ok_or_else(|| ApiError::UnknownAccount(req.account_id.clone()))?;
    let now = st.now();
    let now_i = now as i64;
    let Entitlement {
        client_ip,
        title,
        country,
        tier,
        renditions,
        key_ids,
        max_streams,
    } = entitlement::decide(&snap, &account, &req, now)?;

    // Steering (pure, in memory) before the lease so a refusal takes no stream.
    let decision = snap
        .fleet
        .rank(client_ip, &title.title, now, &st.thresholds());
    if decision.ranked.is_empty() {
        return Err(ApiError::NoAppliance(decision.reason));
    }

    // 5. The lease, counted and inserted atomically.
    let session_id = random_token(16);
    let token = random_token(32);
    let lease_expires_at = now + st.config.lease_secs;
    let row = SessionRow {
        id: session_id.clone(),
        account_id: account.id.clone(),
        title: title.title.clone(),
        device_class: req.device_class.clone(),
        client_ip: client_ip.to_string(),
        country: country.clone(),
        tier,
        renditions: renditions.clone(),
        key_ids,
        steering: StoredDecision::from(&decision),
        license_sha256: digest(&token),
        created_at: now_i,
        expires_at: lease_expires_at as i64,
        ended_at: None,
        end_reason: None,
        idempotency_key: claim.map(|c| c.key.to_owned()),
        bitrate_bps: crate::fill::popularity::session_bitrate(&title, &renditions) as i64,
        title_secs: title.duration_ms.div_ceil(1000) as i64,
    };
    if !st
        .repo
        .insert_session_if_under_limit(&row, max_streams, now_i, claim.map(|c| c.owner))
        .await?
    {
        // Under a key, the insert also fails when a retry took the key over (this request was
        // taken for dead): that retry answers the start.
        if let Some(c) = claim {
            let owned = st
                .repo
                .idempotency_key(c.key, now_i)
                .await?
                .is_some_and(|k| k.owner == c.owner);
            if !owned {
                return Err(ApiError::IdempotencyConflict(
                    "a retry of this start took its Idempotency-Key over; its answer stands".into(),
                ));
            }
        }
        return Err(ApiError::ConcurrentLimit(max_streams));
    }
    match decision.miss {
        Some(MissClass::ContentMiss) => {
            st.metrics
                .content_misses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(MissClass::HealthMiss) => {
            st.metrics
                .health_misses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        None => {}
    }
    tracing::info!(
        target: "outpost::steering",
        session = %session_id,
        title = %title.title,
        prefix = decision.prefix.as_deref().unwrap_or("-"),
        clusters = %decision.clusters.join(","),
        ranked = %decision.ranked.iter().map(|c| c.appliance.as_str()).collect::<Vec<_>>().join(","),
        best_local = decision.best_local.as_deref().unwrap_or("-"),
        miss = decision.miss.map_or("-", MissClass::as_str),
        reason = %decision.reason,
        "steering decision"
    );

    let appliances = grant_locations(
        st,
        &session_id,
        &title.title,
        &renditions,
        client_ip,
        &decision.ranked,
        now,
    )?;
    let base = &st.public_url;
    Ok(StartResponse {
        heartbeat: HeartbeatInfo {
            url: format!("{base}/v1/playback/sessions/{session_id}/heartbeat"),
            interval_secs: st.config.heartbeat_interval_secs,
        },
        license: title.encryption.as_ref().map(|_| LicenseInfo {
            key_system: CLEAR_KEY.to_owned(),
            url: format!("{base}/v1/license/clearkey"),
            url_with_token: format!("{base}/v1/license/clearkey?token={token}"),
        }),
        manifests: ManifestUrls {
            hls: format!("{base}/v1/playback/sessions/{session_id}/master.m3u8"),
            dash: format!("{base}/v1/playback/sessions/{session_id}/manifest.mpd"),
        },
        steering: ManifestUrls {
            hls: format!("{base}/v1/steering/{session_id}/hls"),
            dash: format!("{base}/v1/steering/{session_id}/dash"),
        },
        session_id,
        token,
        title: title.title.clone(),
        country,
        tier: tier.as_str().to_owned(),
        renditions,
        lease_expires_at,
        appliances,
        steering_reason: decision.reason,
        miss: decision.miss.map(|m| m.as_str().to_owned()),
    })
}

/// Loads a session and checks the caller holds its token or a playback API key.
async fn authorized_session(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<SessionRow, ApiError> {
    let s = st
        .repo
        .session(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let token_ok = bearer(headers).is_some_and(|t| digest(t) == s.license_sha256);
    if !token_ok {
        let snap = st.snapshot().await?;
        require_api_key(&snap, headers)?;
    }
    Ok(s)
}

fn session_ip(s: &SessionRow) -> Result<IpAddr, ApiError> {
    s.client_ip
        .parse()
        .map_err(|_| ApiError::Internal(format!("session {} has a bad client_ip", s.id)))
}

/// Extends a session's lease from now and returns fresh grants.
#[utoipa::path(post, path = "/v1/playback/sessions/{id}/heartbeat", tag = "playback",
    params(("id" = String, Path, description = "Session id")),
    security(("session_token" = []), ("playback_api_key" = [])),
    responses(
        (status = 200, description = "Lease extended", body = SessionHeartbeatResponse),
        (status = 401, description = "unauthorized: neither the session's token nor a playback API key", body = ErrorBody),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 410, description = "session_ended: ended or lapsed", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn session_heartbeat(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SessionHeartbeatResponse>, ApiError> {
    let s = authorized_session(&st, &headers, &id).await?;
    let now = st.now();
    let exp = now + st.config.lease_secs;
    if !st.repo.extend_session(&id, now as i64, exp as i64).await? {
        return Err(ApiError::SessionEnded);
    }
    st.metrics
        .session_heartbeats
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let appliances = grant_locations(
        &st,
        &s.id,
        &s.title,
        &s.renditions,
        session_ip(&s)?,
        &s.steering.ranked,
        now,
    )?;
    Ok(Json(SessionHeartbeatResponse {
        session_id: s.id,
        lease_expires_at: exp,
        appliances,
    }))
}

/// Ends a session, freeing its stream.
#[utoipa::path(delete, path = "/v1/playback/sessions/{id}", tag = "playback",
    params(("id" = String, Path, description = "Session id")),
    security(("session_token" = []), ("playback_api_key" = [])),
    responses(
        (status = 204, description = "Ended; its stream is free"),
        (status = 401, description = "unauthorized: neither the session's token nor a playback API key", body = ErrorBody),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 410, description = "session_ended: already ended or lapsed", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn end_session(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorized_session(&st, &headers, &id).await?;
    if !st.repo.end_session(&id, st.now() as i64, "client").await? {
        return Err(ApiError::SessionEnded);
    }
    st.metrics
        .sessions_ended
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(StatusCode::NO_CONTENT)
}

async fn live_session(st: &AppState, id: &str) -> Result<SessionRow, ApiError> {
    let s = st
        .repo
        .session(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    if !s.is_live(st.now() as i64) {
        return Err(ApiError::SessionEnded);
    }
    Ok(s)
}

async fn manifest(st: &AppState, id: &str, is_hls: bool) -> Result<Response, ApiError> {
    let s = live_session(st, id).await?;
    let (dash_text, hls_text) = st
        .repo
        .title_manifests(&s.title)
        .await?
        .ok_or_else(|| ApiError::UnknownTitle(s.title.clone()))?;
    let now = st.now();
    let granted = grant_locations(
        st,
        &s.id,
        &s.title,
        &s.renditions,
        session_ip(&s)?,
        &s.steering.ranked,
        now,
    )?;
    let locations: Vec<Location> = granted
        .into_iter()
        .map(|g| Location {
            id: g.id,
            base_url: g.base_url,
        })
        .collect();
    let allowed: HashSet<&str> = s.renditions.iter().map(String::as_str).collect();
    let keep = |r: &str| allowed.contains(r);
    let base = &st.public_url;
    let (body, ctype) = if is_hls {
        let uri = format!("{base}/v1/steering/{}/hls", s.id);
        (
            hls::rewrite_master(&hls_text, &keep, &locations, &uri)
                .map_err(|e| ApiError::Internal(format!("title {}: {e}", s.title)))?,
            "application/vnd.apple.mpegurl",
        )
    } else {
        let uri = format!("{base}/v1/steering/{}/dash", s.id);
        // The packager leaves the Clear Key licence URL as a placeholder; players send the
        // session token as a bearer header, so the manifest itself carries no secret.
        let mpd = dash::rewrite_mpd(&dash_text, &keep, &locations, &uri)
            .map_err(|e| ApiError::Internal(format!("title {}: {e}", s.title)))?
            .replace(
                protocol::catalog::CLEARKEY_LICENSE_URL_PLACEHOLDER,
                &format!("{base}/v1/license/clearkey"),
            );
        (mpd, "application/dash+xml")
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        body,
    )
        .into_response())
}

/// The session's HLS master playlist.
#[utoipa::path(get, path = "/v1/playback/sessions/{id}/master.m3u8", tag = "playback",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The master playlist: the session's renditions, a content-steering tag and one pathway per appliance", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 404, description = "session_not_found, or unknown_title when the title was removed", body = ErrorBody),
        (status = 410, description = "session_ended: ended or lapsed", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn hls_master(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    manifest(&st, &id, true).await
}

/// The session's DASH MPD.
#[utoipa::path(get, path = "/v1/playback/sessions/{id}/manifest.mpd", tag = "playback",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The MPD: the session's renditions, ContentSteering and one BaseURL per appliance", content_type = "application/dash+xml", body = String),
        (status = 404, description = "session_not_found, or unknown_title when the title was removed", body = ErrorBody),
        (status = 410, description = "session_ended: ended or lapsed", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn dash_mpd(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    manifest(&st, &id, false).await
}

/// Re-ranks a session's appliances: those that can serve now keep their order, the others are
/// left out; if none can, the original order stands.
async fn priority(st: &AppState, id: &str) -> Result<Vec<String>, ApiError> {
    let s = live_session(st, id).await?;
    let steering = s.steering;
    let snap = st.snapshot().await?;
    let now = st.now();
    let t = st.thresholds();
    let up: Vec<String> = steering
        .ranked
        .iter()
        .filter(|c| {
            snap.fleet
                .appliance(&c.appliance)
                .is_some_and(|a| Fleet::unavailable(a, &s.title, now, &t).is_none())
        })
        .map(|c| c.appliance.clone())
        .collect();
    let order = if up.is_empty() {
        steering.ranked.into_iter().map(|c| c.appliance).collect()
    } else {
        up
    };
    // QoE (issue 16): appliances this session played badly from move behind healthy ones.
    super::qoe::steer(st, id, order).await
}

/// HLS content-steering manifest.
#[utoipa::path(get, path = "/v1/steering/{id}/hls", tag = "steering",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "HLS steering manifest (PATHWAY-PRIORITY)", body = SteeringManifest),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 410, description = "session_ended: ended or lapsed", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn steering_hls(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = priority(&st, &id).await?;
    Ok(steering_json(&st, &id, "hls", p))
}

/// DASH content-steering manifest.
#[utoipa::path(get, path = "/v1/steering/{id}/dash", tag = "steering",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "DASH steering manifest (SERVICE-LOCATION-PRIORITY and PATHWAY-PRIORITY)", body = SteeringManifest),
        (status = 404, description = "session_not_found", body = ErrorBody),
        (status = 410, description = "session_ended: ended or lapsed", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    ))]
pub async fn steering_dash(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = priority(&st, &id).await?;
    // DASH-IF CTS names the list SERVICE-LOCATION-PRIORITY (dash.js reads it); Shaka Player reads
    // PATHWAY-PRIORITY for DASH as for HLS. Both carry the same ranking; clients ignore the other.
    Ok(steering_json(&st, &id, "dash", p))
}

/// A content-steering manifest (HLS and DASH-IF content steering).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SteeringManifest {
    /// Always 1.
    #[serde(rename = "VERSION")]
    pub version: u32,
    /// Seconds before the player reloads it.
    #[serde(rename = "TTL")]
    pub ttl: u64,
    /// Where to reload it.
    #[serde(rename = "RELOAD-URI")]
    pub reload_uri: String,
    /// Appliance ids (pathways), best first.
    #[serde(rename = "PATHWAY-PRIORITY")]
    pub pathway_priority: Vec<String>,
    /// The same ranking under DASH-IF's name (DASH only).
    #[serde(
        rename = "SERVICE-LOCATION-PRIORITY",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_location_priority: Option<Vec<String>>,
}

fn steering_json(st: &AppState, id: &str, kind: &str, p: Vec<String>) -> Response {
    let body = SteeringManifest {
        version: 1,
        ttl: st.config.steering_ttl_secs,
        reload_uri: format!("{}/v1/steering/{id}/{kind}", st.public_url),
        service_location_priority: (kind == "dash").then(|| p.clone()),
        pathway_priority: p,
    };
    ([(header::CACHE_CONTROL, "private, no-store")], Json(body)).into_response()
}
