//! `outpost appliance check` and `outpost control-plane check` end to end: the real binary
//! against real configuration files, directories, keys made with `outpost keys` and loopback
//! ports. Each case asserts the exit status and the line that names the problem.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::cli::{bin, text};
use crate::support::free_port;

/// A temporary appliance set-up: public keys from `outpost keys generate`, one cache directory,
/// and a config file written by each case. Readable by every user (the unwritable-drive case
/// runs the check as `nobody` when the tests run as root).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new(bin())
            .args(["keys", "generate", "--kid", "k1", "--out"])
            .arg(dir.path().join("private"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out).1);
        std::fs::create_dir(dir.path().join("public")).unwrap();
        std::fs::copy(
            dir.path().join("private/k1.pub.pem"),
            dir.path().join("public/k1.pub.pem"),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("public/k1.pub.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `appliance.toml`: loopback ports, this set-up's keys and cache, then `extra`.
    fn config(&self, extra: &str) -> PathBuf {
        let p = self.path("appliance.toml");
        std::fs::write(
            &p,
            format!(
                "cluster = \"akl\"\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\npublic_keys = {:?}\ncache_dirs = [{:?}]\n{extra}",
                free_port(),
                free_port(),
                self.path("public"),
                self.path("cache"),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

fn check(config: &Path) -> Output {
    Command::new(bin())
        .args(["appliance", "check", "--config"])
        .arg(config)
        .env_remove("OUTPOST_APPLIANCE_CREDENTIAL")
        .output()
        .unwrap()
}

/// The report's lines whose level is `level` and whose item starts with `item`.
fn lines<'a>(stdout: &'a str, level: &str, item: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| {
            let mut parts = l.splitn(2, char::is_whitespace);
            parts.next() == Some(level) && parts.next().unwrap_or("").trim_start().starts_with(item)
        })
        .collect()
}

/// Whether this process's effective uid is 0 (from /proc/self/status: real, effective, ...).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap()
}

#[test]
fn a_good_configuration_passes_with_one_line_per_item() {
    let s = Setup::new();
    let out = check(&s.config(""));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for item in [
        "config:",
        "io_uring:",
        "cachestat:",
        "kernel_tls:",
        "cache_dir ",
        "nofile:",
        "clock:",
        "public_keys:",
        "listen:",
        "admin_listen:",
        "control_plane:",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| (l.starts_with("ok ") || l.starts_with("warning "))
                    && l[7..].trim_start().starts_with(item)),
            "no ok/warning line for {item}:\n{stdout}"
        );
    }
    assert!(lines(&stdout, "error", "").is_empty(), "{stdout}");
    assert!(
        lines(&stdout, "ok", "public_keys:")[0].contains("k1"),
        "{stdout}"
    );
    assert!(stdout.contains("0 error(s)"), "{stdout}");
}

#[test]
fn a_missing_keys_directory_is_an_error_naming_it() {
    let s = Setup::new();
    std::fs::remove_dir_all(s.path("public")).unwrap();
    let out = check(&s.config(""));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors = lines(&stdout, "error", "public_keys:");
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].contains(&s.path("public").display().to_string()) && errors[0].contains("fix:"),
        "{stdout}"
    );
}

#[test]
fn an_unwritable_cache_drive_is_an_error_naming_it() {
    let s = Setup::new();
    std::fs::set_permissions(s.path("cache"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let config = s.config("");
    // Root writes anywhere: then the check runs as `nobody`, as the service user would.
    let out = if is_root() {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin())
            .args(["appliance", "check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    } else {
        check(&config)
    };
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let errors = lines(&stdout, "error", "cache_dir ");
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].contains(&s.path("cache").display().to_string())
            && errors[0].contains("not writable")
            && errors[0].contains("chown"),
        "{stdout}"
    );
    assert!(
        lines(&stdout, "error", "public_keys:").is_empty(),
        "{stdout}"
    );
}

#[test]
fn a_missing_cache_drive_is_an_error_with_the_fix() {
    let s = Setup::new();
    std::fs::remove_dir(s.path("cache")).unwrap();
    let out = check(&s.config(""));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors = lines(&stdout, "error", "cache_dir ");
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(errors[0].contains("mkdir -p"), "{stdout}");
}

#[test]
fn an_unreachable_control_plane_is_an_error() {
    let s = Setup::new();
    let port = free_port();
    let out = check(&s.config(&format!(
        "control_plane = \"http://127.0.0.1:{port}\"\ncredential = \"s3cret\"\n"
    )));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors = lines(&stdout, "error", "control_plane:");
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].contains(&format!("127.0.0.1:{port}")) && errors[0].contains("unreachable"),
        "{stdout}"
    );
}

#[test]
fn a_misspelt_config_key_is_named() {
    let s = Setup::new();
    let out = check(&s.config("max_conections = 10\n"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors = lines(&stdout, "error", "config:");
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(errors[0].contains("max_conections"), "{stdout}");
}

#[test]
fn control_plane_check_passes_on_a_fresh_data_dir_and_names_an_unreachable_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp");
    let out = Command::new(bin())
        .args(["control-plane", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["check", "--data-dir"])
        .arg(&data)
        .env_remove("OUTPOST_MASTER_KEY")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(lines(&stdout, "ok", "database:").len(), 1, "{stdout}");
    assert!(!data.exists(), "check must not create the data directory");

    let port = free_port();
    let out = Command::new(bin())
        .args(["control-plane", "check", "--data-dir"])
        .arg(&data)
        .arg("--database")
        .arg(format!("postgres://outpost@127.0.0.1:{port}/outpost"))
        .env_remove("OUTPOST_MASTER_KEY")
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors = lines(&stdout, "error", "database:");
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(errors[0].contains(&format!("127.0.0.1:{port}")), "{stdout}");
}

#[test]
fn bgp_peers_are_probed_and_a_bgp_setting_missing_is_named() {
    let s = Setup::new();
    // One router that accepts TCP (a listener this test holds), one that does not (a port
    // that was free a moment ago), and one passive peer that is only reported.
    let router = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = router.local_addr().unwrap().port();
    let down = free_port();
    let out = check(&s.config(&format!(
        "bgp_listen = \"127.0.0.1:{}\"\nbgp_asn = 64512\nbgp_router_id = \"192.0.2.10\"\n\
         bgp_peers = [\"127.0.0.1:{up},64500\", \"127.0.0.2:{down},64501\", \"127.0.0.3,64502,passive\"]\n",
        free_port()
    )));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(lines(&stdout, "ok", "bgp_listen:").len(), 1, "{stdout}");
    let ok = lines(&stdout, "ok", "bgp_peers 127.0.0.1:");
    assert!(ok.len() == 1 && ok[0].contains("AS 64500"), "{stdout}");
    let warned = lines(&stdout, "warning", "bgp_peers 127.0.0.2:");
    assert!(
        warned.len() == 1 && warned[0].contains(&format!("127.0.0.2:{down}")),
        "{stdout}"
    );
    assert!(stdout.contains("neighbour"), "the fix is printed: {stdout}");
    let passive = lines(&stdout, "ok", "bgp_peers 127.0.0.3:");
    assert!(
        passive.len() == 1 && passive[0].contains("passive"),
        "{stdout}"
    );

    // A peer without the appliance's own AS number is a configuration error naming the key.
    let out =
        check(&s.config("bgp_router_id = \"192.0.2.10\"\nbgp_peers = [\"127.0.0.1,64500\"]\n"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors = lines(&stdout, "error", "config:");
    assert!(
        errors.len() == 1 && errors[0].contains("bgp_asn"),
        "{stdout}"
    );
}
