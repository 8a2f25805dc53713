//! The S3 origin client against a real S3-compatible HTTP server on loopback (moto's server
//! mode, started by `scripts/services start`, which exports `OUTPOST_TEST_S3_ENDPOINT` and
//! `OUTPOST_TEST_MOTO_SERVER`). Objects are the H.264 fixture ladder, uploaded under the keys
//! `FillSource::S3::object_key` gives; each test uses its own bucket so runs never collide.
//!
//! The shared server accepts any credentials, so the credential test starts its own moto with
//! authentication on (an IAM user and key made through moto's IAM API) and checks that the right
//! key reads and wrong ones are refused.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use appliance::fill::s3::{S3Config, S3Error, S3Origin};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
use protocol::fill::{FillSource, SourceTier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGION: &str = "us-east-1";

fn endpoint() -> String {
    std::env::var("OUTPOST_TEST_S3_ENDPOINT")
        .expect("OUTPOST_TEST_S3_ENDPOINT is unset: run ./scripts/test (it starts the S3 server)")
}

fn config(endpoint: &str, access_key_id: &str, secret_access_key: &str) -> S3Config {
    S3Config {
        endpoint: endpoint.to_owned(),
        region: REGION.to_owned(),
        access_key_id: access_key_id.to_owned(),
        secret_access_key: secret_access_key.to_owned(),
        allow_http: true,
    }
}

/// A bucket name no other test or earlier run uses.
fn unique_bucket(what: &str) -> String {
    format!(
        "outpost-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// One plain HTTP/1.1 request to the server; returns the status and the body.
async fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let host = endpoint.strip_prefix("http://").expect("http endpoint");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to the S3 server");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// CreateBucket (path style, unsigned: the shared test server does not check signatures).
async fn create_bucket(endpoint: &str, bucket: &str) {
    let (status, body) = http(endpoint, "PUT", &format!("/{bucket}"), &[], "").await;
    assert_eq!(status, 200, "CreateBucket {bucket}: {body}");
}

async fn put(endpoint: &str, key_id: &str, secret: &str, bucket: &str, key: &str, bytes: Bytes) {
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region(REGION)
        .with_bucket_name(bucket)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    store
        .put(&StorePath::parse(key).unwrap(), PutPayload::from(bytes))
        .await
        .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e}"));
}

async fn read_all(
    origin: &S3Origin,
    bucket: &str,
    key: &str,
    offset: u64,
) -> Result<Vec<u8>, S3Error> {
    let stream = origin.get_from(bucket, key, offset).await?;
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    Ok(chunks.concat())
}

fn fixture_files() -> Vec<(String, Bytes)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/media/ladder-h264");
    let mut files: Vec<(String, Bytes)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, Bytes::from(std::fs::read(&path).unwrap()))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the H.264 ladder in {}",
        dir.display()
    );
    files
}

#[tokio::test]
#[ignore = "needs the S3 test server: run ./scripts/test"]
async fn get_from_streams_the_object_from_any_offset() {
    let endpoint = endpoint();
    let bucket = unique_bucket("range");
    create_bucket(&endpoint, &bucket).await;
    let source = FillSource::S3 {
        tier: SourceTier::Origin,
        bucket: bucket.clone(),
        prefix: "packaged/v1".to_owned(),
    };
    let mut files = fixture_files();
    files.push(("empty.bin".to_owned(), Bytes::new()));
    for (name, bytes) in &files {
        let key = source.object_key("title-1", name).unwrap();
        put(&endpoint, "test", "test", &bucket, &key, bytes.clone()).await;
    }

    let origin = S3Origin::new(config(&endpoint, "test", "test"));
    for (name, bytes) in &files {
        let key = source.object_key("title-1", name).unwrap();
        assert!(key.starts_with("packaged/v1/title-1/"), "{key}");
        let len = bytes.len() as u64;
        let mut offsets = vec![0, len / 2, len.saturating_sub(1), len];
        offsets.dedup();
        for offset in offsets {
            let got = read_all(&origin, &bucket, &key, offset)
                .await
                .unwrap_or_else(|e| panic!("{key} from {offset}: {e}"));
            assert_eq!(
                got.len() as u64,
                len - offset,
                "{key} from {offset}: length"
            );
            assert!(
                got == bytes[offset as usize..],
                "{key} from {offset}: bytes differ"
            );
        }
        match read_all(&origin, &bucket, &key, len + 1).await {
            Err(S3Error::OffsetPastEnd { offset, size, .. }) => {
                assert_eq!((offset, size), (len + 1, len), "{key}");
            }
            other => panic!(
                "{key} from {}: expected OffsetPastEnd, got {other:?}",
                len + 1
            ),
        }
    }
}

