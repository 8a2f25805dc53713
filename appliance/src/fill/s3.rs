//! The S3 origin client for fill: reads the packager's output from an S3-compatible bucket
//! ([`protocol::fill::FillSource::S3`]) as a stream of byte chunks from a given offset, so the
//! filler can resume an interrupted file where it stopped. It owns nothing else: the filler
//! decides what to fetch, verifies SHA-256, writes and renames files.
//!
//! # Endpoint and credentials
//! The plan names only the bucket and key prefix; where the bucket lives and how to sign for it
//! are the appliance's own configuration ([`S3Config`]), never in the plan:
//! - `endpoint`: the S3-compatible server's base URL, `https://host[:port]` (or `http://` when
//!   `allow_http` is set, e.g. a server on the same rack or the test server on loopback). Requests
//!   are path-style (`{endpoint}/{bucket}/{key}`), which every S3-compatible server understands,
//!   so the bucket name never has to be a DNS label under the endpoint.
//! - `region`: the SigV4 signing region (`us-east-1` for most non-AWS servers).
//! - `access_key_id` / `secret_access_key`: a static key pair, used to sign every request with
//!   AWS Signature Version 4. Both empty means anonymous, unsigned requests (a public bucket);
//!   one without the other is a configuration error. Nothing is read from the environment or an
//!   instance-metadata service: the configuration is the only source of credentials.
//!
//! One `object_store` client per bucket is built on first use and cached; configuration errors
//! surface then, as [`S3Error::Config`] naming the field.
//!
//! # Failure behaviour
//! Transient failures (connection errors, 5xx, throttling) are retried a few times with backoff
//! inside `object_store` ([`MAX_RETRIES`], [`RETRY_TIMEOUT`]), then reported so the filler moves
//! on to its next source. There is no whole-request timeout (a large file at a limited fill rate
//! takes as long as it takes); the filler applies its own idle timeout to the returned stream.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};

/// How many times one request is retried after a transient failure.
pub const MAX_RETRIES: usize = 3;
/// Longest time spent retrying one request before giving up.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a TCP (and TLS) connection to the endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest object key accepted (S3's own limit, in bytes).
pub const MAX_KEY_LEN: usize = 1024;

/// Where the S3-compatible origin is and how to sign for it (the appliance's configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Base URL, `https://host[:port]` (or `http://...` with `allow_http`), no bucket in it.
    pub endpoint: String,
    /// SigV4 signing region, e.g. `us-east-1`.
    pub region: String,
    /// Access key id; empty together with `secret_access_key` for anonymous requests.
    pub access_key_id: String,
    /// Secret access key; never printed (see the `Debug` impl).
    pub secret_access_key: String,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Why reading from the S3 origin failed. Every variant that concerns an object names its bucket
