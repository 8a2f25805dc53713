//! The Debian package and what ships in it (packaging/): the default configs are accepted by the
//! binary and document every key; the alerting rules and the dashboard use only metric names a
//! running appliance and control plane expose; and (with cargo-deb, promtool and
//! systemd-analyze) the `.deb` holds the binary, units, conffiles and monitoring files, its units
//! pass `systemd-analyze verify` and score "OK" in `systemd-analyze security`, and promtool
//! accepts the rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::cli::{bin, cp_data as data, http, outpost, spawn_listening, Listening};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn packaging(p: &str) -> PathBuf {
    root().join("packaging").join(p)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs a tool to completion, panicking with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A shipped config with every documented `#key = value` line uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `#key = ...` keys documented in `text` at the top level (`None`: with the `[table]`
/// names) or in the named table.
fn documented_keys(text: &str, table: Option<&str>) -> BTreeSet<String> {
    let mut current: Option<String> = None;
    let mut keys = BTreeSet::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            // A table is a key of the top level.
            if table.is_none() {
                keys.insert(t.to_owned());
            }
            current = Some(t.to_owned());
        } else if let Some((k, _)) = l.strip_prefix('#').and_then(|r| r.split_once(" = ")) {
            if current.as_deref() == table {
                keys.insert(k.to_owned());
            }
        }
    }
    keys
}

/// The keys the binary accepts, from its own "unknown field ..., expected one of ..." error.
fn accepted_keys(subcommand: &str, config: &str, extra: &[&str]) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bogus.toml");
    std::fs::write(&f, config).unwrap();
    let mut args = vec![subcommand, "--config", f.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = outpost(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let list = err
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("no list of accepted keys in: {err}"))
        .1;
    list.split(", ")
        .map(|k| k.trim().trim_matches('`').to_owned())
        .collect()
}

