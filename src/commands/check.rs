//! `outpost appliance check` and `outpost control-plane check`: like `nginx -t`. Each reads its
//! configuration with the same loader as the real command, then probes this host for what the
//! service will need. One line per item, `ok`, `warning` or `error`, each problem with its fix;
//! the exit status is 1 when any line is an error. Nothing is changed on the host (a drive's
//! write probe removes its file; the SQLite database is not created).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

/// One line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warning,
    Error,
}

/// The lines printed so far.
#[derive(Debug, Default)]
struct Report {
    errors: usize,
    warnings: usize,
}

impl Report {
    fn line(&mut self, level: Level, item: &str, text: impl AsRef<str>) {
        let tag = match level {
            Level::Ok => "ok",
            Level::Warning => {
                self.warnings += 1;
                "warning"
            }
            Level::Error => {
                self.errors += 1;
                "error"
            }
        };
        println!("{tag:<7}  {item}: {}", one_line(text.as_ref()));
    }

    fn ok(&mut self, item: &str, text: impl AsRef<str>) {
        self.line(Level::Ok, item, text);
    }

    fn warn(&mut self, item: &str, text: impl AsRef<str>, fix: &str) {
        self.line(
            Level::Warning,
            item,
            format!("{}; fix: {fix}", text.as_ref()),
        );
    }

    fn error(&mut self, item: &str, text: impl AsRef<str>, fix: &str) {
        self.line(Level::Error, item, format!("{}; fix: {fix}", text.as_ref()));
    }