/// and key; configuration errors name the field.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A field of [`S3Config`] is unusable.
    #[error("S3 origin config `{field}`: {reason}")]
    Config {
        /// The field's name (`endpoint`, `region`, `access_key_id`, `secret_access_key`,
        /// `allow_http`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The bucket name is not a valid S3 bucket name.
    #[error("S3 bucket name {bucket:?} is invalid: {reason}")]
    InvalidBucket {
        /// The bucket name as given.
        bucket: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key is not a valid object key.
    #[error("S3 object key {key:?} in bucket {bucket:?} is invalid: {reason}")]
    InvalidKey {
        /// The bucket.
        bucket: String,
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered 404: no such key (or no such bucket).
    #[error("S3 object s3://{bucket}/{key} not found (no such key or no such bucket)")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// The server refused the credentials or the access (HTTP 401 or 403).
    #[error(
        "S3 access to s3://{bucket}/{key} denied (check the origin's access_key_id, \
         secret_access_key and region): {source}"
    )]
    Denied {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The server's answer.
        #[source]
        source: object_store::Error,
    },
    /// The requested offset lies past the end of the object.
    #[error("S3 object s3://{bucket}/{key} is {size} bytes: offset {offset} is past its end")]
    OffsetPastEnd {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The offset asked for.
        offset: u64,
        /// The object's size.
        size: u64,
    },
    /// Any other failure: connection, server error after retries, a body cut short.
    #[error("S3 request for s3://{bucket}/{key} failed: {source}")]
    Request {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
}

impl S3Error {
    fn from_store(bucket: &str, key: &str, source: object_store::Error) -> Self {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        match source {
            object_store::Error::NotFound { .. } => S3Error::NotFound { bucket, key },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => S3Error::Denied {
                bucket,
                key,
                source,
            },
            source => S3Error::Request {
                bucket,
                key,
                source,
            },
        }
    }
}

/// Reads objects from S3-compatible buckets; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct S3Origin {
    config: S3Config,
    /// One client per bucket, built on first use.
    clients: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

impl S3Origin {
    /// An origin reader for `config`. Nothing is checked or connected until the first request.
    pub fn new(config: S3Config) -> Self {
        S3Origin {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Bytes of `bucket/key` from `offset` to the end, as a stream of chunks.
    ///
    /// `offset` equal to the object's size gives an empty stream; past it,
    /// [`S3Error::OffsetPastEnd`]. A body cut short is first resumed by `object_store` itself
    /// (a ranged GET pinned to the same ETag, up to [`MAX_RETRIES`] times); if that fails, the
    /// error comes out of the stream as [`S3Error::Request`] and the caller stops reading.
    pub async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, S3Error>>, S3Error> {
        let client = self.client(bucket)?;
        let path = object_path(bucket, key)?;
        let options = GetOptions {
            // From 0, ask for the whole object: `bytes=0-` on an empty object is a 416.
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let result = match client.get_opts(&path, options).await {
            Ok(result) => result,
            Err(err) => {
                at_end_or_error(&client, bucket, key, &path, offset, err).await?;
                return Ok(stream::empty().boxed());
            }
        };
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        Ok(result
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| S3Error::from_store(&bucket, &key, e)))
            .boxed())
    }

    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>, S3Error> {
        check_bucket(bucket)?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(bucket) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(build_client(&self.config, bucket)?);
        clients.insert(bucket.to_owned(), Arc::clone(&client));
        Ok(client)
    }
}

/// Sorts out a failed GET: an offset at or past the end of the object gets a 416 from S3, so
/// the object's size tells "nothing left" (`Ok`: the answer is an empty stream) from "past the
/// end" and from a real failure (the original error).
async fn at_end_or_error(
    client: &AmazonS3,
    bucket: &str,
    key: &str,
    path: &Path,
    offset: u64,
    err: object_store::Error,
) -> Result<(), S3Error> {
    let err = S3Error::from_store(bucket, key, err);
    if offset == 0 || !matches!(err, S3Error::Request { .. }) {
        return Err(err);
    }
    match client.head(path).await {
        Ok(meta) if offset == meta.size => Ok(()),
        Ok(meta) if offset > meta.size => Err(S3Error::OffsetPastEnd {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            offset,
            size: meta.size,
        }),
        _ => Err(err),
    }
}

fn build_client(config: &S3Config, bucket: &str) -> Result<AmazonS3, S3Error> {
    check_config(config)?;
    let options = ClientOptions::new()
        .with_allow_http(config.allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout_disabled();
    let retry = RetryConfig {
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
        ..RetryConfig::default()
    };
    let mut builder = AmazonS3Builder::new()
        .with_endpoint(config.endpoint.trim_end_matches('/'))
        .with_region(&config.region)
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(config.allow_http)
        .with_client_options(options)
        .with_retry(retry);
    if config.access_key_id.is_empty() {
        builder = builder.with_skip_signature(true);
    } else {
        builder = builder
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key);
    }
    builder.build().map_err(|e| S3Error::Config {
        field: "endpoint",
        reason: format!("cannot build an S3 client for bucket {bucket:?}: {e}"),
    })
}

/// Checks what `object_store` would otherwise report vaguely or not at all.
fn check_config(config: &S3Config) -> Result<(), S3Error> {
    let config_err = |field, reason: &str| S3Error::Config {
        field,
        reason: reason.to_owned(),
    };
    let endpoint = config.endpoint.as_str();
    let rest = if let Some(rest) = endpoint.strip_prefix("https://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if !config.allow_http {
            return Err(S3Error::Config {
                field: "endpoint",
                reason: format!("{endpoint:?} is plain HTTP and allow_http is off"),
            });
        }
        rest
    } else {
        return Err(S3Error::Config {
            field: "endpoint",
            reason: format!("{endpoint:?} must start with https:// (or http:// with allow_http)"),
        });
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(S3Error::Config {
            field: "endpoint",
            reason: format!("{endpoint:?} must be scheme://host[:port] with no path"),
        });
    }
    if config.region.is_empty() {
        return Err(config_err(
            "region",
            "is empty (use us-east-1 for most servers)",
        ));
    }
    match (
        config.access_key_id.is_empty(),
        config.secret_access_key.is_empty(),
    ) {
        (true, false) => Err(config_err(
            "access_key_id",
            "is empty while secret_access_key is set",
        )),
        (false, true) => Err(config_err(
            "secret_access_key",
            "is empty while access_key_id is set",
        )),
        _ => Ok(()),
    }
}

/// S3's bucket naming rules (3-63 characters of lowercase letters, digits, `.` and `-`, starting
/// and ending with a letter or digit, no `..`).
fn check_bucket(bucket: &str) -> Result<(), S3Error> {
    let invalid = |reason| {
        Err(S3Error::InvalidBucket {
            bucket: bucket.to_owned(),
            reason,
        })
    };
    if !(3..=63).contains(&bucket.len()) {
        return invalid("must be 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return invalid("may hold only lowercase letters, digits, '.' and '-'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bucket.as_bytes()[0]) || !alnum(bucket.as_bytes()[bucket.len() - 1]) {
        return invalid("must start and end with a letter or digit");
    }
    if bucket.contains("..") {
        return invalid("must not contain \"..\"");
    }
    Ok(())
}

fn object_path(bucket: &str, key: &str) -> Result<Path, S3Error> {
    let invalid = |reason: String| S3Error::InvalidKey {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("is empty".to_owned()));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(invalid("starts or ends with '/'".to_owned()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(format!("is longer than {MAX_KEY_LEN} bytes")));
    }
    Path::parse(key).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        S3Config {
            endpoint: "https://s3.example.invalid".to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "secret".to_owned(),
            allow_http: false,
        }
    }

    fn config_field(config: S3Config) -> Option<&'static str> {
        match check_config(&config) {
            Ok(()) => None,
            Err(S3Error::Config { field, .. }) => Some(field),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn config_checks_name_the_field() {
        let cases: Vec<(S3Config, Option<&str>)> = vec![
            (config(), None),
            (
                S3Config {
                    endpoint: "http://127.0.0.1:9000".into(),
                    allow_http: true,
                    ..config()
                },
                None,
            ),
            (
                S3Config {
                    endpoint: "http://127.0.0.1:9000".into(),
                    ..config()
                },
                Some("endpoint"),
            ),
            (
                S3Config {
                    endpoint: "s3.example.invalid".into(),
                    ..config()
                },
                Some("endpoint"),
            ),
            (
                S3Config {
                    endpoint: "https://host/bucket".into(),
                    ..config()
                },
                Some("endpoint"),
            ),
            (
                S3Config {
                    region: String::new(),
                    ..config()
                },
                Some("region"),
            ),
            (
                S3Config {
                    access_key_id: String::new(),
                    ..config()
                },
                Some("access_key_id"),
            ),
            (
                S3Config {
                    secret_access_key: String::new(),
                    ..config()
                },
                Some("secret_access_key"),
            ),
            (
                S3Config {
                    access_key_id: String::new(),
                    secret_access_key: String::new(),
                    ..config()
                },
                None,
            ),
        ];
        for (config, want) in cases {
            assert_eq!(config_field(config.clone()), want, "{config:?}");
        }
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "outpost-origin", "my.bucket.1", &"a".repeat(63)] {
            check_bucket(ok).unwrap();
        }
        for bad in [
            "ab",
            "Upper",
            "under_score",
            "-dash",
            "dot.",
            "a..b",
            &"a".repeat(64),
            "",
        ] {
            let err = check_bucket(bad).unwrap_err();
            assert!(
                matches!(&err, S3Error::InvalidBucket { bucket, .. } if bucket == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn keys_are_checked_and_named() {
        assert_eq!(
            object_path("b", "prefix/title/v1/seg-1.m4s")
                .unwrap()
                .as_ref(),
            "prefix/title/v1/seg-1.m4s"
        );
        for bad in [
            "",
            "a//b",
            "/lead",
            "trail/",
            "a/../b",
            &"k".repeat(MAX_KEY_LEN + 1),
        ] {
            let err = object_path("bucket", bad).unwrap_err();
            assert!(
                matches!(&err, S3Error::InvalidKey { bucket, key, .. } if bucket == "bucket" && key == bad),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("bucket"), "{err}");
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let config = S3Config {
            secret_access_key: "s3cr3t-never-shown".to_owned(),
            ..config()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        // Nor once a client (holding the credentials) is built and cached.
        let origin = S3Origin::new(config);
        origin.client("outpost-origin").unwrap();
        let shown = format!("{origin:?}");
        assert!(shown.contains("outpost-origin"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
