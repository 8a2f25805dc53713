//! Steering from BGP with a real router: BIRD 2 (run as its own process on 127.0.0.2 with a
//! generated configuration, never the system service) is the ISP's router. It announces static
//! IPv4 and IPv6 prefixes to three `outpost appliance` processes (two in the embedded cluster
//! `isp-akl`, one in the exchange cluster `ix-syd`), which connect to it (`--bgp-peer`) and report
//! what they hear to a real `outpost control-plane` (SQLite). Sessions started for client
//! addresses in those prefixes follow what BIRD announces: AS-path prepending moves clients to
//! the other site, a prefix announced to only one appliance of a site flags the site and does not
//! steer there, a withdrawn prefix (`birdc configure` with it removed) and BIRD stopped make the
//! prefixes age out. Every wait is a bounded poll.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::{bin, cp_data as data, http, outpost, spawn_listening, Listening};

const ISP_AS: u32 = 64500;
const OCA_AS: u32 = 64512;
/// How long a change may take to reach steering: BGP update, a heartbeat (1 s here), the
/// control plane's snapshot; generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(45);

const POLICY: &str = r#"
[[plans]]
id = "premium"
max_tier = "UHD"
max_streams = 100

[[accounts]]
id = "acct-premium"
plan = "premium"
status = "active"

[[device_classes]]
id = "browser"
key_systems = ["org.w3.clearkey"]
max_tier = "UHD"

[[geo]]
prefix = "10.0.0.0/8"
country = "NZ"

[[geo]]
prefix = "2001:db8::/32"
country = "NZ"

[[windows]]
title = "clear-title"
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
id = "isp-akl"
site = "akl"
kind = "embedded"

[[clusters]]
id = "ix-syd"
site = "syd"
kind = "exchange"

[[clusters]]
id = "origin"
site = "orig"
kind = "origin"

[[appliances]]
id = "akl-1"
cluster = "isp-akl"
address = "127.0.0.11"
port = 8081
admin_state = "online"
credential = "akl-1-credential-0123456789"

[[appliances]]
id = "akl-2"
cluster = "isp-akl"
address = "127.0.0.12"
port = 8082
admin_state = "online"
credential = "akl-2-credential-0123456789"

[[appliances]]
id = "syd-1"
cluster = "ix-syd"
address = "127.0.0.21"
port = 8083
admin_state = "online"
credential = "syd-1-credential-0123456789"

[[appliances]]
id = "origin-1"
cluster = "origin"
address = "127.0.0.31"
port = 8084
admin_state = "online"

[[api_keys]]
id = "playback-service"
secret = "playback-secret-0123456789"
"#;

/// What BIRD announces to one appliance.
struct Announce {
    ip: &'static str,
    v4: Vec<&'static str>,
    v6: Vec<&'static str>,
    /// Extra copies of the ISP's AS prepended.
    prepend: usize,
}

fn prefix_filter(prefixes: &[&str], prepend: usize) -> String {
    if prefixes.is_empty() {
        return "none".into();
    }
    format!(
        "filter {{ if net ~ [ {} ] then {{ {} accept; }} reject; }}",
        prefixes.join(", "),
        format!("bgp_path.prepend({ISP_AS}); ").repeat(prepend)
    )
}

/// The BIRD 2 configuration (the one README's "Connecting the ISP's router (BIRD)" shows).
fn bird_conf(port: u16, peers: &[Announce]) -> String {
    let mut c = String::from(
        "router id 127.0.0.2;\n\
         protocol device { }\n\
         protocol static static4 { ipv4; route 10.64.0.0/16 blackhole; route 10.65.0.0/16 blackhole; }\n\
         protocol static static6 { ipv6; route 2001:db8:64::/48 blackhole; }\n",
    );
    for (i, p) in peers.iter().enumerate() {
        c.push_str(&format!(
            "protocol bgp oca{i} {{\n\
             \x20 local 127.0.0.2 port {port} as {ISP_AS};\n\
             \x20 neighbor {} as {OCA_AS};\n\
             \x20 multihop; passive on; hold time 30;\n\
             \x20 ipv4 {{ import none; export {}; }};\n\
             \x20 ipv6 {{ import none; next hop address 2001:db8::2; export {}; }};\n\
             }}\n",
            p.ip,
            prefix_filter(&p.v4, p.prepend),
            prefix_filter(&p.v6, p.prepend),
        ));
    }
    c
}