    fn finish(self) -> ExitCode {
        println!(
            "{} error(s), {} warning(s): {}",
            self.errors,
            self.warnings,
            if self.errors == 0 {
                "the configuration and host look usable"
            } else {
                "fix the errors above before starting the service"
            }
        );
        if self.errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// `text` on one line: a multi-line message (a TOML error's source excerpt) keeps its message
/// lines, joined with `; `, and drops the excerpt (` | ` lines, carets).
fn one_line(text: &str) -> String {
    if !text.contains('\n') {
        return text.to_owned();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && l.split_once(" |")
                    .is_none_or(|(n, _)| n.trim().parse::<u64>().is_err())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `outpost appliance check`.
pub fn appliance(args: super::appliance::Args) -> anyhow::Result<ExitCode> {
    use appliance::server::BackendChoice;
    let mut rep = Report::default();
    let r = match super::appliance::resolve(args) {
        Ok(r) => {
            rep.ok("config", "valid");
            r
        }
        Err(e) => {
            rep.error(
                "config",
                format!("{e:#}"),
                "correct the key named above (see /etc/outpost/appliance.toml's comments or `outpost appliance --help`)",
            );
            return Ok(rep.finish());
        }
    };

    match (appliance::io::uring::probe(), r.backend) {
        (Ok(()), BackendChoice::Epoll) => {
            rep.ok("io_uring", "available, but backend = \"epoll\" is configured")
        }
        (Ok(()), _) => rep.ok("io_uring", "available; the backend will be io_uring"),
        (Err(_), BackendChoice::Epoll) => rep.ok("io_uring", "not used (backend = \"epoll\")"),
        (Err(e), BackendChoice::Uring) => rep.error(
            "io_uring",
            format!("unavailable ({e}) but backend = \"io_uring\" is configured"),
            "set backend = \"auto\" or \"epoll\", or allow io_uring (kernel.io_uring_disabled = 0; seccomp)",
        ),
        (Err(e), BackendChoice::Auto) => rep.warn(
            "io_uring",
            format!("unavailable ({e}); the backend will be epoll + sendfile"),
            "use Linux >= 6.1 with kernel.io_uring_disabled = 0 for the faster backend",
        ),
    }

    cachestat(&mut rep);
    kernel_tls(&mut rep);
    for dir in &r.cache_dirs {
        cache_drive(&mut rep, dir);
    }
    nofile(&mut rep, r.max_connections as u64 + 1024, "max_connections");
    clock(&mut rep);

    match appliance::keys::load_dir(&r.keys_dir) {
        Ok(ring) => rep.ok(
            "public_keys",
            format!(
                "{}: keys {}",
                r.keys_dir.display(),
                ring.kids().collect::<Vec<_>>().join(", ")
            ),
        ),
        Err(e) if r.agent.is_some() => rep.warn(
            "public_keys",
            named(&r.keys_dir, &e),
            "the fleet agent fetches them from the control plane at start-up if it is reachable (see `control_plane` below)",
        ),
        Err(e) => rep.error(
            "public_keys",
            named(&r.keys_dir, &e),
            "copy the control plane's <kid>.pub.pem files there, or set control_plane and credential so the agent fetches them",
        ),
    }

    bindable(&mut rep, "listen", r.listen);
    bindable(&mut rep, "admin_listen", r.admin_listen);
    if let Some(b) = &r.bgp {
        bgp(&mut rep, b);
    }

    match &r.agent {
        None => rep.ok(
            "control_plane",
            "not configured (standalone: keys and content placed by hand)",
        ),
        Some(a) => control_plane_call(&mut rep, a),
    }
    Ok(rep.finish())
}

/// The BGP speaker: its listening address is free and each peer it connects out to answers
/// on TCP (a passive peer connects to us, so only its presence in the config is reported).
fn bgp(rep: &mut Report, b: &appliance::bgp::BgpConfig) {
    match b.listen {
        Some(addr) => bindable(rep, "bgp_listen", addr),
        None => rep.ok(
            "bgp_listen",
            "not set: sessions are opened by this appliance only",
        ),
    }
    for p in &b.peers {
        let item = format!("bgp_peers {}", p.addr);
        if p.passive {
            rep.ok(
                &item,
                format!("AS {} passive: waits for the router to connect", p.asn),
            );
            continue;
        }
        let addr = SocketAddr::new(p.addr, p.port);
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => rep.ok(&item, format!("AS {}: {addr} accepts TCP", p.asn)),
            Err(e) => rep.warn(
                &item,
                format!("AS {}: cannot connect to {addr}: {e}", p.asn),
                "configure this appliance as the router's neighbour (its address and bgp_asn) and allow TCP to the BGP port; the speaker keeps retrying",
            ),
        }
    }
}

/// `e`'s text, prefixed with `path` unless it already names it.
fn named(path: &Path, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let p = path.display().to_string();
    if text.contains(&p) {
        text
    } else {
        format!("{p}: {text}")
    }
}

fn cachestat(rep: &mut Report) {
    use std::os::fd::AsFd as _;
    let probe = std::env::current_exe()
        .and_then(std::fs::File::open)
        .and_then(|f| appliance::io::sys::resident(f.as_fd(), 0, 1));
    match probe {
        Ok(_) => rep.ok(
            "cachestat",
            "available: resident ranges are sent inline, the others through io-wq",
        ),
        Err(e) => rep.warn(
            "cachestat",
            format!("unavailable ({e})"),
            "Linux >= 6.5 lets io_uring send cached ranges inline; without it every range goes through io-wq (slower, still correct)",
        ),
    }
}

fn kernel_tls(rep: &mut Report) {
    if Path::new("/sys/module/tls").exists() {
        rep.ok("kernel_tls", "the tls module is loaded");
    } else {
        rep.warn(
            "kernel_tls",
            "the tls module is not loaded",
            "`modprobe tls` (and add `tls` to /etc/modules-load.d/) if TLS is served",
        );
    }
}

/// The mount (type, options) holding `path`: the longest mount point prefix in
/// /proc/self/mountinfo.
fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String, String)> = None;
    for line in text.lines() {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 6 || r.is_empty() {
            continue;
        }
        let mount = f[4].replace("\\040", " ");
        if path.starts_with(&mount) && best.as_ref().is_none_or(|b| mount.len() >= b.0) {
            best = Some((mount.len(), mount, r[0].to_owned(), f[5].to_owned()));
        }
    }
    best.map(|(_, m, t, o)| (m, t, o))
}

fn cache_drive(rep: &mut Report, dir: &Path) {
    let item = format!("cache_dir {}", dir.display());
    if !dir.is_dir() {
        rep.error(
            &item,
            "does not exist or is not a directory",
            &format!(
                "`mkdir -p {0} && chown outpost:outpost {0}` (and list it in the unit's ReadWritePaths)",
                dir.display()
            ),
        );
        return;
    }
    let probe = dir.join(format!(".outpost-check-{}", std::process::id()));
    let writable = std::fs::write(&probe, b"check").and_then(|()| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        let _ = std::fs::remove_file(&probe);
        rep.error(
            &item,
            format!("not writable by this user ({e})"),
            &format!(
                "`chown -R outpost:outpost {}` (run check as the service user: `runuser -u outpost -- outpost appliance check`)",
                dir.display()
            ),
        );
        return;
    }
    let space = appliance::io::sys::fs_space(dir)
        .map(|(total, free)| format!("{} GiB free of {} GiB", free >> 30, total >> 30))
        .unwrap_or_else(|e| format!("free space unknown ({e})"));
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match mount_of(&canon) {
        Some((mount, fstype, opts)) => {
            let text = format!("writable, {space}, {fstype} on {mount} ({opts})");
            if matches!(fstype.as_str(), "tmpfs" | "overlay" | "ramfs") {
                rep.warn(&item, text, "put the cache on its own drive (ext4 or xfs); this file system is memory-backed or layered");
            } else if !opts.split(',').any(|o| o == "noatime") {
                rep.warn(
                    &item,
                    text,
                    "mount the cache drive with `noatime` (/etc/fstab) to save a metadata write per read",
                );
            } else {
                rep.ok(&item, text);
            }
        }
        None => rep.ok(&item, format!("writable, {space}")),
    }
}

/// RLIMIT_NOFILE (soft) from /proc/self/limits.
fn nofile_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

fn nofile(rep: &mut Report, need: u64, key: &str) {
    match nofile_limit() {
        Some(n) if n >= need => rep.ok(
            "nofile",
            format!("RLIMIT_NOFILE {n} covers {key} (needs about {need})"),
        ),
        Some(n) => rep.warn(
            "nofile",
            format!("RLIMIT_NOFILE {n} is below about {need} for {key} in this shell"),
            "the packaged unit sets LimitNOFILE=1048576; when run by hand, `ulimit -n` higher or lower the limit key",
        ),
        None => rep.warn(
            "nofile",
            "could not read /proc/self/limits",
            "check `ulimit -n`",
        ),
    }
}

fn clock(rep: &mut Report) {
    let out = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "yes" => {
            rep.ok("clock", "synchronised (timedatectl NTPSynchronized=yes)")
        }
        Ok(o) if o.status.success() => rep.warn(
            "clock",
            "not synchronised (timedatectl NTPSynchronized=no)",
            "enable NTP (`timedatectl set-ntp true`, chrony or systemd-timesyncd): grants carry exp/nbf times",
        ),
        _ => rep.warn(
            "clock",
            "sync state unknown (timedatectl unavailable here)",
            "make sure NTP (chrony or systemd-timesyncd) runs: grants carry exp/nbf times",
        ),
    }
}

