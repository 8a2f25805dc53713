//! The control plane's OpenAPI document holds: schemathesis 4 (installed by `scripts/install-deps`
//! into `target/schemathesis-venv`) generates requests from `/openapi.json` and sends them to the
//! real `outpost control-plane`, with the test policy, titles and content keys loaded, two
//! appliances reporting and two live sessions, and every credential the document declares
//! (playback API key, session token as a bearer and as `?token=`, appliance credential, admin
//! token) supplied through `schemathesis.toml`, so the authenticated paths are exercised, not just
//! their 401s.
//!
//! Every check of schemathesis runs (`--checks all`): no server errors, no undocumented status
//! code, response schemas, content types and documented headers conform, schema-violating
//! requests are refused, required headers are enforced, unsupported methods answer 405, and
//! schema-valid requests are accepted, except where a schema cannot say what the service checks
//! (see [`NOT_EXPRESSIBLE`]: there `positive_data_acceptance` alone is off, for those operations
//! alone).
//!
//! Two runs: first every operation but the admin imports, then the admin imports (a generated
//! policy that imports may replace the API key or the appliances' credentials the first run
//! authenticates with). A failure is the test's panic, with schemathesis's report.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::{bin, cp_data, http, outpost, spawn_listening};

const API_KEY: &str = "playback-secret-0123456789";
const ADMIN: &str = "admin-token-for-the-contract-test";

/// Operations where a schema-valid request may still be refused with 400, and why: the rule is
/// not one JSON Schema can state. `positive_data_acceptance` is off for these; every other check
/// (negative data rejected, status codes, response schemas...) still runs on them.
const NOT_EXPRESSIBLE: [(&str, &str); 5] = [
    (
        "POST /v1/appliances/{id}/heartbeat",
        "held[].title must be listed in titles; prefixes are CIDR prefixes",
    ),
    (
        "POST /v1/appliances/{id}/register",
        "prefixes are CIDR prefixes (IPv4 or IPv6, host bits clear)",
    ),
    (
        "PUT /v1/admin/policy",
        "cross-references: accounts name plans, windows titles, appliances clusters...",
    ),
    (
        "PUT /v1/admin/titles/{id}",
        "a catalog entry's files, renditions and manifests must agree with each other",
    ),
    (
        "PUT /v1/admin/content-keys",
        "the title must exist and be encrypted with these key ids",
    ),
];

/// The schemathesis CLI: `OUTPOST_SCHEMATHESIS`, else the virtualenv `scripts/install-deps` makes.
fn schemathesis() -> PathBuf {
    let st = std::env::var_os("OUTPOST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::support::repo().join("target"))
                .join("schemathesis-venv/bin/st")
        });
    assert!(
        st.exists(),
        "{} is missing: ./scripts/install-deps installs schemathesis",
        st.display()
    );
    st
}