#[test]
fn shipped_configs_document_every_key_and_are_accepted() {
    let appliance = read(&packaging("etc/appliance.toml"));
    let cp = read(&packaging("etc/control-plane.toml"));

    // Every key the binary accepts is documented, and nothing else.
    assert_eq!(
        documented_keys(&appliance, None),
        accepted_keys("appliance", "outpost_bogus_key = 1\n", &[])
    );
    assert_eq!(
        documented_keys(&cp, None),
        accepted_keys("control-plane", "outpost_bogus_key = 1\n", &[])
    );
    assert_eq!(
        documented_keys(&cp, Some("fill")),
        accepted_keys("control-plane", "[fill]\noutpost_bogus_key = 1\n", &[])
    );

    // Every documented example value parses: with all of them uncommented the binary gets past
    // the TOML (it then stops on a setting that needs this host: no keys, a placeholder master
    // key). The example hosts are replaced by a closed loopback port.
    let dir = tempfile::tempdir().unwrap();
    let (keys, cache, cp_dir) = (
        dir.path().join("keys"),
        dir.path().join("cache"),
        dir.path().join("cp"),
    );
    for d in [&keys, &cache] {
        std::fs::create_dir(d).unwrap();
    }
    let loopback = |t: &str| {
        t.replace("cp.example.net:8700", "127.0.0.1:9")
            .replace("s3.example.net", "127.0.0.1:9")
    };
    let full_a = dir.path().join("appliance-full.toml");
    std::fs::write(&full_a, loopback(&uncommented(&appliance))).unwrap();
    let full_cp = dir.path().join("control-plane-full.toml");
    std::fs::write(&full_cp, loopback(&uncommented(&cp))).unwrap();
    for (args, expect) in [
        (
            vec![
                "appliance",
                "--config",
                full_a.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--public-keys",
                keys.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            "no public keys",
        ),
        (
            vec![
                "control-plane",
                "--config",
                full_cp.to_str().unwrap(),
                "--data-dir",
                cp_dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            "config key master_key",
        ),
    ] {
        let out = outpost(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(!err.contains("TOML parse error"), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }

    // As shipped (everything at its default), each starts once given what only the site knows.
    let k = run_ok(
        Command::new(bin())
            .args(["keys", "generate", "--kid", "k1", "--out"])
            .arg(&keys),
    );
    drop(k);
    std::fs::remove_file(keys.join("k1.key.pem")).unwrap();
    let mut a = spawn_listening(
        Command::new(bin())
            .arg("appliance")
            .arg("--config")
            .arg(packaging("etc/appliance.toml"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--cluster", "test", "--public-keys"])
            .arg(&keys)
            .arg("--cache-dir")
            .arg(&cache)
            .stderr(Stdio::inherit()),
    );
    let (s, _) = http(a.admin(), "GET", "/healthz", &[], "");
    assert_eq!(s, 200);
    assert!(a.terminate().success());
    let mut c = spawn_listening(
        Command::new(bin())
            .arg("control-plane")
            .arg("--config")
            .arg(packaging("etc/control-plane.toml"))
            .arg("--data-dir")
            .arg(&cp_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("OUTPOST_MASTER_KEY")
            .env_remove("OUTPOST_ADMIN_TOKEN")
            .stderr(Stdio::inherit()),
    );
    let (s, _) = http(&c.addr, "GET", "/healthz", &[], "");
    assert_eq!(s, 200);
    assert!(c.terminate().success());
}

/// Every `outpost_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("outpost_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // A word that merely contains `outpost_`, or the prefix alone (`outpost_*` in prose), is
        // not a metric.
        let word_start = i == 0 || {
            let b = rest.as_bytes()[i - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        if word_start && !tail[..end].ends_with('_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The metric families and series names an exposition declares or holds: `# HELP`/`# TYPE`
/// names (a labelled family is declared before its first event) and sample names.
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in exposition.lines() {
        let name = match l
            .strip_prefix("# HELP ")
            .or_else(|| l.strip_prefix("# TYPE "))
        {
            Some(r) => r.split_whitespace().next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        };
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            names.insert(n.to_owned());
            // A histogram's family declares its `_bucket`, `_sum` and `_count` series.
            if l.starts_with("# TYPE ") && l.ends_with(" histogram") {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{n}{s}"));
                }
            }
        }
    }
    names
}

/// A control plane with the test policy and an appliance (`akl-1`) running its fleet agent
/// against it, so the agent's metrics are exposed too.
fn fleet(dir: &Path) -> (Listening, Listening) {
    let d = dir.join("cp");
    let out = outpost(&[
        "control-plane",
        "--data-dir",
        d.to_str().unwrap(),
        "import",
        data("policy.toml").to_str().unwrap(),
        data("clear-title/catalog.json").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cp = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir"])
            .arg(&d)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::inherit()),
    );
    let (keys, cache) = (dir.join("keys"), dir.join("cache"));
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&cache).unwrap();
    let appliance = spawn_listening(
        Command::new(bin())
            .args(["appliance", "--id", "akl-1", "--cluster", "isp-akl"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--public-keys")
            .arg(&keys)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--control-plane", &format!("http://{}", cp.addr)])
            .args(["--credential", "akl-1-credential-0123456789"])
            .stderr(Stdio::inherit()),
    );
    (cp, appliance)
}

#[test]
fn alerts_and_dashboard_use_only_exposed_metrics() {
    let rules = read(&packaging("monitoring/outpost-alerts.yml"));
    let dashboard = read(&packaging("monitoring/outpost-dashboard.json"));
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("dashboard is JSON");
    let used: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .chain(metric_names(&dashboard))
        .collect();
    // Both services are covered.
    assert!(used.iter().any(|n| n.starts_with("outpost_appliance_")));
    assert!(used.iter().any(|n| n.starts_with("outpost_cp_")));

    let dir = tempfile::tempdir().unwrap();
    let (mut cp, mut appliance) = fleet(dir.path());
    let (s, cp_metrics) = http(&cp.addr, "GET", "/metrics", &[], "");
    assert_eq!(s, 200);
    let (s, a_metrics) = http(appliance.admin(), "GET", "/metrics", &[], "");
    assert_eq!(s, 200);
    let exposed: BTreeSet<String> = exposed_names(&cp_metrics)
        .into_iter()
        .chain(exposed_names(&a_metrics))
        .collect();
    let missing: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "used by packaging/monitoring but not in /metrics: {missing:?}\nexposed: {exposed:?}"
    );
    assert!(appliance.terminate().success());
    assert!(cp.terminate().success());
}

#[test]
#[ignore = "needs cargo-deb, promtool, systemd-analyze (./scripts/test installs them)"]
fn deb_holds_hardened_units_configs_and_monitoring() {
    // The rules load in Prometheus's own checker.
    let out = run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(packaging("monitoring/outpost-alerts.yml")),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));

    // The units: `verify` with the binary path pointing at the built binary (the package's
    // /usr/bin/outpost is not installed here), and the offline security score of each.
    let dir = tempfile::tempdir().unwrap();
    let units = [
        "outpost-appliance.service",
        "outpost-appliance@.service",
        "outpost-control-plane.service",
    ];
    for u in units {
        let text = read(&packaging(&format!("systemd/{u}")));
        let local = text.replace("/usr/bin/outpost", bin().to_str().unwrap());
        let name = u.replace("@.", "@edge1.");
        std::fs::write(dir.path().join(&name), local).unwrap();
        run_ok(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(dir.path().join(&name)),
        );
        let out = run_ok(
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(dir.path().join(&name)),
        );
        let report = String::from_utf8_lossy(&out.stdout);
        let line = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no score for {u}: {report}"));
        let score: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        eprintln!("{u}: {line}");
        assert!(score <= 3.0 && line.contains("OK"), "{u}: {line}");
        // What the issue asks of each unit, present as written.
        for must in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "StateDirectory=outpost/",
            "LogsDirectory=outpost",
            "TimeoutStopSec=",
            "User=outpost",
        ] {
            assert!(text.contains(must), "{u} lacks {must}");
        }
        if u.starts_with("outpost-appliance") {
            for must in [
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                "ReadWritePaths=",
                "LimitNOFILE=1048576",
                "io_uring_setup io_uring_enter io_uring_register",
                "ExecReload=/bin/kill -HUP $MAINPID",
            ] {
                assert!(text.contains(must), "{u} lacks {must}");
            }
        } else {
            // The control plane does not handle SIGHUP: no reload is claimed.
            assert!(!text.lines().any(|l| l.starts_with("ExecReload=")), "{u}");
        }
    }

    // The package, from the binary this test run built (cargo-deb's release build is the
    // release path: scripts/package-deb).
    let deb = build_deb(dir.path());
    // Debian policy, as lintian checks it: no error and no warning, but for two tags that do not
    // apply here: this test packages the unstripped debug binary (the release path,
    // scripts/package-deb, strips it), and an "initial upload" closing no ITP bug concerns
    // uploads to the Debian archive, not an ISP's own repository.
    let lint = run_ok(
        Command::new("lintian")
            .args(["--tag-display-limit", "0", "--fail-on", "error,warning"])
            .args([
                "--suppress-tags",
                "unstripped-binary-or-object,initial-upload-closes-no-bugs",
            ])
            .arg(&deb),
    );
    eprintln!("lintian: {}", String::from_utf8_lossy(&lint.stdout));
    let info =
        String::from_utf8_lossy(&run_ok(Command::new("dpkg-deb").arg("-I").arg(&deb)).stdout)
            .into_owned();
    for must in [
        "Package: outpost",
        "Depends: adduser",
        "Section: net",
        "postinst",
        "postrm",
        "conffiles",
    ] {
        assert!(info.contains(must), "dpkg-deb -I lacks {must}:\n{info}");
    }
    let contents =
        String::from_utf8_lossy(&run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout)
            .into_owned();
    for path in [
        "./usr/bin/outpost",
        "./etc/outpost/appliance.toml",
        "./etc/outpost/control-plane.toml",
        "./usr/lib/systemd/system/outpost-appliance.service",
        "./usr/lib/systemd/system/outpost-appliance@.service",
        "./usr/lib/systemd/system/outpost-control-plane.service",
        "./usr/share/outpost/prometheus/outpost-alerts.yml",
        "./usr/share/outpost/grafana/outpost-dashboard.json",
        "./usr/share/doc/outpost/copyright",
        "./usr/share/doc/outpost/changelog.Debian.gz",
        "./usr/share/man/man1/outpost.1.gz",
        "./usr/share/outpost/demo/media/ladder-h264/video-240p.mp4",
        "./usr/share/outpost/demo/media/ladder-vp9/audio-opus.mp4",
        "./usr/share/outpost/demo/web/package-lock.json",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "the package lacks {path}:\n{contents}"
        );
    }
    let control = dir.path().join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        read(&control.join("conffiles")).lines().collect::<Vec<_>>(),
        [
            "/etc/outpost/appliance.toml",
            "/etc/outpost/control-plane.toml"
        ]
    );
    let postinst = read(&control.join("postinst"));
    assert!(postinst.contains("adduser --system"), "{postinst}");
    // Units are installed but neither enabled nor started: the configs need site settings.
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    // The maintainer scripts are valid shell.
    for s in ["postinst", "postrm", "prerm"] {
        run_ok(Command::new("sh").arg("-n").arg(control.join(s)));
    }
    // The packaged binary is the one built, and runs.
    let x = dir.path().join("x");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let v = run_ok(Command::new(x.join("usr/bin/outpost")).arg("--version"));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("outpost "));

    // The packaged binary's `appliance check` against the packaged default config: exit 1,
    // naming the first required key left commented out, with the fix.
    let out = Command::new(x.join("usr/bin/outpost"))
        .args(["appliance", "check", "--config"])
        .arg(x.join("etc/outpost/appliance.toml"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("error")
            && l.contains("config key `cluster`")
            && l.contains("fix:")),
        "{report}"
    );
    // With the required keys set (and everything else at the packaged defaults) it passes.
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("cache")).unwrap();
    run_ok(
        Command::new(x.join("usr/bin/outpost"))
            .args(["keys", "generate", "--kid", "k1", "--out"])
            .arg(site.join("keys")),
    );
    let config = site.join("appliance.toml");
    std::fs::write(
        &config,
        format!(
            "{}\ncluster = \"akl\"\npublic_keys = {:?}\ncache_dirs = [{:?}]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            read(&x.join("etc/outpost/appliance.toml")),
            site.join("keys"),
            site.join("cache"),
        ),
    )
    .unwrap();
    let out = Command::new(x.join("usr/bin/outpost"))
        .args(["appliance", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("0 error(s)"), "{report}");

    // The packaged demo media is complete: the packaged binary's demo packages and serves it.
    let port = free_port();
    let base = (20_000..30_000)
        .step_by(37)
        .find(|b| [*b, b + 100].iter().all(|p| *p != port && free(*p)))
        .expect("a free appliance port pair");
    let mut demo = spawn_listening(
        Command::new(x.join("usr/bin/outpost"))
            .arg("demo")
            .arg("--data-dir")
            .arg(dir.path().join("demo"))
            .arg("--fixtures")
            .arg(x.join("usr/share/outpost/demo/media"))
            .args(["--port", &port.to_string(), "--appliances", "1"])
            .args(["--appliance-base-port", &base.to_string()])
            .arg("--no-browser-assets")
            .stderr(Stdio::inherit()),
    );
    let host = demo.addr.trim_start_matches("http://").to_owned();
    let (s, b) = http(&host, "GET", "/healthz", &[], "");
    assert_eq!(s, 200, "{b}");
    assert!(demo.terminate().success());
}

/// Both services' live `/metrics` pass `promtool check metrics` (HELP and TYPE for every
/// family, names and units by Prometheus's conventions): promtool prints nothing.
#[test]
#[ignore = "needs promtool (./scripts/test installs it)"]
fn promtool_accepts_both_services_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cp, mut appliance) = fleet(dir.path());
    for (what, addr) in [
        ("control plane", cp.addr.clone()),
        ("appliance", appliance.admin().to_owned()),
    ] {
        let (s, text) = http(&addr, "GET", "/metrics", &[], "");
        assert_eq!(s, 200, "{what}: {text}");
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics on the {what}'s /metrics:\n{report}"
        );
    }
    assert!(appliance.terminate().success());
    assert!(cp.terminate().success());
}

