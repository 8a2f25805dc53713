//! `--log-format json` and the `log_format = "json"` config key: both services write one JSON
//! object per line to stderr (what the journal and log shippers take), and the text format
//! carries no colour codes when stderr is not a terminal. The real binary, real sockets; every
//! stderr line is parsed.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::cli::{bin, http, spawn_listening};

/// Every line of `path` parsed as a JSON object with `timestamp`, `level` and `fields`.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{text}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for v in &lines {
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["fields"].is_object(),
            "{v}"
        );
    }
    lines
}

fn has_message(lines: &[serde_json::Value], needle: &str) -> bool {
    lines.iter().any(|v| {
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle))
    })
}

#[test]
fn control_plane_logs_json_from_the_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nlog_format = \"json\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut cp = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--config"])
            .arg(&config)
            .env_remove("OUTPOST_LOG_FORMAT")
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    // Served once: the SIGTERM handler is in place.
    assert_eq!(http(&cp.addr, "GET", "/healthz", &[], "").0, 200);
    assert!(cp.terminate().success());
    let lines = json_lines(&log);
    assert!(has_message(&lines, "control plane listening"), "{lines:?}");
}

#[test]
fn appliance_logs_json_with_the_flag_and_a_bad_key_value_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, cache) = (dir.path().join("keys"), dir.path().join("cache"));
    let out = Command::new(bin())
        .args(["keys", "generate", "--kid", "k1", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::create_dir(&cache).unwrap();
    let log = dir.path().join("stderr.log");
    let mut appliance = spawn_listening(
        Command::new(bin())
            .args(["appliance", "--log-format", "json", "--cluster", "akl"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--public-keys")
            .arg(&keys)
            .arg("--cache-dir")
            .arg(&cache)
            .env_remove("OUTPOST_LOG_FORMAT")
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    assert_eq!(http(appliance.admin(), "GET", "/healthz", &[], "").0, 200);
    assert!(appliance.terminate().success());
    let lines = json_lines(&log);
    assert!(has_message(&lines, "grant public keys loaded"), "{lines:?}");

    // The text format, stderr a file: no colour escape codes.
    let config = dir.path().join("a.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = \"akl\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_keys = {keys:?}\ncache_dirs = [{cache:?}]\nlog_format = \"text\"\n"
        ),
    )
    .unwrap();
    let text_log = dir.path().join("text.log");
    let mut appliance = spawn_listening(
        Command::new(bin())
            .args(["appliance", "--config"])
            .arg(&config)
            .env_remove("OUTPOST_LOG_FORMAT")
            .stderr(std::fs::File::create(&text_log).unwrap()),
    );
    assert_eq!(http(appliance.admin(), "GET", "/healthz", &[], "").0, 200);
    assert!(appliance.terminate().success());
    let text = std::fs::read_to_string(&text_log).unwrap();
    assert!(text.contains("grant public keys loaded"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text}"
    );

    // A value other than text/json is an error naming the key.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("log_format = \"text\"", "log_format = \"xml\""),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["appliance", "--config"])
        .arg(&config)
        .env_remove("OUTPOST_LOG_FORMAT")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log_format"), "{err}");
}
