//! BIRD as the demo ISP's router (issue 14, "Steering from BGP").
//!
//! When BIRD 2 (`bird` and `birdc`, Debian package `bird2`) is installed and `--no-bird` is not
//! given, the demo runs it as one more child process with a configuration it generates on every
//! start: its own control socket, pid file and configuration under `<data-dir>/bird/`, its log
//! in `<data-dir>/logs/bird.log`, and BGP on loopback only (the router at [`ROUTER_IP`], appliance
//! `i` of the topology speaking from `127.0.0.(101 + i)`), never the system's BIRD service.
//!
//! BIRD (AS [`ISP_AS`]) announces the ISP's client routes to every appliance of the embedded
//! cluster (the same routes to each, as a site needs) and, with its AS prepended twice, to the
//! exchange appliance (the ISP's second choice, as at a real internet exchange). Every demo
//! client is on loopback, but BIRD will not originate loopback routes (127.0.0.0/8 and ::1/128
//! are "bogus" to it), so the routes are the default routes [`ANNOUNCED`]: every client of this
//! machine is the ISP's subscriber. The demo policy then carries no prefixes, so the control
//! plane steers the player page's sessions by what the fleet hears over BGP.
//!
//! BIRD is forked like the appliances ([`super::procs`]): through `outpost --exit-with-parent
//! <pid> exec -- bird ...`, so it also stops when the demo is killed outright.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::procs::Proc;
use super::topology::{Kind, Topology};
use super::Dirs;

/// The ISP's AS number (BIRD's).
pub const ISP_AS: u32 = 64500;
/// The appliances' AS number.
pub const OCA_AS: u32 = 64512;
/// BIRD's address (BGP listener and router id).
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
/// The routes BIRD announces, with the client address of each that the player page uses.
pub const ANNOUNCED: [(&str, IpAddr); 2] = [
    ("0.0.0.0/0", IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ("::/0", IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
];
/// Extra copies of the ISP's AS on the routes to the exchange.
const EXCHANGE_PREPEND: usize = 2;
/// How long `birdc` may take to answer.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long BIRD may take to answer on its control socket after it starts.
const START_LIMIT: Duration = Duration::from_secs(10);
/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The BIRD programs found on this machine.
#[derive(Debug, Clone)]
pub struct Installed {
    bird: PathBuf,
    birdc: PathBuf,
    /// `2.0.12`.
    pub version: String,
}

/// Looks for `bird` and `birdc` on PATH and in the sbin directories (Debian installs them in
/// /usr/sbin, which is not on a user's PATH) and asks `bird --version`; the reason when BIRD 2 or
/// later is not there.
pub fn find() -> Result<Installed, String> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let search = |name: &str| {
        dirs.iter()
            .map(PathBuf::as_path)
            .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(Path::new))
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    };
    let not_installed = "BIRD not installed: no `bird` and `birdc` on PATH or in /usr/sbin \
         (Debian package bird2)";
    let (Some(bird), Some(birdc)) = (search("bird"), search("birdc")) else {
        return Err(not_installed.to_owned());
    };
    let out = std::process::Command::new(&bird)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", bird.display()))?;
    // `BIRD version 2.0.12`, on standard error.
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| format!("`{} --version` said {:?}", bird.display(), text.trim()))?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 2 {
        return Err(format!(
            "{} is BIRD {version}; the demo's configuration needs BIRD 2 (Debian package bird2)",
            bird.display()
        ));
    }
    Ok(Installed {
        bird,
        birdc,
        version,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One BGP session BIRD offers: to one appliance.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The appliance id.
    pub appliance: String,
    /// Its BGP address (`--bgp-listen`, the source of its connection to BIRD).
    pub ip: Ipv4Addr,
    /// BIRD's protocol name for it.
    protocol: String,
    /// Extra copies of the ISP's AS on the routes it hears.
    prepend: usize,
}

/// The sessions for `topo`: every embedded appliance, then the exchange (prepended).
fn peers(topo: &Topology) -> Vec<Peer> {
    topo.appliances
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let prepend = match a.kind {
                Kind::Embedded => 0,
                Kind::Exchange => EXCHANGE_PREPEND,
                Kind::Origin => return None,
            };
            Some(Peer {
                appliance: a.id.clone(),
                ip: Ipv4Addr::new(127, 0, 0, 101 + u8::try_from(i).ok()?),
                protocol: a.id.replace('-', "_"),
                prepend,
            })
        })
        .collect()
}