/// `<dir>/outpost.deb` built by cargo-deb from the binary this test run built.
fn build_deb(dir: &Path) -> PathBuf {
    let deb = dir.join("outpost.deb");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
            "-o",
        ])
        .arg(&deb);
    if let Some(target) = bin().parent().and_then(Path::parent) {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    run_ok(&mut cmd);
    deb
}

/// Whether this process's effective uid is 0 (from /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap()
}

/// What the install test leaves on the host until it is dropped: the appliance it started (by
/// PID), its site directory, and the installed package (purged).
struct Installed {
    appliance: Option<std::process::Child>,
    site: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut c) = self.appliance.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.site);
        let _ = Command::new("dpkg").args(["--purge", "outpost"]).output();
    }
}

/// The package installed on this host: `dpkg -i`, the installed units verified, the installed
/// binary's `appliance check` against the packaged config (names what is missing) and against a
/// site config as the `outpost` user (passes), the appliance started as `outpost` with that
/// config serving one file, the appliance and the control plane under their units' system call
/// filter, the installed demo without the build checkout, then `dpkg --purge` removes binary,
/// configs and state. Nothing is left running or installed.
#[test]
#[ignore = "needs root, dpkg, cargo-deb and systemd-analyze (./scripts/test runs as root in CI)"]
fn deb_installs_serves_as_the_outpost_user_and_purges() {
    assert!(
        is_root(),
        "this test installs the package with dpkg -i: run it as root (./scripts/test does in CI)"
    );
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "outpost"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&installed.stdout).contains("installed"),
        "outpost is already installed on this host; this test installs and purges its own build"
    );
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let mut guard = Installed {
        appliance: None,
        site: PathBuf::from(format!("/srv/outpost/e2e-{}", std::process::id())),
    };
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    let outpost_bin = Path::new("/usr/bin/outpost");
    assert!(outpost_bin.is_file());
    let passwd = read(Path::new("/etc/passwd"));
    assert!(
        passwd.lines().any(|l| l.starts_with("outpost:")),
        "no outpost user"
    );
    for u in ["outpost-appliance.service", "outpost-control-plane.service"] {
        run_ok(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("/usr/lib/systemd/system/{u}")),
        );
    }

    // The packaged config as installed: the check names the first required key.
    let out = Command::new(outpost_bin)
        .args([
            "appliance",
            "check",
            "--config",
            "/etc/outpost/appliance.toml",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("config key `cluster`"), "{report}");

    // A site: keys, one cache drive holding one title, owned by the service user.
    let site = guard.site.clone();
    let (keys, cache) = (site.join("keys"), site.join("cache"));
    std::fs::create_dir_all(cache.join("t1")).unwrap();
    std::fs::write(cache.join("t1/hello.txt"), b"hello from the package\n").unwrap();
    run_ok(
        Command::new(outpost_bin)
            .args(["keys", "generate", "--kid", "k1", "--out"])
            .arg(&keys),
    );
    let config = site.join("appliance.toml");
    std::fs::write(
        &config,
        format!(
            "{}\ncluster = \"akl\"\npublic_keys = {keys:?}\ncache_dirs = [{cache:?}]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nbackend = \"epoll\"\nthreads = 1\n",
            read(Path::new("/etc/outpost/appliance.toml")),
        ),
    )
    .unwrap();
    run_ok(
        Command::new("chown")
            .args(["-R", "outpost:outpost"])
            .arg(&site),
    );
    let as_outpost = |cmd: &mut Command| {
        cmd.args(["--reuid=outpost", "--regid=outpost", "--init-groups", "--"])
            .arg(outpost_bin);
    };
    let mut check = Command::new("setpriv");
    as_outpost(&mut check);
    let out = check
        .args(["appliance", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");

    // The appliance as the outpost user (setpriv execs it: the child's PID is the appliance's).
    let mut serve = Command::new("setpriv");
    as_outpost(&mut serve);
    let mut child = serve
        .args(["appliance", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    guard.appliance = Some(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("appliance listening on ") {
                let _ = tx.send(rest.split(' ').next().unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the installed appliance's listening line");
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let outpost_uid = passwd
        .lines()
        .find(|l| l.starts_with("outpost:"))
        .and_then(|l| l.split(':').nth(2))
        .unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == outpost_uid),
        "the appliance runs as {uid_line}, not uid {outpost_uid}"
    );
    let grant = run_ok(
        Command::new(outpost_bin)
            .args([
                "grant", "sign", "--aud", "akl", "--prefix", "/t1/", "--ttl", "600", "--key",
            ])
            .arg(keys.join("k1.key.pem")),
    );
    let grant = String::from_utf8(grant.stdout).unwrap().trim().to_owned();
    let (s, body) = http(&addr, "GET", &format!("/g/{grant}/t1/hello.txt"), &[], "");
    assert_eq!((s, body.as_str()), (200, "hello from the package\n"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = guard.appliance.take().unwrap().wait().unwrap();
    assert!(exit.success(), "{exit}");

    under_the_units_system_call_filter(outpost_bin, &site, &keys);
    installed_demo_plays_from_the_package_files(outpost_bin);

    // Remove: the binary and units go, the edited-or-not conffiles stay (Debian policy).
    std::fs::remove_dir_all(&site).unwrap();
    run_ok(Command::new("dpkg").args(["-r", "outpost"]));
    for gone in [
        "/usr/bin/outpost",
        "/usr/lib/systemd/system/outpost-appliance.service",
        "/usr/share/outpost/demo/media",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} survives dpkg -r");
    }
    assert!(
        Path::new("/etc/outpost/appliance.toml").is_file(),
        "dpkg -r removed a conffile"
    );
    // Purge: conffiles and state go too.
    run_ok(Command::new("dpkg").args(["--purge", "outpost"]));
    for gone in [
        "/usr/bin/outpost",
        "/etc/outpost/appliance.toml",
        "/usr/lib/systemd/system/outpost-appliance.service",
        "/var/lib/outpost",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} survives dpkg --purge");
    }
    let left = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "outpost"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("ok installed"),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// The lines a process wrote, collected by a thread, and the first line starting with `prefix`
/// (its remainder) sent once.
fn watch_lines(
    from: impl std::io::Read + Send + 'static,
    prefix: &'static str,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.to_owned());
                }
            }
            kept.lock().unwrap().push(line);
        }
    });
    (rx, lines)
}

/// The nice value of each thread of `pid` named `name` (/proc/PID/task/*/stat, field 19).
fn thread_nice(pid: u32, name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.split_once('(').map(|(_, comm)| comm) == Some(name) {
            out.push(rest.split_whitespace().nth(16).unwrap().parse().unwrap());
        }
    }
    out
}