#[tokio::test]
#[ignore = "needs the S3 test server: run ./scripts/test"]
async fn missing_keys_and_buckets_are_not_found_and_named() {
    let endpoint = endpoint();
    let bucket = unique_bucket("missing");
    create_bucket(&endpoint, &bucket).await;
    put(
        &endpoint,
        "test",
        "test",
        &bucket,
        "t/present.m4s",
        Bytes::from_static(b"x"),
    )
    .await;
    let origin = S3Origin::new(config(&endpoint, "test", "test"));

    for (bucket, key, offset) in [
        (bucket.as_str(), "t/absent.m4s", 0),
        (bucket.as_str(), "t/absent.m4s", 10),
        ("outpost-no-such-bucket-here", "t/present.m4s", 0),
    ] {
        let err = read_all(&origin, bucket, key, offset).await.unwrap_err();
        assert!(
            matches!(&err, S3Error::NotFound { bucket: b, key: k } if b == bucket && k == key),
            "s3://{bucket}/{key}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(bucket) && message.contains(key),
            "{message}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the S3 test server: run ./scripts/test"]
async fn bad_names_and_unreachable_endpoints_are_clear_errors() {
    let endpoint = endpoint();
    let origin = S3Origin::new(config(&endpoint, "test", "test"));
    let err = read_all(&origin, "Not_A_Bucket", "t/a.m4s", 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, S3Error::InvalidBucket { bucket, .. } if bucket == "Not_A_Bucket"),
        "{err:?}"
    );
    let err = read_all(&origin, "outpost-any", "t//a.m4s", 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, S3Error::InvalidKey { key, .. } if key == "t//a.m4s"),
        "{err:?}"
    );

    // A plain-HTTP endpoint without allow_http is refused before any request.
    let origin = S3Origin::new(S3Config {
        allow_http: false,
        ..config(&endpoint, "test", "test")
    });
    let err = read_all(&origin, "outpost-any", "t/a.m4s", 0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            S3Error::Config {
                field: "endpoint",
                ..
            }
        ),
        "{err:?}"
    );

    // Nothing listens on a port just freed: a request error naming the object, after retries.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let origin = S3Origin::new(config(&format!("http://{closed}"), "test", "test"));
    let err = read_all(&origin, "outpost-any", "t/a.m4s", 0)
        .await
        .unwrap_err();
    assert!(matches!(&err, S3Error::Request { .. }), "{err:?}");
    assert!(
        err.to_string().contains("s3://outpost-any/t/a.m4s"),
        "{err}"
    );
}