/// The BIRD 2 configuration: BIRD on `port`, the default routes from static protocols, one
/// passive BGP session per peer (the appliances connect).
fn config(port: u16, peers: &[Peer]) -> String {
    let (v4, v6) = (ANNOUNCED[0].0, ANNOUNCED[1].0);
    let mut c = format!(
        "# Generated by `outpost demo` on every start: BIRD as the ISP's router (AS {ISP_AS}),\n\
         # announcing its clients to the Outpost appliances (AS {OCA_AS}) over BGP on loopback.\n\
         log stderr all;\n\
         router id {ROUTER_IP};\n\
         protocol device {{ }}\n\
         protocol static clients4 {{ ipv4; route {v4} blackhole; }}\n\
         protocol static clients6 {{ ipv6; route {v6} blackhole; }}\n"
    );
    for p in peers {
        let export = if p.prepend == 0 {
            "all".to_owned()
        } else {
            format!(
                "filter {{ {}accept; }}",
                format!("bgp_path.prepend({ISP_AS}); ").repeat(p.prepend)
            )
        };
        let _ = write!(
            c,
            "protocol bgp {} {{\n\
             \x20 description \"{}\";\n\
             \x20 local {ROUTER_IP} port {port} as {ISP_AS};\n\
             \x20 neighbor {} as {OCA_AS};\n\
             \x20 multihop; passive on; hold time 30;\n\
             \x20 ipv4 {{ import none; export {export}; }};\n\
             \x20 ipv6 {{ import none; next hop address ::1; export {export}; }};\n\
             }}\n",
            p.protocol, p.appliance, p.ip,
        );
    }
    c
}

/// BIRD running as the ISP's router.
pub struct Bird {
    installed: Installed,
    sock: PathBuf,
    /// Its BGP listener.
    pub addr: SocketAddr,
    /// The sessions it offers.
    pub peers: Vec<Peer>,
    proc: Mutex<Proc>,
    /// False once [`Bird::stop`] was called (the demo fell back to policy prefixes, or stops).
    running: AtomicBool,
}