/// The packaged appliance unit's `SystemCallFilter` (with `SystemCallErrorNumber`), applied
/// with libseccomp by tests/tools/syscall-filter.py as systemd would apply it (no systemd runs
/// here): the appliance as `outpost`, on its default backend, with a control plane configured
/// (unreachable), must pick io_uring, serve the file, and its fleet agent's threads must get
/// their nice 10 (`setpriority`, which `~@resources` alone would refuse).
fn under_the_units_system_call_filter(outpost_bin: &Path, site: &Path, keys: &Path) {
    let unit = Path::new("/usr/lib/systemd/system/outpost-appliance.service");
    // An appliance with a control plane serves complete titles only (catalog.json): package one
    // with the installed binary.
    let cache = site.join("cache");
    run_ok(
        Command::new(outpost_bin)
            .args(["package", "--title", "t2", "--out"])
            .arg(&cache)
            .arg(root().join("fixtures/media/ladder-h264/video-240p.mp4")),
    );
    let catalog: serde_json::Value =
        serde_json::from_str(&read(&cache.join("t2/catalog.json"))).unwrap();
    let media = catalog["files"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|f| f["size"].as_u64().unwrap())
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let want = std::fs::read(cache.join("t2").join(&media)).unwrap();
    let grant = run_ok(
        Command::new(outpost_bin)
            .args([
                "grant", "sign", "--aud", "akl", "--prefix", "/t2/", "--ttl", "600", "--key",
            ])
            .arg(keys.join("k1.key.pem")),
    );
    let grant = String::from_utf8(grant.stdout).unwrap().trim().to_owned();
    let config = site.join("appliance-filtered.toml");
    let closed = free_port();
    std::fs::write(
        &config,
        format!(
            "cluster = \"akl\"\npublic_keys = {keys:?}\ncache_dirs = [{:?}]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nthreads = 1\ncontrol_plane = \"http://127.0.0.1:{closed}\"\ncredential = \"a-test-credential-0123456789\"\nid = \"akl-1\"\n",
            site.join("cache"),
        ),
    )
    .unwrap();
    run_ok(
        Command::new("chown")
            .args(["-R", "outpost:outpost"])
            .arg(site),
    );
    let appliance = Filtered::start(
        unit,
        outpost_bin,
        &["appliance", "--config", config.to_str().unwrap()],
        "appliance listening on ",
    );
    let (pid, line) = (appliance.pid, appliance.line.clone());
    let addr = line.split(' ').next().unwrap().to_owned();
    let log = appliance.log.clone();
    appliance.check_then_stop(|| {
        assert!(line.contains("backend io_uring"), "{line}");
        // The whole file and a range of it, through the io_uring data path.
        let url = format!("http://{addr}/g/{grant}/t2/{media}");
        assert!(fetch(&url, None) == want, "{url}: not the packaged bytes");
        let range = fetch(&url, Some("1000-70999"));
        assert!(range == want[1000..71_000], "{url}: the range differs");
        // The agent's runtime thread starts with the appliance; its nice is set as it starts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let nice = loop {
            let nice = thread_nice(pid, "outpost-agent");
            if !nice.is_empty() || std::time::Instant::now() > deadline {
                break nice;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert!(
            !nice.is_empty() && nice.iter().all(|n| *n == 10),
            "the agent's threads run at nice {nice:?}, not 10:\n{}",
            log.lock().unwrap().join("\n")
        );
    });

    // The control plane under its unit's filter: starts, creates its database and signing key,
    // and answers.
    let cp = Filtered::start(
        Path::new("/usr/lib/systemd/system/outpost-control-plane.service"),
        outpost_bin,
        &[
            "control-plane",
            "--data-dir",
            site.join("control-plane").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "control plane listening on http://",
    );
    let addr = cp.line.clone();
    cp.check_then_stop(|| {
        let (status, body) = http(&addr, "GET", "/v1/keys", &[], "");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("-----BEGIN PUBLIC KEY-----") || body.contains("\"kid\""),
            "{body}"
        );
    });
}

/// `outpost` started as the `outpost` user under a packaged unit's system call filter
/// (tests/tools/syscall-filter.py), its output watched.
struct Filtered {
    child: std::process::Child,
    pid: u32,
    /// The rest of its first line starting with the prefix it was started with.
    line: String,
    /// Its standard error.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Filtered {
    fn start(unit: &Path, outpost_bin: &Path, args: &[&str], prefix: &'static str) -> Filtered {
        let mut child = Command::new("setpriv")
            .args(["--reuid=outpost", "--regid=outpost", "--init-groups", "--"])
            .arg("/usr/bin/python3")
            .arg(root().join("tests/tools/syscall-filter.py"))
            .arg(unit)
            .arg("--")
            .arg(outpost_bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (listening, _) = watch_lines(child.stdout.take().unwrap(), prefix);
        let (_, log) = watch_lines(child.stderr.take().unwrap(), "");
        let Ok(line) = listening.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} said no {prefix:?} under {}'s filter:\n{}",
                unit.display(),
                log.lock().unwrap().join("\n")
            );
        };
        Filtered {
            pid: child.id(),
            child,
            line,
            log,
        }
    }

    /// Runs `checks`, then asserts that no system call was refused (an EPERM in the log), stops
    /// the process with SIGTERM and asserts a clean exit; the process is stopped even when a
    /// check fails.
    fn check_then_stop(mut self, checks: impl FnOnce()) {
        let log = self.log.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            checks();
            let log = log.lock().unwrap().join("\n");
            for refused in ["Operation not permitted", "os error 1)", "falling back"] {
                assert!(
                    !log.contains(refused),
                    "a call refused under the filter ({refused}):\n{log}"
                );
            }
        }));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let exit = self.child.wait().unwrap();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
        assert!(exit.success(), "{exit}");
    }
}