/// A private moto server on a free loopback port, killed when dropped.
struct PrivateMoto {
    child: Child,
    endpoint: String,
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto; with `Some(n)`, authentication is enforced after the first `n` actions.
async fn start_private_moto(free_actions: Option<u32>) -> PrivateMoto {
    let binary = std::env::var("OUTPOST_TEST_MOTO_SERVER").expect(
        "OUTPOST_TEST_MOTO_SERVER is unset: run ./scripts/test (scripts/services exports it)",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(&binary);
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(free_actions) = free_actions {
        command.env("INITIAL_NO_AUTH_ACTION_COUNT", free_actions.to_string());
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let mut moto = PrivateMoto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    // Wait (bounded) until it accepts connections.
    for _ in 0..300 {
        if let Some(status) = moto.child.try_wait().unwrap() {
            panic!("{binary} exited at start-up: {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{binary} did not listen on port {port}");
}

/// One IAM query-API action, sent before authentication is enforced. moto routes it to IAM by
/// the credential scope in the (unchecked) Authorization header.
async fn iam(endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut body = String::from("Version=2010-05-08");
    for (name, value) in params {
        body.push_str(&format!("&{name}={}", form_encode(value)));
    }
    let auth = "AWS4-HMAC-SHA256 Credential=AKIAUNCHECKED/20260101/us-east-1/iam/aws4_request, \
                SignedHeaders=host, Signature=00";
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", auth),
    ];
    let (status, body) = http(endpoint, "POST", "/", &headers, &body).await;
    assert_eq!(status, 200, "IAM {params:?}: {body}");
    body
}

fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_field(xml: &str, tag: &str) -> String {
    let start = xml
        .find(&format!("<{tag}>"))
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + tag.len()
        + 2;
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_owned()
}

#[tokio::test]
#[ignore = "needs the S3 test server: run ./scripts/test"]
async fn wrong_credentials_are_refused_with_a_clear_error() {
    // Four free actions: CreateUser, CreateAccessKey, PutUserPolicy, CreateBucket. Every
    // request after them must be signed with a key moto's IAM knows.
    let moto = start_private_moto(Some(4)).await;
    let endpoint = moto.endpoint.clone();
    iam(
        &endpoint,
        &[("Action", "CreateUser"), ("UserName", "filler")],
    )
    .await;
    let created = iam(
        &endpoint,
        &[("Action", "CreateAccessKey"), ("UserName", "filler")],
    )
    .await;
    let (key_id, secret) = (
        xml_field(&created, "AccessKeyId"),
        xml_field(&created, "SecretAccessKey"),
    );
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    iam(
        &endpoint,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "filler"),
            ("PolicyName", "s3-all"),
            ("PolicyDocument", policy),
        ],
    )
    .await;
    let bucket = "outpost-auth";
    create_bucket(&endpoint, bucket).await;
    let bytes = fixture_files().remove(0).1;
    put(
        &endpoint,
        &key_id,
        &secret,
        bucket,
        "t/init.mp4",
        bytes.clone(),
    )
    .await;

    // The right key reads (so the refusals below are about the credentials, not the server).
    let good = Arc::new(S3Origin::new(config(&endpoint, &key_id, &secret)));
    assert!(read_all(&good, bucket, "t/init.mp4", 0).await.unwrap() == bytes[..]);
    assert!(read_all(&good, bucket, "t/init.mp4", 7).await.unwrap() == bytes[7..]);

    let wrong_secret = S3Origin::new(config(&endpoint, &key_id, "not-the-secret"));
    let unknown_key = S3Origin::new(config(&endpoint, "AKIAUNKNOWNKEY000000", &secret));
    let anonymous = S3Origin::new(config(&endpoint, "", ""));
    for (what, origin) in [
        ("wrong secret", wrong_secret),
        ("unknown key id", unknown_key),
        ("anonymous", anonymous),
    ] {
        let err = read_all(&origin, bucket, "t/init.mp4", 0)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, S3Error::Denied { bucket: b, key: k, .. } if b == bucket && k == "t/init.mp4"),
            "{what}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("s3://outpost-auth/t/init.mp4") && message.contains("access_key_id"),
            "{what}: {message}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the S3 test server: run ./scripts/test"]
async fn a_source_killed_mid_object_is_an_error_and_resumes_from_the_byte_reached() {
    // Larger than the loopback socket buffers, so killing the server cuts the body.
    const SIZE: usize = 32 << 20;
    let mut object = vec![0u8; SIZE];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in object.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let object = Bytes::from(object);
    let (bucket, key) = ("outpost-resume", "title-1/video-720p.mp4");

    let mut first = start_private_moto(None).await;
    create_bucket(&first.endpoint, bucket).await;
    put(&first.endpoint, "test", "test", bucket, key, object.clone()).await;
    let origin = S3Origin::new(config(&first.endpoint, "test", "test"));
    let mut stream = origin.get_from(bucket, key, 0).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 1 << 20 {
        let chunk = stream.next().await.expect("stream ended early").unwrap();
        received.extend_from_slice(&chunk);
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let err = loop {
        match stream.next().await {
            Some(Ok(chunk)) => received.extend_from_slice(&chunk),
            Some(Err(err)) => break err,
            None => panic!(
                "the stream ended cleanly after {} of {SIZE} bytes",
                received.len()
            ),
        }
    };
    eprintln!("cut after {} of {SIZE} bytes: {err}", received.len());
    assert!(
        received.len() < SIZE,
        "the whole object arrived before the kill"
    );
    assert!(
        matches!(&err, S3Error::Request { bucket: b, key: k, .. } if b == bucket && k == key),
        "{err:?}"
    );
    assert!(
        object.starts_with(&received),
        "the bytes before the cut are the object's"
    );

    // A new source holding the same object: continue from the byte reached.
    let second = start_private_moto(None).await;
    create_bucket(&second.endpoint, bucket).await;
    put(
        &second.endpoint,
        "test",
        "test",
        bucket,
        key,
        object.clone(),
    )
    .await;
    let origin = S3Origin::new(config(&second.endpoint, "test", "test"));
    let rest = read_all(&origin, bucket, key, received.len() as u64)
        .await
        .unwrap();
    received.extend_from_slice(&rest);
    assert!(
        received == object,
        "resumed object differs ({} bytes)",
        received.len()
    );
}
