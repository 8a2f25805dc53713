//! The playback service's side of `POST /v1/playback/sessions` when the control plane runs as
//! several replicas: [`PlaybackClient`].
//!
//! - **Choice of two.** Each attempt picks two replicas at random among those not cooling down
//!   and sends to the one with fewer requests in flight from this client, so a slow replica gets
//!   less work without any shared state.
//! - **Bounded retries.** A transport failure (refused, reset, timed out, an answer cut off) or
//!   a `5xx` puts the replica in a short cool-down and the start is retried on another one, at
//!   most [`RetryPolicy::attempts`] times in all, with jittered exponential back-off, within
//!   [`RetryPolicy::deadline`]. `503` with `Retry-After` waits that long if the deadline allows.
//!   A `4xx` is the answer (a refusal: retrying it elsewhere gives the same answer) and is never
//!   retried.
//! - **One lease per start.** Every attempt of one start carries the same `Idempotency-Key`, so
//!   a start whose answer was lost on the way back (the replica took the lease, then the
//!   connection broke) is answered on the retry with the stored answer instead of a second lease.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::entitlement::StartRequest;
use crate::routes::playback::StartResponse;
use crate::routes::ErrorBody;

/// How hard a [`PlaybackClient`] tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per start, the first included (at least 1).
    pub attempts: u32,
    /// Back-off before the second attempt; doubled for each later one, with ±50% jitter.
    pub backoff: Duration,
    /// The longest one attempt may take (connect, request, answer).
    pub attempt_timeout: Duration,
    /// The longest one start may take, every attempt and back-off included.
    pub deadline: Duration,
    /// How long a replica that failed is passed over (unless every replica is).
    pub cool_down: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(50),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(12),
            cool_down: Duration::from_secs(2),
        }
    }
}

/// Why a start did not give a session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client was built wrong (no replica, a replica URL that is not `http(s)://`).
    #[error("playback client configuration: {0}")]
    Config(String),
    /// The control plane answered with a refusal (`4xx`), or with a `5xx` on the last attempt.
    #[error("{replica} answered {status} {code}: {message}")]
    Refused {
        /// The replica that answered.
        replica: String,
        /// HTTP status.
        status: u16,
        /// The error body's `code` (`concurrent_limit`, `geo_blocked`, ...).
        code: String,
        /// The error body's `message`.
        message: String,
        /// `Retry-After`, seconds, when the answer had one.
        retry_after: Option<u64>,
    },
    /// Every attempt failed in transport (or the deadline passed); the last failure.
    #[error("no control-plane replica answered after {attempts} attempt(s); last: {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure, naming its replica.
        last: String,
    },
}

impl ClientError {
    /// The refusal's code, if the control plane answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Counters of one client, for its owner's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Starts asked of the client.
    pub starts: u64,
    /// Attempts after the first of a start.
    pub retries: u64,
    /// Attempts that failed in transport (refused, reset, timed out, answer cut off).
    pub transport_failures: u64,
}