struct Bird {
    child: Child,
    conf: PathBuf,
    sock: PathBuf,
    port: u16,
}

impl Bird {
    fn start(dir: &Path, peers: &[Announce]) -> Bird {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        std::fs::write(&conf, bird_conf(port, peers)).unwrap();
        let child = Command::new("bird")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bird is not installed (Debian package bird2): run ./scripts/test");
        let b = Bird {
            child,
            conf,
            sock,
            port,
        };
        wait_for("birdc to answer", || b.birdc(&["show", "status"]).is_some());
        b
    }

    fn birdc(&self, args: &[&str]) -> Option<String> {
        let o = Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Rewrites the configuration and has BIRD apply it (`birdc configure`).
    fn reconfigure(&self, peers: &[Announce]) {
        std::fs::write(&self.conf, bird_conf(self.port, peers)).unwrap();
        let out = self.birdc(&["configure"]).expect("birdc configure");
        assert!(out.contains("Reconfigur"), "{out}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

/// The cluster of the first appliance a new session from `ip` is steered to.
fn first_cluster(cp: &str, ip: &str) -> String {
    crate::support::cli::first_cluster(cp, "acct-premium", "clear-title", ip)
}

fn steered(cp: &str, ip: &str, cluster: &str) {
    let mut last = String::new();
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        last = first_cluster(cp, ip);
        if last == cluster {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{ip} never steered to {cluster} within {DEADLINE:?} (last: {last})");
}

fn cp_metrics(cp: &str) -> String {
    http(cp, "GET", "/metrics", &[], "").1
}

fn appliance(id: &str, ip: &str, cluster: &str, dir: &Path, cp: &str, bird_port: u16) -> Listening {
    let cache = dir.join(format!("{id}-cache"));
    let keys = dir.join(format!("{id}-keys"));
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    let router_id = format!("10.255.0.{}", ip.rsplit('.').next().unwrap());
    spawn_listening(
        Command::new(bin())
            .args(["appliance", "--id", id, "--cluster", cluster])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args([
                "--threads",
                "1",
                "--backend",
                "epoll",
                "--drain-timeout-secs",
                "1",
            ])
            .arg("--public-keys")
            .arg(&keys)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--control-plane", cp, "--credential"])
            .arg(format!("{id}-credential-0123456789"))
            .args(["--control-plane-grace", "1"])
            .arg("--bgp-listen")
            .arg(format!("{ip}:0"))
            .args([
                "--bgp-asn",
                &OCA_AS.to_string(),
                "--bgp-router-id",
                &router_id,
            ])
            .arg("--bgp-peer")
            .arg(format!("127.0.0.2:{bird_port},{ISP_AS}"))
            .args(["--bgp-hold-time", "9"])
            .env("OUTPOST_LOG", "info")
            .stderr(Stdio::inherit()),
    )
}

fn announce(
    ip: &'static str,
    v4: &[&'static str],
    v6: &[&'static str],
    prepend: usize,
) -> Announce {
    Announce {
        ip,
        v4: v4.to_vec(),
        v6: v6.to_vec(),
        prepend,
    }
}

#[test]
#[ignore = "needs BIRD 2 (Debian package bird2): run ./scripts/test"]
fn steering_follows_what_bird_announces() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cpd = d.join("cp");
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    let o = outpost(&[
        "control-plane",
        "--data-dir",
        cpd.to_str().unwrap(),
        "import",
        d.join("policy.toml").to_str().unwrap(),
        data("clear-title/catalog.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cp_proc = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", cpd.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--appliance-heartbeat-secs", "1"])
            .args(["--snapshot-ttl-ms", "100"])
            // Polling starts sessions often; the limiter is not under test here.
            .args([
                "--session-starts-per-minute",
                "6000",
                "--session-start-burst",
                "1000",
            ])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::inherit()),
    );
    let cp = cp_proc.addr.clone();
    let cp_url = format!("http://{cp}");

    // 1. Both Auckland appliances and Sydney hear 10.64.0.0/16 and 2001:db8:64::/48, Sydney with
    //    a prepended path: Auckland (embedded, shorter path) gets the clients.
    let all4 = ["10.64.0.0/16"];
    let all6 = ["2001:db8:64::/48"];
    let mut bird = Bird::start(
        d,
        &[
            announce("127.0.0.11", &all4, &all6, 0),
            announce("127.0.0.12", &all4, &all6, 0),
            announce("127.0.0.21", &all4, &all6, 2),
        ],
    );
    let apps: Vec<Listening> = [
        ("akl-1", "127.0.0.11", "isp-akl"),
        ("akl-2", "127.0.0.12", "isp-akl"),
        ("syd-1", "127.0.0.21", "ix-syd"),
    ]
    .iter()
    .map(|(id, ip, c)| appliance(id, ip, c, d, &cp_url, bird.port))
    .collect();
    wait_for("three established sessions in BIRD", || {
        bird.birdc(&["show", "protocols"])
            .is_some_and(|o| o.matches("Established").count() == 3)
    });
    // BIRD (graceful restart "aware" by default) advertises the capability and ends its initial
    // feed with End-of-RIB for IPv4 and IPv6: every appliance's table is complete well before
    // the 60 s fallback for a GR peer that never sends one.
    let complete = format!(
        "outpost_appliance_bgp_rib_complete{{peer=\"127.0.0.2:{}\"}} 1",
        bird.port
    );
    for a in &apps {
        wait_for("End-of-RIB from BIRD on every appliance", || {
            http(a.admin(), "GET", "/metrics", &[], "")
                .1
                .contains(&complete)
        });
    }
    steered(&cp, "10.64.1.1", "isp-akl");
    steered(&cp, "2001:db8:64::10", "isp-akl");

    // 2. AS-path prepending on Auckland (3 extra ASes) moves its clients to Sydney.
    bird.reconfigure(&[
        announce("127.0.0.11", &all4, &all6, 3),
        announce("127.0.0.12", &all4, &all6, 3),
        announce("127.0.0.21", &all4, &all6, 0),
    ]);
    steered(&cp, "10.64.1.1", "ix-syd");
    steered(&cp, "2001:db8:64::10", "ix-syd");

    // 3. 10.65.0.0/16 is announced to akl-1 only: the site is flagged and not steered by it.
    bird.reconfigure(&[
        announce("127.0.0.11", &["10.64.0.0/16", "10.65.0.0/16"], &all6, 0),
        announce("127.0.0.12", &all4, &all6, 0),
        announce("127.0.0.21", &all4, &all6, 2),
    ]);
    steered(&cp, "10.64.1.1", "isp-akl");
    wait_for("isp-akl flagged inconsistent", || {
        cp_metrics(&cp).contains("outpost_cp_bgp_site_inconsistent{cluster=\"isp-akl\"} 1")
    });
    assert_eq!(first_cluster(&cp, "10.65.0.1"), "origin");

    // 4. 10.64.0.0/16 withdrawn from Auckland (birdc configure without it): the next sessions
    //    go to Sydney; the flag clears once both hear the same set again.
    bird.reconfigure(&[
        announce("127.0.0.11", &[], &all6, 0),
        announce("127.0.0.12", &[], &all6, 0),
        announce("127.0.0.21", &all4, &all6, 2),
    ]);
    steered(&cp, "10.64.1.1", "ix-syd");
    wait_for("isp-akl consistent again", || {
        cp_metrics(&cp).contains("outpost_cp_bgp_site_inconsistent{cluster=\"isp-akl\"} 0")
    });
    steered(&cp, "2001:db8:64::10", "isp-akl");

    // 5. BIRD stopped: every session drops, the routes age out, clients go to origin.
    bird.stop();
    steered(&cp, "10.64.1.1", "origin");
    steered(&cp, "2001:db8:64::10", "origin");
    let m = cp_metrics(&cp);
    assert!(
        !m.contains("outpost_cp_bgp_sessions{state=\"established\"}"),
        "{m}"
    );
}