fn bindable(rep: &mut Report, key: &str, addr: SocketAddr) {
    match TcpListener::bind(addr) {
        Ok(_) => rep.ok(key, format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => rep.warn(
            key,
            format!("{addr} is in use"),
            "if the service is already running this is expected; otherwise stop what holds the port or change the key",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => rep.warn(
            key,
            format!("{addr}: {e} for this user"),
            "the packaged unit grants CAP_NET_BIND_SERVICE; by hand use a port >= 1024",
        ),
        Err(e) => rep.error(
            key,
            format!("{addr}: {e}"),
            "use an address of this host",
        ),
    }
}

fn control_plane_call(rep: &mut Report, a: &appliance::agent::AgentConfig) {
    use appliance::agent::client::{CallError, ControlPlane};
    let client = match ControlPlane::new(
        &a.control_plane,
        &a.id,
        &a.credential,
        Duration::from_secs(60),
        std::sync::Arc::new(appliance::metrics::Metrics::default()),
    ) {
        Ok(c) => c,
        Err(e) => {
            rep.error(
                "control_plane",
                e,
                "set control_plane to the control plane's http(s)://host:port",
            );
            return;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rep.error("control_plane", format!("no async runtime: {e}"), "retry");
            return;
        }
    };
    let answer = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), client.fill_plan()).await });
    let url = &a.control_plane;
    match answer {
        Ok(Ok(_)) | Ok(Err(CallError::Invalid { .. })) => rep.ok(
            "control_plane",
            format!("{url} answered and accepted the credential of appliance {}", a.id),
        ),
        Ok(Err(CallError::Status { status: 401 | 403, body, .. })) => rep.error(
            "control_plane",
            format!("{url} refused the credential of appliance {} ({body})", a.id),
            "set credential / credential_file to the secret the control plane's policy lists for this appliance id",
        ),
        Ok(Err(CallError::Status { status: 404, body, .. })) => rep.error(
            "control_plane",
            format!("{url} does not know appliance {} ({body})", a.id),
            "set id to the appliance id in the control plane's policy, or add it there",
        ),
        Ok(Err(CallError::Status { status, body, .. })) => rep.warn(
            "control_plane",
            format!("{url} answered HTTP {status} ({body})"),
            "look at the control plane's log",
        ),
        Ok(Err(e)) => rep.error(
            "control_plane",
            format!("{url} unreachable: {e}"),
            "start the control plane or correct control_plane; the appliance serves with cached keys meanwhile",
        ),
        Err(_) => rep.error(
            "control_plane",
            format!("{url} did not answer within 5 s"),
            "check the route and firewall to the control plane",
        ),
    }
}