/// `curl -sf URL` (with `-r RANGE` if given) into memory: the body's bytes, or a panic naming
/// the URL and curl's error.
fn fetch(url: &str, range: Option<&str>) -> Vec<u8> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-f", "--max-time", "30"]);
    if let Some(r) = range {
        curl.args(["-r", r]);
    }
    let out = curl.arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `reference` (a playlist line) resolved against the URL of the playlist holding it.
fn resolve(base: &str, reference: &str) -> String {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.to_owned();
    }
    let base = base.split(['?', '#']).next().unwrap();
    if let Some(abs) = reference.strip_prefix('/') {
        let origin_end = base[8..].find('/').map_or(base.len(), |i| i + 8);
        return format!("{}/{abs}", &base[..origin_end]);
    }
    format!("{}/{reference}", base.rsplit_once('/').unwrap().0)
}

/// The installed `outpost demo` on a host without the build checkout: the checkout is hidden
/// under an empty tmpfs in a private mount namespace, so the demo can only find its media in
/// /usr/share/outpost/demo/media and its player libraries through the packaged lock file. It
/// must package both titles, fill its appliances, serve the player libraries and play a session:
/// the encrypted title's HLS master, a media playlist, its init segment and first segment.
fn installed_demo_plays_from_the_package_files(outpost_bin: &Path) {
    let _serial = crate::support::demo::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut wrapper = Command::new("unshare");
    wrapper
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs outpost-test \"$0\" && exec \"$@\"")
        .arg(root())
        .arg(outpost_bin)
        .arg("demo");
    let data = tempfile::tempdir().unwrap();
    assert!(
        !data.path().starts_with(root()),
        "the demo's data directory must not be hidden with the checkout"
    );
    // Kept among the demo tests' artifacts: a failed start's appliance logs go there too.
    let log_path = crate::support::demo::artifacts().join("installed-demo.stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let demo = crate::support::demo::launch_demo_as(
        wrapper,
        data.path(),
        &["--no-bird"],
        Stdio::from(log),
    );
    let log = read(&log_path);
    for title in [
        "demo-h264 from /usr/share/outpost/demo/media/ladder-h264",
        "demo-vp9 from /usr/share/outpost/demo/media/ladder-vp9",
    ] {
        assert!(
            log.contains(&format!("demo: packaging {title}")),
            "the installed demo did not package {title}:\n{log}"
        );
    }
    let modules = data.path().join("web/node_modules");
    for lib in ["shaka-player", "hls.js", "dashjs"] {
        assert!(
            modules.join(lib).is_dir(),
            "{lib} not installed from the packaged lock"
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&fetch(&format!("{}/demo/api/config", demo.url), None)).unwrap();
    assert!(config.to_string().contains("demo-h264"), "{config}");

    // A session as the page starts one, once steering has an appliance holding the title.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let session = loop {
        let addr = demo.url.trim_start_matches("http://");
        let (status, body) = http(
            addr,
            "POST",
            "/demo/api/sessions",
            &[("Content-Type", "application/json")],
            r#"{"title":"demo-h264","device":"desktop-browser"}"#,
        );
        if status == 200 || status == 201 {
            break serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session from the installed demo: {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    let master_url = session["manifests"]["hls"].as_str().unwrap().to_owned();
    let master = String::from_utf8(fetch(&master_url, None)).unwrap();
    let variant = master
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no variant in the master playlist:\n{master}"));
    let media_url = resolve(&master_url, variant);
    let media = String::from_utf8(fetch(&media_url, None)).unwrap();
    let init = media
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.split('"').next())
        .unwrap_or_else(|| panic!("no EXT-X-MAP in the media playlist:\n{media}"));
    let first = media
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no segment in the media playlist:\n{media}"));
    let init = fetch(&resolve(&media_url, init), None);
    assert_eq!(&init[4..8], b"ftyp", "the init segment is not an MP4");
    let segment = fetch(&resolve(&media_url, first), None);
    assert!(
        segment.windows(4).any(|w| w == b"moof"),
        "the first segment has no moof ({} bytes)",
        segment.len()
    );
    drop(demo);
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port the kernel hands out now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