#[derive(Debug)]
struct Replica {
    base: String,
    in_flight: AtomicUsize,
    /// Passed over until this instant (after a failure).
    cool_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn cooling(&self, now: Instant) -> bool {
        self.cool_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t > now)
    }

    fn cool(&self, until: Instant) {
        *self.cool_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    fn heal(&self) {
        *self.cool_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Decrements a replica's in-flight count when an attempt ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session-start client over several control-plane replicas (see the module docs).
#[derive(Debug)]
pub struct PlaybackClient {
    http: reqwest::Client,
    replicas: Vec<Replica>,
    api_key: String,
    policy: RetryPolicy,
    starts: AtomicU64,
    retries: AtomicU64,
    transport_failures: AtomicU64,
}

/// One attempt's outcome.
enum Attempt {
    Done(Box<StartResponse>),
    /// Final: a refusal.
    Refused(ClientError),
    /// Worth another replica: the failure, how long the answer asked to wait, and the answer
    /// itself when there was one (a `5xx`).
    Retry(String, Option<Duration>, Option<ClientError>),
}

impl PlaybackClient {
    /// A client for `replicas` (base URLs such as `http://10.0.0.1:8080`) with the playback
    /// API key and the default [`RetryPolicy`].
    pub fn new(replicas: &[&str], api_key: &str) -> Result<PlaybackClient, ClientError> {
        PlaybackClient::with_policy(replicas, api_key, RetryPolicy::default())
    }

    /// A client with an explicit policy.
    pub fn with_policy(
        replicas: &[&str],
        api_key: &str,
        policy: RetryPolicy,
    ) -> Result<PlaybackClient, ClientError> {
        if replicas.is_empty() {
            return Err(ClientError::Config("no control-plane replica given".into()));
        }
        let mut list = Vec::with_capacity(replicas.len());
        for r in replicas {
            let base = r.trim_end_matches('/');
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(ClientError::Config(format!(
                    "replica {r:?}: expected an http:// or https:// base URL"
                )));
            }
            list.push(Replica {
                base: base.to_owned(),
                in_flight: AtomicUsize::new(0),
                cool_until: Mutex::new(None),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(policy.attempt_timeout)
            .connect_timeout(policy.attempt_timeout)
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(PlaybackClient {
            http,
            replicas: list,
            api_key: api_key.to_owned(),
            policy: RetryPolicy {
                attempts: policy.attempts.max(1),
                ..policy
            },
            starts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            transport_failures: AtomicU64::new(0),
        })
    }

    /// This client's counters so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            starts: self.starts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            transport_failures: self.transport_failures.load(Ordering::Relaxed),
        }
    }

    /// Starts a session, under a fresh `Idempotency-Key`.
    pub async fn start_session(&self, req: &StartRequest) -> Result<StartResponse, ClientError> {
        let key = format!("pbc-{}", crate::crypto::random_token(18));
        self.start_session_with_key(req, &key).await
    }

    /// Starts a session under the caller's `Idempotency-Key` (1 to 255 visible ASCII
    /// characters): the caller's own retry of the same start, even from another process, then
    /// takes no second lease either.
    pub async fn start_session_with_key(
        &self,
        req: &StartRequest,
        key: &str,
    ) -> Result<StartResponse, ClientError> {
        self.starts.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(req)
            .map_err(|e| ClientError::Config(format!("encoding the start request: {e}")))?;
        let started = Instant::now();
        let mut last = String::new();
        let mut last_answer: Option<ClientError> = None;
        let mut made = 0;
        let mut previous: Option<usize> = None;
        for attempt in 0..self.policy.attempts {
            made += 1;
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let idx = self.pick(previous);
            previous = Some(idx);
            let replica = &self.replicas[idx];
            match self.attempt(replica, &body, key).await {
                Attempt::Done(resp) => {
                    replica.heal();
                    return Ok(*resp);
                }
                Attempt::Refused(e) => return Err(e),
                Attempt::Retry(why, retry_after, answer) => {
                    replica.cool(Instant::now() + self.policy.cool_down);
                    last = why;
                    last_answer = answer;
                    if attempt + 1 == self.policy.attempts {
                        break;
                    }
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    if started.elapsed() + wait >= self.policy.deadline {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(last_answer.unwrap_or(ClientError::Unavailable {
            attempts: made,
            last,
        }))
    }

    /// Back-off before attempt `attempt + 1`: `backoff × 2^attempt`, ±50% jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.policy.backoff.saturating_mul(1 << attempt.min(10));
        base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
    }

    /// The replica for the next attempt: two at random among those not cooling down (and not
    /// `previous`, when there is a choice), the one with fewer requests in flight.
    fn pick(&self, previous: Option<usize>) -> usize {
        let now = Instant::now();
        let mut open: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| !self.replicas[i].cooling(now))
            .collect();
        if open.len() > 1 {
            open.retain(|&i| Some(i) != previous);
        }
        if open.is_empty() {
            // Every replica failed lately: the one that cools down first, else the next one.
            open = (0..self.replicas.len())
                .filter(|&i| Some(i) != previous || self.replicas.len() == 1)
                .collect();
        }
        let mut rng = rand::thread_rng();
        let a = open[rng.gen_range(0..open.len())];
        if open.len() == 1 {
            return a;
        }
        let b = loop {
            let b = open[rng.gen_range(0..open.len())];
            if b != a {
                break b;
            }
        };
        let load = |i: usize| self.replicas[i].in_flight.load(Ordering::Relaxed);
        if load(b) < load(a) {
            b
        } else {
            a
        }
    }

    async fn attempt(&self, replica: &Replica, body: &[u8], key: &str) -> Attempt {
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&replica.in_flight);
        let url = format!("{}/v1/playback/sessions", replica.base);
        let sent = self
            .http
            .post(&url)
            .header("Authorization", format!("Bearer {}", self.api_key))
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.transport_failures.fetch_add(1, Ordering::Relaxed);
                return Attempt::Retry(format!("{}: {e}", replica.base), None, None);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                // The answer was cut off: the start may have been taken; the retry's
                // Idempotency-Key finds it.
                self.transport_failures.fetch_add(1, Ordering::Relaxed);
                return Attempt::Retry(
                    format!("{}: answer cut off: {e}", replica.base),
                    None,
                    None,
                );
            }
        };
        if status == 201 {
            return match serde_json::from_slice::<StartResponse>(&bytes) {
                Ok(r) => Attempt::Done(Box::new(r)),
                Err(e) => Attempt::Retry(
                    format!(
                        "{}: 201 with a body that is not a StartResponse: {e}",
                        replica.base
                    ),
                    None,
                    None,
                ),
            };
        }
        let err: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let (code, message) = match err {
            Some(e) => (e.code, e.message),
            None => (
                String::new(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            ),
        };
        let refused = ClientError::Refused {
            replica: replica.base.clone(),
            status,
            code,
            message,
            retry_after,
        };
        if (500..600).contains(&status) && status != 501 {
            let wait = retry_after.map(Duration::from_secs);
            Attempt::Retry(refused.to_string(), wait, Some(refused))
        } else {
            Attempt::Refused(refused)
        }
    }
}