/// `outpost control-plane check`: `cfg` has been loaded and validated by the same code as
/// `serve`.
pub fn control_plane(cfg: anyhow::Result<control_plane::Config>) -> anyhow::Result<ExitCode> {
    let mut rep = Report::default();
    let cfg = match cfg {
        Ok(c) => {
            rep.ok("config", "valid");
            c
        }
        Err(e) => {
            rep.error(
                "config",
                format!("{e:#}"),
                "correct the key named above (see /etc/outpost/control-plane.toml's comments or `outpost control-plane --help`)",
            );
            return Ok(rep.finish());
        }
    };
    data_dir(&mut rep, &cfg.data_dir);
    let url = control_plane::database_url(&cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match rt.block_on(control_plane::db::probe(&url, Duration::from_secs(5))) {
        Ok(control_plane::db::Probe::Ready) => rep.ok("database", "reachable"),
        Ok(control_plane::db::Probe::WillCreate) => rep.ok(
            "database",
            "the SQLite file does not exist yet; it is created at first start",
        ),
        Err(e) => rep.error(
            "database",
            format!("{}: {e}", redacted(&url)),
            "start the database or correct `database` (postgres://user@host/db or sqlite://FILE)",
        ),
    }
    match &cfg.master_key {
        Some(_) => rep.ok("master_key", "set"),
        None if cfg.data_dir.join("master.key").is_file() => {
            rep.ok("master_key", format!("{}", cfg.data_dir.join("master.key").display()))
        }
        None => rep.warn(
            "master_key",
            format!("none set and no {}", cfg.data_dir.join("master.key").display()),
            "one is generated at first start; back it up (content keys are sealed with it), or set OUTPOST_MASTER_KEY",
        ),
    }
    match cfg.listen.parse::<SocketAddr>() {
        Ok(a) => bindable(&mut rep, "listen", a),
        Err(e) => rep.error(
            "listen",
            format!("{:?}: {e}", cfg.listen),
            "use host:port, e.g. 127.0.0.1:8700",
        ),
    }
    nofile(&mut rep, 4096, "the connections of a busy control plane");
    clock(&mut rep);
    Ok(rep.finish())
}

/// A database URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn data_dir(rep: &mut Report, dir: &Path) {
    // The nearest existing ancestor must be writable for `serve` to create it.
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let probe = existing.join(format!(".outpost-check-{}", std::process::id()));
    match std::fs::write(&probe, b"check").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) if existing == dir => rep.ok("data_dir", format!("{} is writable", dir.display())),
        Ok(()) => rep.ok(
            "data_dir",
            format!("{} is created at first start", dir.display()),
        ),
        Err(e) => rep.error(
            "data_dir",
            format!("{} not writable ({e})", existing.display()),
            &format!("`chown -R outpost:outpost {}`", existing.display()),
        ),
    }
}
