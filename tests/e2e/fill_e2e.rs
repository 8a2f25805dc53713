//! Fill end to end with the real binaries: `outpost control-plane` (embedded SQLite) plans; three
//! `outpost appliance` processes (origin, exchange, embedded clusters, separate cache
//! directories) run their fleet agents against it. A title packaged by `outpost package` and
//! placed at origin reaches the exchange appliance and then the embedded one with no person
//! copying anything, verified (the embedded appliance fills while origin is stopped, so its only
//! source is the exchange tier), and the embedded appliance keeps serving with its cached keys
//! when restarted during a control-plane outage. A lost cache drive is steered around and its
//! files filled again onto the other drive.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::{bin, spawn_listening, Listening};
use crate::support::media;

/// `outpost <args>` (logging at info), once it says where it listens; killed when dropped.
fn spawn(args: &[String]) -> Listening {
    spawn_listening(
        Command::new(bin())
            .args(args)
            .env("OUTPOST_LOG", "info")
            .stderr(Stdio::inherit()),
    )
}

fn http(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, out[at..].to_vec())
}

fn metrics(admin: &str) -> String {
    String::from_utf8(http(admin, "/metrics", &[]).1).unwrap()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

const POLICY: &str = r#"
[[plans]]
id = "basic"
max_tier = "UHD"
max_streams = 2

[[accounts]]
id = "acct-1"
plan = "basic"
status = "active"

[[device_classes]]
id = "browser"
key_systems = ["org.w3.clearkey"]
max_tier = "UHD"

[[geo]]
prefix = "127.0.0.0/8"
country = "NZ"

[[windows]]
title = "fillme"
country = "NZ"
start = 0
end = 4102444800
max_tier = "UHD"

[[sites]]
id = "akl"

[[sites]]
id = "syd"

[[sites]]
id = "orig"

[[clusters]]
id = "isp"
site = "akl"
kind = "embedded"
fallbacks = ["ix"]

[[clusters]]
id = "ix"
site = "syd"
kind = "exchange"

[[clusters]]
id = "origin"
site = "orig"
kind = "origin"

[[appliances]]
id = "isp-1"
cluster = "isp"
address = "127.0.0.1"
port = 1
prefixes = ["127.0.0.0/8"]
credential = "isp-1-credential-0123456789"

[[appliances]]
id = "ix-1"
cluster = "ix"
address = "127.0.0.1"
port = 1
credential = "ix-1-credential-0123456789"

[[appliances]]
id = "origin-1"
cluster = "origin"
address = "127.0.0.1"
port = 1
credential = "origin-1-credential-0123456789"

[[api_keys]]
id = "playback-service"
secret = "playback-secret-0123456789"
"#;

struct Appliance {
    proc: Listening,
    addr: String,
    admin: String,
    cache: PathBuf,
    keys: PathBuf,
}

fn appliance(id: &str, cluster: &str, dir: &Path, cp: &str) -> Appliance {
    appliance_with(id, cluster, dir, cp, &[])
}

fn appliance_with(id: &str, cluster: &str, dir: &Path, cp: &str, extra: &[&str]) -> Appliance {
    let cache = dir.join(format!("{id}-cache"));
    let keys = dir.join(format!("{id}-keys"));
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    let args: Vec<String> = [
        "appliance",
        "--id",
        id,
        "--cluster",
        cluster,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--backend",
        "epoll",
        "--drain-timeout-secs",
        "1",
        "--public-keys",
        keys.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--control-plane",
        cp,
        "--credential",
        &format!("{id}-credential-0123456789"),
        "--fill-window",
        "always",
        "--control-plane-grace",
        "1",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let proc = spawn(&args);
    let addr = proc.addr.clone();
    let admin = proc.admin().to_owned();
    Appliance {
        proc,
        addr,
        admin,
        cache,
        keys,
    }
}

fn held(a: &Appliance) -> bool {
    metrics(&a.admin).contains("outpost_appliance_titles_held 1")
}

fn control_plane(data: &Path, listen: &str) -> (Listening, String) {
    let args: Vec<String> = [
        "control-plane",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        listen,
        "--appliance-heartbeat-secs",
        "1",
        "--snapshot-ttl-ms",
        "100",
        "--fill-plan-refresh-secs",
        "1",
        "--fill-plan-cache-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = spawn(&args);
    let addr = p.addr.clone();
    (p, addr)
}

/// Packages the fixture title `fillme` into `d/packaged`; returns its directory.
fn package_title(d: &Path) -> PathBuf {
    let out = d.join("packaged");
    let o = Command::new(bin())
        .args([
            "package",
            "--title",
            "fillme",
            "--out",
            out.to_str().unwrap(),
        ])
        .arg(media("ladder-h264/video-240p.mp4"))
        .arg(media("ladder-h264/audio-aac.mp4"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("fillme")
}

/// A play grant for `/fillme/` on `cluster`, signed with the control plane's key.
fn play_grant(cpdata: &Path, cluster: &str) -> String {
    let key = std::fs::read_dir(cpdata.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".key.pem"))
        .expect("the control plane's signing key");
    let o = Command::new(bin())
        .args(["grant", "sign", "--key"])
        .arg(&key)
        .args(["--aud", cluster, "--prefix", "/fillme/", "--ttl", "600"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn counter(admin: &str, name: &str) -> u64 {
    metrics(admin)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// `outpost control-plane import FILES` into the data directory `cpdata`.
fn import(cpdata: &Path, files: &[&Path]) {
    let o = Command::new(bin())
        .args([
            "control-plane",
            "--data-dir",
            cpdata.to_str().unwrap(),
            "import",
        ])
        .args(files)
        .env_remove("OUTPOST_MASTER_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The start of a fleet: the fixture title packaged, the policy and the title imported, the
/// control plane running, and origin holding the packaged title at its path.
struct Fleet {
    _cp: Listening,
    cp_addr: String,
    cp_url: String,
    cpdata: PathBuf,
    _origin: Appliance,
    origin_cache: PathBuf,
    entry: protocol::catalog::CatalogEntry,
}

impl Fleet {
    fn with_origin(d: &Path) -> Fleet {
        let title = package_title(d);
        let cpdata = d.join("cp");
        std::fs::write(d.join("policy.toml"), POLICY).unwrap();
        import(
            &cpdata,
            &[&d.join("policy.toml"), &title.join("catalog.json")],
        );
        let (cp, cp_addr) = control_plane(&cpdata, "127.0.0.1:0");
        let cp_url = format!("http://{cp_addr}");
        let origin_cache = d.join("origin-1-cache");
        std::fs::create_dir_all(&origin_cache).unwrap();
        std::fs::rename(&title, origin_cache.join("fillme")).unwrap();
        let origin = appliance("origin-1", "origin", d, &cp_url);
        assert!(held(&origin), "origin does not hold the packaged title");
        let entry = protocol::catalog::CatalogEntry::from_json(
            &std::fs::read_to_string(origin_cache.join("fillme/catalog.json")).unwrap(),
        )
        .unwrap();
        Fleet {
            _cp: cp,
            cp_addr,
            cp_url,
            cpdata,
            _origin: origin,
            origin_cache,
            entry,
        }
    }
}

#[test]
fn a_packaged_title_reaches_the_embedded_appliance_through_the_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let title = package_title(d);
    // Import policy and title.
    let cpdata = d.join("cp");
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    import(
        &cpdata,
        &[&d.join("policy.toml"), &title.join("catalog.json")],
    );
    let (mut cp, cp_addr) = control_plane(&cpdata, "127.0.0.1:0");
    let cp_url = format!("http://{cp_addr}");

    // Origin holds the packager's output, placed at its path by the packaging step.
    let origin_cache = d.join("origin-1-cache");
    std::fs::create_dir_all(&origin_cache).unwrap();
    std::fs::rename(&title, origin_cache.join("fillme")).unwrap();
    let mut origin = appliance("origin-1", "origin", d, &cp_url);
    assert!(held(&origin), "origin does not hold the packaged title");
    let exchange = appliance("ix-1", "ix", d, &cp_url);
    wait_for("the exchange appliance to hold the title", 60, || {
        held(&exchange)
    });
    let m = metrics(&exchange.admin);
    assert!(
        m.contains("outpost_appliance_control_plane_reachable 1"),
        "{m}"
    );

    // Origin goes away; the embedded appliance starts and fills from the exchange tier.
    origin.proc.terminate();
    let mut embedded = appliance("isp-1", "isp", d, &cp_url);
    wait_for("the embedded appliance to hold the title", 60, || {
        held(&embedded)
    });
    let catalog = std::fs::read_to_string(origin_cache.join("fillme/catalog.json")).unwrap();
    let entry = protocol::catalog::CatalogEntry::from_json(&catalog).unwrap();
    for f in &entry.files {
        let got = std::fs::read(embedded.cache.join("fillme").join(&f.path)).unwrap();
        let want = std::fs::read(origin_cache.join("fillme").join(&f.path)).unwrap();
        assert!(got == want, "{} differs", f.path);
    }
    let m = metrics(&exchange.admin);
    let out_bytes: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("outpost_appliance_fill_bytes_out_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        out_bytes >= entry.total_bytes(),
        "exchange served {out_bytes} fill bytes\n{m}"
    );
    let m = metrics(&embedded.admin);
    assert!(
        m.contains(&format!(
            "outpost_appliance_fill_files_verified_total {}",
            entry.files.len()
        )),
        "{m}"
    );
    // The key cache was written by the agent.
    assert!(std::fs::read_dir(&embedded.keys).unwrap().count() >= 1);

    // Control-plane outage: the embedded appliance restarts with its cached keys and serves.
    cp.terminate();
    embedded.proc.terminate();
    let restarted = appliance("isp-1", "isp", d, &cp_url);
    assert!(
        held(&restarted),
        "title not held after a restart during the outage"
    );
    let g = play_grant(&cpdata, "isp");
    let v = entry
        .files
        .iter()
        .find(|f| f.path.ends_with(".mp4"))
        .unwrap();
    let (st, body) = http(
        &restarted.addr,
        &format!("/g/{}/fillme/{}", g.trim(), v.path),
        &[],
    );
    assert_eq!(st, 200);
    assert_eq!(
        body,
        std::fs::read(origin_cache.join("fillme").join(&v.path)).unwrap()
    );
    wait_for("the agent to notice the outage", 20, || {
        metrics(&restarted.admin).contains("outpost_appliance_control_plane_reachable 0")
    });
    // The control plane comes back at the same address: the agent reconnects.
    let (_cp, _) = control_plane(&cpdata, &cp_addr);
    wait_for("the agent to reach the control plane again", 30, || {
        metrics(&restarted.admin).contains("outpost_appliance_control_plane_reachable 1")
    });
    assert!(held(&restarted));
}

/// The demo's start-up stall, with the real binaries: origin holds the packaged title and asks
/// for its plan before the control plane has any title in its catalog. It used to get a plan of
/// nothing and delete the title at once (so nothing could ever be filled from it). Now the
/// control plane refuses to publish a plan built from an empty catalog, the appliance keeps
/// what no plan lists as removable (even with removals set to act at once), and once the
/// catalog is loaded the exchange fills the title from origin.
#[test]
fn a_plan_asked_for_before_the_catalog_is_loaded_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let title = package_title(d);
    let cpdata = d.join("cp");
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    import(&cpdata, &[&d.join("policy.toml")]);
    let (_cp, cp_addr) = control_plane(&cpdata, "127.0.0.1:0");
    let cp_url = format!("http://{cp_addr}");
    let origin_cache = d.join("origin-1-cache");
    std::fs::create_dir_all(&origin_cache).unwrap();
    std::fs::rename(&title, origin_cache.join("fillme")).unwrap();
    let immediate = ["--fill-removal-grace", "0", "--fill-removal-plans", "1"];
    let origin = appliance_with("origin-1", "origin", d, &cp_url, &immediate);
    assert!(held(&origin), "origin does not hold the packaged title");
    let refusals = || {
        let (_, body) = http(&cp_addr, "/metrics", &[]);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("outpost_cp_refusals_total{code=\"catalog_empty\"} ")
                    .map(|v| v.parse::<u64>().unwrap())
            })
            .unwrap_or(0)
    };
    wait_for(
        "origin to ask for a plan from the empty catalog",
        30,
        || refusals() >= 1,
    );
    // Give the agent a few more plan rounds; nothing may go.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        held(&origin),
        "origin deleted the title on an empty catalog"
    );
    let entry = std::fs::read_to_string(origin_cache.join("fillme/catalog.json")).unwrap();
    let entry = protocol::catalog::CatalogEntry::from_json(&entry).unwrap();
    for f in &entry.files {
        assert!(
            origin_cache.join("fillme").join(&f.path).is_file(),
            "{} gone",
            f.path
        );
    }

    // The catalog arrives: the exchange fills the title from origin, byte for byte.
    import(&cpdata, &[&origin_cache.join("fillme/catalog.json")]);
    let exchange = appliance("ix-1", "ix", d, &cp_url);
    wait_for("the exchange appliance to hold the title", 60, || {
        held(&exchange)
    });
    for f in &entry.files {
        let got = std::fs::read(exchange.cache.join("fillme").join(&f.path)).unwrap();
        let want = std::fs::read(origin_cache.join("fillme").join(&f.path)).unwrap();
        assert!(got == want, "{} differs", f.path);
    }
    assert!(held(&origin));
}

/// SIGKILL in the middle of a fill: what the killed appliance left is never served, and after a
/// restart the fill resumes from the partial files instead of starting over, the title ends
/// byte-identical to origin's, and no partial file is left behind.
#[test]
fn an_appliance_killed_mid_fill_resumes_after_a_restart_and_never_serves_a_partial_title() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = Fleet::with_origin(d);
    let (cp_url, origin_cache, entry) = (&f.cp_url, &f.origin_cache, &f.entry);
    let total = entry.total_bytes();

    // A slow fill (about 60 KB/s), killed part way.
    let slow = ["--fill-rate-mbps", "0.5"];
    let mut ix = appliance_with("ix-1", "ix", d, cp_url, &slow);
    wait_for("the fill to be under way", 60, || {
        counter(&ix.admin, "outpost_appliance_fill_bytes_total") > total / 4
    });
    let _ = ix.proc.child.kill();
    let _ = ix.proc.child.wait();
    let cache = ix.cache.clone();
    assert!(
        !cache.join("fillme/catalog.json").exists(),
        "the fill finished before the kill: slow it down"
    );
    let parts = |root: &Path| -> u64 {
        std::fs::read_dir(root.join(".fill/fillme"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let left = parts(&cache);
    let committed: Vec<&str> = entry
        .files
        .iter()
        .filter(|f| cache.join("fillme").join(&f.path).exists())
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        left > 0 || !committed.is_empty(),
        "the kill left nothing to resume"
    );

    // Restarted (still slow): what was left is not served while the fill goes on.
    let ix = appliance_with("ix-1", "ix", d, cp_url, &slow);
    let g = play_grant(&f.cpdata, "ix");
    assert!(
        !held(&ix),
        "a partial title is reported held after the restart"
    );
    for f in &committed {
        let (st, _) = http(&ix.addr, &format!("/g/{g}/fillme/{f}"), &[]);
        assert_eq!(st, 404, "{f} of a partial title served after the restart");
    }
    wait_for("the restarted appliance to hold the title", 90, || {
        held(&ix)
    });
    for f in &entry.files {
        let got = std::fs::read(cache.join("fillme").join(&f.path)).unwrap();
        let want = std::fs::read(origin_cache.join("fillme").join(&f.path)).unwrap();
        assert!(got == want, "{} differs", f.path);
        let (st, body) = http(&ix.addr, &format!("/g/{g}/fillme/{}", f.path), &[]);
        assert_eq!(st, 200, "{}", f.path);
        assert!(body == want, "{} served differs", f.path);
    }
    let fetched = counter(&ix.admin, "outpost_appliance_fill_bytes_total");
    let already: u64 = left
        + entry
            .files
            .iter()
            .filter(|f| committed.contains(&f.path.as_str()))
            .map(|f| f.size)
            .sum::<u64>();
    assert!(
        fetched + already >= total && fetched < total,
        "fetched {fetched} of {total} bytes after the restart with {already} on disk: not resumed"
    );
    assert_eq!(parts(&cache), 0, "partial files left behind");
}

/// The cluster a new session for `fillme` from 127.0.0.1 is steered to first.
fn first_cluster(cp: &str) -> String {
    crate::support::cli::first_cluster(cp, "acct-1", "fillme", "127.0.0.1")
}

/// A cache drive of the embedded appliance is lost (its directory renamed away) while it holds
/// the cluster's only copy of a title: the appliance takes the drive out and stops reporting the
/// title, steering sends new sessions to the exchange tier meanwhile, the fill plan (which still
/// places the title there) fills it again onto the healthy drive, byte for byte, and steering
/// comes back to the embedded cluster. The embedded appliance fills at 0.4 Mbit/s and the lost
/// drive holds the title's largest file, so the re-fill takes seconds and the steering in
/// between is observable.
#[test]
fn a_lost_drive_is_steered_around_and_its_title_filled_again_on_the_other_drive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = Fleet::with_origin(d);
    let (cp_addr, cp_url, cpdata) = (&f.cp_addr, &f.cp_url, &f.cpdata);
    let (origin_cache, entry) = (&f.origin_cache, &f.entry);
    let exchange = appliance("ix-1", "ix", d, cp_url);
    let second = d.join("isp-1-nvme1");
    std::fs::create_dir_all(&second).unwrap();
    let embedded = appliance_with(
        "isp-1",
        "isp",
        d,
        cp_url,
        &[
            "--cache-dir",
            second.to_str().unwrap(),
            "--fill-rate-mbps",
            "0.4",
        ],
    );
    wait_for("both tiers to hold the title", 120, || {
        held(&exchange) && held(&embedded)
    });
    wait_for("steering to the embedded cluster", 20, || {
        first_cluster(cp_addr) == "isp"
    });
    let verified = counter(
        &embedded.admin,
        "outpost_appliance_fill_files_verified_total",
    );

    // The drive holding the title's largest file goes away (files are placed per file, so the
    // other drive may hold some of the title: those stay).
    let largest = entry.files.iter().max_by_key(|f| f.size).unwrap();
    let (lost, healthy) = if embedded.cache.join("fillme").join(&largest.path).is_file() {
        (embedded.cache.clone(), second.clone())
    } else {
        (second.clone(), embedded.cache.clone())
    };
    let lost_files = entry
        .files
        .iter()
        .filter(|f| lost.join("fillme").join(&f.path).is_file())
        .count() as u64;
    assert!(lost_files >= 1);
    std::fs::rename(&lost, d.join("lost-drive")).unwrap();
    wait_for("the appliance to take the lost drive out", 20, || {
        let m = metrics(&embedded.admin);
        m.contains(&format!(
            "outpost_appliance_drive_healthy{{drive=\"{}\"}} 0",
            lost.display()
        )) && m.contains("outpost_appliance_titles_held 0")
    });
    // Meanwhile new sessions go to the exchange, which holds the title...
    let mut seen = Vec::new();
    wait_for("steering to the exchange tier", 30, || {
        let c = first_cluster(cp_addr);
        seen.push(c.clone());
        c == "ix"
    });
    // ...until the plan, which still places the title on the embedded appliance, has it filled
    // again on the healthy drive.
    wait_for("the title filled again on the healthy drive", 120, || {
        held(&embedded)
    });
    for f in &entry.files {
        let got = std::fs::read(healthy.join("fillme").join(&f.path)).unwrap();
        let want = std::fs::read(origin_cache.join("fillme").join(&f.path)).unwrap();
        assert!(got == want, "{} differs after the re-fill", f.path);
    }
    assert_eq!(
        counter(
            &embedded.admin,
            "outpost_appliance_fill_files_verified_total"
        ),
        verified + lost_files,
        "every file the lost drive held is filled and verified again, and only those"
    );
    wait_for("steering back to the embedded cluster", 30, || {
        first_cluster(cp_addr) == "isp"
    });
    // And it serves the re-filled title.
    let g = play_grant(cpdata, "isp");
    let v = entry
        .files
        .iter()
        .find(|f| f.path.ends_with(".mp4"))
        .unwrap();
    let (st, body) = http(&embedded.addr, &format!("/g/{g}/fillme/{}", v.path), &[]);
    assert_eq!(st, 200);
    assert!(body == std::fs::read(origin_cache.join("fillme").join(&v.path)).unwrap());
}