impl Bird {
    /// Writes the configuration and starts BIRD, returning once it answers on its control
    /// socket. An error says why (BIRD refused the configuration, exited, did not answer).
    pub async fn start(installed: Installed, dirs: &Dirs, topo: &Topology) -> anyhow::Result<Bird> {
        let dir = dirs.root.join("bird");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let sock = dir.join("bird.ctl");
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            anyhow::bail!(
                "its control socket {} would be longer than {MAX_SOCKET_PATH} bytes \
                 (a Unix socket's limit); use a shorter --data-dir",
                sock.display()
            );
        }
        let port = {
            let l = std::net::TcpListener::bind((ROUTER_IP, 0))
                .with_context(|| format!("finding a free port on {ROUTER_IP}"))?;
            l.local_addr()?.port()
        };
        let peers = peers(topo);
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config(port, &peers))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut args: Vec<String> = vec!["exec".into(), "--".into()];
        for a in [
            installed.bird.as_path(),
            Path::new("-c"),
            &conf,
            Path::new("-s"),
            &sock,
            Path::new("-P"),
            &dir.join("bird.pid"),
            Path::new("-f"),
        ] {
            args.push(a.display().to_string());
        }
        let log = dirs.logs.join("bird.log");
        let mut proc = Proc::new("bird", args, log, []);
        proc.start()?;
        let bird = Bird {
            installed,
            sock,
            addr: SocketAddr::new(IpAddr::V4(ROUTER_IP), port),
            peers,
            proc: Mutex::new(proc),
            running: AtomicBool::new(true),
        };
        let start = Instant::now();
        loop {
            if let Some(why) = bird.exited() {
                anyhow::bail!(
                    "it exited at once ({why}); see {}",
                    dirs.logs.join("bird.log").display()
                );
            }
            match bird.birdc(&["show", "status"]).await {
                Ok(_) => return Ok(bird),
                Err(e) if start.elapsed() > START_LIMIT => {
                    anyhow::bail!(
                        "it did not answer on {} within {} s ({e})",
                        bird.sock.display(),
                        START_LIMIT.as_secs()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// BIRD's version.
    pub fn version(&self) -> &str {
        &self.installed.version
    }

    /// The ready message's line: what steers, and how to ask BIRD about it from a shell.
    pub fn summary(&self) -> String {
        format!(
            "BGP from BIRD {} at {}: {} -s {} show protocols",
            self.version(),
            self.addr,
            self.installed.birdc.display(),
            self.sock.display()
        )
    }

    /// The BGP flags of appliance `id`, when BIRD has a session for it.
    pub fn appliance_flags(&self, id: &str) -> Option<Vec<String>> {
        let p = self.peers.iter().find(|p| p.appliance == id)?;
        Some(vec![
            "--bgp-listen".into(),
            format!("{}:0", p.ip),
            "--bgp-asn".into(),
            OCA_AS.to_string(),
            "--bgp-router-id".into(),
            p.ip.to_string(),
            "--bgp-peer".into(),
            format!("{},{ISP_AS}", self.addr),
        ])
    }

    /// One line for the start of the demo: what BIRD announces to whom.
    pub fn describe(&self, topo: &Topology) -> String {
        let names = |kind: Kind| {
            self.peers
                .iter()
                .filter(|p| {
                    topo.appliances
                        .iter()
                        .any(|a| a.id == p.appliance && a.kind == kind)
                })
                .map(|p| p.appliance.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let routes: Vec<&str> = ANNOUNCED.iter().map(|(r, _)| *r).collect();
        format!(
            "BIRD {} (AS {ISP_AS}, {}) announces {} over BGP to {}, and with a longer AS path to {}",
            self.version(),
            self.addr,
            routes.join(" and "),
            names(Kind::Embedded),
            names(Kind::Exchange),
        )
    }

    /// The exit status and last log line, once BIRD has exited.
    fn exited(&self) -> Option<String> {
        self.proc.lock().ok()?.exited()
    }

    /// Runs `birdc -s <socket> <args>`: its output, or why not.
    async fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let run = tokio::process::Command::new(&self.installed.birdc)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(BIRDC_TIMEOUT, run).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(format!("{}: {e}", self.installed.birdc.display())),
            Err(_) => return Err(format!("birdc did not answer within {BIRDC_TIMEOUT:?}")),
        };
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            Ok(text)
        } else {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(format!(
                "birdc: {}",
                if err.is_empty() { text } else { err }
            ))
        }
    }

    /// The sessions that are not established, each with what BIRD says (`show protocols`: state
    /// and info, e.g. `start Active Socket: Connection refused`) and what the appliance last
    /// reported to the control plane about it.
    async fn not_established(
        &self,
        state: &control_plane::AppState,
    ) -> Result<Vec<String>, String> {
        let out = self.birdc(&["show", "protocols"]).await?;
        let snap = state.snapshot().await.map_err(|e| e.to_string())?;
        Ok(self
            .peers
            .iter()
            .filter_map(|p| {
                let line = out
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(p.protocol.as_str()));
                let Some(line) = line else {
                    return Some(format!("{}: not in `birdc show protocols`", p.appliance));
                };
                if line.contains("Established") {
                    return None;
                }
                // Name Proto Table State Since Info...
                let cols: Vec<&str> = line.split_whitespace().collect();
                let mut bird = cols.get(3).copied().unwrap_or("?").to_owned();
                if let Some(info) = cols.get(5..).filter(|i| !i.is_empty()) {
                    bird = format!("{bird}, {}", info.join(" "));
                }
                let appliance = self
                    .session(&snap, &p.appliance)
                    .and_then(|s| s.last_error.as_deref())
                    .map(|e| format!(", the appliance says \"{e}\""))
                    .unwrap_or_default();
                Some(format!(
                    "{} ({}): BIRD says \"{bird}\"{appliance}",
                    p.appliance, p.ip
                ))
            })
            .collect())
    }

    /// The session with BIRD that appliance `id` last reported to the control plane (one from
    /// an earlier run of the demo names another port, so it is not taken for this one).
    fn session<'a>(
        &self,
        snap: &'a control_plane::state::Snapshot,
        id: &str,
    ) -> Option<&'a protocol::fleet::BgpSession> {
        let peer = self.addr.to_string();
        snap.bgp
            .appliances
            .get(id)?
            .sessions
            .iter()
            .find(|s| s.peer == peer)
    }

    /// Whether the control plane steers from BIRD's routes: every appliance reported its session
    /// established, every embedded appliance counts for its site, the site is consistent, and
    /// each announced route sends its client to the embedded cluster first. The reason when not
    /// (yet).
    async fn steers(&self, state: &control_plane::AppState, topo: &Topology) -> Result<(), String> {
        let snap = state.snapshot().await.map_err(|e| e.to_string())?;
        let embedded: Vec<&str> = topo
            .appliances
            .iter()
            .filter(|a| a.kind == Kind::Embedded)
            .map(|a| a.id.as_str())
            .collect();
        let cluster = topo
            .appliances
            .iter()
            .find(|a| a.kind == Kind::Embedded)
            .map_or("", |a| a.cluster);
        let unreported: Vec<&str> = self
            .peers
            .iter()
            .filter(|p| {
                self.session(&snap, &p.appliance)
                    .is_none_or(|s| s.state != "established")
            })
            .map(|p| p.appliance.as_str())
            .collect();
        if !unreported.is_empty() {
            return Err(format!(
                "no heartbeat has reported the session established yet from {}",
                unreported.join(", ")
            ));
        }
        let site = snap.bgp.sites.iter().find(|s| s.cluster == cluster);
        let missing: Vec<&str> = embedded
            .iter()
            .filter(|id| site.is_none_or(|s| !s.appliances.iter().any(|a| a == *id)))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the control plane does not count the BGP routes of {} yet",
                missing.join(", ")
            ));
        }
        if let Some(site) = site.filter(|s| s.inconsistent()) {
            return Err(format!(
                "the appliances of {cluster} hear different routes ({})",
                site.partial.join(", ")
            ));
        }
        for (route, client) in ANNOUNCED {
            let (matched, clusters) = snap.fleet.candidate_clusters(client);
            let matched = matched.map(|p| p.to_string());
            if matched.as_deref() != Some(route) || clusters.first() != Some(&cluster) {
                return Err(format!(
                    "the control plane does not steer {client} by {route} to {cluster} yet \
                     (prefix {}, clusters {})",
                    matched.as_deref().unwrap_or("none"),
                    clusters.join(",")
                ));
            }
        }
        Ok(())
    }

    /// Waits until every session is established and the control plane steers from BIRD's
    /// routes; after `limit`, the reason it does not (what `birdc show protocols` says of the
    /// sessions that are down, or what the control plane lacks).
    pub async fn wait_until_steering(
        &self,
        state: &control_plane::AppState,
        topo: &Topology,
        limit: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(why) = self.exited() {
                return Err(format!("BIRD exited ({why})"));
            }
            let now = match self.not_established(state).await {
                Ok(down) if down.is_empty() => match self.steers(state, topo).await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                Ok(down) => format!("sessions not established: {}", down.join("; ")),
                Err(e) => e,
            };
            if now != last {
                eprintln!("demo: bgp: waiting: {now}");
                last = now;
            }
            if start.elapsed() > limit {
                return Err(format!("not within {} s: {last}", limit.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits, after appliance `id` was restarted at `since` (Unix seconds), until a heartbeat
    /// of the new process reports its session with BIRD established and the control plane
    /// counts its routes for a consistent site again; after `limit`, what is missing. Right after
    /// the session comes up the appliance may report it before BIRD's routes arrived, and its
    /// site is then steered by none of them until its next heartbeat.
    pub async fn wait_until_steered(
        &self,
        state: &control_plane::AppState,
        id: &str,
        since: u64,
        limit: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let snap = state.snapshot().await.map_err(|e| e.to_string())?;
            let fresh = snap
                .fleet
                .appliance(id)
                .and_then(|a| a.last_heartbeat)
                .is_some_and(|t| t > since);
            let site = snap
                .bgp
                .sites
                .iter()
                .find(|s| s.appliances.iter().any(|a| a == id));
            let why = if !fresh {
                "no heartbeat since it started".to_owned()
            } else if self
                .session(&snap, id)
                .is_none_or(|s| s.state != "established")
            {
                "its session with BIRD is not reported established".to_owned()
            } else {
                match site {
                    None => "the control plane does not count its routes".to_owned(),
                    Some(s) if s.inconsistent() => format!(
                        "the appliances of {} hear different routes ({})",
                        s.cluster,
                        s.partial.join(", ")
                    ),
                    Some(_) => return Ok(()),
                }
            };
            if start.elapsed() > limit {
                return Err(format!("not within {} s: {why}", limit.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether BIRD offers appliance `id` a session.
    pub fn peers_with(&self, id: &str) -> bool {
        self.peers.iter().any(|p| p.appliance == id)
    }

    /// Whether BIRD still runs as the demo's router (not stopped by [`Bird::stop`]).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Stops BIRD (SIGTERM, then SIGKILL after 5 s); blocks until it exited.
    pub fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
        if let Ok(mut p) = self.proc.lock() {
            p.stop(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_appliance_and_the_exchange_get_a_session() {
        let topo = Topology::new(Path::new("/d"), 9000, 2, "s");
        let p = peers(&topo);
        let got: Vec<(&str, String, usize)> = p
            .iter()
            .map(|p| (p.appliance.as_str(), p.ip.to_string(), p.prepend))
            .collect();
        assert_eq!(
            got,
            [
                ("isp-ams-1", "127.0.0.101".to_owned(), 0),
                ("isp-ams-2", "127.0.0.102".to_owned(), 0),
                ("ix-ams-1", "127.0.0.103".to_owned(), 2),
            ]
        );
        let c = config(1179, &p);
        assert!(c.contains("protocol bgp isp_ams_1 {"), "{c}");
        assert!(c.contains("neighbor 127.0.0.103 as 64512;"), "{c}");
        assert!(
            c.contains(
                "export filter { bgp_path.prepend(64500); bgp_path.prepend(64500); accept; };"
            ),
            "{c}"
        );
        assert!(c.contains("route 0.0.0.0/0 blackhole;"), "{c}");
    }
}