/// A session started with the playback API key: (id, token).
fn start_session(addr: &str, account: &str) -> (String, String) {
    let (s, b) = http(
        addr,
        "POST",
        "/v1/playback/sessions",
        &[
            ("Authorization", &format!("Bearer {API_KEY}")),
            ("Content-Type", "application/json"),
        ],
        &format!(
            r#"{{"account_id":"{account}","device_class":"browser","title":"enc-title","client_ip":"127.0.0.1"}}"#
        ),
    );
    assert_eq!(s, 201, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    (
        v["session_id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// `schemathesis.toml`: the credentials by security scheme, and ids that exist.
fn config(live: &(String, String), to_end: &(String, String)) -> String {
    let mut c = format!(
        r#"# Written by tests/e2e/openapi_contract.rs.
[checks]
enabled = true

[auth.openapi.playback_api_key]
bearer = "{API_KEY}"
[auth.openapi.session_token]
bearer = "{live_token}"
[auth.openapi.session_token_query]
api_key = "{live_token}"
[auth.openapi.appliance_credential]
bearer = "akl-1-credential-0123456789"
[auth.openapi.admin_token]
bearer = "{ADMIN}"

# Ids that exist, mixed with generated ones (unknown ids: the 404s are part of the contract).
[dictionaries.appliance]
values = ["akl-1"]
[dictionaries.title]
values = ["enc-title", "clear-title"]
[dictionaries.live_session]
values = ["{live_id}"]
[dictionaries.session_to_end]
values = ["{end_id}"]

# The appliance that holds the credential above, named by the header and the path alike.
[[operations]]
include-path-regex = "^/v1/appliances/"
parameters = {{ "path.id" = {{ dictionary = "appliance", probability = 0.85 }}, "header.Outpost-Appliance" = {{ dictionary = "appliance", probability = 0.85 }}, "path.title" = {{ dictionary = "title", probability = 0.85 }} }}

# A live session for everything but its end...
[[operations]]
include-path-regex = "^/v1/(playback/sessions|steering)/\\{{id\\}}"
exclude-method = "DELETE"
parameters = {{ "path.id" = {{ dictionary = "live_session", probability = 0.85 }} }}

# ...and another one to end, with its own token. A session ends once: every later end of it is
# 410 `session_ended`, the answer to a schema-valid request once the state has changed.
[[operations]]
include-name = "DELETE /v1/playback/sessions/{{id}}"
parameters = {{ "path.id" = {{ dictionary = "session_to_end", probability = 0.85 }} }}
headers = {{ Authorization = "Bearer {end_token}" }}
checks = {{ positive_data_acceptance = {{ expected-statuses = ["2xx", "401", "403", "404", "410"] }} }}
"#,
        live_id = live.0,
        live_token = live.1,
        end_id = to_end.0,
        end_token = to_end.1,
    );
    for (name, why) in NOT_EXPRESSIBLE {
        c.push_str(&format!(
            "\n# Schema-valid may still be invalid: {why}.\n[[operations]]\ninclude-name = \"{name}\"\nchecks = {{ positive_data_acceptance = {{ enabled = false }} }}\n"
        ));
    }
    c
}

/// Runs schemathesis; panics with its report unless it passes.
fn run(dir: &std::path::Path, url: &str, what: &str, filter: &[&str]) -> Duration {
    let t0 = Instant::now();
    let config = dir.join("schemathesis.toml");
    let out = Command::new(schemathesis())
        .current_dir(dir)
        .arg("--config-file")
        .arg(&config)
        // Every check: `checks.enabled = true` in the config (the CLI's `--checks all` would
        // override the per-operation settings above).
        .args(["run", url, "--max-examples", "40"])
        .args(["--workers", "2", "--request-timeout", "10", "--no-color"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(filter)
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems ({what}, exit {:?}):\n{report}\n{err}",
        out.status.code()
    );
    // A run that tested nothing passes too: insist it sent requests.
    assert!(
        report.contains("Tested:") && !report.contains("Tested: 0"),
        "{what}: schemathesis tested no operation:\n{report}"
    );
    t0.elapsed()
}

#[test]
#[ignore = "needs schemathesis (./scripts/test installs it)"]
fn schemathesis_finds_the_document_true() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cp");
    let data = data.to_str().unwrap();
    let files = [
        "policy.toml",
        "clear-title/catalog.json",
        "enc-title/catalog.json",
        "hd-only/catalog.json",
        "enc-title.keys.json",
    ]
    .map(|f| cp_data(f).to_str().unwrap().to_owned());
    let mut args = vec!["control-plane", "--data-dir", data, "import"];
    args.extend(files.iter().map(String::as_str));
    let out = outpost(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", data])
            .args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            // Sessions outlive the run: an expired lease would be a 410 of a schema-valid request.
            .args(["--lease-secs", "900"])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::null()),
    );
    let addr = server.addr.clone();
    for id in ["akl-1", "akl-2"] {
        let (s, b) = http(
            &addr,
            "POST",
            &format!("/v1/appliances/{id}/heartbeat"),
            &[
                (
                    "Authorization",
                    &format!("Bearer {id}-credential-0123456789"),
                ),
                ("Outpost-Appliance", id),
                ("Content-Type", "application/json"),
            ],
            r#"{"health":"ok","load":0.1,"titles":["clear-title","enc-title"]}"#,
        );
        assert_eq!(s, 200, "{b}");
    }
    let live = start_session(&addr, "acct-premium");
    let to_end = start_session(&addr, "acct-family");
    std::fs::write(tmp.path().join("schemathesis.toml"), config(&live, &to_end)).unwrap();

    let url = format!("http://{addr}/openapi.json");
    let a = run(
        tmp.path(),
        &url,
        "every operation but the admin imports",
        &["--exclude-method", "PUT"],
    );
    let b = run(
        tmp.path(),
        &url,
        "the admin imports",
        &["--include-method", "PUT"],
    );
    eprintln!(
        "schemathesis: {:.1} s without the admin imports, {:.1} s for them",
        a.as_secs_f64(),
        b.as_secs_f64()
    );
}
